//! Inbound: each system's webhook format parsed into [`ChangeEvent`]s at the edge.
//!
//! Parsers are pure functions of a [`WebhookRequest`]; the ingest step authenticates,
//! parses, queues and only then answers. [`WebhookError`] is the one place where a
//! failure becomes an HTTP status with a stable code and a safe message.

pub mod bc;
pub mod dataverse;
pub mod fo;
pub mod generic;
pub mod salesforce;

use crate::domain::ChangeEvent;
use serde::Serialize;
use thiserror::Error;

/// Largest body accepted (Dataverse caps its own payloads at 256 KB; leave room).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Deepest JSON accepted.
pub const MAX_JSON_DEPTH: usize = 32;

/// An HTTP request as the ingest step sees it (built from lambda_http or axum).
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a query string (`a=1&b=x%20y`) into pairs.
    pub fn parse_query(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }
}

/// Decodes `%XX` escapes and `+` as space.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the ingest step answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl WebhookResponse {
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What a parser found in a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Change events to queue.
    Events(Vec<ChangeEvent>),
    /// A subscription handshake to answer with this token (BC `validationToken`).
    Handshake(String),
}

/// Why a webhook was refused. Every variant maps to a 4xx except `Unavailable`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum WebhookError {
    #[error("missing or wrong credentials")]
    Unauthorized,
    /// A signed request whose timestamp is outside the replay window (or missing).
    #[error("the signature's timestamp is missing or more than {window_secs} s from now")]
    StaleSignature { window_secs: u64 },
    /// A signature already accepted within the replay window: each delivery is signed anew.
    #[error("this signature was already used")]
    ReplayedSignature,
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("content type `{0}` is not accepted by this endpoint")]
    UnsupportedMediaType(String),
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    /// Not well-formed XML, or XML with a DTD (never processed: no entities, no external
    /// references).
    #[error("body is not acceptable XML: {0}")]
    MalformedXml(String),
    #[error("JSON is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("payload is not a {format}: {message}")]
    InvalidPayload {
        format: &'static str,
        message: String,
    },
    #[error("entity `{0}` is not synced by p2c")]
    UnknownEntity(String),
    #[error("the payload has no `{0}`")]
    MissingKey(String),
    #[error("no webhook for system `{0}`")]
    UnknownSystem(String),
    /// A generic sender sent a change of a system it is not configured for.
    #[error("sender `{sender}` may not send changes of `{system}`")]
    SystemNotAllowed { sender: String, system: String },
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The change names no particular records (a Salesforce overflow event, or a wildcard
    /// record id): the entity must be resynchronised from the source.
    #[error("{entity} changes must be resynchronised from the source: {reason}")]
    ResyncRequired { entity: String, reason: String },
    /// The event could not be queued: the sender should retry (nothing was accepted).
    #[error("temporarily unavailable")]
    Unavailable,
}

/// The JSON error body: a stable code and a safe message.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub message: String,
}

impl WebhookError {
    /// The one mapping from error to HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::Unauthorized
            | WebhookError::StaleSignature { .. }
            | WebhookError::ReplayedSignature => 401,
            WebhookError::TooLarge { .. } => 413,
            WebhookError::UnsupportedMediaType(_) => 415,
            WebhookError::MalformedJson(_)
            | WebhookError::MalformedXml(_)
            | WebhookError::TooDeep(_) => 400,
            WebhookError::InvalidPayload { .. }
            | WebhookError::UnknownEntity(_)
            | WebhookError::MissingKey(_)
            | WebhookError::ResyncRequired { .. } => 422,
            WebhookError::SystemNotAllowed { .. } => 403,
            WebhookError::UnknownSystem(_) => 404,
            WebhookError::MethodNotAllowed(_) => 405,
            WebhookError::Unavailable => 503,
        }
    }

    /// The stable machine-readable code (listed in the README).
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Unauthorized => "unauthorized",
            WebhookError::StaleSignature { .. } => "stale_signature",
            WebhookError::ReplayedSignature => "replayed_signature",
            WebhookError::TooLarge { .. } => "payload_too_large",
            WebhookError::UnsupportedMediaType(_) => "unsupported_media_type",
            WebhookError::MalformedJson(_) => "malformed_json",
            WebhookError::MalformedXml(_) => "malformed_xml",
            WebhookError::TooDeep(_) => "json_too_deep",
            WebhookError::InvalidPayload { .. } => "invalid_payload",
            WebhookError::UnknownEntity(_) => "unknown_entity",
            WebhookError::MissingKey(_) => "missing_key",
            WebhookError::UnknownSystem(_) => "unknown_system",
            WebhookError::SystemNotAllowed { .. } => "system_not_allowed",
            WebhookError::MethodNotAllowed(_) => "method_not_allowed",
            WebhookError::ResyncRequired { .. } => "resync_required",
            WebhookError::Unavailable => "unavailable",
        }
    }

    pub fn response(&self) -> WebhookResponse {
        WebhookResponse::json(
            self.status(),
            &ErrorBody {
                error: self.code(),
                message: self.to_string(),
            },
        )
    }
}

