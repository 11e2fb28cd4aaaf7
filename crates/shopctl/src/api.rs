//! `shopctl order|product|coupon …`: shortcuts over the services' HTTP APIs that print the
//! JSON answer, and fail with the service's error code, or clearly when nobody answers.

use anyhow::{Context, bail};
use serde_json::Value;

/// One call to a service.
#[derive(Debug)]
pub struct Call<'a> {
    pub service: &'a str,
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<Value>,
    pub idempotency_key: Option<&'a str>,
}

/// Makes the call and returns the JSON body of a 2xx answer; anything else is an error that
/// says what the service said.
pub async fn call(call: Call<'_>) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let mut request = client.request(call.method.clone(), &call.url);
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    if let Some(key) = call.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach {} at {}; is it running? (shopctl up)",
            call.service, call.url
        )
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("{} answered {status}: {code}: {message}", call.service);
    }
    Ok(body)
}

/// `product_id:quantity` as given on the command line.
pub fn parse_item(text: &str) -> Result<(i64, i64), String> {
    let (product, quantity) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not PRODUCT_ID:QUANTITY"))?;
    let product = product
        .trim()
        .parse()
        .map_err(|_| format!("`{product}` is not a product id"))?;
    let quantity = quantity
        .trim()
        .parse()
        .map_err(|_| format!("`{quantity}` is not a quantity"))?;
    Ok((product, quantity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_product_colon_quantity() {
        assert_eq!(parse_item("3:2"), Ok((3, 2)));
        assert!(parse_item("3").is_err());
        assert!(parse_item("x:2").is_err());
    }
}
