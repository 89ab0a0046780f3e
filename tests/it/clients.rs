//! The `playpanel` binary as a newcomer runs it, driven by a real panel client library.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Process, spawn};

/// `playpanel serve --sandbox` on a free port, with what it printed on start.
struct Server {
    process: Process,
    api: String,
    key: String,
    /// The in-process sandbox's base URL, for setting up scenarios.
    sandbox: String,
    /// Where the metrics are served, when asked for.
    metrics: Option<String>,
    _dir: tempfile::TempDir,
}

fn start_server() -> Server {
    start_server_with(false)
}

/// `serve --sandbox` on free ports, with Prometheus metrics too when asked.
fn start_server_with(metrics: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let mut args = vec![
        "serve",
        "--sandbox",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
    ];
    // Printed in this order: the sandbox, the metrics address, the demo key, the API.
    let mut wanted = vec!["sandbox (TikTok pages and upstream panel) at "];
    if metrics {
        args.extend(["--metrics-listen", "127.0.0.1:0"]);
        wanted.push("metrics on ");
    }
    wanted.extend([
        "demo API key (balance 100.00000 USD): ",
        "playpanel listening on ",
    ]);
    let (process, mut found) = spawn(&args, &wanted);
    let api = found.pop().unwrap();
    let key = found.pop().unwrap();
    let metrics = metrics.then(|| found.pop().unwrap());
    Server {
        process,
        sandbox: found.pop().unwrap(),
        metrics,
        key,
        api,
        _dir: dir,
    }
}

/// A virtualenv with `smmpy` from PyPI, made once per machine and reused.
fn smmpy_python() -> Option<std::path::PathBuf> {
    let venv = std::env::temp_dir().join("playpanel-smmpy-venv");
    let python = venv.join("bin/python");
    let ready = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import smmpy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return unavailable("python3 -m venv failed");
    }
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "smmpy"])
        .status();
    if !installed.is_ok_and(|s| s.success()) || !ready(&python) {
        return unavailable("pip could not install smmpy");
    }
    Some(python)
}

fn unavailable(why: &str) -> Option<std::path::PathBuf> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

const SMMPY_SCRIPT: &str = r#"
import json, sys, time, urllib.request
from smmpy import smm

api = smm(sys.argv[1], sys.argv[2])
out = {"services": api.get_services(), "balance_before": api.get_balance()}
order = api.add_order(1, "https://www.tiktok.com/@py/video/7000000000000000042", 1000)
out["order"] = order
deadline = time.time() + 60
while True:
    status = api.get_status(order["order"])
    if status["status"] in ("Completed", "Partial", "Canceled") or time.time() > deadline:
        break
    time.sleep(0.2)
out["status"] = status
out["multi"] = api.get_multi_status([order["order"], 424242])
out["cancel"] = api.cancel_orders([order["order"], 424242])
# TikTok takes 300 of the delivered views away; the order is refilled.
video = "7000000000000000042"
put = urllib.request.Request(sys.argv[3] + "sandbox/videos/" + video, method="PUT",
    data=json.dumps({"plays": int(status["start_count"]) + 700}).encode(),
    headers={"Content-Type": "application/json"})
urllib.request.urlopen(put).read()
refill = api.create_refill(order["order"])
out["refill"] = refill
out["multi_refill"] = api.create_multi_refill([order["order"], 424242])
deadline = time.time() + 60
while True:
    refill_status = api.get_refill_status(refill["refill"])
    if refill_status["status"] in ("Completed", "Partial", "Rejected") or time.time() > deadline:
        break
    time.sleep(0.2)
out["refill_status"] = refill_status
out["multi_refill_status"] = api.get_multi_refill_status([refill["refill"], 424242])
drip = api.add_order(1, "https://www.tiktok.com/@py/video/7000000000000000043", 100, runs=3, interval=0)
deadline = time.time() + 60
while True:
    drip_status = api.get_status(drip["order"])
    if drip_status["status"] in ("Completed", "Partial", "Canceled") or time.time() > deadline:
        break
    time.sleep(0.2)