/// True if brackets nest deeper than `max` (a scan of the raw bytes, before any parse:
/// deep input is refused without allocating anything for it).
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            // Strings are skipped whole: the next quote that is not escaped ends one
            // (memchr finds the candidates; most of a payload is string bytes).
            b'"' => {
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[i.min(body.len())..]) {
                        None => return false,
                        Some(n) if body[i + n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Size and content-type checks, then the depth scan (shared by every JSON format).
pub fn check_json_request(req: &WebhookRequest) -> Result<(), WebhookError> {
    check_size_and_type(req)?;
    if nests_deeper_than(&req.body, MAX_JSON_DEPTH) {
        return Err(WebhookError::TooDeep(MAX_JSON_DEPTH));
    }
    Ok(())
}

fn check_size_and_type(req: &WebhookRequest) -> Result<(), WebhookError> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    if let Some(ct) = req.header("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/json") || ct.contains("+json")) {
            return Err(WebhookError::UnsupportedMediaType(
                ct.chars().take(60).collect(),
            ));
        }
    }
    Ok(())
}

/// Parses a body into a type in one pass (no depth scan first). What the type does not
/// read is skipped without being built — serde_json skips it iteratively, so its nesting
/// costs no stack — and what it does read is held to the depth cap: `depth` answers how
/// deep the parsed value nests, counted from the document's root. A body that does not
/// parse is scanned whole, so a deep one is refused as `json_too_deep` as before.
/// Syntax errors are `malformed_json`, a valid document of the wrong shape is
/// `invalid_payload`.
pub fn parse_typed<T: serde::de::DeserializeOwned>(
    req: &WebhookRequest,
    format: &'static str,
    depth: impl FnOnce(&T) -> usize,
) -> Result<T, WebhookError> {
    check_size_and_type(req)?;
    let parsed: T = crate::json::from_bytes(&req.body).map_err(|e| {
        if nests_deeper_than(&req.body, MAX_JSON_DEPTH) {
            return WebhookError::TooDeep(MAX_JSON_DEPTH);
        }
        match e.classify() {
            serde_json::error::Category::Data => WebhookError::InvalidPayload {
                format,
                message: e.to_string(),
            },
            _ => WebhookError::MalformedJson(format!("line {}, column {}", e.line(), e.column())),
        }
    })?;
    if depth(&parsed) > MAX_JSON_DEPTH {
        return Err(WebhookError::TooDeep(MAX_JSON_DEPTH));
    }
    Ok(parsed)
}

/// How deep a value nests: 0 for a scalar, one more than its deepest member for an array
/// or object (serde_json builds at most 128 levels, so the recursion is bounded).
pub fn value_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks size, content type and depth, then parses JSON.
pub fn parse_json_body(req: &WebhookRequest) -> Result<serde_json::Value, WebhookError> {
    check_json_request(req)?;
    crate::json::from_bytes(&req.body).map_err(|e| {
        WebhookError::MalformedJson(format!("line {}, column {}", e.line(), e.column()))
    })
}

