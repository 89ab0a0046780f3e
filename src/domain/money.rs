//! Exact money: amounts are whole units of 0.00001 (the panel API shows five decimals).

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places kept for every amount.
pub const SCALE: u32 = 5;

/// An amount of money in units of 0.00001 of the panel's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// Wraps a raw count of 0.00001 units, as stored.
    pub const fn from_units(units: i64) -> Money {
        Money(units)
    }

    /// The raw count of 0.00001 units, as stored.
    pub fn units(self) -> i64 {
        self.0
    }

    /// Rounds a decimal amount to five places, half away from zero; `None` when out of range.
    pub fn from_decimal(amount: Decimal) -> Option<Money> {
        let scaled = amount
            .round_dp_with_strategy(SCALE, RoundingStrategy::MidpointAwayFromZero)
            .checked_mul(Decimal::from(10_i64.pow(SCALE)))?;
        i64::try_from(scaled.trunc()).ok().map(Money)
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, SCALE)
    }

    /// The price of `quantity` views at `rate` per thousand; `None` when it does not fit.
    pub fn charge_for(rate: Decimal, quantity: u64) -> Option<Money> {
        let amount = rate.checked_mul(Decimal::from(quantity))? / Decimal::from(1000);
        Money::from_decimal(amount)
    }

    /// The share of this amount owed back for `remains` of `quantity` views not delivered,
    /// rounded half up. Never more than the amount itself, since `remains` is capped.
    pub fn refund_share(self, remains: u64, quantity: u64) -> Money {
        if quantity == 0 {
            return Money::ZERO;
        }
        let remains = remains.min(quantity) as i128;
        let quantity = quantity as i128;
        let share = (self.0 as i128 * remains * 2 + quantity) / (quantity * 2);
        Money(share as i64)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Money {
    /// Always five decimals, as panels show them: `0.27819`, `100.00000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = 10_u64.pow(SCALE);
        // Through `pad`, so that widths and alignment in tables apply.
        f.pad(&format!("{sign}{}.{:05}", abs / scale, abs % scale))
    }
}

impl FromStr for Money {
    type Err = String;

    fn from_str(s: &str) -> Result<Money, String> {
        let amount = Decimal::from_str(s.trim()).map_err(|_| format!("not an amount: {s:?}"))?;
        Money::from_decimal(amount).ok_or_else(|| format!("amount out of range: {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn charge_is_rate_times_quantity_per_thousand() {
        assert_eq!(
            Money::charge_for(dec("0.90"), 1000).unwrap().to_string(),
            "0.90000"
        );
        assert_eq!(
            Money::charge_for(dec("0.90"), 157).unwrap().to_string(),
            "0.14130"
        );
        assert_eq!(
            Money::charge_for(dec("1.7719"), 157).unwrap().to_string(),
            "0.27819"
        );
        // 0.0123 * 7 / 1000 = 0.0000861 rounds to five places.
        assert_eq!(
            Money::charge_for(dec("0.0123"), 7).unwrap().to_string(),
            "0.00009"
        );
        assert!(Money::charge_for(dec("79228162514264337593543950335"), u64::MAX).is_none());
    }

    #[test]
    fn refund_never_exceeds_charge() {
        let charge = Money::from_units(27_819);
        assert_eq!(charge.refund_share(157, 157), charge);
        assert_eq!(charge.refund_share(500, 157), charge);
        assert_eq!(charge.refund_share(0, 157), Money::ZERO);
        assert_eq!(
            Money::from_units(90_000).refund_share(200, 1000).units(),
            18_000
        );
        assert_eq!(Money::from_units(1).refund_share(1, 3).units(), 0);
        assert_eq!(Money::from_units(2).refund_share(1, 3).units(), 1);
    }

    #[test]
    fn display_and_parse_round_trip() {
        for s in ["0.00000", "100.84292", "-3.50000", "12345678.00001"] {
            assert_eq!(Money::from_str(s).unwrap().to_string(), s);
        }
        assert_eq!(Money::from_str("100").unwrap().to_string(), "100.00000");
        assert!(Money::from_str("abc").is_err());
    }
}
