//! The worker under the conditions that lose or double orders elsewhere: several orders on one
//! video, lost placement answers, racing workers, and a provider that keeps failing.

use std::time::Duration;

use playpanel::domain::Phase;
use playpanel::sandbox::{UpstreamFault, initial_plays};
use playpanel::store::Next;
use playpanel::worker::Worker;
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv};

crate::both!(
    a_video_hidden_after_delivery_ends_as_the_provider_reported,
    a_blocked_reader_never_decides_an_order,
    a_provider_busy_with_the_link_leaves_the_order_pending,
    orders_on_one_video_are_verified_one_after_another,
    a_lost_placement_that_never_arrived_is_placed_once,
    a_lost_placement_the_provider_is_working_on_is_judged_by_the_count,
    racing_workers_claim_each_order_once,
    a_provider_that_keeps_failing_ends_orders_after_bounded_tries,
    a_video_that_vanishes_mid_delivery_ends_after_bounded_tries,
);

const VIDEO: u64 = 7_300_000_000_000_000_001;

async fn orders_on_one_video_are_verified_one_after_another(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);

    // The first goes to the provider that under-delivers; the second waits for it.
    let first = env.add_ok("2", VIDEO, "1000").await;
    let second = env.add_ok("1", VIDEO, "500").await;
    let waiting = env.status(&second).await;
    assert_eq!(waiting["status"], "Pending");
    assert_eq!(
        waiting["start_count"],
        start.to_string(),
        "the count seen at add"
    );

    env.app.worker.step().await.unwrap();
    assert_eq!(env.status(&first).await["status"], "In progress");
    assert_eq!(env.status(&second).await["status"], "Pending");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);

    env.drive().await;
    let first = env.status(&first).await;
    assert_eq!(first["status"], "Partial");
    assert_eq!(first["remains"], "200");
    let second = env.status(&second).await;
    assert_eq!(second["status"], "Completed");
    // The second order's start is the count after the first delivery, not before it.
    assert_eq!(second["start_count"], (start + 800).to_string());
    assert_eq!(env.video(VIDEO).await.plays, start + 800 + 500);
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 2);
    // 100 - 0.50 charged + 0.10 refunded - 0.45 charged.
    assert_eq!(env.balance().await, "99.15000");
}

/// Leaves an order as a worker that died right after recording `placing` would.
async fn crash_while_placing(env: &TestEnv) {
    let mut order = env
        .app
        .store
        .claim("crashed-worker", 10, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    order.phase = Phase::Placing;
    let held = Next {
        keep_lease: true,
        ..Next::after(Duration::ZERO)
    };
    assert!(env.app.store.save(&order, held).await.unwrap());
}

async fn a_lost_placement_that_never_arrived_is_placed_once(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    crash_while_placing(&env).await;

    // No views and the provider accepts the order again: the first call never arrived.
    env.drive().await;
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
    assert_eq!(env.status(&id).await["status"], "Completed");
    assert_eq!(env.balance().await, "99.10000");
}

async fn a_lost_placement_the_provider_is_working_on_is_judged_by_the_count(backend: Backend) {
    // Slow delivery, so the first order is still active at the provider when asked again.
    let env = TestEnv::start_full(backend, 1, |s| {
        s.worker.watch_window = Duration::from_secs(3600)
    })
    .await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    crash_while_placing(&env).await;
    let upstream = env.sandbox_url.join("api/v2").unwrap();
    // The call did arrive, but nothing shows on the video yet.
    let plays = env.video(VIDEO).await.plays;
    env.http
        .post(upstream)
        .form(&[
            ("key", "k"),
            ("action", "add"),
            ("service", "1"),
            ("link", &format!("https://www.tiktok.com/@/video/{VIDEO}")),
            ("quantity", "1000"),
        ])
        .send()
        .await
        .unwrap();
    env.set_video(VIDEO, json!({"plays": plays})).await;

    env.app.worker.step().await.unwrap();
    assert_eq!(
        env.sandbox.upstream_orders_for(VIDEO),
        1,
        "must not place a second time"
    );
    assert_eq!(env.status(&id).await["status"], "In progress");

    // The views show up: the watch sees the target reached.
    env.set_video(VIDEO, json!({"plays": plays + 1000})).await;
    env.drive().await;
    assert_eq!(env.status(&id).await["status"], "Completed");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
}

async fn racing_workers_claim_each_order_once(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut ids = Vec::new();
    for n in 0..40u64 {
        ids.push(
            env.add_ok(if n % 3 == 0 { "2" } else { "1" }, 9_000 + n, "100")
                .await,
        );
    }

    let workers: Vec<Worker> = (0..4).map(|_| env.app.worker.with_new_owner()).collect();
    let mut tasks = Vec::new();
    for worker in workers {
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                if worker.step().await.unwrap() == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    env.drive().await;

    let answer = env
        .call(&[("action", "status"), ("orders", &ids.join(","))])
        .await;
    let mut budget_orders = 0i64;
    for (n, id) in ids.iter().enumerate() {
        let status = &answer[id];
        let expected = if n % 3 == 0 { "Partial" } else { "Completed" };
        assert_eq!(status["status"], expected, "order {id}: {status}");
        if n % 3 == 0 {
            budget_orders += 1;
        }
        assert_eq!(
            env.sandbox.upstream_orders_for(9_000 + n as u64),
            1,
            "order {id}"
        );
    }
    // Full-delivery orders cost 0.09; budget ones 0.05, less a 20% refund (0.01).
    let full_orders = ids.len() as i64 - budget_orders;
    let spent = full_orders * 9_000 + budget_orders * (5_000 - 1_000);
    let expected = playpanel::domain::Money::from_units(100 * 100_000 - spent);
    assert_eq!(env.balance().await, expected.to_string());
}

async fn a_provider_that_keeps_failing_ends_orders_after_bounded_tries(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| {
        s.worker.max_attempts = 4;
        s.worker.watch_window = Duration::ZERO;
    })
    .await;
    env.sandbox.set_fault(UpstreamFault::Refuse);
    let refused = env.add_ok("1", VIDEO, "100").await;
    env.drive().await;
    let status = env.status(&refused).await;
    assert_eq!(status["status"], "Canceled");
    assert_eq!(status["charge"], "0.00000");

    // A provider that answers nothing usable: the placement is in doubt and never repeated;
    // the play count then decides.
    env.sandbox.set_fault(UpstreamFault::Error);
    let failing = env.add_ok("1", VIDEO + 1, "100").await;
    env.drive().await;
    assert_eq!(env.status(&failing).await["status"], "Canceled");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO + 1), 0);

    // Other orders flow once the provider is back.
    env.sandbox.set_fault(UpstreamFault::None);
    let fine = env.add_ok("1", VIDEO + 2, "100").await;
    env.drive().await;
    assert_eq!(env.status(&fine).await["status"], "Completed");
    assert_eq!(env.balance().await, "99.91000");
}

