//! A bounded load run on loopback (see `p2c_core::sim::load`): N webhooks, of which 70 %
//! new accounts, 20 % redeliveries and 10 % invalid, at a fixed concurrency.
//!
//! `cargo run --release -p p2c-core --example load -- 20000 [concurrency] [--file]`

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let dir = tempfile::tempdir()?;
    let opts = p2c_core::sim::load::LoadOptions {
        requests: numbers.first().copied().unwrap_or(10_000),
        concurrency: numbers.get(1).copied().unwrap_or(64) as usize,
        store: args
            .iter()
            .any(|a| a == "--file")
            .then(|| dir.path().join("load.db")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(p2c_core::sim::load::run(opts))?;
    print!("{report}");
    anyhow::ensure!(
        report.applied == report.distinct_valid,
        "{} writes for {} distinct valid events",
        report.applied,
        report.distinct_valid
    );
    Ok(())
}
