//! Rule sets: the flow catalogue, value maps and Rhai scripts under `rules/`, compiled
//! once, versioned by content hash.
//!
//! A rule set is loaded through a [`RuleLoader`] (a directory, or the copy compiled into
//! the binary), so tests, the CLI and the Lambda functions load rules the same way.

pub mod cases;
pub mod diagnostic;
pub mod diff;
pub mod engine;
pub mod fast;
pub mod live;
#[cfg(feature = "tools")]
pub mod trace;

use crate::domain::{EntityType, Side, System};
use crate::error::RuleError;
use engine::{Limits, Script, ValueMaps};
use rhai::{Dynamic, Engine};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The flows of the prospect-to-cash catalogue. Each reads one entity type from one
/// side and writes one canonical record to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    AccountToCustomer,
    ContactToContact,
    ItemToProduct,
    QuoteToQuotation,
    QuotationTotals,
    OrderToSalesOrder,
    OrderProgress,
    InvoiceToHistory,
    CustomerFinancials,
    PaymentToPayment,
}

impl FlowKind {
    pub const ALL: [FlowKind; 10] = [
        FlowKind::AccountToCustomer,
        FlowKind::ContactToContact,
        FlowKind::ItemToProduct,
        FlowKind::QuoteToQuotation,
        FlowKind::QuotationTotals,
        FlowKind::OrderToSalesOrder,
        FlowKind::OrderProgress,
        FlowKind::InvoiceToHistory,
        FlowKind::CustomerFinancials,
        FlowKind::PaymentToPayment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::AccountToCustomer => "account_to_customer",
            FlowKind::ContactToContact => "contact_to_contact",
            FlowKind::ItemToProduct => "item_to_product",
            FlowKind::QuoteToQuotation => "quote_to_quotation",
            FlowKind::QuotationTotals => "quotation_totals",
            FlowKind::OrderToSalesOrder => "order_to_sales_order",
            FlowKind::OrderProgress => "order_progress",
            FlowKind::InvoiceToHistory => "invoice_to_history",
            FlowKind::CustomerFinancials => "customer_financials",
            FlowKind::PaymentToPayment => "payment_to_payment",
        }
    }

    /// The side whose changes this flow reads.
    pub fn from_side(self) -> Side {
        match self {
            FlowKind::AccountToCustomer
            | FlowKind::ContactToContact
            | FlowKind::QuoteToQuotation
            | FlowKind::OrderToSalesOrder => Side::Crm,
            _ => Side::Erp,
        }
    }

    pub fn entity_type(self) -> EntityType {
        match self {
            FlowKind::AccountToCustomer | FlowKind::CustomerFinancials => EntityType::Account,
            FlowKind::ContactToContact => EntityType::Contact,
            FlowKind::ItemToProduct => EntityType::Item,
            FlowKind::QuoteToQuotation | FlowKind::QuotationTotals => EntityType::Quote,
            FlowKind::OrderToSalesOrder | FlowKind::OrderProgress => EntityType::Order,
            FlowKind::InvoiceToHistory => EntityType::Invoice,
            FlowKind::PaymentToPayment => EntityType::Payment,
        }
    }

    /// The record kind the flow's script produces (the key in entity state).
    pub fn record_kind(self) -> &'static str {
        match self {
            FlowKind::AccountToCustomer => "customer",
            FlowKind::ContactToContact => "contact",
            FlowKind::ItemToProduct => "product",
            FlowKind::QuoteToQuotation => "quote",
            FlowKind::QuotationTotals => "quote_totals",
            FlowKind::OrderToSalesOrder => "order",
            FlowKind::OrderProgress => "order_progress",
            FlowKind::InvoiceToHistory => "invoice",
            FlowKind::CustomerFinancials => "financials",
            FlowKind::PaymentToPayment => "payment",
        }
    }
}

impl std::fmt::Display for FlowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which CRM and ERP this deployment pairs.
#[derive(Debug, Clone, Deserialize)]
pub struct Pairing {
    pub crm: System,
    pub erp: System,
}

