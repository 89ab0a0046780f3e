//! PostgreSQL, for several API and worker processes sharing one database.
//!
//! The statements mirror the SQLite ones; the differences are the clock expression, claims
//! with `FOR UPDATE SKIP LOCKED`, a per-video advisory lock where SQLite relies on its single
//! writer, and a notification on every new order so idle workers elsewhere wake at once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::rows::{
    KEY_LINE_COLUMNS, PLACED_COLUMNS, activity_from_tuple, add_open_counts, bind_order_lines,
    bind_save, corrupt, key_from_row, key_line_from_row, ledger_from_tuple, line_from_row, millis,
    order_columns, order_from_row, order_lines_sql, placed_from_row, to_i64,
};
use super::{
    Activity, ActivityEntry, AddRefusal, CancelOutcome, EndedDrip, KeyLine, KeyRecord, KeySummary,
    LedgerEntry, LedgerKind, MAX_ACTIVITY_PER_ORDER, NewOrder, Next, OrderEvent, OrderFilter,
    OrderLine, OrderRecord, PlacedOrder, Result, Store,
};
use crate::domain::{Money, Phase};
use crate::tiktok::link::VideoId;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::warn;

/// Gives money back to a key, keeping its running total of refunds in the same statement.
const REFUND: &str =
    "UPDATE api_keys SET balance = balance + $1, refunded = refunded + $1 WHERE id = $2";

/// The database's clock in milliseconds (`clock_timestamp`, not the transaction's start).
macro_rules! now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The channel new orders are announced on.
pub const NEW_ORDER_CHANNEL: &str = "playpanel_new_order";

/// The orders a worker may claim (as `o`), oldest due first: open, not a drip-feed's own row,
/// due, not leased, and first in their video's queue. Shared by `claim` and `oldest_due_ms`,
/// so the gauge and readiness count exactly what a claim would take.
macro_rules! claimable {
    () => {
        concat!(
            "o.phase <> 'done' AND o.phase <> 'drip' AND o.next_run_at <= ",
            now!(),
            " AND (o.lease_until IS NULL OR o.lease_until <= ",
            now!(),
            ") AND NOT EXISTS (SELECT 1 FROM orders AS earlier \
             WHERE earlier.video_id = o.video_id AND in_video_queue(earlier.phase) AND earlier.id < o.id) \
             ORDER BY o.next_run_at"
        )
    };
}

