//! Cancels, and money that always adds up: every key's balance equals the sum of its ledger,
//! and no order is refunded more than it was charged, over random sequences of adds, cancels,
//! refills, worker steps, dying workers and play counts that move.

use std::time::Duration;

use playpanel::domain::{Money, Phase};
use playpanel::store::Next;
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv};

crate::both!(
    a_cancel_that_arrives_while_a_worker_holds_the_order_is_kept,
    a_pending_order_is_canceled_at_once_with_a_full_refund,
    an_order_being_delivered_is_canceled_at_the_provider_and_charged_for_what_came,
    cancel_answers_each_id_in_request_order,
    the_ledger_explains_every_balance_over_random_histories,
    a_burst_of_adds_past_the_balance_charges_exactly_what_it_can,
);

const VIDEO: u64 = 7_400_000_000_000_000_001;

async fn key_id(env: &TestEnv, key: &str) -> i64 {
    let hash = playpanel::api::hash_key(key);
    env.app.store.find_key(&hash).await.unwrap().unwrap().id
}

/// Checks the two money invariants for one key and returns its ledger's sum.
async fn assert_books_balance(env: &TestEnv, key: &str) -> Money {
    let id = key_id(env, key).await;
    let ledger = env.app.store.ledger(id).await.unwrap();
    let sum = Money::from_units(ledger.iter().map(|e| e.amount.units()).sum());
    let balance: Money = env.call_as(key, &[("action", "balance")]).await["balance"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sum, balance, "ledger {ledger:?}");

    let mut per_order: std::collections::HashMap<i64, (i64, i64)> = Default::default();
    for entry in &ledger {
        if let Some(order) = entry.order_id {
            let slot = per_order.entry(order).or_default();
            match entry.kind.as_str() {
                "charge" => slot.0 -= entry.amount.units(),
                "refund" => slot.1 += entry.amount.units(),
                other => panic!("order entry of kind {other}"),
            }
        }
    }
    for (order, (charged, refunded)) in per_order {
        assert!(
            refunded <= charged,
            "order {order} refunded {refunded} of {charged}"
        );
    }
    sum
}

async fn a_pending_order_is_canceled_at_once_with_a_full_refund(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    let answer = env.call(&[("action", "cancel"), ("orders", &id)]).await;
    let number: i64 = id.parse().unwrap();
    assert_eq!(answer, json!([{"order": number, "cancel": 1}]));

    let status = env.status(&id).await;
    assert_eq!(status["status"], "Canceled");
    assert_eq!(status["charge"], "0.00000");
    assert_eq!(env.balance().await, "100.00000");
    env.drive().await;
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 0);
    assert_eq!(
        assert_books_balance(&env, &env.key).await.to_string(),
        "100.00000"
    );

    let history = env
        .app
        .store
        .order_history(number)
        .await
        .unwrap()
        .unwrap()
        .1;
    let steps: Vec<(Option<&str>, &str)> = history
        .iter()
        .map(|e| (e.from.as_deref(), e.to.as_str()))
        .collect();
    assert_eq!(steps, [(None, "Pending"), (Some("Pending"), "Canceled")]);
    assert_eq!(history[1].cause.as_deref(), Some("canceled by the client"));
}

async fn an_order_being_delivered_is_canceled_at_the_provider_and_charged_for_what_came(
    backend: Backend,
) {
    let env = TestEnv::start_full(backend, 2000, |_| {}).await;
    let start = playpanel::sandbox::initial_plays(VIDEO);
    let id = env.add_ok("1", VIDEO, "100000").await;
    env.app.worker.step().await.unwrap(); // placed, delivering at 2,000 views a second
    tokio::time::sleep(Duration::from_millis(300)).await;

    let answer = env.call(&[("action", "cancel"), ("orders", &id)]).await;
    assert_eq!(answer[0]["cancel"], 1, "{answer}");
    env.drive().await;

    let status = env.status(&id).await;
    let delivered = env.video(VIDEO).await.plays - start;
    assert!(
        delivered > 0 && delivered < 100_000,
        "delivered {delivered}"
    );
    assert_eq!(status["status"], "Partial", "{status}");
    assert_eq!(status["remains"], (100_000 - delivered).to_string());
    // 90.00000 charged; what was not delivered comes back.
    let kept = Money::from_units(9_000_000).refund_share(delivered, 100_000);
    assert_eq!(status["charge"], kept.to_string());
    assert_books_balance(&env, &env.key).await;
    // The history says the client's cancel ended it, not that the provider fell short.
    let number: i64 = id.parse().unwrap();
    let (_, history, _) = env.app.store.order_history(number).await.unwrap().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.to, "Partial");
    assert_eq!(
        last.cause.as_deref(),
        Some("ended after the client asked to cancel; charged for the views delivered")
    );
}

