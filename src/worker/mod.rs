//! The worker: claims due orders and moves each one step along its way, from capturing the
//! start count to placing it with the provider, following delivery and verifying the result
//! against the public play count.
//!
//! The order row is the job. A claim leases it to one worker; every write is fenced on that
//! lease, so a worker that lost its lease writes nothing. Each step is short and leaves the row
//! saying what comes next, which is what lets another process pick up after a crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::{Placement, Provider, ProviderState};
use crate::domain::{Catalogue, Money, OrderStatus, Phase, Verdict, verdict};
use crate::store::{ActivityKind, Next, OrderRecord, Store};
use crate::tiktok::{Reader, Reading};

/// Timings and bounds of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Orders claimed per step; they are worked on concurrently.
    pub batch: u32,
    /// How long a claim holds an order; must outlast one step's outside calls.
    pub lease: Duration,
    /// The safety-net poll when nothing wakes the worker.
    pub idle_poll: Duration,
    /// How often to ask the provider about an order it is delivering.
    pub progress_interval: Duration,
    /// Play-count checks after the provider says done, before an order is judged short.
    pub verify_checks: u32,
    /// The time those checks are spread over (TikTok's counter lags behind delivery).
    pub verify_grace: Duration,
    /// How long the play count is watched when a placement's outcome is unknown.
    pub watch_window: Duration,
    /// First and longest wait between failed tries.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Failed tries of one phase before the order is ended with what is known.
    pub max_attempts: u32,
    /// Whether the provider refuses a second order for a link it is already delivering to.
    /// When it does, a placement whose outcome was lost is settled by asking again: a refusal
    /// for an active order proves the first call arrived, and an accepted order proves it
    /// did not.
    pub provider_refuses_duplicates: bool,
    /// How long a stopping worker lets the steps in flight finish.
    pub stop_deadline: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 32,
            lease: Duration::from_secs(120),
            idle_poll: Duration::from_secs(2),
            progress_interval: Duration::from_secs(30),
            verify_checks: 3,
            verify_grace: Duration::from_secs(15 * 60),
            watch_window: Duration::from_secs(24 * 3600),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(15 * 60),
            max_attempts: 12,
            provider_refuses_duplicates: false,
            stop_deadline: Duration::from_secs(20),
        }
    }
}

/// The cause recorded when a client's cancel stopped delivery at the provider; the order's
/// end then says so.
const CANCELED_AT_PROVIDER: &str = "canceled at the provider by the client";

/// Whether this process's worker is running and when it last claimed (successfully asked the
/// database for due orders), for `/readyz`.
#[derive(Debug, Default)]
pub struct Heartbeat {
    running: AtomicBool,
    last_claim_ms: AtomicU64,
}

impl Heartbeat {
    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn beat(&self) {
        self.last_claim_ms.store(Self::now_ms(), Ordering::Relaxed);
    }

    /// Time since the worker's last claim, or `None` when no worker runs in this process.
    pub fn since_last_claim(&self) -> Option<Duration> {
        if !self.running.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_claim_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(Self::now_ms().saturating_sub(last)))
    }

    /// Marks the worker as running (or not) from now.
    pub fn set_running(&self, running: bool) {
        self.beat();
        self.running.store(running, Ordering::Relaxed);
    }
}

