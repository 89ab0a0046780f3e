//! The operator's dashboard at `/admin`: orders with their delivery, one order's whole
//! history, the verified record of each provider, and the keys' money. Server-rendered HTML
//! behind an operator token that is separate from API keys; without a token the paths do not
//! exist.

mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, warn};

use crate::store::{MAX_ACTIVITY_PER_ORDER, OrderFilter, Store, StoreError};
use crate::tiktok::link::{Link, parse_link};
use views::{
    HistoryView, KeyView, KeysPage, LoginPage, OrderPage, OrderView, OrdersPage, ProviderLine,
    ProvidersPage,
};

pub use views::delivered;

/// Orders per page of the order list.
const ORDERS_PER_PAGE: u32 = 50;
/// Keys per page of the key list.
const KEYS_PER_PAGE: u32 = 100;
/// The providers page sums this many of the latest orders placed with a provider...
const PROVIDER_WINDOW: u32 = 10_000;
/// ...and reuses the sums this long, so that reloading it costs the database nothing.
const PROVIDER_CACHE: Duration = Duration::from_secs(5);
/// The session cookie: an expiry time and its signature with a key derived from the token,
/// never the token itself.
const COOKIE: &str = "playpanel_admin";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The shortest operator token accepted: it is the only thing between the internet and every
/// key's orders.
pub const MIN_TOKEN_LEN: usize = 16;

const STATUSES: [&str; 5] = ["Pending", "In progress", "Completed", "Partial", "Canceled"];

/// The operator token, kept out of logs and debug output.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Checks a token from the configuration: surrounding blanks are dropped, and it must be
    /// at least [`MIN_TOKEN_LEN`] characters long.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!(
                "the operator token must be at least {MIN_TOKEN_LEN} characters long"
            ));
        }
        Ok(AdminToken(token.to_string()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The providers page's sums, when they were computed (for their age), and that time on the
/// server's clock in milliseconds (to show).
type ProviderSums = (Instant, i64, Arc<Vec<ProviderLine>>);

/// Everything the dashboard's pages need.
pub struct Dashboard {
    store: Arc<dyn Store>,
    /// SHA-256 of the token, what a bearer token is compared with.
    token_digest: [u8; 32],
    /// The key sessions are signed with: SHA-256 of a fixed prefix and the token. Changing the
    /// token ends every session.
    session_key: [u8; 32],
    /// Sessions logged out of through this process, until they would have expired.
    logged_out: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// How the one configured provider is named on the providers page.
    provider: String,
    /// The providers page's last sums.
    providers: tokio::sync::Mutex<Option<ProviderSums>>,
}

impl Dashboard {
    pub fn new(store: Arc<dyn Store>, token: &AdminToken, provider: String) -> Dashboard {
        let mut session_key = Sha256::new();
        session_key.update(b"playpanel operator session\0");
        session_key.update(token.0.as_bytes());
        Dashboard {
            store,
            token_digest: Sha256::digest(token.0.as_bytes()).into(),
            session_key: session_key.finalize().into(),
            logged_out: std::sync::Mutex::default(),
            provider,
            providers: tokio::sync::Mutex::new(None),
        }
    }

    fn token_matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.token_digest))
    }

    /// The signature of a session that expires at `expires` (seconds since the Unix epoch).
    fn sign(&self, expires: u64) -> String {
        // HMAC accepts a key of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.session_key)
            .expect("HMAC takes keys of any length");
        mac.update(format!("session until {expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session's cookie value: its expiry and the expiry's signature.
    fn new_session(&self) -> String {
        let expires = unix_now() + SESSION_LIFETIME.as_secs();
        format!("{expires}.{}", self.sign(expires))
    }

    /// Whether a cookie value is a session this token signed, not expired nor logged out.
    fn session_valid(&self, value: &str) -> bool {
        let Some((expires, signature)) = value.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let signed = bool::from(self.sign(expires).as_bytes().ct_eq(signature.as_bytes()));
        signed
            && expires > unix_now()
            && !self
                .logged_out
                .lock()
                .is_ok_and(|out| out.contains_key(value))
    }

    /// Ends a session in this process (the browser's copy is cleared by the response).
    fn log_out(&self, value: &str) {
        if let Some((expires, _)) = value.split_once('.')
            && let Ok(expires) = expires.parse::<u64>()
            && self.session_valid(value)
            && let Ok(mut out) = self.logged_out.lock()
        {
            let now = unix_now();
            out.retain(|_, until| *until > now);
            out.insert(value.to_string(), expires);
        }
    }

    /// A request carries the token as a bearer token, or the session cookie a login set.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .any(|token| self.token_matches(token.trim()));
        bearer || session_cookie(headers).is_some_and(|value| self.session_valid(value))
    }
}

/// The session cookie's value in a request, if it carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The dashboard's routes, all under `/admin`.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    let pages = Router::new()
        .route("/admin", get(orders))
        .route("/admin/", get(orders))
        .route("/admin/orders/{id}", get(order))
        .route("/admin/providers", get(providers))
        .route("/admin/keys", get(keys))
        .route("/admin/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_operator,
        ));
    Router::new()
        .route("/admin/login", get(login_form).post(login))
        .merge(pages)
        .with_state(dashboard)
}

