//! The sandbox's upstream panel: service 1 delivers everything it is asked for, service 2 only
//! 80% of it while still reporting the order completed, as a careless provider would.

use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Sandbox, UpstreamFault, UpstreamOrder, json_answer};
use crate::tiktok::link::{Link, parse_link};

type Fields = std::collections::HashMap<String, String>;

pub async fn panel(
    State(sandbox): State<Sandbox>,
    Query(query): Query<Fields>,
    body: axum::body::Bytes,
) -> Response {
    let mut fields = query;
    for (name, value) in form_urlencoded::parse(&body) {
        fields.insert(name.into_owned(), value.into_owned());
    }
    let field = |name: &str| fields.get(name).map(|v| v.trim()).unwrap_or_default();

    if field("key").is_empty() {
        return error("Invalid API key");
    }
    let fault = sandbox.world().fault;
    if fault == UpstreamFault::Error {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html>upstream failure</html>",
        )
            .into_response();
    }
    if fault == UpstreamFault::Refuse && field("action") == "add" {
        return error("Service is temporarily disabled");
    }
    let answer = match field("action") {
        "services" => services(),
        "balance" => json!({"balance": "1000000.00000", "currency": "USD"}),
        "add" => add(&sandbox, field("service"), field("link"), field("quantity")),
        "status" => status(&sandbox, field("order")),
        "cancel" => cancel(&sandbox, field("orders")),
        _ => json!({"error": "Incorrect request"}),
    };
    json_answer(StatusCode::OK, answer)
}

fn error(text: &str) -> Response {
    json_answer(StatusCode::OK, json!({ "error": text }))
}

fn services() -> Value {
    json!([
        {"service": 1, "name": "Sandbox views (full)", "type": "Default", "category": "Sandbox",
         "rate": "0.10", "min": "10", "max": "10000000", "refill": false, "cancel": false,
         "dripfeed": false},
        {"service": 2, "name": "Sandbox views (80%)", "type": "Default", "category": "Sandbox",
         "rate": "0.05", "min": "10", "max": "10000000", "refill": false, "cancel": false,
         "dripfeed": false},
    ])
}

fn add(sandbox: &Sandbox, service: &str, link: &str, quantity: &str) -> Value {
    let share = match service {
        "1" => 100,
        "2" => 80,
        _ => return json!({"error": "Incorrect service ID"}),
    };
    let Ok(Link::Video(video)) = parse_link(link) else {
        return json!({"error": "Incorrect link"});
    };
    let Some(quantity) = quantity
        .parse::<u64>()
        .ok()
        .filter(|q| (10..=10_000_000).contains(q))
    else {
        return json!({"error": "Quantity less than minimal 10"});
    };

    let mut world = sandbox.world();
    let busy = world
        .orders
        .iter()
        .any(|o| o.video == video.get() && o.delivered < o.target);
    if busy {
        return json!({"error":
            "You have active order with this link. Please wait until order being completed."});
    }
    let id = world.orders.len() as u64 + 1;
    world.orders.push(UpstreamOrder {
        id,
        video: video.get(),
        quantity,
        target: quantity * share / 100,
        placed: Instant::now(),
        delivered: 0,
    });
    // Panels disagree on the id's type; this one sends a number, as many do.
    json!({ "order": id })
}

/// Stops delivery of each listed order that is still delivering.
fn cancel(sandbox: &Sandbox, orders: &str) -> Value {
    let mut world = sandbox.world();
    let answers: Vec<Value> = orders
        .split(',')
        .map(str::trim)
        .map(|id| {
            let found = id
                .parse::<u64>()
                .ok()
                .and_then(|id| world.orders.iter_mut().find(|o| o.id == id));
            match found {
                Some(order) if order.delivered < order.target => {
                    order.target = order.delivered;
                    json!({"order": order.id, "cancel": 1})
                }
                Some(order) => {
                    json!({"order": order.id, "cancel": {"error": "Order is completed"}})
                }
                None => json!({"order": id, "cancel": {"error": "Incorrect order ID"}}),
            }
        })
        .collect();
    Value::Array(answers)
}

fn status(sandbox: &Sandbox, order: &str) -> Value {
    let world = sandbox.world();
    let Some(order) = order
        .parse::<u64>()
        .ok()
        .and_then(|id| world.orders.iter().find(|o| o.id == id))
    else {
        return json!({"error": "Incorrect order ID"});
    };
    let done = order.delivered >= order.target;
    let (status, remains) = if done {
        ("Completed", 0)
    } else if order.delivered == 0 {
        ("Pending", order.quantity)
    } else {
        ("In progress", order.quantity - order.delivered)
    };
    json!({
        "charge": "0.00000",
        "start_count": "0",
        "status": status,
        "remains": remains.to_string(),
        "currency": "USD",
    })
}
