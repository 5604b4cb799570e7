//! Errors, one enum per boundary. Each says whether a retry can help, and carries the
//! ids needed to act on it. The HTTP mapping of inbound errors lives in
//! [`crate::inbound::WebhookError::status`], and nowhere else.

use thiserror::Error;

/// A storage failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A conditional write lost to a concurrent writer: reload and retry.
    #[error("conditional write on `{key}` lost to a concurrent writer")]
    Conflict { key: String },
    /// The backing database failed.
    #[error("store backend failed: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A stored item could not be decoded.
    #[error("stored item `{key}` is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Backend { .. }
        )
    }
}

/// A queue failure.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error("queue `{queue}` failed: {message}")]
    Backend { queue: String, message: String },
    #[error("receipt `{receipt}` on `{queue}` is unknown or expired")]
    UnknownReceipt { queue: String, receipt: String },
    #[error("message for `{queue}` rejected: {message}")]
    Rejected { queue: String, message: String },
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Backend { .. })
    }
}

/// A rule failure: either a fault in the script or a business rejection it threw.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RuleError {
    #[error("rule `{rule}` does not compile at line {line}, column {column}: {message}")]
    Compile {
        rule: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("rule `{rule}` failed at line {line}, column {column}: {message}")]
    Runtime {
        rule: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// `throw #{ code, message }` from the script: a business decision, not a fault.
    #[error("rule `{rule}` rejected the input: {code}: {message}")]
    Rejected {
        rule: String,
        code: String,
        message: String,
    },
    #[error("rule `{rule}` returned an unusable result: {message}")]
    BadOutput { rule: String, message: String },
    #[error("no rule `{rule}` in the rule set")]
    Missing { rule: String },
    #[error("rule set is invalid: {message}")]
    Config { message: String },
}

impl RuleError {
    pub fn rule(&self) -> &str {
        match self {
            RuleError::Compile { rule, .. }
            | RuleError::Runtime { rule, .. }
            | RuleError::Rejected { rule, .. }
            | RuleError::BadOutput { rule, .. }
            | RuleError::Missing { rule } => rule,
            RuleError::Config { .. } => "rules",
        }
    }

    /// A stable code for the dead-letter record.
    pub fn code(&self) -> &str {
        match self {
            RuleError::Compile { .. } => "rule_compile_error",
            RuleError::Runtime { .. } => "rule_runtime_error",
            RuleError::Rejected { code, .. } => code,
            RuleError::BadOutput { .. } => "rule_bad_output",
            RuleError::Missing { .. } => "rule_missing",
            RuleError::Config { .. } => "rule_config_error",
        }
    }
}

/// A failure writing to, or reading from, a target system.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// 408, 429, 5xx or a transport failure: retry later (after `retry_after_ms` if given).
    #[error("{system} is unavailable ({status}): {message}")]
    Transient {
        system: String,
        status: u16,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Any other 4xx: the target refused the write; the target's own message is kept.
    #[error("{system} refused the write ({status}): {message}")]
    Permanent {
        system: String,
        status: u16,
        message: String,
    },
    /// The target has no connector configured.
    #[error("no connector for {system}")]
    NoConnector { system: String },
}

impl DeliveryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Transient { .. })
    }
}
