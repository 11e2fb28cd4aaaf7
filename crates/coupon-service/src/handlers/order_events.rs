//! `order.events`: apply the coupon of a new order, restore it when the order is cancelled.
//!
//! Like stock, each decision hangs on the order's `coupon_use` row, created by the first
//! event of the order this service sees: the coupon is restored only if it was applied, and
//! only once, however events are repeated or reordered.

use chrono::Utc;
use contract::{
    CouponApplied, CouponApplyFailed, CouponRejection, CouponReleased, Envelope, Event,
    OrderCancelled, OrderCreated,
};
use eventing::{HandleError, Handler, Inbound};
use kit::Conn;

use crate::domain::{self, Status};
use crate::{SERVICE, store};

/// The handler of `order.events`.
#[derive(Debug, Clone, Copy)]
pub struct OrderEvents;

impl Handler for OrderEvents {
    /// A new order with a coupon, and any cancelled order (whose coupon, if it had one, is
    /// restored; the event does not say whether it had). A confirmed order keeps its coupon.
    fn concerns(&self, event: &Envelope) -> bool {
        match &event.event {
            Event::OrderCreated(order) => order.coupon_id.is_some(),
            Event::OrderCancelled(_) => true,
            _ => false,
        }
    }

    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        match &inbound.envelope.event {
            Event::OrderCreated(order) => apply(conn, inbound, order).await,
            Event::OrderCancelled(order) => restore(conn, inbound, order).await,
            _ => Ok(()),
        }
    }
}

async fn apply(
    conn: &mut Conn,
    inbound: &Inbound,
    order: &OrderCreated,
) -> Result<(), HandleError> {
    let Some(coupon_id) = order.coupon_id else {
        return Ok(());
    };
    let order_id = order.order_id.to_string();
    if !store::claim_use(conn, &order_id, Some(coupon_id), "PENDING").await? {
        tracing::info!("this order was decided (or cancelled) before; applying nothing");
        return Ok(());
    }
    // The coupon's expiry is judged at the time the order was placed, so that a slow saga
    // does not refuse a coupon that was valid when the customer used it.
    let placed_at = order
        .created_at
        .timestamp_millis()
        .min(Utc::now().timestamp_millis());
    if let Some(coupon) =
        store::use_coupon(conn, coupon_id, order.user_id, &order_id, placed_at).await?
    {
        let discount_amount = coupon.kind.discount(coupon.value, order.total_amount);
        store::set_use_status(conn, &order_id, "APPLIED").await?;
        tracing::info!(coupon_id, discount_amount, "coupon applied");
        inbound
            .emit(
                conn,
                SERVICE,
                CouponApplied {
                    order_id: order.order_id,
                    coupon_id,
                    discount_amount,
                    coupon_kind: coupon.kind,
                    coupon_value: coupon.value,
                },
            )
            .await?;
        return Ok(());
    }
    let (reason, detail) = match store::find_coupon(conn, coupon_id).await? {
        None => (
            CouponRejection::NotFound,
            format!("coupon {coupon_id} does not exist"),
        ),
        Some(c) if c.user_id != order.user_id => (
            CouponRejection::NotOwner,
            format!("coupon {coupon_id} belongs to another user"),
        ),
        Some(c)
            if domain::status(c.used_by_order.as_deref(), c.expires_at, placed_at)
                == Status::Used =>
        {
            (
                CouponRejection::AlreadyUsed,
                format!("coupon {coupon_id} is already used by another order"),
            )
        }
        Some(_) => (
            CouponRejection::Expired,
            format!("coupon {coupon_id} has expired"),
        ),
    };
    store::set_use_status(conn, &order_id, "REJECTED").await?;
    tracing::info!(coupon_id, %detail, "coupon refused");
    inbound
        .emit(
            conn,
            SERVICE,
            CouponApplyFailed {
                order_id: order.order_id,
                coupon_id,
                reason,
                detail,
            },
        )
        .await?;
    Ok(())
}

async fn restore(
    conn: &mut Conn,
    inbound: &Inbound,
    order: &OrderCancelled,
) -> Result<(), HandleError> {
    let order_id = order.order_id.to_string();
    if store::claim_use(conn, &order_id, None, "VOIDED").await? {
        return Ok(());
    }
    let Some(coupon_id) = store::release_use(conn, &order_id).await? else {
        return Ok(());
    };
    store::unuse_coupon(conn, coupon_id, &order_id).await?;
    tracing::info!(coupon_id, "coupon restored");
    inbound
        .emit(
            conn,
            SERVICE,
            CouponReleased {
                order_id: order.order_id,
                coupon_id,
            },
        )
        .await?;
    Ok(())
}
