//! Reading compose service definitions, shared by this crate's tests: `tests/compose.rs`
//! checks `docker-compose.yml`, `deploy/Dockerfile` and `deploy/` against the code, and
//! `tests/rehearsal` runs the topology for real in network namespaces, since Docker cannot
//! run where the tests run.

use std::collections::BTreeMap;

use yaml_serde::Value;

/// A service's `environment` as compose gives it: each variable's value as text (a number or
/// a boolean as YAML writes it, a variable without a value empty).
pub fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => yaml_serde::to_string(other)
                            .expect("a scalar")
                            .trim()
                            .to_owned(),
                    };
                    (k.as_str().expect("a variable's name").to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}
