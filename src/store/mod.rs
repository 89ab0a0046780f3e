//! Storage of keys, balances and orders behind one trait, with one implementation per backend.

mod postgres;
mod rows;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Money, OrderStatus, Phase};
use crate::tiktok::link::VideoId;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error(
        "the database has schema version {0}, newer than this playpanel knows; \
         run a playpanel at least as new as the one that migrated it"
    )]
    NewerSchema(i64),
    #[error("the database schema is older than this playpanel's; run `playpanel migrate`")]
    OlderSchema,
    #[error(
        "there is no database at {0}: check --database, or create one with `playpanel migrate` \
         (or `playpanel serve`)"
    )]
    Missing(String),
    #[error("writing a batch of orders failed: {0}")]
    Batch(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An API key as stored: only its hash is kept.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: i64,
    pub key_hash: String,
    pub balance: Money,
}

/// Why a key's balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Money paid in by the operator.
    TopUp,
    /// An order's price, taken at `add`.
    Charge,
    /// Money given back for views not delivered.
    Refund,
    /// A correction by the operator, either way.
    Adjustment,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::TopUp => "topup",
            LedgerKind::Charge => "charge",
            LedgerKind::Refund => "refund",
            LedgerKind::Adjustment => "adjustment",
        }
    }
}

/// What asking to cancel an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No such order for this key.
    NotFound,
    /// The order had ended already.
    Ended,
    /// Not yet handed to anyone: canceled now, with a full refund.
    Canceled,
    /// In a worker's hands or at the provider: the worker will cancel what it can.
    Requested,
}

/// One change of an order's status.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub at: i64,
    pub from: Option<String>,
    pub to: String,
    pub cause: Option<String>,
}

/// One balance change.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub at: i64,
    pub key_id: i64,
    pub order_id: Option<i64>,
    pub kind: String,
    pub amount: Money,
    pub note: Option<String>,
}

/// A key as operators list it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary {
    pub id: i64,
    pub balance: Money,
    pub created_at: i64,
    pub revoked: bool,
    pub orders: i64,
}

/// An order to be stored by `add`, already priced and checked.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub key_id: i64,
    pub service_id: u32,
    pub video_id: VideoId,
    pub link: String,
    pub quantity: u64,
    pub charge: Money,
    /// Known when TikTok answered at `add`; otherwise the worker reads it before placing.
    pub start_count: Option<u64>,
    /// Makes this a refill of that order rather than an order of its own.
    pub refill_of: Option<i64>,
    /// Drip-feed: `quantity` is delivered this many times (1 for a plain order)...
    pub runs: u32,
    /// ...this far apart.
    pub interval: Duration,
}

/// Why `add` could not store an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefusal {
    NotEnoughFunds,
    ActiveOrder,
}

/// What kind of outside call an activity row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    /// A read of the video's public play count.
    Reading,
    /// Handing the order to the provider.
    Placement,
    /// Asking the provider how far it has come.
    Progress,
    /// Asking the provider to stop.
    Cancel,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Reading => "reading",
            ActivityKind::Placement => "placement",
            ActivityKind::Progress => "progress",
            ActivityKind::Cancel => "cancel",
        }
    }
}

/// One play-count reading or provider call, for the order's history on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub kind: ActivityKind,
    /// `ok`, `private`, `blocked`... for a reading; `placed`, `refused`, `failed`, the
    /// provider's state... for a call.
    pub outcome: String,
    /// The play count read, or the views the provider says remain.
    pub count: Option<u64>,
    /// The provider's order id, or why the call or read failed.
    pub detail: Option<String>,
}

/// An activity row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEntry {
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub count: Option<i64>,
    pub detail: Option<String>,
}

/// At most this many activity rows are kept per order: a video TikTok refuses to show for
/// hours would otherwise add a failed reading at every retry.
pub const MAX_ACTIVITY_PER_ORDER: i64 = 100;

