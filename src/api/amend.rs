//! What clients ask of an order after `add`: `cancel`, `refill` and `refill_status`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, ApiState, id_list, parse_order_id, texts};
use crate::domain::{Money, OrderStatus};
use crate::store::{CancelOutcome, KeyRecord, NewOrder, OrderRecord};
use crate::tiktok::Reading;

/// `cancel` with `orders`: one answer per id, in request order. A pending order is canceled
/// at once with a full refund; one being delivered is canceled at the provider by the worker,
/// and what was delivered is verified and charged as a `Partial`.
pub(super) async fn cancel(
    state: &ApiState,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    let list = params
        .get_nonempty("orders")
        .or_else(|| params.get_nonempty("order"))
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let written = id_list(list)?;
    let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
    let orders: HashMap<i64, OrderRecord> = state
        .store
        .orders(key.id, &ids)
        .await?
        .into_iter()
        .map(|o| (o.id, o))
        .collect();

    let mut answers = Vec::new();
    for w in written {
        let id = parse_order_id(w);
        let shown = id.map_or_else(|| json!(w), |id| json!(id));
        let outcome = match id.and_then(|id| orders.get(&id)) {
            None => Err(texts::INCORRECT_ORDER),
            Some(order) if order.status.is_terminal() => Err(texts::ALREADY_ENDED),
            Some(order)
                if !state
                    .catalogue
                    .get(order.service_id)
                    .is_some_and(|s| s.cancel) =>
            {
                Err(texts::CANCEL_UNAVAILABLE)
            }
            Some(order) => match state.store.cancel_order(key.id, order.id).await? {
                CancelOutcome::Canceled => {
                    state.statuses.forget(key.id, order.id);
                    tracing::info!(order.id = order.id, video.id = %order.video_id,
                        from = %order.status, to = "Canceled", cause = "canceled by the client",
                        "order ended");
                    Ok(())
                }
                CancelOutcome::Requested => {
                    state.wake.notify_one();
                    Ok(())
                }
                CancelOutcome::Ended => Err(texts::ALREADY_ENDED),
                CancelOutcome::NotFound => Err(texts::INCORRECT_ORDER),
            },
        };
        let answer = match outcome {
            Ok(()) => json!(1),
            Err(text) => json!({ "error": text }),
        };
        answers.push(json!({ "order": shown, "cancel": answer }));
    }
    Ok(Value::Array(answers))
}

/// `refill` with `order` or `orders`: for an ended order of a service that allows it, within
/// the refill window, when the play count has fallen below what was delivered, a refill asks
/// the provider for the missing views and is verified like an order (and costs nothing).
pub(super) async fn refill(
    state: &ApiState,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    if let Some(list) = params.get_nonempty("orders") {
        let mut answers = Vec::new();
        for w in id_list(list)? {
            let id = parse_order_id(w);
            let outcome = match id {
                Some(id) => refill_one(state, key, id).await?,
                None => Err(texts::INCORRECT_ORDER),
            };
            let refill = match outcome {
                Ok(refill) => json!(refill),
                Err(text) => json!({ "error": text }),
            };
            let shown = id.map_or_else(|| json!(w), |id| json!(id));
            answers.push(json!({ "order": shown, "refill": refill }));
        }
        return Ok(Value::Array(answers));
    }
    let raw = params
        .get_nonempty("order")
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))?;
    match refill_one(state, key, id).await? {
        Ok(refill) => Ok(json!({ "refill": refill.to_string() })),
        Err(text) => Err(ApiError::panel(text)),
    }
}

async fn refill_one(
    state: &ApiState,
    key: &KeyRecord,
    id: i64,
) -> Result<Result<i64, &'static str>, ApiError> {
    let Some(order) = state.store.orders(key.id, &[id]).await?.pop() else {
        return Ok(Err(texts::INCORRECT_ORDER));
    };
    let not_eligible = Ok(Err(texts::NOT_ELIGIBLE));
    let allowed = state
        .catalogue
        .get(order.service_id)
        .is_some_and(|s| s.refill);
    let ended = matches!(order.status, OrderStatus::Completed | OrderStatus::Partial);
    let window = i64::try_from(state.config.refill_window.as_millis()).unwrap_or(i64::MAX);
    let in_window = order.db_now.saturating_sub(order.updated_at) <= window;
    let Some(start) = order.start_count.filter(|_| allowed && ended && in_window) else {
        return not_eligible;
    };
    // Views now going to the video would be counted as refilled ones.
    if state.store.has_open_order(order.video_id).await? {
        return not_eligible;
    }
    let delivered = order.quantity.saturating_sub(order.remains);
    if delivered == 0 {
        return not_eligible;
    }
    let target = start.saturating_add(delivered);
    let budget = state.config.add_read_budget;
    let count = match tokio::time::timeout(budget, state.reader.read_fresh(order.video_id)).await {
        Ok(Reading::Count(count)) if count < target => count,
        _ => return not_eligible,
    };
    let refill = NewOrder {
        key_id: key.id,
        service_id: order.service_id,
        video_id: order.video_id,
        link: order.link.clone(),
        // Only views the order delivered are refilled, never a fall below its start count.
        quantity: (target - count).min(delivered),
        charge: Money::ZERO,
        start_count: Some(count),
        refill_of: Some(order.id),
        runs: 1,
        interval: Duration::ZERO,
    };
    match state.store.insert_order(&refill, true).await? {
        Ok(refill) => {
            state.wake.notify_one();
            Ok(Ok(refill))
        }
        Err(_) => not_eligible,
    }
}

/// A refill's status in the words panels use for refills.
fn refill_word(refill: &OrderRecord) -> &'static str {
    match refill.status {
        OrderStatus::Canceled => "Rejected",
        other => other.as_str(),
    }
}

pub(super) async fn refill_status(
    state: &ApiState,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    if let Some(list) = params.get_nonempty("refills") {
        let written = id_list(list)?;
        let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
        let found: HashMap<i64, OrderRecord> = state
            .store
            .refills(key.id, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let answers = written
            .into_iter()
            .map(|w| {
                let id = parse_order_id(w);
                let status = match id.and_then(|id| found.get(&id)) {
                    Some(refill) => json!(refill_word(refill)),
                    None => json!({ "error": texts::REFILL_NOT_FOUND }),
                };
                let shown = id.map_or_else(|| json!(w), |id| json!(id));
                json!({ "refill": shown, "status": status })
            })
            .collect();
        return Ok(Value::Array(answers));
    }
    let raw = params
        .get_nonempty("refill")
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_REQUEST))?;
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::REFILL_NOT_FOUND))?;
    match state.store.refills(key.id, &[id]).await?.pop() {
        Some(refill) => Ok(json!({ "status": refill_word(&refill) })),
        None => Err(ApiError::panel(texts::REFILL_NOT_FOUND)),
    }
}
