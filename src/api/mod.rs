//! The panel API: one endpoint that reads a request in any encoding clients use, dispatches on
//! `action` and answers with the exact shapes and error texts panel clients expect.

mod params;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::domain::{Catalogue, Money, OrderStatus};
use std::collections::HashMap;

use crate::store::{
    AddRefusal, CancelOutcome, KeyRecord, NewOrder, OrderRecord, Store, StoreError,
};
use crate::tiktok::link::{self, Link, VideoId};
use crate::tiktok::{Reader, Reading, Resolved};
use params::Params;
pub use serve::{HEADER_READ_TIMEOUT, serve};

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

/// The database answers (with the schema this process migrated to at start).
async fn readyz(State(state): State<ApiState>) -> Response {
    match state.store.ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": e.to_string() }),
        ),
    }
}

async fn not_found() -> Response {
    ApiError::Transport(StatusCode::NOT_FOUND, "Not found").into_response()
}

async fn panel(State(state): State<ApiState>, request: Request) -> Response {
    let timeout = state.config.request_timeout;
    match tokio::time::timeout(timeout, answer(&state, request)).await {
        Ok(Ok(body)) => json_response(StatusCode::OK, &body),
        Ok(Err(e)) => e.into_response(),
        Err(_) => {
            warn!("request timed out");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": "Request timed out, please retry" }),
            )
        }
    }
}

