//! The rules of an order request (`POST /orders`) that hold before anything is looked up:
//! the order service applies them, and so does the synchronous baseline, which must refuse
//! exactly what the order service refuses to be a fair comparison. Each broken rule is a
//! [`Rule`], which the HTTP layer turns into its error code.

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one product one order may ask for.
pub const MAX_QUANTITY: i64 = 10_000;

/// The rule an order request breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    UserId,
    NoItems,
    TooManyItems,
    ProductId,
    Quantity,
    DuplicateProduct,
    CouponId,
}

impl Rule {
    /// Every rule, in the order [`validate`] checks them.
    pub const ALL: [Rule; 7] = [
        Rule::UserId,
        Rule::NoItems,
        Rule::TooManyItems,
        Rule::ProductId,
        Rule::Quantity,
        Rule::DuplicateProduct,
        Rule::CouponId,
    ];

    /// The error code an HTTP API answers a request breaking this rule with (always with 422):
    /// the order service and the synchronous baseline answer alike.
    pub const fn code(self) -> &'static str {
        match self {
            Rule::UserId => "invalid_user_id",
            Rule::NoItems => "no_items",
            Rule::TooManyItems => "too_many_items",
            Rule::ProductId => "invalid_product_id",
            Rule::Quantity => "invalid_quantity",
            Rule::DuplicateProduct => "duplicate_product",
            Rule::CouponId => "invalid_coupon_id",
        }
    }
}

/// Why an order request cannot be accepted: the rule, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub rule: Rule,
    pub message: String,
}

fn refused(rule: Rule, message: impl Into<String>) -> Refused {
    Refused {
        rule,
        message: message.into(),
    }
}

/// Checks an order request's shape: a positive user id, 1 to [`MAX_LINES`] lines of distinct
/// positive product ids with 1 to [`MAX_QUANTITY`] units each, and a positive coupon id if
/// any. `lines` are `(product_id, quantity)`.
pub fn validate(user_id: i64, lines: &[(i64, i64)], coupon_id: Option<i64>) -> Result<(), Refused> {
    if user_id < 1 {
        return Err(refused(Rule::UserId, "user_id must be a positive integer"));
    }
    if lines.is_empty() {
        return Err(refused(Rule::NoItems, "an order needs at least one item"));
    }
    if lines.len() > MAX_LINES {
        return Err(refused(
            Rule::TooManyItems,
            format!("an order may have at most {MAX_LINES} items"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &(product_id, quantity) in lines {
        if product_id < 1 {
            return Err(refused(
                Rule::ProductId,
                "product_id must be a positive integer",
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(refused(
                Rule::Quantity,
                format!("quantity of product {product_id} must be 1 to {MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(product_id) {
            return Err(refused(
                Rule::DuplicateProduct,
                format!(
                    "product {product_id} appears on more than one line; put its quantities on one"
                ),
            ));
        }
    }
    if coupon_id.is_some_and(|c| c < 1) {
        return Err(refused(
            Rule::CouponId,
            "coupon_id must be a positive integer",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_broken_rule_is_named() {
        let rule =
            |user, lines: &[(i64, i64)], coupon| validate(user, lines, coupon).map_err(|r| r.rule);
        assert_eq!(rule(1, &[(1, 1)], None), Ok(()));
        assert_eq!(rule(0, &[(1, 1)], None), Err(Rule::UserId));
        assert_eq!(rule(1, &[], None), Err(Rule::NoItems));
        assert_eq!(
            rule(1, &[(1, 1); MAX_LINES + 1], None),
            Err(Rule::TooManyItems)
        );
        assert_eq!(rule(1, &[(0, 1)], None), Err(Rule::ProductId));
        assert_eq!(rule(1, &[(1, MAX_QUANTITY + 1)], None), Err(Rule::Quantity));
        assert_eq!(
            rule(1, &[(1, 1), (1, 2)], None),
            Err(Rule::DuplicateProduct)
        );
        assert_eq!(rule(1, &[(1, 1)], Some(0)), Err(Rule::CouponId));
    }
}
