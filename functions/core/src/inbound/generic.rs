//! Generic senders: any program that pushes changes to p2c in p2c's own event format,
//! signed with HMAC-SHA256 (`POST /webhooks/events`).
//!
//! For a system whose native events p2c cannot receive where it runs (an on-premises
//! Business Central behind a firewall with a job queue posting outwards, an F&O relay, a
//! middleware already listening to the CRM), or for a replay tool. A sender is named in the
//! `X-P2C-Sender` header, has its own secrets (several while rotating) and may speak only
//! for the systems it is configured for. Every request is signed as F&O relays sign theirs
//! ([`SignedAuth`]): `X-P2C-Timestamp` (Unix seconds) and `X-P2C-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, within the replay window, each
//! signature accepted once.
//!
//! The body is `{"events": [ … ]}`, at most [`MAX_EVENTS`] events, each:
//!
//! | field | | |
//! |---|---|---|
//! | `event_id` | required | unique per change (1–128 characters); a retry of the same change repeats it |
//! | `system` | required | the system the record lives in: `dataverse`, `salesforce`, `business_central`, `fin_ops` |
//! | `entity` | required | `account`, `contact`, `item`, `quote`, `order`, `invoice`, `payment` |
//! | `id` | required | the record's id in that system (F&O: `<dataAreaId>:<key>`) |
//! | `operation` | | `create`, `update` (the default) or `delete` |
//! | `version` | required | `{"sequence": <u64>}` (the system's own counter) and/or `{"modified": "<RFC 3339>"}`: how p2c keeps per-record order |
//! | `fields` | required unless deleting | the record after the change, as that system's API returns it (the shape p2c reads when it fetches a record itself) |
//! | `previous` | | the record before the change, where known |
//! | `natural_key` | | the business key (account number, item number, …) |
//! | `company` | | the company or legal entity |
//! | `user_id` | | who made the change in the source (p2c's own integration user marks an echo) |
//!
//! Unknown fields are refused (a misspelt `fields` would otherwise be silently empty). A
//! generic event is never read back from the source: the sender sends the record.

