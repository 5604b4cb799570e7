//! A rule change published with `p2c rules publish` takes effect in a running `p2c serve`
//! without a restart, and `p2c rules rollback` reverts it: `p2c serve` runs as its own
//! process on an embedded store, the simulated Dataverse and Business Central post their
//! webhooks to it over loopback HTTP, and the rules are published and rolled back by other
//! `p2c` processes on the same store, as an analyst would.

use p2c_core::sim::bc::{BcHookConfig, SimBusinessCentral};
use p2c_core::sim::dataverse::{DataverseHookConfig, SimDataverse, PRIMARY_UNIT, USD};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one step may take before the test gives up (generous: a slow machine
/// is not a failure).
const PATIENCE: Duration = Duration::from_secs(120);
const DATAVERSE_KEY: &str = "serve-live-dataverse-key";
const BC_CLIENT_STATE: &str = "serve-live-bc-client-state";

mod common;
use common::{copy_dir, repo_rules, version_in};

/// A running `p2c serve`, its stderr collected line by line; killed on drop.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Serve {
    fn start(
        rules: &Path,
        store: &Path,
        dataverse: &SimDataverse,
        bc: &SimBusinessCentral,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2c"))
            .args(["--rules", rules.to_str().expect("utf-8"), "serve"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--store", store.to_str().expect("utf-8")])
            .args(["--rules-check-secs", "1"])
            .args(["--dataverse-url", &dataverse.api_base()])
            .args(["--dataverse-token", "sim-token"])
            .args(["--bc-url", &bc.root()])
            .args(["--bc-token", "sim-token"])
            .env("P2C_DATAVERSE_KEYS", DATAVERSE_KEY)
            .env("P2C_BC_CLIENT_STATES", BC_CLIENT_STATE)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("P2C_RULES")
            .env_remove("P2C_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2c serve starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let mut serve = Self {
            child,
            lines,
            url: String::new(),
        };
        let banner = serve.wait_for_line("serving webhooks on", |l| {
            l.contains("p2c serving webhooks on http://")
        });
        let at = banner.find("http://").expect("url");
        let url = &banner[at..];
        serve.url = url[..url.find("/webhooks").expect("path")].to_string();
        serve
    }

    fn log(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until serve has written a line that `matches`, and returns it.
    fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| matches(l))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "p2c serve exited ({status}) before `{what}`:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "p2c serve did not log `{what}`:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the webhooks both systems owe serve until `done` holds: serve queues each one and
/// works through the queues in the background, and its writes make the systems owe more.
async fn until(
    what: &str,
    serve: &Serve,
    dataverse: &SimDataverse,
    bc: &SimBusinessCentral,
    done: impl Fn() -> bool,
) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while !done() {
        for (hook, status) in dataverse
            .outbox()
            .flush(&client)
            .await
            .into_iter()
            .chain(bc.outbox().flush(&client).await)
        {
            assert_eq!(status, 202, "{hook} was refused:\n{}", serve.log());
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what} did not happen:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `p2c --rules <rules> <args…>` on serve's store: (success, stdout + stderr).
fn p2c(rules: &Path, store: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2c"))
        .args(["--rules", rules.to_str().expect("utf-8")])
        .args(args)
        .args(["--store", store.to_str().expect("utf-8")])
        .env_remove("P2C_RULES")
        .env_remove("P2C_STORE")
        .env_remove("RUST_LOG")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    (out.status.success(), text)
}

fn decimal(rec: &Map<String, Value>, field: &str) -> Option<String> {
    rec.get(field)
        .and_then(p2c_core::json::as_decimal)
        .map(|d| d.normalize().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_rule_takes_effect_in_a_running_serve_and_rollback_reverts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    copy_dir(&repo_rules(), &rules);
    let store = dir.path().join("p2c.db");
    let settings = p2c_core::rules::RuleSet::load(&p2c_core::rules::DirLoader(rules.clone()))
        .expect("the repository's rules load");
    let dv_settings = settings.settings(p2c_core::domain::System::Dataverse);
    let bc_settings = settings.settings(p2c_core::domain::System::BusinessCentral);
    let dataverse = SimDataverse::start(dv_settings.price_list_id.as_deref().expect("price list"))
        .await
        .expect("Dataverse");
    let bc = SimBusinessCentral::start(bc_settings.company_id.as_deref().expect("company"))
        .await
        .expect("Business Central");

    let mut serve = Serve::start(&rules, &store, &dataverse, &bc);
    let started_with = version_in(&serve.wait_for_line("its rules", |l| {
        l.contains("serving webhooks") && l.contains("with rules")
    }));
    dataverse.set_webhook(DataverseHookConfig {
        url: format!("{}/webhooks/dataverse", serve.url),
        header: "x-p2c-key".into(),
        secret: DATAVERSE_KEY.into(),
        integration_user: dv_settings.integration_user.clone().unwrap_or_default(),
    });
    bc.set_webhook(BcHookConfig {
        url: format!("{}/webhooks/bc", serve.url),
        client_state: BC_CLIENT_STATE.into(),
    });

    // A customer with a credit limit of 10,000 and an item, both synced.
    dataverse
        .create(
            "accounts",
            json!({
                "accountnumber": "ACC-LIVE", "name": "Contoso Pumps", "address1_city": "Redmond",
                "paymenttermscode": 1,
                "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
            }),
        )
        .expect("account");
    until(
        "the customer reaching the ERP",
        &serve,
        &dataverse,
        &bc,
        || bc.find("customers", "number", "ACC-LIVE").is_some(),
    )
    .await;
    bc.set_credit_limit("ACC-LIVE", "10000").expect("limit");
    bc.create_item("P-200", "Pump P-200", "460.00", "PCS", "PUMPS")
        .expect("item");
    until(
        "the credit limit and the product reaching the CRM",
        &serve,
        &dataverse,
        &bc,
        || {
            dataverse
                .find("accounts", "accountnumber", "ACC-LIVE")
                .and_then(|a| decimal(&a, "creditlimit"))
                .as_deref()
                == Some("10000")
                && dataverse
                    .find("products", "productnumber", "P-200")
                    .is_some()
        },
    )
    .await;

    let order = |number: &str| {
        dataverse
            .create_document(
                "salesorders",
                json!({
                    "ordernumber": number, "name": format!("order {number}"),
                    "customerid_account@odata.bind": "/accounts(accountnumber='ACC-LIVE')",
                    "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
                }),
                vec![json!({
                    "productid@odata.bind": "/products(productnumber='P-200')", "quantity": 2,
                    "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})"),
                })],
            )
            .expect("order");
    };
    let in_erp = |number: &str| {
        bc.find("salesOrders", "externalDocumentNumber", number)
            .is_some()
    };
    let crm_status = |number: &str| {
        dataverse
            .find("salesorders", "ordernumber", number)
            .and_then(|o| o.get("submitstatusdescription").cloned())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let decided_by = |number: &str| {
        let (ok, out) = p2c(&rules, &store, &["trace", &format!("order:{number}")]);
        assert!(ok, "{out}");
        out
    };

    order("ORD-LIVE-1");
    until(
        "the first order being released",
        &serve,
        &dataverse,
        &bc,
        || in_erp("ORD-LIVE-1"),
    )
    .await;
    assert!(decided_by("ORD-LIVE-1").contains(&format!("[{started_with}]")));

    // The rules serve started with are published first: the version to roll back to.
    let (ok, out) = p2c(&rules, &store, &["rules", "publish"]);
    assert!(ok && version_in(&out) == started_with, "{out}");

    // The credit controller puts the customer on a watch list: the analyst edits the rule,
    // and publishes it while serve is running.
    let credit = rules.join("credit_limit.rhai");
    let text = std::fs::read_to_string(&credit).expect("rule");
    let watched = text.replacen(
        "    if c.on_hold {",
        "    let watch_list = [\"ACC-LIVE\"];\n    if c.number in watch_list {\n        return #{ decision: \"hold\", reason: \"Customer \" + c.number + \" is on the credit watch list\" };\n    }\n    if c.on_hold {",
        1,
    );
    assert_ne!(watched, text, "the rule has the line the edit goes before");
    std::fs::write(&credit, watched).expect("edit");
    let (ok, out) = p2c(&rules, &store, &["rules", "publish"]);
    assert!(ok, "{out}");
    let published = version_in(&out);
    assert_ne!(published, started_with);
    // Picked up within the check interval, with no event needed to trigger it.
    serve.wait_for_line("the switch to the published rules", |l| {
        l.contains("rule set changed") && l.contains(&published)
    });

    order("ORD-LIVE-2");
    until(
        "the second order being held",
        &serve,
        &dataverse,
        &bc,
        || !crm_status("ORD-LIVE-2").is_empty(),
    )
    .await;
    assert_eq!(
        crm_status("ORD-LIVE-2"),
        "Credit hold: Customer ACC-LIVE is on the credit watch list"
    );
    assert!(!in_erp("ORD-LIVE-2"), "held, not sent to the ERP");
    assert!(decided_by("ORD-LIVE-2").contains(&format!("[{published}]")));

    // Rolled back: serve returns to the first version and the next order is released.
    let (ok, out) = p2c(&rules, &store, &["rules", "rollback"]);
    assert!(
        ok && out.contains(&format!("from {published} to {started_with}")),
        "{out}"
    );
    serve.wait_for_line("the switch back", |l| {
        l.contains("rule set changed") && l.contains(&format!("to={started_with}"))
    });
    order("ORD-LIVE-3");
    until(
        "the third order being released",
        &serve,
        &dataverse,
        &bc,
        || in_erp("ORD-LIVE-3"),
    )
    .await;
    assert!(decided_by("ORD-LIVE-3").contains(&format!("[{started_with}]")));
    assert!(
        !in_erp("ORD-LIVE-2"),
        "a rollback does not re-decide orders already held"
    );
    let (ok, out) = p2c(&rules, &store, &["rules", "versions"]);
    assert!(ok && out.lines().count() == 3, "{out}");
}
