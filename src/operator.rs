//! What a panel owner does from the command line: keys, balances, the service list and an
//! order's history. Each function returns the text to print.

use std::fmt::Write;

use anyhow::{Context, bail};

use crate::api::hash_key;
use crate::domain::{Catalogue, Money};
use crate::store::{LedgerKind, Store};

/// Milliseconds since the epoch as a UTC time of day with date, e.g. `2026-12-04 16:59:53`.
pub(crate) fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The most one `balance add` may change a balance by.
const MAX_CHANGE: Money = Money::from_units(1_000_000_000 * 100_000);

pub async fn list_keys(store: &dyn Store) -> anyhow::Result<String> {
    let mut out = format!(
        "{:>6}  {:>16}  {:>7}  {:<19}  state\n",
        "id", "balance", "orders", "created"
    );
    for key in store.list_keys().await? {
        let state = if key.revoked { "revoked" } else { "active" };
        let created = time(key.created_at);
        writeln!(
            out,
            "{:>6}  {:>16}  {:>7}  {created}  {state}",
            key.id, key.balance, key.orders
        )?;
    }
    Ok(out)
}

pub async fn revoke_key(store: &dyn Store, key: &str) -> anyhow::Result<String> {
    if !store.revoke_key(&hash_key(key.trim())).await? {
        bail!("no active key matches");
    }
    Ok("revoked; API processes answer \"Invalid API key\" for it within 5 seconds\n".to_string())
}

/// Adds (or with a minus sign, takes away) money, as a top-up or an adjustment.
pub async fn add_balance(
    store: &dyn Store,
    key: &str,
    amount: &str,
    note: Option<&str>,
) -> anyhow::Result<String> {
    let amount: Money = amount.parse().map_err(anyhow::Error::msg)?;
    if amount == Money::ZERO {
        bail!("the amount is zero");
    }
    if amount.units().unsigned_abs() > MAX_CHANGE.units().unsigned_abs() {
        bail!("at most {MAX_CHANGE} USD can be added or taken away at once");
    }
    let kind = if amount.is_negative() {
        LedgerKind::Adjustment
    } else {
        LedgerKind::TopUp
    };
    let note = note.unwrap_or(if amount.is_negative() {
        "operator adjustment"
    } else {
        "top-up"
    });
    match store
        .adjust_balance(&hash_key(key.trim()), amount, kind, note)
        .await?
    {
        Some(balance) => Ok(format!("balance is now {balance} USD\n")),
        None => bail!("no such key, or the balance would fall below zero"),
    }
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// The services as clients will see them, after checking the catalogue file.
pub fn services(catalogue: &Catalogue) -> String {
    let mut out = format!(
        "{:>4}  {:<44} {:>8} {:>8} {:>9}  {:>8}  {:<6}  {:<6}  dripfeed\n",
        "id", "name", "rate", "min", "max", "upstream", "cancel", "refill"
    );
    for s in catalogue.iter() {
        let _ = writeln!(
            out,
            "{:>4}  {:<44} {:>8} {:>8} {:>9}  {:>8}  {:<6}  {:<6}  {}",
            s.id,
            s.name,
            s.rate.to_string(),
            s.min,
            s.max,
            s.upstream_service,
            yes(s.cancel),
            yes(s.refill),
            yes(s.dripfeed)
        );
    }
    out
}

pub async fn show_order(store: &dyn Store, id: &str) -> anyhow::Result<String> {
    let id: i64 = id.trim().parse().context("an order id is a number")?;
    let Some((order, events, ledger)) = store.order_history(id).await? else {
        bail!("no order {id}");
    };
    let mut out = String::new();
    writeln!(
        out,
        "order {}  key {}  service {}",
        order.id, order.key_id, order.service_id
    )?;
    writeln!(out, "video {}  ({})", order.video_id, order.link)?;
    writeln!(
        out,
        "status {}  (worker phase {})",
        order.status,
        order.phase.as_str()
    )?;
    let count = |c: Option<u64>| c.map_or("-".to_string(), |c| c.to_string());
    writeln!(
        out,
        "quantity {}  start count {}  last count {}  remains {}",
        order.quantity,
        count(order.start_count),
        count(order.last_count),
        order.remains
    )?;
    writeln!(out, "charge {}  refunded {}", order.charge, order.refund)?;
    if let Some(provider) = &order.provider_order {
        writeln!(out, "provider order {provider}")?;
    }
    if let Some(error) = &order.last_error {
        writeln!(out, "last error: {error}")?;
    }
    writeln!(out, "\nhistory:")?;
    for e in &events {
        let from = e.from.as_deref().unwrap_or("-");
        let cause = e.cause.as_deref().unwrap_or("");
        writeln!(out, "  {}  {from} -> {}  {cause}", time(e.at), e.to)?;
    }
    writeln!(out, "\nmoney:")?;
    for e in &ledger {
        let note = e.note.as_deref().unwrap_or("");
        writeln!(
            out,
            "  {}  {:<8} {:>14}  {note}",
            time(e.at),
            e.kind,
            e.amount.to_string()
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_read_as_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_796_403_593_000), "2026-12-04 16:59:53");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
