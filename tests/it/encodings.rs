//! The same call in every encoding and at every path clients use.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, TestEnv};

crate::both!(
    health_and_readiness_answer,
    json_is_read_however_it_is_labelled,
    unknown_fields_cannot_crowd_out_known_ones,
    every_path_and_encoding_answers_the_same,
    json_bodies_may_carry_numbers_and_lists,
    transport_faults_answer_json_errors,
);

async fn expect_balance(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"balance": "100.00000", "currency": "USD"}));
}

async fn every_path_and_encoding_answers_the_same(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let root = env.api.trim_end_matches("/api/v2").to_string();
    for path in ["/api/v2", "/api/v2/", "/api", "/api/"] {
        let url = format!("{root}{path}");

        let query = format!("{url}?key={}&action=balance", env.key);
        expect_balance(env.http.get(&query).send().await.unwrap()).await;

        let form = [("key", env.key.as_str()), ("action", "balance")];
        expect_balance(env.http.post(&url).form(&form).send().await.unwrap()).await;

        let body = json!({"key": env.key, "action": "balance"});
        expect_balance(env.http.post(&url).json(&body).send().await.unwrap()).await;

        let boundary = "----playpanel-test";
        let multipart = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nbalance\r\n\
             --{boundary}--\r\n",
            env.key
        );
        let response = env
            .http
            .post(&url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(multipart)
            .send()
            .await
            .unwrap();
        expect_balance(response).await;

        // A form body without a content type, as some scripts send it.
        let bare = format!("key={}&action=balance", env.key);
        expect_balance(env.http.post(&url).body(bare).send().await.unwrap()).await;
    }
}

async fn json_bodies_may_carry_numbers_and_lists(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let body = json!({"key": env.key, "action": "add", "service": 1,
        "link": "https://www.tiktok.com/@a/video/77", "quantity": 100});
    let answer: Value = env
        .http
        .post(&env.api)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: i64 = answer["order"].as_str().unwrap().parse().unwrap();

    let body = json!({"key": env.key, "action": "status", "orders": [id, 5]});
    let answer: Value = env
        .http
        .post(&env.api)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer[id.to_string()]["status"], "Pending");
    assert_eq!(answer["5"]["error"], "Incorrect order ID");
}

async fn transport_faults_answer_json_errors(backend: Backend) {
    let env = TestEnv::start(backend).await;

    let response = env.http.put(&env.api).body("key=x").send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["content-type"], "application/json");

    let response = env
        .http
        .post(&env.api)
        .header("content-type", "application/json")
        .body("{\"key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());

    let response = env
        .http
        .post(&env.api)
        .header("content-type", "multipart/form-data; boundary=zz")
        .body("--zz\r\nbroken")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let root = env.api.trim_end_matches("/api/v2");
    let response = env
        .http
        .get(format!("{root}/elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");

    // No redirect anywhere: a POST must never turn into a GET.
    let response = env
        .http
        .post(format!("{root}/api/v2//"))
        .send()
        .await
        .unwrap();
    assert!(!response.status().is_redirection());
}

async fn json_is_read_however_it_is_labelled(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let body = format!("{{\"key\": \"{}\", \"action\": \"balance\"}}", env.key);
    for content_type in [None, Some("text/plain"), Some("application/vnd.api+json")] {
        let mut request = env.http.post(&env.api).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        expect_balance(request.send().await.unwrap()).await;
    }
    let with_bom = format!("\u{feff}{body}");
    let response = env
        .http
        .post(&env.api)
        .header("content-type", "application/json")
        .body(with_bom)
        .send()
        .await
        .unwrap();
    expect_balance(response).await;
}

async fn unknown_fields_cannot_crowd_out_known_ones(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut form: Vec<(String, String)> =
        (0..500).map(|i| (format!("junk{i}"), "x".into())).collect();
    form.push(("key".into(), env.key.clone()));
    form.push(("action".into(), "balance".into()));
    expect_balance(env.http.post(&env.api).form(&form).send().await.unwrap()).await;

    // `orders` left empty beside `order` reads the single order.
    let id = env.add_ok("1", 55, "100").await;
    let answer = env
        .call(&[("action", "status"), ("order", &id), ("orders", "")])
        .await;
    assert_eq!(answer["status"], "Pending");
}

async fn health_and_readiness_answer(backend: Backend) {
    let env = TestEnv::start_with(backend, |s| {
        s.api.ready_max_wait = Duration::from_millis(300);
    })
    .await;
    let root = env.api.trim_end_matches("/api/v2").to_string();
    let get = |path: &str| env.http.get(format!("{root}{path}")).send();
    let ready = || async {
        let response = get("/readyz").await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    // No worker runs in this process (these tests drive it by hand), and an order waiting for
    // one is the cluster's backlog: reported, not a reason to take this process out.
    env.add_ok("1", 56, "100").await;
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["workers"], "not run in this process");
    assert!(body["oldest_due_order_seconds"].is_i64(), "{body}");

    // A worker that runs here must keep claiming.
    let heartbeat = env.app.worker.heartbeat();
    heartbeat.set_running(true);
    let (status, body) = ready().await;
    assert_eq!(
        (status.as_u16(), &body["workers"]),
        (200, &json!("claiming"))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["workers"], "stalled");
    assert!(
        body["error"].as_str().unwrap().contains("has not claimed"),
        "{body}"
    );
    env.app.worker.step().await.unwrap();
    assert_eq!(ready().await.0, 200);
    heartbeat.set_running(false);
}
