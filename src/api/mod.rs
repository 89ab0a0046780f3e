//! The panel API: one endpoint that reads a request in any encoding clients use, dispatches on
//! `action` and answers with the exact shapes and error texts panel clients expect.

mod add;
mod amend;
mod batch;
mod params;
mod serve;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::domain::Catalogue;
use crate::store::{KeyRecord, Store, StoreError};
use crate::tiktok::Reader;
pub use batch::AddQueue;
use params::Params;
pub use serve::{HEADER_READ_TIMEOUT, serve};
pub use status::Statuses;

/// The most ids one multi-status call may ask for.
pub const MAX_STATUS_IDS: usize = 100;

/// Error texts clients compare by equality.
pub mod texts {
    pub const INVALID_KEY: &str = "Invalid API key";
    pub const INCORRECT_REQUEST: &str = "Incorrect request";
    pub const INCORRECT_SERVICE: &str = "Incorrect service ID";
    pub const INCORRECT_LINK: &str = "Incorrect link";
    pub const NOT_ENOUGH_FUNDS: &str = "Not enough funds on balance";
    pub const ACTIVE_ORDER: &str =
        "You have active order with this link. Please wait until order being completed.";
    pub const INCORRECT_ORDER: &str = "Incorrect order ID";
    pub const VIDEO_PRIVATE: &str = "Video is private";
    pub const VIDEO_REGION: &str = "Video is not available in the panel's region";
    pub const VIDEO_NOT_FOUND: &str = "Video not found";
    pub const SHORT_LINK_UNRESOLVED: &str =
        "Short link could not be resolved right now, please retry or send the full video link";
    pub const TOO_MANY_IDS: &str = "Too many order IDs, at most 100 per request";
    pub const DRIPFEED_UNAVAILABLE: &str = "Drip-feed is not available for this service";
    pub const TOO_MANY_CALLS: &str = "Too many requests, please slow down";
    pub const CANCEL_UNAVAILABLE: &str = "Cancel is not available for this order";
    pub const ALREADY_ENDED: &str = "Order is already completed";
    pub const NOT_ELIGIBLE: &str = "Order not eligible for refill.";
    pub const REFILL_NOT_FOUND: &str = "Refill not found";
}

/// What the API needs from the rest of playpanel.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub reader: Arc<Reader>,
    pub catalogue: Arc<Catalogue>,
    /// Woken after each accepted order so a worker picks it up at once.
    pub wake: Arc<Notify>,
    pub statuses: Statuses,
    pub limits: Arc<KeyLimits>,
    pub known_keys: Arc<KnownKeys>,
    /// The heartbeat of this process's worker, if it runs one.
    pub workers: Arc<crate::worker::Heartbeat>,
    /// Orders from `add`, written in batches.
    pub adds: Arc<AddQueue>,
    pub config: ApiConfig,
}

/// Per-key call rate limits, per process.
pub struct KeyLimits(Option<governor::DefaultKeyedRateLimiter<i64>>);

impl KeyLimits {
    pub fn new(per_second: u32) -> KeyLimits {
        KeyLimits(std::num::NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(rate));
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        }))
    }

    fn allows(&self, key_id: i64) -> bool {
        self.0
            .as_ref()
            .is_none_or(|limiter| limiter.check_key(&key_id).is_ok())
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The longest a request may take before it is answered with an error.
    pub request_timeout: Duration,
    /// How long `add` waits for TikTok before accepting the order with the start count to be
    /// read by the worker.
    pub add_read_budget: Duration,
    pub max_body_bytes: usize,
    /// Refuse an order for a video that already has an open one, instead of queueing it.
    pub refuse_same_video: bool,
    /// How long a status answer may be reused by this process; zero reads every one afresh.
    pub status_cache_ttl: Duration,
    /// How long after an order ends it may be refilled.
    pub refill_window: Duration,
    /// How long a key is remembered after a lookup; a revoked key stops working within it.
    pub key_memory: Duration,
    /// Calls per second one key may make to this process (with as many again in a burst);
    /// zero for no limit.
    pub key_rate_per_second: u32,
    /// `/readyz` fails when this process's worker has not claimed orders for this long.
    pub ready_max_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            request_timeout: Duration::from_secs(30),
            add_read_budget: Duration::from_secs(5),
            max_body_bytes: 2 << 20,
            refuse_same_video: false,
            status_cache_ttl: Duration::ZERO,
            key_rate_per_second: 50,
            refill_window: Duration::from_secs(30 * 24 * 3600),
            key_memory: Duration::from_secs(5),
            ready_max_wait: Duration::from_secs(120),
        }
    }
}