/// HMAC-SHA256 request signing, for senders that can sign (a relay in front of Finance &
/// Operations' business events, an Azure Function or Logic App forwarding them):
///
/// - `X-P2C-Timestamp`: the time of signing, Unix seconds;
/// - `X-P2C-Signature`: `sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>` under one of
///   the active secrets (several `sha256=` values, comma-separated, while a sender rotates).
///
/// A timestamp further than the window from now is refused (`stale_signature`), and so is a
/// signature this process has already accepted within the window (`replayed_signature`):
/// each delivery, retries included, is signed anew. (A replay reaching another instance is
/// the same event again and deduplicated downstream.) Tags are compared in constant time.
#[derive(Debug, Clone, Default)]
pub struct SignedAuth {
    /// Active secrets (several during a rotation).
    pub secrets: Vec<String>,
    /// How far a timestamp may be from now, in seconds (300 when 0).
    pub window_secs: u64,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], i64>>>,
}

/// The signatures remembered for replay checks, at most (expired ones are dropped first).
const MAX_REMEMBERED_SIGNATURES: usize = 100_000;

impl SignedAuth {
    pub fn new(secrets: Vec<String>, window_secs: u64) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            window_secs,
            seen: Default::default(),
        }
    }

    pub fn is_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    fn window(&self) -> i64 {
        match self.window_secs {
            0 => 300,
            w => w.min(86_400) as i64,
        }
    }

    /// The signature value for `body` at `timestamp` under `secret` (for senders and tests).
    pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "sha256={}",
            crate::json::hex(&Self::tag(secret, timestamp, body))
        )
    }

    fn tag(secret: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Checks a request at `now` (Unix seconds).
    pub fn check(&self, req: &WebhookRequest, now: i64) -> Result<(), WebhookError> {
        use subtle::ConstantTimeEq;
        if !self.is_configured() {
            return Err(WebhookError::Unauthorized);
        }
        let Some(signature) = req.header("x-p2c-signature") else {
            return Err(WebhookError::Unauthorized);
        };
        let window = self.window();
        let timestamp = req
            .header("x-p2c-timestamp")
            .and_then(|t| t.trim().parse::<i64>().ok())
            .filter(|t| (now - t).abs() <= window)
            .ok_or(WebhookError::StaleSignature {
                window_secs: window as u64,
            })?;
        let presented: Vec<[u8; 32]> = signature
            .split(',')
            .filter_map(|v| v.trim().strip_prefix("sha256="))
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .collect();
        let mut matched: Option<[u8; 32]> = None;
        for secret in &self.secrets {
            let expected = Self::tag(secret, timestamp, &req.body);
            for p in &presented {
                if bool::from(expected.ct_eq(p)) {
                    matched = Some(expected);
                }
            }
        }
        let tag = matched.ok_or(WebhookError::Unauthorized)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&tag).is_some_and(|until| *until >= now) {
            return Err(WebhookError::ReplayedSignature);
        }
        if seen.len() >= MAX_REMEMBERED_SIGNATURES {
            seen.retain(|_, until| *until >= now);
        }
        if seen.len() < MAX_REMEMBERED_SIGNATURES {
            seen.insert(tag, timestamp + window);
        }
        Ok(())
    }
}

