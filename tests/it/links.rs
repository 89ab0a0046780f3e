//! Every row of the shared corpus of pasted links, through the running API.

use playpanel::tiktok::link::{Link, VideoId, parse_link};
use serde_json::json;

use crate::support::{Backend, TestEnv, shared_fixture};

crate::both!(
    every_corpus_link_gets_its_expected_answer,
    no_link_makes_the_server_connect_where_it_names,
);

const ACTIVE: &str =
    "You have active order with this link. Please wait until order being completed.";

struct Row {
    input: String,
    expect: String,
    why: String,
}

fn corpus() -> Option<Vec<Row>> {
    let path = shared_fixture("links.tsv")?;
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            Row {
                input: cols.next().unwrap_or_default().to_string(),
                expect: cols.next().unwrap_or_default().to_string(),
                why: cols.next().unwrap_or_default().to_string(),
            }
        })
        .collect();
    assert!(rows.len() >= 50, "the corpus shrank to {} rows", rows.len());
    Some(rows)
}

async fn every_corpus_link_gets_its_expected_answer(backend: Backend) {
    let Some(rows) = corpus() else { return };
    // Refusing a second order for an open video shows which links name the same video.
    let env = TestEnv::start_with(backend, |s| s.api.refuse_same_video = true).await;

    // Short links whose redirect leads somewhere that is not a post.
    let targets = [
        ("2p4ewa7", "https://www.tiktok.com/?_r=1"),
        (
            "ZSHK4xTqmk3Jg-MucBP",
            "https://www.tiktok.com/@someone/live?enter_from_merge=share",
        ),
        ("ZSt53N8K", "https://www.tiktok.com/@someone?_t=8&_r=1"),
    ];
    for (code, target) in targets {
        let url = env
            .sandbox_url
            .join(&format!("sandbox/shorts/{code}"))
            .unwrap();
        let response = env
            .http
            .put(url)
            .json(&json!({"target": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let mut checked = 0;
    for row in &rows {
        let answer = env.add("1", &row.input, "100").await;
        let context = format!("{} ({}): {answer}", row.input, row.why);
        match row.expect.as_str() {
            expect if expect.starts_with("video:") => {
                let id: VideoId = expect["video:".len()..].parse().unwrap();
                assert_eq!(parse_link(&row.input), Ok(Link::Video(id)), "{context}");
                // The first link to a video is accepted; every other form of the same video
                // meets the open order, which proves it named the same video.
                assert!(
                    answer.get("order").is_some() || answer["error"] == ACTIVE,
                    "{context}"
                );
            }
            "reject" => assert_eq!(answer, json!({"error": "Incorrect link"}), "{context}"),
            "short" if row.why.contains("gone") => {
                assert_eq!(answer, json!({"error": "Video not found"}), "{context}");
            }
            "short" if row.why.contains("reject") => {
                assert_eq!(answer, json!({"error": "Incorrect link"}), "{context}");
            }
            "short" => {
                assert!(
                    matches!(parse_link(&row.input), Ok(Link::Short(_))),
                    "{context}"
                );
                // The sandbox sends one code to one video, and the corpus repeats a code.
                assert!(
                    answer.get("order").is_some() || answer["error"] == ACTIVE,
                    "{context}"
                );
            }
            other => panic!("unknown expectation {other:?} in the corpus"),
        }
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}

async fn no_link_makes_the_server_connect_where_it_names(backend: Backend) {
    let env = TestEnv::start(backend).await;

    // A listener that counts every connection made to it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while trap.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    let direct = [
        format!("http://127.0.0.1:{port}/@x/video/123"),
        format!("https://www.tiktok.com@127.0.0.1:{port}/@x/video/123"),
        format!("http://[::ffff:127.0.0.1]:{port}/@x/video/123"),
        format!("https://www.tiktok.com:{port}/@x/video/123"),
        format!("http://localhost:{port}/@x/video/123"),
        format!("https://tiktok.com.127.0.0.1.nip.io:{port}/@x/video/123"),
    ];
    for link in &direct {
        assert_eq!(
            env.add("1", link, "100").await,
            json!({"error": "Incorrect link"}),
            "{link}"
        );
    }

    let redirects = [
        format!("http://127.0.0.1:{port}/@x/video/123"),
        format!("https://www.tiktok.com@127.0.0.1:{port}/@x/video/123"),
        format!("http://localhost:{port}/@x/video/123"),
        "https://tiktok.com.example.org/@x/video/123".to_string(),
        "https://evil.example/r?to=https://www.tiktok.com/@x/video/123".to_string(),
        "javascript:alert(1)".to_string(),
        format!("//127.0.0.1:{port}/@x/video/123"),
    ];
    for (n, target) in redirects.iter().enumerate() {
        // Resolutions are cached, so each target gets a code of its own.
        let code = format!("ZMtrap{n}");
        let url = env
            .sandbox_url
            .join(&format!("sandbox/shorts/{code}"))
            .unwrap();
        let response = env
            .http
            .put(url)
            .json(&json!({"target": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer = env
            .add("1", &format!("https://vm.tiktok.com/{code}/"), "100")
            .await;
        assert_eq!(answer, json!({"error": "Incorrect link"}), "{target}");
    }

    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(env.balance().await, "100.00000");
}
