//! The envelope every event travels in, and how it is encoded and decoded.
//!
//! Decoding is two steps so that it never panics and never confuses "I cannot read this"
//! with "this is not for me": the envelope is read first with the payload left as raw JSON,
//! then the payload is read as the type the envelope names. A type the contract does not know
//! is [`Decoded::Unknown`], which consumers ignore; anything unreadable is a [`DecodeError`],
//! which consumers reject.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::Event;

/// The only envelope version this contract writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One event with the metadata every event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique per event (UUID v7, so ids sort by time); consumers deduplicate on it.
    pub event_id: Uuid,
    /// When the producing service decided this event, to the millisecond.
    pub occurred_at: DateTime<Utc>,
    /// The service that produced it, such as `order-service`.
    pub producer: String,
    /// The event this one answers, if any: lets a trace be followed event by event.
    pub causation_id: Option<Uuid>,
    /// The payload; its variant is the envelope's `event_type`.
    pub event: Event,
}

impl Envelope {
    /// Wraps an event in a new envelope with a fresh id, stamped now.
    pub fn new(producer: &str, event: impl Into<Event>, causation_id: Option<Uuid>) -> Self {
        Envelope {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now().trunc_subsecs(3),
            producer: producer.to_owned(),
            causation_id,
            event: event.into(),
        }
    }

    /// The `event_type` of the payload.
    pub fn event_type(&self) -> &'static str {
        self.event.event_type()
    }

    /// The topic the event belongs on.
    pub fn topic(&self) -> &'static str {
        self.event.topic()
    }

    /// The message key: the order id for saga events, the product id for the catalog.
    pub fn key(&self) -> String {
        self.event.key()
    }

    /// Encodes the envelope as the JSON value of a Kafka message.
    pub fn to_json(&self) -> String {
        let wire = WireOut {
            event_id: self.event_id,
            event_type: self.event_type(),
            schema_version: SCHEMA_VERSION,
            occurred_at: self.occurred_at,
            producer: &self.producer,
            order_id: self.event.order_id(),
            causation_id: self.causation_id,
            payload: &self.event,
        };
        // Every field is a plain string, number or list of them, so serializing cannot fail.
        serde_json::to_string(&wire).expect("an envelope always serializes")
    }

    /// Decodes the value of a Kafka message and checks the event against the contract's
    /// rules ([`Event::validate`]). Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let wire: WireIn = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
        if wire.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(wire.schema_version));
        }
        match Event::from_parts(&wire.event_type, wire.payload) {
            Ok(Some(event)) => {
                event.validate().map_err(|source| DecodeError::Invalid {
                    event_type: wire.event_type.clone(),
                    source,
                })?;
                Ok(Decoded::Known(Envelope {
                    event_id: wire.event_id,
                    occurred_at: wire.occurred_at,
                    producer: wire.producer,
                    causation_id: wire.causation_id,
                    event,
                }))
            }
            Ok(None) => Ok(Decoded::Unknown {
                event_id: wire.event_id,
                event_type: wire.event_type,
            }),
            Err(source) => Err(DecodeError::Payload {
                event_type: wire.event_type,
                source,
            }),
        }
    }
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event of the contract.
    Known(Envelope),
    /// A well-formed envelope of a type this contract does not know: ignore it.
    Unknown { event_id: Uuid, event_type: String },
}

/// Why a message could not be decoded. Such a message can never be processed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is not a valid event envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("the envelope's schema_version {0} is not supported (expected {SCHEMA_VERSION})")]
    UnsupportedVersion(u32),
    #[error("the payload is not a valid {event_type}: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the {event_type} breaks the contract: {source}")]
    Invalid {
        event_type: String,
        #[source]
        source: crate::validate::Invalid,
    },
}

impl DecodeError {
    /// Every name [`DecodeError::kind`] gives, for metric series that exist from the start.
    pub const KINDS: [&'static str; 4] = ["envelope", "unsupported_version", "payload", "invalid"];

    /// A short name for the kind of error, for metric labels: one of [`DecodeError::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Envelope(_) => "envelope",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Payload { .. } => "payload",
            DecodeError::Invalid { .. } => "invalid",
        }
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    event_id: Uuid,
    event_type: &'a str,
    schema_version: u32,
    occurred_at: DateTime<Utc>,
    producer: &'a str,
    order_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: &'a Event,
}

#[derive(Deserialize)]
struct WireIn {
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    occurred_at: DateTime<Utc>,
    producer: String,
    #[serde(default)]
    causation_id: Option<Uuid>,
    payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::*;

    fn created() -> Envelope {
        Envelope::new(
            "order-service",
            OrderCreated {
                order_id: Uuid::now_v7(),
                user_id: 7,
                items: vec![OrderLine {
                    product_id: 1,
                    quantity: 2,
                    unit_price: 1500,
                }],
                total_amount: 3000,
                coupon_id: None,
                created_at: Utc::now().trunc_subsecs(3),
            },
            None,
        )
    }

    #[test]
    fn an_envelope_survives_encoding_and_decoding() {
        let envelope = created();
        let decoded = Envelope::decode(envelope.to_json().as_bytes()).expect("decodes");
        assert_eq!(decoded, Decoded::Known(envelope));
    }

    #[test]
    fn the_wire_form_names_the_type_and_order_beside_the_payload() {
        let envelope = created();
        let json: serde_json::Value = serde_json::from_str(&envelope.to_json()).expect("json");
        assert_eq!(json["event_type"], "OrderCreated");
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["order_id"], envelope.key());
        assert_eq!(json["payload"]["total_amount"], 3000);
        assert!(json["causation_id"].is_null());
    }

    #[test]
    fn an_unknown_event_type_is_reported_not_rejected() {
        let bytes = br#"{"event_id":"0193a0c4-0000-7000-8000-000000000000","event_type":"ParcelShipped",
            "schema_version":1,"occurred_at":"2026-11-24T08:00:00.123Z","producer":"x","payload":{}}"#;
        match Envelope::decode(bytes) {
            Ok(Decoded::Unknown { event_type, .. }) => assert_eq!(event_type, "ParcelShipped"),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[test]
    fn garbage_and_wrong_shapes_are_errors_not_panics() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"[1,2,3]",
            b"{\"event_type\":\"OrderCreated\"}",
            br#"{"event_id":"0193a0c4-0000-7000-8000-000000000000","event_type":"OrderCreated",
                "schema_version":1,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{"order_id":5}}"#,
            br#"{"event_id":"0193a0c4-0000-7000-8000-000000000000","event_type":"OrderCreated",
                "schema_version":9,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{}}"#,
        ];
        for input in inputs {
            assert!(Envelope::decode(input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn every_event_type_has_a_topic() {
        for event_type in Event::TYPES {
            assert!(Event::topic_of(event_type).is_some(), "{event_type}");
        }
    }
}