/// Lets the operator through; sends a browser without a session to the login form.
async fn require_operator(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    if dashboard.authorized(request.headers()) {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        Redirect::to("/admin/login").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "log in at /admin/login").into_response()
    }
}

/// Why a page could not be shown.
enum PageError {
    NotFound,
    Store(StoreError),
    Render(askama::Error),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Store(e)
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Render(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound => (StatusCode::NOT_FOUND, "no such order").into_response(),
            PageError::Store(e) => {
                error!(error = %e, "dashboard page failed on the database");
                let text = "the database did not answer; reload in a moment";
                (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
            }
            PageError::Render(e) => {
                error!(error = %e, "dashboard page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be shown",
                )
                    .into_response()
            }
        }
    }
}

/// An HTML page with headers that keep it out of caches and frames, and allow no scripts.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn page(template: &impl Template) -> Result<Response, PageError> {
    Ok(html(StatusCode::OK, template.render()?))
}

async fn login_form() -> Result<Response, PageError> {
    page(&LoginPage { failed: false })
}

async fn login(State(dashboard): State<Arc<Dashboard>>, body: Bytes) -> Response {
    let token = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if dashboard.token_matches(token.trim()) {
        let cookie = format!(
            "{COOKIE}={}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}",
            dashboard.new_session(),
            SESSION_LIFETIME.as_secs()
        );
        let mut response = Redirect::to("/admin").into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    warn!("wrong operator token at the dashboard's login");
    // Slows down guessing a little; a long random token is what makes it hopeless.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match (LoginPage { failed: true }).render() {
        Ok(body) => html(StatusCode::UNAUTHORIZED, body),
        Err(e) => PageError::Render(e).into_response(),
    }
}

async fn logout(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(session) = session_cookie(&headers) {
        dashboard.log_out(session);
    }
    let mut response = Redirect::to("/admin/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct OrdersQuery {
    status: Option<String>,
    key: Option<String>,
    video: Option<String>,
    before: Option<String>,
}

/// A video id typed as digits or pasted as a link; `None` for anything else.
fn video_filter(text: &str) -> Option<String> {
    let text = text.trim();
    if !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(text.to_string());
    }
    match parse_link(text) {
        Ok(Link::Video(id)) => Some(id.to_string()),
        _ => None,
    }
}

async fn orders(
    State(dashboard): State<Arc<Dashboard>>,
    Query(query): Query<OrdersQuery>,
) -> Result<Response, PageError> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or_default().to_string();
    let (status, key, video) = (given(&query.status), given(&query.key), given(&query.video));

    // A key or video that cannot be one matches no order, rather than being ignored.
    let mut filter = OrderFilter {
        status: STATUSES.contains(&status.as_str()).then(|| status.clone()),
        limit: ORDERS_PER_PAGE + 1,
        ..OrderFilter::default()
    };
    if !key.is_empty() {
        filter.key_id = Some(key.parse().unwrap_or(0));
    }
    if !video.is_empty() {
        filter.video_id = Some(video_filter(&video).unwrap_or_else(|| "-".to_string()));
    }
    filter.before = query.before.as_deref().and_then(|b| b.trim().parse().ok());

    let mut lines = dashboard.store.order_lines(&filter).await?;
    let more = lines.len() > ORDERS_PER_PAGE as usize;
    lines.truncate(ORDERS_PER_PAGE as usize);
    let older = match lines.last() {
        Some(last) if more => {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (name, value) in [("status", &status), ("key", &key), ("video", &video)] {
                if !value.is_empty() {
                    link.append_pair(name, value);
                }
            }
            link.append_pair("before", &last.id.to_string());
            Some(format!("/admin?{}", link.finish()))
        }
        _ => None,
    };
    page(&OrdersPage {
        title: "Orders",
        active: "orders",
        statuses: STATUSES,
        filtered: !(status.is_empty() && key.is_empty() && video.is_empty())
            || filter.before.is_some(),
        status,
        key,
        video,
        orders: lines.iter().map(OrderView::new).collect(),
        older,
    })
}