/// Claims due orders: rows another worker is claiming are skipped, not waited for; an order
/// behind an earlier open order on its video is not due. (A macro, to be `concat!`ed.)
macro_rules! claim_sql {
    () => {
        concat!(
            "WITH due AS (SELECT id FROM orders AS o WHERE ",
            claimable!(),
            " LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE orders SET lease_owner = $1, lease_until = ",
            now!(),
            " + $2, claim = claim + 1 FROM due WHERE orders.id = due.id RETURNING orders.*, ",
            now!(),
            " AS db_now"
        )
    };
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Orders and keys in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Inserts one order inside a write transaction (see [`Store::insert_order`]); a refusal
    /// writes nothing.
    async fn insert_in(
        tx: &mut sqlx::PgConnection,
        order: &NewOrder,
        refuse_if_open: bool,
    ) -> Result<std::result::Result<i64, AddRefusal>> {
        let seen = order
            .start_count
            .map(|c| to_i64(c, "start_count"))
            .transpose()?;
        let drip = order.runs > 1;
        // Phase and start count when the video is free, and when the order must queue behind
        // an open one (which the statement finds out).
        let (phase_free, start_free) = match seen {
            // A drip-feed order is worked through its runs; it keeps the count seen at `add`.
            _ if drip => (Phase::Drip, seen),
            Some(count) => (Phase::Place, Some(count)),
            None => (Phase::Start, None),
        };
        // Queued behind another order, its start count is read (a drip-feed: its first run's)
        // when its turn comes; the count seen now is only shown until then.
        let phase_queued = if drip { Phase::Drip } else { Phase::Start };
        let total = order.quantity.saturating_mul(u64::from(order.runs.max(1)));

        // The open-order check, debit, order (with the count read at `add`), ledger row and
        // the notification in one statement
        // (after the lock, so that it sees every order committed before): one round trip to
        // the server instead of five. A refusal writes nothing.
        let sql = concat!(
            "WITH open AS (SELECT EXISTS (SELECT 1 FROM orders WHERE video_id = $3 \
             AND order_open(phase)) AS queued), \
             debit AS (UPDATE api_keys SET balance = balance - $6, charged = charged + $6 \
             WHERE id = $1 AND balance >= $6 AND NOT ($13 AND (SELECT queued FROM open)) RETURNING id), \
             placed AS (INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, \
             status, phase, start_count, last_count, remains, kind, refill_of, runs, add_count, \
             next_run_at, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, 'Pending', \
             CASE WHEN open.queued THEN $9 ELSE $7 END, \
             CASE WHEN open.queued THEN NULL ELSE $8::BIGINT END, \
             CASE WHEN open.queued THEN $14::BIGINT ELSE NULL END, $5, $10, $11, $12, $14, ",
            now!(),
            ", ",
            now!(),
            ", ",
            now!(),
            " FROM open, debit RETURNING id), \
             charged AS (INSERT INTO ledger (key_id, order_id, kind, amount, note, created_at) \
             SELECT $1, placed.id, 'charge', -$6, 'add', ",
            now!(),
            " FROM placed WHERE $6 <> 0) \
             SELECT placed.id, pg_notify($15, placed.id::text)::text FROM placed"
        );
        let inserted: Option<(i64, String)> = sqlx::query_as(sql)
            .bind(order.key_id)
            .bind(i64::from(order.service_id))
            .bind(order.video_id.to_string())
            .bind(&order.link)
            .bind(to_i64(total, "quantity")?)
            .bind(order.charge.units())
            .bind(phase_free.as_str())
            .bind(start_free)
            .bind(phase_queued.as_str())
            .bind(match (order.refill_of, drip) {
                (Some(_), _) => "refill",
                (None, true) => "drip",
                (None, false) => "order",
            })
            .bind(order.refill_of)
            .bind(i64::from(order.runs.max(1)))
            .bind(refuse_if_open)
            .bind(seen)
            // Delivered when the transaction commits, to every listening worker process.
            .bind(NEW_ORDER_CHANNEL)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, _)) = inserted else {
            // Nothing was written; tell the two refusals apart.
            let open: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM orders WHERE video_id = $1 AND order_open(phase)",
            )
            .bind(order.video_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            return Ok(Err(if refuse_if_open && open.is_some() {
                AddRefusal::ActiveOrder
            } else {
                AddRefusal::NotEnoughFunds
            }));
        };

        // Each run is an order row of its own, due `interval` after the one before it.
        if drip {
            let sql = concat!(
                "INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, status, \
                 phase, remains, kind, run_of, next_run_at, created_at, updated_at) \
                 SELECT $1, $2, $3, $4, $5, 0, 'Pending', 'start', $5, 'run', $6, ",
                now!(),
                " + n * $7, ",
                now!(),
                ", ",
                now!(),
                " FROM generate_series(0, $8 - 1) AS n"
            );
            sqlx::query(sql)
                .bind(order.key_id)
                .bind(i64::from(order.service_id))
                .bind(order.video_id.to_string())
                .bind(&order.link)
                .bind(to_i64(order.quantity, "quantity")?)
                .bind(id)
                .bind(millis(order.interval))
                .bind(i64::from(order.runs))
                .execute(&mut *tx)
                .await?;
        }

        Ok(Ok(id))
    }

    /// The plan PostgreSQL chooses for claiming `limit` orders, for tests that check the
    /// claim stays on its indexes whatever the statistics say. Claims nothing.
    #[doc(hidden)]
    pub async fn explain_claim(&self, limit: u32) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        let sql = concat!("EXPLAIN ", claim_sql!());
        let lines: Vec<String> = sqlx::query_scalar(sql)
            .bind("explain")
            .bind(0_i64)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(lines.join("\n"))
    }

    /// Connects to a `postgres://` URL and migrates the schema.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        // A request must fail with an error, not hang, while the database is away.
        let options = PgConnectOptions::from_str(url)?.options([("statement_timeout", "15s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        super::migrate(&MIGRATOR, &pool).await?;
        Ok(PostgresStore { pool })
    }

    /// Records a balance change in the ledger, inside the transaction that makes it.
    async fn ledger_entry(
        tx: &mut sqlx::PgConnection,
        key_id: i64,
        order_id: Option<i64>,
        kind: LedgerKind,
        amount: Money,
        note: &str,
    ) -> Result<()> {
        let sql = concat!(
            "INSERT INTO ledger (key_id, order_id, kind, amount, note, created_at) \
             VALUES ($1, $2, $3, $4, $5, ",
            now!(),
            ")"
        );
        sqlx::query(sql)
            .bind(key_id)
            .bind(order_id)
            .bind(kind.as_str())
            .bind(amount.units())
            .bind(note)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Appends readings and provider calls to an order's activity, inside the transaction that
    /// acts on them, up to the bound per order.
    async fn record_activity(
        tx: &mut sqlx::PgConnection,
        order_id: i64,
        entries: &[Activity],
    ) -> Result<()> {
        let sql = concat!(
            "INSERT INTO order_activity (order_id, at, kind, outcome, count, detail) SELECT $1, ",
            now!(),
            ", $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM order_activity \
             WHERE order_id = $1) < $6"
        );
        for entry in entries {
            let count = entry.count.map(|c| to_i64(c, "count")).transpose()?;
            sqlx::query(sql)
                .bind(order_id)
                .bind(entry.kind.as_str())
                .bind(&entry.outcome)
                .bind(count)
                .bind(&entry.detail)
                .bind(MAX_ACTIVITY_PER_ORDER)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    async fn listen(&self, wake: &Notify) -> Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(NEW_ORDER_CHANNEL).await?;
        wake.notify_one();
        loop {
            // `try_recv` reports a lost connection instead of reconnecting silently, so that
            // the loop above can rescan after it.
            match listener.try_recv().await? {
                Some(_) => wake.notify_one(),
                None => {
                    let lost = "the listening connection was lost".to_string();
                    return Err(sqlx::Error::Protocol(lost).into());
                }
            }
        }
    }

    /// The key's rows among `ids` of either of two kinds, in one query.
    async fn rows_by_ids(
        &self,
        key_id: i64,
        ids: &[i64],
        kinds: [&str; 2],
    ) -> Result<Vec<OrderRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            now!(),
            " AS db_now FROM orders WHERE key_id = $1 AND id = ANY($2) \
             AND kind IN ($3, $4)"
        );
        let rows = sqlx::query(sql)
            .bind(key_id)
            .bind(ids)
            .bind(kinds[0])
            .bind(kinds[1])
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_from_row).collect()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_key(&self, key_hash: &str, balance: Money) -> Result<i64> {
        let sql = concat!(
            "INSERT INTO api_keys (key_hash, balance, created_at) VALUES ($1, $2, ",
            now!(),
            ") RETURNING id"
        );
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query_scalar(sql)
            .bind(key_hash)
            .bind(balance.units())
            .fetch_one(&mut *tx)
            .await?;
        if balance != Money::ZERO {
            let kind = LedgerKind::TopUp;
            Self::ledger_entry(&mut tx, id, None, kind, balance, "opening balance").await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn key_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<()> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        super::schema_is_current(&MIGRATOR, applied)
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT id, key_hash, balance FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn has_open_order(&self, video: VideoId) -> Result<bool> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM orders WHERE video_id = $1 AND order_open(phase)")
                .bind(video.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    fn writers(&self) -> usize {
        4
    }

    async fn insert_orders(
        &self,
        batch: &[(NewOrder, bool)],
        abandoned: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<Vec<std::result::Result<i64, AddRefusal>>>> {
        let mut tx = self.pool.begin().await?;
        // Serialises adds for one video across processes, so the check for an open order and
        // the insert cannot interleave; every video's lock first, in one order for all batches,
        // held until the transaction ends.
        let mut videos: Vec<String> = batch.iter().map(|(o, _)| o.video_id.to_string()).collect();
        videos.sort();
        videos.dedup();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(v, 0)) FROM unnest($1::text[]) AS v",
        )
        .bind(&videos)
        .execute(&mut *tx)
        .await?;
        // Key rows are debited in key order, so that batches in other processes cannot
        // deadlock with this one; the answers go back in the batch's order.
        let mut by_key: Vec<usize> = (0..batch.len()).collect();
        by_key.sort_by_key(|&i| batch[i].0.key_id);
        let mut answers = vec![Err(AddRefusal::NotEnoughFunds); batch.len()];
        for i in by_key {
            let (order, refuse) = &batch[i];
            answers[i] = Self::insert_in(&mut tx, order, *refuse).await?;
        }
        if abandoned() {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(answers))
    }

    async fn orders(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>> {
        self.rows_by_ids(key_id, ids, ["order", "drip"]).await
    }

    async fn refills(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>> {
        self.rows_by_ids(key_id, ids, ["refill", "refill"]).await
    }

    async fn claim(&self, owner: &str, limit: u32, lease: Duration) -> Result<Vec<OrderRecord>> {
        let sql = claim_sql!();
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(millis(lease))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn renew(&self, order: &OrderRecord, lease: Duration) -> Result<bool> {
        let sql = concat!(
            "UPDATE orders SET lease_until = ",
            now!(),
            " + $1 WHERE id = $2 AND claim = $3 AND lease_owner = $4 AND phase <> 'done'"
        );
        let renewed = sqlx::query(sql)
            .bind(millis(lease))
            .bind(order.id)
            .bind(order.claim)
            .bind(&order.lease_owner)
            .execute(&self.pool)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn release(&self, owner: &str) -> Result<u64> {
        let released = sqlx::query(
            "UPDATE orders SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND phase <> 'done'",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    async fn watch_new_orders(&self, wake: Arc<Notify>) {
        loop {
            match self.listen(&wake).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "lost the new-order listener; reconnecting"),
            }
            // Whatever was announced while the listener was away is found by a rescan.
            wake.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn cancel_order(&self, key_id: i64, id: i64) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;

        // Not yet handed to anyone (and not held by a worker): canceled here and now.
        let sql = concat!(
            "UPDATE orders SET status = 'Canceled', phase = 'done', remains = quantity, \
             refund = charge, status_cause = 'canceled by the client', updated_at = ",
            now!(),
            " WHERE id = $1 AND key_id = $2 AND phase IN ('start', 'place') \
             AND (lease_until IS NULL OR lease_until <= ",
            now!(),
            ") RETURNING charge"
        );
        let refunded: Option<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(charge) = refunded {
            let charge = Money::from_units(charge);
            sqlx::query(REFUND)
                .bind(charge.units())
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
            let note = "canceled by the client";
            Self::ledger_entry(&mut tx, key_id, Some(id), LedgerKind::Refund, charge, note).await?;
            tx.commit().await?;
            return Ok(CancelOutcome::Canceled);
        }

        // A drip-feed order: runs not yet started end here; running ones are asked to stop.
        let sql = concat!(
            "UPDATE orders SET status = 'Canceled', phase = 'done', remains = quantity, \
             status_cause = 'canceled by the client', updated_at = ",
            now!(),
            " WHERE run_of = $1 AND key_id = $2 AND phase IN ('start', 'place') \
             AND (lease_until IS NULL OR lease_until <= ",
            now!(),
            ")"
        );
        sqlx::query(sql)
            .bind(id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE orders SET cancel_requested = 1 WHERE run_of = $1 AND key_id = $2 \
             AND phase <> 'done'",
        )
        .bind(id)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;

        let marked = sqlx::query(
            "UPDATE orders SET cancel_requested = 1 WHERE id = $1 AND key_id = $2 \
             AND phase <> 'done'",
        )
        .bind(id)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        let outcome = if marked.rows_affected() == 1 {
            CancelOutcome::Requested
        } else {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM orders WHERE id = $1 AND key_id = $2")
                    .bind(id)
                    .bind(key_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                CancelOutcome::Ended
            } else {
                CancelOutcome::NotFound
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn adjust_balance(
        &self,
        key_hash: &str,
        amount: Money,
        kind: LedgerKind,
        note: &str,
    ) -> Result<Option<Money>> {
        let mut tx = self.pool.begin().await?;
        let changed: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE api_keys SET balance = balance + $1 \
             WHERE key_hash = $2 AND balance + $1 >= 0 \
             AND balance + $1 <= 100000000000000000 RETURNING id, balance",
        )
        .bind(amount.units())
        .bind(key_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((key_id, balance)) = changed else {
            return Ok(None);
        };
        Self::ledger_entry(&mut tx, key_id, None, kind, amount, note).await?;
        tx.commit().await?;
        Ok(Some(Money::from_units(balance)))
    }

    async fn list_keys(&self) -> Result<Vec<KeySummary>> {
        let rows: Vec<(i64, i64, i64, Option<i64>, i64)> = sqlx::query_as(
            "SELECT k.id, k.balance, k.created_at, k.revoked_at, \
             (SELECT COUNT(*) FROM orders AS o WHERE o.key_id = k.id AND o.kind IN ('order', 'drip')) \
             FROM api_keys AS k ORDER BY k.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, balance, created_at, revoked_at, orders)| KeySummary {
                id,
                balance: Money::from_units(balance),
                created_at,
                revoked: revoked_at.is_some(),
                orders,
            })
            .collect())
    }

    async fn revoke_key(&self, key_hash: &str) -> Result<bool> {
        let sql = concat!(
            "UPDATE api_keys SET revoked_at = ",
            now!(),
            " WHERE key_hash = $1 AND revoked_at IS NULL"
        );
        let revoked = sqlx::query(sql).bind(key_hash).execute(&self.pool).await?;
        Ok(revoked.rows_affected() == 1)
    }

    async fn ledger(&self, key_id: i64) -> Result<Vec<LedgerEntry>> {
        let rows: Vec<(i64, i64, Option<i64>, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT created_at, key_id, order_id, kind, amount, note FROM ledger \
             WHERE key_id = $1 ORDER BY id",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ledger_from_tuple).collect())
    }

    async fn order_history(
        &self,
        id: i64,
    ) -> Result<Option<(OrderRecord, Vec<OrderEvent>, Vec<LedgerEntry>)>> {
        let sql = concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            now!(),
            " AS db_now FROM orders WHERE id = $1"
        );
        let Some(row) = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let order = order_from_row(&row)?;
        let events: Vec<(i64, Option<String>, String, Option<String>)> = sqlx::query_as(
            "SELECT at, from_status, to_status, cause FROM order_events \
             WHERE order_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let events = events
            .into_iter()
            .map(|(at, from, to, cause)| OrderEvent {
                at,
                from,
                to,
                cause,
            })
            .collect();
        let entries: Vec<(i64, i64, Option<i64>, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT created_at, key_id, order_id, kind, amount, note FROM ledger \
             WHERE order_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let entries = entries.into_iter().map(ledger_from_tuple).collect();
        Ok(Some((order, events, entries)))
    }

    async fn open_order_stats(&self) -> Result<(Vec<(String, i64)>, i64)> {
        let by_status: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM orders WHERE phase <> 'done' AND kind <> 'drip' \
             GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest_due = self.oldest_due_ms().await?;
        Ok((by_status, oldest_due.max(0)))
    }

    async fn oldest_due_ms(&self) -> Result<i64> {
        // The same conditions as `claim`, so an order queued behind another on its video is
        // not counted as waiting for a worker.
        let sql = concat!(
            "SELECT CAST(",
            now!(),
            " - next_run_at AS BIGINT) FROM orders AS o \
             WHERE ",
            claimable!(),
            " LIMIT 1"
        );
        let oldest: Option<i64> = sqlx::query_scalar(sql).fetch_optional(&self.pool).await?;
        Ok(oldest.unwrap_or(0).max(0))
    }

    async fn drip_started(&self, drip: i64) -> Result<bool> {
        let sql = concat!(
            "UPDATE orders SET status = 'In progress', status_cause = 'a run started', \
             start_count = COALESCE(start_count, (SELECT r.start_count FROM orders AS r \
                 WHERE r.run_of = $1 ORDER BY r.id LIMIT 1)), updated_at = ",
            now!(),
            " WHERE id = $1 AND kind = 'drip' AND status = 'Pending'"
        );
        let started = sqlx::query(sql).bind(drip).execute(&self.pool).await?;
        Ok(started.rows_affected() == 1)
    }

    async fn drip_progress(&self, drip: i64) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET remains = quantity - (SELECT CAST(COALESCE(SUM(r.quantity - \
             r.remains), 0) AS BIGINT) FROM orders AS r WHERE r.run_of = $1 AND r.phase = 'done') \
             WHERE id = $1 AND kind = 'drip' AND phase <> 'done'",
        )
        .bind(drip)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn settle_drips(&self) -> Result<Vec<EndedDrip>> {
        let ready: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM orders AS d WHERE d.kind = 'drip' AND d.phase <> 'done' \
             AND NOT EXISTS (SELECT 1 FROM orders AS r WHERE r.run_of = d.id \
                 AND r.phase <> 'done')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut settled = Vec::new();
        for drip in ready {
            let mut tx = self.pool.begin().await?;
            let (key_id, quantity, charge, video, from): (i64, i64, i64, String, String) =
                sqlx::query_as(
                    "SELECT key_id, quantity, charge, video_id, status FROM orders WHERE id = $1",
                )
                .bind(drip)
                .fetch_one(&mut *tx)
                .await?;
            let delivered: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(quantity - remains), 0) AS BIGINT) FROM orders \
                 WHERE run_of = $1",
            )
            .bind(drip)
            .fetch_one(&mut *tx)
            .await?;
            let quantity = u64::try_from(quantity).map_err(corrupt)?;
            let delivered = u64::try_from(delivered.max(0))
                .map_err(corrupt)?
                .min(quantity);
            let remains = quantity - delivered;
            let charge = Money::from_units(charge);
            let (status, refund) = if remains == 0 {
                ("Completed", Money::ZERO)
            } else if delivered == 0 {
                ("Canceled", charge)
            } else {
                ("Partial", charge.refund_share(remains, quantity))
            };
            let sql = concat!(
                "UPDATE orders SET status = $1, phase = 'done', remains = $2, refund = $3, \
                 status_cause = 'every run has ended', updated_at = ",
                now!(),
                " WHERE id = $4 AND phase <> 'done'"
            );
            let ended = sqlx::query(sql)
                .bind(status)
                .bind(to_i64(remains, "remains")?)
                .bind(refund.units())
                .bind(drip)
                .execute(&mut *tx)
                .await?;
            // Another worker settled it first.
            if ended.rows_affected() != 1 {
                continue;
            }
            if refund != Money::ZERO {
                sqlx::query(REFUND)
                    .bind(refund.units())
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await?;
                let note = "drip-feed runs fell short";
                Self::ledger_entry(
                    &mut tx,
                    key_id,
                    Some(drip),
                    LedgerKind::Refund,
                    refund,
                    note,
                )
                .await?;
            }
            tx.commit().await?;
            settled.push(EndedDrip {
                id: drip,
                video,
                from,
                status,
                refund,
            });
        }
        Ok(settled)
    }

    async fn save(&self, order: &OrderRecord, next: Next) -> Result<bool> {
        let sql = concat!(
            "UPDATE orders SET status = $1, phase = $2, start_count = $3, last_count = $4, \
             remains = $5, provider_order = $6, attempts = $7, checks = $8, last_error = $9, \
             refund = refund + $10, next_run_at = ",
            now!(),
            " + $11, deadline_at = CASE WHEN $12::bigint IS NULL THEN deadline_at ELSE ",
            now!(),
            " + $12 END, \
             lease_owner = CASE WHEN $16 THEN lease_owner ELSE NULL END, \
             lease_until = CASE WHEN $16 THEN lease_until ELSE NULL END, \
             status_cause = $17, \
             cancel_requested = CASE WHEN $18 THEN 0 ELSE cancel_requested END, \
             upstream_service = COALESCE($19, upstream_service), \
             provider_done_at = CASE WHEN $20 AND provider_done_at IS NULL THEN ",
            now!(),
            " ELSE provider_done_at END, \
             target_seen_at = CASE WHEN $21 AND target_seen_at IS NULL THEN ",
            now!(),
            " ELSE target_seen_at END, \
             provider_failures = provider_failures + $22, \
             updated_at = ",
            now!(),
            " WHERE id = $13 AND claim = $14 AND lease_owner = $15 AND phase <> 'done'"
        );
        let mut tx = self.pool.begin().await?;
        let updated = bind_save(sqlx::query(sql), order, &next)?
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        Self::record_activity(&mut tx, order.id, &order.journal.entries).await?;

        if next.refund != Money::ZERO {
            sqlx::query(REFUND)
                .bind(next.refund.units())
                .bind(order.key_id)
                .execute(&mut *tx)
                .await?;
            let note = order.cause.as_deref().unwrap_or("refund");
            let (key, id) = (order.key_id, Some(order.id));
            Self::ledger_entry(&mut tx, key, id, LedgerKind::Refund, next.refund, note).await?;
        }

        tx.commit().await?;
        Ok(true)
    }

    async fn order_lines(&self, filter: &OrderFilter) -> Result<Vec<OrderLine>> {
        let sql = sqlx::AssertSqlSafe(order_lines_sql(filter, |n| format!("${n}")));
        let rows = bind_order_lines(sqlx::query(sql), filter)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(line_from_row).collect()
    }

    async fn order_activity(&self, id: i64) -> Result<Vec<ActivityEntry>> {
        let rows: Vec<(i64, String, String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT at, kind, outcome, count, detail FROM (\
             SELECT 0 AS seq, created_at AS at, 'reading' AS kind, 'ok' AS outcome, \
             add_count AS count, 'read at add' AS detail FROM orders \
             WHERE id = $1 AND add_count IS NOT NULL \
             UNION ALL SELECT id, at, kind, outcome, count, detail FROM order_activity \
             WHERE order_id = $1) AS history ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(activity_from_tuple).collect())
    }

    async fn placed_orders(&self, window: u32) -> Result<Vec<PlacedOrder>> {
        let sql = format!(
            "SELECT {PLACED_COLUMNS} FROM orders WHERE upstream_service IS NOT NULL \
             ORDER BY id DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(window))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(placed_from_row).collect()
    }

    async fn key_lines(&self, after: i64, limit: u32) -> Result<Vec<KeyLine>> {
        let sql =
            format!("SELECT {KEY_LINE_COLUMNS} FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut keys = rows
            .iter()
            .map(key_line_from_row)
            .collect::<Result<Vec<_>>>()?;
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return Ok(keys);
        };
        // Open orders are few next to ended ones, and have an index of their own.
        let open: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT key_id, status, COUNT(*) FROM orders WHERE phase <> 'done' \
             AND key_id >= $1 AND key_id <= $2 AND kind IN ('order', 'drip') \
             GROUP BY key_id, status",
        )
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&self.pool)
        .await?;
        add_open_counts(&mut keys, open);
        Ok(keys)
    }
}
