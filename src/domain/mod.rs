//! The order domain: money, services, order states and the verification rule.
//!
//! Nothing here knows about HTTP, SQL or the network; values are checked when they are built so
//! that the rest of the service only ever sees valid ones.

pub mod catalogue;
pub mod money;
pub mod order;

pub use catalogue::{Catalogue, Service};
pub use money::Money;
pub use order::{OrderStatus, Phase, Verdict, verdict};
