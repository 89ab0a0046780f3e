//! The same call in every encoding and at every path clients use.

use serde_json::{Value, json};

use crate::support::TestEnv;

async fn expect_balance(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"balance": "100.00000", "currency": "USD"}));
}

#[tokio::test]
async fn every_path_and_encoding_answers_the_same() {
    let env = TestEnv::start().await;
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

#[tokio::test]
async fn json_bodies_may_carry_numbers_and_lists() {
    let env = TestEnv::start().await;
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

#[tokio::test]
async fn transport_faults_answer_json_errors() {
    let env = TestEnv::start().await;

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
