//! Drip-feed: `quantity` per run, `runs` runs `interval` minutes apart, charged on the total,
//! each run verified on its own and the order ended from what all of them delivered.

use playpanel::sandbox::initial_plays;
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv};

crate::both!(
    a_drip_feed_queued_behind_an_order_starts_from_the_count_then,
    every_run_is_delivered_and_verified,
    runs_that_fall_short_refund_what_did_not_come,
    runs_wait_for_their_interval_and_can_be_canceled,
    bad_dripfeed_requests_are_refused,
);

const VIDEO: u64 = 7_600_000_000_000_000_001;

async fn drip(env: &TestEnv, service: &str, quantity: &str, runs: &str, interval: &str) -> Value {
    let link = format!("https://www.tiktok.com/@d/video/{VIDEO}");
    env.call(&[
        ("action", "add"),
        ("service", service),
        ("link", &link),
        ("quantity", quantity),
        ("runs", runs),
        ("interval", interval),
    ])
    .await
}

async fn every_run_is_delivered_and_verified(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);
    let id = drip(&env, "1", "100", "3", "0").await["order"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.status(&id).await,
        json!({"charge": "0.27000", "start_count": start.to_string(), "status": "Pending",
               "remains": "300", "runs": "3", "currency": "USD"})
    );
    assert_eq!(env.balance().await, "99.73000");

    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["remains"], "0");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 3);
    assert_eq!(env.video(VIDEO).await.plays, start + 300);
    assert_eq!(env.balance().await, "99.73000");
}

async fn runs_that_fall_short_refund_what_did_not_come(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = drip(&env, "2", "500", "2", "0").await["order"]
        .as_str()
        .unwrap()
        .to_string();
    env.drive().await;
    let status = env.status(&id).await;
    // Each run delivers 400 of 500: 200 of 1,000 missing, a fifth of 0.50 back.
    assert_eq!(status["status"], "Partial", "{status}");
    assert_eq!(status["remains"], "200");
    assert_eq!(status["charge"], "0.40000");
    assert_eq!(env.balance().await, "99.60000");
}

async fn runs_wait_for_their_interval_and_can_be_canceled(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = drip(&env, "1", "100", "3", "60").await["order"]
        .as_str()
        .unwrap()
        .to_string();
    env.drive().await;
    // The first run is done; the next is due in an hour.
    let status = env.status(&id).await;
    assert_eq!(status["status"], "In progress");
    assert_eq!(
        status["remains"], "200",
        "what the ended runs delivered counts already"
    );
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);

    let answer = env.call(&[("action", "cancel"), ("orders", &id)]).await;
    assert_eq!(answer[0]["cancel"], 1, "{answer}");
    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Partial", "{status}");
    assert_eq!(status["remains"], "200");
    assert_eq!(status["charge"], "0.09000");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
    assert_eq!(env.balance().await, "99.91000");
}

async fn bad_dripfeed_requests_are_refused(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let error = |text: &str| json!({ "error": text });
    assert_eq!(
        drip(&env, "1", "100", "abc", "0").await,
        error("Incorrect request")
    );
    assert_eq!(
        drip(&env, "1", "100", "-2", "0").await,
        error("Incorrect request")
    );
    assert_eq!(
        drip(&env, "1", "100", "3", "soon").await,
        error("Incorrect request")
    );
    assert_eq!(
        drip(&env, "1", "100", "5000", "0").await,
        error("Runs more than maximum 1000")
    );
    assert_eq!(
        drip(&env, "1", "100", "2", "99999").await,
        error("Interval more than maximum 10080")
    );
    assert_eq!(
        drip(&env, "1", "100", "3", "6000").await,
        error("Drip-feed longer than 10080 minutes from first run to last")
    );
    assert_eq!(
        drip(&env, "3", "100", "2", "0").await,
        error("Drip-feed is not available for this service")
    );
    assert_eq!(
        drip(&env, "1", "50", "2", "0").await,
        error("Quantity less than minimal 100")
    );
    // Runs of 0 or 1 are a plain order.
    let plain = drip(&env, "1", "100", "1", "").await;
    assert!(plain["order"].is_string(), "{plain}");
    assert_eq!(env.balance().await, "99.91000");
}

async fn a_drip_feed_queued_behind_an_order_starts_from_the_count_then(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);
    env.add_ok("1", VIDEO, "100").await;
    let id = drip(&env, "1", "100", "2", "0").await["order"]
        .as_str()
        .unwrap()
        .to_string();
    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["start_count"], (start + 100).to_string());
}