async fn cancel_answers_each_id_in_request_order(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let pending = env.add_ok("1", VIDEO, "100").await;
    let done = env.add_ok("1", VIDEO + 1, "100").await;
    let no_cancel = env.add_ok("3", VIDEO + 2, "100").await;
    env.drive().await; // `done` completes; the service 3 order is refused and canceled
    let fresh = env.add_ok("3", VIDEO + 3, "100").await;
    let other = env.new_key("10").await;
    let foreign = env
        .call_as(
            &other,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://www.tiktok.com/@o/video/31337"),
                ("quantity", "100"),
            ],
        )
        .await["order"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = pending;

    let list = format!("{done},abc,{fresh},{foreign},999999,{no_cancel}");
    let answer = env.call(&[("action", "cancel"), ("orders", &list)]).await;
    let n = |s: &str| -> Value { json!(s.parse::<i64>().unwrap()) };
    assert_eq!(
        answer,
        json!([
            {"order": n(&done), "cancel": {"error": "Order is already completed"}},
            {"order": "abc", "cancel": {"error": "Incorrect order ID"}},
            {"order": n(&fresh), "cancel": {"error": "Cancel is not available for this order"}},
            {"order": n(&foreign), "cancel": {"error": "Incorrect order ID"}},
            {"order": 999999, "cancel": {"error": "Incorrect order ID"}},
            {"order": n(&no_cancel), "cancel": {"error": "Order is already completed"}},
        ])
    );
    assert_eq!(
        env.call(&[("action", "cancel")]).await,
        json!({"error": "Incorrect request"})
    );
}

/// A small deterministic generator, so a failing history can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn the_ledger_explains_every_balance_over_random_histories(backend: Backend) {
    for seed in [1u64, 7, 42, 1234, 99991] {
        let env = TestEnv::start_with(backend, |s| s.worker.max_attempts = 3).await;
        let keys = [env.key.clone(), env.new_key("3").await];
        let mut rng = Rng(seed);
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..40 {
            let key = &keys[rng.below(2) as usize];
            match rng.below(8) {
                0 | 1 => {
                    let service = ["1", "2", "3"][rng.below(3) as usize];
                    let video = 5_000 + rng.below(12);
                    let quantity = (100 + rng.below(900)).to_string();
                    let link = format!("https://www.tiktok.com/@r/video/{video}");
                    let answer = env
                        .call_as(
                            key,
                            &[
                                ("action", "add"),
                                ("service", service),
                                ("link", &link),
                                ("quantity", &quantity),
                            ],
                        )
                        .await;
                    if let Some(id) = answer["order"].as_str() {
                        ids.push(id.to_string());
                    }
                }
                2 if !ids.is_empty() => {
                    let id = &ids[rng.below(ids.len() as u64) as usize];
                    env.call_as(key, &[("action", "cancel"), ("orders", id)])
                        .await;
                }
                3 => {
                    env.app.worker.step().await.unwrap();
                }
                4 => {
                    // A worker dies holding whatever it claimed, mid-placement.
                    let lost = Duration::ZERO;
                    for mut order in env.app.store.claim("doomed", 3, lost).await.unwrap() {
                        if order.phase == Phase::Place {
                            order.phase = Phase::Placing;
                            let held = Next {
                                keep_lease: true,
                                ..Next::after(lost)
                            };
                            env.app.store.save(&order, held).await.unwrap();
                        }
                    }
                }
                6 if !ids.is_empty() => {
                    let id = &ids[rng.below(ids.len() as u64) as usize];
                    env.call_as(key, &[("action", "refill"), ("order", id)])
                        .await;
                }
                5 => {
                    let video = 5_000 + rng.below(12);
                    let plays = rng.below(2_000_000);
                    env.set_video(video, json!({"plays": plays})).await;
                }
                _ => env.drive().await,
            }
            for key in &keys {
                assert_books_balance(&env, key).await;
            }
        }
        env.drive().await;
        for key in &keys {
            assert_books_balance(&env, key).await;
        }
    }
}

