//! The page reader against a local server that answers like TikTok does, with pages derived
//! from the saved real one: every class of answer, the breaker, shared fetches, and links that
//! try to send the reader somewhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use playpanel::tiktok::link::VideoId;
use playpanel::tiktok::{Reader, ReaderConfig, Reading};
use tokio::net::TcpListener;
use url::Url;

use crate::support::shared_fixture;

#[derive(Clone)]
struct Tiktokish {
    page: Arc<String>,
    hits: Arc<AtomicUsize>,
}

fn derived(page: &str, from: &str, to: &str) -> String {
    assert!(
        page.contains(from),
        "the saved page no longer contains {from:?}"
    );
    page.replacen(from, to, 1)
}

/// Answers `/@user/video/ID` according to the id: each id is one way TikTok answers.
async fn answer(State(s): State<Tiktokish>, Path((user, id)): Path<(String, u64)>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let page = s.page.as_str();
    let html = |body: String| {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], body).into_response()
    };
    let data_start = "<script id=\"__UNIVERSAL_DATA_FOR_REHYDRATION__\"";
    match id {
        1 => html(page.to_string()),
        // The page moved to its canonical address, with the author's name.
        16 if user == "@someone" => html(page.to_string()),
        2 => html(derived(page, "\"statusCode\":0", "\"statusCode\":10216")),
        3 => html(derived(page, "\"statusCode\":0", "\"statusCode\":10222")),
        4 => html(derived(page, "\"statusCode\":0", "\"statusCode\":10231")),
        5 => html(derived(page, "\"statusCode\":0", "\"statusCode\":10204")),
        6 => html(derived(
            &derived(page, "\"statsV2\":{", "\"statsV2Removed\":{"),
            "\"playCount\":192100",
            "\"playCount\":777",
        )),
        7 => html(derived(page, data_start, "<script id=\"something-else\"")),
        8 => (StatusCode::FORBIDDEN, "Access denied").into_response(),
        9 => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
        10 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        11 => (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
        12 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            html(page.to_string())
        }
        13 => html(String::new()),
        14 => html(
            "<html><head><title>Please wait...</title></head><body>\
                     <div id=\"_wafchallengeid\"></div></body></html>"
                .to_string(),
        ),
        15 => (
            StatusCode::FOUND,
            [(header::LOCATION, "/login?redirect_url=%2F%40x%2Fvideo%2F15")],
        )
            .into_response(),
        16 => (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, "/@someone/video/16?lang=en")],
        )
            .into_response(),
        17 => (
            StatusCode::FOUND,
            [(header::LOCATION, "https://example.org/@x/video/17")],
        )
            .into_response(),
        18 => html("x".repeat(3 << 20)),
        // Neither count is a usable number.
        19 => html(derived(
            &derived(page, "\"playCount\":\"192100\"", "\"playCount\":\"-4\""),
            "\"playCount\":192100",
            "\"playCount\":\"many\"",
        )),
        _ => (StatusCode::NOT_FOUND, "").into_response(),
    }
}

async fn start(page: String) -> (Url, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let state = Tiktokish {
        page: Arc::new(page),
        hits: hits.clone(),
    };
    let app = Router::new()
        .route("/{user}/video/{id}", get(answer))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

fn config(base: &Url) -> ReaderConfig {
    ReaderConfig {
        sandbox: Some(base.clone()),
        rate_per_second: 1000,
        breaker_base: Duration::ZERO,
        canary: VideoId::new(1),
        timeout: Duration::from_millis(1500),
        max_page_bytes: 2 << 20,
        ..ReaderConfig::default()
    }
}

fn id(n: u64) -> VideoId {
    VideoId::new(n).unwrap()
}

#[tokio::test]
async fn every_kind_of_answer_is_classified() {
    let Some(path) = shared_fixture("universal_video_2025-12.html") else {
        return;
    };
    let (base, _) = start(std::fs::read_to_string(path).unwrap()).await;
    let reader = Reader::new(config(&base)).unwrap();

    let blocked = |r: &Reading| matches!(r, Reading::Blocked(_));
    let unavailable = |r: &Reading| matches!(r, Reading::Unavailable(_));
    assert_eq!(reader.read_fresh(id(1)).await, Reading::Count(192_100));
    assert_eq!(reader.read_fresh(id(2)).await, Reading::Private);
    assert_eq!(reader.read_fresh(id(3)).await, Reading::Private);
    assert_eq!(reader.read_fresh(id(4)).await, Reading::Region);
    assert_eq!(reader.read_fresh(id(5)).await, Reading::Gone);
    assert_eq!(reader.read_fresh(id(6)).await, Reading::Count(777));
    assert_eq!(reader.read_fresh(id(16)).await, Reading::Count(192_100));
    for (n, check) in [
        (7, blocked as fn(&Reading) -> bool),
        (8, blocked),
        (9, blocked),
        (10, unavailable),
        (11, unavailable),
        (12, unavailable),
        (13, blocked),
        (14, blocked),
        (15, blocked),
        (17, blocked),
        (18, unavailable),
        (19, blocked),
    ] {
        let reading = reader.read_fresh(id(n)).await;
        assert!(check(&reading), "answer {n} read as {reading:?}");
        assert!(
            reading.is_transient(),
            "answer {n} must be retried, not decide an order"
        );
    }
}

#[tokio::test]
async fn does_not_exist_is_believed_only_while_the_canary_reads() {
    let Some(path) = shared_fixture("universal_video_2025-12.html") else {
        return;
    };
    let (base, _) = start(std::fs::read_to_string(path).unwrap()).await;

    // The canary itself answers "does not exist": the network is distrusted, nothing is gone.
    let reader = Reader::new(ReaderConfig {
        canary: VideoId::new(5),
        ..config(&base)
    })
    .unwrap();
    assert!(matches!(reader.read_fresh(id(5)).await, Reading::Gone));
    let reader = Reader::new(ReaderConfig {
        canary: VideoId::new(8),
        ..config(&base)
    })
    .unwrap();
    assert!(matches!(
        reader.read_fresh(id(5)).await,
        Reading::Blocked(_)
    ));
}

#[tokio::test]
async fn concurrent_reads_of_one_video_share_one_fetch() {
    let Some(path) = shared_fixture("universal_video_2025-12.html") else {
        return;
    };
    let (base, hits) = start(std::fs::read_to_string(path).unwrap()).await;
    let reader = Arc::new(
        Reader::new(ReaderConfig {
            count_ttl: Duration::from_secs(60),
            ..config(&base)
        })
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let reader = reader.clone();
        tasks.push(tokio::spawn(async move { reader.read(id(1)).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Reading::Count(192_100));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refusal_pauses_every_read() {
    let Some(path) = shared_fixture("universal_video_2025-12.html") else {
        return;
    };
    let (base, hits) = start(std::fs::read_to_string(path).unwrap()).await;
    let reader = Reader::new(ReaderConfig {
        breaker_base: Duration::from_secs(60),
        ..config(&base)
    })
    .unwrap();

    assert!(matches!(
        reader.read_fresh(id(8)).await,
        Reading::Blocked(_)
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Another video, which would read fine, is not even asked for while paused.
    assert!(matches!(
        reader.read_fresh(id(1)).await,
        Reading::Blocked(_)
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
