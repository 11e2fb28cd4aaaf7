//! `stock.events`: a reservation (checked to cover exactly the order's lines; anything else is
//! dead-lettered) confirms the order (once the coupon, if any, is applied too);
//! a failed reservation (checked: not of an order whose stock is reserved) cancels it
//! (OUT_OF_STOCK); a release is noted on its timeline.

use contract::{CancelReason, Event};
use eventing::{HandleError, Inbound};
use kit::Conn;

use crate::domain;
use crate::saga::{self, Ended};
use crate::store;

/// Applies one event; returns the order's end if the event brought it.
pub async fn handle(conn: &mut Conn, inbound: &Inbound) -> Result<Option<Ended>, HandleError> {
    let ended = match &inbound.envelope.event {
        Event::StockReserved(reserved) => {
            // A reservation must be of this order's lines, or it is forged or broken.
            let lines = store::order_lines(conn, &reserved.order_id.to_string()).await?;
            if !lines.is_empty() {
                domain::check_stock_reserved(&lines, &reserved.items)
                    .map_err(HandleError::Permanent)?;
            }
            let marked = store::mark_stock_reserved(conn, &reserved.order_id.to_string()).await?;
            saga::step_succeeded(conn, inbound, reserved.order_id, marked, None).await?
        }
        Event::StockReservationFailed(failed) => {
            // A failure of a reservation that was made is forged or broken: it never cancels.
            if let Some(order) = store::find_order(conn, &failed.order_id.to_string()).await? {
                domain::check_stock_failed(order.stock_reserved).map_err(HandleError::Permanent)?;
            }
            let reason = CancelReason::OutOfStock;
            saga::step_failed(conn, inbound, failed.order_id, reason, &failed.detail).await?
        }
        Event::StockReleased(released) => {
            saga::note(conn, inbound, released.order_id, None).await?;
            None
        }
        _ => None,
    };
    Ok(ended)
}
