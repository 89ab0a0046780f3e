//! Delivery providers: who actually brings the views. playpanel places an order with a provider
//! and follows its progress; it never generates views itself.

mod upstream;

use async_trait::async_trait;

pub use upstream::UpstreamPanel;

/// The outcome of asking a provider to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Accepted, with the provider's order id.
    Placed(String),
    /// Refused for good (bad link, unknown service, quantity out of range...).
    Refused(String),
    /// Refused for now (no funds at the provider, an active order on the link): try later.
    Busy(String),
    /// The request certainly did not reach the provider (no connection): safe to try again.
    NotSent(String),
    /// The request may have reached the provider but no answer was read: it must not be
    /// repeated, since the provider may already be delivering.
    Unknown(String),
}

impl Placement {
    /// The outcome, as metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            Placement::Placed(_) => "placed",
            Placement::Refused(_) => "refused",
            Placement::Busy(_) => "busy",
            Placement::NotSent(_) => "not_sent",
            Placement::Unknown(_) => "unknown",
        }
    }
}

/// How far a provider says it has come with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderState {
    Pending,
    InProgress,
    /// The provider considers the order finished (fully or partly); verification decides.
    Done,
    /// The provider dropped the order.
    Canceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub state: ProviderState,
    /// Views the provider says are still to come, when it says.
    pub remains: Option<u64>,
}

/// A service that delivers views for a link.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    async fn place(&self, service: u64, link: &str, quantity: u64) -> Placement;

    /// The provider's progress on one order; `Err` is a failure to ask, to be retried.
    async fn progress(&self, provider_order: &str) -> Result<Progress, String>;

    /// Asks the provider to stop delivering. `Ok(true)` when it accepted, `Ok(false)` when it
    /// does not cancel this order, `Err` when it could not be asked.
    async fn cancel(&self, provider_order: &str) -> Result<bool, String>;
}
