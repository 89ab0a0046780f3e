//! `status` for one order or up to 100, in the panel API's exact shapes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::params::Params;
use super::{ApiError, id_list, parse_order_id, texts};
use crate::domain::Money;
use crate::store::{KeyRecord, OrderRecord, Store, StoreError};

fn status_of(order: &OrderRecord) -> Value {
    let charge = order
        .charge
        .checked_sub(order.refund)
        .unwrap_or(Money::ZERO);
    let mut answer = json!({
        "charge": charge.to_string(),
        // A queued order shows the count seen at `add` until its own start count is read.
        "start_count": order.start_count.or(order.last_count).unwrap_or(0).to_string(),
        "status": order.status.as_str(),
        "remains": order.remains.to_string(),
        "currency": "USD",
    });
    // A drip-feed order also says how many runs it has, as panels show it.
    if order.runs > 1 {
        answer["runs"] = json!(order.runs.to_string());
    }
    answer
}

/// Status answers, read for many ids in one query and, when configured, kept for a few
/// seconds per process so clients polling the same orders cost no database reads.
#[derive(Clone)]
pub struct Statuses {
    store: Arc<dyn Store>,
    cache: Option<moka::future::Cache<(i64, i64), Value>>,
}

impl Statuses {
    /// `ttl` of zero reads every answer from the database.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Statuses {
        let cache = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build()
        });
        Statuses { store, cache }
    }

    /// The status answers of those `ids` that are the key's orders.
    async fn lookup(&self, key_id: i64, ids: &[i64]) -> Result<HashMap<i64, Value>, StoreError> {
        let mut answers = HashMap::new();
        let mut missing = Vec::new();
        for &id in ids {
            match &self.cache {
                Some(cache) => match cache.get(&(key_id, id)).await {
                    Some(answer) => {
                        answers.insert(id, answer);
                    }
                    None => missing.push(id),
                },
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(answers);
        }
        for order in self.store.orders(key_id, &missing).await? {
            let answer = status_of(&order);
            if let Some(cache) = &self.cache {
                cache.insert((key_id, order.id), answer.clone()).await;
            }
            answers.insert(order.id, answer);
        }
        Ok(answers)
    }
}

pub(super) async fn status(
    statuses: &Statuses,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    let single = params.get_nonempty("order");
    if let Some(list) = params
        .get("orders")
        .filter(|l| single.is_none() || !l.trim().is_empty())
    {
        return multi_status(statuses, key, list).await;
    }
    let Some(raw) = single else {
        return Err(ApiError::panel(texts::INCORRECT_REQUEST));
    };
    let id = parse_order_id(raw).ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))?;
    statuses
        .lookup(key.id, &[id])
        .await?
        .remove(&id)
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))
}

async fn multi_status(statuses: &Statuses, key: &KeyRecord, list: &str) -> Result<Value, ApiError> {
    let written = id_list(list)?;
    let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
    let found = statuses.lookup(key.id, &ids).await?;

    let mut answer = Map::new();
    for w in written {
        let entry = match parse_order_id(w).and_then(|id| found.get(&id)) {
            Some(status) => status.clone(),
            None => json!({ "error": texts::INCORRECT_ORDER }),
        };
        answer.insert(w.to_string(), entry);
    }
    Ok(Value::Object(answer))
}
