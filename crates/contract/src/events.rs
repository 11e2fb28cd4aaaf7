//! The payload of every event, and [`Event`], the enum with one variant per event type.
//!
//! Amounts are integer minor units (cents); ids of products, users and coupons are integers;
//! order ids are UUID v7. Unknown fields are accepted and ignored when decoding, so that a
//! producer can add a field before every consumer knows it.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topics;

/// One line of an order, priced from the order service's catalog replica when it was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub product_id: i64,
    pub quantity: i64,
    /// Price of one unit in minor units at the time the order was placed.
    pub unit_price: i64,
}

/// A quantity of one product, as reserved or released by the product service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLine {
    pub product_id: i64,
    pub quantity: i64,
}

/// An order was placed and is PENDING until stock (and the coupon, if any) answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub user_id: i64,
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price over every line, before any discount.
    pub total_amount: i64,
    /// The coupon the customer wants to use, if any.
    #[serde(default)]
    pub coupon_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// Every step of the order succeeded; its amounts are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub user_id: i64,
    pub total_amount: i64,
    pub discount_amount: i64,
    /// `total_amount - discount_amount`.
    pub final_amount: i64,
    pub confirmed_at: DateTime<Utc>,
}

/// Where an order stands: PENDING until its saga ends with `OrderConfirmed` (CONFIRMED) or
/// `OrderCancelled` (CANCELLED). The order API's `status`; readers of the topics (the console)
/// tell it from the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        match s {
            "PENDING" => Some(OrderStatus::Pending),
            "CONFIRMED" => Some(OrderStatus::Confirmed),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    /// The product service could not reserve every line.
    OutOfStock,
    /// The coupon service refused the coupon.
    CouponRejected,
    /// The order was still PENDING when its saga deadline passed.
    Timeout,
    /// The customer asked for it.
    UserCancelled,
}

impl CancelReason {
    /// The wire name, as stored in databases and shown in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "OUT_OF_STOCK",
            CancelReason::CouponRejected => "COUPON_REJECTED",
            CancelReason::Timeout => "TIMEOUT",
            CancelReason::UserCancelled => "USER_CANCELLED",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        [
            CancelReason::OutOfStock,
            CancelReason::CouponRejected,
            CancelReason::Timeout,
            CancelReason::UserCancelled,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == s)
    }
}

/// An order was cancelled; every service undoes what it did for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub user_id: i64,
    pub reason: CancelReason,
    /// A sentence for people: which product was short, why the coupon was refused.
    pub detail: String,
    pub cancelled_at: DateTime<Utc>,
}

/// Every line of the order is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// Why the product service reserved nothing for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StockFailureReason {
    /// At least one line asked for more than is available.
    OutOfStock,
    /// At least one line names a product the product service does not have.
    UnknownProduct,
}

/// Nothing was reserved for the order, because at least one line could not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReservationFailed {
    pub order_id: Uuid,
    pub reason: StockFailureReason,
    pub detail: String,
}

/// What was reserved for a cancelled order is available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReleased {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// The coupon is now used by the order. It carries the coupon's kind and value, so that the
/// order service can check the discount against the order it knows rather than trust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CouponApplied {
    pub order_id: Uuid,
    pub coupon_id: i64,
    /// The discount in minor units: [`CouponKind::discount`] of the kind and value below on the
    /// order's total, so never more than the total.
    pub discount_amount: i64,
    pub coupon_kind: CouponKind,
    pub coupon_value: i64,
}

/// How a coupon's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponKind {
    /// `value` minor units off, never more than the order's total.
    Fixed,
    /// `value` percent off (1 to 100), rounded down to the minor unit.
    Percent,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponKind::Fixed => "FIXED",
            CouponKind::Percent => "PERCENT",
        }
    }

    pub fn parse(s: &str) -> Option<CouponKind> {
        match s {
            "FIXED" => Some(CouponKind::Fixed),
            "PERCENT" => Some(CouponKind::Percent),
            _ => None,
        }
    }

    /// The values a coupon of this kind may have.
    pub fn valid_values(self) -> std::ops::RangeInclusive<i64> {
        match self {
            CouponKind::Fixed => 1..=1_000_000_000_000,
            CouponKind::Percent => 1..=100,
        }
    }

    /// The discount a coupon of this kind and `value` gives on an order of `total` minor
    /// units: never negative, never more than the total. The coupon service applies it, and
    /// the order service checks a `CouponApplied` with it.
    pub fn discount(self, value: i64, total: i64) -> i64 {
        let total = total.max(0);
        match self {
            CouponKind::Fixed => value.clamp(0, total),
            CouponKind::Percent => {
                let percent = i128::from(value.clamp(0, 100));
                (i128::from(total) * percent / 100) as i64
            }
        }
    }
}

