//! What the dashboard's pages show, computed from stored rows: the delivered views of an order,
//! the figures per provider, and the text of each cell.

use std::collections::BTreeMap;

use askama::Template;

use crate::store::{ActivityEntry, KeyLine, LedgerEntry, OrderEvent, OrderLine, PlacedOrder};

/// Milliseconds since the epoch as UTC date and time.
pub fn time(ms: i64) -> String {
    crate::operator::time(ms)
}

/// The same, to the millisecond, for histories whose steps are close together.
pub fn time_ms(ms: i64) -> String {
    format!("{}.{:03}", time(ms), ms.rem_euclid(1000))
}

/// Views delivered to an order as far as playpanel knows: the play count read after the start
/// count less the start count, kept between zero and the quantity; before any such reading,
/// what the provider reports (quantity less remains).
pub fn delivered(line: &OrderLine) -> i64 {
    match (line.start_count, line.last_count) {
        (Some(start), Some(last)) => (last - start).clamp(0, line.quantity),
        _ => (line.quantity - line.remains).clamp(0, line.quantity),
    }
}

fn count(c: Option<i64>) -> String {
    c.map_or_else(|| "–".to_string(), |c| c.to_string())
}

fn status_class(status: &str) -> String {
    format!("status-{}", status.to_ascii_lowercase().replace(' ', "-"))
}

/// One order row as the pages print it.
pub struct OrderView {
    pub id: i64,
    /// Empty for a plain order; `refill`, `drip-feed` or `run` otherwise.
    pub kind: &'static str,
    pub key_id: i64,
    pub service: i64,
    pub video: String,
    pub status: String,
    pub status_class: String,
    pub delivered: i64,
    pub quantity: i64,
    /// Ended without everything delivered.
    pub short: bool,
    pub start: String,
    pub current: String,
    pub target: String,
    pub charge: String,
    pub refund: String,
    pub created: String,
}

