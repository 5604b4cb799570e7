//! Simulated counterparts: a Dataverse environment and a Business Central company on
//! loopback HTTP, speaking the real formats (Web API upserts by alternate key, API v2.0
//! with etags and deep inserts, RemoteExecutionContext webhooks, BC notifications).
//!
//! They are what `p2c demo` and the end-to-end tests run against. Webhooks they owe
//! p2c are held in an outbox and sent on [`Outbox::flush`], so a driver decides when
//! the counterpart "calls back" and every run is deterministic. Faults (429 with
//! `Retry-After`, 5xx, a 4xx with the system's own message) can be injected.

pub mod bc;
pub mod dataverse;
pub mod fo;
pub mod load;
pub mod salesforce;

use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A webhook a simulator owes p2c.
#[derive(Debug, Clone)]
pub struct Hook {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// What it announces, for timelines.
    pub label: String,
}

/// An injected failure for the next matching request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose method and path contain this (e.g. `POST salesOrders`).
    pub matching: String,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub message: String,
}

/// Webhooks waiting to be sent.
#[derive(Default)]
pub struct Outbox {
    hooks: Mutex<VecDeque<Hook>>,
}

impl Outbox {
    pub fn push(&self, hook: Hook) {
        if let Ok(mut q) = self.hooks.lock() {
            q.push_back(hook);
        }
    }

    /// Takes every pending webhook out (a test can then delay, reorder or repeat them).
    pub fn take(&self) -> Vec<Hook> {
        self.hooks
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.hooks.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every pending webhook in order; returns (label, HTTP status) per hook.
    /// A hook answered with 5xx or not answered stays queued (the sender would retry).
    pub async fn flush(&self, client: &reqwest::Client) -> Vec<(String, u16)> {
        let mut sent = Vec::new();
        loop {
            let next = self.hooks.lock().ok().and_then(|mut q| q.pop_front());
            let Some(h) = next else { break };
            let mut req = client.post(&h.url).json(&h.body);
            for (k, v) in &h.headers {
                req = req.header(k, v);
            }
            let status = match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            sent.push((h.label.clone(), status));
            if status == 0 || status >= 500 {
                if let Ok(mut q) = self.hooks.lock() {
                    q.push_front(h);
                }
                break;
            }
        }
        sent
    }
}

impl Hook {
    /// Sends this webhook once; returns the status and body of the answer.
    pub async fn send(&self, client: &reqwest::Client) -> Result<(u16, String), reqwest::Error> {
        let mut req = client.post(&self.url).json(&self.body);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }
}

/// Whether a request carries a bearer token (the simulators take any).
pub(crate) fn has_bearer(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
}

/// Pops the first fault matching `method path`.
pub(crate) fn take_fault(
    faults: &Mutex<VecDeque<Fault>>,
    method: &str,
    path: &str,
) -> Option<Fault> {
    let mut f = faults.lock().ok()?;
    let what = format!("{method} {path}");
    let pos = f.iter().position(|x| what.contains(&x.matching))?;
    f.remove(pos)
}

/// Binds a router to an ephemeral loopback port and serves it in the background.
pub async fn serve(router: axum::Router) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok((format!("http://{addr}"), handle))
}

/// A new GUID-shaped id (deterministic per simulator: a counter with a prefix).
pub(crate) fn guid(prefix: u32, n: u64) -> String {
    format!(
        "{prefix:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n >> 32) & 0xffff,
        (n >> 20) & 0xfff,
        (n >> 8) & 0xfff,
        n
    )
}

/// A JSON error in the OData shape both Microsoft APIs use.
pub(crate) fn odata_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
        axum::Json(body),
    )
        .into_response()
}

pub(crate) fn fault_response(f: &Fault) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = odata_error(f.status, "Injected", &f.message);
    if let Some(s) = f.retry_after {
        if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp.into_response()
}
