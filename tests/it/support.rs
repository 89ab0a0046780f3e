//! A running playpanel for tests: sandbox, SQLite file, API server, and a worker to step.

use std::time::Duration;

use playpanel::app::{Playpanel, Settings};
use playpanel::domain::{Catalogue, Money, Service};
use playpanel::sandbox::{Sandbox, SandboxConfig, VideoView};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

pub struct TestEnv {
    pub app: Playpanel,
    pub sandbox: Sandbox,
    pub sandbox_url: Url,
    /// The panel endpoint, `http://127.0.0.1:PORT/api/v2`.
    pub api: String,
    pub key: String,
    pub http: reqwest::Client,
    pub db_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The sandbox catalogue plus a service the sandbox's upstream does not know, so that the
/// provider refuses its orders.
fn test_catalogue() -> Catalogue {
    let mut services: Vec<Service> = Catalogue::sandbox_default().iter().cloned().collect();
    services.push(Service {
        id: 3,
        name: "Views from a provider that refuses".into(),
        category: "TikTok Views".into(),
        rate: "2.00".parse().unwrap(),
        min: 100,
        max: 10_000,
        upstream_service: 99,
    });
    Catalogue::new(services).unwrap()
}

impl TestEnv {
    /// A fresh environment whose sandbox delivers at once, with timings of zero so that
    /// stepping the worker moves orders without waiting.
    pub async fn start() -> TestEnv {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::start_full(0, tune).await
    }

    /// With the sandbox's provider delivering `views_per_second` (0: at once).
    pub async fn start_full(views_per_second: u64, tune: impl FnOnce(&mut Settings)) -> TestEnv {
        let cancel = CancellationToken::new();
        let sandbox = Sandbox::new(SandboxConfig { views_per_second });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_url =
            Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(sandbox.clone().serve(listener, cancel.clone()));

        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("playpanel.db");
        let mut settings =
            Settings::for_sandbox(&format!("sqlite://{}", db_path.display()), &sandbox_url);
        settings.catalogue = test_catalogue();
        settings.worker.progress_interval = Duration::ZERO;
        settings.worker.verify_grace = Duration::ZERO;
        settings.worker.retry_base = Duration::ZERO;
        settings.worker.retry_max = Duration::ZERO;
        settings.reader.count_ttl = Duration::from_millis(1);
        settings.reader.breaker_base = Duration::ZERO;
        tune(&mut settings);

        let app = Playpanel::new(settings).await.unwrap();
        let key = playpanel::keys::create(app.store.as_ref(), "100".parse::<Money>().unwrap())
            .await
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}/api/v2", listener.local_addr().unwrap());
        let router = app.router();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });

        TestEnv {
            app,
            sandbox,
            sandbox_url,
            api,
            key,
            http: reqwest::Client::new(),
            db_path,
            _dir: dir,
            cancel,
        }
    }

    /// A second key with its own balance.
    pub async fn new_key(&self, balance: &str) -> String {
        playpanel::keys::create(self.app.store.as_ref(), balance.parse().unwrap())
            .await
            .unwrap()
    }

    /// POSTs form fields with this environment's key and returns the JSON answer.
    pub async fn call(&self, fields: &[(&str, &str)]) -> Value {
        self.call_as(&self.key, fields).await
    }

    pub async fn call_as(&self, key: &str, fields: &[(&str, &str)]) -> Value {
        let mut form = vec![("key", key)];
        form.extend_from_slice(fields);
        self.post_form(&form).await
    }

    /// POSTs exactly these fields (no key added).
    pub async fn post_form(&self, form: &[(&str, &str)]) -> Value {
        let response = self.http.post(&self.api).form(form).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.json().await.unwrap()
    }

    pub async fn add(&self, service: &str, link: &str, quantity: &str) -> Value {
        self.call(&[
            ("action", "add"),
            ("service", service),
            ("link", link),
            ("quantity", quantity),
        ])
        .await
    }

    /// Adds an order that must be accepted and returns its id.
    pub async fn add_ok(&self, service: &str, video: u64, quantity: &str) -> String {
        let link = format!("https://www.tiktok.com/@someone/video/{video}");
        let answer = self.add(service, &link, quantity).await;
        answer["order"]
            .as_str()
            .unwrap_or_else(|| panic!("order refused: {answer}"))
            .to_string()
    }

    pub async fn status(&self, order: &str) -> Value {
        self.call(&[("action", "status"), ("order", order)]).await
    }

    pub async fn balance(&self) -> String {
        self.call(&[("action", "balance")]).await["balance"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Steps the worker until nothing is due.
    pub async fn drive(&self) {
        self.app.worker.run_until_idle(100).await.unwrap();
    }

    /// Sets a sandbox video through its HTTP control interface.
    pub async fn set_video(&self, id: u64, body: Value) -> VideoView {
        let url = self
            .sandbox_url
            .join(&format!("sandbox/videos/{id}"))
            .unwrap();
        let response = self.http.put(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn video(&self, id: u64) -> VideoView {
        let url = self
            .sandbox_url
            .join(&format!("sandbox/videos/{id}"))
            .unwrap();
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The path of a fixture in the shared folder, or `None` (with the reason printed) when it is
/// missing outside CI. Under CI=true a missing fixture fails the test.
pub fn shared_fixture(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/tiktok")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("fixture {} is missing", path.display());
    }
    eprintln!("skipping: fixture {} is not present", path.display());
    None
}
