//! The HTTP layer every connector shares: bearer tokens, JSON bodies, and the one
//! classification of responses — 2xx ok; 408, 429, 5xx and transport failures transient
//! (with `Retry-After`, in seconds or as an HTTP date); every other 4xx permanent, with
//! the target's own error message kept for the dead-letter record.

use crate::domain::System;
use crate::error::DeliveryError;
use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Supplies bearer tokens for a target system.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<String, DeliveryError>;
    /// Forgets a token the target refused (401), so the next call fetches a new one.
    async fn invalidate(&self) {}
}

/// A fixed token (simulated counterparts, or a token supplied by the environment).
pub struct StaticToken(pub String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, DeliveryError> {
        Ok(self.0.clone())
    }
}

/// A response that was accepted (2xx).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub entity_id_header: Option<String>,
}

/// A JSON-over-HTTP client for one system. Built once per process and shared.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    system: System,
    token: Arc<dyn TokenSource>,
}

/// An HTTP client for calls to `system`: p2c's user agent, a connect timeout of 5 s and
/// `timeout` for the whole request.
pub(crate) fn client(system: System, timeout: Duration) -> Result<reqwest::Client, DeliveryError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("p2c/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Permanent {
            system: system.to_string(),
            status: 0,
            message: format!("cannot build the HTTP client: {e}"),
        })
}

impl Http {
    pub fn new(system: System, token: Arc<dyn TokenSource>) -> Result<Self, DeliveryError> {
        let client = client(system, Duration::from_secs(30))?;
        Ok(Self {
            client,
            system,
            token,
        })
    }

    pub fn system(&self) -> System {
        self.system
    }

    /// Sends a request; `headers` are extra headers; `query` is encoded properly.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, DeliveryError> {
        match self
            .send_once(method.clone(), url, query, headers, body)
            .await
        {
            // The token was refused (revoked, or expired early): once more with a new one.
            Err(DeliveryError::Permanent { status: 401, .. }) => {
                self.token.invalidate().await;
                self.send_once(method, url, query, headers, body).await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, DeliveryError> {
        let token = self.token.token().await?;
        let mut req = self
            .client
            .request(method, url)
            .bearer_auth(token)
            .header("Accept", "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let resp = req.send().await.map_err(|e| DeliveryError::Transient {
            system: self.system.to_string(),
            status: 0,
            message: format!("transport: {}", without_url(&e)),
            retry_after_ms: None,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let entity_id_header = resp
            .headers()
            .get("odata-entityid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.chars().take(2000).collect()))
        };
        classify(self.system, status, body, retry_after, entity_id_header)
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // Never log query strings (they can carry keys): keep only the error kind.
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), u.path());
    }
    s
}

fn classify(
    system: System,
    status: StatusCode,
    body: Value,
    retry_after: Option<Duration>,
    entity_id_header: Option<String>,
) -> Result<Reply, DeliveryError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(Reply {
            status: code,
            body,
            entity_id_header,
        });
    }
    let message = target_message(&body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    if code == 408 || code == 429 || status.is_server_error() {
        Err(DeliveryError::Transient {
            system: system.to_string(),
            status: code,
            message,
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    } else {
        Err(DeliveryError::Permanent {
            system: system.to_string(),
            status: code,
            message,
        })
    }
}

/// The target's own error text: OData `{"error":{"code","message"}}` or a plain string.
pub fn target_message(body: &Value) -> Option<String> {
    // Salesforce: `[{"message": …, "errorCode": …}, …]`.
    if let Some(list) = body.as_array() {
        let parts: Vec<String> = list
            .iter()
            .filter_map(|e| {
                let msg = e.get("message").and_then(Value::as_str)?;
                Some(match e.get("errorCode").and_then(Value::as_str) {
                    Some(c) if !c.is_empty() => format!("{c}: {msg}"),
                    _ => msg.to_string(),
                })
            })
            .collect();
        return (!parts.is_empty()).then(|| parts.join("; "));
    }
    let err = body.get("error")?;
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| err.as_str())?;
    let code = err.get("code").and_then(Value::as_str);
    Some(match code {
        Some(c) if !c.is_empty() => format!("{c}: {msg}"),
        _ => msg.to_string(),
    })
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(
        Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)).min(Duration::from_secs(3600)),
    )
}

/// An OData string literal: single quotes doubled.
pub fn odata_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified_once() {
        let b = serde_json::json!({"error": {"code": "0x80040217", "message": "account does not exist"}});
        match classify(System::Dataverse, StatusCode::NOT_FOUND, b, None, None) {
            Err(DeliveryError::Permanent {
                status: 404,
                message,
                ..
            }) => assert_eq!(message, "0x80040217: account does not exist"),
            other => panic!("{other:?}"),
        }
        match classify(
            System::BusinessCentral,
            StatusCode::TOO_MANY_REQUESTS,
            Value::Null,
            Some(Duration::from_secs(7)),
            None,
        ) {
            Err(DeliveryError::Transient {
                status: 429,
                retry_after_ms: Some(7000),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(
                System::BusinessCentral,
                StatusCode::REQUEST_TIMEOUT,
                Value::Null,
                None,
                None
            ),
            Err(DeliveryError::Transient { .. })
        ));
        assert!(matches!(
            classify(
                System::BusinessCentral,
                StatusCode::BAD_GATEWAY,
                Value::Null,
                None,
                None
            ),
            Err(DeliveryError::Transient { .. })
        ));
        assert!(classify(
            System::Dataverse,
            StatusCode::NO_CONTENT,
            Value::Null,
            None,
            None
        )
        .is_ok());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn odata_literals_escape_quotes() {
        assert_eq!(odata_literal("O'Brien"), "'O''Brien'");
    }
}
