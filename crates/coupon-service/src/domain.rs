//! Coupon kinds, states and the discount rule: pure logic, no I/O.

use serde::Serialize;

/// How a coupon's value is read, and the discount it gives (`Kind::discount`): the
/// contract's, since the order service checks every discount with the same rule.
pub use contract::CouponKind as Kind;

/// Where a coupon stands, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Available,
    Used,
    Expired,
}

/// A coupon used by an order is USED; an unused one past its expiry is EXPIRED.
pub fn status(used_by_order: Option<&str>, expires_at_ms: Option<i64>, now_ms: i64) -> Status {
    match (used_by_order, expires_at_ms) {
        (Some(_), _) => Status::Used,
        (None, Some(expiry)) if expiry <= now_ms => Status::Expired,
        _ => Status::Available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_discount_never_exceeds_the_total() {
        assert_eq!(Kind::Fixed.discount(500, 3000), 500);
        assert_eq!(Kind::Fixed.discount(5000, 3000), 3000);
    }

    #[test]
    fn a_percent_discount_rounds_down() {
        assert_eq!(Kind::Percent.discount(10, 3000), 300);
        assert_eq!(Kind::Percent.discount(15, 999), 149);
        assert_eq!(Kind::Percent.discount(100, 999), 999);
        assert_eq!(Kind::Percent.discount(50, i64::MAX), i64::MAX / 2);
    }

    #[test]
    fn use_beats_expiry_and_expiry_beats_availability() {
        assert_eq!(status(Some("o"), Some(0), 10), Status::Used);
        assert_eq!(status(None, Some(10), 10), Status::Expired);
        assert_eq!(status(None, Some(11), 10), Status::Available);
        assert_eq!(status(None, None, 10), Status::Available);
    }
}
