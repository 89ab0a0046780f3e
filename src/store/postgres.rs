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

use super::rows::{bind_save, key_from_row, millis, order_columns, order_from_row, to_i64};
use super::{AddRefusal, KeyRecord, NewOrder, Next, OrderRecord, Result, Store};
use crate::domain::{Money, Phase};
use crate::tiktok::link::VideoId;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::warn;

/// The database's clock in milliseconds (`clock_timestamp`, not the transaction's start).
macro_rules! now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The channel new orders are announced on.
pub const NEW_ORDER_CHANNEL: &str = "playpanel_new_order";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Orders and keys in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
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

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_key(&self, key_hash: &str, balance: Money) -> Result<i64> {
        let sql = concat!(
            "INSERT INTO api_keys (key_hash, balance, created_at) VALUES ($1, $2, ",
            now!(),
            ") RETURNING id"
        );
        Ok(sqlx::query_scalar(sql)
            .bind(key_hash)
            .bind(balance.units())
            .fetch_one(&self.pool)
            .await?)
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
            "SELECT id, key_hash, balance FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn has_open_order(&self, video: VideoId) -> Result<bool> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM orders WHERE video_id = $1 AND phase <> 'done'")
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
        let mut tx = self.pool.begin().await?;

        // Serialises adds for one video across processes, so the check for an open order and
        // the insert cannot interleave; held until the transaction ends.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(order.video_id.to_string())
            .execute(&mut *tx)
            .await?;
        let open: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM orders WHERE video_id = $1 AND phase <> 'done'")
                .bind(order.video_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let queued = open.is_some();
        if queued && refuse_if_open {
            return Ok(Err(AddRefusal::ActiveOrder));
        }

        let debited = sqlx::query(
            "UPDATE api_keys SET balance = balance - $1 WHERE id = $2 AND balance >= $1",
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
             VALUES ($1, $2, $3, $4, $5, $6, 'Pending', $7, $8, $9, $5, ",
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

        // Delivered when the transaction commits, to every listening worker process.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NEW_ORDER_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;

        tx.commit().await?;
        Ok(Ok(id))
    }

    async fn orders(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            now!(),
            " AS db_now FROM orders WHERE key_id = $1 AND id = ANY($2)"
        );
        let rows = sqlx::query(sql)
            .bind(key_id)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn claim(&self, owner: &str, limit: u32, lease: Duration) -> Result<Vec<OrderRecord>> {
        // Rows another worker is claiming are skipped, not waited for; an order behind an
        // earlier open order on its video is not due.
        let sql = concat!(
            "WITH due AS (SELECT id FROM orders AS o WHERE phase <> 'done' AND next_run_at <= ",
            now!(),
            " AND (lease_until IS NULL OR lease_until <= ",
            now!(),
            ") \
             AND NOT EXISTS (SELECT 1 FROM orders AS earlier \
                 WHERE earlier.video_id = o.video_id AND earlier.phase <> 'done' \
                 AND earlier.id < o.id) \
             ORDER BY next_run_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE orders SET lease_owner = $1, lease_until = ",
            now!(),
            " + $2, claim = claim + 1 FROM due WHERE orders.id = due.id RETURNING orders.*, ",
            now!(),
            " AS db_now"
        );
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

        if next.refund != Money::ZERO {
            sqlx::query("UPDATE api_keys SET balance = balance + $1 WHERE id = $2")
                .bind(next.refund.units())
                .bind(order.key_id)
                .execute(&mut *tx)
                .await?;
        }

        tx.commit().await?;
        Ok(true)
    }
}
