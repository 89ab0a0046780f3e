//! TikTok-like pages: the same data script and key structure as a real video page, with the
//! sandbox's play count and state.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Sandbox, VideoState, parse_id};

pub async fn video_page(
    State(sandbox): State<Sandbox>,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    let Some(id) = parse_id(&id).filter(|_| user.starts_with('@')) else {
        return html(StatusCode::NOT_FOUND, not_found_page());
    };
    sandbox.world().page_requests += 1;
    if !sandbox.config.page_delay.is_zero() {
        tokio::time::sleep(sandbox.config.page_delay).await;
    }
    let video = sandbox.video(id);
    let detail = match video.state {
        VideoState::Ok => json!({
            "statusCode": 0,
            "statusMsg": "",
            "itemInfo": {"itemStruct": {
                "id": id.to_string(),
                "desc": "A sandbox video",
                "createTime": "1767225600",
                "author": {"uniqueId": "sandbox", "nickname": "Sandbox"},
                "stats": {
                    "diggCount": video.plays / 20,
                    "shareCount": video.plays / 200,
                    "commentCount": video.plays / 500,
                    "playCount": video.plays,
                    "collectCount": (video.plays / 100).to_string(),
                },
                "statsV2": {
                    "diggCount": (video.plays / 20).to_string(),
                    "shareCount": (video.plays / 200).to_string(),
                    "commentCount": (video.plays / 500).to_string(),
                    "playCount": video.plays.to_string(),
                    "collectCount": (video.plays / 100).to_string(),
                    "repostCount": "0",
                },
            }},
        }),
        VideoState::Private => json!({"statusCode": 10216, "statusMsg": "author_secret"}),
        VideoState::Region => json!({"statusCode": 10231, "statusMsg": "region_blocked"}),
        VideoState::Gone => json!({"statusCode": 10204, "statusMsg": "item doesn't exist"}),
        VideoState::Blocked => return html(StatusCode::OK, challenge_page()),
    };
    let data = json!({
        "__DEFAULT_SCOPE__": {
            "webapp.app-context": {"language": "en", "region": "US"},
            "webapp.video-detail": detail,
        }
    });
    html(StatusCode::OK, video_document(&data.to_string()))
}

/// A short link's one redirect: to the target set through the control interface, or else to
/// a video whose id is derived from the code.
pub async fn short_redirect(State(sandbox): State<Sandbox>, Path(code): Path<String>) -> Response {
    let valid = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return html(StatusCode::NOT_FOUND, not_found_page());
    }
    let target = sandbox
        .world()
        .shorts
        .get(&code)
        .cloned()
        .unwrap_or_else(|| {
            // Any code resolves, to a video id derived from it (never 0: counts start at 1000).
            let id = super::initial_plays(
                code.bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            );
            format!("https://www.tiktok.com/@sandbox/video/{id}?_r=1&_t=sandbox")
        });
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, target)]).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn video_document(data: &str) -> String {
    // JSON never contains a raw "</" here, but escape it anyway as a page would.
    let data = data.replace("</", "<\\/");
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sandbox video | TikTok</title></head><body><div id=\"app\"></div>\
         <script id=\"__UNIVERSAL_DATA_FOR_REHYDRATION__\" type=\"application/json\">{data}\
         </script></body></html>"
    )
}

fn challenge_page() -> String {
    "<!DOCTYPE html><html><head><title>Please wait...</title></head><body>\
     <div id=\"challenge\">Please wait...</div></body></html>"
        .to_string()
}

fn not_found_page() -> String {
    "<!DOCTYPE html><html><head><title>Not found</title></head><body></body></html>".to_string()
}
