//! OpenAPI 3.1 documents, built from the request and response types themselves: each service
//! lists its operations next to its router, and the JSON Schemas of bodies come from the same
//! Rust types the handlers parse and return (via `schemars`). `GET /openapi.json` serves it.
//!
//! Every operation also documents the JSON error body all services answer with, under the
//! statuses it can fail with.

use axum::Json;
use axum::routing::get;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// The error body every service answers with.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// Machine-readable, such as `invalid_quantity`.
    code: String,
    /// For people.
    message: String,
}

/// The type of a path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A positive 64-bit id: a product's, a coupon's.
    Integer,
    /// A UUID: an order's.
    Uuid,
}

/// An OpenAPI document under construction.
pub struct OpenApi {
    title: &'static str,
    description: &'static str,
    generator: SchemaGenerator,
    paths: Map<String, Value>,
    /// Whether an operation needs the admin token, so the document declares its scheme.
    admin: bool,
}

/// The name of the admin token's security scheme in the documents.
const ADMIN_SCHEME: &str = "adminToken";

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi")
            .field("title", &self.title)
            .finish()
    }
}

/// One operation under construction: add its parts, then [`Operation::add`] it.
pub struct Operation<'a> {
    api: &'a mut OpenApi,
    method: &'static str,
    path: &'static str,
    value: Map<String, Value>,
}

impl OpenApi {
    /// A document for the service called `title`.
    pub fn new(title: &'static str, description: &'static str) -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
        });
        OpenApi {
            title,
            description,
            generator: settings.into_generator(),
            paths: Map::new(),
            admin: false,
        }
    }

    /// Starts an operation: `method` in lower case, `path` with `{name}` parameters.
    pub fn operation(
        &mut self,
        method: &'static str,
        path: &'static str,
        summary: &str,
    ) -> Operation<'_> {
        let mut value = Map::new();
        value.insert("summary".into(), json!(summary));
        value.insert("responses".into(), json!({}));
        Operation {
            api: self,
            method,
            path,
            value,
        }
    }

    /// The document, as served at `/openapi.json`.
    pub fn document(mut self) -> Value {
        // The error body is part of every document, even one whose operations cannot fail.
        self.generator.subschema_for::<ErrorBody>();
        let schemas = self.generator.take_definitions(true);
        let mut components = json!({ "schemas": schemas });
        if self.admin {
            components["securitySchemes"] = json!({
                ADMIN_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the service's ADMIN_TOKEN",
                },
            });
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "description": self.description,
                "version": env!("CARGO_PKG_VERSION"),
            },
            "paths": self.paths,
            "components": components,
        })
    }
}

impl Operation<'_> {
    /// A path parameter.
    pub fn param(self, name: &str, kind: Param) -> Self {
        let schema = match kind {
            Param::Integer => {
                json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX })
            }
            Param::Uuid => json!({ "type": "string", "format": "uuid" }),
        };
        self.parameter(json!({ "name": name, "in": "path", "required": true, "schema": schema }))
    }

    /// The `Idempotency-Key` request header, with the rule [`crate::http::idempotency_key`]
    /// applies to it.
    pub fn idempotency_key(self, required: bool, description: &str) -> Self {
        self.parameter(json!({
            "name": "Idempotency-Key", "in": "header", "required": required,
            "description": description,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": crate::http::MAX_IDEMPOTENCY_KEY_LEN,
                "pattern": crate::http::IDEMPOTENCY_KEY_PATTERN,
            },
        }))
    }

    fn parameter(mut self, parameter: Value) -> Self {
        let params = self.value.entry("parameters").or_insert_with(|| json!([]));
        if let Some(list) = params.as_array_mut() {
            list.push(parameter);
        }
        self
    }

    /// Marks the operation as an operator endpoint: it needs the admin token
    /// (`Authorization: Bearer`) and answers 401 without it.
    pub fn admin(mut self) -> Self {
        self.api.admin = true;
        self.value
            .insert("security".into(), json!([{ ADMIN_SCHEME: [] }]));
        self.errors(&[401])
    }

    /// The JSON request body.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        let schema = self.api.generator.subschema_for::<T>();
        self.value.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": schema } } }),
        );
        self
    }

    /// A JSON response.
    pub fn response<T: JsonSchema>(mut self, status: u16, description: &str) -> Self {
        let schema = self.api.generator.subschema_for::<T>();
        self.respond(
            status,
            json!({
                "description": description,
                "content": { "application/json": { "schema": schema } },
            }),
        );
        self
    }

    /// Error responses with the common JSON error body.
    pub fn errors(mut self, statuses: &[u16]) -> Self {
        let schema = self.api.generator.subschema_for::<ErrorBody>();
        for status in statuses {
            self.respond(
                *status,
                json!({
                    "description": "the request failed; `error.code` says why",
                    "content": { "application/json": { "schema": schema.clone() } },
                }),
            );
        }
        self
    }

    fn respond(&mut self, status: u16, response: Value) {
        if let Some(responses) = self
            .value
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        {
            responses.insert(status.to_string(), response);
        }
    }

    /// Adds the operation to the document.
    pub fn add(self) {
        let item = self.api.paths.entry(self.path).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(self.method.into(), Value::Object(self.value));
        }
    }
}

/// `GET /openapi.json`, serving `document`.
pub fn route(document: Value) -> axum::Router {
    axum::Router::new().route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Thing {
        id: i64,
    }

    #[test]
    fn a_document_lists_operations_with_schemas_from_the_types() {
        let mut api = OpenApi::new("things", "Things.");
        api.operation("post", "/things", "Make a thing")
            .body::<Thing>()
            .response::<Thing>(201, "the thing")
            .errors(&[422])
            .add();
        api.operation("get", "/things/{id}", "Show a thing")
            .param("id", Param::Integer)
            .response::<Thing>(200, "the thing")
            .add();
        let doc = api.document();
        assert_eq!(doc["openapi"], "3.1.0");
        let post = &doc["paths"]["/things"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Thing"
        );
        assert!(post["responses"]["422"].is_object());
        assert_eq!(
            doc["components"]["schemas"]["Thing"]["properties"]["id"]["type"],
            "integer"
        );
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        assert_eq!(
            doc["paths"]["/things/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
    }
}
