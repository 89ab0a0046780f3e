//! `add`: a pasted link, a service and a quantity (and perhaps drip-feed runs) checked,
//! priced and stored, with the video's play count read as the start count.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::warn;

use super::params::Params;
use super::{ApiError, ApiState, fresh, texts};
use crate::domain::Money;
use crate::store::{AddRefusal, KeyRecord, NewOrder};
use crate::tiktok::link::{self, Link, VideoId};
use crate::tiktok::{Reading, Resolved};

/// The most runs one drip-feed order may have, and the longest interval between them.
const MAX_RUNS: u32 = 1000;
const MAX_INTERVAL_MINUTES: u64 = 7 * 24 * 60;

/// `runs` and `interval` (minutes) of a drip-feed order; one run when absent (clients send
/// empty, 0 or 1 for a plain order).
fn dripfeed(params: &Params) -> Result<(u32, Duration), ApiError> {
    let incorrect = || ApiError::panel(texts::INCORRECT_REQUEST);
    let runs = match params.get_nonempty("runs").map(str::trim) {
        None | Some("0") | Some("1") => return Ok((1, Duration::ZERO)),
        Some(runs) => runs.parse::<u32>().map_err(|_| incorrect())?,
    };
    if runs > MAX_RUNS {
        return Err(ApiError::Panel(format!(
            "Runs more than maximum {MAX_RUNS}"
        )));
    }
    let minutes = match params.get_nonempty("interval").map(str::trim) {
        None => 0,
        Some(minutes) => minutes.parse::<u64>().map_err(|_| incorrect())?,
    };
    if minutes > MAX_INTERVAL_MINUTES {
        return Err(ApiError::Panel(format!(
            "Interval more than maximum {MAX_INTERVAL_MINUTES}"
        )));
    }
    // Other orders on the video wait behind the runs, so a drip-feed may not span more than
    // the longest interval.
    if minutes.saturating_mul(u64::from(runs - 1)) > MAX_INTERVAL_MINUTES {
        return Err(ApiError::Panel(format!(
            "Drip-feed longer than {MAX_INTERVAL_MINUTES} minutes from first run to last"
        )));
    }
    Ok((runs, Duration::from_secs(minutes * 60)))
}

/// A quantity as clients send it: digits, perhaps signed, perhaps too large for any service.
enum QuantityInput {
    Value(u64),
    BelowZero,
    TooLarge,
}

fn parse_quantity(raw: &str) -> Option<QuantityInput> {
    let raw = raw.trim();
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        let is_zero = digits.bytes().all(|b| b == b'0');
        return Some(if is_zero {
            QuantityInput::Value(0)
        } else {
            QuantityInput::BelowZero
        });
    }
    Some(match digits.parse::<u64>() {
        Ok(v) => QuantityInput::Value(v),
        Err(_) => QuantityInput::TooLarge,
    })
}

