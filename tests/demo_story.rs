//! The demo story passes every step (the same code `p2c demo` runs), on the embedded
//! store and on DynamoDB and SQS FIFO (moto server).

use crate::common::repo_rules;
use p2c_core::domain::System;

async fn story(store: Option<std::path::PathBuf>, aws_endpoint: Option<String>) -> String {
    pairing_story(
        System::Dataverse,
        System::BusinessCentral,
        store,
        aws_endpoint,
    )
    .await
}

async fn pairing_story(
    crm: System,
    erp: System,
    store: Option<std::path::PathBuf>,
    aws_endpoint: Option<String>,
) -> String {
    let mut out = Vec::new();
    let report = p2c_core::demo::run(
        p2c_core::demo::DemoOptions {
            rules: repo_rules(),
            store,
            aws_endpoint,
            crm,
            erp,
        },
        &mut out,
    )
    .await
    .expect("demo runs");
    let text = String::from_utf8_lossy(&out).to_string();
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {} ({})", c.step, c.what, c.detail))
        .collect();
    assert!(failed.is_empty(), "{}\n{text}", failed.join("\n"));
    assert!(report.checks.len() >= 25, "{} checks", report.checks.len());
    assert!(text.contains("Both systems at the end"), "{text}");
    text
}

#[tokio::test]
async fn the_demo_story_passes_every_step() {
    let dir = tempfile::tempdir().expect("dir");
    let text = story(Some(dir.path().join("demo.db")), None).await;
    assert!(text.contains("on the embedded store"), "{text}");
}

/// Salesforce as the CRM: change events (Event Relay's EventBridge envelope, posted by an
/// API destination) in, REST upserts by external id out, p2c's own writes coming back as
/// change events and dropped as echoes.
#[tokio::test]
async fn the_demo_story_passes_every_step_with_salesforce_as_the_crm() {
    let dir = tempfile::tempdir().expect("dir");
    let text = pairing_story(
        System::Salesforce,
        System::BusinessCentral,
        Some(dir.path().join("sf.db")),
        None,
    )
    .await;
    assert!(
        text.contains("Salesforce (CRM) ⇄ Business Central (ERP)"),
        "{text}"
    );
    assert!(
        text.contains("OrderChangeEvent UPDATE (by p2c) → 202"),
        "{text}"
    );
}

/// Finance & Operations as the ERP: data events (a RemoteExecutionContext, as the Power
/// Platform integration proxies them) and business events in, OData out; p2c's own writes
/// coming back as data events and dropped as echoes; balances read from the customer's
/// open transactions after each posted invoice and payment.
#[tokio::test]
async fn the_demo_story_passes_every_step_with_finance_and_operations_as_the_erp() {
    let dir = tempfile::tempdir().expect("dir");
    let text = pairing_story(
        System::Dataverse,
        System::FinOps,
        Some(dir.path().join("fo.db")),
        None,
    )
    .await;
    for wanted in [
        "Dataverse (CRM) ⇄ Finance & Operations (ERP)",
        "F&O data event: Create SalesOrderHeadersV2(000731) by p2c → 202",
        "F&O business event: SalesInvoicePostedBusinessEvent CIV-000813 → 202",
        "F&O business event: CustPaymentPostedBusinessEvent ARP-002201 → 202",
    ] {
        assert!(text.contains(wanted), "{wanted}\n{text}");
    }
}

/// The fourth pairing: Salesforce with Finance & Operations.
#[tokio::test]
async fn the_demo_story_passes_every_step_with_salesforce_and_finance_and_operations() {
    let dir = tempfile::tempdir().expect("dir");
    let text = pairing_story(
        System::Salesforce,
        System::FinOps,
        Some(dir.path().join("sf-fo.db")),
        None,
    )
    .await;
    assert!(
        text.contains("Salesforce (CRM) ⇄ Finance & Operations (ERP)"),
        "{text}"
    );
}

#[tokio::test]
async fn the_demo_story_passes_every_step_on_dynamodb_and_sqs() {
    let text = story(None, Some(crate::moto::endpoint())).await;
    assert!(text.contains("on the DynamoDB table"), "{text}");
}

#[tokio::test]
async fn the_aws_path_demo_refuses_an_endpoint_off_this_machine() {
    let err = p2c_core::demo::run(
        p2c_core::demo::DemoOptions {
            rules: repo_rules(),
            store: None,
            aws_endpoint: Some("https://dynamodb.us-east-1.amazonaws.com".into()),
            crm: System::Dataverse,
            erp: System::BusinessCentral,
        },
        &mut Vec::new(),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("not on this machine"), "{err}");
}
