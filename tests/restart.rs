//! PostgreSQL restarted under load: while it is down every request gets a JSON error within
//! the request timeout, and afterwards the service and its workers carry on by themselves.
//!
//! A test binary of its own, because it stops the PostgreSQL server every other test uses
//! (cargo runs test binaries one after another).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use serde_json::Value;
use support::{PgDatabase, postgres_admin_url, spawn, spawn_sandbox};

/// `pg_ctlcluster VERSION main ACTION` for the machine's one cluster, if there is one.
fn cluster(action: &str) -> Option<bool> {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .flatten()
        .next()?
        .file_name();
    let version = version.to_str()?.to_string();
    let mut args = vec!["--skip-systemctl-redirect", &version, "main", action];
    if action == "stop" {
        args.extend(["-m", "fast"]);
    }
    Some(
        Command::new("pg_ctlcluster")
            .args(&args)
            .status()
            .ok()?
            .success(),
    )
}

#[derive(Debug)]
struct Outcome {
    elapsed: Duration,
    ok: bool,
    json_error: bool,
    during_outage: bool,
}

#[tokio::test]
async fn the_service_rides_out_a_postgres_restart() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    // Restarting a developer's PostgreSQL uninvited would be rude: CI always does it, others
    // opt in.
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !ci && std::env::var("PLAYPANEL_TEST_RESTART_POSTGRES").as_deref() != Ok("1") {
        eprintln!("skipping: PLAYPANEL_TEST_RESTART_POSTGRES=1 lets this test restart PostgreSQL");
        return;
    }
    if cluster("status").is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no local PostgreSQL cluster to restart");
        }
        eprintln!("skipping: no local PostgreSQL cluster to restart");
        return;
    }
    let db = PgDatabase::create(&admin).await;

    let (_sandbox, sandbox) = spawn_sandbox(2000);
    let (_server, found) = spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db.url,
            "--sandbox-url",
            &sandbox,
            "--progress-interval",
            "0.1",
            "--verify-grace",
            "0.3",
            "--key-rate",
            "0",
        ],
        &[
            "demo API key (balance 100.00000 USD): ",
            "playpanel listening on ",
        ],
    );
    let (key, api) = (found[0].clone(), found[1].clone());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (http, api, key, outage, stop) = (
            http.clone(),
            api.clone(),
            key.clone(),
            outage.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                n += 1;
                let link = format!("https://www.tiktok.com/@r/video/{}", 5_500_000 + n);
                let list = ids
                    .iter()
                    .rev()
                    .take(100)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",");
                let requests: [Vec<(&str, &str)>; 2] = [
                    vec![
                        ("key", &key),
                        ("action", "add"),
                        ("service", "1"),
                        ("link", &link),
                        ("quantity", "100"),
                    ],
                    vec![("key", &key), ("action", "status"), ("orders", &list)],
                ];
                for form in requests {
                    if form.iter().any(|(_, v)| v.is_empty()) {
                        continue;
                    }
                    let during_outage = outage.load(Ordering::SeqCst);
                    let begun = Instant::now();
                    let answer = http.post(&api).form(&form).send().await;
                    let body: Option<Value> = match answer {
                        Ok(response) => response.json().await.ok(),
                        Err(_) => None,
                    };
                    if let Some(id) = body.as_ref().and_then(|b| b["order"].as_str()) {
                        ids.push(id.to_string());
                    }
                    outcomes.push(Outcome {
                        elapsed: begun.elapsed(),
                        ok: body.as_ref().is_some_and(|b| b.get("error").is_none()),
                        json_error: body.as_ref().is_some_and(|b| b["error"].is_string()),
                        during_outage,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (outcomes, ids)
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.store(true, Ordering::SeqCst);
    assert_eq!(cluster("stop"), Some(true), "could not stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = cluster("start");
    outage.store(false, Ordering::SeqCst);
    assert_eq!(started, Some(true), "could not start PostgreSQL again");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::SeqCst);
    let (outcomes, ids) = load.await.unwrap();

    for outcome in &outcomes {
        assert!(
            outcome.ok || outcome.json_error,
            "an answer that is not panel JSON: {outcome:?}"
        );
        assert!(
            outcome.elapsed < Duration::from_secs(31),
            "a request hung: {outcome:?}"
        );
    }
    // A request sent during the outage either got a panel error or waited for the database
    // to come back (an `add` queued for writing rides the outage out).
    assert!(
        outcomes
            .iter()
            .any(|o| o.during_outage && (o.json_error || o.elapsed >= Duration::from_secs(2))),
        "no request saw the outage"
    );
    let last = outcomes.iter().rev().take(10).collect::<Vec<_>>();
    assert!(
        last.iter().all(|o| o.ok),
        "not recovered after the restart: {last:?}"
    );

    // Every order that was accepted reaches its end after the restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    for chunk in ids.chunks(100) {
        let list = chunk.join(",");
        loop {
            let form = [
                ("key", key.as_str()),
                ("action", "status"),
                ("orders", &list),
            ];
            let answer: Value = http
                .post(&api)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if chunk.iter().all(|id| answer[id]["status"] == "Completed") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "orders not completed after the restart: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
