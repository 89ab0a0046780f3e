//! Wiring: builds the store, the TikTok reader, the provider, the API and the worker from
//! settings, so the binary and the tests assemble playpanel the same way.

use std::sync::Arc;

use tokio::sync::Notify;
use url::Url;

use crate::admin::{self, AdminToken, Dashboard};
use crate::api::{self, ApiConfig, ApiState, Statuses};
use crate::delivery::{Provider, UpstreamPanel};
use crate::domain::Catalogue;
use crate::store::{self, Store};
use crate::tiktok::{Reader, ReaderConfig};
use crate::worker::{Worker, WorkerConfig};

/// The sandbox post used to confirm "does not exist" answers.
pub const SANDBOX_CANARY: u64 = 1_000_000_007;

/// Everything needed to assemble playpanel.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: String,
    pub catalogue: Catalogue,
    pub upstream_url: String,
    pub upstream_key: String,
    pub reader: ReaderConfig,
    pub worker: WorkerConfig,
    pub api: ApiConfig,
    /// Serves the operator dashboard at `/admin` to whoever holds this token; none, no
    /// dashboard.
    pub admin_token: Option<AdminToken>,
}

impl Settings {
    /// Settings that point TikTok and the upstream panel at a sandbox, with timings short
    /// enough that an order finishes within seconds.
    pub fn for_sandbox(database: &str, sandbox: &Url) -> Settings {
        let base = sandbox.as_str().trim_end_matches('/');
        Settings {
            database: database.to_string(),
            catalogue: Catalogue::sandbox_default(),
            upstream_url: format!("{base}/api/v2"),
            upstream_key: "sandbox".to_string(),
            reader: ReaderConfig {
                sandbox: Some(sandbox.clone()),
                rate_per_second: 1000,
                breaker_base: std::time::Duration::from_secs(1),
                canary: crate::tiktok::link::VideoId::new(SANDBOX_CANARY),
                ..ReaderConfig::default()
            },
            worker: WorkerConfig {
                idle_poll: std::time::Duration::from_millis(500),
                progress_interval: std::time::Duration::from_secs(1),
                verify_grace: std::time::Duration::from_secs(3),
                watch_window: std::time::Duration::from_secs(60),
                retry_base: std::time::Duration::from_secs(1),
                retry_max: std::time::Duration::from_secs(30),
                provider_refuses_duplicates: true,
                ..WorkerConfig::default()
            },
            api: ApiConfig::default(),
            admin_token: None,
        }
    }
}

/// An assembled playpanel: the API's state and a worker over the same store.
pub struct Playpanel {
    pub store: Arc<dyn Store>,
    pub reader: Arc<Reader>,
    pub worker: Worker,
    api: ApiState,
    dashboard: Option<Arc<Dashboard>>,
}

impl Playpanel {
    pub async fn new(settings: Settings) -> anyhow::Result<Playpanel> {
        let store = store::open(&settings.database).await?;
        let reader = Arc::new(Reader::new(settings.reader.clone())?);
        let provider: Arc<dyn Provider> = Arc::new(UpstreamPanel::new(
            &settings.upstream_url,
            &settings.upstream_key,
            settings.reader.timeout,
        )?);
        let catalogue = Arc::new(settings.catalogue);
        let dashboard = settings.admin_token.as_ref().map(|token| {
            let provider = match Url::parse(&settings.upstream_url) {
                Ok(url) => match (url.host_str(), url.port_or_known_default()) {
                    (Some(host), Some(port)) => format!("upstream panel at {host}:{port}"),
                    _ => "upstream panel".to_string(),
                },
                Err(_) => "upstream panel".to_string(),
            };
            Arc::new(Dashboard::new(store.clone(), token, provider))
        });
        let wake = Arc::new(Notify::new());
        let watcher = (store.clone(), wake.clone());
        tokio::spawn(async move { watcher.0.watch_new_orders(watcher.1).await });
        let worker = Worker::new(
            store.clone(),
            reader.clone(),
            provider,
            catalogue.clone(),
            settings.worker,
            wake.clone(),
        );
        let statuses = Statuses::new(store.clone(), settings.api.status_cache_ttl);
        let limits = Arc::new(api::KeyLimits::new(settings.api.key_rate_per_second));
        let api = ApiState {
            statuses,
            limits,
            known_keys: Arc::new(api::KnownKeys::new(settings.api.key_memory)),
            store: store.clone(),
            reader: reader.clone(),
            catalogue,
            wake,
            workers: worker.heartbeat(),
            adds: Arc::new(api::AddQueue::new(store.clone(), store.writers())),
            config: settings.api,
        };
        Ok(Playpanel {
            store,
            reader,
            worker,
            api,
            dashboard,
        })
    }

    /// The panel API's routes, and the dashboard's when an operator token is set.
    pub fn router(&self) -> axum::Router {
        let router = api::router(self.api.clone());
        match &self.dashboard {
            Some(dashboard) => router.merge(admin::router(dashboard.clone())),
            None => router,
        }
    }
}