async fn answer(state: &ApiState, request: Request) -> Result<Value, ApiError> {
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
    match params.get("action").unwrap_or_default() {
        "services" => Ok(services(&state.catalogue)),
        "balance" => Ok(balance(&fresh(state.store.as_ref(), &key).await?)),
        "add" => add(state, &key, &params).await,
        "status" => status(&state.statuses, &key, &params).await,
        "cancel" => cancel(state, &key, &params).await,
        "refill" => refill(state, &key, &params).await,
        "refill_status" => refill_status(state, &key, &params).await,
        _ => Err(ApiError::panel(texts::INCORRECT_REQUEST)),
    }
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
async fn fresh(store: &dyn Store, key: &KeyRecord) -> Result<KeyRecord, ApiError> {
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

/// The most runs one drip-feed order may have, and the longest interval between them.
const MAX_RUNS: u32 = 1000;
const MAX_INTERVAL_MINUTES: u64 = 7 * 24 * 60;

/// `runs` and `interval` (minutes) of a drip-feed order; one run when absent (clients send
/// empty, 0 or 1 for a plain order).
fn dripfeed(params: &Params) -> Result<(u32, Duration), ApiError> {
    let incorrect = || ApiError::panel(texts::INCORRECT_REQUEST);
    let runs = match params.get_nonempty("runs").map(str::trim) {
        None | Some("0") | Some("1") => return Ok((1, Duration::ZERO)),
        Some(runs) => runs.parse::<u32>().map_err(|_| incorrect())?,
    };
    if runs > MAX_RUNS {
        return Err(ApiError::Panel(format!(
            "Runs more than maximum {MAX_RUNS}"
        )));
    }
    let minutes = match params.get_nonempty("interval").map(str::trim) {
        None => 0,
        Some(minutes) => minutes.parse::<u64>().map_err(|_| incorrect())?,
    };
    if minutes > MAX_INTERVAL_MINUTES {
        return Err(ApiError::Panel(format!(
            "Interval more than maximum {MAX_INTERVAL_MINUTES}"
        )));
    }
    Ok((runs, Duration::from_secs(minutes * 60)))
}

/// A quantity as clients send it: digits, perhaps signed, perhaps too large for any service.
enum QuantityInput {
    Value(u64),
    BelowZero,
    TooLarge,
}

fn parse_quantity(raw: &str) -> Option<QuantityInput> {
    let raw = raw.trim();
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        let is_zero = digits.bytes().all(|b| b == b'0');
        return Some(if is_zero {
            QuantityInput::Value(0)
        } else {
            QuantityInput::BelowZero
        });
    }
    Some(match digits.parse::<u64>() {
        Ok(v) => QuantityInput::Value(v),
        Err(_) => QuantityInput::TooLarge,
    })
}

async fn add(state: &ApiState, key: &KeyRecord, params: &Params) -> Result<Value, ApiError> {
    let (Some(service), Some(link), Some(quantity)) = (
        params.get_nonempty("service"),
        params.get_nonempty("link"),
        params.get_nonempty("quantity"),
    ) else {
        return Err(ApiError::panel(texts::INCORRECT_REQUEST));
    };
    let (runs, interval) = dripfeed(params)?;

    let service = service
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(|id| state.catalogue.get(id))
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_SERVICE))?;
    if runs > 1 && !service.dripfeed {
        return Err(ApiError::panel(texts::DRIPFEED_UNAVAILABLE));
    }

    let quantity = match parse_quantity(quantity) {
        None => return Err(ApiError::panel(texts::INCORRECT_REQUEST)),
        Some(QuantityInput::BelowZero) => 0,
        Some(QuantityInput::TooLarge) => u64::MAX,
        Some(QuantityInput::Value(v)) => v,
    };
    if quantity < service.min {
        return Err(ApiError::Panel(format!(
            "Quantity less than minimal {}",
            service.min
        )));
    }
    if quantity > service.max {
        return Err(ApiError::Panel(format!(
            "Quantity more than maximum {}",
            service.max
        )));
    }
    // A drip-feed order is charged on all its runs.
    let charge = Money::charge_for(service.rate, quantity.saturating_mul(u64::from(runs)))
        .ok_or_else(|| ApiError::Panel(format!("Quantity more than maximum {}", service.max)))?;
    if fresh(state.store.as_ref(), key).await?.balance < charge {
        return Err(ApiError::panel(texts::NOT_ENOUGH_FUNDS));
    }

    let video = tokio::time::timeout(state.config.add_read_budget, video_of(state, link))
        .await
        .map_err(|_| ApiError::panel(texts::SHORT_LINK_UNRESOLVED))??;
    let refuse = state.config.refuse_same_video;
    if refuse && state.store.has_open_order(video).await? {
        return Err(ApiError::panel(texts::ACTIVE_ORDER));
    }

    // A page TikTok will not show right now does not lose the order: it is accepted and the
    // worker reads the start count before anything is placed.
    let budget = state.config.add_read_budget;
    let start_count = match tokio::time::timeout(budget, state.reader.read(video)).await {
        Ok(Reading::Count(count)) => Some(count),
        Ok(Reading::Private) => return Err(ApiError::panel(texts::VIDEO_PRIVATE)),
        Ok(Reading::Region) => return Err(ApiError::panel(texts::VIDEO_REGION)),
        Ok(Reading::Gone) => return Err(ApiError::panel(texts::VIDEO_NOT_FOUND)),
        Ok(Reading::Blocked(why) | Reading::Unavailable(why)) => {
            warn!(video.id = %video, cause = %why, "start count deferred to the worker");
            None
        }
        Err(_) => {
            warn!(video.id = %video, "start count deferred to the worker: TikTok was slow");
            None
        }
    };

    let order = NewOrder {
        key_id: key.id,
        service_id: service.id,
        video_id: video,
        link: link::canonical_url(video),
        quantity,
        charge,
        start_count,
        refill_of: None,
        runs,
        interval,
    };
    match state.store.insert_order(&order, refuse).await? {
        Ok(id) => {
            state.wake.notify_one();
            tracing::info!(order.id = id, video.id = %video, to = "Pending", "order accepted");
            Ok(json!({ "order": id.to_string() }))
        }
        Err(AddRefusal::NotEnoughFunds) => Err(ApiError::panel(texts::NOT_ENOUGH_FUNDS)),
        Err(AddRefusal::ActiveOrder) => Err(ApiError::panel(texts::ACTIVE_ORDER)),
    }
}

/// The video a pasted link names, following a short link's redirect when needed.
async fn video_of(state: &ApiState, raw: &str) -> Result<VideoId, ApiError> {
    match link::parse_link(raw) {
        Ok(Link::Video(id)) => Ok(id),
        Ok(Link::Short(short)) => match state.reader.resolve(&short).await {
            Resolved::Video(id) => Ok(id),
            Resolved::Gone => Err(ApiError::panel(texts::VIDEO_NOT_FOUND)),
            Resolved::NotAVideo => Err(ApiError::panel(texts::INCORRECT_LINK)),
            Resolved::Failed(reading) => {
                warn!(reading = ?reading, "short link not resolved");
                Err(ApiError::panel(texts::SHORT_LINK_UNRESOLVED))
            }
        },
        Err(_) => Err(ApiError::panel(texts::INCORRECT_LINK)),
    }
}

