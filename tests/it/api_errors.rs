//! Every error text of the panel API that applies, and bad input of every kind answered with
//! a JSON error instead of a crash or a hang.

use playpanel::domain::Money;
use playpanel::store::LedgerKind;
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv};

crate::both!(
    a_revoked_key_is_refused,
    a_key_calling_too_fast_is_slowed_down,
    a_declared_body_past_the_limit_is_refused_at_once,
    keys_are_checked_first,
    requests_without_a_known_action_or_fields_are_incorrect,
    add_refusals_use_the_panel_texts,
    an_order_beyond_the_balance_is_refused,
    order_ids_that_are_not_the_callers_are_incorrect,
    multi_status_takes_at_most_100_ids,
    huge_and_hostile_input_gets_a_json_error,
    success_bodies_never_carry_an_error_key,
    services_list_has_the_shapes_clients_compare,
);

fn error(text: &str) -> Value {
    json!({ "error": text })
}

async fn keys_are_checked_first(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let invalid = error("Invalid API key");
    assert_eq!(env.post_form(&[("action", "balance")]).await, invalid);
    assert_eq!(
        env.post_form(&[("key", ""), ("action", "balance")]).await,
        invalid
    );
    assert_eq!(
        env.post_form(&[("key", "nope"), ("action", "balance")])
            .await,
        invalid
    );
    let long = "k".repeat(100_000);
    assert_eq!(
        env.post_form(&[("key", &long), ("action", "balance")])
            .await,
        invalid
    );
    // A key that differs from a real one in its last character.
    let mut near = env.key.clone();
    let last = near.pop().unwrap();
    near.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        env.post_form(&[("key", &near), ("action", "balance")])
            .await,
        invalid
    );
}

async fn requests_without_a_known_action_or_fields_are_incorrect(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let incorrect = error("Incorrect request");
    assert_eq!(env.call(&[]).await, incorrect);
    assert_eq!(env.call(&[("action", "")]).await, incorrect);
    assert_eq!(env.call(&[("action", "fly")]).await, incorrect);
    assert_eq!(env.call(&[("action", "add")]).await, incorrect);
    assert_eq!(
        env.call(&[("action", "add"), ("service", "1"), ("link", "x")])
            .await,
        incorrect
    );
    assert_eq!(
        env.call(&[
            ("action", "add"),
            ("service", ""),
            ("link", "x"),
            ("quantity", "100")
        ])
        .await,
        incorrect
    );
    assert_eq!(env.call(&[("action", "status")]).await, incorrect);
    assert_eq!(
        env.call(&[("action", "status"), ("orders", "")]).await,
        incorrect
    );
    assert_eq!(
        env.call(&[("action", "status"), ("orders", " , ,")]).await,
        incorrect
    );
}

async fn add_refusals_use_the_panel_texts(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let link = "https://www.tiktok.com/@someone/video/7571863205253778710";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("9", link, "100", "Incorrect service ID"),
        ("abc", link, "100", "Incorrect service ID"),
        ("-1", link, "100", "Incorrect service ID"),
        (
            "1",
            "https://www.tiktok.com/@someone",
            "100",
            "Incorrect link",
        ),
        (
            "1",
            "https://www.youtube.com/watch?v=x",
            "100",
            "Incorrect link",
        ),
        ("1", "not a link at all", "100", "Incorrect link"),
        ("1", link, "99", "Quantity less than minimal 100"),
        ("1", link, "0", "Quantity less than minimal 100"),
        ("1", link, "-5", "Quantity less than minimal 100"),
        ("1", link, "1000001", "Quantity more than maximum 1000000"),
        (
            "1",
            link,
            "99999999999999999999999999",
            "Quantity more than maximum 1000000",
        ),
        ("1", link, "12.5", "Incorrect request"),
        ("1", link, "ten", "Incorrect request"),
        ("1", link, "1e3", "Incorrect request"),
    ];
    for (service, link, quantity, text) in cases {
        assert_eq!(
            env.add(service, link, quantity).await,
            error(text),
            "{service} {link} {quantity}"
        );
    }
    assert_eq!(env.balance().await, "100.00000");
}

