//! JSON Schemas of the contract, generated from the Rust types.
//!
//! `schemas/<EventType>.json` at the top of the repository holds one schema per event type:
//! the whole envelope, with `event_type` fixed to that type and `payload` described in full.
//! The test `tests/schemas.rs` fails when the committed files differ from what the types
//! generate; run it with `UPDATE_SCHEMAS=1` to write them anew.

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema};
use serde_json::json;
use uuid::Uuid;

use crate::envelope::SCHEMA_VERSION;
use crate::events::{Event, PayloadVisitor};

/// The envelope around a payload `P`, for schema generation only: the real envelope is
/// [`crate::Envelope`], whose payload is the [`Event`] enum.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct EnvelopeOf<P> {
    /// Unique per event (UUID v7); consumers deduplicate on it.
    event_id: Uuid,
    /// The type of the payload.
    event_type: String,
    /// The envelope version.
    schema_version: u32,
    /// When the producing service decided this event.
    occurred_at: DateTime<Utc>,
    /// The service that produced the event.
    producer: String,
    /// The order the event belongs to; null for catalog events.
    order_id: Option<Uuid>,
    /// The event this one answers, if any.
    causation_id: Option<Uuid>,
    /// The event itself.
    payload: P,
}

/// The JSON Schema of each event type's whole envelope, payload included.
pub fn envelope_schemas() -> Vec<(&'static str, Schema)> {
    struct Schemas(Vec<(&'static str, Schema)>);
    impl PayloadVisitor for Schemas {
        fn visit<P: JsonSchema>(&mut self, event_type: &'static str) {
            self.0.push((event_type, envelope_schema::<P>(event_type)));
        }
    }
    let mut schemas = Schemas(Vec::new());
    Event::visit_payloads(&mut schemas);
    schemas.0
}

/// The schema of an envelope carrying a `P`, with its type and version fixed.
fn envelope_schema<P: JsonSchema>(event_type: &str) -> Schema {
    let mut schema = schemars::schema_for!(EnvelopeOf<P>);
    schema.insert("title".into(), json!(event_type));
    // The payload's own doc comment says what the event means; the envelope's would not.
    let description = schema
        .get("$defs")
        .and_then(|defs| defs.get(event_type))
        .and_then(|payload| payload.get("description"))
        .cloned()
        .unwrap_or_else(|| json!(format!("The {event_type} event.")));
    schema.insert("description".into(), description);
    if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.insert("event_type".into(), json!({ "const": event_type }));
        properties.insert("schema_version".into(), json!({ "const": SCHEMA_VERSION }));
    }
    schema
}

/// Every schema file of `schemas/`: its file name and its pretty-printed contents.
pub fn schema_files() -> Vec<(String, String)> {
    envelope_schemas()
        .into_iter()
        .map(|(event_type, schema)| {
            let mut text =
                serde_json::to_string_pretty(&schema).expect("a schema always serializes");
            text.push('\n');
            (format!("{event_type}.json"), text)
        })
        .collect()
}
