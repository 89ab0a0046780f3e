//! Reading order and key rows, the same for every backend: both store integers as 64-bit and
//! text as text, so one decoder serves them all.

use std::str::FromStr;
use std::time::Duration;

use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

use super::{
    ActivityEntry, KeyLine, KeyRecord, LedgerEntry, Next, OrderFilter, OrderLine, OrderRecord,
    PlacedOrder, Result, StoreError,
};
use crate::domain::Money;
use crate::tiktok::link::VideoId;

/// The columns every order query selects, in the order the decoder expects none of (it reads
/// by name); `db_now` is added by each query from its backend's clock.
macro_rules! order_columns {
    () => {
        "id, key_id, service_id, video_id, link, quantity, charge, refund, status, phase, \
         start_count, last_count, remains, provider_order, attempts, checks, claim, lease_owner, \
         deadline_at, last_error, cancel_requested, status_cause, kind, refill_of, updated_at, \
         run_of, runs"
    };
}
pub(crate) use order_columns;

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} does not fit a database integer")))
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A row type whose integers and text decode as `i64` and `String`.
pub(crate) trait PlainRow: Row
where
    for<'a> &'a str: ColumnIndex<Self>,
{
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
}

impl<R> PlainRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
}

fn unsigned<R: PlainRow>(row: &R, column: &str) -> Result<u64>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    u64::try_from(row.int(column)?).map_err(|_| corrupt(format!("{column} is negative")))
}

fn opt_unsigned<R: PlainRow>(row: &R, column: &str) -> Result<Option<u64>>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    row.opt_int(column)?
        .map(|v| u64::try_from(v).map_err(|_| corrupt(format!("{column} is negative"))))
        .transpose()
}

fn small<R: PlainRow>(row: &R, column: &str) -> Result<u32>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    u32::try_from(row.int(column)?).map_err(|_| corrupt(format!("{column} is out of range")))
}

pub(crate) fn order_from_row<R: PlainRow>(row: &R) -> Result<OrderRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(OrderRecord {
        id: row.int("id")?,
        key_id: row.int("key_id")?,
        service_id: small(row, "service_id")?,
        video_id: VideoId::from_str(&row.text("video_id")?).map_err(|_| corrupt("video_id"))?,
        link: row.text("link")?,
        quantity: unsigned(row, "quantity")?,
        charge: Money::from_units(row.int("charge")?),
        refund: Money::from_units(row.int("refund")?),
        status: row.text("status")?.parse().map_err(corrupt)?,
        phase: row.text("phase")?.parse().map_err(corrupt)?,
        start_count: opt_unsigned(row, "start_count")?,
        last_count: opt_unsigned(row, "last_count")?,
        remains: unsigned(row, "remains")?,
        provider_order: row.opt_text("provider_order")?,
        attempts: small(row, "attempts")?,
        checks: small(row, "checks")?,
        claim: row.int("claim")?,
        lease_owner: row.opt_text("lease_owner")?,
        deadline_at: row.opt_int("deadline_at")?,
        last_error: row.opt_text("last_error")?,
        cancel_requested: row.int("cancel_requested")? != 0,
        cancel_handled: false,
        cause: row.opt_text("status_cause")?,
        refill_of: row.opt_int("refill_of")?,
        run_of: row.opt_int("run_of")?,
        runs: small(row, "runs")?,
        updated_at: row.int("updated_at")?,
        db_now: row.int("db_now")?,
        journal: Default::default(),
    })
}

pub(crate) fn key_from_row<R: PlainRow>(row: &R) -> Result<KeyRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(KeyRecord {
        id: row.int("id")?,
        key_hash: row.text("key_hash")?,
        balance: Money::from_units(row.int("balance")?),
    })
}

/// A statement with its arguments, on any backend.
pub(crate) type Statement<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments>;

