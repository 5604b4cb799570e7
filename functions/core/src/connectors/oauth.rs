//! OAuth2 client credentials for the target systems: Microsoft Entra ID for Dataverse,
//! Business Central and Finance & Operations; Salesforce's own token endpoint.
//!
//! A token is fetched on first use and cached until shortly before it expires
//! (`expires_in` less a margin; Salesforce sends no `expires_in`, so a configured lifetime
//! shorter than the org's session timeout is used). The cache lives in the token source,
//! which is built once per process, so every invocation of a warm function shares it.
//! Callers that arrive while a token is being fetched wait for that one fetch. A target
//! answering 401 makes the connector drop the token ([`TokenSource::invalidate`]) and try
//! once more with a fresh one. The client secret is never logged or put in an error.

use super::http::TokenSource;
use crate::domain::System;
use crate::error::DeliveryError;
use async_trait::async_trait;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// How a connector authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// A bearer token supplied as it is (simulated counterparts, short manual tests).
    Bearer(String),
    /// OAuth2 client credentials.
    ClientCredentials(ClientCredentialsConfig),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::ClientCredentials(c) => c.fmt(f),
        }
    }
}

/// Where and as whom to ask for a token.
#[derive(Clone)]
pub struct ClientCredentialsConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Entra ID: the resource's `/.default` scope. Salesforce takes none.
    pub scope: Option<String>,
    /// Used when the token endpoint does not say how long the token lasts.
    pub default_lifetime: Duration,
}

impl std::fmt::Debug for ClientCredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Microsoft's public authority.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Business Central's API scope.
pub const BUSINESS_CENTRAL_SCOPE: &str = "https://api.businesscentral.dynamics.com/.default";

impl ClientCredentialsConfig {
    /// Entra ID (v2.0 endpoint) for `tenant`, asking for `scope`. `authority` is
    /// [`ENTRA_AUTHORITY`] except in sovereign clouds and tests.
    pub fn entra(
        authority: &str,
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        scope: impl Into<String>,
    ) -> Self {
        Self {
            token_url: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                authority.trim_end_matches('/')
            ),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: Some(scope.into()),
            default_lifetime: Duration::from_secs(3600),
        }
    }

    /// Salesforce's client credentials flow on the org's My Domain (`https://<domain>.my.salesforce.com`).
    /// Its answer has no lifetime: the token is renewed every 30 minutes, well inside the
    /// shortest session timeout an admin would set for an integration user.
    pub fn salesforce(
        my_domain: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            token_url: format!("{}/services/oauth2/token", my_domain.trim_end_matches('/')),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
            default_lifetime: Duration::from_secs(30 * 60),
        }
    }

    /// The `/.default` scope of a Dataverse or F&O environment, from its API URL.
    pub fn default_scope_of(api_url: &str) -> Option<String> {
        let rest = api_url.split_once("://")?;
        let host = rest.1.split('/').next().filter(|h| !h.is_empty())?;
        Some(format!("{}://{host}/.default", rest.0))
    }
}

/// A non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `<prefix>_CLIENT_ID` and `<prefix>_CLIENT_SECRET`, when the id is set (the secret must
/// then be too).
fn client_pair(prefix: &str) -> anyhow::Result<Option<(String, String)>> {
    let Some(id) = env_var(&format!("{prefix}_CLIENT_ID")) else {
        return Ok(None);
    };
    let secret = env_var(&format!("{prefix}_CLIENT_SECRET")).ok_or_else(|| {
        anyhow::anyhow!("{prefix}_CLIENT_ID is set but {prefix}_CLIENT_SECRET is not")
    })?;
    Ok(Some((id, secret)))
}

impl Credentials {
    /// The token source for `system` (one per connector, built once per process).
    pub fn source(&self, system: System) -> Result<std::sync::Arc<dyn TokenSource>, DeliveryError> {
        Ok(match self {
            Credentials::Bearer(t) => std::sync::Arc::new(super::http::StaticToken(t.clone())),
            Credentials::ClientCredentials(c) => {
                std::sync::Arc::new(ClientCredentials::new(system, c.clone())?)
            }
        })
    }

    /// How a connector to the API at `api_url` authenticates, from the environment:
    /// `P2C_<SYSTEM>_CLIENT_ID` and `P2C_<SYSTEM>_CLIENT_SECRET` with `P2C_ENTRA_TENANT_ID`
    /// (and `P2C_ENTRA_AUTHORITY` outside the public cloud) for client credentials, asking
    /// for `scope` or else the API host's `/.default`; otherwise the bearer `token` given.
    pub fn from_env(
        system: &str,
        api_url: &str,
        scope: Option<&str>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let prefix = format!("P2C_{system}");
        match client_pair(&prefix)? {
            Some((client_id, secret)) => {
                let tenant = env_var("P2C_ENTRA_TENANT_ID").ok_or_else(|| {
                    anyhow::anyhow!("{prefix}_CLIENT_ID is set but P2C_ENTRA_TENANT_ID is not")
                })?;
                let scope = match scope {
                    Some(s) => s.to_string(),
                    None => ClientCredentialsConfig::default_scope_of(api_url).ok_or_else(|| {
                        anyhow::anyhow!("cannot tell the token scope from the URL `{api_url}`")
                    })?,
                };
                let authority =
                    env_var("P2C_ENTRA_AUTHORITY").unwrap_or_else(|| ENTRA_AUTHORITY.into());
                Ok(Credentials::ClientCredentials(ClientCredentialsConfig::entra(
                    &authority, &tenant, client_id, secret, scope,
                )))
            }
            None => token.map(Credentials::Bearer).ok_or_else(|| {
                anyhow::anyhow!(
                    "set {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET (with P2C_ENTRA_TENANT_ID) for OAuth2 client credentials, or {prefix}_TOKEN"
                )
            }),
        }
    }