/// Per-system settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemSettings {
    /// The user p2c writes as: changes made by it are our own echoes.
    pub integration_user: Option<String>,
    /// Dataverse: the price list products are priced in; Salesforce: the price book.
    pub price_list_id: Option<String>,
    /// Dataverse: the column holding the p2c processing status on orders.
    pub order_status_column: Option<String>,
    /// Business Central: the company id; Finance & Operations: the legal entity
    /// (`dataAreaId`) p2c writes in.
    pub company_id: Option<String>,
    /// Finance & Operations: the customer group new customers get (F&O requires one).
    pub customer_group: Option<String>,
    /// A CRM: the field of its records that names the ERP company they belong to (the
    /// Dataverse owning business unit, a Salesforce picklist). Its value — a lookup's id or
    /// name, or the text — is mapped through the `companies` value map.
    pub company_field: Option<String>,
    /// Business Central: the G/L account rebate credit-memo lines are posted to; Finance &
    /// Operations: the main account of rebate credit notes' lines.
    pub rebate_gl_account: Option<String>,
    /// Finance & Operations: the data entity a customer's open transactions are read from
    /// (for its balance and what is overdue); empty to read none.
    pub open_transactions_entity: Option<String>,
    /// Finance & Operations: business events to read besides the built-in ones (or instead
    /// of them, by class name): what each is about and the contract field that keys it.
    pub business_events: BTreeMap<String, BusinessEventConfig>,
    /// Salesforce: the client id p2c names in `Sforce-Call-Options`, which change events
    /// carry back in `changeOrigin` (how p2c knows its own writes). Default `p2c`.
    pub api_client: Option<String>,
}

/// A business event's class as configured: `entity` is `invoice`, `payment` or `customer`
/// (a change to the customer's financials: the customer is read again), `key` the contract
/// field holding that record's key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessEventConfig {
    pub entity: String,
    pub key: String,
}

impl SystemSettings {
    /// The client id p2c's Salesforce writes carry: `api_client`, or `p2c`.
    pub fn client_id(&self) -> &str {
        self.api_client.as_deref().unwrap_or("p2c")
    }
}

/// One flow's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Mapping script, relative to `rules/`.
    pub script: String,
    /// Lookups that must be synced before this flow can run (the event is parked until
    /// they are): a field name, or `list[].field` for a field of every element of a list.
    #[serde(default)]
    pub requires: Vec<String>,
    /// A field the source sends only on a full read (e.g. order lines): when absent from
    /// the event, the record is read from the source first.
    #[serde(default)]
    pub expand: Option<String>,
    /// What differs when the change comes from a given system (its own field names, so its
    /// own script): `[flows.<flow>.from.salesforce]`.
    #[serde(default)]
    pub from: BTreeMap<System, SourceFlow>,
}

/// A flow's script, requirements and expansion for changes from one system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFlow {
    pub script: String,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub expand: Option<String>,
}

impl FlowConfig {
    /// The flow as it runs for a change from `system`.
    pub fn for_system(&self, system: System) -> FlowConfig {
        match self.from.get(&system) {
            Some(s) => FlowConfig {
                enabled: self.enabled,
                script: s.script.clone(),
                requires: s.requires.clone(),
                expand: s.expand.clone(),
                from: BTreeMap::new(),
            },
            None => self.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Credit-limit and rebate rule settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    pub script: String,
    /// Rebate only: `month`, `quarter` or `year`.
    #[serde(default)]
    pub period: Option<String>,
}

/// `rules/flows.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub pairing: Pairing,
    #[serde(default)]
    pub systems: BTreeMap<System, SystemSettings>,
    pub flows: BTreeMap<FlowKind, FlowConfig>,
    pub credit: DecisionConfig,
    pub rebate: DecisionConfig,
}

/// Where rule files come from.
pub trait RuleLoader: Send + Sync {
    /// Every file of the rule set: path relative to `rules/` → content.
    fn load(&self) -> Result<BTreeMap<String, String>, RuleError>;
    /// Where the rules live, for messages.
    fn origin(&self) -> String;
}

/// Loads a rule set from a directory.
pub struct DirLoader(pub PathBuf);

impl RuleLoader for DirLoader {
    fn load(&self) -> Result<BTreeMap<String, String>, RuleError> {
        let mut files = BTreeMap::new();
        walk(&self.0, &self.0, &mut files)?;
        Ok(files)
    }
    fn origin(&self) -> String {
        self.0.display().to_string()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), RuleError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RuleError::Config {
        message: format!("cannot read {}: {e}", dir.display()),
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        // Hidden entries (`.defs`, the language server's definitions) and definition
        // files are not rules.
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".d.rhai") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("rhai" | "toml" | "json")
        ) {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(|e| RuleError::Config {
                message: format!("cannot read {}: {e}", p.display()),
            })?;
            out.insert(rel, text);
        }
    }
    Ok(())
}

