//! Binary payloads in JSON bodies.
//!
//! Inputs, results and frames are bytes to the engine. Over HTTP a client sends
//! either `input` (any JSON value, stored as its JSON text) or `input_base64`
//! (exact bytes). Responses carry both views: `<name>_base64` always (exact
//! bytes) and `<name>` when the bytes are JSON (else the text, if UTF-8).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;

/// Bytes from a request's JSON / base64 pair of fields.
pub fn decode_input(
    field: &str,
    json: Option<Value>,
    base64: Option<String>,
) -> Result<Vec<u8>, ApiError> {
    match (json, base64) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!(
            "give `{field}` or `{field}_base64`, not both"
        ))),
        (Some(value), None) => Ok(serde_json::to_vec(&value).expect("a JSON value serialises")),
        (None, Some(text)) => STANDARD
            .decode(text.as_bytes())
            .map_err(|e| ApiError::invalid(format!("{field}_base64: {e}"))),
        (None, None) => Ok(Vec::new()),
    }
}

/// Both views of stored bytes.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Payload {
    /// The bytes as JSON, or as a string when they are UTF-8 but not JSON.
    pub value: Option<Value>,
    pub base64: String,
}

impl Payload {
    pub fn of(bytes: &[u8]) -> Self {
        let value = serde_json::from_slice::<Value>(bytes).ok().or_else(|| {
            std::str::from_utf8(bytes)
                .ok()
                .map(|s| Value::String(s.into()))
        });
        Self {
            value: if bytes.is_empty() { None } else { value },
            base64: STANDARD.encode(bytes),
        }
    }
}
