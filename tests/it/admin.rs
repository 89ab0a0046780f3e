//! The operator dashboard: who may see it, what its pages show after orders went through the
//! worker, and the pages in a real browser (headless Chromium through ChromeDriver).

use std::time::Duration;

use playpanel::admin::AdminToken;
use reqwest::StatusCode;
use reqwest::redirect::Policy;

use crate::support::{Backend, TestEnv};

const TOKEN: &str = "operator-token-for-tests-0123456789";

async fn start(backend: Backend) -> TestEnv {
    TestEnv::start_with(backend, |s| {
        s.admin_token = Some(AdminToken::new(TOKEN).unwrap());
    })
    .await
}

/// The server's base URL, `http://127.0.0.1:PORT`.
fn base(env: &TestEnv) -> String {
    env.api.trim_end_matches("/api/v2").to_string()
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// GETs a dashboard path with the token as a bearer token and returns the page.
async fn page(env: &TestEnv, path: &str) -> String {
    let response = client()
        .get(format!("{}{path}", base(env)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The rows of the orders table, as the ids they link to, in page order.
fn listed_orders(html: &str) -> Vec<String> {
    html.split("<tr data-order=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The `<tr>` of one order in the orders table.
fn order_row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<tr data-order=\"{id}\">"))
        .unwrap_or_else(|| panic!("order {id} is not listed"));
    let row = &html[start..];
    &row[..row.find("</tr>").unwrap()]
}

/// The `<tr>` of a table row marked with `data-NAME="VALUE"`.
fn row_with<'a>(html: &'a str, marker: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no row {marker}"));
    let row = &html[start..];
    &row[..row.find("</tr>").unwrap()]
}

#[tokio::test]
async fn without_a_token_there_is_no_dashboard() {
    let env = TestEnv::start(Backend::Sqlite).await;
    for path in ["/admin", "/admin/login", "/admin/keys", "/admin/orders/1"] {
        let response = client()
            .get(format!("{}{path}", base(&env)))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let response = client()
        .post(format!("{}/admin/login", base(&env)))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_the_operator_token_opens_the_dashboard() {
    let env = start(Backend::Sqlite).await;
    let http = client();
    let url = |path: &str| format!("{}{path}", base(&env));
    let to_login = |response: &reqwest::Response| {
        response.status() == StatusCode::SEE_OTHER
            && response.headers()["location"] == "/admin/login"
    };

    // Nothing, a wrong token, or an API key in any form: sent to the login form.
    let response = http.get(url("/admin")).send().await.unwrap();
    assert!(to_login(&response));
    let response = http
        .get(url("/admin/keys"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert!(to_login(&response));
    let response = http
        .get(url("/admin"))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert!(to_login(&response));
    let response = http
        .get(url(&format!("/admin?key={}", env.key)))
        .send()
        .await
        .unwrap();
    assert!(to_login(&response));
    let response = http
        .get(url("/admin"))
        .header("cookie", format!("playpanel_admin={}", env.key))
        .send()
        .await
        .unwrap();
    assert!(to_login(&response));
    // Not even the token itself as the cookie: the cookie holds a digest of it.
    let response = http
        .get(url("/admin"))
        .header("cookie", format!("playpanel_admin={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(to_login(&response));

    // The login form; a wrong token (or an API key) shows it again, with no session.
    let form = http.get(url("/admin/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    for wrong in ["wrong-token-0123456789", env.key.as_str(), ""] {
        let response = http
            .post(url("/admin/login"))
            .form(&[("token", wrong)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get("set-cookie").is_none());
        let body = response.text().await.unwrap();
        assert!(body.contains("That token is not right."));
        assert!(!body.contains(TOKEN));
    }

    // The bearer token works for scripts.
    let response = http
        .get(url("/admin/keys"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Logging in sets an HttpOnly, SameSite=Strict cookie that is not the token.
    let response = http
        .post(url("/admin/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/admin");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let response = http
        .get(url("/admin"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("id=\"orders\""));
    // It expires, and is signed: a later expiry with the same signature is refused.
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    let value = session.trim_start_matches("playpanel_admin=");
    let (expires, signature) = value.split_once('.').unwrap();
    let later: u64 = expires.parse::<u64>().unwrap() + 3600;
    let forged = format!("playpanel_admin={later}.{signature}");
    let response = http
        .get(url("/admin"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // The scheme name of a bearer token is case-insensitive.
    let response = http
        .get(url("/admin/keys"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Logging out ends the session on the server, not only in the browser.
    let response = http
        .post(url("/admin/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = http
        .get(url("/admin"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

/// Orders on a service that delivers, one whose provider delivers 80% while claiming done, and
/// one the provider refuses, driven to their ends; then every page.
async fn pages_show_what_the_worker_did(backend: Backend) {
    let env = start(backend).await;
    let full = env.add_ok("1", 7_000_000_000_000_000_101, "1000").await;
    let short = env.add_ok("2", 7_000_000_000_000_000_102, "1000").await;
    let refused = env.add_ok("3", 7_000_000_000_000_000_103, "500").await;
    env.drive().await;
    assert_eq!(env.status(&full).await["status"], "Completed");
    assert_eq!(env.status(&short).await["status"], "Partial");
    assert_eq!(env.status(&refused).await["status"], "Canceled");

    // The list, newest first, with each order's delivery against its quantity.
    let orders = page(&env, "/admin").await;
    assert_eq!(
        listed_orders(&orders),
        [refused.as_str(), short.as_str(), full.as_str()]
    );
    let row = order_row(&orders, &full);
    assert!(
        row.contains(r#"data-delivered="1000" data-quantity="1000""#),
        "{row}"
    );
    assert!(row.contains("status-completed"), "{row}");
    let row = order_row(&orders, &short);
    assert!(
        row.contains(r#"data-delivered="800" data-quantity="1000""#),
        "{row}"
    );
    assert!(row.contains("status-partial"), "{row}");
    let start: u64 = env.status(&short).await["start_count"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Start, current (the last reading) and target counts.
    assert!(row.contains(&format!(">{start}<")), "{row}");
    assert!(row.contains(&format!(">{}<", start + 800)), "{row}");
    assert!(row.contains(&format!(">{}<", start + 1000)), "{row}");
    let row = order_row(&orders, &refused);
    assert!(
        row.contains(r#"data-delivered="0" data-quantity="500""#),
        "{row}"
    );

    // Filters by status, key and video, and paging by the last id shown.
    let partial = page(&env, "/admin?status=Partial").await;
    assert_eq!(listed_orders(&partial), [short.as_str()]);
    let video = page(&env, "/admin?video=7000000000000000102").await;
    assert_eq!(listed_orders(&video), [short.as_str()]);
    let link = "https%3A%2F%2Fwww.tiktok.com%2F%40someone%2Fvideo%2F7000000000000000101";
    let by_link = page(&env, &format!("/admin?video={link}")).await;
    assert_eq!(listed_orders(&by_link), [full.as_str()]);
    let other_key = env.new_key("10").await;
    let theirs = env
        .call_as(
            &other_key,
            &[
                ("action", "add"),
                ("service", "1"),
                (
                    "link",
                    "https://www.tiktok.com/@x/video/7000000000000000104",
                ),
                ("quantity", "100"),
            ],
        )
        .await["order"]
        .as_str()
        .unwrap()
        .to_string();
    let by_key = page(&env, "/admin?key=2").await;
    assert_eq!(listed_orders(&by_key), [theirs.as_str()]);
    let by_first_key = page(&env, "/admin?key=1").await;
    assert_eq!(
        listed_orders(&by_first_key),
        [refused.as_str(), short.as_str(), full.as_str()]
    );
    assert_eq!(listed_orders(&page(&env, "/admin?key=abc").await).len(), 0);
    let older = page(&env, &format!("/admin?before={short}")).await;
    assert_eq!(listed_orders(&older), [full.as_str()]);
    let older = page(&env, &format!("/admin?key=1&before={refused}")).await;
    assert_eq!(listed_orders(&older), [short.as_str(), full.as_str()]);

    // One order: its state changes, readings and provider calls, and its money.
    let history = page(&env, &format!("/admin/orders/{short}")).await;
    assert!(history.contains("Pending → In progress"), "{history}");
    assert!(history.contains("In progress → Partial"), "{history}");
    assert!(
        history.contains(r#"<tr class="event-reading">"#),
        "{history}"
    );
    assert!(
        history.contains(r#"<tr class="event-placement">"#),
        "{history}"
    );
    assert!(
        history.contains(r#"<tr class="event-progress">"#),
        "{history}"
    );
    assert!(history.contains(&format!("<td class=\"num\">{}</td>", start + 800)));
    assert!(history.contains("play count fell short of the target"));
    assert!(history.contains("refund"));
    let history = page(&env, &format!("/admin/orders/{refused}")).await;
    let last_error = history.split("id=\"last-error\">").nth(1).unwrap();
    assert!(
        last_error.starts_with("the provider refused the order"),
        "{last_error}"
    );
    assert!(history.contains("refused"));
    let response = client()
        .get(format!("{}/admin/orders/999999", base(&env)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Providers: service 2's 80% shows as not Completed and 200 views short; service 3's
    // refusal as a failed call.
    let providers = page(&env, "/admin/providers").await;
    let one = row_with(&providers, r#"<tr data-service="1">"#);
    assert!(one.contains("100.0%"), "{one}");
    assert!(one.contains(r#"data-short="0""#), "{one}");
    assert!(
        !one.contains("<td class=\"num\">–</td>"),
        "a lag is shown: {one}"
    );
    let two = row_with(&providers, r#"<tr data-service="2">"#);
    assert!(two.contains(r#"data-completed="0""#), "{two}");
    assert!(two.contains("0.0%"), "{two}");
    assert!(two.contains(r#"data-short="200""#), "{two}");
    let three = row_with(&providers, r#"<tr data-service="3">"#);
    assert!(three.contains(r#"data-failures="1""#), "{three}");
    assert!(three.contains(r#"data-short="0""#), "{three}");

    // Keys: balance, orders by status, charges and refunds, from the running totals.
    let keys = page(&env, "/admin/keys").await;
    let first = row_with(&keys, r#"<tr data-key="1">"#);
    let cells: Vec<&str> = first
        .split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..];
            text[..text.find("</td>").unwrap()].trim()
        })
        .collect();
    let balance = env.balance().await;
    // Key, state, balance, pending, in progress, completed, partial, canceled, charged,
    // refunded: 0.9 + 0.5 + 1.0 charged; 0.1 (a fifth of 0.5) and 1.0 refunded.
    assert_eq!(cells[1..8], ["active", &balance, "0", "0", "1", "1", "1"]);
    assert!(cells[8].contains("2.40000"), "{first}");
    assert!(cells[9].contains("1.10000"), "{first}");
    let second = row_with(&keys, r#"<tr data-key="2">"#);
    assert!(
        second.contains("<td class=\"num\">1</td>"),
        "one pending: {second}"
    );
}

crate::both!(pages_show_what_the_worker_did);

/// More orders than one page holds: the "older" link carries the filters and the last id.
async fn the_order_list_pages_by_id(backend: Backend) {
    let env = start(backend).await;
    let mut ids = Vec::new();
    for n in 0..55u64 {
        ids.push(env.add_ok("1", 7_000_000_000_000_001_000 + n, "100").await);
    }
    let first = page(&env, "/admin?status=Pending").await;
    let listed = listed_orders(&first);
    assert_eq!(listed.len(), 50);
    assert_eq!(listed[0], ids[54]);
    let older = first.split("id=\"older\" href=\"").nth(1).unwrap();
    let older = older[..older.find('"').unwrap()].replace("&#38;", "&");
    assert_eq!(older, format!("/admin?status=Pending&before={}", ids[5]));
    let second = page(&env, &older).await;
    assert_eq!(
        listed_orders(&second),
        [
            ids[4].as_str(),
            ids[3].as_str(),
            ids[2].as_str(),
            ids[1].as_str(),
            ids[0].as_str()
        ]
    );
    assert!(!second.contains("id=\"older\""));
}

crate::both!(the_order_list_pages_by_id);

/// Whether a program is on the PATH (or at this path).
fn find_program(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// ChromeDriver on a free port, killed when dropped.
struct ChromeDriver {
    process: std::process::Child,
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn start_chromedriver(program: &std::path::Path) -> ChromeDriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = std::process::Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let driver = ChromeDriver {
        process,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{}/status", driver.url)).send().await
            && response.status().is_success()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on port {port}");
}

/// Logs in through the form in headless Chromium, checks the orders table and a progress bar,
/// and saves a screenshot (to `PLAYPANEL_SCREENSHOT` when set).
#[tokio::test]
async fn the_dashboard_in_headless_chromium() {
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium and chromedriver are needed for the dashboard test under CI=true");
        }
        eprintln!("skipping: chromium or chromedriver is not installed");
        return;
    };

    // A few orders in every state: delivered, short, refused, being delivered, waiting.
    let env = start(Backend::Sqlite).await;
    for (service, video, quantity) in [
        ("1", 101, "1000"),
        ("1", 102, "2500"),
        ("2", 103, "1000"),
        ("1", 104, "5000"),
        ("2", 105, "2000"),
        ("3", 106, "500"),
    ] {
        env.add_ok(service, 7_400_000_000_000_000_000 + video, quantity)
            .await;
    }
    env.drive().await;
    for (service, video) in [("1", 107), ("2", 108)] {
        env.add_ok(service, 7_400_000_000_000_000_000 + video, "3000")
            .await;
    }
    env.app.worker.step().await.unwrap();
    env.add_ok("1", 7_400_000_000_000_000_109, "1500").await;

    let driver = start_chromedriver(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = fantoccini::wd::Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1500,820", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("chromedriver started no session");

    let checked = async {
        // Sent to the form, then logged in through it.
        browser.goto(&format!("{}/admin", base(&env))).await?;
        let token = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(fantoccini::Locator::Id("token"))
            .await?;
        token.send_keys(TOKEN).await?;
        browser
            .find(fantoccini::Locator::Id("login"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(fantoccini::Locator::Css("table#orders"))
            .await?;
        assert_eq!(browser.current_url().await?.path(), "/admin");

        let rows = browser
            .find_all(fantoccini::Locator::Css("table#orders tbody tr"))
            .await?;
        assert_eq!(rows.len(), 9);
        // The order at 80%: its bar is filled to 800 of 1000.
        let bar = browser
            .find(fantoccini::Locator::Css(
                "tr[data-order='3'] progress.delivery",
            ))
            .await?;
        assert_eq!(bar.attr("value").await?.as_deref(), Some("800"));
        assert_eq!(bar.attr("max").await?.as_deref(), Some("1000"));
        let status = browser
            .find(fantoccini::Locator::Css("tr[data-order='3'] .status"))
            .await?;
        assert_eq!(status.text().await?, "Partial");

        let png = browser.screenshot().await?;
        Ok::<_, fantoccini::error::CmdError>(png)
    }
    .await;
    let _ = browser.close().await;
    let png = checked.expect("the dashboard did not behave in Chromium");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(&target, &png).unwrap();
    if let Ok(path) = std::env::var("PLAYPANEL_SCREENSHOT") {
        if let Some(folder) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(folder).unwrap();
        }
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot saved to {path}");
    }
    eprintln!("screenshot saved to {}", target.display());
}