/// The rule set compiled into the binary (the repository's `rules/` at build time).
pub struct EmbeddedLoader;

include!(concat!(env!("OUT_DIR"), "/embedded_rules.rs"));

impl RuleLoader for EmbeddedLoader {
    fn load(&self) -> Result<BTreeMap<String, String>, RuleError> {
        Ok(EMBEDDED_RULES
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect())
    }
    fn origin(&self) -> String {
        "built-in rules".into()
    }
}

/// A compiled, versioned rule set.
pub struct RuleSet {
    pub version: String,
    pub catalogue: Catalogue,
    pub value_maps: Arc<ValueMaps>,
    engine: Engine,
    scripts: BTreeMap<String, Script>,
    files: BTreeMap<String, String>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("scripts", &self.scripts.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RuleSet {
    /// Loads and compiles every script once. Fails on the first script that does not
    /// compile, naming it with line and column.
    pub fn load(loader: &dyn RuleLoader) -> Result<Self, RuleError> {
        Self::from_files(loader.load()?)
    }

    pub fn from_files(files: BTreeMap<String, String>) -> Result<Self, RuleError> {
        let version = content_version(&files);
        let catalogue: Catalogue =
            toml::from_str(files.get("flows.toml").ok_or_else(|| RuleError::Config {
                message: "rules/flows.toml is missing".into(),
            })?)
            .map_err(|e| RuleError::Config {
                message: format!("flows.toml: {e}"),
            })?;
        let value_maps: ValueMaps = match files.get("value_maps.toml") {
            Some(t) => toml::from_str(t).map_err(|e| RuleError::Config {
                message: format!("value_maps.toml: {e}"),
            })?,
            None => ValueMaps::new(),
        };
        let value_maps = Arc::new(value_maps);
        let limits = Limits::default();
        let prepared = Arc::new(engine::host::PreparedMaps::new(&value_maps));
        let engine = engine::build_engine_with(limits, prepared.clone());
        let mut scripts = BTreeMap::new();
        for (path, text) in &files {
            if path.ends_with(".rhai") {
                let mut script = engine::compile(&engine, path, text)?;
                script.fast = fast::compile(&script.ast, limits, prepared.clone()).map(Arc::new);
                scripts.insert(path.clone(), script);
            }
        }
        let referenced = catalogue
            .flows
            .values()
            .flat_map(|f| std::iter::once(&f.script).chain(f.from.values().map(|s| &s.script)))
            .chain([&catalogue.credit.script, &catalogue.rebate.script]);
        for s in referenced {
            if !scripts.contains_key(s) {
                return Err(RuleError::Missing { rule: s.clone() });
            }
        }
        fin_ops_business_events(&catalogue.systems)?;
        if catalogue.pairing.crm.side() != Side::Crm || catalogue.pairing.erp.side() != Side::Erp {
            return Err(RuleError::Config {
                message: "pairing: `crm` must be a CRM and `erp` an ERP".into(),
            });
        }
        Ok(Self {
            version,
            catalogue,
            value_maps,
            engine,
            scripts,
            files,
        })
    }

    /// The enabled flow that reads `entity_type` changes from `side`, if any.
    pub fn flow_for(&self, side: Side, entity_type: EntityType) -> Option<(FlowKind, &FlowConfig)> {
        self.catalogue
            .flows
            .iter()
            .find(|(k, c)| c.enabled && k.from_side() == side && k.entity_type() == entity_type)
            .map(|(k, c)| (*k, c))
    }

    /// The same rules with another pairing (`p2c demo --crm … --erp …`): `[pairing]` in
    /// `flows.toml` rewritten, everything compiled again (so the version changes too).
    pub fn with_pairing(&self, crm: System, erp: System) -> Result<Self, RuleError> {
        let mut files = self.files.clone();
        let flows = files.get("flows.toml").cloned().unwrap_or_default();
        // The table's own crm / erp lines are replaced by the new ones, right under its
        // header; everything else, comments included, is kept.
        let mut out = String::with_capacity(flows.len() + 64);
        let mut in_pairing = false;
        for line in flows.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                in_pairing = t == "[pairing]";
                out.push_str(line);
                out.push('\n');
                if in_pairing {
                    out.push_str(&format!("crm = \"{crm}\"\nerp = \"{erp}\"\n"));
                }
                continue;
            }
            let key = t.split('=').next().map(str::trim).unwrap_or_default();
            if in_pairing && (key == "crm" || key == "erp") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        files.insert("flows.toml".into(), out);
        let rules = Self::from_files(files)?;
        if rules.catalogue.pairing.crm != crm || rules.catalogue.pairing.erp != erp {
            return Err(RuleError::Config {
                message: format!(
                    "pairing: could not set {crm} with {erp} (is there a [pairing] table in \
                     flows.toml?)"
                ),
            });
        }
        Ok(rules)
    }

    /// The ERP company a CRM record is written to: `None` for the ERP's default company
    /// (no `company_field` for its system, or the record leaves it empty); an error when the
    /// record names a company the `companies` value map does not know (never guessed).
    pub fn company_for(&self, ev: &crate::domain::ChangeEvent) -> Result<Option<String>, String> {
        let Some(field) = self.settings(ev.source.system).company_field else {
            return Ok(None);
        };
        let value = ev.fields.get(&field).or_else(|| ev.previous.get(&field));
        let candidates: Vec<&str> = match value {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => vec![s.trim()],
            Some(serde_json::Value::Object(o)) => ["id", "name"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(serde_json::Value::as_str))
                .collect(),
            Some(serde_json::Value::Number(n)) => vec![n.as_str()],
            _ => Vec::new(),
        };
        if candidates.is_empty() {
            return Ok(None);
        }
        let map = self.value_maps.get("companies");
        candidates
            .iter()
            .find_map(|c| {
                map.and_then(|m| {
                    m.get(*c).or_else(|| {
                        m.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(c))
                            .map(|(_, v)| v)
                    })
                })
            })
            .map(|company| Some(company.clone()))
            .ok_or_else(|| {
                format!(
                    "{} `{}` is not mapped to an ERP company: add it to [companies] in \
                     rules/value_maps.toml",
                    field,
                    candidates.join("` / `")
                )
            })
    }

