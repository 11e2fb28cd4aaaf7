//! The order's state machine and the rules of placing an order: pure logic, no I/O.

use contract::{CancelReason, CouponApplied, OrderLine, StockLine};

/// Where an order stands: the contract's, since the order API shows it and the topics tell it.
pub use contract::OrderStatus as Status;

/// What the saga knows of an order: enough to decide its next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub status: Status,
    pub has_coupon: bool,
    pub stock_reserved: bool,
    pub coupon_applied: bool,
}

impl Progress {
    /// A PENDING order is confirmed once its stock is reserved and, if it has a coupon, the
    /// coupon is applied.
    pub fn ready_to_confirm(&self) -> bool {
        self.status == Status::Pending
            && self.stock_reserved
            && (!self.has_coupon || self.coupon_applied)
    }
}

/// The statuses from which an order may be cancelled for `reason`: the saga's own failures
/// only cancel a PENDING order, while a customer may also cancel a CONFIRMED one.
pub fn cancellable_from(reason: CancelReason) -> &'static [Status] {
    match reason {
        CancelReason::UserCancelled => &[Status::Pending, Status::Confirmed],
        _ => &[Status::Pending],
    }
}

pub use contract::order_request::{MAX_LINES, MAX_QUANTITY};

/// Why an order request cannot be accepted, found before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The rule broken, answered with its error code.
    pub code: contract::order_request::Rule,
    /// For people.
    pub message: String,
}

/// Checks an order request's shape by the contract's rules
/// ([`contract::order_request::validate`]), with the API's error code for a broken one.
pub fn validate_request(
    user_id: i64,
    lines: &[(i64, i64)],
    coupon_id: Option<i64>,
) -> Result<(), Invalid> {
    contract::order_request::validate(user_id, lines, coupon_id).map_err(|refused| Invalid {
        code: refused.rule,
        message: refused.message,
    })
}

/// Whether a `CouponApplied` fits the order it names, as this service placed it: the coupon
/// must be the one the order carries, and the discount exactly what the coupon's kind and
/// value give on the order's total. Anything else is forged or broken, never applied: the
/// reason says what is wrong, and the event is dead-lettered with it.
pub fn check_coupon_applied(
    coupon_id: Option<i64>,
    total_amount: i64,
    applied: &CouponApplied,
) -> Result<(), String> {
    if coupon_id != Some(applied.coupon_id) {
        return Err(match coupon_id {
            Some(own) => format!(
                "CouponApplied names coupon {}, but the order carries coupon {own}",
                applied.coupon_id
            ),
            None => format!(
                "CouponApplied names coupon {}, but the order carries no coupon",
                applied.coupon_id
            ),
        });
    }
    let expected = applied
        .coupon_kind
        .discount(applied.coupon_value, total_amount);
    if applied.discount_amount != expected {
        return Err(format!(
            "CouponApplied takes {} off, but a {} coupon of {} takes {expected} off a total of {total_amount}",
            applied.discount_amount,
            applied.coupon_kind.as_str(),
            applied.coupon_value
        ));
    }
    Ok(())
}

/// Whether a `CouponApplyFailed` fits the order it names: the coupon must be the one the order
/// carries, and not one already applied to it (the coupon service decides once per order, so
/// a refusal after an application is forged or broken).
pub fn check_coupon_failed(
    coupon_id: Option<i64>,
    coupon_applied: bool,
    failed_coupon: i64,
) -> Result<(), String> {
    match coupon_id {
        None => Err(format!(
            "CouponApplyFailed names coupon {failed_coupon}, but the order carries no coupon"
        )),
        Some(own) if own != failed_coupon => Err(format!(
            "CouponApplyFailed names coupon {failed_coupon}, but the order carries coupon {own}"
        )),
        Some(_) if coupon_applied => Err(format!(
            "CouponApplyFailed for coupon {failed_coupon}, which was already applied to the order"
        )),
        Some(_) => Ok(()),
    }
}

