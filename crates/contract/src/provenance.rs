//! Provenance: whether an event comes from where the contract says it must.
//!
//! Each event type belongs to exactly one topic, and each topic has exactly one producing
//! service ([`crate::topics::FLOWS`]). The broker's ACLs decide which credential may write a
//! topic; they cannot see what a message says. So a consumer checks, before any handler sees
//! an event, that its type belongs to the topic it arrived on and that its envelope names that
//! topic's producer. Anything else is forged or misrouted and is dead-lettered unapplied: a
//! `StockReserved` written to `coupon.events` by the coupon service's credential must never
//! confirm an order.

use crate::envelope::Envelope;
use crate::topics;

/// Why an event does not belong where it arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misplaced {
    /// The event's type belongs to another topic (or to none of the contract's).
    #[error("a {event_type} arrived on {topic}, but it belongs on {belongs}")]
    WrongTopic {
        event_type: &'static str,
        topic: String,
        belongs: &'static str,
    },
    /// The envelope names a producer other than the one service that produces the topic.
    #[error("{topic} is produced by {expected} alone, but this {event_type} claims {producer}")]
    WrongProducer {
        event_type: &'static str,
        topic: &'static str,
        producer: String,
        expected: &'static str,
    },
}

impl Misplaced {
    /// Every name [`Misplaced::kind`] gives, for metric series that exist from the start.
    pub const KINDS: [&'static str; 2] = ["wrong_topic", "wrong_producer"];

    /// A short name for the kind of mismatch, for metric labels: one of [`Misplaced::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Misplaced::WrongTopic { .. } => "wrong_topic",
            Misplaced::WrongProducer { .. } => "wrong_producer",
        }
    }
}

impl Envelope {
    /// Checks that this event may have arrived on `topic`: its type belongs to that topic, and
    /// its envelope's producer is the topic's producer.
    pub fn check_provenance(&self, topic: &str) -> Result<(), Misplaced> {
        let event_type = self.event_type();
        let belongs = self.topic();
        if belongs != topic {
            return Err(Misplaced::WrongTopic {
                event_type,
                topic: topic.to_owned(),
                belongs,
            });
        }
        // Every topic an event type belongs to has exactly one producer (a unit test of
        // `topics` holds the contract to that), so a missing one cannot happen.
        let expected = topics::producer_of(belongs).map_or("no service", topics::Service::name);
        if self.producer != expected {
            return Err(Misplaced::WrongProducer {
                event_type,
                topic: belongs,
                producer: self.producer.clone(),
                expected,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::*;
    use uuid::Uuid;

    fn reserved(producer: &str) -> Envelope {
        Envelope::new(
            producer,
            StockReserved {
                order_id: Uuid::now_v7(),
                items: vec![StockLine {
                    product_id: 1,
                    quantity: 1,
                }],
            },
            None,
        )
    }

    #[test]
    fn an_event_from_its_own_producer_on_its_own_topic_is_accepted() {
        assert_eq!(
            reserved("product-service").check_provenance(topics::STOCK_EVENTS),
            Ok(())
        );
    }

    #[test]
    fn an_event_on_another_topic_is_misplaced_whoever_claims_it() {
        for producer in ["product-service", "coupon-service"] {
            let error = reserved(producer)
                .check_provenance(topics::COUPON_EVENTS)
                .expect_err("misplaced");
            assert_eq!(error.kind(), "wrong_topic", "{error}");
        }
        let error = reserved("product-service")
            .check_provenance("stock.events.elsewhere")
            .expect_err("misplaced");
        assert_eq!(error.kind(), "wrong_topic");
    }

    #[test]
    fn an_event_claiming_another_producer_is_misplaced_on_its_own_topic() {
        let error = reserved("coupon-service")
            .check_provenance(topics::STOCK_EVENTS)
            .expect_err("misplaced");
        assert_eq!(error.kind(), "wrong_producer");
        assert_eq!(
            error.to_string(),
            "stock.events is produced by product-service alone, but this StockReserved claims coupon-service"
        );
    }
}