    /// The system this deployment pairs on `side`.
    pub fn paired(&self, side: Side) -> System {
        match side {
            Side::Crm => self.catalogue.pairing.crm,
            Side::Erp => self.catalogue.pairing.erp,
        }
    }

    /// The system on the other side of the pairing.
    pub fn counterpart(&self, side: Side) -> System {
        match side {
            Side::Crm => self.catalogue.pairing.erp,
            Side::Erp => self.catalogue.pairing.crm,
        }
    }

    /// The Finance & Operations business events p2c reads: the built-in ones, with those in
    /// `[systems.fin_ops.business_events]` added or replacing them by class name.
    pub fn fin_ops_business_events(&self) -> Vec<crate::inbound::fo::BusinessEventSpec> {
        fin_ops_business_events(&self.catalogue.systems).unwrap_or_default()
    }

    pub fn settings(&self, system: System) -> SystemSettings {
        self.catalogue
            .systems
            .get(&system)
            .cloned()
            .unwrap_or_default()
    }

    fn script(&self, script: &str) -> Result<&Script, RuleError> {
        self.scripts.get(script).ok_or_else(|| RuleError::Missing {
            rule: script.to_string(),
        })
    }

    /// Runs a script on a JSON input, returning JSON (decimals exact): on the fast path
    /// when the rule is covered by it, else (and for every error) in Rhai.
    pub fn eval(&self, script: &str, input: &Value) -> Result<Value, RuleError> {
        self.run(
            self.script(script)?,
            Some(|| fast::V::of_json(input)),
            || engine::to_dynamic(input),
        )
    }