fn parse_order_id(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

fn status_of(order: &OrderRecord) -> Value {
    let charge = order
        .charge
        .checked_sub(order.refund)
        .unwrap_or(Money::ZERO);
    let mut answer = json!({
        "charge": charge.to_string(),
        // A queued order shows the count seen at `add` until its own start count is read.
        "start_count": order.start_count.or(order.last_count).unwrap_or(0).to_string(),
        "status": order.status.as_str(),
        "remains": order.remains.to_string(),
        "currency": "USD",
    });
    // A drip-feed order also says how many runs it has, as panels show it.
    if order.runs > 1 {
        answer["runs"] = json!(order.runs.to_string());
    }
    answer
}

/// The ids of a list field as written, refusing an empty list or more than 100.
fn id_list(list: &str) -> Result<Vec<&str>, ApiError> {
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

/// `cancel` with `orders`: one answer per id, in request order. A pending order is canceled
/// at once with a full refund; one being delivered is canceled at the provider by the worker,
/// and what was delivered is verified and charged as a `Partial`.
async fn cancel(state: &ApiState, key: &KeyRecord, params: &Params) -> Result<Value, ApiError> {
    let list = params
        .get_nonempty("orders")
        .or_else(|| params.get_nonempty("order"))
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let written = id_list(list)?;
    let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
    let orders: HashMap<i64, OrderRecord> = state
        .store
        .orders(key.id, &ids)
        .await?
        .into_iter()
        .map(|o| (o.id, o))
        .collect();

    let mut answers = Vec::new();
    for w in written {
        let id = parse_order_id(w);
        let shown = id.map_or_else(|| json!(w), |id| json!(id));
        let outcome = match id.and_then(|id| orders.get(&id)) {
            None => Err(texts::INCORRECT_ORDER),
            Some(order) if order.status.is_terminal() => Err(texts::ALREADY_ENDED),
            Some(order)
                if !state
                    .catalogue
                    .get(order.service_id)
                    .is_some_and(|s| s.cancel) =>
            {
                Err(texts::CANCEL_UNAVAILABLE)
            }
            Some(order) => match state.store.cancel_order(key.id, order.id).await? {
                CancelOutcome::Canceled => Ok(()),
                CancelOutcome::Requested => {
                    state.wake.notify_one();
                    Ok(())
                }
                CancelOutcome::Ended => Err(texts::ALREADY_ENDED),
                CancelOutcome::NotFound => Err(texts::INCORRECT_ORDER),
            },
        };
        let answer = match outcome {
            Ok(()) => json!(1),
            Err(text) => json!({ "error": text }),
        };
        answers.push(json!({ "order": shown, "cancel": answer }));
    }
    Ok(Value::Array(answers))
}

/// `refill` with `order` or `orders`: for an ended order of a service that allows it, within
/// the refill window, when the play count has fallen below what was delivered, a refill asks
/// the provider for the missing views and is verified like an order (and costs nothing).
async fn refill(state: &ApiState, key: &KeyRecord, params: &Params) -> Result<Value, ApiError> {
    if let Some(list) = params.get_nonempty("orders") {
        let mut answers = Vec::new();
        for w in id_list(list)? {
            let id = parse_order_id(w);
            let outcome = match id {
                Some(id) => refill_one(state, key, id).await?,
                None => Err(texts::INCORRECT_ORDER),
            };
            let refill = match outcome {
                Ok(refill) => json!(refill),
                Err(text) => json!({ "error": text }),
            };
            let shown = id.map_or_else(|| json!(w), |id| json!(id));
            answers.push(json!({ "order": shown, "refill": refill }));
        }
        return Ok(Value::Array(answers));
    }
    let raw = params
        .get_nonempty("order")
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))?;
    match refill_one(state, key, id).await? {
        Ok(refill) => Ok(json!({ "refill": refill.to_string() })),
        Err(text) => Err(ApiError::panel(text)),
    }
}

async fn refill_one(
    state: &ApiState,
    key: &KeyRecord,
    id: i64,
) -> Result<Result<i64, &'static str>, ApiError> {
    let Some(order) = state.store.orders(key.id, &[id]).await?.pop() else {
        return Ok(Err(texts::INCORRECT_ORDER));
    };
    let not_eligible = Ok(Err(texts::NOT_ELIGIBLE));
    let allowed = state
        .catalogue
        .get(order.service_id)
        .is_some_and(|s| s.refill);
    let ended = matches!(order.status, OrderStatus::Completed | OrderStatus::Partial);
    let window = i64::try_from(state.config.refill_window.as_millis()).unwrap_or(i64::MAX);
    let in_window = order.db_now.saturating_sub(order.updated_at) <= window;
    let Some(start) = order.start_count.filter(|_| allowed && ended && in_window) else {
        return not_eligible;
    };
    // Views now going to the video would be counted as refilled ones.
    if state.store.has_open_order(order.video_id).await? {
        return not_eligible;
    }
    let delivered = order.quantity.saturating_sub(order.remains);
    let target = start.saturating_add(delivered);
    let budget = state.config.add_read_budget;
    let count = match tokio::time::timeout(budget, state.reader.read_fresh(order.video_id)).await {
        Ok(Reading::Count(count)) if count < target => count,
        _ => return not_eligible,
    };
    let refill = NewOrder {
        key_id: key.id,
        service_id: order.service_id,
        video_id: order.video_id,
        link: order.link.clone(),
        quantity: target - count,
        charge: Money::ZERO,
        start_count: Some(count),
        refill_of: Some(order.id),
        runs: 1,
        interval: Duration::ZERO,
    };
    match state.store.insert_order(&refill, true).await? {
        Ok(refill) => {
            state.wake.notify_one();
            Ok(Ok(refill))
        }
        Err(_) => not_eligible,
    }
}

