//! `order.events`: each order event becomes a delivery row, in the transaction that records
//! the event as consumed. Nothing here waits for the data platform.

use contract::{Envelope, Event};
use eventing::{HandleError, Handler, Inbound};
use kit::Conn;

use crate::store;

/// The handler of `order.events`.
#[derive(Debug, Clone, Copy)]
pub struct OrderEvents;

impl Handler for OrderEvents {
    /// The events forwarded: an order's creation and its end.
    fn concerns(&self, event: &Envelope) -> bool {
        matches!(
            event.event,
            Event::OrderCreated(_) | Event::OrderConfirmed(_) | Event::OrderCancelled(_)
        )
    }

    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        let envelope = &inbound.envelope;
        if !self.concerns(envelope) {
            return Ok(());
        }
        store::insert_delivery(
            conn,
            &store::NewDelivery {
                event_id: &envelope.event_id.to_string(),
                order_id: &envelope.key(),
                event_type: envelope.event_type(),
                body: &envelope.to_json(),
                traceparent: &inbound.trace.header(),
                source_partition: inbound.partition,
                source_offset: inbound.offset,
            },
        )
        .await?;
        Ok(())
    }
}
