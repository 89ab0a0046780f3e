//! A running playpanel for tests: sandbox, SQLite file, API server, and a worker to step.

use std::time::Duration;

use playpanel::app::{Playpanel, Settings};
use playpanel::domain::{Catalogue, Money, Service};
use playpanel::sandbox::{Sandbox, SandboxConfig, VideoView};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Where a test keeps its data. Every behavioural test runs once on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` as two tests, `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The PostgreSQL server tests make their databases on: `PLAYPANEL_TEST_POSTGRES`, by default
/// the local server. `skip` leaves PostgreSQL out, except under `CI=true`, which always tests
/// it and fails when it is unreachable.
pub fn postgres_admin_url() -> Option<String> {
    let url = std::env::var("PLAYPANEL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    if url == "skip" {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PLAYPANEL_TEST_POSTGRES=skip is not allowed under CI=true");
        }
        eprintln!("skipping: PLAYPANEL_TEST_POSTGRES=skip");
        return None;
    }
    Some(url)
}

/// A database of its own on the test PostgreSQL server, dropped when this is dropped.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin: &str) -> PgDatabase {
        use sqlx::Connection;
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).unwrap();
        let name = format!(
            "playpanel_test_{}_{n}_{}",
            std::process::id(),
            hex::encode(tag)
        );
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is unreachable: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&name);
        PgDatabase {
            admin: admin.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropping needs a connection of its own, outside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

pub struct TestEnv {
    pub app: Playpanel,
    pub sandbox: Sandbox,
    pub sandbox_url: Url,
    /// The panel endpoint, `http://127.0.0.1:PORT/api/v2`.
    pub api: String,
    pub key: String,
    pub http: reqwest::Client,
    /// The PostgreSQL database's URL, when the test runs on PostgreSQL.
    pub pg_url: Option<String>,
    /// The database URL the app runs on.
    pub database: String,
    /// The SQLite file, for tests that look inside it.
    pub db_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
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
        cancel: false,
        refill: false,
        dripfeed: false,
    });
    Catalogue::new(services).unwrap()
}

impl TestEnv {
    /// A fresh environment whose sandbox delivers at once, with timings of zero so that
    /// stepping the worker moves orders without waiting.
    pub async fn start(backend: Backend) -> TestEnv {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tune: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::start_full(backend, 0, tune).await
    }

    /// With the sandbox's provider delivering `views_per_second` (0: at once).
    pub async fn start_full(
        backend: Backend,
        views_per_second: u64,
        tune: impl FnOnce(&mut Settings),
    ) -> TestEnv {
        let cancel = CancellationToken::new();
        let sandbox = Sandbox::new(SandboxConfig {
            views_per_second,
            ..SandboxConfig::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_url =
            Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(sandbox.clone().serve(listener, cancel.clone()));

        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("playpanel.db");
        // Without PostgreSQL (only allowed outside CI) its variant runs on SQLite again.
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => match postgres_admin_url() {
                Some(admin) => Some(PgDatabase::create(&admin).await),
                None => None,
            },
        };
        let database = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", db_path.display()),
        };
        let mut settings = Settings::for_sandbox(&database, &sandbox_url);
        settings.catalogue = test_catalogue();
        settings.worker.progress_interval = Duration::ZERO;
        settings.worker.verify_grace = Duration::ZERO;
        settings.worker.retry_base = Duration::ZERO;
        settings.worker.retry_max = Duration::ZERO;
        settings.reader.count_ttl = Duration::from_millis(1);
        settings.reader.breaker_base = Duration::ZERO;
        // Tests fire calls far faster than any client; the limit has a test of its own.
        settings.api.key_rate_per_second = 0;
        tune(&mut settings);

        let app = Playpanel::new(settings).await.unwrap();
        let key = playpanel::keys::create(app.store.as_ref(), "100".parse::<Money>().unwrap())
            .await
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}/api/v2", listener.local_addr().unwrap());
        let router = app.router();
        let stop = cancel.clone();
        tokio::spawn(playpanel::api::serve(
            listener,
            router,
            stop,
            Duration::from_secs(5),
        ));

        TestEnv {
            app,
            sandbox,
            sandbox_url,
            api,
            key,
            http: reqwest::Client::new(),
            pg_url: pg.as_ref().map(|pg| pg.url.clone()),
            database: database.clone(),
            db_path,
            _dir: dir,
            _pg: pg,
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

    /// POSTs fields with this environment's key and returns the answer's text as sent.
    pub async fn call_raw(&self, fields: &[(&str, &str)]) -> String {
        let mut form = vec![("key", self.key.as_str())];
        form.extend_from_slice(fields);
        let response = self.http.post(&self.api).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
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

/// A child process, killed when dropped.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `playpanel ARGS` with these extra environment variables and returns it with the
/// rest of the first line of its output starting with each of `wanted`, in order.
pub fn spawn_with(envs: &[(&str, &str)], args: &[&str], wanted: &[&str]) -> (Process, Vec<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .envs(envs.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut found = Vec::new();
    for prefix in wanted {
        loop {
            let line = lines.next().expect("process exited early").unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                found.push(rest.trim().to_string());
                break;
            }
        }
    }
    // Keep draining the output so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Process(child), found)
}

/// `playpanel ARGS`, as [`spawn_with`].
pub fn spawn(args: &[&str], wanted: &[&str]) -> (Process, Vec<String>) {
    spawn_with(&[], args, wanted)
}

/// `playpanel sandbox` on a free port, delivering `views_per_second`; returns it with its base
/// URL, ending in `/`.
pub fn spawn_sandbox(views_per_second: u32) -> (Process, String) {
    let speed = views_per_second.to_string();
    let args = [
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--views-per-second",
        &speed,
    ];
    let (process, found) = spawn(&args, &["sandbox listening on "]);
    (process, format!("{}/", found[0]))
}