async fn a_video_that_vanishes_mid_delivery_ends_after_bounded_tries(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.worker.max_attempts = 3).await;
    let id = env.add_ok("2", VIDEO, "1000").await;
    env.app.worker.step().await.unwrap(); // placed
    env.app.worker.step().await.unwrap(); // provider done
    env.app.worker.step().await.unwrap(); // first check: 800 of 1000
    env.set_video(VIDEO, json!({"state": "gone"})).await;
    env.drive().await;

    // Judged by the last count read: 200 short.
    let status: Value = env.status(&id).await;
    assert_eq!(status["status"], "Partial");
    assert_eq!(status["remains"], "200");
}

async fn a_video_hidden_after_delivery_ends_as_the_provider_reported(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.worker.max_attempts = 3).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    env.app.worker.step().await.unwrap(); // placed
    env.app.worker.step().await.unwrap(); // provider done, all delivered
    // The client hides the video before any check: that must not earn a refund.
    env.set_video(VIDEO, json!({"state": "private"})).await;
    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(env.balance().await, "99.10000");
}

async fn a_blocked_reader_never_decides_an_order(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.worker.max_attempts = 3).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    env.app.worker.step().await.unwrap(); // placed
    env.app.worker.step().await.unwrap(); // provider done
    env.set_video(VIDEO, json!({"state": "blocked"})).await;
    // Far more tries than the bound: TikTok refusing to answer decides nothing.
    for _ in 0..20 {
        env.app.worker.step().await.unwrap();
    }
    assert_eq!(env.status(&id).await["status"], "In progress");

    env.set_video(VIDEO, json!({"state": "ok"})).await;
    env.drive().await;
    assert_eq!(env.status(&id).await["status"], "Completed");
}

async fn a_provider_busy_with_the_link_leaves_the_order_pending(backend: Backend) {
    let env = TestEnv::start_full(backend, 1, |_| {}).await;
    // Someone else's order on the video is still being delivered at the provider.
    let upstream = env.sandbox_url.join("api/v2").unwrap();
    env.http
        .post(upstream)
        .form(&[
            ("key", "k"),
            ("action", "add"),
            ("service", "1"),
            ("link", &format!("https://www.tiktok.com/@/video/{VIDEO}")),
            ("quantity", "100000"),
        ])
        .send()
        .await
        .unwrap();
    let id = env.add_ok("1", VIDEO, "100").await;
    env.app.worker.step().await.unwrap();
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Pending", "{status}");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
}
