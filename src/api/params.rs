//! Reads a panel call's fields from wherever the client put them: the query string, a form
//! body, a multipart body or a JSON object.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use serde_json::Value;

use super::ApiError;

/// The fields of one call. A field in the body wins over the same field in the query string.
#[derive(Debug, Default)]
pub struct Params {
    fields: HashMap<String, String>,
}

/// The fields any panel call uses; others are ignored, so no number of unknown fields can
/// crowd out the ones that matter.
const KNOWN_FIELDS: [&str; 12] = [
    "key", "action", "service", "link", "quantity", "runs", "interval", "order", "orders",
    "refill", "refills", "comments",
];

const TOO_LARGE: ApiError = ApiError::Transport(StatusCode::PAYLOAD_TOO_LARGE, "Request too large");

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The field, unless it is missing or blank.
    pub fn get_nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    fn put(&mut self, name: String, value: String) {
        if KNOWN_FIELDS.contains(&name.as_str()) {
            self.fields.insert(name, value);
        }
    }

    pub async fn from_request(request: Request, max_body: usize) -> Result<Params, ApiError> {
        let mut params = Params::default();
        if let Some(query) = request.uri().query() {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                params.put(name.into_owned(), value.into_owned());
            }
        }

        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();

        // A declared length past the limit is refused before any of the body is waited for.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body as u64) {
            return Err(TOO_LARGE);
        }

        if content_type.starts_with("multipart/form-data") {
            params.read_multipart(request, max_body).await?;
            return Ok(params);
        }

        let body = axum::body::to_bytes(request.into_body(), max_body)
            .await
            .map_err(|e| {
                let over_limit = std::error::Error::source(&e)
                    .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
                if over_limit {
                    TOO_LARGE
                } else {
                    ApiError::Transport(StatusCode::BAD_REQUEST, "Malformed request body")
                }
            })?;
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
        let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Ok(params);
        };

        // JSON is read when declared, and also when a body that starts like a JSON object comes
        // with no form content type (scripts often omit or mislabel it).
        let declared_form = content_type.starts_with("application/x-www-form-urlencoded");
        if content_type.contains("json") || (*first == b'{' && !declared_form) {
            params.read_json(body)?;
        } else {
            // Form encoding is what panel clients send, with or without the header.
            for (name, value) in form_urlencoded::parse(body) {
                params.put(name.into_owned(), value.into_owned());
            }
        }
        Ok(params)
    }

    fn read_json(&mut self, body: &[u8]) -> Result<(), ApiError> {
        let malformed = ApiError::Transport(StatusCode::BAD_REQUEST, "Malformed JSON body");
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Err(malformed);
        };
        for (name, value) in object {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                // `orders` sent as a JSON list of ids.
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Null | Value::Object(_) => continue,
            };
            self.put(name, text);
        }
        Ok(())
    }

    async fn read_multipart(&mut self, request: Request, max_body: usize) -> Result<(), ApiError> {
        let malformed = || ApiError::Transport(StatusCode::BAD_REQUEST, "Malformed multipart body");
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|_| malformed())?;
        let mut total = 0usize;
        while let Some(field) = multipart.next_field().await.map_err(|_| malformed())? {
            let Some(name) = field.name().map(str::to_string) else {
                continue;
            };
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    TOO_LARGE
                } else {
                    malformed()
                }
            })?;
            total += bytes.len();
            if total > max_body {
                return Err(TOO_LARGE);
            }
            self.put(name, String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(())
    }
}
