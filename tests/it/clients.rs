//! The `playpanel` binary as a newcomer runs it, driven by a real panel client library.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `playpanel serve --sandbox` on a free port, with what it printed on start.
struct Server {
    child: Child,
    api: String,
    key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut api, mut key) = (None, None);
    while api.is_none() {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("demo API key (balance 100.00000 USD): ") {
            key = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("playpanel listening on ") {
            api = Some(rest.trim().to_string());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        api: api.unwrap(),
        key: key.expect("no demo key printed"),
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
import json, sys, time
from smmpy import smm

api = smm(sys.argv[1], sys.argv[2])
out = {"services": api.get_services(), "balance_before": api.get_balance()}
order = api.add_order(1, "https://vm.tiktok.com/ZMsmmpy1/", 1000)
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
        .args(["-c", SMMPY_SCRIPT, &server.api, &server.key])
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
    assert_eq!(out["balance_after"]["balance"], "99.10000");
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
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
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
        .args([script, &server.api, &server.key])
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
}
