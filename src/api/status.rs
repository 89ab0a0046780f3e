//! `status` for one order or up to 100, in the panel API's exact shapes.
//!
//! Answers are kept and assembled as JSON text: a profile of a 100-id call showed most of its
//! time in allocating, cloning and freeing the value trees of 100 answers.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::params::Params;
use super::{ApiError, id_list, parse_order_id, texts};
use crate::domain::Money;
use crate::store::{KeyRecord, OrderRecord, Store, StoreError};

/// One order's answer, in the field order panels use.
#[derive(Serialize)]
struct StatusAnswer<'a> {
    charge: String,
    start_count: String,
    status: &'a str,
    remains: String,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<String>,
}

fn status_of(order: &OrderRecord) -> Arc<str> {
    let charge = order
        .charge
        .checked_sub(order.refund)
        .unwrap_or(Money::ZERO);
    let answer = StatusAnswer {
        charge: charge.to_string(),
        // A queued order shows the count seen at `add` until its own start count is read.
        start_count: order
            .start_count
            .or(order.last_count)
            .unwrap_or(0)
            .to_string(),
        status: order.status.as_str(),
        remains: order.remains.to_string(),
        currency: "USD",
        // A drip-feed order also says how many runs it has, as panels show it.
        runs: (order.runs > 1).then(|| order.runs.to_string()),
    };
    // Strings and numbers only: serializing cannot fail.
    serde_json::to_string(&answer).unwrap_or_default().into()
}

/// Status answers, read for many ids in one query and, when configured, kept for a few
/// seconds per process so clients polling the same orders cost no database reads.
#[derive(Clone)]
pub struct Statuses {
    store: Arc<dyn Store>,
    cache: Option<Arc<AnswerCache>>,
}

/// Answers by (key, order) with the time each was read; an answer older than `ttl` is read
/// again. Entries past the capacity are evicted by the cache's own policy.
struct AnswerCache {
    answers: quick_cache::sync::Cache<(i64, i64), (Instant, Arc<str>)>,
    ttl: Duration,
}

impl Statuses {
    /// `ttl` of zero reads every answer from the database.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Statuses {
        let cache = (!ttl.is_zero()).then(|| {
            Arc::new(AnswerCache {
                answers: quick_cache::sync::Cache::new(1_000_000),
                ttl,
            })
        });
        Statuses { store, cache }
    }

    /// Drops a kept answer, after this process changed the order (a cancel), so the client's
    /// next `status` shows the change.
    pub fn forget(&self, key_id: i64, id: i64) {
        if let Some(cache) = &self.cache {
            cache.answers.remove(&(key_id, id));
        }
    }

    /// The status answers of those `ids` that are the key's orders.
    async fn lookup(&self, key_id: i64, ids: &[i64]) -> Result<HashMap<i64, Arc<str>>, StoreError> {
        let mut answers = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        let now = Instant::now();
        for &id in ids {
            let fresh = self.cache.as_ref().and_then(|cache| {
                let (read_at, answer) = cache.answers.get(&(key_id, id))?;
                (now.saturating_duration_since(read_at) < cache.ttl).then_some(answer)
            });
            match fresh {
                Some(answer) => {
                    answers.insert(id, answer);
                }
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(answers);
        }
        let read_at = Instant::now();
        for order in self.store.orders(key_id, &missing).await? {
            let answer = status_of(&order);
            if let Some(cache) = &self.cache {
                cache
                    .answers
                    .insert((key_id, order.id), (read_at, answer.clone()));
            }
            answers.insert(order.id, answer);
        }
        Ok(answers)
    }
}

/// The answer as JSON text.
pub(super) async fn status(
    statuses: &Statuses,
    key: &KeyRecord,
    params: &Params,
) -> Result<String, ApiError> {
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
        .map(|answer| answer.to_string())
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_ORDER))
}

/// An object keyed by the ids as written, in the order written (a repeated id once, where it
/// first appears), with an error entry for each id that is not one of the key's orders.
async fn multi_status(
    statuses: &Statuses,
    key: &KeyRecord,
    list: &str,
) -> Result<String, ApiError> {
    let written = id_list(list)?;
    let ids: Vec<i64> = written.iter().filter_map(|w| parse_order_id(w)).collect();
    let found = statuses.lookup(key.id, &ids).await?;

    let not_found = serde_json::json!({ "error": texts::INCORRECT_ORDER }).to_string();
    let mut seen = HashSet::with_capacity(written.len());
    let mut answer = String::with_capacity(16 + written.len() * 112);
    answer.push('{');
    for w in written {
        if !seen.insert(w) {
            continue;
        }
        if answer.len() > 1 {
            answer.push(',');
        }
        // An id that parsed is digits only; anything else is escaped as JSON.
        let id = parse_order_id(w);
        if id.is_some() {
            let _ = write!(answer, "\"{w}\":");
        } else {
            answer.push_str(&serde_json::Value::from(w).to_string());
            answer.push(':');
        }
        match id.and_then(|id| found.get(&id)) {
            Some(status) => answer.push_str(status),
            None => answer.push_str(&not_found),
        }
    }
    answer.push('}');
    Ok(answer)
}