pub(super) async fn add(
    state: &ApiState,
    key: &KeyRecord,
    params: &Params,
) -> Result<Value, ApiError> {
    let (Some(service), Some(link), Some(quantity)) = (
        params.get_nonempty("service"),
        params.get_nonempty("link"),
        params.get_nonempty("quantity"),
    ) else {
        return Err(ApiError::panel(texts::INCORRECT_REQUEST));
    };
    let (runs, interval) = dripfeed(params)?;

    let service = service
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(|id| state.catalogue.get(id))
        .ok_or_else(|| ApiError::panel(texts::INCORRECT_SERVICE))?;
    if runs > 1 && !service.dripfeed {
        return Err(ApiError::panel(texts::DRIPFEED_UNAVAILABLE));
    }

    let quantity = match parse_quantity(quantity) {
        None => return Err(ApiError::panel(texts::INCORRECT_REQUEST)),
        Some(QuantityInput::BelowZero) => 0,
        Some(QuantityInput::TooLarge) => u64::MAX,
        Some(QuantityInput::Value(v)) => v,
    };
    if quantity < service.min {
        return Err(ApiError::Panel(format!(
            "Quantity less than minimal {}",
            service.min
        )));
    }
    if quantity > service.max {
        return Err(ApiError::Panel(format!(
            "Quantity more than maximum {}",
            service.max
        )));
    }
    // A drip-feed order is charged on all its runs.
    let charge = Money::charge_for(service.rate, quantity.saturating_mul(u64::from(runs)))
        .ok_or_else(|| ApiError::Panel(format!("Quantity more than maximum {}", service.max)))?;
    // Refuse early, before reading the page, when the balance cannot cover the charge. The
    // key's balance may be remembered from a few seconds ago, so a short one is read afresh
    // before refusing (a top-up may have come since); the debit itself is checked atomically.
    if key.balance < charge && fresh(state.store.as_ref(), key).await?.balance < charge {
        return Err(ApiError::panel(texts::NOT_ENOUGH_FUNDS));
    }

    let video = tokio::time::timeout(state.config.add_read_budget, video_of(state, link))
        .await
        .map_err(|_| ApiError::panel(texts::SHORT_LINK_UNRESOLVED))??;
    let refuse = state.config.refuse_same_video;
    if refuse && state.store.has_open_order(video).await? {
        return Err(ApiError::panel(texts::ACTIVE_ORDER));
    }

    // A page TikTok will not show right now does not lose the order: it is accepted and the
    // worker reads the start count before anything is placed.
    let budget = state.config.add_read_budget;
    let start_count = match tokio::time::timeout(budget, state.reader.read(video)).await {
        Ok(Reading::Count(count)) => Some(count),
        Ok(Reading::Private) => return Err(ApiError::panel(texts::VIDEO_PRIVATE)),
        Ok(Reading::Region) => return Err(ApiError::panel(texts::VIDEO_REGION)),
        Ok(Reading::Gone) => return Err(ApiError::panel(texts::VIDEO_NOT_FOUND)),
        Ok(Reading::Blocked(why) | Reading::Unavailable(why)) => {
            warn!(video.id = %video, cause = %why, "start count deferred to the worker");
            None
        }
        Err(_) => {
            warn!(video.id = %video, "start count deferred to the worker: TikTok was slow");
            None
        }
    };

    let order = NewOrder {
        key_id: key.id,
        service_id: service.id,
        video_id: video,
        link: link::canonical_url(video),
        quantity,
        charge,
        start_count,
        refill_of: None,
        runs,
        interval,
    };
    match state.adds.insert(order, refuse).await? {
        Ok(id) => {
            state.wake.notify_one();
            tracing::info!(order.id = id, video.id = %video, to = "Pending", "order accepted");
            Ok(json!({ "order": id.to_string() }))
        }
        Err(AddRefusal::NotEnoughFunds) => Err(ApiError::panel(texts::NOT_ENOUGH_FUNDS)),
        Err(AddRefusal::ActiveOrder) => Err(ApiError::panel(texts::ACTIVE_ORDER)),
    }
}

/// The video a pasted link names, following a short link's redirect when needed.
async fn video_of(state: &ApiState, raw: &str) -> Result<VideoId, ApiError> {
    match link::parse_link(raw) {
        Ok(Link::Video(id)) => Ok(id),
        Ok(Link::Short(short)) => match state.reader.resolve(&short).await {
            Resolved::Video(id) => Ok(id),
            Resolved::Gone => Err(ApiError::panel(texts::VIDEO_NOT_FOUND)),
            Resolved::NotAVideo => Err(ApiError::panel(texts::INCORRECT_LINK)),
            Resolved::Failed(reading) => {
                warn!(reading = ?reading, "short link not resolved");
                Err(ApiError::panel(texts::SHORT_LINK_UNRESOLVED))
            }
        },
        Err(_) => Err(ApiError::panel(texts::INCORRECT_LINK)),
    }
}
