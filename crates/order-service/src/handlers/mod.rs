//! One module per consumed topic: [`stock_events`], [`coupon_events`], [`product_catalog`].
//! The order service consumes all three in one consumer group, so [`OrderServiceEvents`]
//! sends each event to its module.

pub mod coupon_events;
pub mod product_catalog;
pub mod stock_events;

use contract::Event;
use eventing::{HandleError, Handler, Inbound};
use kit::Conn;

use crate::saga::SagaMetrics;

/// The handler of everything the order service consumes; `metrics` gets each order's saga
/// duration once the event that ended it commits.
#[derive(Debug, Clone)]
pub struct OrderServiceEvents {
    pub metrics: SagaMetrics,
}

impl Handler for OrderServiceEvents {
    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        let ended = match &inbound.envelope.event {
            Event::StockReserved(_)
            | Event::StockReservationFailed(_)
            | Event::StockReleased(_) => stock_events::handle(conn, inbound).await?,
            Event::CouponApplied(_) | Event::CouponApplyFailed(_) | Event::CouponReleased(_) => {
                coupon_events::handle(conn, inbound).await?
            }
            Event::ProductUpserted(product) => {
                product_catalog::handle(conn, inbound, product).await?;
                None
            }
            // The order service's own events come back only if someone misroutes them.
            _ => None,
        };
        if let Some(ended) = ended {
            let metrics = self.metrics.clone();
            inbound.on_commit(move || ended.observe(&metrics));
        }
        Ok(())
    }
}