    /// A Salesforce org's credentials from the environment: `P2C_SALESFORCE_CLIENT_ID` and
    /// `P2C_SALESFORCE_CLIENT_SECRET` (the connected app's client credentials flow, on the
    /// org's My Domain `instance_url`), otherwise the bearer `token` given.
    pub fn salesforce_from_env(instance_url: &str, token: Option<String>) -> anyhow::Result<Self> {
        match client_pair("P2C_SALESFORCE")? {
            Some((id, secret)) => Ok(Credentials::ClientCredentials(
                ClientCredentialsConfig::salesforce(instance_url, id, secret),
            )),
            None => token.map(Credentials::Bearer).ok_or_else(|| {
                anyhow::anyhow!("set P2C_SALESFORCE_CLIENT_ID and P2C_SALESFORCE_CLIENT_SECRET, or P2C_SALESFORCE_TOKEN")
            }),
        }
    }
}

/// Renew this long before the token's stated expiry.
const MARGIN: Duration = Duration::from_secs(5 * 60);

struct Cached {
    token: String,
    renew_at: Instant,
}

/// A token source for the client credentials flow, with its cache.
pub struct ClientCredentials {
    system: System,
    config: ClientCredentialsConfig,
    client: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Cached>>,
    fetches: std::sync::atomic::AtomicU64,
}

