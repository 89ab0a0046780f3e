//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::rows::{
    bind_save, corrupt, key_from_row, millis, order_columns, order_from_row, to_i64,
};
use super::{AddRefusal, KeyRecord, NewOrder, Next, OrderRecord, Result, Store};
use crate::domain::{Money, Phase};
use crate::tiktok::link::VideoId;

/// The database's clock in milliseconds; every time written or compared comes from it.
/// (Macros rather than constants, so statements are assembled with `concat!` at compile time.)
macro_rules! now {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Orders and keys in one SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        super::migrate(&MIGRATOR, &pool).await?;
        Ok(SqliteStore { pool })
    }

    /// A write transaction that takes the write lock at once, so it waits on `busy_timeout`
    /// instead of failing when it later upgrades from read to write.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_key(&self, key_hash: &str, balance: Money) -> Result<i64> {
        let sql = concat!(
            "INSERT INTO api_keys (key_hash, balance, created_at) VALUES (?1, ?2, ",
            now!(),
            ") RETURNING id"
        );
        let id = sqlx::query_scalar(sql)
            .bind(key_hash)
            .bind(balance.units())
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    async fn key_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT id, key_hash, balance FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn has_open_order(&self, video: VideoId) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM orders WHERE video_id = ?1 AND phase <> 'done'")
                .bind(video.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn insert_order(
        &self,
        order: &NewOrder,
        refuse_if_open: bool,
    ) -> Result<std::result::Result<i64, AddRefusal>> {
        // The immediate transaction holds the write lock, so the check for an open order and
        // the insert cannot interleave with another `add`.
        let mut tx = self.write_tx().await?;

        let open: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM orders WHERE video_id = ?1 AND phase <> 'done'")
                .bind(order.video_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let queued = open.is_some();
        if queued && refuse_if_open {
            return Ok(Err(AddRefusal::ActiveOrder));
        }

        let debited = sqlx::query(
            "UPDATE api_keys SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1",
        )
        .bind(order.charge.units())
        .bind(order.key_id)
        .execute(&mut *tx)
        .await?;
        if debited.rows_affected() != 1 {
            return Ok(Err(AddRefusal::NotEnoughFunds));
        }

        let seen = order
            .start_count
            .map(|c| to_i64(c, "start_count"))
            .transpose()?;
        let (phase, start_count) = match seen {
            Some(count) if !queued => (Phase::Place, Some(count)),
            _ => (Phase::Start, None),
        };
        let sql = concat!(
            "INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, status, \
             phase, start_count, last_count, remains, next_run_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'Pending', ?7, ?8, ?9, ?5, ",
            now!(),
            ", ",
            now!(),
            ", ",
            now!(),
            ") RETURNING id"
        );
        let id: i64 = sqlx::query_scalar(sql)
            .bind(order.key_id)
            .bind(i64::from(order.service_id))
            .bind(order.video_id.to_string())
            .bind(&order.link)
            .bind(to_i64(order.quantity, "quantity")?)
            .bind(order.charge.units())
            .bind(phase.as_str())
            .bind(start_count)
            // Shown as the start count while queued; not a reading of this order's delivery.
            .bind(if queued { seen } else { None })
            .fetch_one(&mut *tx)
            .await?;

        tx.commit().await?;
        Ok(Ok(id))
    }

    async fn orders(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The ids travel as one JSON array so the statement stays the same for any count.
        let list = serde_json::to_string(ids).map_err(corrupt)?;
        let sql = concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            now!(),
            " AS db_now FROM orders \
             WHERE key_id = ?1 AND id IN (SELECT value FROM json_each(?2))"
        );
        let rows = sqlx::query(sql)
            .bind(key_id)
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn claim(&self, owner: &str, limit: u32, lease: Duration) -> Result<Vec<OrderRecord>> {
        let sql = concat!(
            "UPDATE orders SET lease_owner = ?1, lease_until = ",
            now!(),
            " + ?2, \
             claim = claim + 1 \
             WHERE id IN (SELECT id FROM orders AS o WHERE phase <> 'done' AND next_run_at <= ",
            now!(),
            " AND (lease_until IS NULL OR lease_until <= ",
            now!(),
            ") \
             AND NOT EXISTS (SELECT 1 FROM orders AS earlier \
                 WHERE earlier.video_id = o.video_id AND earlier.phase <> 'done' \
                 AND earlier.id < o.id) \
             ORDER BY next_run_at LIMIT ?3) \
             RETURNING ",
            order_columns!(),
            ", ",
            now!(),
            " AS db_now"
        );
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(millis(lease))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn renew(&self, order: &OrderRecord, lease: Duration) -> Result<bool> {
        let sql = concat!(
            "UPDATE orders SET lease_until = ",
            now!(),
            " + ?1 \
             WHERE id = ?2 AND claim = ?3 AND lease_owner = ?4 AND phase <> 'done'"
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
             WHERE lease_owner = ?1 AND phase <> 'done'",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    async fn save(&self, order: &OrderRecord, next: Next) -> Result<bool> {
        // The lease columns are set to themselves (kept) or cleared (released) by ?16.
        let sql = concat!(
            "UPDATE orders SET status = ?1, phase = ?2, start_count = ?3, last_count = ?4, \
             remains = ?5, provider_order = ?6, attempts = ?7, checks = ?8, last_error = ?9, \
             refund = refund + ?10, next_run_at = ",
            now!(),
            " + ?11, \
             deadline_at = CASE WHEN ?12 IS NULL THEN deadline_at ELSE ",
            now!(),
            " + ?12 END, \
             lease_owner = CASE WHEN ?16 THEN lease_owner ELSE NULL END, \
             lease_until = CASE WHEN ?16 THEN lease_until ELSE NULL END, \
             updated_at = ",
            now!(),
            " \
             WHERE id = ?13 AND claim = ?14 AND lease_owner = ?15 AND phase <> 'done'"
        );
        let mut tx = self.write_tx().await?;
        let updated = bind_save(sqlx::query(sql), order, &next)?
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }

        if next.refund != Money::ZERO {
            sqlx::query("UPDATE api_keys SET balance = balance + ?1 WHERE id = ?2")
                .bind(next.refund.units())
                .bind(order.key_id)
                .execute(&mut *tx)
                .await?;
        }

        tx.commit().await?;
        Ok(true)
    }
}
