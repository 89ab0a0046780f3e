//! An upstream panel as provider: the same panel API playpanel serves, spoken as a client.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{Placement, Progress, Provider, ProviderState};

/// A client of another panel's API.
pub struct UpstreamPanel {
    http: reqwest::Client,
    url: String,
    key: String,
}

/// Refusals that say "not now" rather than "never".
const BUSY_ANSWERS: [&str; 2] = ["active order", "not enough funds"];

impl UpstreamPanel {
    pub fn new(url: &str, key: &str, timeout: Duration) -> anyhow::Result<UpstreamPanel> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(UpstreamPanel {
            http,
            url: url.to_string(),
            key: key.to_string(),
        })
    }

    async fn call(&self, fields: &[(&str, &str)]) -> Result<Value, CallError> {
        let mut form = vec![("key", self.key.as_str())];
        form.extend_from_slice(fields);
        let response = self
            .http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::NotSent(format!("could not connect to the provider: {e}"))
                } else {
                    CallError::NoAnswer(format!("no answer from the provider: {e}"))
                }
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::NoAnswer(format!("provider answer cut off: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|_| CallError::NoAnswer(format!("provider answered {status} with no JSON")))
    }
}

enum CallError {
    NotSent(String),
    NoAnswer(String),
}

/// Panels send numbers as strings or as numbers; both are read.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The error a panel answered, if any: an `error` that is null, false or empty is no error
/// (some panels send `"error": null` beside a successful answer).
fn error_of(value: &Value) -> Option<String> {
    match value.get("error")? {
        Value::Null | Value::Bool(false) => None,
        other => {
            Some(text_of(other).unwrap_or_else(|| other.to_string())).filter(|e| !e.is_empty())
        }
    }
}

#[async_trait]
impl Provider for UpstreamPanel {
    async fn place(&self, service: u64, link: &str, quantity: u64) -> Placement {
        let placement = self.place_once(service, link, quantity).await;
        metrics::counter!("playpanel_provider_calls_total", "call" => "add",
            "outcome" => placement.label())
        .increment(1);
        placement
    }

    async fn progress(&self, provider_order: &str) -> Result<Progress, String> {
        let progress = self.progress_once(provider_order).await;
        let outcome = if progress.is_ok() { "ok" } else { "error" };
        metrics::counter!("playpanel_provider_calls_total", "call" => "status",
            "outcome" => outcome)
        .increment(1);
        progress
    }

    async fn cancel(&self, provider_order: &str) -> Result<bool, String> {
        let canceled = self.cancel_once(provider_order).await;
        let outcome = match canceled {
            Ok(true) => "accepted",
            Ok(false) => "declined",
            Err(_) => "error",
        };
        metrics::counter!("playpanel_provider_calls_total", "call" => "cancel",
            "outcome" => outcome)
        .increment(1);
        canceled
    }
}

impl UpstreamPanel {
    async fn place_once(&self, service: u64, link: &str, quantity: u64) -> Placement {
        let service = service.to_string();
        let quantity = quantity.to_string();
        let fields = [
            ("action", "add"),
            ("service", service.as_str()),
            ("link", link),
            ("quantity", quantity.as_str()),
        ];
        let answer = match self.call(&fields).await {
            Ok(answer) => answer,
            Err(CallError::NotSent(why)) => return Placement::NotSent(why),
            Err(CallError::NoAnswer(why)) => return Placement::Unknown(why),
        };
        if let Some(error) = error_of(&answer) {
            let lower = error.to_ascii_lowercase();
            if BUSY_ANSWERS.iter().any(|busy| lower.contains(busy)) {
                return Placement::Busy(error);
            }
            return Placement::Refused(error);
        }
        match answer.get("order").and_then(text_of) {
            Some(id) if !id.is_empty() => Placement::Placed(id),
            // An answer without an id may still have created an order upstream.
            _ => Placement::Unknown(format!("provider answer without an order id: {answer}")),
        }
    }

    async fn cancel_once(&self, provider_order: &str) -> Result<bool, String> {
        let answer = self
            .call(&[("action", "cancel"), ("orders", provider_order)])
            .await
            .map_err(|e| match e {
                CallError::NotSent(why) | CallError::NoAnswer(why) => why,
            })?;
        // `[{"order": 9, "cancel": 1}]`, or an error for the order or for the whole call.
        if error_of(&answer).is_some() {
            return Ok(false);
        }
        let accepted = answer
            .as_array()
            .and_then(|items| items.first())
            .and_then(|item| item.get("cancel"))
            .is_some_and(|c| c.as_i64() == Some(1) || c.as_str() == Some("1") || c == true);
        Ok(accepted)
    }

    async fn progress_once(&self, provider_order: &str) -> Result<Progress, String> {
        let answer = self
            .call(&[("action", "status"), ("order", provider_order)])
            .await
            .map_err(|e| match e {
                CallError::NotSent(why) | CallError::NoAnswer(why) => why,
            })?;
        if let Some(error) = error_of(&answer) {
            return Err(format!("provider status error: {error}"));
        }
        let status = answer.get("status").and_then(text_of).unwrap_or_default();
        let state = match status.to_ascii_lowercase().as_str() {
            "pending" => ProviderState::Pending,
            "in progress" | "processing" | "inprogress" => ProviderState::InProgress,
            "completed" | "partial" => ProviderState::Done,
            "canceled" | "cancelled" | "refunded" => ProviderState::Canceled,
            _ => return Err(format!("provider status {status:?} not understood")),
        };
        let remains = answer
            .get("remains")
            .and_then(text_of)
            .and_then(|r| r.parse::<i64>().ok())
            .map(|r| r.max(0) as u64);
        Ok(Progress { state, remains })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_real_errors_count() {
        assert_eq!(error_of(&json!({"order": 5, "error": null})), None);
        assert_eq!(error_of(&json!({"order": 5, "error": ""})), None);
        assert_eq!(error_of(&json!({"order": 5, "error": false})), None);
        assert_eq!(error_of(&json!({"order": 5})), None);
        assert_eq!(
            error_of(&json!({"error": "Incorrect link"})).as_deref(),
            Some("Incorrect link")
        );
        assert_eq!(
            error_of(&json!({"error": {"code": 1}})).as_deref(),
            Some("{\"code\":1}")
        );
    }
}