use super::{check_json_request, SignedAuth, WebhookError, WebhookRequest};
use crate::domain::{
    ChangeEvent, EntityType, EventId, Operation, Origin, SourceRef, SourceVersion, System,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Most events in one request.
pub const MAX_EVENTS: usize = 500;
const FORMAT: &str = "p2c event batch";

/// One configured sender.
#[derive(Debug, Clone)]
pub struct Sender {
    pub name: String,
    /// The systems this sender may send changes of.
    pub systems: Vec<System>,
    pub auth: SignedAuth,
}

/// The configured senders (none: the endpoint refuses everything with 401).
#[derive(Debug, Clone, Default)]
pub struct Senders(Vec<Sender>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderConfig {
    systems: Vec<String>,
    secrets: Vec<String>,
}

impl Senders {
    pub fn new(senders: Vec<Sender>) -> Self {
        Self(senders)
    }

    /// Reads `P2C_SENDERS`' JSON: `{"<name>": {"systems": ["business_central"], "secrets":
    /// ["…", "…"]}}`. A bad configuration is an error at start-up, not a sender silently
    /// refused later; the message never quotes a secret.
    pub fn from_json(json: &str, window_secs: u64) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: BTreeMap<String, SenderConfig> = serde_json::from_str(json).map_err(|e| {
            format!(
                "P2C_SENDERS is not {{\"<sender>\": {{\"systems\": [..], \"secrets\": [..]}}}} \
                 (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let mut out = Vec::new();
        for (name, cfg) in raw {
            if !valid_name(&name) {
                return Err(format!(
                    "sender name `{}` must be 1-64 characters of a-z, 0-9, `-` and `_`",
                    name.chars().take(64).collect::<String>()
                ));
            }
            if cfg.systems.is_empty() {
                return Err(format!("sender `{name}` has no systems"));
            }
            let systems = cfg
                .systems
                .iter()
                .map(|s| {
                    s.parse::<System>()
                        .map_err(|e| format!("sender `{name}`: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let auth = SignedAuth::new(cfg.secrets, window_secs);
            if !auth.is_configured() {
                return Err(format!("sender `{name}` has no secrets"));
            }
            out.push(Sender {
                name,
                systems,
                auth,
            });
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Authenticates the request (which sender, its signature), then parses its events and
    /// checks the sender may speak for each event's system.
    pub fn accept(
        &self,
        req: &WebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<ChangeEvent>, WebhookError> {
        let name = req.header("x-p2c-sender").unwrap_or_default().trim();
        // An unknown sender is told no more than a wrong signature is.
        let sender = self
            .0
            .iter()
            .find(|s| s.name == name)
            .ok_or(WebhookError::Unauthorized)?;
        sender.auth.check(req, now.timestamp())?;
        let events = parse(req, &sender.name, now)?;
        if let Some(ev) = events
            .iter()
            .find(|ev| !sender.systems.contains(&ev.source.system))
        {
            return Err(WebhookError::SystemNotAllowed {
                sender: sender.name.clone(),
                system: ev.source.system.as_str().to_string(),
            });
        }
        Ok(events)
    }
}

/// Signs `req` as sender `sender` with `secret` at `timestamp` (Unix seconds): the three
/// headers a generic sender sends (for Rust senders, tests and tools).
pub fn sign_request(req: &mut WebhookRequest, sender: &str, secret: &str, timestamp: i64) {
    let signature = SignedAuth::sign(secret, timestamp, &req.body);
    req.headers.extend([
        ("x-p2c-sender".to_string(), sender.to_string()),
        ("x-p2c-timestamp".to_string(), timestamp.to_string()),
        ("x-p2c-signature".to_string(), signature),
    ]);
}

/// A signed `POST /webhooks/events` carrying `body` (a JSON batch) from `sender`.
pub fn signed_request(body: Vec<u8>, sender: &str, secret: &str, timestamp: i64) -> WebhookRequest {
    let mut req = WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/events".into(),
        query: vec![],
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    };
    sign_request(&mut req, sender, secret, timestamp);
    req
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    event_id: String,
    system: String,
    entity: String,
    id: String,
    #[serde(default)]
    operation: Option<String>,
    version: Version,
    #[serde(default)]
    fields: Option<Map<String, Value>>,
    #[serde(default)]
    previous: Option<Map<String, Value>>,
    #[serde(default)]
    natural_key: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Version {
    #[serde(default)]
    sequence: Option<u64>,
    #[serde(default)]
    modified: Option<String>,
}

/// Parses a batch sent by `sender` (already authenticated).
pub fn parse(
    req: &WebhookRequest,
    sender: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    check_json_request(req)?;
    let batch: Batch = crate::json::from_bytes(&req.body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => WebhookError::InvalidPayload {
            format: FORMAT,
            message: e.to_string(),
        },
        _ => WebhookError::MalformedJson(format!("line {}, column {}", e.line(), e.column())),
    })?;
    if batch.events.is_empty() {
        return Err(invalid("`events` is empty"));
    }
    if batch.events.len() > MAX_EVENTS {
        return Err(invalid(format!(
            "{} events in one request; at most {MAX_EVENTS}",
            batch.events.len()
        )));
    }
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, ev)| event(ev, sender, now).map_err(|e| at(i, e)))
        .collect()
}

fn event(ev: Event, sender: &str, now: DateTime<Utc>) -> Result<ChangeEvent, WebhookError> {
    let event_id = bounded(&ev.event_id, "event_id", 128)?;
    let system: System = ev
        .system
        .parse()
        .map_err(|_| invalid(format!("unknown system `{}`", clip(&ev.system))))?;
    let entity_type: EntityType = ev
        .entity
        .parse()
        .map_err(|_| WebhookError::UnknownEntity(clip(&ev.entity)))?;
    let id = bounded(&ev.id, "id", 256)?;
    let operation = match ev.operation.as_deref().unwrap_or("update") {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        other => {
            return Err(invalid(format!(
                "operation `{}` is not create, update or delete",
                clip(other)
            )))
        }
    };
    let modified_ms = ev
        .version
        .modified
        .as_deref()
        .map(|m| {
            DateTime::parse_from_rfc3339(m)
                .map(|t| t.timestamp_millis())
                .map_err(|_| invalid(format!("version.modified `{}` is not RFC 3339", clip(m))))
        })
        .transpose()?;
    let version = SourceVersion {
        sequence: ev.version.sequence.map(|s| (s, 0)),
        modified_ms,
    };
    if version.is_empty() {
        return Err(WebhookError::MissingKey(
            "version.sequence or version.modified".into(),
        ));
    }
    let fields = match (ev.fields, operation) {
        (Some(f), _) => f,
        (None, Operation::Delete) => Map::new(),
        (None, _) => return Err(WebhookError::MissingKey("fields".into())),
    };
    let optional = |v: Option<String>, name: &str, max: usize| {
        v.map(|s| bounded(&s, name, max).map(str::to_string))
            .transpose()
    };
    Ok(ChangeEvent {
        event_id: EventId(format!("events:{sender}:{event_id}")),
        source: SourceRef::new(system, entity_type, id),
        natural_key: optional(ev.natural_key, "natural_key", 256)?,
        operation,
        fields,
        previous: ev.previous.unwrap_or_default(),
        needs_fetch: false,
        resource: None,
        version,
        origin: Origin {
            user_id: optional(ev.user_id, "user_id", 256)?,
            correlation_id: None,
            client: Some(format!("sender:{sender}")),
            depth: None,
        },
        company: optional(ev.company, "company", 256)?,
        received_at: now,
        content_hash: Default::default(),
    })
}

fn bounded<'a>(v: &'a str, name: &str, max: usize) -> Result<&'a str, WebhookError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(WebhookError::MissingKey(name.into()));
    }
    if t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`{name}` must be at most {max} printable characters"
        )));
    }
    Ok(t)
}

fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

fn invalid(message: impl Into<String>) -> WebhookError {
    WebhookError::InvalidPayload {
        format: FORMAT,
        message: message.into(),
    }
}

/// Says which event of the batch was refused.
fn at(i: usize, e: WebhookError) -> WebhookError {
    match e {
        WebhookError::InvalidPayload { format, message } => WebhookError::InvalidPayload {
            format,
            message: format!("events[{i}]: {message}"),
        },
        WebhookError::MissingKey(k) => WebhookError::MissingKey(format!("events[{i}].{k}")),
        WebhookError::UnknownEntity(k) => WebhookError::UnknownEntity(format!("events[{i}]: {k}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "bridge-secret-1";

    fn senders() -> Senders {
        Senders::from_json(
            r#"{"bridge": {"systems": ["business_central"], "secrets": ["old-one", "bridge-secret-1"]}}"#,
            300,
        )
        .expect("config")
    }

    fn request(body: &Value, sender: &str, secret: &str, ts: i64) -> WebhookRequest {
        signed_request(serde_json::to_vec(body).expect("json"), sender, secret, ts)
    }

    fn customer() -> Value {
        json!({
            "event_id": "job-42",
            "system": "business_central",
            "entity": "account",
            "id": "6D1F3C2A-0000-0000-0000-000000000001",
            "operation": "update",
            "version": {"modified": "2026-11-20T10:00:00Z"},
            "fields": {"number": "C00010", "displayName": "Adatum", "creditLimit": 5000},
            "natural_key": "C00010",
            "company": "CRONUS"
        })
    }

    #[test]
    fn a_signed_batch_becomes_change_events() {
        let now = Utc::now();
        let req = request(
            &json!({"events": [customer()]}),
            "bridge",
            SECRET,
            now.timestamp(),
        );
        let evs = senders().accept(&req, now).expect("accepted");
        assert_eq!(evs.len(), 1);
        let ev = &evs[0];
        assert_eq!(ev.event_id.0, "events:bridge:job-42");
        assert_eq!(ev.source.system, System::BusinessCentral);
        assert_eq!(ev.source.entity_type, EntityType::Account);
        // BC ids are GUIDs: compared in lower case, as the BC parser keeps them.
        assert_eq!(ev.source.id, "6d1f3c2a-0000-0000-0000-000000000001");
        assert_eq!(ev.operation, Operation::Update);
        assert_eq!(ev.fields["displayName"], "Adatum");
        assert_eq!(ev.natural_key.as_deref(), Some("C00010"));
        assert_eq!(ev.company.as_deref(), Some("CRONUS"));
        assert!(!ev.needs_fetch);
        assert_eq!(
            ev.version.modified_ms,
            Some(
                DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
                    .unwrap()
                    .timestamp_millis()
            )
        );
        assert_eq!(ev.origin.client.as_deref(), Some("sender:bridge"));
    }

    #[test]
    fn the_sender_and_its_signature_are_checked() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = json!({"events": [customer()]});
        let code =
            |req: &WebhookRequest| senders().accept(req, now).map(|_| ()).map_err(|e| e.code());
        assert_eq!(
            code(&request(&body, "bridge", "old-one", ts)),
            Ok(()),
            "rotation"
        );
        assert_eq!(
            code(&request(&body, "bridge", "guess", ts)),
            Err("unauthorized")
        );
        assert_eq!(
            code(&request(&body, "stranger", SECRET, ts)),
            Err("unauthorized")
        );
        assert_eq!(code(&request(&body, "", SECRET, ts)), Err("unauthorized"));
        assert_eq!(
            code(&request(&body, "bridge", SECRET, ts - 600)),
            Err("stale_signature")
        );
        let mut unsigned = request(&body, "bridge", SECRET, ts);
        unsigned.headers.retain(|(k, _)| k != "x-p2c-signature");
        assert_eq!(code(&unsigned), Err("unauthorized"));
        // No senders configured: nothing gets in.
        let req = request(&body, "bridge", SECRET, ts);
        assert_eq!(
            Senders::default()
                .accept(&req, now)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("unauthorized")
        );
        // The same signed request twice: the second is a replay.
        let s = senders();
        let req = request(&body, "bridge", SECRET, ts);
        assert!(s.accept(&req, now).is_ok());
        assert_eq!(
            s.accept(&req, now).unwrap_err().code(),
            "replayed_signature"
        );
    }

    #[test]
    fn a_sender_speaks_only_for_its_systems() {
        let now = Utc::now();
        let mut other = customer();
        other["system"] = json!("dataverse");
        let req = request(
            &json!({"events": [customer(), other]}),
            "bridge",
            SECRET,
            now.timestamp(),
        );
        let err = senders().accept(&req, now).unwrap_err();
        assert_eq!(err.code(), "system_not_allowed");
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("`bridge`") && err.to_string().contains("dataverse"));
    }

    #[test]
    fn bad_events_are_refused_with_the_event_named() {
        let now = Utc::now();
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"events": []}), "invalid_payload", "empty"),
            (json!({"evnts": []}), "invalid_payload", "unknown field"),
            (
                json!({"events": [{"event_id": "x"}]}),
                "invalid_payload",
                "missing field",
            ),
            (
                {
                    let mut e = customer();
                    e["version"] = json!({});
                    json!({"events": [customer(), e]})
                },
                "missing_key",
                "events[1].version",
            ),
            (
                {
                    let mut e = customer();
                    e["entity"] = json!("lead");
                    json!({"events": [e]})
                },
                "unknown_entity",
                "lead",
            ),
            (
                {
                    let mut e = customer();
                    e["system"] = json!("sap");
                    json!({"events": [e]})
                },
                "invalid_payload",
                "sap",
            ),
            (
                {
                    let mut e = customer();
                    e["operation"] = json!("upsert");
                    json!({"events": [e]})
                },
                "invalid_payload",
                "upsert",
            ),
            (
                {
                    let mut e = customer();
                    e.as_object_mut().unwrap().remove("fields");
                    json!({"events": [e]})
                },
                "missing_key",
                "events[0].fields",
            ),
            (
                {
                    let mut e = customer();
                    e["event_id"] = json!(" ");
                    json!({"events": [e]})
                },
                "missing_key",
                "event_id",
            ),
            (
                {
                    let mut e = customer();
                    e["id"] = json!("x".repeat(300));
                    json!({"events": [e]})
                },
                "invalid_payload",
                "`id`",
            ),
            (
                {
                    let mut e = customer();
                    e["version"] = json!({"modified": "yesterday"});
                    json!({"events": [e]})
                },
                "invalid_payload",
                "RFC 3339",
            ),
            (
                {
                    let mut e = customer();
                    e["fieldz"] = json!({});
                    json!({"events": [e]})
                },
                "invalid_payload",
                "fieldz",
            ),
            (
                json!({"events": vec![customer(); MAX_EVENTS + 1]}),
                "invalid_payload",
                "at most",
            ),
        ];
        for (body, code, says) in cases {
            let req = request(&body, "bridge", SECRET, now.timestamp());
            let err = senders().accept(&req, now).unwrap_err();
            assert_eq!(err.code(), code, "{body}");
            assert!(err.to_string().contains(says), "{err} should say {says}");
            assert!((400..500).contains(&err.status()));
        }
        // A delete needs no record.
        let mut e = customer();
        e["operation"] = json!("delete");
        e.as_object_mut().unwrap().remove("fields");
        let req = request(&json!({"events": [e]}), "bridge", SECRET, now.timestamp());
        let evs = senders().accept(&req, now).expect("delete");
        assert_eq!(evs[0].operation, Operation::Delete);
    }

    #[test]
    fn configuration_errors_say_what_is_wrong_without_the_secret() {
        for (json, says) in [
            ("{", "P2C_SENDERS"),
            (
                r#"{"Bad Name": {"systems": ["bc"], "secrets": ["s3cr3t"]}}"#,
                "sender name",
            ),
            (
                r#"{"b": {"systems": [], "secrets": ["s3cr3t"]}}"#,
                "no systems",
            ),
            (
                r#"{"b": {"systems": ["sap"], "secrets": ["s3cr3t"]}}"#,
                "sap",
            ),
            (
                r#"{"b": {"systems": ["bc"], "secrets": [""]}}"#,
                "no secrets",
            ),
            (
                r#"{"b": {"systems": ["bc"], "secret": ["s3cr3t"]}}"#,
                "P2C_SENDERS",
            ),
        ] {
            let err = Senders::from_json(json, 300).unwrap_err();
            assert!(err.contains(says), "{err} should say {says}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        assert!(Senders::from_json("", 300).unwrap().is_empty());
    }
}
