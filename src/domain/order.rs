//! Order states, the worker's phases inside them, and the rule that decides a delivery.

use std::fmt;
use std::str::FromStr;

/// The status a client sees, with the panel API's exact words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    InProgress,
    Completed,
    Partial,
    Canceled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "Pending",
            OrderStatus::InProgress => "In progress",
            OrderStatus::Completed => "Completed",
            OrderStatus::Partial => "Partial",
            OrderStatus::Canceled => "Canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Completed | OrderStatus::Partial | OrderStatus::Canceled
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "Pending" => OrderStatus::Pending,
            "In progress" => OrderStatus::InProgress,
            "Completed" => OrderStatus::Completed,
            "Partial" => OrderStatus::Partial,
            "Canceled" => OrderStatus::Canceled,
            other => return Err(format!("unknown order status {other:?}")),
        })
    }
}

/// Where an order is in the worker's hands. The client sees only [`OrderStatus`]; the phase
/// says what the next step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The start count is not known yet (TikTok could not be read when the order came in).
    Start,
    /// Ready to be placed with the provider.
    Place,
    /// A placement call was started. Found in this phase by a later claim, it means the call's
    /// outcome was never recorded, so the order must not be placed again.
    Placing,
    /// Placed; the provider's progress is being followed.
    Deliver,
    /// The provider says it is done; the play count is being checked.
    Verify,
    /// The placement's outcome is unknown: the play count alone decides, until a deadline.
    Watch,
    /// A drip-feed order, worked through its runs and ended when they all have.
    Drip,
    /// Terminal.
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Place => "place",
            Phase::Placing => "placing",
            Phase::Deliver => "deliver",
            Phase::Verify => "verify",
            Phase::Watch => "watch",
            Phase::Drip => "drip",
            Phase::Done => "done",
        }
    }

    /// The status clients see for an order that has not ended.
    pub fn open_status(self) -> OrderStatus {
        match self {
            Phase::Start | Phase::Place | Phase::Drip => OrderStatus::Pending,
            _ => OrderStatus::InProgress,
        }
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "start" => Phase::Start,
            "place" => Phase::Place,
            "placing" => Phase::Placing,
            "deliver" => Phase::Deliver,
            "verify" => Phase::Verify,
            "watch" => Phase::Watch,
            "drip" => Phase::Drip,
            "done" => Phase::Done,
            other => return Err(format!("unknown order phase {other:?}")),
        })
    }
}

/// What a play-count reading says about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The count reached `start_count + quantity`.
    Delivered,
    /// Views are still owed; `remains` is at least 1 and at most `quantity`.
    Short { remains: u64 },
}

/// Compares a reading with the target: `Completed` needs `final >= start + quantity`; anything
/// less leaves `start + quantity - final` owed, never more than `quantity` (a count that fell
/// below the start does not make the client owe more than the order).
pub fn verdict(start_count: u64, quantity: u64, final_count: u64) -> Verdict {
    let target = start_count.saturating_add(quantity);
    if final_count >= target {
        Verdict::Delivered
    } else {
        Verdict::Short {
            remains: (target - final_count).min(quantity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_the_target() {
        assert_eq!(verdict(1000, 500, 1500), Verdict::Delivered);
        assert_eq!(verdict(1000, 500, 9000), Verdict::Delivered);
        assert_eq!(verdict(1000, 500, 1400), Verdict::Short { remains: 100 });
        assert_eq!(verdict(1000, 500, 1000), Verdict::Short { remains: 500 });
        assert_eq!(verdict(1000, 500, 10), Verdict::Short { remains: 500 });
        assert_eq!(verdict(u64::MAX, 5, u64::MAX), Verdict::Delivered);
    }

    #[test]
    fn names_round_trip() {
        for s in ["Pending", "In progress", "Completed", "Partial", "Canceled"] {
            assert_eq!(OrderStatus::from_str(s).unwrap().as_str(), s);
        }
        for p in [
            "start", "place", "placing", "deliver", "verify", "watch", "drip", "done",
        ] {
            assert_eq!(Phase::from_str(p).unwrap().as_str(), p);
        }
    }
}
