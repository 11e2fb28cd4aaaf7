//! `coupon.events`: an applied coupon (checked against the order: its coupon, and the discount
//! the coupon's kind and value give; anything else is dead-lettered) sets the discount and
//! confirms the order (once stock is reserved too); a refused coupon (checked: the order's own,
//! not yet applied) cancels it (COUPON_REJECTED); a restored coupon is noted on its timeline.

use contract::{CancelReason, Event};
use eventing::{HandleError, Inbound};
use kit::Conn;

use crate::domain;
use crate::saga::{self, Ended};
use crate::store;

/// Applies one event; returns the order's end if the event brought it.
pub async fn handle(conn: &mut Conn, inbound: &Inbound) -> Result<Option<Ended>, HandleError> {
    let ended = match &inbound.envelope.event {
        Event::CouponApplied(applied) => {
            let id = applied.order_id.to_string();
            // Checked against the order as placed here, never trusted as it comes.
            if let Some(order) = store::find_order(conn, &id).await? {
                domain::check_coupon_applied(order.coupon_id, order.total_amount, applied)
                    .map_err(HandleError::Permanent)?;
            }
            let marked = store::mark_coupon_applied(conn, &id, applied.discount_amount).await?;
            let detail = format!(
                "coupon {} takes {} off",
                applied.coupon_id, applied.discount_amount
            );
            saga::step_succeeded(conn, inbound, applied.order_id, marked, Some(&detail)).await?
        }
        Event::CouponApplyFailed(failed) => {
            // Only a refusal of the order's own coupon, not yet applied, cancels it.
            if let Some(order) = store::find_order(conn, &failed.order_id.to_string()).await? {
                domain::check_coupon_failed(
                    order.coupon_id,
                    order.coupon_applied,
                    failed.coupon_id,
                )
                .map_err(HandleError::Permanent)?;
            }
            let reason = CancelReason::CouponRejected;
            saga::step_failed(conn, inbound, failed.order_id, reason, &failed.detail).await?
        }
        Event::CouponReleased(released) => {
            saga::note(conn, inbound, released.order_id, None).await?;
            None
        }
        _ => None,
    };
    Ok(ended)
}
