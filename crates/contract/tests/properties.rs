//! Properties of the contract's decoding, which reads whatever anyone wrote to a topic: it
//! never panics, it accepts only events that keep the contract's rules, and what it accepts
//! is exactly what was encoded.

use contract::{Decoded, Envelope, Event, topics};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, a few levels deep, with the numbers and strings that break things most:
/// extremes, negatives, huge and empty strings, NUL.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            any::<i64>()
        ]
        .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just(String::new()),
            Just("\0".to_owned()),
            Just("x".repeat(20_000)),
            Just("0193a0c4-0000-7000-8000-000000000000".to_owned()),
            Just("2026-11-24T08:00:00Z".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("order_id".to_owned()),
                    Just("items".to_owned()),
                    Just("quantity".to_owned()),
                    Just("product_id".to_owned()),
                    Just("unit_price".to_owned()),
                    Just("total_amount".to_owned()),
                    Just("coupon_id".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope of a known event type around any payload.
fn envelope_around(event_type: &'static str, payload: Value) -> Vec<u8> {
    json!({
        "event_id": "0193a0c4-0000-7000-8000-000000000000",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-24T08:00:00.123Z",
        "producer": "order-service",
        "payload": payload,
    })
    .to_string()
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_decode_to_an_answer_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn any_payload_of_a_known_type_is_accepted_only_if_it_keeps_the_rules(
        event_type in prop::sample::select(Event::TYPES.to_vec()),
        payload in any_json(),
    ) {
        if let Ok(Decoded::Known(envelope)) = Envelope::decode(&envelope_around(event_type, payload)) {
            // Whatever decoding accepts keeps the rules, is placed on its own topic, and
            // encodes to what decodes back to it.
            prop_assert_eq!(envelope.event.validate(), Ok(()));
            prop_assert_eq!(Event::topic_of(event_type), Some(envelope.topic()));
            let again = Envelope::decode(envelope.to_json().as_bytes());
            prop_assert_eq!(again.ok(), Some(Decoded::Known(envelope.clone())));
            // And its provenance is judged, never panicked over, on every topic.
            for topic in topics::TOPICS {
                let _ = envelope.check_provenance(topic.name);
            }
        }
    }

    #[test]
    fn an_order_with_lines_past_the_bounds_never_decodes(
        quantity in prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0), contract::validate::MAX_QUANTITY + 1..i64::MAX],
        duplicate in any::<bool>(),
    ) {
        let line = json!({ "product_id": 1, "quantity": quantity, "unit_price": 0 });
        let mut items = vec![line.clone()];
        if duplicate {
            items.push(line);
        }
        let payload = json!({
            "order_id": "0193a0c4-0000-7000-8000-000000000000", "user_id": 1,
            "items": items, "total_amount": 0, "created_at": "2026-11-24T08:00:00Z",
        });
        let decoded = Envelope::decode(&envelope_around("OrderCreated", payload));
        prop_assert!(decoded.is_err(), "{decoded:?}");
    }

    #[test]
    fn an_order_of_one_product_on_two_lines_never_decodes(
        first in 1..1_000i64,
        second in 1..1_000i64,
        price in 0..10_000i64,
    ) {
        let line = |quantity: i64| json!({ "product_id": 7, "quantity": quantity, "unit_price": price });
        let payload = json!({
            "order_id": "0193a0c4-0000-7000-8000-000000000000", "user_id": 1,
            "items": [line(first), line(second)], "total_amount": (first + second) * price,
            "created_at": "2026-11-24T08:00:00Z",
        });
        prop_assert!(Envelope::decode(&envelope_around("OrderCreated", payload)).is_err());
    }
}