    /// Runs a script on an input map of named fields, read in place.
    pub fn eval_input(&self, script: &str, input: &RuleInput<'_>) -> Result<Value, RuleError> {
        self.run(
            self.script(script)?,
            Some(|| fast::V::fields(input.0.iter().map(|(k, f)| (*k, f.value())))),
            || input.to_dynamic(),
        )
    }

    /// Runs a script in Rhai only, never on the fast path (the reference the fast path
    /// is tested against, and the baseline of the benchmarks).
    pub fn eval_interpreted(&self, script: &str, input: &Value) -> Result<Value, RuleError> {
        self.run(
            self.script(script)?,
            None::<fn() -> fast::V<'static>>,
            || engine::to_dynamic(input),
        )
    }

    /// The fast path when the script has one and `fast_input` is given; Rhai when it has
    /// none, or steps aside.
    fn run<'i>(
        &self,
        s: &Script,
        fast_input: Option<impl FnOnce() -> fast::V<'i>>,
        rhai_input: impl FnOnce() -> Dynamic,
    ) -> Result<Value, RuleError> {
        if let (Some(f), Some(input)) = (&s.fast, fast_input) {
            if let Some(out) = f.eval(input()) {
                return Ok(out);
            }
        }
        let out = engine::run(&self.engine, s, rhai_input())?;
        Ok(engine::from_dynamic(&out))
    }

    /// The fast path alone: `None` when the rule is not covered or this input is left
    /// to Rhai (for tests and tools).
    pub fn eval_fast(&self, script: &str, input: &Value) -> Option<Value> {
        let s = self.scripts.get(script)?;
        s.fast.as_ref()?.eval(fast::V::of_json(input))
    }

    /// Whether `script` compiled for the fast path.
    pub fn is_fast(&self, script: &str) -> bool {
        self.scripts.get(script).is_some_and(|s| s.fast.is_some())
    }

    /// Every file of the set (for case runs and publishing).
    /// Rhai language-server definition files for the engine rules run in: the host API
    /// p2c adds (`__static__.d.rhai`, with each function's parameters and documentation)
    /// and Rhai's own functions and operators. (file name, content).
    #[cfg(feature = "tools")]
    pub fn definitions(&self) -> Vec<(String, String)> {
        self.engine
            .definitions()
            .with_headers(true)
            .include_standard_packages(true)
            .iter_files()
            .collect()
    }

    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    pub fn script_names(&self) -> impl Iterator<Item = &String> {
        self.scripts.keys()
    }
}

/// A script's `input` map given as named fields that are read in place (no copy of the
/// record into the script's own values unless Rhai has to run the rule).
#[derive(Debug, Default)]
pub struct RuleInput<'a>(pub Vec<(&'static str, Field<'a>)>);

/// One field of a [`RuleInput`].
#[derive(Debug)]
pub enum Field<'a> {
    Json(&'a Value),
    Object(&'a serde_json::Map<String, Value>),
    Text(String),
    Unit,
}

impl Field<'_> {
    fn value(&self) -> fast::V<'_> {
        match self {
            Field::Json(v) => fast::V::of_json(v),
            Field::Object(o) => fast::V::JMap(o),
            Field::Text(t) => fast::V::Str(std::borrow::Cow::Borrowed(t)),
            Field::Unit => fast::V::Unit,
        }
    }
}

