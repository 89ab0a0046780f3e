//! Orders from `add` to a verified end, through the sandbox's provider and pages.

use playpanel::sandbox::initial_plays;
use playpanel::store::Next;
use serde_json::json;

use crate::support::{Backend, TestEnv};

crate::both!(
    a_database_of_a_newer_schema_is_refused,
    status_answers_may_be_reused_for_a_while,
    a_video_made_public_again_can_be_ordered_at_once,
    an_implausible_play_count_is_not_trusted,
    an_order_moves_from_pending_to_completed,
    multi_status_answers_each_id_as_written,
    an_under_delivered_order_ends_partial_with_a_refund,
    a_lagging_count_is_rechecked_before_partial,
    an_order_the_provider_refuses_is_canceled_with_a_full_refund,
    nothing_delivered_ends_canceled,
    videos_that_cannot_be_ordered_are_refused_at_add,
    a_blocked_page_defers_the_start_count_without_losing_the_order,
    with_refusal_a_second_order_for_an_active_video_waits_for_the_first_to_end,
    with_refusal_concurrent_adds_for_one_video_make_one_order,
    a_placement_whose_answer_was_lost_is_never_placed_again,
    a_worker_that_lost_its_lease_writes_nothing,
    keys_are_stored_hashed,
);

const VIDEO: u64 = 7571863205253778710;

async fn an_order_moves_from_pending_to_completed(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);

    let id = env.add_ok("1", VIDEO, "1000").await;
    let status = env.status(&id).await;
    assert_eq!(
        status,
        json!({"charge": "0.90000", "start_count": start.to_string(), "status": "Pending",
               "remains": "1000", "currency": "USD"})
    );
    assert_eq!(env.balance().await, "99.10000");

    env.app.worker.step().await.unwrap();
    let status = env.status(&id).await;
    assert_eq!(status["status"], "In progress");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);

    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(
        status,
        json!({"charge": "0.90000", "start_count": start.to_string(), "status": "Completed",
               "remains": "0", "currency": "USD"})
    );
    assert_eq!(env.video(VIDEO).await.plays, start + 1000);
    assert_eq!(env.balance().await, "99.10000");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
}

async fn multi_status_answers_each_id_as_written(backend: Backend) {
    // With a status cache, so that the second of two identical calls is answered from it.
    let env = TestEnv::start_with(backend, |s| {
        s.api.status_cache_ttl = std::time::Duration::from_secs(600);
    })
    .await;
    let a = env.add_ok("1", 111, "100").await;
    let b = env.add_ok("2", 222, "200").await;
    let other = env.new_key("10").await;
    let foreign = env
        .call_as(
            &other,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://www.tiktok.com/@x/video/333"),
                ("quantity", "100"),
            ],
        )
        .await["order"]
        .as_str()
        .unwrap()
        .to_string();

    let list = format!("{a}, {b},999999,abc,{foreign}");
    let answer = env.call(&[("action", "status"), ("orders", &list)]).await;
    let object = answer.as_object().unwrap();
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [a.as_str(), b.as_str(), "999999", "abc", foreign.as_str()]
    );
    assert_eq!(answer[&a]["status"], "Pending");
    assert_eq!(answer[&b]["charge"], "0.10000");
    for missing in ["999999", "abc", foreign.as_str()] {
        assert_eq!(answer[missing], json!({"error": "Incorrect order ID"}));
    }

    // A repeated id is answered once, where it first appears; an id written with characters
    // JSON must escape comes back as written. Asked twice: the second answer comes from the
    // status cache.
    let list = format!("{b},\"x\\y\",{a},{b},0{a}");
    for _ in 0..2 {
        let raw = env
            .call_raw(&[("action", "status"), ("orders", &list)])
            .await;
        let answer: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let keys: Vec<&str> = answer
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let padded = format!("0{a}");
        assert_eq!(
            keys,
            [b.as_str(), "\"x\\y\"", a.as_str(), padded.as_str()],
            "{raw}"
        );
        assert_eq!(answer["\"x\\y\""], json!({"error": "Incorrect order ID"}));
        assert_eq!(answer[&padded], answer[&a]);
        assert_eq!(answer[&b]["charge"], "0.10000");
    }
}