async fn a_cancel_that_arrives_while_a_worker_holds_the_order_is_kept(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;

    // A worker holds the order (reading its page, say) when the client cancels.
    let mut held = env
        .app
        .store
        .claim("busy-worker", 10, Duration::from_secs(60))
        .await
        .unwrap();
    let mut order = held.remove(0);
    let answer = env.call(&[("action", "cancel"), ("orders", &id)]).await;
    assert_eq!(answer[0]["cancel"], 1, "{answer}");

    // The worker then saves its step from the copy it read before the cancel.
    order.phase = Phase::Place;
    assert!(
        env.app
            .store
            .save(&order, Next::after(Duration::ZERO))
            .await
            .unwrap()
    );

    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Canceled", "{status}");
    assert_eq!(env.balance().await, "100.00000");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 0);
}

/// Adds arriving together are written in shared transactions: a burst from two keys, one
/// with money for only some of its orders and some orders on one video, must charge each
/// accepted order once, refuse the rest with the right text, and queue one video's orders.
async fn a_burst_of_adds_past_the_balance_charges_exactly_what_it_can(backend: Backend) {
    let env = TestEnv::start(backend).await;
    // 0.09 USD an order of 100 on service 1: money for 11 orders and 0.01 over.
    let poor = env.new_key("1.00").await;
    let rich = env.new_key("100").await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..80u64 {
        // Even calls from the poor key; the rich key's orders share five videos: they queue,
        // none is refused.
        let (key, video) = if n % 2 == 0 {
            (poor.clone(), 9_100_000 + n)
        } else {
            (rich.clone(), 9_200_000 + n % 5)
        };
        let (http, api) = (env.http.clone(), env.api.clone());
        calls.spawn(async move {
            let link = format!("https://www.tiktok.com/@b/video/{video}");
            let form = [
                ("key", key.as_str()),
                ("action", "add"),
                ("service", "1"),
                ("link", link.as_str()),
                ("quantity", "100"),
            ];
            let answer: serde_json::Value = http
                .post(&api)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (n % 2 == 0, answer)
        });
    }
    let answers = calls.join_all().await;

    let (mut poor_ok, mut poor_short, mut rich_ok) = (0, 0, 0);
    for (poor_call, answer) in &answers {
        match (
            *poor_call,
            answer["order"].is_string(),
            answer["error"].as_str(),
        ) {
            (true, true, _) => poor_ok += 1,
            (true, false, Some("Not enough funds on balance")) => poor_short += 1,
            (false, true, _) => rich_ok += 1,
            other => panic!("unexpected answer {answer} ({other:?})"),
        }
    }
    assert_eq!((poor_ok, poor_short, rich_ok), (11, 29, 40));
    assert_eq!(
        assert_books_balance(&env, &poor).await.to_string(),
        "0.01000"
    );
    assert_eq!(
        assert_books_balance(&env, &rich).await.to_string(),
        "96.40000"
    );

    // Orders on one video are worked one at a time, each placed once.
    env.drive().await;
    for video in 9_200_000..9_200_005u64 {
        assert_eq!(env.sandbox.upstream_orders_for(video), 8);
    }
}

/// A client that gives up while its order waits to be written is not charged for an order it
/// was never told about (SQLite: another process holds the write lock meanwhile).
#[tokio::test]
async fn an_add_whose_client_gave_up_is_not_written() {
    use sqlx::Connection;
    let env = TestEnv::start(Backend::Sqlite).await;
    let url = env.database.clone();
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let form = [
        ("key", env.key.as_str()),
        ("action", "add"),
        ("service", "1"),
        ("link", "https://www.tiktok.com/@g/video/31337"),
        ("quantity", "100"),
    ];
    assert!(impatient.post(&env.api).form(&form).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    // A patient client afterwards gets its order; the impatient one has none and paid nothing.
    let id = env.add_ok("1", 31338, "100").await;
    assert_eq!(env.status(&id).await["status"], "Pending");
    // One charge of 0.09 USD: the impatient client's order was not written.
    assert_eq!(env.balance().await, "99.91000");
    assert_books_balance(&env, &env.key).await;
}