/// Constant-time check of a presented secret against any of the active ones.
pub fn secret_matches(presented: &str, active: &[String]) -> bool {
    use subtle::ConstantTimeEq;
    let mut ok = subtle::Choice::from(0u8);
    for s in active {
        if s.is_empty() {
            continue;
        }
        // Lengths leak only whether lengths differ, which is not the secret.
        if s.len() == presented.len() {
            ok |= s.as_bytes().ct_eq(presented.as_bytes());
        }
    }
    bool::from(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &str, headers: &[(&str, String)]) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/fo".into(),
            query: vec![],
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn signatures_are_checked_in_their_window_once_each_under_any_active_secret() {
        let auth = SignedAuth::new(vec!["old-secret".into(), "new-secret".into()], 300);
        let now = 1_780_000_000;
        let body = r#"{"BusinessEventId":"SalesInvoicePostedBusinessEvent"}"#;
        let req = |ts: i64, sig: String| {
            signed(
                body,
                &[
                    ("x-p2c-timestamp", ts.to_string()),
                    ("x-p2c-signature", sig),
                ],
            )
        };
        // Either active secret; several signatures in the header while a sender rotates.
        let first = req(now, SignedAuth::sign("new-secret", now, body.as_bytes()));
        assert_eq!(auth.check(&first, now), Ok(()));
        let rotating = req(
            now - 10,
            format!(
                "sha256={},{}",
                "ab".repeat(32),
                SignedAuth::sign("old-secret", now - 10, body.as_bytes())
            ),
        );
        assert_eq!(auth.check(&rotating, now), Ok(()));
        // The same signed request again: a replay.
        assert_eq!(
            auth.check(&first, now + 5),
            Err(WebhookError::ReplayedSignature)
        );
        // Signed anew (a retry), it is accepted.
        let retry = req(
            now + 6,
            SignedAuth::sign("new-secret", now + 6, body.as_bytes()),
        );
        assert_eq!(auth.check(&retry, now + 6), Ok(()));
        // Outside the window, or without a timestamp: stale.
        let old = req(
            now - 301,
            SignedAuth::sign("new-secret", now - 301, body.as_bytes()),
        );
        assert_eq!(
            auth.check(&old, now).map_err(|e| e.code()),
            Err("stale_signature")
        );
        let untimed = signed(
            body,
            &[(
                "x-p2c-signature",
                SignedAuth::sign("new-secret", now, body.as_bytes()),
            )],
        );
        assert_eq!(
            auth.check(&untimed, now).map_err(|e| e.code()),
            Err("stale_signature")
        );
        // A wrong secret, a changed body, a changed timestamp, no signature: unauthorized.
        for bad in [
            req(now, SignedAuth::sign("guess", now, body.as_bytes())),
            req(now, SignedAuth::sign("new-secret", now, b"{}")),
            req(
                now + 1,
                SignedAuth::sign("new-secret", now, body.as_bytes()),
            ),
            req(now, String::new()),
            req(now, "sha256=not-hex".into()),
        ] {
            assert_eq!(auth.check(&bad, now), Err(WebhookError::Unauthorized));
        }
        assert_eq!(WebhookError::ReplayedSignature.status(), 401);
        // Not configured: nothing is accepted.
        assert_eq!(
            SignedAuth::new(vec![String::new()], 300).check(&first, now),
            Err(WebhookError::Unauthorized)
        );
    }

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            WebhookRequest::parse_query("validationToken=a%20b+c&x="),
            vec![
                ("validationToken".into(), "a b c".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%é%41"), "%éA");
    }

    #[test]
    fn depth_is_measured_outside_strings() {
        assert!(nests_deeper_than(b"[[[1]]]", 2));
        assert!(!nests_deeper_than(b"[[[1]]]", 3));
        assert!(!nests_deeper_than(br#"{"a": "[[[[[[", "b": "\"[[["}"#, 1));
        // An escaped backslash ends before the quote; the bracket after it counts.
        assert!(nests_deeper_than(br#"{"a": "x\\", "b": [[1]]}"#, 2));
        assert!(!nests_deeper_than(br#"{"a": "x\\\"[[[", "b": 1}"#, 1));
        // Unterminated strings and a trailing backslash end the scan without a panic.
        assert!(!nests_deeper_than(br#"{"a": "[[[["#, 1));
        assert!(!nests_deeper_than(b"{\"a\\", 1));
    }

    /// The byte-at-a-time scan the memchr one replaced, as the reference.
    fn reference_depth(body: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in body {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    #[test]
    fn the_fast_depth_scan_agrees_with_the_reference_on_every_prefix() {
        let samples: [&[u8]; 3] = [
            include_bytes!("../../../../tests/fixtures/dataverse_account_update.json"),
            include_bytes!("../../../../tests/fixtures/bc_webhook_notification.json"),
            br#"{"a":"\\\"[","b":[{"c":"]\\"},[[["x\\\\"]]]]}"#,
        ];
        for body in samples {
            for end in 0..=body.len() {
                for max in [1, 2, 3, 5, 64] {
                    assert_eq!(
                        nests_deeper_than(&body[..end], max),
                        reference_depth(&body[..end], max),
                        "prefix of {end} bytes, max {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn secrets_match_any_active_one_and_never_empty() {
        let active = vec!["old-secret".to_string(), "new-secret".to_string()];
        assert!(secret_matches("new-secret", &active));
        assert!(secret_matches("old-secret", &active));
        assert!(!secret_matches("new-secreT", &active));
        assert!(!secret_matches("", &[String::new()]));
    }
}
