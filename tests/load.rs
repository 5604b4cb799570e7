//! The bounded load run (`p2c_core::sim::load`, also `cargo run --release -p p2c-core
//! --example load`), small enough for the suite: new, redelivered and invalid webhooks at
//! once over loopback HTTP. Every invalid one gets its documented 4xx, nothing gets a 5xx,
//! and the ERP receives exactly one write per distinct valid event. (Throughput and latency
//! are reported by the example, not asserted: a slow machine is not a failure.)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_each_distinct_valid_event_has_one_effect_and_the_rest_a_4xx() {
    let dir = tempfile::tempdir().expect("dir");
    let report = p2c_core::sim::load::run(p2c_core::sim::load::LoadOptions {
        requests: 800,
        concurrency: 24,
        store: Some(dir.path().join("load.db")),
    })
    .await
    .expect("the load run completes");
    assert_eq!(report.distinct_valid, 560, "{report}");
    assert_eq!(report.duplicates, 160, "{report}");
    assert_eq!(
        report.statuses.get(&202).copied(),
        Some(report.distinct_valid + report.duplicates),
        "{report}"
    );
    for status in [400, 401, 413, 422] {
        assert_eq!(
            report.statuses.get(&status).copied(),
            Some(report.invalid / 4),
            "{status}: {report}"
        );
    }
    assert!(
        report.statuses.keys().all(|s| (200..500).contains(s)),
        "{report}"
    );
    assert_eq!(report.applied, report.distinct_valid, "{report}");
}