impl RuleInput<'_> {
    fn to_dynamic(&self) -> Dynamic {
        let mut m = rhai::Map::new();
        for (k, f) in &self.0 {
            let v = match f {
                Field::Json(v) => engine::to_dynamic(v),
                Field::Object(o) => Dynamic::from_map(engine::object_to_map(o)),
                Field::Text(t) => Dynamic::from(t.clone()),
                Field::Unit => Dynamic::UNIT,
            };
            m.insert((*k).into(), v);
        }
        Dynamic::from_map(m)
    }
}

/// The content-hash version of a rule set: the same files always give the same version.
pub fn content_version(files: &BTreeMap<String, String>) -> String {
    let parts: Vec<&str> = files
        .iter()
        .flat_map(|(p, c)| [p.as_str(), c.as_str()])
        .collect();
    format!("r-{}", &crate::json::hash_parts(&parts)[..12])
}

/// The business-event table from the F&O settings (checked when the rules load).
fn fin_ops_business_events(
    systems: &BTreeMap<System, SystemSettings>,
) -> Result<Vec<crate::inbound::fo::BusinessEventSpec>, RuleError> {
    use crate::inbound::fo::BusinessEventSpec;
    let mut specs = crate::inbound::fo::default_business_events();
    let configured = systems
        .get(&System::FinOps)
        .map(|s| s.business_events.clone())
        .unwrap_or_default();
    for (class, c) in configured {
        let entity_type = match c.entity.as_str() {
            "invoice" => EntityType::Invoice,
            "payment" => EntityType::Payment,
            "customer" => EntityType::Account,
            other => {
                return Err(RuleError::Config {
                    message: format!(
                        "systems.fin_ops.business_events.{class}: entity `{other}` is not one of \
                         invoice, payment, customer"
                    ),
                })
            }
        };
        if c.key.trim().is_empty() {
            return Err(RuleError::Config {
                message: format!("systems.fin_ops.business_events.{class}: `key` is empty"),
            });
        }
        specs.retain(|s| s.class != class);
        specs.push(BusinessEventSpec {
            class,
            entity_type,
            key: c.key,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_rules() -> RuleSet {
        RuleSet::load(&DirLoader(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules"),
        ))
        .expect("the repository's rules compile")
    }

    #[test]
    fn f_and_o_business_events_are_configured_by_class_and_checked_when_the_rules_load() {
        let rules = repo_rules();
        let events = rules.fin_ops_business_events();
        let class = |c: &str| events.iter().find(|s| s.class == c).cloned();
        assert_eq!(
            class("SalesInvoicePostedBusinessEvent").map(|s| (s.entity_type, s.key)),
            Some((EntityType::Invoice, "InvoiceId".to_string()))
        );
        assert_eq!(
            class("CustCollectionStatusChangedBusinessEvent").map(|s| s.entity_type),
            Some(EntityType::Account),
            "added in flows.toml"
        );
        let with = |table: &str| {
            let mut files = rules.files.clone();
            let flows = files.get_mut("flows.toml").expect("flows");
            *flows = flows.replace(
                "CustCollectionStatusChangedBusinessEvent = { entity = \"customer\", key = \"CustomerAccount\" }",
                table,
            );
            RuleSet::from_files(files)
        };
        // The same class replaces the built-in entry.
        let replaced = with(
            "CustPaymentPostedBusinessEvent = { entity = \"payment\", key = \"PaymentReference\" }",
        )
        .expect("loads");
        let payments: Vec<_> = replaced
            .fin_ops_business_events()
            .into_iter()
            .filter(|s| s.class == "CustPaymentPostedBusinessEvent")
            .collect();
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].key, "PaymentReference");
        let Err(err) =
            with("VendInvoicePostedBusinessEvent = { entity = \"vendor\", key = \"InvoiceId\" }")
        else {
            panic!("an unknown entity is refused");
        };
        assert!(
            err.to_string()
                .contains("not one of invoice, payment, customer"),
            "{err}"
        );
    }

    #[test]
    fn a_record_s_company_comes_from_its_company_field_through_the_companies_map() {
        let mut files = DirLoader(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules"))
            .load()
            .expect("files");
        let flows = files.get_mut("flows.toml").expect("flows");
        *flows = flows.replace(
            "[systems.dataverse]\n",
            "[systems.dataverse]\ncompany_field = \"owningbusinessunit\"\n",
        );
        files
            .get_mut("value_maps.toml")
            .expect("maps")
            .push_str("\n[companies]\n\"8a1d0c8e-0000-4000-8000-000000000001\" = \"USRT\"\n\"Contoso Manufacturing\" = \"USMF\"\n");
        let rules = RuleSet::from_files(files).expect("rules");
        let event = |unit: serde_json::Value| {
            let mut fields = serde_json::Map::new();
            fields.insert("owningbusinessunit".into(), unit);
            crate::domain::ChangeEvent {
                event_id: crate::domain::EventId("e".into()),
                source: crate::domain::SourceRef::new(System::Dataverse, EntityType::Account, "1"),
                natural_key: None,
                operation: crate::domain::Operation::Update,
                fields,
                previous: Default::default(),
                needs_fetch: false,
                resource: None,
                version: Default::default(),
                origin: Default::default(),
                company: None,
                received_at: chrono::Utc::now(),
                content_hash: Default::default(),
            }
        };
        // A lookup: by its id, else by its name (case aside).
        let by_id = serde_json::json!({"id": "8a1d0c8e-0000-4000-8000-000000000001", "logical_name": "businessunit", "name": "Retail"});
        assert_eq!(rules.company_for(&event(by_id)), Ok(Some("USRT".into())));
        let by_name = serde_json::json!({"id": "ffff", "logical_name": "businessunit", "name": "contoso manufacturing"});
        assert_eq!(rules.company_for(&event(by_name)), Ok(Some("USMF".into())));
        assert_eq!(rules.company_for(&event(serde_json::Value::Null)), Ok(None));
        let unknown = serde_json::json!({"id": "eeee", "name": "Fabrikam"});
        let err = rules.company_for(&event(unknown)).expect_err("unmapped");
        assert!(
            err.contains("Fabrikam") && err.contains("[companies]"),
            "{err}"
        );
        // Without a company field, every record goes to the ERP's configured company.
        assert_eq!(
            repo_rules().company_for(&event(serde_json::json!("anything"))),
            Ok(None)
        );
    }

    #[test]
    fn a_pairing_can_be_chosen_for_a_run_and_must_pair_a_crm_with_an_erp() {
        let rules = repo_rules();
        assert_eq!(rules.paired(Side::Crm), System::Dataverse);
        let sf = rules
            .with_pairing(System::Salesforce, System::BusinessCentral)
            .expect("re-paired");
        assert_eq!(sf.paired(Side::Crm), System::Salesforce);
        assert_eq!(sf.paired(Side::Erp), System::BusinessCentral);
        assert_ne!(sf.version, rules.version, "a different rule set");
        // The rest of flows.toml is kept, comments included.
        assert_eq!(
            sf.settings(System::Salesforce).client_id(),
            rules.settings(System::Salesforce).client_id()
        );
        assert!(sf.files["flows.toml"].contains("# Which CRM is paired with which ERP"));
        let err = rules
            .with_pairing(System::BusinessCentral, System::Dataverse)
            .expect_err("refused");
        assert!(err.to_string().contains("must be a CRM"), "{err}");
    }

    #[test]
    fn repository_rules_pass_their_cases() {
        let rules = repo_rules();
        let failed: Vec<String> = cases::run_all(&rules)
            .into_iter()
            .filter(|r| !r.passed())
            .map(|r| format!("{} / {}: {}", r.script, r.case, r.failures.join("; ")))
            .collect();
        assert!(
            failed.is_empty(),
            "failing rule cases:\n{}",
            failed.join("\n")
        );
    }

    #[test]
    fn embedded_rules_equal_the_repository_rules() {
        let embedded = RuleSet::load(&EmbeddedLoader).expect("embedded rules compile");
        assert_eq!(embedded.version, repo_rules().version);
    }

    #[test]
    fn every_flow_of_the_catalogue_is_configured() {
        let rules = repo_rules();
        for kind in FlowKind::ALL {
            assert!(rules.catalogue.flows.contains_key(&kind), "{kind} missing");
        }
    }
}