async fn an_order_beyond_the_balance_is_refused(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let poor = env.new_key("0.05").await;
    let answer = env
        .call_as(
            &poor,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://www.tiktok.com/@a/video/42"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(answer, error("Not enough funds on balance"));
    let balance = env.call_as(&poor, &[("action", "balance")]).await;
    assert_eq!(balance, json!({"balance": "0.05000", "currency": "USD"}));

    // A top-up made elsewhere (the operator's command, another process) counts at once, though
    // this process remembers the key with its old balance.
    let hash = playpanel::api::hash_key(&poor);
    let topped =
        env.app
            .store
            .adjust_balance(&hash, Money::from_units(10_000), LedgerKind::TopUp, "test");
    assert!(topped.await.unwrap().is_some());
    let answer = env
        .call_as(
            &poor,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://www.tiktok.com/@a/video/42"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert!(answer["order"].is_string(), "{answer}");
}

async fn order_ids_that_are_not_the_callers_are_incorrect(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", 42, "100").await;
    let other = env.new_key("1").await;
    let incorrect = error("Incorrect order ID");

    assert_eq!(
        env.call_as(&other, &[("action", "status"), ("order", &id)])
            .await,
        incorrect
    );
    for bad in [
        "0",
        "-1",
        "abc",
        "1.5",
        "99999999999999999999",
        "9223372036854775807",
    ] {
        assert_eq!(env.status(bad).await, incorrect, "{bad}");
    }
    assert_eq!(env.status(&id).await["status"], "Pending");
}

async fn multi_status_takes_at_most_100_ids(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let answer = env
        .call(&[("action", "status"), ("orders", &hundred.join(","))])
        .await;
    assert_eq!(answer.as_object().unwrap().len(), 100);

    let too_many = error("Too many order IDs, at most 100 per request");
    let hundred_one: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    assert_eq!(
        env.call(&[("action", "status"), ("orders", &hundred_one.join(","))])
            .await,
        too_many
    );
    let ten_thousand: Vec<String> = (1..=10_000).map(|i| i.to_string()).collect();
    assert_eq!(
        env.call(&[("action", "status"), ("orders", &ten_thousand.join(","))])
            .await,
        too_many
    );
}

async fn huge_and_hostile_input_gets_a_json_error(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let megabyte_link = format!("https://www.tiktok.com/@a/video/1?{}", "x".repeat(1 << 20));
    assert_eq!(
        env.add("1", &megabyte_link, "100").await,
        error("Incorrect link")
    );

    let junk = [
        "\u{0}",
        "%00",
        "'; DROP TABLE orders; --",
        "\u{202e}1",
        "💥",
    ];
    for value in junk {
        let answer = env.add(value, value, value).await;
        assert!(answer.get("error").is_some(), "{value:?}: {answer}");
        let answer = env.status(value).await;
        assert_eq!(answer, error("Incorrect order ID"), "{value:?}");
    }

    // A body past the limit is refused at the door, still with a JSON error.
    let body = format!("key={}&action=add&link={}", env.key, "x".repeat(3 << 20));
    let response = env
        .http
        .post(&env.api)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert!(answer["error"].is_string());

    // The service is still there and nothing was charged.
    assert_eq!(env.balance().await, "100.00000");
}

async fn success_bodies_never_carry_an_error_key(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.add_ok("1", 42, "100").await;
    let answers = [
        env.call(&[("action", "services")]).await,
        env.call(&[("action", "balance")]).await,
        env.status(&id).await,
        env.call(&[("action", "status"), ("orders", &id)]).await,
    ];
    for answer in answers {
        assert!(!answer.to_string().contains("\"error\""), "{answer}");
    }
}

async fn services_list_has_the_shapes_clients_compare(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let services = env.call(&[("action", "services")]).await;
    let first = &services[0];
    assert_eq!(
        first,
        &json!({"service": 1, "name": "TikTok Views [verified, full delivery]", "type": "Default",
                "category": "TikTok Views", "rate": "0.90", "min": "100", "max": "1000000",
                "refill": true, "cancel": true, "dripfeed": true})
    );
    assert_eq!(services.as_array().unwrap().len(), 3);
}

async fn a_declared_body_past_the_limit_is_refused_at_once(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::start(backend).await;
    let address = env
        .api
        .trim_start_matches("http://")
        .trim_end_matches("/api/v2")
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = "POST /api/v2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 1000000000\r\n\r\nkey=x";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    // Answered without waiting for the gigabyte that will never come.
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
}

async fn a_key_calling_too_fast_is_slowed_down(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.api.key_rate_per_second = 5).await;
    let other = env.new_key("1").await;
    let began = std::time::Instant::now();
    let mut allowed = 0u32;
    for _ in 0..40 {
        let answer = env.call(&[("action", "balance")]).await;
        if answer == error("Too many requests, please slow down") {
            continue;
        }
        assert_eq!(answer["balance"], "100.00000");
        allowed += 1;
    }
    // A burst of ten, then five a second, however long the calls took.
    let most = 10 + (5.0 * began.elapsed().as_secs_f64()).ceil() as u32;
    assert!(
        allowed >= 10 && allowed <= most,
        "{allowed} of 40 allowed, at most {most}"
    );
    // Another key is not held back by the first.
    let answer = env.call_as(&other, &[("action", "balance")]).await;
    assert_eq!(answer["balance"], "1.00000");
}

async fn a_revoked_key_is_refused(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| s.api.key_memory = std::time::Duration::ZERO).await;
    assert_eq!(env.balance().await, "100.00000");
    let hash = playpanel::api::hash_key(&env.key);
    assert!(env.app.store.revoke_key(&hash).await.unwrap());
    assert_eq!(
        env.call(&[("action", "balance")]).await,
        error("Invalid API key")
    );
    assert!(!env.app.store.revoke_key(&hash).await.unwrap());
}