async fn an_under_delivered_order_ends_partial_with_a_refund(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let start = initial_plays(VIDEO);

    // Service 2's provider delivers 80% and still reports the order completed.
    let id = env.add_ok("2", VIDEO, "1000").await;
    assert_eq!(env.balance().await, "99.50000");
    env.drive().await;

    let status = env.status(&id).await;
    assert_eq!(
        status,
        json!({"charge": "0.40000", "start_count": start.to_string(), "status": "Partial",
               "remains": "200", "currency": "USD"})
    );
    assert_eq!(env.balance().await, "99.60000");

    // Stepping again changes nothing: the refund happened once.
    env.drive().await;
    assert_eq!(env.balance().await, "99.60000");
}

async fn a_lagging_count_is_rechecked_before_partial(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;

    // Placed and reported done, but the count has not caught up at the first check.
    env.app.worker.step().await.unwrap(); // place
    env.app.worker.step().await.unwrap(); // provider reports done
    let delivered = env.video(VIDEO).await.plays;
    env.set_video(VIDEO, json!({"plays": delivered - 600}))
        .await;
    env.app.worker.step().await.unwrap(); // first check: short
    assert_eq!(env.status(&id).await["status"], "In progress");
    assert_eq!(env.status(&id).await["remains"], "600");

    // The counter catches up before the grace checks run out.
    env.set_video(VIDEO, json!({"plays": delivered})).await;
    env.drive().await;
    assert_eq!(env.status(&id).await["status"], "Completed");
    assert_eq!(env.balance().await, "99.10000");
}

async fn an_order_the_provider_refuses_is_canceled_with_a_full_refund(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("3", VIDEO, "500").await;
    assert_eq!(env.balance().await, "99.00000");

    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Canceled");
    assert_eq!(status["charge"], "0.00000");
    assert_eq!(status["remains"], "500");
    assert_eq!(env.balance().await, "100.00000");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 0);
}

async fn nothing_delivered_ends_canceled(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "1000").await;
    env.app.worker.step().await.unwrap(); // place
    env.app.worker.step().await.unwrap(); // provider reports done
    // The views never show: the count is back where it started.
    env.set_video(VIDEO, json!({"plays": initial_plays(VIDEO)}))
        .await;
    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Canceled");
    assert_eq!(env.balance().await, "100.00000");
}

async fn videos_that_cannot_be_ordered_are_refused_at_add(backend: Backend) {
    let env = TestEnv::start(backend).await;
    for (video, state, text) in [
        (11u64, "private", "Video is private"),
        (12, "gone", "Video not found"),
        (13, "region", "Video is not available in the panel's region"),
    ] {
        env.set_video(video, json!({"state": state})).await;
        let link = format!("https://www.tiktok.com/@a/video/{video}");
        assert_eq!(
            env.add("1", &link, "100").await,
            json!({"error": text}),
            "{state}"
        );
    }
    assert_eq!(env.balance().await, "100.00000");
}

async fn a_blocked_page_defers_the_start_count_without_losing_the_order(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_video(VIDEO, json!({"state": "blocked", "plays": 5000}))
        .await;

    let id = env.add_ok("1", VIDEO, "100").await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Pending");
    assert_eq!(status["start_count"], "0");

    // While TikTok stays blocked the worker retries and never places the order.
    env.app.worker.step().await.unwrap();
    env.app.worker.step().await.unwrap();
    assert_eq!(env.status(&id).await["status"], "Pending");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 0);

    env.set_video(VIDEO, json!({"state": "ok"})).await;
    env.drive().await;
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Completed");
    assert_eq!(status["start_count"], "5000");
}