/// What a worker's step learned for the operator's record, written by `save` in the same
/// transaction as the order, so that it costs no commit of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    /// Readings and provider calls made by the step.
    pub entries: Vec<Activity>,
    /// The provider's service the order is being placed under.
    pub upstream_service: Option<u64>,
    /// The provider reported the order done (the first report is kept).
    pub provider_done: bool,
    /// Verification saw the play count reach the target (the first sighting is kept).
    pub target_seen: bool,
    /// Calls to the provider that failed during the step.
    pub provider_failures: u32,
}

impl Journal {
    pub fn record(&mut self, kind: ActivityKind, outcome: &str, count: Option<u64>) {
        self.entries.push(Activity {
            kind,
            outcome: outcome.to_string(),
            count,
            detail: None,
        });
    }

    pub fn record_with(
        &mut self,
        kind: ActivityKind,
        outcome: &str,
        count: Option<u64>,
        detail: &str,
    ) {
        self.entries.push(Activity {
            kind,
            outcome: outcome.to_string(),
            count,
            detail: Some(detail.to_string()),
        });
    }

    /// A failed call to the provider: counted, and recorded with why.
    pub fn provider_failed(&mut self, kind: ActivityKind, outcome: &str, why: &str) {
        self.provider_failures += 1;
        self.record_with(kind, outcome, None, why);
    }
}

/// The dashboard's selection of orders: newest first, before `before` when paging.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFilter {
    pub id: Option<i64>,
    pub status: Option<String>,
    pub key_id: Option<i64>,
    pub video_id: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// An order as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    pub id: i64,
    pub key_id: i64,
    pub service_id: i64,
    pub video_id: String,
    pub kind: String,
    pub status: String,
    pub phase: String,
    pub quantity: i64,
    pub start_count: Option<i64>,
    pub last_count: Option<i64>,
    pub remains: i64,
    pub charge: Money,
    pub refund: Money,
    pub created_at: i64,
    pub updated_at: i64,
    pub upstream_service: Option<i64>,
    pub provider_done_at: Option<i64>,
    pub target_seen_at: Option<i64>,
    pub provider_failures: i64,
}

/// An order placed with a provider, as the providers page aggregates it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedOrder {
    pub service_id: i64,
    pub upstream_service: i64,
    pub status: String,
    pub ended: bool,
    pub remains: i64,
    pub provider_done_at: Option<i64>,
    pub target_seen_at: Option<i64>,
    pub provider_failures: i64,
}

/// A key as the dashboard lists it, from running totals and its open orders.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLine {
    pub id: i64,
    pub revoked: bool,
    pub balance: Money,
    pub charged: Money,
    pub refunded: Money,
    pub pending: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub partial: i64,
    pub canceled: i64,
}

/// An order row, which is also the worker's job.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub id: i64,
    pub key_id: i64,
    pub service_id: u32,
    pub video_id: VideoId,
    pub link: String,
    pub quantity: u64,
    pub charge: Money,
    pub refund: Money,
    pub status: OrderStatus,
    pub phase: Phase,
    pub start_count: Option<u64>,
    pub last_count: Option<u64>,
    pub remains: u64,
    pub provider_order: Option<String>,
    /// Failed tries of the current phase, for backoff and the bound on retries.
    pub attempts: u32,
    /// Play-count checks made while verifying.
    pub checks: u32,
    /// Bumped by every claim; writes are fenced on it together with the lease owner.
    pub claim: i64,
    pub lease_owner: Option<String>,
    pub deadline_at: Option<i64>,
    pub last_error: Option<String>,
    /// The client asked to cancel; the worker acts on it at the next step.
    pub cancel_requested: bool,
    /// Set by the worker when it has acted on `cancel_requested`, so the save clears it.
    pub cancel_handled: bool,
    /// Why the status last changed, recorded in the order's history with the change.
    pub cause: Option<String>,
    /// For a refill, the order whose lost views it restores.
    pub refill_of: Option<i64>,
    /// For one run of a drip-feed order, that order.
    pub run_of: Option<i64>,
    /// How many runs a drip-feed order has (1 for any other).
    pub runs: u32,
    /// When the row last changed (the end, for an order that has ended).
    pub updated_at: i64,
    /// The database's clock when this row was read, in milliseconds.
    pub db_now: i64,
    /// What the worker's step learned for the dashboard, written with the next save.
    pub journal: Journal,
}

