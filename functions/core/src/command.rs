//! Outbound commands: what sync asks deliver to write into a target system.
//!
//! A command's id is derived from the event that caused it and what it does, so a
//! redelivered event produces the same ids, and the queue's deduplication and
//! deliver's idempotency claim make the write happen once.

use crate::domain::{
    Contact, Customer, CustomerFinancials, EntityKey, EventId, Invoice, OrderProgress, Payment,
    Product, Quote, QuoteTotals, SalesOrder, System,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Deterministic command id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct CommandId(pub String);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The credit rule's decision on an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Credit {
    Release,
    Hold { reason: String },
    Reject { reason: String },
}

impl Credit {
    pub fn label(&self) -> &'static str {
        match self {
            Credit::Release => "release",
            Credit::Hold { .. } => "hold",
            Credit::Reject { .. } => "reject",
        }
    }
}

/// A rebate credit note the ERP must issue when a customer crosses a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebateCreditNote {
    /// Our own document reference (deterministic), the ERP's external document number.
    pub reference: String,
    pub account_number: String,
    pub currency: crate::money::CurrencyCode,
    pub amount: Decimal,
    pub description: String,
    pub period: String,
}

/// The rebate rule's result on one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebateAccrual {
    pub period: String,
    pub tier: String,
    pub rate: Decimal,
    pub accrual: Decimal,
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "record", rename_all = "snake_case")]
pub enum Action {
    UpsertCustomer(Customer),
    UpsertContact(Contact),
    UpsertProduct(Product),
    UpsertQuote(Quote),
    UpsertOrder(SalesOrder),
    /// The credit decision (hold / reject reason, or release) shown on the CRM order.
    SetOrderCredit {
        order_number: String,
        credit: Credit,
    },
    /// The ERP's order number written back to the CRM order.
    SetOrderErpNumber {
        order_number: String,
        erp_number: String,
    },
    SetOrderProgress(OrderProgress),
    SetQuoteTotals(QuoteTotals),
    UpsertInvoice {
        invoice: Invoice,
        /// The rebate accrued on this invoice, when the rebate rule ran.
        rebate: Option<RebateAccrual>,
    },
    SetFinancials(CustomerFinancials),
    UpsertPayment(Payment),
    CreateCreditNote(RebateCreditNote),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::UpsertCustomer(_) => "upsert_customer",
            Action::UpsertContact(_) => "upsert_contact",
            Action::UpsertProduct(_) => "upsert_product",
            Action::UpsertQuote(_) => "upsert_quote",
            Action::UpsertOrder(_) => "upsert_order",
            Action::SetOrderCredit { .. } => "set_order_credit",
            Action::SetOrderErpNumber { .. } => "set_order_erp_number",
            Action::SetOrderProgress(_) => "set_order_progress",
            Action::SetQuoteTotals(_) => "set_quote_totals",
            Action::UpsertInvoice { .. } => "upsert_invoice",
            Action::SetFinancials(_) => "set_financials",
            Action::UpsertPayment(_) => "upsert_payment",
            Action::CreateCreditNote(_) => "create_credit_note",
        }
    }
}

/// One write for one target system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub target: System,
    pub entity: EntityKey,
    pub action: Action,
    pub caused_by: EventId,
    /// The rule-set version that decided this command.
    pub rules_version: String,
    /// The ERP company the write goes to (Business Central company id, F&O `dataAreaId`),
    /// when it is not the connector's default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

impl Command {
    /// Builds a command whose id is a hash of its cause, target, entity and action kind.
    pub fn new(
        cause: &str,
        caused_by: &EventId,
        target: System,
        entity: EntityKey,
        action: Action,
        rules_version: &str,
    ) -> Self {
        let id =
            crate::json::hash_parts(&[cause, target.as_str(), &entity.to_string(), action.name()]);
        Command {
            id: CommandId(format!("cmd-{}", &id[..40])),
            target,
            entity,
            action,
            caused_by: caused_by.clone(),
            rules_version: rules_version.to_string(),
            company: None,
        }
    }

    /// The FIFO group: one ordered stream of writes per target entity.
    pub fn group(&self) -> String {
        format!("{}/{}", self.target, self.entity)
    }
}
