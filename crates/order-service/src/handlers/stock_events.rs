//! `stock.events`: a reservation confirms the order (once the coupon, if any, is applied too);
//! a failed reservation cancels it (OUT_OF_STOCK); a release is noted on its timeline.

use contract::{CancelReason, Event};
use eventing::{Conn, HandleError, Inbound};

use crate::{saga, store};

pub async fn handle(conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
    let cause = Some(inbound.envelope.event_id);
    match &inbound.envelope.event {
        Event::StockReserved(reserved) => {
            let id = reserved.order_id.to_string();
            let Some(order) = store::mark_stock_reserved(conn, &id).await? else {
                tracing::warn!("stock reserved for an order this service does not have");
                return Ok(());
            };
            store::add_timeline(conn, &id, "StockReserved", None).await?;
            saga::confirm_if_ready(conn, &order, cause, &inbound.trace).await?;
        }
        Event::StockReservationFailed(failed) => {
            let id = failed.order_id.to_string();
            if store::lock_order(conn, &id).await?.is_none() {
                tracing::warn!("stock failed for an order this service does not have");
                return Ok(());
            }
            store::add_timeline(conn, &id, "StockReservationFailed", Some(&failed.detail)).await?;
            saga::cancel(
                conn,
                failed.order_id,
                CancelReason::OutOfStock,
                &failed.detail,
                cause,
                &inbound.trace,
            )
            .await?;
        }
        Event::StockReleased(released) => {
            let id = released.order_id.to_string();
            if store::lock_order(conn, &id).await?.is_some() {
                store::add_timeline(conn, &id, "StockReleased", None).await?;
            }
        }
        _ => {}
    }
    Ok(())
}
