//! One module per consumed topic: [`stock_events`], [`coupon_events`], [`product_catalog`].
//! The order service consumes all three in one consumer group, so [`OrderServiceEvents`]
//! sends each event to its module.

pub mod coupon_events;
pub mod product_catalog;
pub mod stock_events;

use contract::Event;
use eventing::{Conn, HandleError, Handler, Inbound};

/// The handler of everything the order service consumes.
#[derive(Debug, Clone, Copy)]
pub struct OrderServiceEvents;

impl Handler for OrderServiceEvents {
    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        match &inbound.envelope.event {
            Event::StockReserved(_)
            | Event::StockReservationFailed(_)
            | Event::StockReleased(_) => stock_events::handle(conn, inbound).await,
            Event::CouponApplied(_) | Event::CouponApplyFailed(_) | Event::CouponReleased(_) => {
                coupon_events::handle(conn, inbound).await
            }
            Event::ProductUpserted(product) => product_catalog::handle(conn, product).await,
            // The order service's own events come back only if someone misroutes them.
            _ => Ok(()),
        }
    }
}