/// Moves orders along. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    reader: Arc<Reader>,
    provider: Arc<dyn Provider>,
    catalogue: Arc<Catalogue>,
    config: Arc<WorkerConfig>,
    owner: Arc<str>,
    wake: Arc<Notify>,
    heartbeat: Arc<Heartbeat>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        reader: Arc<Reader>,
        provider: Arc<dyn Provider>,
        catalogue: Arc<Catalogue>,
        config: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Worker {
        let mut tag = [0u8; 4];
        let _ = getrandom::fill(&mut tag);
        let owner = format!("{}-{}", std::process::id(), hex::encode(tag));
        Worker {
            store,
            reader,
            provider,
            catalogue,
            config: Arc::new(config),
            owner: owner.into(),
            wake,
            heartbeat: Arc::default(),
        }
    }

    /// This worker's heartbeat (shared with its clones).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// Another worker over the same store and outside systems, with a lease owner of its own,
    /// as another process would be.
    pub fn with_new_owner(&self) -> Worker {
        let mut tag = [0u8; 4];
        let _ = getrandom::fill(&mut tag);
        Worker {
            owner: format!("{}-{}", std::process::id(), hex::encode(tag)).into(),
            ..self.clone()
        }
    }

    /// Runs steps until cancelled: right away while there is work, otherwise when woken by a
    /// new order or after the idle poll. On cancellation no new order is claimed; the steps in
    /// flight get `stop_deadline` to finish, and whatever is still held is then released so
    /// other workers can take it over at once.
    pub async fn run(self, cancel: CancellationToken) {
        info!(worker = %self.owner, "worker started");
        self.heartbeat.set_running(true);
        let running = self.clone();
        let mut task = tokio::spawn(running.run_steps(cancel.clone()));
        tokio::select! {
            _ = &mut task => {}
            _ = cancel.cancelled() => {
                if tokio::time::timeout(self.config.stop_deadline, &mut task).await.is_err() {
                    task.abort();
                    warn!(worker = %self.owner, "steps still running at the stop deadline");
                }
            }
        }
        match self.store.release(&self.owner).await {
            Ok(0) => {}
            Ok(n) => info!(worker = %self.owner, released = n, "released held orders"),
            Err(e) => warn!(error = %e, "could not release held orders; their leases will expire"),
        }
        self.heartbeat.set_running(false);
        info!(worker = %self.owner, "worker stopped");
    }

    async fn run_steps(self, cancel: CancellationToken) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            let pause = match self.step().await {
                Ok(0) => self.config.idle_poll,
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %e, "worker step failed; the database may be unreachable");
                    backoff(&self.config, failures)
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Claims the due orders (up to the batch size) and advances each by one step. Returns how
    /// many were claimed. Tests call this directly instead of waiting for the loop.
    pub async fn step(&self) -> crate::store::Result<usize> {
        let claimed = self
            .store
            .claim(&self.owner, self.config.batch, self.config.lease)
            .await?;
        self.heartbeat.beat();
        let count = claimed.len();
        if count == 0 {
            // Nothing due: end any drip-feed order whose runs all ended without it being
            // ended (its runs were canceled, or a worker died in between).
            self.settle_drips().await?;
        }
        let mut tasks = JoinSet::new();
        for order in claimed {
            let worker = self.clone();
            tasks.spawn(async move { worker.advance(order).await });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "could not save an order's step"),
                Err(e) => warn!(error = %e, "an order's step stopped unexpectedly"),
            }
        }
        Ok(count)
    }

    /// Steps until no order is due: for tests and demos that want every order moved as far
    /// as it can go now.
    pub async fn run_until_idle(&self, max_steps: usize) -> crate::store::Result<usize> {
        let mut total = 0;
        for _ in 0..max_steps {
            let n = self.step().await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    /// Moves one order by one step, renewing its lease while the step runs.
    async fn advance(&self, order: OrderRecord) -> crate::store::Result<()> {
        let renewals = async {
            let every = self.config.lease / 3;
            if every.is_zero() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(every).await;
                match self.store.renew(&order, self.config.lease).await {
                    Ok(true) => {}
                    // Lost: the step's writes are fenced and will change nothing.
                    Ok(false) => return std::future::pending().await,
                    Err(e) => warn!(order.id = order.id, error = %e, "lease renewal failed"),
                }
            }
        };
        tokio::select! {
            done = self.step_once(order.clone()) => done,
            never = renewals => never,
        }
    }

    async fn step_once(&self, order: OrderRecord) -> crate::store::Result<()> {
        if order.cancel_requested {
            return self.cancel_requested(order).await;
        }
        match order.phase {
            Phase::Start => self.capture_start(order).await,
            Phase::Place => self.place(order).await,
            Phase::Placing => self.placement_in_doubt(order).await,
            Phase::Deliver => self.follow_delivery(order).await,
            Phase::Verify => self.verify(order).await,
            Phase::Watch => self.watch(order).await,
            // Never claimed: a drip-feed order moves through its runs.
            Phase::Drip | Phase::Done => Ok(()),
        }
    }

    /// Acts on a client's cancel: before placement the order ends with a full refund; while
    /// delivering, the provider is asked to stop and what it delivered is verified and charged
    /// as usual; a placement in doubt or a verification under way simply goes on.
    async fn cancel_requested(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        order.cancel_requested = false;
        order.cancel_handled = true;
        match order.phase {
            Phase::Start | Phase::Place => self.cancel(order, "canceled by the client").await,
            Phase::Deliver => {
                let provider_order = order.provider_order.clone().unwrap_or_default();
                let asked = self.provider.cancel(&provider_order).await;
                let journal = &mut order.journal;
                match &asked {
                    Ok(true) => journal.record(ActivityKind::Cancel, "canceled", None),
                    Ok(false) => journal.record(ActivityKind::Cancel, "not canceled", None),
                    Err(why) => journal.provider_failed(ActivityKind::Cancel, "failed", why),
                }
                match asked {
                    Ok(true) => {
                        order.checks = 0;
                        self.move_to(order, Phase::Verify, Duration::ZERO, CANCELED_AT_PROVIDER)
                            .await
                    }
                    Ok(false) => {
                        order.last_error = Some("the provider did not cancel the order".into());
                        self.store
                            .save(&order, Next::after(Duration::ZERO))
                            .await
                            .map(drop)
                    }
                    Err(why) => {
                        // Asked again at the next step.
                        order.cancel_requested = true;
                        order.cancel_handled = false;
                        self.retry(
                            order,
                            format!("could not ask the provider to cancel: {why}"),
                        )
                        .await
                    }
                }
            }
            _ => self
                .store
                .save(&order, Next::after(Duration::ZERO))
                .await
                .map(drop),
        }
    }

    /// Reads the play count the delivery will be measured from.
    async fn capture_start(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        // A fresh read: an order that waited behind another on the same video must start
        // from the count after that delivery.
        let reading = self.reader.read_fresh(order.video_id).await;
        note_reading(&mut order, &reading);
        match reading {
            Reading::Count(count) => {
                order.start_count = Some(count);
                // Whatever was seen while the order waited is no reading of its delivery.
                order.last_count = None;
                order.attempts = 0;
                self.move_to(order, Phase::Place, Duration::ZERO, "start count read")
                    .await
            }
            Reading::Private => self.cancel(order, "the video is private").await,
            Reading::Region => self.cancel(order, "the video is not available here").await,
            Reading::Gone => self.cancel(order, "the video does not exist").await,
            Reading::Blocked(why) | Reading::Unavailable(why) => {
                if order.attempts + 1 >= self.config.max_attempts {
                    let why = format!("the start count could not be read: {why}");
                    return self.cancel(order, &why).await;
                }
                self.retry(order, format!("play count not readable: {why}"))
                    .await
            }
        }
    }

    /// Hands the order to the provider, recording first that a call is about to go out.
    async fn place(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        let Some(service) = self.catalogue.get(order.service_id) else {
            return self.cancel(order, "the service is no longer offered").await;
        };
        let upstream_service = service.upstream_service;

        let from = order.status;
        // From here until the answer is saved, a crash leaves the order in `Placing`, which a
        // later claim treats as "maybe placed" and never places again.
        order.phase = Phase::Placing;
        order.status = Phase::Placing.open_status();
        order.cause = Some("being placed with the provider".to_string());
        order.journal.upstream_service = Some(upstream_service);
        let held = Next {
            keep_lease: true,
            ..Next::after(Duration::ZERO)
        };
        if !self.store.save(&order, held).await? {
            return Ok(());
        }
        // Written; what follows is for the save after the call.
        order.journal.entries.clear();

        let placement = self
            .provider
            .place(upstream_service, &order.link, order.quantity)
            .await;
        note_placement(&mut order, &placement);
        match placement {
            Placement::Placed(id) => {
                info!(order.id = order.id, video.id = %order.video_id, from = %from,
                    to = %OrderStatus::InProgress, provider.order = %id,
                    "order placed with the provider");
                self.placed(order, id).await
            }
            Placement::Refused(why) => {
                self.cancel(order, &format!("the provider refused the order: {why}"))
                    .await
            }
            Placement::Busy(why) | Placement::NotSent(why) => {
                // Certainly not placed: back to waiting for placement.
                order.phase = Phase::Place;
                order.status = Phase::Place.open_status();
                if order.attempts + 1 >= self.config.max_attempts {
                    return self
                        .cancel(order, &format!("the provider kept failing: {why}"))
                        .await;
                }
                self.retry(order, why).await
            }
            Placement::Unknown(why) => self.start_watch(order, why).await,
        }
    }

    /// Records the provider's order id and starts following the delivery.
    async fn placed(&self, mut order: OrderRecord, id: String) -> crate::store::Result<()> {
        order.provider_order = Some(id);
        order.attempts = 0;
        order.last_error = None;
        let after = self.config.progress_interval;
        self.move_to(order, Phase::Deliver, after, "placed with the provider")
            .await
    }

    /// An order found in `Placing`: an earlier worker sent the placement and died (or lost its
    /// lease) before saving the answer. It is never placed blindly again.
    async fn placement_in_doubt(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        let lost = "the placement's outcome was not recorded (worker stopped mid-call)";
        let Some(start) = order.start_count else {
            return self.cancel(order, "no start count was recorded").await;
        };

        // Views already on the video prove the placement arrived.
        let reading = self.reader.read_fresh(order.video_id).await;
        note_reading(&mut order, &reading);
        let count = match reading {
            Reading::Count(count) => count,
            _ => return self.start_watch(order, lost.to_string()).await,
        };
        order.last_count = Some(count);
        if count > start || !self.config.provider_refuses_duplicates {
            return self.start_watch(order, lost.to_string()).await;
        }

        // No views yet: ask again. This provider refuses a second order on a link it is
        // delivering to, so its answer tells whether the first call arrived.
        let Some(service) = self.catalogue.get(order.service_id) else {
            return self.start_watch(order, lost.to_string()).await;
        };
        let placement = self
            .provider
            .place(service.upstream_service, &order.link, order.quantity)
            .await;
        note_placement(&mut order, &placement);
        match placement {
            Placement::Placed(id) => {
                info!(order.id = order.id, video.id = %order.video_id, provider.order = %id,
                    "the lost placement had not arrived; placed now, once");
                self.placed(order, id).await
            }
            Placement::Busy(why) if why.to_ascii_lowercase().contains("active order") => {
                let why = format!("{lost}; the provider has an active order on the link");
                self.start_watch(order, why).await
            }
            Placement::Refused(why) => {
                self.cancel(order, &format!("the provider refused the order: {why}"))
                    .await
            }
            Placement::Busy(why) | Placement::NotSent(why) | Placement::Unknown(why) => {
                let why = format!("{lost}; asking again failed: {why}");
                self.start_watch(order, why).await
            }
        }
    }

    async fn start_watch(&self, mut order: OrderRecord, why: String) -> crate::store::Result<()> {
        warn!(order.id = order.id, video.id = %order.video_id, cause = %why,
            "placement outcome unknown; judging delivery by the play count alone");
        order.phase = Phase::Watch;
        order.status = OrderStatus::InProgress;
        order.cause = Some(why.clone());
        order.last_error = Some(why);
        order.attempts = 0;
        let next = Next {
            deadline_in: Some(self.config.watch_window),
            ..Next::after(self.config.progress_interval)
        };
        self.store.save(&order, next).await.map(drop)
    }

    /// Asks the provider how far it has come.
    async fn follow_delivery(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        let Some(provider_order) = order.provider_order.clone() else {
            return self
                .start_watch(order, "no provider order id was recorded".into())
                .await;
        };
        let progress = match self.provider.progress(&provider_order).await {
            Ok(progress) => progress,
            Err(why) => {
                order
                    .journal
                    .provider_failed(ActivityKind::Progress, "failed", &why);
                if order.attempts + 1 >= self.config.max_attempts {
                    return self.start_watch(order, why).await;
                }
                return self.retry(order, why).await;
            }
        };

        order.attempts = 0;
        let known_remains = order.remains;
        if let Some(remains) = progress.remains {
            order.remains = remains.min(order.quantity);
        }
        // An answer that changes nothing is not worth a row: an order is asked every
        // progress interval for as long as it is delivered.
        let ongoing = matches!(
            progress.state,
            ProviderState::Pending | ProviderState::InProgress
        );
        if !ongoing || order.remains != known_remains {
            let state = match progress.state {
                ProviderState::Pending => "pending",
                ProviderState::InProgress => "in progress",
                ProviderState::Done => "done",
                ProviderState::Canceled => "canceled",
            };
            let remains = progress.remains;
            order.journal.record(ActivityKind::Progress, state, remains);
        }
        order.journal.provider_done = progress.state == ProviderState::Done;
        match progress.state {
            ProviderState::Pending | ProviderState::InProgress => {
                let next = Next::after(self.config.progress_interval);
                self.store.save(&order, next).await.map(drop)
            }
            ProviderState::Done | ProviderState::Canceled => {
                order.checks = 0;
                let cause = if progress.state == ProviderState::Done {
                    "the provider reports the order done"
                } else {
                    "the provider canceled the order"
                };
                self.move_to(order, Phase::Verify, Duration::ZERO, cause)
                    .await
            }
        }
    }

    /// Reads the play count after delivery: `Completed` only if it reached the target, after
    /// a few re-checks spread over the grace period; otherwise short, with a refund.
    async fn verify(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        let Some(start) = order.start_count else {
            return self.cancel(order, "no start count was recorded").await;
        };
        let reading = self.reader.read_fresh(order.video_id).await;
        note_reading(&mut order, &reading);
        match reading {
            Reading::Count(count) => {
                order.last_count = Some(count);
                order.attempts = 0;
                match verdict(start, order.quantity, count) {
                    Verdict::Delivered => {
                        order.journal.target_seen = true;
                        self.complete(order).await
                    }
                    Verdict::Short { remains } => {
                        order.checks += 1;
                        order.remains = remains;
                        if order.checks >= self.config.verify_checks.max(1) {
                            return self.end_short(order, remains).await;
                        }
                        let wait = self.config.verify_grace / self.config.verify_checks.max(1);
                        self.store.save(&order, Next::after(wait)).await.map(drop)
                    }
                }
            }
            other => self.unreadable_while_verifying(order, other).await,
        }
    }

    /// Judges an order whose placement is in doubt by the play count alone.
    async fn watch(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        let Some(start) = order.start_count else {
            return self.cancel(order, "no start count was recorded").await;
        };
        let past_deadline = order.deadline_at.is_none_or(|d| order.db_now >= d);
        let reading = self.reader.read_fresh(order.video_id).await;
        // The video is read every progress interval for the whole watch window: only a count
        // that moved (or a failed read) is worth a row.
        if !matches!(reading, Reading::Count(count) if Some(count) == order.last_count) {
            note_reading(&mut order, &reading);
        }
        match reading {
            Reading::Count(count) => {
                order.last_count = Some(count);
                order.attempts = 0;
                match verdict(start, order.quantity, count) {
                    Verdict::Delivered => {
                        order.journal.target_seen = true;
                        self.complete(order).await
                    }
                    Verdict::Short { remains } if past_deadline => {
                        self.end_short(order, remains).await
                    }
                    Verdict::Short { remains } => {
                        order.remains = remains;
                        let next = Next::after(self.config.progress_interval);
                        self.store.save(&order, next).await.map(drop)
                    }
                }
            }
            other => self.unreadable_while_verifying(order, other).await,
        }
    }

    /// A play count that cannot be read never decides an order. While TikTok refuses or fails
    /// to answer, the read is retried with backoff for as long as that lasts. A video that
    /// stays private, region-blocked or missing for the bound on tries ends the order with the
    /// best evidence there is: the last count read, else the provider's own report (a client
    /// cannot win a refund by hiding the video after delivery), else, when nothing at all is
    /// known of a placement in doubt, a cancellation with a full refund.
    async fn unreadable_while_verifying(
        &self,
        mut order: OrderRecord,
        reading: Reading,
    ) -> crate::store::Result<()> {
        let why = match reading {
            Reading::Blocked(why) | Reading::Unavailable(why) => {
                return self
                    .retry(order, format!("play count not readable: {why}"))
                    .await;
            }
            Reading::Private => "the video became private",
            Reading::Region => "the video is not available here",
            Reading::Gone => "the video no longer exists",
            Reading::Count(_) => "unexpected count",
        };
        if order.attempts + 1 < self.config.max_attempts {
            return self
                .retry(order, format!("play count not readable: {why}"))
                .await;
        }

        order.last_error = Some(format!("not verified: {why}"));
        let remains = match (order.start_count, order.last_count, order.phase) {
            (Some(start), Some(last), _) => match verdict(start, order.quantity, last) {
                Verdict::Delivered => 0,
                Verdict::Short { remains } => remains,
            },
            // The provider reported the order done; `remains` holds what it said was left.
            (_, None, Phase::Verify) => order.remains,
            _ => order.quantity,
        };
        if remains == 0 {
            self.complete(order).await
        } else {
            self.end_short(order, remains).await
        }
    }

    async fn complete(&self, mut order: OrderRecord) -> crate::store::Result<()> {
        order.remains = 0;
        self.finish(
            order,
            OrderStatus::Completed,
            Money::ZERO,
            "play count reached the target",
        )
        .await
    }

    /// Ends an order that is `remains` views short: `Partial` with a proportional refund, or
    /// `Canceled` with a full one when nothing was delivered.
    async fn end_short(&self, mut order: OrderRecord, remains: u64) -> crate::store::Result<()> {
        let remains = remains.min(order.quantity);
        if remains >= order.quantity {
            return self.cancel(order, "no delivered views were seen").await;
        }
        order.remains = remains;
        let refund = order.charge.refund_share(remains, order.quantity);
        // A client's cancel stopped the delivery: say so, rather than blame the provider.
        let cause = if order.cancel_handled || order.cause.as_deref() == Some(CANCELED_AT_PROVIDER)
        {
            "ended after the client asked to cancel; charged for the views delivered"
        } else {
            "play count fell short of the target"
        };
        self.finish(order, OrderStatus::Partial, refund, cause)
            .await
    }

    async fn cancel(&self, mut order: OrderRecord, why: &str) -> crate::store::Result<()> {
        order.remains = order.quantity;
        order.last_error = Some(why.to_string());
        let refund = order
            .charge
            .checked_sub(order.refund)
            .unwrap_or(Money::ZERO);
        self.finish(order, OrderStatus::Canceled, refund, why).await
    }

    async fn finish(
        &self,
        mut order: OrderRecord,
        status: OrderStatus,
        refund: Money,
        cause: &str,
    ) -> crate::store::Result<()> {
        let from = order.status;
        let short = order.remains;
        order.status = status;
        order.phase = Phase::Done;
        order.cause = Some(cause.to_string());
        let next = Next {
            refund,
            ..Next::after(Duration::ZERO)
        };
        if self.store.save(&order, next).await? {
            info!(order.id = order.id, video.id = %order.video_id, from = %from, to = %status,
                refund = %refund, cause, "order ended");
            let outcome = match status {
                OrderStatus::Completed => "completed",
                OrderStatus::Partial => "partial",
                _ => "canceled",
            };
            metrics::counter!("playpanel_orders_ended_total", "outcome" => outcome).increment(1);
            if status == OrderStatus::Partial {
                metrics::counter!("playpanel_views_short_total").increment(short);
            }
            if let Some(drip) = order.run_of {
                self.store.drip_progress(drip).await?;
                self.settle_drips().await?;
            }
        }
        Ok(())
    }

    async fn move_to(
        &self,
        mut order: OrderRecord,
        phase: Phase,
        after: Duration,
        cause: &str,
    ) -> crate::store::Result<()> {
        let from = order.status;
        order.phase = phase;
        order.status = phase.open_status();
        order.cause = Some(cause.to_string());
        if !self.store.save(&order, Next::after(after)).await? {
            return Ok(());
        }
        if from != order.status {
            info!(order.id = order.id, video.id = %order.video_id, from = %from,
                to = %order.status, cause, "order status changed");
        }
        if let (Some(drip), OrderStatus::InProgress) = (order.run_of, order.status)
            && self.store.drip_started(drip).await?
        {
            info!(order.id = drip, video.id = %order.video_id, from = %OrderStatus::Pending,
                to = %OrderStatus::InProgress, cause = "a run started", "order status changed");
        }
        Ok(())
    }

    /// Ends the drip-feed orders whose runs have all ended, logging each one once.
    async fn settle_drips(&self) -> crate::store::Result<()> {
        for drip in self.store.settle_drips().await? {
            info!(order.id = drip.id, video.id = %drip.video, from = %drip.from,
                to = drip.status, refund = %drip.refund, cause = "every run has ended",
                "order ended");
        }
        Ok(())
    }

    async fn retry(&self, mut order: OrderRecord, why: String) -> crate::store::Result<()> {
        order.attempts += 1;
        let wait = backoff(&self.config, order.attempts);
        warn!(order.id = order.id, video.id = %order.video_id, attempt = order.attempts,
            wait_ms = wait.as_millis() as u64, cause = %why, "order step will be retried");
        order.last_error = Some(why);
        self.store.save(&order, Next::after(wait)).await.map(drop)
    }
}

