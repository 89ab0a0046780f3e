//! Several playpanel processes on one PostgreSQL: two serving the API, two running workers
//! (one of them both), a few hundred orders from concurrent clients, and a worker process
//! killed mid-run. Every order ends once, placed once, and the money adds up.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{PgDatabase, postgres_admin_url, spawn, spawn_sandbox, spawn_with};

fn key_create(database: &str, balance: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .args([
            "keys",
            "create",
            "--database",
            database,
            "--balance",
            balance,
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

async fn call(http: &reqwest::Client, api: &str, form: &[(&str, &str)]) -> Value {
    let response = http.post(api).form(form).send().await.unwrap();
    response.json().await.unwrap()
}

const ORDERS: usize = 300;
const KEYS: usize = 4;

#[tokio::test]
async fn three_processes_share_one_postgres() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let database = db.url.as_str();

    let (_sandbox, sandbox) = spawn_sandbox(2000);
    let timings = [
        "--key-rate",
        "0",
        "--progress-interval",
        "0.1",
        "--verify-grace",
        "0.3",
        "--lease",
        "2",
        "--watch-window",
        "3",
    ];
    let serve = |worker: bool| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database,
            "--sandbox-url",
            &sandbox,
        ];
        if !worker {
            args.push("--no-worker");
        }
        args.extend_from_slice(&timings);
        spawn(&args, &["playpanel listening on "])
    };
    // The first start migrates; the others find the schema current.
    let (_api_only, found) = serve(false);
    let api_a = found[0].clone();
    let (_api_and_worker, found) = serve(true);
    let api_b = found[0].clone();
    let mut worker_args = vec!["worker", "--database", database, "--sandbox-url", &sandbox];
    worker_args.extend_from_slice(&timings);
    let (doomed_worker, _) = spawn(&worker_args, &[]);

    let keys: Vec<String> = (0..KEYS).map(|_| key_create(database, "50")).collect();
    let opening = Decimal::from(50 * KEYS as i64);

    // Concurrent clients, alternating between the two API processes.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    let mut orders = Vec::new();
    for n in 0..ORDERS {
        let http = http.clone();
        let api = if n % 2 == 0 {
            api_a.clone()
        } else {
            api_b.clone()
        };
        let key = keys[n % KEYS].clone();
        tasks.push(tokio::spawn(async move {
            let service = if n % 5 == 0 { "2" } else { "1" };
            let link = format!("https://www.tiktok.com/@cluster/video/{}", 6_400_000 + n);
            let form = [
                ("key", key.as_str()),
                ("action", "add"),
                ("service", service),
                ("link", link.as_str()),
                ("quantity", "500"),
            ];
            let answer = call(&http, &api, &form).await;
            let id = answer["order"]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}"))
                .to_string();
            (n, key, id)
        }));
        if n + 1 == ORDERS / 2 {
            // Once half the orders are in and being worked on, kill a worker process.
            for task in tasks.drain(..) {
                orders.push(task.await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let killed = Command::new("kill")
                .args(["-KILL", &doomed_worker.0.id().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
    }
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    drop(doomed_worker);

    // Every order reaches a final state, read back through either API process.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut finals: HashMap<String, Value> = HashMap::new();
    while finals.len() < ORDERS {
        assert!(
            Instant::now() < deadline,
            "{} orders still open",
            ORDERS - finals.len()
        );
        for key in &keys {
            let ids: Vec<&str> = orders
                .iter()
                .filter(|(_, k, id)| k == key && !finals.contains_key(id))
                .map(|(_, _, id)| id.as_str())
                .take(100)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let list = ids.join(",");
            let form = [
                ("key", key.as_str()),
                ("action", "status"),
                ("orders", list.as_str()),
            ];
            let answer = call(&http, &api_b, &form).await;
            for id in ids {
                let status = &answer[id];
                if matches!(
                    status["status"].as_str(),
                    Some("Completed" | "Partial" | "Canceled")
                ) {
                    finals.insert(id.to_string(), status.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let placed: Value = http
        .get(format!("{sandbox}sandbox/upstream/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_video: HashMap<String, usize> = HashMap::new();
    for order in placed.as_array().unwrap() {
        *per_video
            .entry(order["video"].as_str().unwrap().to_string())
            .or_default() += 1;
    }

    let mut spent = Decimal::ZERO;
    for (n, _, id) in &orders {
        let status = &finals[id];
        let video = (6_400_000 + n).to_string();
        assert_eq!(
            per_video.get(&video),
            Some(&1),
            "order {id} placed upstream {per_video:?}"
        );
        let (expected, remains) = if n % 5 == 0 {
            ("Partial", "100")
        } else {
            ("Completed", "0")
        };
        assert_eq!(status["status"], expected, "order {id}: {status}");
        assert_eq!(status["remains"], remains, "order {id}: {status}");
        spent += status["charge"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap();
    }

    let mut balances = Decimal::ZERO;
    for key in &keys {
        let answer = call(
            &http,
            &api_a,
            &[("key", key.as_str()), ("action", "balance")],
        )
        .await;
        balances += answer["balance"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap();
    }
    assert_eq!(balances + spent, opening);
}

/// The environment that puts a process's clock `offset` off (`+10m`, `-10m`) through
/// libfaketime, preloaded into the process itself (the `faketime` wrapper forks, and killing
/// it would leave the worker running).
fn skewed(offset: &'static str) -> Option<[(&'static str, String); 2]> {
    let library = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|dir| format!("{dir}/faketime/libfaketime.so.1"))
    .find(|path| std::path::Path::new(path).exists());
    let Some(library) = library else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("libfaketime is not installed");
        }
        eprintln!("skipping: libfaketime is not installed");
        return None;
    };
    Some([("LD_PRELOAD", library), ("FAKETIME", offset.to_string())])
}

fn env_pairs<'a>(skew: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    skew.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn workers_with_wrong_clocks_share_orders_safely() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let (Some(ahead), Some(behind)) = (skewed("+10m"), skewed("-10m")) else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let database = db.url.as_str();

    let (_sandbox, sandbox) = spawn_sandbox(1000);
    let (_api, found) = spawn(
        &[
            "serve",
            "--no-worker",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database,
            "--sandbox-url",
            &sandbox,
        ],
        &[
            "demo API key (balance 100.00000 USD): ",
            "playpanel listening on ",
        ],
    );
    let (key, api) = (found[0].clone(), found[1].clone());

    // Leases of two seconds: a worker trusting its own clock would see every lease of the
    // other as long expired (or never expiring) and take orders that are being worked on.
    let worker = [
        "worker",
        "--database",
        database,
        "--sandbox-url",
        &sandbox,
        "--lease",
        "2",
        "--progress-interval",
        "0.1",
        "--verify-grace",
        "0.3",
        "--watch-window",
        "3",
    ];
    let ahead_env = env_pairs(&ahead);
    let (fast, _) = spawn_with(&ahead_env, &worker, &[]);
    let mut skewed_pids = vec![fast.0.id()];
    let mut fast = Some(fast);
    let behind_env = env_pairs(&behind);
    let (slow, _) = spawn_with(&behind_env, &worker, &[]);
    skewed_pids.push(slow.0.id());

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..40u64 {
        let link = format!("https://www.tiktok.com/@skew/video/{}", 4_200_000 + n);
        let form = [
            ("key", key.as_str()),
            ("action", "add"),
            ("service", "1"),
            ("link", link.as_str()),
            ("quantity", "300"),
        ];
        let answer = call(&http, &api, &form).await;
        ids.push(answer["order"].as_str().unwrap().to_string());
        if n == 20 {
            // The worker that is ahead is killed mid-run; the one behind must rescue its
            // orders once their leases run out by the database's clock.
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(fast.take());
        }
    }

    let list = ids.join(",");
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        let form = [
            ("key", key.as_str()),
            ("action", "status"),
            ("orders", list.as_str()),
        ];
        let answer = call(&http, &api, &form).await;
        if ids.iter().all(|id| answer[id]["status"] == "Completed") {
            break answer;
        }
        assert!(Instant::now() < deadline, "orders not completed: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(answer.as_object().unwrap().len(), 40);

    let placed: Value = http
        .get(format!("{sandbox}sandbox/upstream/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        placed.as_array().unwrap().len(),
        40,
        "each order placed exactly once"
    );

    // libfaketime leaves a shared-memory segment and a semaphore per process behind.
    drop(slow);
    for pid in skewed_pids {
        let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
        let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
    }
}
