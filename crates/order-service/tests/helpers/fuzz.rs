//! A small schema-driven fuzzer: reads a service's `/openapi.json` and sends each operation
//! many requests generated from its schemas, most of them slightly wrong (wrong types,
//! missing or unknown fields, extreme numbers, odd strings, bad path parameters, bad
//! headers, malformed JSON). Every answer must be below 500 and, when 4xx, the JSON error
//! body every service promises.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// One request that got a wrong answer.
#[derive(Debug)]
pub struct Finding {
    pub request: String,
    pub status: u16,
    pub body: String,
}

/// Sends `rounds` generated requests to every operation of the service at `base`.
pub async fn fuzz(
    http: &reqwest::Client,
    base: &str,
    rounds: usize,
    seed: u64,
) -> (usize, Vec<Finding>) {
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("openapi json");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0;
    let mut findings = Vec::new();
    let paths = doc["paths"].as_object().expect("paths").clone();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("operations") {
            for round in 0..rounds {
                let url = format!("{base}{}", fill_path(&path, operation, &mut rng));
                let method =
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let mut request = http.request(method.clone(), &url);
                if rng.random_bool(0.5) {
                    request = request.header("Idempotency-Key", odd_header(&mut rng));
                }
                let described = if let Some(schema) =
                    operation.pointer("/requestBody/content/application~1json/schema")
                {
                    if round % 10 == 9 {
                        let raw = ["{", "[1,", "null", "\"x\"", "{\"a\":}", "\u{0}"]
                            .choose(&mut rng)
                            .copied()
                            .unwrap_or("{");
                        let content_type = ["application/json", "text/plain"]
                            .choose(&mut rng)
                            .copied()
                            .unwrap_or("application/json");
                        request = request.header("content-type", content_type).body(raw);
                        format!("{method} {url} raw {raw:?} as {content_type}")
                    } else {
                        let body = generate(schema, &doc, &mut rng, 0);
                        request = request.json(&body);
                        format!("{method} {url} {body}")
                    }
                } else {
                    format!("{method} {url}")
                };
                let response = request.send().await.expect("the service answers");
                sent += 1;
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let well_formed_error = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .is_some();
                if status >= 500 || ((400..500).contains(&status) && !well_formed_error) {
                    findings.push(Finding {
                        request: described,
                        status,
                        body: text,
                    });
                }
            }
        }
    }
    (sent, findings)
}

fn fill_path(path: &str, operation: &Value, rng: &mut StdRng) -> String {
    let mut filled = path.to_owned();
    for param in operation["parameters"].as_array().into_iter().flatten() {
        if param["in"] != "path" {
            continue;
        }
        let name = param["name"].as_str().unwrap_or_default();
        let value = if param["schema"]["type"] == "integer" {
            [
                "1",
                "2",
                "0",
                "-1",
                "9223372036854775807",
                "99999999999999999999",
                "abc",
                "1.5",
            ]
            .choose(rng)
            .map(|s| (*s).to_owned())
            .unwrap_or_default()
        } else {
            let uuid = uuid::Uuid::now_v7().to_string();
            [
                uuid.as_str(),
                "abc",
                "%00",
                "..",
                "0193a0c4-0000-7000-8000-00000000000g",
                &"x".repeat(300),
            ]
            .choose(rng)
            .map(|s| (*s).to_owned())
            .unwrap_or_default()
        };
        filled = filled.replace(&format!("{{{name}}}"), &value);
    }
    filled
}

fn odd_header(rng: &mut StdRng) -> String {
    let long = "k".repeat(300);
    [
        "checkout-1",
        " ",
        "ключ",
        "a b",
        long.as_str(),
        "ok-key",
        "\t",
    ]
    .choose(rng)
    .map(|s| (*s).to_owned())
    .unwrap_or_default()
}

fn resolve<'a>(schema: &'a Value, doc: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => doc
            .pointer(reference.trim_start_matches('#'))
            .map(|target| resolve(target, doc))
            .unwrap_or(schema),
        None => schema,
    }
}

/// A value for `schema`, usually close to valid, sometimes not at all.
fn generate(schema: &Value, doc: &Value, rng: &mut StdRng, depth: usize) -> Value {
    let schema = resolve(schema, doc);
    if depth > 4 || rng.random_bool(0.08) {
        return anything(rng);
    }
    if let Some(choices) = schema["oneOf"].as_array().or(schema["anyOf"].as_array())
        && let Some(choice) = choices.choose(rng)
    {
        return generate(choice, doc, rng, depth + 1);
    }
    if let Some(values) = schema["enum"].as_array() {
        return if rng.random_bool(0.8) {
            values.choose(rng).cloned().unwrap_or(Value::Null)
        } else {
            json!("NOT_A_VALUE")
        };
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => types
            .choose(rng)
            .and_then(Value::as_str)
            .unwrap_or("null")
            .to_owned(),
        _ => return anything(rng),
    };
    match kind.as_str() {
        "integer" => json!(
            [
                0,
                1,
                2,
                3,
                5,
                -1,
                100,
                10_001,
                i64::MAX,
                i64::MIN,
                rng.random_range(-1000..1000)
            ]
            .choose(rng)
            .copied()
            .unwrap_or(1)
        ),
        "number" => json!(
            [0.0, 0.5, 1.0, -1.0, 1e300]
                .choose(rng)
                .copied()
                .unwrap_or(0.0)
        ),
        "boolean" => json!(rng.random_bool(0.5)),
        "null" => Value::Null,
        "string" => {
            if schema["format"] == "date-time" && rng.random_bool(0.7) {
                return json!(
                    ["2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "not a date"]
                        .choose(rng)
                        .copied()
                        .unwrap_or("")
                );
            }
            json!(
                [
                    "",
                    "Mug",
                    "ü ñ 漢字",
                    "a\u{0}b",
                    "x".repeat(250).as_str(),
                    "   ",
                    "FIXED",
                    "PERCENT"
                ]
                .choose(rng)
                .map(|s| (*s).to_owned())
                .unwrap_or_default()
            )
        }
        "array" => {
            let count = *[0usize, 1, 2, 3, 101].choose(rng).unwrap_or(&1);
            let items = &schema["items"];
            Value::Array(
                (0..count)
                    .map(|_| generate(items, doc, rng, depth + 1))
                    .collect(),
            )
        }
        "object" => {
            let mut object = Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                let keep = if required.contains(&name.as_str()) {
                    rng.random_bool(0.9)
                } else {
                    rng.random_bool(0.5)
                };
                if keep {
                    object.insert(name.clone(), generate(property, doc, rng, depth + 1));
                }
            }
            if rng.random_bool(0.1) {
                object.insert("unexpected".into(), json!(true));
            }
            Value::Object(object)
        }
        _ => anything(rng),
    }
}

fn anything(rng: &mut StdRng) -> Value {
    [
        json!(null),
        json!(true),
        json!(-7),
        json!(1e20),
        json!("?"),
        json!([]),
        json!({}),
        json!([{"a": [1, "b"]}]),
    ]
    .choose(rng)
    .cloned()
    .unwrap_or(Value::Null)
}