async fn with_refusal_a_second_order_for_an_active_video_waits_for_the_first_to_end(
    backend: Backend,
) {
    let env = TestEnv::start_with(backend, |s| s.api.refuse_same_video = true).await;
    let active = json!({"error":
        "You have active order with this link. Please wait until order being completed."});
    env.add_ok("1", VIDEO, "100").await;

    // The same video through another form of link, and from another key.
    let photo = format!("https://m.tiktok.com/v/{VIDEO}.html");
    assert_eq!(env.add("1", &photo, "100").await, active);
    let other = env.new_key("10").await;
    let link = format!("https://www.tiktok.com/@x/video/{VIDEO}");
    let answer = env
        .call_as(
            &other,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", &link),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(answer, active);
    assert_eq!(env.balance().await, "99.91000");

    env.drive().await;
    env.add_ok("1", VIDEO, "100").await;
}

async fn with_refusal_concurrent_adds_for_one_video_make_one_order(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.api.refuse_same_video = true).await;
    let link = format!("https://www.tiktok.com/@x/video/{VIDEO}");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, api, key, link) = (
            env.http.clone(),
            env.api.clone(),
            env.key.clone(),
            link.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let form = [
                ("key", key.as_str()),
                ("action", "add"),
                ("service", "1"),
                ("link", link.as_str()),
                ("quantity", "100"),
            ];
            http.post(api)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        if task.await.unwrap().get("order").is_some() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(env.balance().await, "99.91000");
}

async fn a_placement_whose_answer_was_lost_is_never_placed_again(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| {
        s.worker.watch_window = std::time::Duration::ZERO
    })
    .await;
    let id = env.add_ok("1", VIDEO, "1000").await;

    // Play the crash: the upstream order goes out, then the worker dies before saving the
    // answer, leaving the order in its "placing" phase with a lease that has run out.
    let claimed = env
        .app
        .store
        .claim("crashed-worker", 10, std::time::Duration::ZERO)
        .await
        .unwrap();
    let mut order = claimed.into_iter().next().unwrap();
    order.phase = playpanel::domain::Phase::Placing;
    let held = Next {
        keep_lease: true,
        ..Next::after(std::time::Duration::ZERO)
    };
    assert!(env.app.store.save(&order, held).await.unwrap());
    let upstream = reqwest::Client::new()
        .post(env.sandbox_url.join("api/v2").unwrap())
        .form(&[
            ("key", "sandbox"),
            ("action", "add"),
            ("service", "1"),
            ("link", &format!("https://www.tiktok.com/@/video/{VIDEO}")),
            ("quantity", "1000"),
        ])
        .send()
        .await
        .unwrap();
    assert!(upstream.status().is_success());

    env.drive().await;
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 1);
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Completed");
    assert_eq!(env.balance().await, "99.10000");
}

async fn a_worker_that_lost_its_lease_writes_nothing(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", VIDEO, "100").await;
    let lease = std::time::Duration::ZERO;

    let mut stale = env
        .app
        .store
        .claim("slow-worker", 10, lease)
        .await
        .unwrap()
        .remove(0);
    // Its lease ran out and another worker took the order over.
    let fresh = env
        .app
        .store
        .claim("other-worker", 10, lease)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.id, stale.id);

    stale.status = playpanel::domain::OrderStatus::Canceled;
    stale.phase = playpanel::domain::Phase::Done;
    let refund = Next {
        refund: stale.charge,
        ..Next::after(lease)
    };
    assert!(!env.app.store.save(&stale, refund).await.unwrap());
    assert_eq!(env.status(&id).await["status"], "Pending");
    assert_eq!(env.balance().await, "99.91000");
}