async fn order(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    let store = dashboard.store.as_ref();
    let Some((record, events, ledger)) = store.order_history(id).await? else {
        return Err(PageError::NotFound);
    };
    let filter = OrderFilter {
        id: Some(id),
        limit: 1,
        ..OrderFilter::default()
    };
    let line = store
        .order_lines(&filter)
        .await?
        .pop()
        .ok_or(PageError::NotFound)?;
    let activity = store.order_activity(id).await?;
    let history: Vec<HistoryView> = views::history(&events, &activity, &ledger);
    let stamp =
        |at: Option<i64>| at.map_or_else(|| "–".to_string(), |at| views::time_ms(at) + " UTC");
    page(&OrderPage {
        title: "Order",
        active: "orders",
        kind: match (record.refill_of, record.run_of, line.kind.as_str()) {
            (Some(of), _, _) => format!("refill of order {of}"),
            (_, Some(of), _) => format!("run of drip-feed order {of}"),
            (_, _, "drip") => format!("drip-feed order, {} runs", record.runs),
            _ => "order".to_string(),
        },
        upstream: line.upstream_service,
        link: record.link.clone(),
        remains: line.remains,
        phase: record.phase.as_str().to_string(),
        lease_owner: record.lease_owner.clone(),
        provider_order: record
            .provider_order
            .clone()
            .unwrap_or_else(|| "–".to_string()),
        provider_done: stamp(line.provider_done_at),
        target_seen: stamp(line.target_seen_at),
        failures: line.provider_failures,
        last_error: record.last_error.clone(),
        history,
        max_activity: MAX_ACTIVITY_PER_ORDER,
        o: OrderView::new(&line),
    })
}

async fn providers(State(dashboard): State<Arc<Dashboard>>) -> Result<Response, PageError> {
    // One computation at a time; page views within the cache's life share its result.
    let mut cached = dashboard.providers.lock().await;
    let fresh = cached
        .as_ref()
        .filter(|(at, _, _)| at.elapsed() < PROVIDER_CACHE)
        .cloned();
    let (_, computed, lines) = match fresh {
        Some(hit) => hit,
        None => {
            let placed = dashboard.store.placed_orders(PROVIDER_WINDOW).await?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            let entry = (
                Instant::now(),
                now_ms,
                Arc::new(views::provider_lines(&placed)),
            );
            *cached = Some(entry.clone());
            entry
        }
    };
    drop(cached);
    page(&ProvidersPage {
        title: "Providers",
        active: "providers",
        provider: dashboard.provider.clone(),
        lines: lines.as_ref().clone(),
        window: PROVIDER_WINDOW,
        computed: views::time(computed),
        cache_seconds: PROVIDER_CACHE.as_secs(),
    })
}

#[derive(Deserialize)]
struct KeysQuery {
    after: Option<String>,
}

async fn keys(
    State(dashboard): State<Arc<Dashboard>>,
    Query(query): Query<KeysQuery>,
) -> Result<Response, PageError> {
    let after = query
        .after
        .as_deref()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(0);
    let mut keys = dashboard.store.key_lines(after, KEYS_PER_PAGE + 1).await?;
    let more = keys.len() > KEYS_PER_PAGE as usize;
    keys.truncate(KEYS_PER_PAGE as usize);
    let next = match keys.last() {
        Some(last) if more => Some(format!("/admin/keys?after={}", last.id)),
        _ => None,
    };
    page(&KeysPage {
        title: "Keys",
        active: "keys",
        keys: keys.iter().map(KeyView::new).collect(),
        next,
    })
}
