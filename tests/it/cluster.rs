//! Several playpanel processes on one PostgreSQL: two serving the API, two running workers
//! (one of them both), a few hundred orders from concurrent clients, and a worker process
//! killed mid-run. Every order ends once, placed once, and the money adds up.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{PgDatabase, postgres_admin_url};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `playpanel ARGS` and returns it with the rest of each line starting with a prefix.
fn spawn(args: &[&str], wanted: &[&str]) -> (Process, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_playpanel"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
    std::thread::spawn(move || for _ in lines {});
    (Process(child), found)
}

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

    let (_sandbox, found) = spawn(
        &[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--views-per-second",
            "2000",
        ],
        &["sandbox listening on "],
    );
    let sandbox = format!("{}/", found[0]);
    let timings = [
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
