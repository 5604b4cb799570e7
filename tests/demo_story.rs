//! The demo story passes every step (the same code `p2c demo` runs).

use crate::common::repo_rules;

#[tokio::test]
async fn the_demo_story_passes_every_step() {
    let dir = tempfile::tempdir().expect("dir");
    let mut out = Vec::new();
    let report = p2c_core::demo::run(
        p2c_core::demo::DemoOptions {
            rules: repo_rules(),
            store: Some(dir.path().join("demo.db")),
        },
        &mut out,
    )
    .await
    .expect("demo runs");
    let text = String::from_utf8_lossy(&out);
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {} ({})", c.step, c.what, c.detail))
        .collect();
    assert!(failed.is_empty(), "{}\n{text}", failed.join("\n"));
    assert!(report.checks.len() >= 25, "{} checks", report.checks.len());
    assert!(text.contains("Both systems at the end"), "{text}");
}