/// Binds a worker's save, the same values in the same order on every backend: status, phase,
/// start and last count, remains, provider order, attempts, checks, last error, refund, delay
/// and deadline (milliseconds), the fence (id, claim, owner), whether to keep the lease, the
/// cause of the status, and whether the worker acted on the client's cancel (only then is the
/// request cleared: one that arrived while the worker held the order stays for its next step);
/// then the journal's provider service, whether the provider reported done and whether the
/// target was seen (each stamped with the database's clock once), and the failed calls.
pub(crate) fn bind_save<'q, DB: Database>(
    statement: Statement<'q, DB>,
    order: &OrderRecord,
    next: &Next,
) -> Result<Statement<'q, DB>>
where
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
{
    let count = |c: Option<u64>, what| c.map(|c| to_i64(c, what)).transpose();
    Ok(statement
        .bind(order.status.as_str().to_string())
        .bind(order.phase.as_str().to_string())
        .bind(count(order.start_count, "start_count")?)
        .bind(count(order.last_count, "last_count")?)
        .bind(to_i64(order.remains, "remains")?)
        .bind(order.provider_order.clone())
        .bind(i64::from(order.attempts))
        .bind(i64::from(order.checks))
        .bind(order.last_error.clone())
        .bind(next.refund.units())
        .bind(millis(next.after))
        .bind(next.deadline_in.map(millis))
        .bind(order.id)
        .bind(order.claim)
        .bind(order.lease_owner.clone())
        .bind(next.keep_lease)
        .bind(order.cause.clone())
        .bind(order.cancel_handled)
        .bind(
            order
                .journal
                .upstream_service
                .map(|s| to_i64(s, "upstream_service"))
                .transpose()?,
        )
        .bind(order.journal.provider_done)
        .bind(order.journal.target_seen)
        .bind(i64::from(order.journal.provider_failures)))
}

/// The columns of an [`OrderLine`], as the dashboard selects them.
macro_rules! line_columns {
    () => {
        "id, key_id, service_id, video_id, kind, status, phase, quantity, start_count, \
         last_count, remains, charge, refund, created_at, updated_at, upstream_service, \
         provider_done_at, target_seen_at, provider_failures"
    };
}

pub(crate) fn line_from_row<R: PlainRow>(row: &R) -> Result<OrderLine>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(OrderLine {
        id: row.int("id")?,
        key_id: row.int("key_id")?,
        service_id: row.int("service_id")?,
        video_id: row.text("video_id")?,
        kind: row.text("kind")?,
        status: row.text("status")?,
        phase: row.text("phase")?,
        quantity: row.int("quantity")?,
        start_count: row.opt_int("start_count")?,
        last_count: row.opt_int("last_count")?,
        remains: row.int("remains")?,
        charge: Money::from_units(row.int("charge")?),
        refund: Money::from_units(row.int("refund")?),
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        upstream_service: row.opt_int("upstream_service")?,
        provider_done_at: row.opt_int("provider_done_at")?,
        target_seen_at: row.opt_int("target_seen_at")?,
        provider_failures: row.int("provider_failures")?,
    })
}

/// The dashboard's order list: the statement for the filters that are set (each number is a
/// placeholder to write in the backend's style), so that each shape uses its index. Values are
/// always bound, never written into the text.
pub(crate) fn order_lines_sql(filter: &OrderFilter, placeholder: fn(usize) -> String) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        placeholder(n)
    };
    if filter.id.is_some() {
        conditions.push(format!("id = {}", next()));
    }
    if filter.status.is_some() {
        conditions.push(format!("status = {}", next()));
    }
    if filter.key_id.is_some() {
        conditions.push(format!("key_id = {}", next()));
    }
    if filter.video_id.is_some() {
        conditions.push(format!("video_id = {}", next()));
    }
    if filter.before.is_some() {
        conditions.push(format!("id < {}", next()));
    }
    let filters = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {} FROM orders{filters} ORDER BY id DESC LIMIT {}",
        line_columns!(),
        next()
    )
}

