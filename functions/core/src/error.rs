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
    /// `line` and `column` are 0 when the engine gives the fault no position (a limit hit
    /// in nested calls).
    #[error("rule `{rule}` failed{}: {message}", at(*line, *column))]
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

/// ` at line L, column C`, or nothing when the position is unknown.
fn at(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" at line {line}, column {column}")
    }
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

/// Free text as it may be logged: e-mail addresses and phone numbers are replaced, since
/// error messages from target systems and parsers can repeat the personal data they were
/// given. (The dead-letter records keep the text whole: they are not logs.) A phone number
/// is a run of digits and separators with at least seven digits that starts with `+` or is
/// broken up by spaces or parentheses; bare digit runs (ids, amounts, dates) are kept.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('@') && !text.bytes().any(|b| b.is_ascii_digit()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '@' && c != '+');
        let is_email = core.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.ends_with('.')
        });
        if is_email {
            out.push_str(&word.replace(core, "[e-mail]"));
            changed = true;
        } else {
            out.push_str(word);
        }
    }
    let redacted = redact_phones(&out);
    if changed || redacted != out {
        std::borrow::Cow::Owned(redacted)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn redact_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i] == '+' || chars[i] == '(' || chars[i].is_ascii_digit();
        if starts {
            let mut j = i;
            let (mut digits, mut broken) = (0, false);
            while j < chars.len()
                && matches!(chars[j], '0'..='9' | '+' | ' ' | '-' | '(' | ')' | '.')
            {
                match chars[j] {
                    '0'..='9' => digits += 1,
                    ' ' | '(' | ')' => broken = true,
                    _ => {}
                }
                j += 1;
            }
            // Trailing separators belong to the text around the number.
            while j > i && !chars[j - 1].is_ascii_digit() && chars[j - 1] != ')' {
                j -= 1;
            }
            if digits >= 7 && (chars[i] == '+' || broken) {
                out.push_str("[phone]");
                i = j;
                continue;
            }
            // Not a phone number: keep the run as it is.
            let end = j.max(i + 1);
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn e_mail_addresses_and_phone_numbers_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact("Customer with e-mail ap.payables@fabrikam.example and phone +1 425 555 0199 is blocked."),
            "Customer with e-mail [e-mail] and phone [phone] is blocked."
        );
        assert_eq!(
            redact("call (425) 555-0199, or <a@b.co>"),
            "call [phone], or <[e-mail]>"
        );
        for kept in [
            "balance 0.00 + open orders 18,400.00 = 64,400.00 USD > limit 50,000.00",
            "invoice 103001 dated 2026-05-14, order SO-000731, RecId 5637144576",
            "no data here",
            "user@ alone, @handle, x@localhost",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }
}