/// The panel endpoint at every path clients use, never redirecting.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v2", any(panel))
        .route("/api/v2/", any(panel))
        .route("/api", any(panel))
        .route("/api/", any(panel))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Every way a call can fail, each with its answer.
#[derive(Debug)]
pub enum ApiError {
    /// An API-level refusal: HTTP 200 with the text clients expect.
    Panel(String),
    /// A transport fault: a 4xx with a JSON error.
    Transport(StatusCode, &'static str),
    /// Something on our side failed; the cause is logged, not shown.
    Unavailable(String),
}

impl ApiError {
    fn panel(text: &str) -> ApiError {
        ApiError::Panel(text.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Panel(text) => json_response(StatusCode::OK, &json!({ "error": text })),
            ApiError::Transport(status, text) => json_response(status, &json!({ "error": text })),
            ApiError::Unavailable(cause) => {
                error!(error = %cause, "request failed on the server side");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "error": "Service temporarily unavailable, please retry" }),
                )
            }
        }
    }
}

fn text_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The process is up: a fixed answer, also the cheapest request the server can serve.
async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Ready to serve: the database answers with the schema this build ships and, when this
/// process runs a worker, that worker has claimed (asked for due orders) within
/// `ready_max_wait`. How long the oldest due order has waited is reported too, but does not
/// fail the check: it is the whole cluster's backlog, and every API process failing on it at
/// once would take the API down because workers are slow.
async fn readyz(State(state): State<ApiState>) -> Response {
    let waited = match state.store.ping().await {
        Ok(()) => state.store.oldest_due_ms().await,
        Err(e) => Err(e),
    };
    let oldest_due = match waited {
        Ok(ms) => ms / 1000,
        Err(e) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "unavailable", "database": "failed", "error": e.to_string() }),
            );
        }
    };
    let (workers, stalled) = match state.workers.since_last_claim() {
        None => ("not run in this process".to_string(), None),
        Some(since) if since <= state.config.ready_max_wait => ("claiming".to_string(), None),
        Some(since) => (
            "stalled".to_string(),
            Some(format!(
                "this process's worker has not claimed orders for {} s",
                since.as_secs()
            )),
        ),
    };
    let mut body = json!({
        "status": if stalled.is_none() { "ready" } else { "unavailable" },
        "database": "ok",
        "workers": workers,
        "oldest_due_order_seconds": oldest_due,
    });
    match stalled {
        None => json_response(StatusCode::OK, &body),
        Some(error) => {
            body["error"] = json!(error);
            json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

async fn not_found() -> Response {
    ApiError::Transport(StatusCode::NOT_FOUND, "Not found").into_response()
}

/// The actions metrics are labelled with; anything else counts as `other`.
const ACTIONS: [&str; 7] = [
    "services",
    "balance",
    "add",
    "status",
    "cancel",
    "refill",
    "refill_status",
];

async fn panel(State(state): State<ApiState>, request: Request) -> Response {
    let began = std::time::Instant::now();
    let timeout = state.config.request_timeout;
    let mut action = "none";
    let (outcome, response) =
        match tokio::time::timeout(timeout, answer(&state, request, &mut action)).await {
            Ok(Ok(Answer::Value(body))) => ("ok", json_response(StatusCode::OK, &body)),
            Ok(Ok(Answer::Text(body))) => ("ok", text_response(body)),
            Ok(Err(e)) => {
                let outcome = match &e {
                    ApiError::Panel(_) => "refused",
                    ApiError::Transport(..) => "bad_request",
                    ApiError::Unavailable(_) => "unavailable",
                };
                (outcome, e.into_response())
            }
            Err(_) => {
                warn!("request timed out");
                let body = json!({ "error": "Request timed out, please retry" });
                (
                    "timeout",
                    json_response(StatusCode::SERVICE_UNAVAILABLE, &body),
                )
            }
        };
    metrics::counter!("playpanel_requests_total", "action" => action, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("playpanel_request_seconds", "action" => action)
        .record(began.elapsed().as_secs_f64());
    response
}

async fn answer(
    state: &ApiState,
    request: Request,
    action_label: &mut &'static str,
) -> Result<Answer, ApiError> {
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(ApiError::Transport(
            StatusCode::METHOD_NOT_ALLOWED,
            "Use GET or POST",
        ));
    }
    let params = Params::from_request(request, state.config.max_body_bytes).await?;

    let key = authenticate(state.store.as_ref(), &state.known_keys, params.get("key")).await?;
    if !state.limits.allows(key.id) {
        return Err(ApiError::panel(texts::TOO_MANY_CALLS));
    }
    let action = params.get("action").unwrap_or_default();
    *action_label = ACTIONS
        .into_iter()
        .find(|a| *a == action)
        .unwrap_or("other");
    let value = match action {
        "services" => Ok(services(&state.catalogue)),
        "balance" => Ok(balance(&fresh(state.store.as_ref(), &key).await?)),
        "add" => add::add(state, &key, &params).await,
        "status" => {
            return status::status(&state.statuses, &key, &params)
                .await
                .map(Answer::Text);
        }
        "cancel" => amend::cancel(state, &key, &params).await,
        "refill" => amend::refill(state, &key, &params).await,
        "refill_status" => amend::refill_status(state, &key, &params).await,
        _ => Err(ApiError::panel(texts::INCORRECT_REQUEST)),
    };
    value.map(Answer::Value)
}

/// A successful answer: a JSON value, or JSON text already written (status answers are kept
/// as text so that a list of 100 costs copies rather than a tree of allocations).
enum Answer {
    Value(Value),
    Text(String),
}

/// The hash an API key is stored under. Keys are long random strings, so one round of SHA-256
/// is enough to keep them out of the database in clear.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Keys recently seen, by hash, so that a client polling `status` costs no key lookup. The
/// balance in a remembered key may be stale: `balance` and `add` read it afresh.
pub struct KnownKeys(Option<moka::future::Cache<String, KeyRecord>>);

impl KnownKeys {
    /// Keys are remembered for `ttl`; zero looks every one up.
    pub fn new(ttl: Duration) -> KnownKeys {
        KnownKeys((!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build()
        }))
    }

    async fn get(&self, hash: &str) -> Option<KeyRecord> {
        self.0.as_ref()?.get(hash).await
    }

    async fn remember(&self, record: &KeyRecord) {
        if let Some(cache) = &self.0 {
            cache.insert(record.key_hash.clone(), record.clone()).await;
        }
    }
}

async fn authenticate(
    store: &dyn Store,
    known: &KnownKeys,
    key: Option<&str>,
) -> Result<KeyRecord, ApiError> {
    let key = key.map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::panel(texts::INVALID_KEY));
    }
    let hash = hash_key(key);
    let record = match known.get(&hash).await {
        Some(record) => Some(record),
        None => {
            let found = store.find_key(&hash).await?;
            if let Some(record) = &found {
                known.remember(record).await;
            }
            found
        }
    };
    match record {
        Some(record) if bool::from(record.key_hash.as_bytes().ct_eq(hash.as_bytes())) => Ok(record),
        _ => Err(ApiError::panel(texts::INVALID_KEY)),
    }
}