/// Binds the filters [`order_lines_sql`] wrote placeholders for, in the same order.
pub(crate) fn bind_order_lines<'q, DB: Database>(
    mut statement: Statement<'q, DB>,
    filter: &OrderFilter,
) -> Statement<'q, DB>
where
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    if let Some(id) = filter.id {
        statement = statement.bind(id);
    }
    if let Some(status) = &filter.status {
        statement = statement.bind(status.clone());
    }
    if let Some(key_id) = filter.key_id {
        statement = statement.bind(key_id);
    }
    if let Some(video_id) = &filter.video_id {
        statement = statement.bind(video_id.clone());
    }
    if let Some(before) = filter.before {
        statement = statement.bind(before);
    }
    statement.bind(i64::from(filter.limit))
}

/// The columns of a [`PlacedOrder`].
pub(crate) const PLACED_COLUMNS: &str = "service_id, upstream_service, status, phase, remains, \
     provider_done_at, target_seen_at, provider_failures";

pub(crate) fn placed_from_row<R: PlainRow>(row: &R) -> Result<PlacedOrder>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(PlacedOrder {
        service_id: row.int("service_id")?,
        upstream_service: row.int("upstream_service")?,
        status: row.text("status")?,
        ended: row.text("phase")? == "done",
        remains: row.int("remains")?,
        provider_done_at: row.opt_int("provider_done_at")?,
        target_seen_at: row.opt_int("target_seen_at")?,
        provider_failures: row.int("provider_failures")?,
    })
}

/// A key row with its running totals: id, revoked_at, balance, charged, refunded, and the
/// ended orders by status; the open ones are filled in by [`add_open_counts`].
pub(crate) fn key_line_from_row<R: PlainRow>(row: &R) -> Result<KeyLine>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(KeyLine {
        id: row.int("id")?,
        revoked: row.opt_int("revoked_at")?.is_some(),
        balance: Money::from_units(row.int("balance")?),
        charged: Money::from_units(row.int("charged")?),
        refunded: Money::from_units(row.int("refunded")?),
        pending: 0,
        in_progress: 0,
        completed: row.int("orders_completed")?,
        partial: row.int("orders_partial")?,
        canceled: row.int("orders_canceled")?,
    })
}

/// The key columns [`key_line_from_row`] reads.
pub(crate) const KEY_LINE_COLUMNS: &str = "id, revoked_at, balance, charged, refunded, \
     (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM key_order_counts AS c \
      WHERE c.key_id = api_keys.id AND c.status = 'Completed') AS orders_completed, \
     (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM key_order_counts AS c \
      WHERE c.key_id = api_keys.id AND c.status = 'Partial') AS orders_partial, \
     (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM key_order_counts AS c \
      WHERE c.key_id = api_keys.id AND c.status = 'Canceled') AS orders_canceled";

/// Adds open order counts (key id, status, count) to the keys they belong to.
pub(crate) fn add_open_counts(keys: &mut [KeyLine], counts: Vec<(i64, String, i64)>) {
    for (key_id, status, count) in counts {
        if let Some(key) = keys.iter_mut().find(|k| k.id == key_id) {
            // An open order is either waiting or being delivered.
            if status == "Pending" {
                key.pending += count;
            } else {
                key.in_progress += count;
            }
        }
    }
}

/// An activity row as selected: at, kind, outcome, count, detail.
pub(crate) fn activity_from_tuple(
    (at, kind, outcome, count, detail): (i64, String, String, Option<i64>, Option<String>),
) -> ActivityEntry {
    ActivityEntry {
        at,
        kind,
        outcome,
        count,
        detail,
    }
}

/// A ledger row as selected: created_at, key_id, order_id, kind, amount, note.
pub(crate) fn ledger_from_tuple(
    (at, key_id, order_id, kind, amount, note): (
        i64,
        i64,
        Option<i64>,
        String,
        i64,
        Option<String>,
    ),
) -> LedgerEntry {
    LedgerEntry {
        at,
        key_id,
        order_id,
        kind,
        amount: Money::from_units(amount),
        note,
    }
}