/// The token endpoint's answer (Entra ID and Salesforce share these fields).
#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// The token endpoint's error (`invalid_client`, `unauthorized_client`, …).
#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl ClientCredentials {
    pub fn new(system: System, config: ClientCredentialsConfig) -> Result<Self, DeliveryError> {
        let client = super::http::client(system, Duration::from_secs(15))?;
        Ok(Self {
            system,
            config,
            client,
            cache: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many tokens this source has fetched (for tests and the operator's log).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<Cached, DeliveryError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = &self.config;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
        ];
        if let Some(scope) = &c.scope {
            form.push(("scope", scope.as_str()));
        }
        let system = self.system.to_string();
        let resp = self
            .client
            .post(&c.token_url)
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| DeliveryError::Transient {
                system: system.clone(),
                status: 0,
                message: format!(
                    "token endpoint unreachable: {}",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection failed"
                    }
                ),
                retry_after_ms: None,
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let err: Option<TokenError> = serde_json::from_str(&text).ok();
            let what = err
                .map(|e| {
                    let first_line = e.error_description.lines().next().unwrap_or_default();
                    format!("{} {}", e.error, first_line).trim().to_string()
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            let message = format!("token request for client {} refused: {what}", c.client_id)
                .replace(&c.client_secret, "<redacted>");
            let code = status.as_u16();
            return Err(if code == 429 || code == 408 || code >= 500 {
                DeliveryError::Transient {
                    system,
                    status: code,
                    message,
                    retry_after_ms: None,
                }
            } else {
                DeliveryError::Permanent {
                    system,
                    status: code,
                    message,
                }
            });
        }
        let reply: TokenReply =
            serde_json::from_str(&text).map_err(|_| DeliveryError::Permanent {
                system: system.clone(),
                status: status.as_u16(),
                message: "the token endpoint's answer has no access_token".into(),
            })?;
        // Entra sends a number; some proxies a string.
        let lifetime = reply
            .expires_in
            .and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .map(Duration::from_secs)
            .unwrap_or(c.default_lifetime);
        // Renew a margin early, but never sooner than half the lifetime.
        let early = MARGIN.min(lifetime / 2);
        Ok(Cached {
            token: reply.access_token,
            renew_at: Instant::now() + lifetime - early,
        })
    }
}

#[async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<String, DeliveryError> {
        // Held across the fetch: callers arriving meanwhile wait for this one fetch.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A token endpoint on loopback: counts requests, checks the form, answers with
    /// `expires_in` seconds (or none), or refuses the client.
    #[derive(Clone)]
    struct Endpoint {
        calls: Arc<AtomicU64>,
        expires_in: Option<u64>,
        refuse: bool,
    }

    async fn token(State(e): State<Endpoint>, body: String) -> (axum::http::StatusCode, String) {
        let n = e.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let form: Vec<(String, String)> = body
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), crate::inbound::percent_decode(v)))
            .collect();
        let get = |k: &str| form.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if e.refuse || get("client_secret").as_deref() != Some("s3cret") {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"})
                .to_string(),
            );
        }
        assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
        let mut reply =
            serde_json::json!({"token_type": "Bearer", "access_token": format!("t{n}")});
        if let Some(s) = e.expires_in {
            reply["expires_in"] = serde_json::json!(s);
        }
        (axum::http::StatusCode::OK, reply.to_string())
    }

    async fn endpoint(expires_in: Option<u64>, refuse: bool) -> (String, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let router = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
            .with_state(Endpoint {
                calls: calls.clone(),
                expires_in,
                refuse,
            });
        let (url, _task) = crate::sim::serve(router).await.expect("serves");
        (url, calls)
    }

    fn source(url: &str, secret: &str) -> ClientCredentials {
        ClientCredentials::new(
            System::BusinessCentral,
            ClientCredentialsConfig::entra(url, "contoso", "app-1", secret, BUSINESS_CENTRAL_SCOPE),
        )
        .expect("client")
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_shared_until_it_is_due() {
        let (url, calls) = endpoint(Some(3600), false).await;
        let s = Arc::new(source(&url, "s3cret"));
        let many = (0..20).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.token().await })
        });
        for t in many {
            assert_eq!(t.await.expect("joins").expect("token"), "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for 20 callers");
        assert_eq!(s.token().await.expect("token"), "t1");
        s.invalidate().await;
        assert_eq!(
            s.token().await.expect("token"),
            "t2",
            "a 401 forces a new one"
        );
        assert_eq!(s.fetches(), 2);
    }

    /// A target that refuses the first token it sees (revoked early) and takes the next.
    async fn api(
        State(seen): State<Arc<std::sync::Mutex<Vec<String>>>>,
        headers: axum::http::HeaderMap,
    ) -> (axum::http::StatusCode, String) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.lock().expect("lock").push(auth.clone());
        if auth == "Bearer t1" {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                r#"{"error":{"message":"token revoked"}}"#.into(),
            )
        } else {
            (axum::http::StatusCode::OK, r#"{"ok":true}"#.into())
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_and_the_request_sent_once_more() {
        let (token_url, calls) = endpoint(Some(3600), false).await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/api", axum::routing::get(api))
            .with_state(seen.clone());
        let (api_url, _task) = crate::sim::serve(router).await.expect("serves");
        let http = super::super::http::Http::new(
            System::BusinessCentral,
            Arc::new(source(&token_url, "s3cret")),
        )
        .expect("http");
        let reply = http
            .send(
                reqwest::Method::GET,
                &format!("{api_url}/api"),
                &[],
                &[],
                None,
            )
            .await
            .expect("second try succeeds");
        assert_eq!(reply.status, 200);
        assert_eq!(*seen.lock().expect("lock"), ["Bearer t1", "Bearer t2"]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_short_lived_token_is_renewed_before_it_expires() {
        // 2 s lifetime: renewed after half of it (the margin is capped at half).
        let (url, calls) = endpoint(Some(2), false).await;
        let s = source(&url, "s3cret");
        assert_eq!(s.token().await.expect("token"), "t1");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(s.token().await.expect("token"), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_client_is_a_permanent_error_without_the_secret() {
        let (url, _) = endpoint(Some(3600), false).await;
        let err = source(&url, "wrong-secret-value")
            .token()
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, DeliveryError::Permanent { status: 401, .. }),
            "{err:?}"
        );
        assert!(
            text.contains("invalid_client") && text.contains("AADSTS7000215"),
            "{text}"
        );
        assert!(!text.contains("wrong-secret-value"), "{text}");
        let debug = format!(
            "{:?}",
            Credentials::ClientCredentials(source(&url, "wrong-secret-value").config)
        );
        assert!(!debug.contains("wrong-secret-value"), "{debug}");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_transient() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = source(&format!("http://127.0.0.1:{port}"), "s3cret")
            .token()
            .await
            .expect_err("unreachable");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[test]
    fn scopes_and_token_urls() {
        assert_eq!(
            ClientCredentialsConfig::default_scope_of(
                "https://contoso.crm4.dynamics.com/api/data/v9.2"
            ),
            Some("https://contoso.crm4.dynamics.com/.default".into())
        );
        assert_eq!(ClientCredentialsConfig::default_scope_of("nonsense"), None);
        let sf =
            ClientCredentialsConfig::salesforce("https://contoso.my.salesforce.com/", "c", "s");
        assert_eq!(
            sf.token_url,
            "https://contoso.my.salesforce.com/services/oauth2/token"
        );
        assert_eq!(sf.scope, None);
        let e = ClientCredentialsConfig::entra(
            ENTRA_AUTHORITY,
            "t-1",
            "c",
            "s",
            BUSINESS_CENTRAL_SCOPE,
        );
        assert_eq!(
            e.token_url,
            "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
        );
    }
}
