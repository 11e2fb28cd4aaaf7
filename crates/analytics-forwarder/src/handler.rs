//! `order.events`: each order event becomes a delivery row, in the transaction that records
//! the event as consumed. Nothing here waits for the data platform.

use contract::Event;
use eventing::{Conn, HandleError, Handler, Inbound};

use crate::store;

/// The handler of `order.events`.
#[derive(Debug, Clone, Copy)]
pub struct OrderEvents;

impl Handler for OrderEvents {
    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        let envelope = &inbound.envelope;
        let forwarded = matches!(
            envelope.event,
            Event::OrderCreated(_) | Event::OrderConfirmed(_) | Event::OrderCancelled(_)
        );
        if !forwarded {
            return Ok(());
        }
        store::insert_delivery(
            conn,
            &envelope.event_id.to_string(),
            &envelope.key(),
            envelope.event_type(),
            &envelope.to_json(),
            &inbound.trace.child().header(),
        )
        .await?;
        Ok(())
    }
}
