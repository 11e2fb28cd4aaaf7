//! `shopctl trace <order-id>`: every event of one order across the saga topics, in time order,
//! with the service that produced it, its type, trace id and a short summary.

use std::time::Duration;

use contract::{Decoded, Envelope, Event, topics};
use rdkafka::Message;

use crate::kafka;

/// One event of an order, as the trace shows it.
#[derive(Debug, Clone)]
pub struct Step {
    pub envelope: Envelope,
    pub topic: String,
    pub trace_id: String,
}

impl Step {
    /// The step a message of a saga topic is, if it is an event this version knows.
    pub fn of(message: &impl Message) -> Option<Step> {
        let Ok(Decoded::Known(envelope)) = Envelope::decode(message.payload().unwrap_or_default())
        else {
            return None;
        };
        let trace_id = kafka::headers(message)
            .into_iter()
            .find(|(k, _)| k == topics::HEADER_TRACEPARENT)
            .and_then(|(_, v)| v.split('-').nth(1).map(str::to_owned))
            .unwrap_or_default();
        Some(Step {
            envelope,
            topic: message.topic().to_owned(),
            trace_id,
        })
    }
}

/// The topics an order's saga is told on, in the order a trace reads them.
pub const SAGA_TOPICS: [&str; 3] = [
    topics::ORDER_EVENTS,
    topics::STOCK_EVENTS,
    topics::COUPON_EVENTS,
];

/// Reads the saga topics to their end and keeps the events of `order_id`, oldest first.
pub fn collect(
    settings: &eventing::kafka::KafkaSettings,
    order_id: &str,
) -> anyhow::Result<Vec<Step>> {
    let messages = ops::read::read_to_end(settings, &SAGA_TOPICS, Duration::from_secs(60))?;
    let mut steps: Vec<Step> = messages
        .iter()
        .filter(|m| m.key() == Some(order_id.as_bytes()))
        .filter_map(Step::of)
        .collect();
    steps.sort_by_key(|s| (s.envelope.occurred_at, s.envelope.event_id));
    Ok(steps)
}

/// A few words on what an event says.
pub fn summary(event: &Event) -> String {
    match event {
        Event::OrderCreated(e) => format!(
            "user {} · {} line(s) · total {}{}",
            e.user_id,
            e.items.len(),
            e.total_amount,
            e.coupon_id
                .map(|c| format!(" · coupon {c}"))
                .unwrap_or_default()
        ),
        Event::OrderConfirmed(e) => {
            format!("final {} (discount {})", e.final_amount, e.discount_amount)
        }
        Event::OrderCancelled(e) => format!("{}: {}", e.reason.as_str(), e.detail),
        Event::StockReserved(e) => lines(&e.items),
        Event::StockReleased(e) => lines(&e.items),
        Event::StockReservationFailed(e) => e.detail.clone(),
        Event::CouponApplied(e) => {
            format!("coupon {} takes {} off", e.coupon_id, e.discount_amount)
        }
        Event::CouponApplyFailed(e) => e.detail.clone(),
        Event::CouponReleased(e) => format!("coupon {} available again", e.coupon_id),
        Event::ProductUpserted(e) => format!("{} at {}", e.name, e.price),
    }
}

fn lines(items: &[contract::StockLine]) -> String {
    items
        .iter()
        .map(|l| format!("{} × product {}", l.quantity, l.product_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the trace as a table.
pub fn print(order_id: &str, steps: &[Step]) {
    if steps.is_empty() {
        println!("no events for order {order_id}");
        return;
    }
    println!(
        "{:<24} {:<16} {:<23} {:<32} summary",
        "occurred_at", "service", "event", "trace_id"
    );
    for step in steps {
        println!(
            "{:<24} {:<16} {:<23} {:<32} {}",
            step.envelope.occurred_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            step.envelope.producer,
            step.envelope.event_type(),
            step.trace_id,
            summary(&step.envelope.event)
        );
    }
}
