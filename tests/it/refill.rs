//! Refills: views an ended order has lost are asked for again, verified the same way, at no
//! charge; everything else is not eligible.

use std::time::Duration;

use playpanel::sandbox::initial_plays;
use serde_json::json;

use crate::support::{Backend, TestEnv};

crate::both!(
    a_refill_never_asks_for_more_than_was_delivered,
    lost_views_are_refilled_and_verified,
    orders_that_lost_nothing_or_cannot_be_refilled_are_not_eligible,
    refill_and_refill_status_answer_lists_in_request_order,
);

const VIDEO: u64 = 7_500_000_000_000_000_001;
const NOT_ELIGIBLE: &str = "Order not eligible for refill.";

async fn lost_views_are_refilled_and_verified(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);
    let id = env.add_ok("1", VIDEO, "1000").await;
    env.drive().await;
    assert_eq!(env.status(&id).await["status"], "Completed");
    let balance = env.balance().await;

    // TikTok removes 300 of the delivered views.
    env.set_video(VIDEO, json!({"plays": start + 700})).await;
    let answer = env.call(&[("action", "refill"), ("order", &id)]).await;
    let refill = answer["refill"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_string();
    let status = env
        .call(&[("action", "refill_status"), ("refill", &refill)])
        .await;
    assert_eq!(status, json!({"status": "Pending"}));
    // A second refill while the first runs is not eligible.
    let again = env.call(&[("action", "refill"), ("order", &id)]).await;
    assert_eq!(again, json!({"error": NOT_ELIGIBLE}));

    env.drive().await;
    let status = env
        .call(&[("action", "refill_status"), ("refill", &refill)])
        .await;
    assert_eq!(status, json!({"status": "Completed"}));
    assert_eq!(env.video(VIDEO).await.plays, start + 1000);
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 2);
    assert_eq!(env.balance().await, balance, "a refill costs nothing");
    // The refill is not an order of the client's.
    assert_eq!(
        env.status(&refill).await,
        json!({"error": "Incorrect order ID"})
    );
    assert_eq!(env.status(&id).await["status"], "Completed");
}

async fn orders_that_lost_nothing_or_cannot_be_refilled_are_not_eligible(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let not_eligible = json!({"error": NOT_ELIGIBLE});
    let refill = |id: String| {
        let env = &env;
        async move { env.call(&[("action", "refill"), ("order", &id)]).await }
    };

    let pending = env.add_ok("1", VIDEO, "100").await;
    assert_eq!(refill(pending).await, not_eligible);
    env.drive().await;

    let kept = env.add_ok("1", VIDEO + 1, "100").await;
    let no_refill = env.add_ok("3", VIDEO + 2, "100").await;
    env.drive().await;
    assert_eq!(refill(kept).await, not_eligible, "nothing was lost");
    assert_eq!(
        refill(no_refill).await,
        not_eligible,
        "the service does not refill"
    );
    assert_eq!(
        refill("999999".into()).await,
        json!({"error": "Incorrect order ID"})
    );
    assert_eq!(
        refill("x".into()).await,
        json!({"error": "Incorrect order ID"})
    );

    // Past the refill window.
    let env = TestEnv::start_with(backend, |s| s.api.refill_window = Duration::ZERO).await;
    let old = env.add_ok("1", VIDEO, "100").await;
    env.drive().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.set_video(VIDEO, json!({"plays": 5})).await;
    let answer = env.call(&[("action", "refill"), ("order", &old)]).await;
    assert_eq!(answer, not_eligible);
}

async fn refill_and_refill_status_answer_lists_in_request_order(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    env.drive().await;
    env.set_video(VIDEO, json!({"plays": 3})).await;
    let number: i64 = id.parse().unwrap();

    let list = format!("{id},424242");
    let answer = env.call(&[("action", "refill"), ("orders", &list)]).await;
    let refill = answer[0]["refill"]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(
        answer,
        json!([
            {"order": number, "refill": refill},
            {"order": 424242, "refill": {"error": "Incorrect order ID"}},
        ])
    );

    let list = format!("{refill},31337");
    let answer = env
        .call(&[("action", "refill_status"), ("refills", &list)])
        .await;
    assert_eq!(
        answer,
        json!([
            {"refill": refill, "status": "Pending"},
            {"refill": 31337, "status": {"error": "Refill not found"}},
        ])
    );
    let missing = env
        .call(&[("action", "refill_status"), ("refill", "31337")])
        .await;
    assert_eq!(missing, json!({"error": "Refill not found"}));
}

async fn a_refill_never_asks_for_more_than_was_delivered(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_video(VIDEO, json!({"plays": 100_000})).await;
    let id = env.add_ok("1", VIDEO, "100").await;
    env.drive().await;
    // The count collapses far below where the order started.
    env.set_video(VIDEO, json!({"plays": 0})).await;
    let answer = env.call(&[("action", "refill"), ("order", &id)]).await;
    assert!(answer["refill"].is_string(), "{answer}");
    env.drive().await;

    let placed: serde_json::Value = env
        .http
        .get(env.sandbox_url.join("sandbox/upstream/orders").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed[1]["quantity"], 100, "{placed}");
}