/// The key as stored now, with its current balance.
pub(super) async fn fresh(store: &dyn Store, key: &KeyRecord) -> Result<KeyRecord, ApiError> {
    store
        .find_key(&key.key_hash)
        .await?
        .ok_or_else(|| ApiError::panel(texts::INVALID_KEY))
}

fn services(catalogue: &Catalogue) -> Value {
    let list: Vec<Value> = catalogue
        .iter()
        .map(|s| {
            json!({
                "service": s.id,
                "name": s.name,
                "type": "Default",
                "category": s.category,
                "rate": price_text(s.rate),
                "min": s.min.to_string(),
                "max": s.max.to_string(),
                "refill": s.refill,
                "cancel": s.cancel,
                "dripfeed": s.dripfeed,
            })
        })
        .collect();
    Value::Array(list)
}

/// A rate as panels show it: at least two decimals (`"0.90"`), more only when they matter.
fn price_text(rate: rust_decimal::Decimal) -> String {
    let mut rate = rate.normalize();
    if rate.scale() < 2 {
        rate.rescale(2);
    }
    rate.to_string()
}

fn balance(key: &KeyRecord) -> Value {
    json!({ "balance": key.balance.to_string(), "currency": "USD" })
}

pub(super) fn parse_order_id(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

/// The ids of a list field as written, refusing an empty list or more than 100.
pub(super) fn id_list(list: &str) -> Result<Vec<&str>, ApiError> {
    let written: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if written.is_empty() {
        return Err(ApiError::panel(texts::INCORRECT_REQUEST));
    }
    if written.len() > MAX_STATUS_IDS {
        return Err(ApiError::panel(texts::TOO_MANY_IDS));
    }
    Ok(written)
}
