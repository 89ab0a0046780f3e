//! A local stand-in for the outside world, for tests and demos: TikTok-like video pages with a
//! play count that can be set, short-link redirects, and an upstream panel whose deliveries
//! raise those play counts. Nothing here is used on production paths.

mod pages;
mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How a sandbox video's page answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VideoState {
    #[default]
    Ok,
    Private,
    Region,
    Gone,
    Blocked,
}

/// A video as the control interface shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoView {
    pub plays: u64,
    pub state: VideoState,
}

#[derive(Debug, Deserialize)]
struct VideoUpdate {
    plays: Option<u64>,
    state: Option<VideoState>,
}

/// A fault the sandbox's upstream panel can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamFault {
    #[default]
    None,
    /// Every `add` is refused with a panel error.
    Refuse,
    /// Every call answers HTTP 500 with a page that is not JSON.
    Error,
}

#[derive(Debug, Serialize, Deserialize)]
struct UpstreamUpdate {
    fault: UpstreamFault,
}

#[derive(Debug, Deserialize)]
struct ShortUpdate {
    target: String,
}

/// Sandbox behaviour.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Views the upstream panel delivers per second per order; 0 delivers at once.
    pub views_per_second: u64,
    /// How long each video page takes to answer, as TikTok's do.
    pub page_delay: std::time::Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            views_per_second: 500,
            page_delay: std::time::Duration::ZERO,
        }
    }
}

/// One order placed with the sandbox's upstream panel.
#[derive(Debug, Clone)]
struct UpstreamOrder {
    id: u64,
    video: u64,
    quantity: u64,
    /// What it will really deliver (all of it for service 1, 80% for service 2).
    target: u64,
    placed: Instant,
    delivered: u64,
}

#[derive(Debug, Default)]
struct World {
    videos: HashMap<u64, VideoView>,
    shorts: HashMap<String, String>,
    orders: Vec<UpstreamOrder>,
    fault: UpstreamFault,
    page_requests: u64,
}

/// The sandbox's shared state.
#[derive(Clone)]
pub struct Sandbox {
    world: Arc<Mutex<World>>,
    config: SandboxConfig,
}

/// A fixed starting play count for a video id, so runs are repeatable.
pub fn initial_plays(id: u64) -> u64 {
    let mut x = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    1_000 + x % 1_000_000
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox {
            world: Arc::new(Mutex::new(World::default())),
            config,
        }
    }

    /// The world with every upstream delivery brought up to now.
    fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self
            .world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let speed = self.config.views_per_second;
        let World { videos, orders, .. } = &mut *world;
        for order in orders.iter_mut().filter(|o| o.delivered < o.target) {
            let due = if speed == 0 {
                order.target
            } else {
                let elapsed = order.placed.elapsed().as_secs_f64();
                ((elapsed * speed as f64) as u64).min(order.target)
            };
            let fresh = due.saturating_sub(order.delivered);
            order.delivered = due;
            let video = videos.entry(order.video).or_insert_with(|| VideoView {
                plays: initial_plays(order.video),
                state: VideoState::Ok,
            });
            video.plays = video.plays.saturating_add(fresh);
        }
        world
    }

    /// The video's current view, creating it with its starting count on first sight.
    pub fn video(&self, id: u64) -> VideoView {
        *self.world().videos.entry(id).or_insert_with(|| VideoView {
            plays: initial_plays(id),
            state: VideoState::Ok,
        })
    }

    pub fn set_video(&self, id: u64, plays: Option<u64>, state: Option<VideoState>) -> VideoView {
        let mut world = self.world();
        let video = world.videos.entry(id).or_insert_with(|| VideoView {
            plays: initial_plays(id),
            state: VideoState::Ok,
        });
        if let Some(plays) = plays {
            video.plays = plays;
        }
        if let Some(state) = state {
            video.state = state;
        }
        *video
    }

    /// Page requests served so far.
    pub fn page_requests(&self) -> u64 {
        self.world().page_requests
    }

    pub fn set_fault(&self, fault: UpstreamFault) {
        self.world().fault = fault;
    }

    /// How many orders the upstream panel has accepted for a video.
    pub fn upstream_orders_for(&self, video: u64) -> usize {
        self.world()
            .orders
            .iter()
            .filter(|o| o.video == video)
            .count()
    }

    /// The HTTP surface: pages, short links, control and the upstream panel.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/sandbox/videos/{id}", get(get_video).put(put_video))
            .route("/sandbox/shorts/{code}", axum::routing::put(put_short))
            .route("/sandbox/upstream", axum::routing::put(put_upstream))
            .route("/sandbox/upstream/orders", get(upstream_orders))
            .route("/sandbox/stats", get(stats))
            .route("/api/v2", any(upstream::panel))
            .route("/api/v2/", any(upstream::panel))
            .route("/api", any(upstream::panel))
            .route("/{user}/video/{id}", get(pages::video_page))
            .route("/{user}/photo/{id}", get(pages::video_page))
            .route("/t/{code}", get(pages::short_redirect))
            .route("/t/{code}/", get(pages::short_redirect))
            .route("/{code}", get(pages::short_redirect))
            .route("/{code}/", get(pages::short_redirect))
            .with_state(self.clone())
    }

    /// Serves the sandbox on a bound listener until the token is cancelled.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn parse_id(raw: &str) -> Option<u64> {
    raw.parse::<u64>().ok().filter(|id| *id > 0)
}

async fn get_video(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    match parse_id(&id) {
        Some(id) => json_answer(StatusCode::OK, json!(sandbox.video(id))),
        None => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "video id must be a positive number"}),
        ),
    }
}

async fn put_video(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "video id must be a positive number"}),
        );
    };
    match serde_json::from_slice::<VideoUpdate>(&body) {
        Ok(update) => json_answer(
            StatusCode::OK,
            json!(sandbox.set_video(id, update.plays, update.state)),
        ),
        Err(e) => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("expected {{\"plays\": N, \"state\": \"ok|private|region|gone|blocked\"}}: {e}")}),
        ),
    }
}

async fn put_upstream(State(sandbox): State<Sandbox>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<UpstreamUpdate>(&body) {
        Ok(update) => {
            sandbox.set_fault(update.fault);
            json_answer(StatusCode::OK, json!(update))
        }
        Err(e) => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("expected {{\"fault\": \"none|refuse|error\"}}: {e}")}),
        ),
    }
}

/// Every order the upstream panel accepted, for tests that count placements.
async fn upstream_orders(State(sandbox): State<Sandbox>) -> Response {
    let world = sandbox.world();
    let orders: Vec<_> = world
        .orders
        .iter()
        .map(|o| {
            json!({"id": o.id, "video": o.video.to_string(), "quantity": o.quantity,
                   "target": o.target, "delivered": o.delivered})
        })
        .collect();
    json_answer(StatusCode::OK, json!(orders))
}

/// Counters for benchmarks: page requests served so far.
async fn stats(State(sandbox): State<Sandbox>) -> Response {
    json_answer(
        StatusCode::OK,
        json!({ "page_requests": sandbox.page_requests() }),
    )
}

async fn put_short(
    State(sandbox): State<Sandbox>,
    Path(code): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match serde_json::from_slice::<ShortUpdate>(&body) {
        Ok(update) => {
            sandbox.world().shorts.insert(code, update.target.clone());
            json_answer(StatusCode::OK, json!({"target": update.target}))
        }
        Err(e) => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("expected {{\"target\": URL}}: {e}")}),
        ),
    }
}