/// Whether a `StockReservationFailed` fits the order it names: not one whose stock is already
/// reserved (the product service decides once per order).
pub fn check_stock_failed(stock_reserved: bool) -> Result<(), String> {
    if stock_reserved {
        return Err("StockReservationFailed for an order whose stock is already reserved".into());
    }
    Ok(())
}

/// Whether a `StockReserved` covers exactly the order's lines: the same products with the
/// same quantities, no more and no fewer.
pub fn check_stock_reserved(lines: &[OrderLine], reserved: &[StockLine]) -> Result<(), String> {
    let mut wanted: Vec<(i64, i64)> = lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    let mut got: Vec<(i64, i64)> = reserved
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    wanted.sort_unstable();
    got.sort_unstable();
    if wanted != got {
        return Err(format!(
            "StockReserved covers {got:?} (product, quantity), but the order's lines are {wanted:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use contract::order_request::Rule;

    use super::*;

    fn applied(
        coupon_id: i64,
        discount: i64,
        kind: contract::CouponKind,
        value: i64,
    ) -> CouponApplied {
        CouponApplied {
            order_id: uuid::Uuid::nil(),
            coupon_id,
            discount_amount: discount,
            coupon_kind: kind,
            coupon_value: value,
        }
    }

    #[test]
    fn a_coupon_applied_is_accepted_only_for_the_orders_coupon_with_the_discount_it_gives() {
        use contract::CouponKind::{Fixed, Percent};
        assert!(check_coupon_applied(Some(4), 3000, &applied(4, 300, Percent, 10)).is_ok());
        assert!(check_coupon_applied(Some(4), 3000, &applied(4, 3000, Fixed, 5000)).is_ok());
        // The whole amount off with a 10 % coupon, another coupon, or none at all.
        assert!(check_coupon_applied(Some(4), 3000, &applied(4, 3000, Percent, 10)).is_err());
        assert!(check_coupon_applied(Some(4), 3000, &applied(5, 300, Percent, 10)).is_err());
        assert!(check_coupon_applied(None, 3000, &applied(4, 300, Percent, 10)).is_err());
    }

    #[test]
    fn a_failure_must_be_of_the_orders_own_step_and_not_one_that_succeeded() {
        assert!(check_coupon_failed(Some(4), false, 4).is_ok());
        assert!(check_coupon_failed(None, false, 4).is_err());
        assert!(check_coupon_failed(Some(5), false, 4).is_err());
        assert!(check_coupon_failed(Some(4), true, 4).is_err());
        assert!(check_stock_failed(false).is_ok());
        assert!(check_stock_failed(true).is_err());
    }

    #[test]
    fn a_reservation_must_cover_exactly_the_orders_lines() {
        let line = |product_id, quantity| OrderLine {
            product_id,
            quantity,
            unit_price: 100,
        };
        let stock = |product_id, quantity| StockLine {
            product_id,
            quantity,
        };
        let lines = [line(1, 2), line(3, 1)];
        assert!(check_stock_reserved(&lines, &[stock(3, 1), stock(1, 2)]).is_ok());
        assert!(check_stock_reserved(&lines, &[stock(1, 2)]).is_err());
        assert!(check_stock_reserved(&lines, &[stock(1, 1), stock(3, 1)]).is_err());
        assert!(check_stock_reserved(&lines, &[stock(1, 2), stock(3, 1), stock(4, 1)]).is_err());
    }

    fn progress(status: Status, has_coupon: bool, stock: bool, coupon: bool) -> Progress {
        Progress {
            status,
            has_coupon,
            stock_reserved: stock,
            coupon_applied: coupon,
        }
    }

    #[test]
    fn an_order_without_coupon_confirms_on_stock_alone() {
        assert!(progress(Status::Pending, false, true, false).ready_to_confirm());
        assert!(!progress(Status::Pending, false, false, false).ready_to_confirm());
    }

    #[test]
    fn an_order_with_coupon_needs_both_answers() {
        assert!(!progress(Status::Pending, true, true, false).ready_to_confirm());
        assert!(!progress(Status::Pending, true, false, true).ready_to_confirm());
        assert!(progress(Status::Pending, true, true, true).ready_to_confirm());
    }

    #[test]
    fn only_a_pending_order_can_be_confirmed() {
        assert!(!progress(Status::Cancelled, false, true, false).ready_to_confirm());
        assert!(!progress(Status::Confirmed, false, true, false).ready_to_confirm());
    }

    #[test]
    fn only_the_customer_cancels_a_confirmed_order() {
        assert!(cancellable_from(CancelReason::UserCancelled).contains(&Status::Confirmed));
        assert!(!cancellable_from(CancelReason::Timeout).contains(&Status::Confirmed));
        assert!(!cancellable_from(CancelReason::OutOfStock).contains(&Status::Cancelled));
    }

    #[test]
    fn bad_requests_are_named_by_their_first_problem() {
        let code = |user, lines: &[(i64, i64)], coupon| {
            validate_request(user, lines, coupon).err().map(|e| e.code)
        };
        assert_eq!(code(0, &[(1, 1)], None), Some(Rule::UserId));
        assert_eq!(code(1, &[], None), Some(Rule::NoItems));
        assert_eq!(code(1, &vec![(1, 1); 101], None), Some(Rule::TooManyItems));
        assert_eq!(code(1, &[(1, 0)], None), Some(Rule::Quantity));
        assert_eq!(code(1, &[(1, -3)], None), Some(Rule::Quantity));
        assert_eq!(code(1, &[(0, 1)], None), Some(Rule::ProductId));
        assert_eq!(
            code(1, &[(1, 1), (1, 2)], None),
            Some(Rule::DuplicateProduct)
        );
        assert_eq!(code(1, &[(1, 1)], Some(0)), Some(Rule::CouponId));
        assert_eq!(code(1, &[(1, 1), (2, 10_000)], Some(3)), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn a_coupon_applied_is_accepted_only_with_exactly_the_discount_its_coupon_gives(
                own in prop::option::of(1..10i64),
                named in 1..10i64,
                percent in any::<bool>(),
                value in -5..200i64,
                total in 0..1_000_000i64,
                discount in -5..1_000_100i64,
            ) {
                let kind = if percent { contract::CouponKind::Percent } else { contract::CouponKind::Fixed };
                let event = applied(named, discount, kind, value);
                let accepted = check_coupon_applied(own, total, &event).is_ok();
                let expected = own == Some(named) && discount == kind.discount(value, total);
                prop_assert_eq!(accepted, expected);
            }

            #[test]
            fn a_reservation_is_accepted_only_for_exactly_the_orders_lines(
                lines in prop::collection::btree_map(1..50i64, 1..100i64, 1..6),
                change in 0..4u8,
            ) {
                let order: Vec<OrderLine> = lines
                    .iter()
                    .map(|(&product_id, &quantity)| OrderLine { product_id, quantity, unit_price: 1 })
                    .collect();
                let mut reserved: Vec<StockLine> = lines
                    .iter()
                    .rev()
                    .map(|(&product_id, &quantity)| StockLine { product_id, quantity })
                    .collect();
                match change {
                    0 => {}
                    1 => reserved[0].quantity += 1,
                    2 => { reserved.pop(); }
                    _ => reserved.push(StockLine { product_id: 99, quantity: 1 }),
                }
                prop_assert_eq!(check_stock_reserved(&order, &reserved).is_ok(), change == 0);
            }

            #[test]
            fn any_order_request_is_judged_never_panicked_over(
                user_id in any::<i64>(),
                lines in prop::collection::vec((any::<i64>(), any::<i64>()), 0..120),
                coupon_id in prop::option::of(any::<i64>()),
            ) {
                if validate_request(user_id, &lines, coupon_id).is_ok() {
                    prop_assert!(user_id >= 1 && !lines.is_empty() && lines.len() <= MAX_LINES);
                    prop_assert!(lines.iter().all(|(p, q)| *p >= 1 && (1..=MAX_QUANTITY).contains(q)));
                }
            }
        }
    }
}