impl OrderView {
    pub fn new(line: &OrderLine) -> OrderView {
        let delivered = delivered(line);
        OrderView {
            id: line.id,
            kind: match line.kind.as_str() {
                "refill" => "refill",
                "drip" => "drip-feed",
                "run" => "run",
                _ => "",
            },
            key_id: line.key_id,
            service: line.service_id,
            video: line.video_id.clone(),
            status: line.status.clone(),
            status_class: status_class(&line.status),
            delivered,
            quantity: line.quantity,
            short: line.phase == "done" && delivered < line.quantity,
            start: count(line.start_count),
            current: count(line.last_count),
            target: count(line.start_count.map(|s| s.saturating_add(line.quantity))),
            charge: line.charge.to_string(),
            refund: line.refund.to_string(),
            created: time(line.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    pub failed: bool,
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
pub struct OrdersPage {
    pub title: &'static str,
    pub active: &'static str,
    pub statuses: [&'static str; 5],
    pub status: String,
    pub key: String,
    pub video: String,
    pub filtered: bool,
    pub orders: Vec<OrderView>,
    pub older: Option<String>,
}

impl OrdersPage {
    fn is_selected(&self, status: &str) -> bool {
        self.status == status
    }
}

/// One line of an order's history: a status change, a reading, a provider call or money.
pub struct HistoryView {
    pub at: String,
    pub what: &'static str,
    pub what_class: &'static str,
    pub outcome: String,
    pub count: String,
    pub detail: String,
}

/// Status changes, readings, provider calls and ledger entries in one list, by time (status
/// changes first among rows of the same millisecond, as they are what the rest explains).
pub fn history(
    events: &[OrderEvent],
    activity: &[ActivityEntry],
    ledger: &[LedgerEntry],
) -> Vec<HistoryView> {
    let mut rows: Vec<(i64, u8, usize, HistoryView)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let outcome = match &e.from {
            Some(from) => format!("{from} → {}", e.to),
            None => e.to.clone(),
        };
        let view = HistoryView {
            at: time_ms(e.at),
            what: "status",
            what_class: "status",
            outcome,
            count: String::new(),
            detail: e.cause.clone().unwrap_or_default(),
        };
        rows.push((e.at, 0, i, view));
    }
    for (i, a) in activity.iter().enumerate() {
        let (what, what_class) = match a.kind.as_str() {
            "reading" => ("play-count reading", "reading"),
            "placement" => ("placement", "placement"),
            "progress" => ("progress check", "progress"),
            "cancel" => ("cancel at provider", "cancel"),
            _ => ("call", "call"),
        };
        let view = HistoryView {
            at: time_ms(a.at),
            what,
            what_class,
            outcome: a.outcome.clone(),
            count: a.count.map(|c| c.to_string()).unwrap_or_default(),
            detail: a.detail.clone().unwrap_or_default(),
        };
        rows.push((a.at, 1, i, view));
    }
    for (i, l) in ledger.iter().enumerate() {
        let view = HistoryView {
            at: time_ms(l.at),
            what: "money",
            what_class: "money",
            outcome: l.kind.clone(),
            count: l.amount.to_string(),
            detail: l.note.clone().unwrap_or_default(),
        };
        rows.push((l.at, 2, i, view));
    }
    rows.sort_by_key(|(at, source, i, _)| (*at, *source, *i));
    rows.into_iter().map(|(_, _, _, view)| view).collect()
}

#[derive(Template)]
#[template(path = "admin/order.html")]
pub struct OrderPage {
    pub title: &'static str,
    pub active: &'static str,
    pub o: OrderView,
    pub kind: String,
    pub upstream: Option<i64>,
    pub link: String,
    pub remains: i64,
    pub phase: String,
    pub lease_owner: Option<String>,
    pub provider_order: String,
    pub provider_done: String,
    pub target_seen: String,
    pub failures: i64,
    pub last_error: Option<String>,
    pub history: Vec<HistoryView>,
    pub max_activity: i64,
}

/// The figures of one catalogue service and the provider's service behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderLine {
    pub service_id: i64,
    pub upstream_service: i64,
    pub placed: i64,
    pub ended: i64,
    pub completed: i64,
    /// Completed out of ended, as a percentage with one decimal, or `–`.
    pub completed_share: String,
    pub views_short: i64,
    /// The median lag in seconds with three decimals, or `–`.
    pub median_lag: String,
    pub failures: i64,
}

/// Sums the placed orders per catalogue service and provider's service.
pub fn provider_lines(orders: &[PlacedOrder]) -> Vec<ProviderLine> {
    #[derive(Default)]
    struct Sums {
        placed: i64,
        ended: i64,
        completed: i64,
        short: i64,
        failures: i64,
        lags: Vec<i64>,
    }
    let mut groups: BTreeMap<(i64, i64), Sums> = BTreeMap::new();
    for o in orders {
        let sums = groups
            .entry((o.service_id, o.upstream_service))
            .or_default();
        sums.placed += 1;
        sums.failures += o.provider_failures;
        if o.ended {
            sums.ended += 1;
            if o.status == "Completed" {
                sums.completed += 1;
            } else if o.provider_done_at.is_some() {
                // The provider said done; verification saw these views missing.
                sums.short += o.remains;
            }
        }
        if let (Some(done), Some(seen)) = (o.provider_done_at, o.target_seen_at) {
            sums.lags.push((seen - done).max(0));
        }
    }
    groups
        .into_iter()
        .map(|((service_id, upstream_service), mut sums)| ProviderLine {
            service_id,
            upstream_service,
            placed: sums.placed,
            ended: sums.ended,
            completed: sums.completed,
            completed_share: if sums.ended == 0 {
                "–".to_string()
            } else {
                let share = sums.completed as f64 * 100.0 / sums.ended as f64;
                format!("{share:.1}%")
            },
            views_short: sums.short,
            median_lag: median(&mut sums.lags)
                .map_or_else(|| "–".to_string(), |ms| format!("{:.3} s", ms / 1000.0)),
            failures: sums.failures,
        })
        .collect()
}

/// The median of some millisecond figures (the mean of the middle two for an even count).
fn median(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        (values[mid - 1] as f64 + values[mid] as f64) / 2.0
    })
}

#[derive(Template)]
#[template(path = "admin/providers.html")]
pub struct ProvidersPage {
    pub title: &'static str,
    pub active: &'static str,
    pub provider: String,
    pub lines: Vec<ProviderLine>,
    pub window: u32,
    pub computed: String,
    pub cache_seconds: u64,
}

/// One key as the keys page prints it.
pub struct KeyView {
    pub id: i64,
    pub state: &'static str,
    pub balance: String,
    pub pending: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub partial: i64,
    pub canceled: i64,
    pub charged: String,
    pub refunded: String,
}

impl KeyView {
    pub fn new(key: &KeyLine) -> KeyView {
        KeyView {
            id: key.id,
            state: if key.revoked { "revoked" } else { "active" },
            balance: key.balance.to_string(),
            pending: key.pending,
            in_progress: key.in_progress,
            completed: key.completed,
            partial: key.partial,
            canceled: key.canceled,
            charged: key.charged.to_string(),
            refunded: key.refunded.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
pub struct KeysPage {
    pub title: &'static str,
    pub active: &'static str,
    pub keys: Vec<KeyView>,
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;

    fn line(quantity: i64, start: Option<i64>, last: Option<i64>, remains: i64) -> OrderLine {
        OrderLine {
            id: 1,
            key_id: 1,
            service_id: 1,
            video_id: "1".into(),
            kind: "order".into(),
            status: "In progress".into(),
            phase: "deliver".into(),
            quantity,
            start_count: start,
            last_count: last,
            remains,
            charge: Money::ZERO,
            refund: Money::ZERO,
            created_at: 0,
            updated_at: 0,
            upstream_service: None,
            provider_done_at: None,
            target_seen_at: None,
            provider_failures: 0,
        }
    }

    #[test]
    fn delivered_comes_from_the_play_count_when_one_was_read() {
        assert_eq!(delivered(&line(1000, Some(500), Some(1300), 1000)), 800);
        // Beyond the target, or below the start, it stays within the quantity.
        assert_eq!(delivered(&line(1000, Some(500), Some(9000), 0)), 1000);
        assert_eq!(delivered(&line(1000, Some(500), Some(400), 1000)), 0);
        // Before any reading, the provider's remains.
        assert_eq!(delivered(&line(1000, Some(500), None, 250)), 750);
        assert_eq!(delivered(&line(1000, None, None, 1000)), 0);
    }

    #[test]
    fn providers_are_summed_per_service() {
        let placed =
            |service, status: &str, remains, done: Option<i64>, seen: Option<i64>| PlacedOrder {
                service_id: service,
                upstream_service: service,
                status: status.into(),
                ended: status != "In progress",
                remains,
                provider_done_at: done,
                target_seen_at: seen,
                provider_failures: 1,
            };
        let lines = provider_lines(&[
            placed(1, "Completed", 0, Some(1000), Some(1100)),
            placed(1, "Completed", 0, Some(1000), Some(1300)),
            placed(1, "In progress", 500, None, None),
            placed(2, "Partial", 200, Some(5000), None),
            placed(2, "Canceled", 1000, None, None),
        ]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].placed, 3);
        assert_eq!(lines[0].ended, 2);
        assert_eq!(lines[0].completed_share, "100.0%");
        assert_eq!(lines[0].median_lag, "0.200 s");
        assert_eq!(lines[0].failures, 3);
        assert_eq!(lines[1].completed_share, "0.0%");
        // A refusal (never reported done) is no shortfall of the provider's delivery.
        assert_eq!(lines[1].views_short, 200);
        assert_eq!(lines[1].median_lag, "–");
    }
}