/// A drip-feed order ended by `settle_drips`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedDrip {
    pub id: i64,
    pub video: String,
    pub from: String,
    pub status: &'static str,
    pub refund: Money,
}

/// How a worker's write leaves an order.
#[derive(Debug, Clone, Copy)]
pub struct Next {
    /// When to run the next step, from the database's clock.
    pub after: Duration,
    /// Keep the lease (a step that continues right away) or release it.
    pub keep_lease: bool,
    /// Set the order's deadline this far from now.
    pub deadline_in: Option<Duration>,
    /// Money to give back to the key in the same transaction.
    pub refund: Money,
}

impl Next {
    pub fn after(after: Duration) -> Next {
        Next {
            after,
            keep_lease: false,
            deadline_in: None,
            refund: Money::ZERO,
        }
    }
}

/// Everything playpanel keeps. Implementations make each method one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a key's hash with an opening balance and returns its id.
    async fn create_key(&self, key_hash: &str, balance: Money) -> Result<i64>;

    async fn key_count(&self) -> Result<i64>;

    /// Succeeds when the database answers and its schema is the one this build ships.
    async fn ping(&self) -> Result<()>;

    /// The key with this hash, if it exists and is not revoked.
    async fn find_key(&self, key_hash: &str) -> Result<Option<KeyRecord>>;

    async fn has_open_order(&self, video: VideoId) -> Result<bool>;

    /// Debits the charge and stores the order, or neither. When the video already has an open
    /// order, the new one is refused (`refuse_if_open`) or queued behind it: its start count is
    /// then read when its turn comes, and the count seen now is kept only for display.
    async fn insert_order(
        &self,
        order: &NewOrder,
        refuse_if_open: bool,
    ) -> Result<std::result::Result<i64, AddRefusal>> {
        let batch = [(order.clone(), refuse_if_open)];
        let answers = self.insert_orders(&batch, &|| false).await?;
        answers
            .and_then(|answers| answers.into_iter().next())
            .ok_or_else(|| StoreError::Batch("a batch of one order came back empty".to_string()))
    }

    /// How many transactions writing orders are worth running at once: one for SQLite,
    /// which writes one at a time; several for a server.
    fn writers(&self) -> usize {
        1
    }

    /// Several `insert_order`s in one transaction (one commit for the lot), each with its
    /// own answer, in the batch's order. A database error fails the whole batch. Just before
    /// committing, `abandoned` is asked whether a client of the batch has gone: if so nothing is
    /// committed and `None` comes back, so that no one is charged for an order never announced.
    async fn insert_orders(
        &self,
        batch: &[(NewOrder, bool)],
        abandoned: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<Vec<std::result::Result<i64, AddRefusal>>>>;

    /// The orders among `ids` that belong to the key, in one query (refills are not orders).
    async fn orders(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>>;

    /// The refills among `ids` that belong to the key, in one query.
    async fn refills(&self, key_id: i64, ids: &[i64]) -> Result<Vec<OrderRecord>>;

    /// Leases up to `limit` due orders to `owner` for `lease`, in one statement. An order waiting
    /// behind an earlier open order on the same video is not due.
    async fn claim(&self, owner: &str, limit: u32, lease: Duration) -> Result<Vec<OrderRecord>>;

    /// Extends a claimed order's lease; false when the lease was lost.
    async fn renew(&self, order: &OrderRecord, lease: Duration) -> Result<bool>;

    /// Gives up every lease `owner` holds, so other workers may take the orders at once.
    async fn release(&self, owner: &str) -> Result<u64>;

    /// Wakes `wake` whenever another process adds an order, for as long as the process runs.
    /// Backends without such notifications return at once; workers then rely on their poll.
    async fn watch_new_orders(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let _ = wake;
    }

    /// Cancels an order that no one has started on, with a full refund, or marks it for the
    /// worker to cancel what it still can.
    async fn cancel_order(&self, key_id: i64, id: i64) -> Result<CancelOutcome>;

    /// Adds `amount` (negative to take away) to a key's balance with a ledger entry. `None`
    /// when there is no such key, or when the balance would go below zero.
    async fn adjust_balance(
        &self,
        key_hash: &str,
        amount: Money,
        kind: LedgerKind,
        note: &str,
    ) -> Result<Option<Money>>;

    async fn list_keys(&self) -> Result<Vec<KeySummary>>;

    /// Revokes the key with this hash; false when there is none (or it was revoked already).
    async fn revoke_key(&self, key_hash: &str) -> Result<bool>;

    /// A key's ledger, oldest first.
    async fn ledger(&self, key_id: i64) -> Result<Vec<LedgerEntry>>;

    /// An order (of any key) with its status history and its ledger entries.
    async fn order_history(
        &self,
        id: i64,
    ) -> Result<Option<(OrderRecord, Vec<OrderEvent>, Vec<LedgerEntry>)>>;

    /// Open orders by status, and how long (in milliseconds) the oldest due order has waited
    /// for a worker.
    async fn open_order_stats(&self) -> Result<(Vec<(String, i64)>, i64)>;

    /// How long, in milliseconds, the order that has waited longest for a worker has been
    /// claimable (due, not leased, first in its video's queue); zero when none is waiting.
    async fn oldest_due_ms(&self) -> Result<i64>;

    /// Marks a drip-feed order `In progress` once one of its runs is; true if it was not yet.
    async fn drip_started(&self, drip: i64) -> Result<bool>;

    /// Brings a drip-feed order's `remains` down by what its ended runs delivered.
    async fn drip_progress(&self, drip: i64) -> Result<()>;

    /// Ends each drip-feed order whose runs have all ended: `Completed` when they delivered
    /// everything, else `Partial` (or `Canceled`) with the refund of what did not come, once.
    async fn settle_drips(&self) -> Result<Vec<EndedDrip>>;

    /// Writes the worker's changes to a claimed order, fenced on its claim and owner, with the
    /// refund (if any) and the step's journal in the same transaction. Returns false, writing
    /// nothing, when the lease was lost or the order has already ended.
    async fn save(&self, order: &OrderRecord, next: Next) -> Result<bool>;

    /// Orders (of every kind) for the dashboard, newest first, on an index for each filter.
    async fn order_lines(&self, filter: &OrderFilter) -> Result<Vec<OrderLine>>;

    /// An order's play-count readings and provider calls, oldest first.
    async fn order_activity(&self, id: i64) -> Result<Vec<ActivityEntry>>;

    /// The latest `window` orders placed with a provider, newest first.
    async fn placed_orders(&self, window: u32) -> Result<Vec<PlacedOrder>>;

    /// Keys with ids above `after`, in id order, with their running totals and open orders.
    async fn key_lines(&self, after: i64, limit: u32) -> Result<Vec<KeyLine>>;
}

/// Opens the store a database URL names and brings its schema up to date.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// Whether the schema migrations applied to a database are exactly the ones this build ships.
fn schema_is_current(migrator: &sqlx::migrate::Migrator, applied: Option<i64>) -> Result<()> {
    let shipped = migrator.iter().map(|m| m.version).max();
    match (applied, shipped) {
        (Some(applied), Some(shipped)) if applied > shipped => {
            Err(StoreError::NewerSchema(applied))
        }
        (applied, Some(shipped)) if applied.unwrap_or(0) < shipped => Err(StoreError::OlderSchema),
        _ => Ok(()),
    }
}

/// Opens a store that must already exist: operator commands that read or change keys and
/// orders refuse a SQLite file that is not there, rather than create an empty one (a mistyped
/// `--database` would otherwise look like a database without keys).
pub async fn open_existing(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        use std::str::FromStr as _;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        let path = options.get_filename();
        if !path.exists() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
    }
    open(url).await
}

/// Applies the migrations a backend ships, refusing a database migrated by a newer playpanel.
async fn migrate<'a, A>(migrator: &sqlx::migrate::Migrator, pool: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    match migrator.run(pool).await {
        Err(sqlx::migrate::MigrateError::VersionMissing(version)) => {
            Err(StoreError::NewerSchema(version))
        }
        other => Ok(other?),
    }
}