async fn keys_are_stored_hashed(backend: Backend) {
    use sqlx::Connection;
    let env = TestEnv::start(backend).await;
    let stored = match &env.pg_url {
        // Every key row as text.
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let rows: Option<String> =
                sqlx::query_scalar("SELECT string_agg(k::text, ' ') FROM api_keys AS k")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            rows.unwrap().into_bytes()
        }
        // The whole database file, and its write-ahead log.
        None => {
            let mut bytes = std::fs::read(&env.db_path).unwrap();
            let wal = env.db_path.with_extension("db-wal");
            bytes.extend(std::fs::read(wal).unwrap_or_default());
            bytes
        }
    };
    assert!(stored.len() > 64);
    let clear = env.key.as_bytes();
    assert!(!stored.windows(clear.len()).any(|w| w == clear));
    let hashed = playpanel::api::hash_key(&env.key);
    assert!(env.app.store.find_key(&hashed).await.unwrap().is_some());
}

async fn a_video_made_public_again_can_be_ordered_at_once(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| {
        s.reader.count_ttl = std::time::Duration::from_secs(60);
    })
    .await;
    env.set_video(VIDEO, json!({"state": "private"})).await;
    let link = format!("https://www.tiktok.com/@a/video/{VIDEO}");
    assert_eq!(
        env.add("1", &link, "100").await,
        json!({"error": "Video is private"})
    );
    env.set_video(VIDEO, json!({"state": "ok"})).await;
    assert!(env.add("1", &link, "100").await.get("order").is_some());
}

async fn an_implausible_play_count_is_not_trusted(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_video(VIDEO, json!({"plays": 9_223_372_036_854_775_308u64}))
        .await;
    // Accepted, with the start count left for the worker, which keeps waiting for a sane one.
    let id = env.add_ok("1", VIDEO, "100").await;
    env.app.worker.step().await.unwrap();
    let status = env.status(&id).await;
    assert_eq!(status["status"], "Pending");
    assert_eq!(status["start_count"], "0");
    assert_eq!(env.sandbox.upstream_orders_for(VIDEO), 0);
}

async fn status_answers_may_be_reused_for_a_while(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| {
        s.api.status_cache_ttl = std::time::Duration::from_secs(600);
    })
    .await;
    let id = env.add_ok("1", VIDEO, "100").await;
    let other = env.new_key("1").await;
    assert_eq!(env.status(&id).await["status"], "Pending");
    env.drive().await;

    // The answer read before the order moved is reused, for its own key only.
    assert_eq!(env.status(&id).await["status"], "Pending");
    let list = format!("{id},77777");
    let answer = env.call(&[("action", "status"), ("orders", &list)]).await;
    assert_eq!(answer[&id]["status"], "Pending");
    assert_eq!(answer["77777"]["error"], "Incorrect order ID");
    let foreign = env
        .call_as(&other, &[("action", "status"), ("order", &id)])
        .await;
    assert_eq!(foreign, json!({"error": "Incorrect order ID"}));

    // A cancel made through this process shows at once, though its answer was kept.
    let pending = env.add_ok("1", VIDEO + 1, "100").await;
    assert_eq!(env.status(&pending).await["status"], "Pending");
    let canceled = env
        .call(&[("action", "cancel"), ("orders", &pending)])
        .await;
    assert_eq!(canceled[0]["cancel"], 1, "{canceled}");
    let status = env.status(&pending).await;
    assert_eq!(
        (&status["status"], &status["charge"]),
        (&json!("Canceled"), &json!("0.00000"))
    );
}

async fn a_database_of_a_newer_schema_is_refused(backend: Backend) {
    use sqlx::Connection;
    let env = TestEnv::start(backend).await;
    // A later playpanel migrated this database further.
    let record = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                  execution_time) VALUES (9999, 'from the future', true, '\\x00', 0)";
    let url = match &env.pg_url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(record).execute(&mut conn).await.unwrap();
            url.clone()
        }
        None => {
            let url = format!("sqlite://{}", env.db_path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let record = record.replace("'\\x00'", "x'00'");
            sqlx::query(sqlx::AssertSqlSafe(record))
                .execute(&mut conn)
                .await
                .unwrap();
            url
        }
    };
    let refused = playpanel::store::open(&url)
        .await
        .err()
        .expect("opened a newer schema");
    assert!(
        refused.to_string().contains("schema version 9999"),
        "{refused}"
    );
}