out["drip"] = drip_status
try:
    api.add_order(1, "https://www.tiktok.com/@someone", 1000)
except Exception as e:
    out["bad_link_error"] = str(e)
out["balance_after"] = api.get_balance()
print(json.dumps(out))
"#;

#[test]
fn the_smmpy_client_places_and_follows_an_order() {
    let Some(python) = smmpy_python() else { return };
    let server = start_server();

    let output = Command::new(python)
        .args([
            "-c",
            SMMPY_SCRIPT,
            &server.api,
            &server.key,
            &format!("{}/", server.sandbox.trim_end_matches('/')),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "smmpy script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["services"][0]["service"], 1);
    assert_eq!(out["balance_before"]["balance"], "100.00000");
    assert!(out["order"]["order"].is_string());
    assert_eq!(out["status"]["status"], "Completed", "{out}");
    assert_eq!(out["status"]["remains"], "0");
    assert_eq!(out["status"]["charge"], "0.90000");
    let id = out["order"]["order"].as_str().unwrap();
    assert_eq!(out["multi"][id]["status"], "Completed");
    assert_eq!(out["multi"]["424242"]["error"], "Incorrect order ID");
    assert_eq!(out["bad_link_error"], "Incorrect link");
    let id_number: i64 = id.parse().unwrap();
    assert_eq!(
        out["cancel"],
        serde_json::json!([
            {"order": id_number, "cancel": {"error": "Order is already completed"}},
            {"order": 424242, "cancel": {"error": "Incorrect order ID"}},
        ])
    );
    assert!(out["refill"]["refill"].is_string(), "{out}");
    assert_eq!(out["refill_status"]["status"], "Completed", "{out}");
    let refill_id: i64 = out["refill"]["refill"].as_str().unwrap().parse().unwrap();
    // The first refill is still open or done; asking again for the same order is refused.
    assert_eq!(out["multi_refill"][0]["order"], id_number);
    assert_eq!(
        out["multi_refill"][1]["refill"]["error"],
        "Incorrect order ID"
    );
    assert_eq!(
        out["multi_refill_status"],
        serde_json::json!([
            {"refill": refill_id, "status": "Completed"},
            {"refill": 424242, "status": {"error": "Refill not found"}},
        ])
    );
    assert_eq!(out["drip"]["status"], "Completed", "{out}");
    assert_eq!(out["drip"]["runs"], "3");
    assert_eq!(out["drip"]["charge"], "0.27000");
    // 0.90 for the order and 0.27 for the drip-feed; refills are free.
    assert_eq!(out["balance_after"]["balance"], "98.83000");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = start_server();
    // A client that never finishes its request head must not hold the shutdown up.
    let address = server
        .api
        .trim_start_matches("http://")
        .trim_end_matches("/api/v2");
    let mut stalled = std::net::TcpStream::connect(address).unwrap();
    std::io::Write::write_all(&mut stalled, b"GET /api/v2 HTTP/1.1\r\nHost: x\r\n").unwrap();
    let pid = server.process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.process.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn playpanel(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn operators_manage_keys_balances_and_orders_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("operator.db").display());
    let db = db.as_str();

    // A database that does not exist is not created by commands that only read or change one.
    let typo = format!("sqlite://{}", dir.path().join("operatr.db").display());
    for args in [
        vec!["keys", "list", "--database", &typo],
        vec!["orders", "show", "1", "--database", &typo],
    ] {
        let (ok, _, err) = playpanel(&args);
        assert!(!ok);
        assert!(err.contains("there is no database at"), "{err}");
    }
    assert!(!dir.path().join("operatr.db").exists());

    let (ok, out, _) = playpanel(&["keys", "create", "--database", db, "--balance", "10"]);
    assert!(ok);
    let key = out.lines().last().unwrap().trim().to_string();
    assert_eq!(key.len(), 32);

    let (ok, out, _) = playpanel(&["balance", "add", &key, "5.5", "--database", db]);
    assert!(ok);
    assert_eq!(out.trim(), "balance is now 15.50000 USD");
    let (ok, _, err) = playpanel(&["balance", "add", &key, "-100", "--database", db]);
    assert!(!ok);
    assert!(err.contains("below zero"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    let (ok, _, err) = playpanel(&["balance", "add", &key, "ten", "--database", db]);
    assert!(!ok && err.contains("not an amount"), "{err}");
    let (ok, _, err) = playpanel(&["balance", "add", "nobody", "1", "--database", db]);
    assert!(!ok && err.contains("no such key"), "{err}");

    let (ok, out, _) = playpanel(&["keys", "list", "--database", db]);
    assert!(ok);
    assert!(out.contains("15.50000") && out.contains("active"), "{out}");

    let (ok, out, _) = playpanel(&["orders", "show", "1", "--database", db]);
    assert!(!ok, "{out}");
    let (ok, _, err) = playpanel(&["orders", "show", "x", "--database", db]);
    assert!(!ok && err.contains("number"), "{err}");

    let (ok, _, _) = playpanel(&["keys", "revoke", &key, "--database", db]);
    assert!(ok);
    let (ok, out, _) = playpanel(&["keys", "list", "--database", db]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = playpanel(&["keys", "revoke", &key, "--database", db]);
    assert!(!ok && err.contains("no active key"), "{err}");

    let (ok, _, err) = playpanel(&["balance", "add", &key, "2000000000", "--database", db]);
    assert!(!ok && err.contains("at most"), "{err}");
    let (ok, _, err) = playpanel(&[
        "serve",
        "--status-cache",
        "1e11",
        "--sandbox-url",
        "http://127.0.0.1:9/",
        "--database",
        db,
    ]);
    assert!(!ok && err.contains("more than a year"), "{err}");

    let (ok, out, _) = playpanel(&["services"]);
    assert!(ok && out.contains("TikTok Views"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[service]]\nid = 1\nname = 'x'\nrate = 'cheap'\n").unwrap();
    let (ok, _, err) = playpanel(&["services", "--catalogue", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("catalogue"), "{err}");
}

#[test]
fn a_php_curl_client_uses_every_action() {
    let php = Command::new("php")
        .args(["-r", "exit(function_exists('curl_init') ? 0 : 1);"])
        .status();
    if !php.is_ok_and(|s| s.success()) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("php-cli with php-curl is not installed");
        }
        eprintln!("skipping: php-cli with php-curl is not installed");
        return;
    }
    let server = start_server();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/panel_client.php");
    let output = Command::new("php")
        .args([
            script,
            &server.api,
            &server.key,
            server.sandbox.trim_end_matches('/'),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "php client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["first_service_is_integer_1"], true);
    assert_eq!(out["rate"], "0.90");
    assert_eq!(out["balance_before"], "100.00000");
    assert_eq!(out["status"]["status"], "Completed", "{out}");
    assert_eq!(out["status"]["charge"], "0.90000");
    assert_eq!(out["multi_known"], "Completed");
    assert_eq!(out["multi_unknown"], "Incorrect order ID");
    assert_eq!(out["cancel"][0]["cancel"], 1, "{out}");
    assert_eq!(out["cancel"][1]["cancel"]["error"], "Incorrect order ID");
    assert_eq!(out["bad_link"], "Incorrect link");
    assert_eq!(out["refill_status"], "Completed", "{out}");
    assert_eq!(
        out["multi_refill"],
        serde_json::json!([{"order": 987654, "refill": {"error": "Incorrect order ID"}}])
    );
    let refill: i64 = out["refill"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        out["multi_refill_status"],
        serde_json::json!([
            {"refill": refill, "status": "Completed"},
            {"refill": 987654, "status": {"error": "Refill not found"}},
        ])
    );
}

#[test]
fn metrics_count_what_happened() {
    let server = start_server_with(true);
    let (metrics, key, api) = (server.metrics.as_deref().unwrap(), &server.key, &server.api);

    let post = |fields: &[(&str, &str)]| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-d", &body, api])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let order = post(&[
        ("key", key),
        ("action", "add"),
        ("service", "2"),
        (
            "link",
            "https://www.tiktok.com/@m/video/7000000000000000077",
        ),
        ("quantity", "1000"),
    ]);
    let id = order["order"].as_str().unwrap().to_string();
    post(&[("key", "wrong"), ("action", "balance")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(&[("key", key), ("action", "status"), ("order", &id)])["status"] != "Partial" {
        assert!(Instant::now() < deadline, "order did not end");
        std::thread::sleep(Duration::from_millis(200));
    }

    let scrape = Command::new("curl")
        .args(["-sS", "--max-time", "10", metrics])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&scrape.stdout);
    for expected in [
        r#"playpanel_requests_total{action="add",outcome="ok"} 1"#,
        r#"playpanel_requests_total{action="none",outcome="refused"} 1"#,
        r#"playpanel_page_reads_total{class="ok"}"#,
        r#"playpanel_provider_calls_total{call="add",outcome="placed"} 1"#,
        r#"playpanel_orders_ended_total{outcome="partial"} 1"#,
        "playpanel_views_short_total 200",
        "playpanel_request_seconds_count{action=\"status\"}",
        r#"playpanel_open_orders{status="Pending"}"#,
        "playpanel_oldest_due_order_seconds",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // No label carries an order id or a link.
    assert!(text.contains(r#"playpanel_request_seconds_bucket{action="status",le="0.01"}"#));
    for unbounded in ["order=\"", "link=\"", "video=\"", "key=\"", "tiktok.com"] {
        assert!(!text.contains(unbounded), "{unbounded} in:\n{text}");
    }
}

/// The program reading the server's output goes away (`playpanel serve ... 2>&1 | head -3`):
/// the server must keep answering, keep working orders and still stop on SIGTERM.
#[test]
fn a_server_whose_output_pipe_closes_keeps_working_and_stops_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("pipe.db").display());
    let (read_end, write_end) = std::io::pipe().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ])
        .stdout(write_end.try_clone().unwrap())
        .stderr(write_end)
        .spawn()
        .unwrap();
    let mut api = None;
    let mut key = None;
    let mut lines = std::io::BufReader::new(read_end).lines();
    while api.is_none() {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.split("demo API key (balance 100.00000 USD): ").nth(1) {
            key = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.split("playpanel listening on ").nth(1) {
            api = Some(rest.trim().to_string());
        }
    }
    // Close the only reader: every later write to stdout or stderr fails with EPIPE.
    drop(lines);
    let mut server = Process(child);
    let (api, key) = (api.unwrap(), key.unwrap());

    let call = |fields: &[(&str, &str)]| -> serde_json::Value {
        let mut args = vec!["-s".to_string(), "--max-time".into(), "10".into()];
        args.extend(["-d".into(), format!("key={key}")]);
        for (name, value) in fields {
            args.extend(["--data-urlencode".into(), format!("{name}={value}")]);
        }
        args.push(api.clone());
        let output = Command::new("curl").args(&args).output().unwrap();
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&output.stdout)))
    };
    let added = call(&[
        ("action", "add"),
        ("service", "1"),
        ("link", "https://www.tiktok.com/@p/video/4141"),
        ("quantity", "100"),
    ]);
    let id = added["order"].as_str().expect("add answered").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = call(&[("action", "status"), ("order", &id)]);
        if status["status"] == "Completed" {
            break;
        }
        assert!(Instant::now() < deadline, "order stuck: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "server still running 25 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
