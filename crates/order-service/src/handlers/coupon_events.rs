//! `coupon.events`: an applied coupon sets the discount and confirms the order (once stock is
//! reserved too); a refused coupon cancels it (COUPON_REJECTED); a restored coupon is noted on
//! its timeline.

use contract::{CancelReason, Event};
use eventing::{Conn, HandleError, Inbound};

use crate::{saga, store};

pub async fn handle(conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
    let cause = Some(inbound.envelope.event_id);
    match &inbound.envelope.event {
        Event::CouponApplied(applied) => {
            let id = applied.order_id.to_string();
            let Some(order) =
                store::mark_coupon_applied(conn, &id, applied.discount_amount).await?
            else {
                tracing::warn!("coupon applied to an order this service does not have");
                return Ok(());
            };
            let detail = format!(
                "coupon {} takes {} off",
                applied.coupon_id, applied.discount_amount
            );
            store::add_timeline(conn, &id, "CouponApplied", Some(&detail)).await?;
            saga::confirm_if_ready(conn, &order, cause, &inbound.trace).await?;
        }
        Event::CouponApplyFailed(failed) => {
            let id = failed.order_id.to_string();
            if store::lock_order(conn, &id).await?.is_none() {
                tracing::warn!("coupon refused for an order this service does not have");
                return Ok(());
            }
            store::add_timeline(conn, &id, "CouponApplyFailed", Some(&failed.detail)).await?;
            saga::cancel(
                conn,
                failed.order_id,
                CancelReason::CouponRejected,
                &failed.detail,
                cause,
                &inbound.trace,
            )
            .await?;
        }
        Event::CouponReleased(released) => {
            let id = released.order_id.to_string();
            if store::lock_order(conn, &id).await?.is_some() {
                store::add_timeline(conn, &id, "CouponReleased", None).await?;
            }
        }
        _ => {}
    }
    Ok(())
}
