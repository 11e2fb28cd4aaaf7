//! The rules every event must keep, checked when a message is decoded so that no handler ever
//! sees an event that breaks them: [`Event::validate`].
//!
//! Decoding already refuses wrong types and unknown enum values. These are the rules types
//! cannot say: ids and quantities are positive and quantities bounded, amounts are not
//! negative, an order's total is the sum of its lines and a discount is at most the total, a
//! product appears on one line of an event at most, lists and texts are bounded, and no text
//! holds a NUL (Postgres cannot store one). An event that breaks one can never be
//! applied, so consumers dead-letter it with the reason instead of retrying it forever.

use crate::events::*;

/// Most lines in one order or stock event (the order API accepts 100).
pub const MAX_LINES: usize = 1_000;
/// Most units of one product on one line (the order API accepts 10,000): with at most
/// [`MAX_LINES`] lines, no sum of quantities can overflow.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Longest text field (a product name, a cancellation detail), in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// Why an event breaks the contract's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct Invalid {
    /// The field, as a path in the payload (`items[2].quantity`).
    pub field: String,
    /// The rule it breaks.
    pub rule: String,
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

fn positive(field: &str, value: i64) -> Result<(), Invalid> {
    if value > 0 {
        Ok(())
    } else {
        Err(invalid(field, format!("must be positive, not {value}")))
    }
}

fn amount(field: &str, value: i64) -> Result<(), Invalid> {
    if value >= 0 {
        Ok(())
    } else {
        Err(invalid(field, format!("must not be negative, not {value}")))
    }
}