/// Why the coupon service refused a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponRejection {
    /// No coupon has this id.
    NotFound,
    /// The coupon belongs to another user.
    NotOwner,
    /// The coupon is already used by another order.
    AlreadyUsed,
    /// The coupon's expiry has passed.
    Expired,
}

/// The coupon was not applied; the order will be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CouponApplyFailed {
    pub order_id: Uuid,
    pub coupon_id: i64,
    pub reason: CouponRejection,
    pub detail: String,
}

/// The coupon the cancelled order used is available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CouponReleased {
    pub order_id: Uuid,
    pub coupon_id: i64,
}

/// A product's name or price was set; the latest per product id is the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductUpserted {
    pub product_id: i64,
    pub name: String,
    /// Price of one unit in minor units.
    pub price: i64,
}

/// What sees every event type of the contract with its payload type
/// ([`Event::visit_payloads`]): how [`crate::schema`] makes a JSON Schema per type without
/// this module knowing of schemas.
pub trait PayloadVisitor {
    fn visit<P: schemars::JsonSchema>(&mut self, event_type: &'static str);
}

/// Defines [`Event`] and everything that must list every event type, from one list, so that
/// adding an event cannot forget one of them.
macro_rules! events {
    ($($variant:ident => $topic:expr),* $(,)?) => {
        /// Every event of the contract, one variant per `event_type`.
        ///
        /// It serializes as its payload alone; the envelope carries the type.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(untagged)]
        pub enum Event {
            $($variant($variant),)*
        }

        impl Event {
            /// Every `event_type` of the contract.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),*];

            /// The `event_type` of this event, as written in the envelope and headers.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => stringify!($variant),)*
                }
            }

            /// The topic this event is published to.
            pub fn topic(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => $topic,)*
                }
            }

            /// The topic events of this type are published to, or `None` for an unknown type.
            pub fn topic_of(event_type: &str) -> Option<&'static str> {
                match event_type {
                    $(stringify!($variant) => Some($topic),)*
                    _ => None,
                }
            }

            /// Decodes a payload of the given type. `Ok(None)` means the type is not one
            /// of the contract, which a consumer ignores rather than rejects.
            pub fn from_parts(
                event_type: &str,
                payload: serde_json::Value,
            ) -> Result<Option<Event>, serde_json::Error> {
                match event_type {
                    $(stringify!($variant) => serde_json::from_value(payload).map(|p| Some(Event::$variant(p))),)*
                    _ => Ok(None),
                }
            }

            /// Shows `visitor` every event type with its payload type.
            pub fn visit_payloads(visitor: &mut impl PayloadVisitor) {
                $(visitor.visit::<$variant>(stringify!($variant));)*
            }
        }

        $(
            impl From<$variant> for Event {
                fn from(payload: $variant) -> Self {
                    Event::$variant(payload)
                }
            }
        )*
    };
}

events! {
    OrderCreated => topics::ORDER_EVENTS,
    OrderConfirmed => topics::ORDER_EVENTS,
    OrderCancelled => topics::ORDER_EVENTS,
    StockReserved => topics::STOCK_EVENTS,
    StockReservationFailed => topics::STOCK_EVENTS,
    StockReleased => topics::STOCK_EVENTS,
    CouponApplied => topics::COUPON_EVENTS,
    CouponApplyFailed => topics::COUPON_EVENTS,
    CouponReleased => topics::COUPON_EVENTS,
    ProductUpserted => topics::PRODUCT_CATALOG,
}

impl Event {
    /// The order this event belongs to; `None` for catalog events.
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Event::OrderCreated(e) => Some(e.order_id),
            Event::OrderConfirmed(e) => Some(e.order_id),
            Event::OrderCancelled(e) => Some(e.order_id),
            Event::StockReserved(e) => Some(e.order_id),
            Event::StockReservationFailed(e) => Some(e.order_id),
            Event::StockReleased(e) => Some(e.order_id),
            Event::CouponApplied(e) => Some(e.order_id),
            Event::CouponApplyFailed(e) => Some(e.order_id),
            Event::CouponReleased(e) => Some(e.order_id),
            Event::ProductUpserted(_) => None,
        }
    }

    /// The Kafka message key: the order id for saga events, the product id for the catalog.
    pub fn key(&self) -> String {
        match self {
            Event::ProductUpserted(e) => e.product_id.to_string(),
            other => other
                .order_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }
    }
}