/// A refill's status in the words panels use for refills.
fn refill_word(refill: &OrderRecord) -> &'static str {
    match refill.status {
        OrderStatus::Canceled => "Rejected",
        other => other.as_str(),
    }
}

async fn refill_status(
    state: &ApiState,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    if let Some(list) = params.get_nonempty("refills") {
        let written = id_list(list)?;
        let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
        let found: HashMap<i64, OrderRecord> = state
            .store
            .refills(key.id, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let answers = written
            .into_iter()
            .map(|w| {
                let id = parse_order_id(w);
                let status = match id.and_then(|id| found.get(&id)) {
                    Some(refill) => json!(refill_word(refill)),
                    None => json!({ "error": texts::REFILL_NOT_FOUND }),
                };
                let shown = id.map_or_else(|| json!(w), |id| json!(id));
                json!({ "refill": shown, "status": status })
            })
            .collect();
        return Ok(Value::Array(answers));
    }
    let raw = params
        .get_nonempty("refill")
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::REFILL_NOT_FOUND))?;
    match state.store.refills(key.id, &[id]).await?.pop() {
        Some(refill) => Ok(json!({ "status": refill_word(&refill) })),
        None => Err(ApiError::panel(texts::REFILL_NOT_FOUND)),
    }
}

/// Status answers, read for many ids in one query and, when configured, kept for a few
/// seconds per process so clients polling the same orders cost no database reads.
#[derive(Clone)]
pub struct Statuses {
    store: Arc<dyn Store>,
    cache: Option<moka::future::Cache<(i64, i64), Value>>,
}

impl Statuses {
    /// `ttl` of zero reads every answer from the database.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Statuses {
        let cache = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build()
        });
        Statuses { store, cache }
    }

    /// The status answers of those `ids` that are the key's orders.
    async fn lookup(&self, key_id: i64, ids: &[i64]) -> Result<HashMap<i64, Value>, StoreError> {
        let mut answers = HashMap::new();
        let mut missing = Vec::new();
        for &id in ids {
            match &self.cache {
                Some(cache) => match cache.get(&(key_id, id)).await {
                    Some(answer) => {
                        answers.insert(id, answer);
                    }
                    None => missing.push(id),
                },
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(answers);
        }
        for order in self.store.orders(key_id, &missing).await? {
            let answer = status_of(&order);
            if let Some(cache) = &self.cache {
                cache.insert((key_id, order.id), answer.clone()).await;
            }
            answers.insert(order.id, answer);
        }
        Ok(answers)
    }
}

async fn status(statuses: &Statuses, key: &KeyRecord, params: &Params) -> Result<Value, ApiError> {
    let single = params.get_nonempty("order");
    if let Some(list) = params
        .get("orders")
        .filter(|l| single.is_none() || !l.trim().is_empty())
    {
        return multi_status(statuses, key, list).await;
    }
    let Some(raw) = single else {
        return Err(ApiError::panel(texts::INCORRECT_REQUEST));
    };
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))?;
    statuses
        .lookup(key.id, &[id])
        .await?
        .remove(&id)
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))
}

async fn multi_status(statuses: &Statuses, key: &KeyRecord, list: &str) -> Result<Value, ApiError> {
    let written = id_list(list)?;
    let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
    let found = statuses.lookup(key.id, &ids).await?;

    let mut answer = Map::new();
    for w in written {
        let entry = match parse_order_id(w).and_then(|id| found.get(&id)) {
            Some(status) => status.clone(),
            None => json!({ "error": texts::INCORRECT_ORDER }),
        };
        answer.insert(w.to_string(), entry);
    }
    Ok(Value::Object(answer))
}
