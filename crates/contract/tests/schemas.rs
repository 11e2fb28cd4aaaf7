//! The committed JSON Schemas in `schemas/` are exactly what the Rust types generate.

use std::path::PathBuf;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn the_committed_schemas_match_the_types() {
    let dir = schemas_dir();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    let expected = contract::schema::schema_files();
    for (name, text) in &expected {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, text).expect("write schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            drifted.push(name.clone());
        }
    }
    let committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("schemas/ exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    for name in committed {
        if !expected.iter().any(|(n, _)| *n == name) {
            drifted.push(format!("{name} (no such event type)"));
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas/ differs from the types for {drifted:?}; run `UPDATE_SCHEMAS=1 cargo test -p contract` and commit"
    );
}

#[test]
fn an_encoded_event_validates_shape_against_its_schema() {
    // A light check that the schema describes what is really written: every required
    // property of the envelope schema is present in an encoded event.
    let files = contract::schema::schema_files();
    let (_, text) = files
        .iter()
        .find(|(name, _)| name == "ProductUpserted.json")
        .expect("ProductUpserted schema");
    let schema: serde_json::Value = serde_json::from_str(text).expect("schema json");
    let envelope = contract::Envelope::new(
        "product-service",
        contract::ProductUpserted {
            product_id: 1,
            name: "Mug".into(),
            price: 1200,
        },
        None,
    );
    let value: serde_json::Value = serde_json::from_str(&envelope.to_json()).expect("json");
    for required in schema["required"].as_array().expect("required list") {
        let field = required.as_str().expect("field name");
        assert!(value.get(field).is_some(), "encoded event lacks {field}");
    }
    assert_eq!(
        schema["properties"]["event_type"]["const"],
        "ProductUpserted"
    );
}