fn text(field: &str, value: &str, may_be_empty: bool) -> Result<(), Invalid> {
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL character"));
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if !may_be_empty && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn lines<T>(field: &str, items: &[T]) -> Result<(), Invalid> {
    if items.is_empty() {
        return Err(invalid(field, "must have at least one line"));
    }
    if items.len() > MAX_LINES {
        return Err(invalid(
            field,
            format!("must have at most {MAX_LINES} lines"),
        ));
    }
    Ok(())
}

fn quantity(field: &str, value: i64) -> Result<(), Invalid> {
    positive(field, value)?;
    if value > MAX_QUANTITY {
        return Err(invalid(
            field,
            format!("must be at most {MAX_QUANTITY}, not {value}"),
        ));
    }
    Ok(())
}

/// Each product on one line only: a consumer then never sums quantities of its own.
fn distinct_products(products: impl Iterator<Item = i64>) -> Result<(), Invalid> {
    let mut seen = std::collections::BTreeSet::new();
    for (n, product_id) in products.enumerate() {
        if !seen.insert(product_id) {
            return Err(invalid(
                format!("items[{n}].product_id"),
                format!("must not repeat product {product_id} of an earlier line"),
            ));
        }
    }
    Ok(())
}

fn stock_lines(items: &[StockLine]) -> Result<(), Invalid> {
    lines("items", items)?;
    for (n, line) in items.iter().enumerate() {
        positive(&format!("items[{n}].product_id"), line.product_id)?;
        quantity(&format!("items[{n}].quantity"), line.quantity)?;
    }
    distinct_products(items.iter().map(|l| l.product_id))
}

fn discount(total: i64, discount: i64) -> Result<(), Invalid> {
    amount("discount_amount", discount)?;
    if discount > total {
        return Err(invalid(
            "discount_amount",
            format!("must be at most the total {total}, not {discount}"),
        ));
    }
    Ok(())
}

impl Event {
    /// Checks the rules of the contract that the types alone cannot say.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Event::OrderCreated(e) => {
                positive("user_id", e.user_id)?;
                lines("items", &e.items)?;
                let mut sum: i64 = 0;
                for (n, line) in e.items.iter().enumerate() {
                    positive(&format!("items[{n}].product_id"), line.product_id)?;
                    quantity(&format!("items[{n}].quantity"), line.quantity)?;
                    amount(&format!("items[{n}].unit_price"), line.unit_price)?;
                    sum = line
                        .quantity
                        .checked_mul(line.unit_price)
                        .and_then(|subtotal| sum.checked_add(subtotal))
                        .ok_or_else(|| invalid("total_amount", "overflows"))?;
                }
                distinct_products(e.items.iter().map(|l| l.product_id))?;
                amount("total_amount", e.total_amount)?;
                if sum != e.total_amount {
                    return Err(invalid(
                        "total_amount",
                        format!(
                            "must be the sum of the lines, {sum}, not {}",
                            e.total_amount
                        ),
                    ));
                }
                if let Some(coupon_id) = e.coupon_id {
                    positive("coupon_id", coupon_id)?;
                }
                Ok(())
            }
            Event::OrderConfirmed(e) => {
                positive("user_id", e.user_id)?;
                amount("total_amount", e.total_amount)?;
                discount(e.total_amount, e.discount_amount)?;
                if e.final_amount != e.total_amount - e.discount_amount {
                    return Err(invalid(
                        "final_amount",
                        "must be total_amount minus discount_amount",
                    ));
                }
                Ok(())
            }
            Event::OrderCancelled(e) => {
                positive("user_id", e.user_id)?;
                text("detail", &e.detail, true)
            }
            Event::StockReserved(e) => stock_lines(&e.items),
            Event::StockReleased(e) => stock_lines(&e.items),
            Event::StockReservationFailed(e) => text("detail", &e.detail, true),
            Event::CouponApplied(e) => {
                positive("coupon_id", e.coupon_id)?;
                amount("discount_amount", e.discount_amount)?;
                let valid = e.coupon_kind.valid_values();
                if !valid.contains(&e.coupon_value) {
                    return Err(invalid(
                        "coupon_value",
                        format!(
                            "of a {} coupon must be {} to {}, not {}",
                            e.coupon_kind.as_str(),
                            valid.start(),
                            valid.end(),
                            e.coupon_value
                        ),
                    ));
                }
                Ok(())
            }
            Event::CouponApplyFailed(e) => {
                positive("coupon_id", e.coupon_id)?;
                text("detail", &e.detail, true)
            }
            Event::CouponReleased(e) => positive("coupon_id", e.coupon_id),
            Event::ProductUpserted(e) => {
                positive("product_id", e.product_id)?;
                text("name", &e.name, false)?;
                amount("price", e.price)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn created(items: Vec<OrderLine>, total_amount: i64) -> Event {
        Event::OrderCreated(OrderCreated {
            order_id: Uuid::now_v7(),
            user_id: 1,
            items,
            total_amount,
            coupon_id: None,
            created_at: Utc::now(),
        })
    }

    fn line(product_id: i64, quantity: i64, unit_price: i64) -> OrderLine {
        OrderLine {
            product_id,
            quantity,
            unit_price,
        }
    }

    #[test]
    fn a_well_formed_order_passes() {
        assert_eq!(
            created(vec![line(1, 2, 150), line(2, 1, 0)], 300).validate(),
            Ok(())
        );
    }

    #[test]
    fn non_positive_quantities_and_ids_are_refused_with_the_field_named() {
        let error = created(vec![line(1, 0, 150)], 0).validate().unwrap_err();
        assert_eq!(error.field, "items[0].quantity");
        let error = created(vec![line(-3, 1, 150)], 150).validate().unwrap_err();
        assert_eq!(error.field, "items[0].product_id");
        assert!(created(vec![], 0).validate().is_err());
    }

    #[test]
    fn a_product_on_two_lines_or_more_units_than_the_bound_are_refused() {
        // Priced 0, these add up to nothing, so the total alone would not catch them; summed
        // per product they would overflow.
        let twice = created(vec![line(1, i64::MAX, 0), line(1, i64::MAX, 0)], 0);
        let error = twice.validate().unwrap_err();
        assert_eq!(error.field, "items[0].quantity", "{error}");
        let error = created(vec![line(1, 2, 0), line(1, 3, 0)], 0)
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "items[1].product_id", "{error}");
        assert_eq!(
            created(vec![line(1, MAX_QUANTITY, 0)], 0).validate(),
            Ok(())
        );
        let reserved = Event::StockReserved(StockReserved {
            order_id: Uuid::now_v7(),
            items: vec![
                StockLine {
                    product_id: 4,
                    quantity: 1,
                },
                StockLine {
                    product_id: 4,
                    quantity: 1,
                },
            ],
        });
        assert!(reserved.validate().is_err());
    }

    #[test]
    fn a_total_that_is_not_the_sum_of_its_lines_or_overflows_is_refused() {
        assert!(created(vec![line(1, 2, 150)], 299).validate().is_err());
        assert!(created(vec![line(1, i64::MAX, 2)], 0).validate().is_err());
        assert!(created(vec![line(1, 1, -5)], -5).validate().is_err());
    }

    #[test]
    fn a_discount_above_the_total_is_refused() {
        let confirmed = |discount_amount| {
            Event::OrderConfirmed(OrderConfirmed {
                order_id: Uuid::now_v7(),
                user_id: 1,
                total_amount: 100,
                discount_amount,
                final_amount: 100 - discount_amount,
                confirmed_at: Utc::now(),
            })
        };
        assert_eq!(confirmed(100).validate(), Ok(()));
        assert_eq!(
            confirmed(101).validate().unwrap_err().field,
            "discount_amount"
        );
        assert!(confirmed(-1).validate().is_err());
    }

    #[test]
    fn texts_with_a_nul_or_too_long_are_refused() {
        let cancelled = |detail: String| {
            Event::OrderCancelled(OrderCancelled {
                order_id: Uuid::now_v7(),
                user_id: 1,
                reason: CancelReason::Timeout,
                detail,
                cancelled_at: Utc::now(),
            })
        };
        assert_eq!(cancelled("late".into()).validate(), Ok(()));
        assert!(cancelled("a\0b".into()).validate().is_err());
        assert!(
            cancelled("x".repeat(MAX_TEXT_CHARS + 1))
                .validate()
                .is_err()
        );
        let product = Event::ProductUpserted(ProductUpserted {
            product_id: 1,
            name: " ".into(),
            price: 5,
        });
        assert!(product.validate().is_err());
    }
}