/// Puts a play-count reading in the order's journal.
fn note_reading(order: &mut OrderRecord, reading: &Reading) {
    let journal = &mut order.journal;
    match reading {
        Reading::Count(count) => journal.record(ActivityKind::Reading, "ok", Some(*count)),
        Reading::Blocked(why) | Reading::Unavailable(why) => {
            journal.record_with(ActivityKind::Reading, reading.class(), None, why)
        }
        other => journal.record(ActivityKind::Reading, other.class(), None),
    }
}

/// Puts a placement's outcome in the order's journal; anything but an accepted order counts as
/// a failure of the provider.
fn note_placement(order: &mut OrderRecord, placement: &Placement) {
    let journal = &mut order.journal;
    match placement {
        Placement::Placed(id) => journal.record_with(ActivityKind::Placement, "placed", None, id),
        Placement::Refused(why)
        | Placement::Busy(why)
        | Placement::NotSent(why)
        | Placement::Unknown(why) => {
            journal.provider_failed(ActivityKind::Placement, placement.label(), why)
        }
    }
}

/// Exponential backoff with jitter: between half and all of `base * 2^(attempt-1)`, capped.
fn backoff(config: &WorkerConfig, attempt: u32) -> Duration {
    let exp = config
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let full = exp.min(config.retry_max);
    let jitter = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    full.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = WorkerConfig {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_secs(5) && first <= Duration::from_secs(10));
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(20) && third <= Duration::from_secs(40));
            let late = backoff(&config, 40);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
        }
    }
}
