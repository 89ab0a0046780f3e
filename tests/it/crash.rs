//! Worker processes killed with SIGKILL at arbitrary moments while orders are in flight: every
//! order still ends once, is placed upstream exactly once and is refunded at most once.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{spawn, spawn_sandbox};
fn post(url: &str, form: &[(&str, &str)]) -> Value {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-d", &body, url])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

fn get(url: &str) -> Value {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", url])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn killed_workers_neither_lose_nor_repeat_orders() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("crash.db").display());

    let (_sandbox, sandbox) = spawn_sandbox(3000);
    let (_api, found) = spawn(
        &[
            "serve",
            "--no-worker",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--sandbox-url",
            &sandbox,
        ],
        &[
            "demo API key (balance 100.00000 USD): ",
            "playpanel listening on ",
        ],
    );
    let (key, api) = (found[0].clone(), found[1].clone());

    let mut orders = HashMap::new();
    for n in 0..30u64 {
        let service = if n % 4 == 0 { "2" } else { "1" };
        let link = format!("https://www.tiktok.com/@crash/video/{}", 8_100_000 + n);
        let answer = post(
            &api,
            &[
                ("key", &key),
                ("action", "add"),
                ("service", service),
                ("link", &link),
                ("quantity", "1000"),
            ],
        );
        let id = answer["order"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string();
        orders.insert(id, (service, 8_100_000 + n));
    }

    let worker_args = [
        "worker",
        "--database",
        &database,
        "--sandbox-url",
        &sandbox,
        "--lease",
        "1",
        "--progress-interval",
        "0.05",
        "--verify-grace",
        "0.3",
        "--watch-window",
        "2",
    ];
    // Kill workers at moments spread over the orders' lives.
    for pause_ms in [150u64, 400, 90, 700, 250, 50, 500] {
        let mut worker = Command::new(env!("CARGO_BIN_EXE_playpanel"))
            .args(worker_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(pause_ms));
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    let (_survivor, _) = spawn(&worker_args, &[]);
    let ids: Vec<&str> = orders.keys().map(String::as_str).collect();
    let list = ids.join(",");
    let deadline = Instant::now() + Duration::from_secs(90);
    let statuses = loop {
        let answer = post(
            &api,
            &[("key", &key), ("action", "status"), ("orders", &list)],
        );
        let done = ids.iter().all(|id| {
            matches!(
                answer[*id]["status"].as_str(),
                Some("Completed" | "Partial" | "Canceled")
            )
        });
        if done {
            break answer;
        }
        assert!(Instant::now() < deadline, "orders still open: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    };

    let placed = get(&format!("{sandbox}sandbox/upstream/orders"));
    let mut per_video: HashMap<String, usize> = HashMap::new();
    for order in placed.as_array().unwrap() {
        *per_video
            .entry(order["video"].as_str().unwrap().to_string())
            .or_default() += 1;
    }

    let mut spent = rust_decimal::Decimal::ZERO;
    for (id, (service, video)) in &orders {
        let status = &statuses[id.as_str()];
        assert_eq!(
            per_video.get(&video.to_string()),
            Some(&1),
            "order {id} upstream: {placed}"
        );
        let (expected, remains) = if *service == "1" {
            ("Completed", "0")
        } else {
            ("Partial", "200")
        };
        assert_eq!(status["status"], expected, "order {id}: {status}");
        assert_eq!(status["remains"], remains, "order {id}: {status}");
        spent += status["charge"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap();
    }

    let balance = post(&api, &[("key", &key), ("action", "balance")]);
    let balance: rust_decimal::Decimal = balance["balance"].as_str().unwrap().parse().unwrap();
    assert_eq!(balance + spent, rust_decimal::Decimal::from(100));
}
