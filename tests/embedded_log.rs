//! The embedded store's file: everything a store holds reads back the same after a restart
//! and after a compaction; a write cut short by a crash is dropped and the store goes on;
//! damage is refused with where it is; two processes (here two handles) on one file see
//! each other's commits and cannot both win a conditional write.

use crate::store_contract::{msg, parked};
use chrono::Utc;
use p2c_core::embedded::{EmbeddedStore, QueueSettings};
use p2c_core::error::StoreError;
use p2c_core::ports::{
    Activation, AuditEntry, AuditLog, Consumer, DeadLetterSink, DeadLetters, Decision, DecisionLog,
    EntityState, FiguresStore, IdempotencyStore, ParkingStore, Publisher, QueueName, RebateFigures,
    RuleStore, StateStore,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

fn entry(subject: &str, outcome: &str) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        subject: subject.into(),
        step: "sync".into(),
        outcome: outcome.into(),
        detail: format!("{outcome}: ✓ Zürich"),
        event_id: Some(format!("ev-{outcome}")),
        rules_version: Some("r-1".into()),
    }
}

fn state(key: &str, version: u64) -> EntityState {
    let mut st = EntityState::new(key.parse().expect("key"));
    st.version = version;
    st.updated_at = Utc::now();
    st.ids
        .insert(p2c_core::domain::System::Dataverse, format!("dv-{key}"));
    st
}

/// Writes something into every table through the ports, queue states included: a message
/// in flight, one returned for a retry with its reason, one dead-lettered, one acknowledged.
async fn fill(s: &EmbeddedStore) {
    s.claim("idem-open", LONG, LONG).await.expect("claim");
    s.complete("idem-done", &json!({"outcome": "applied"}), LONG)
        .await
        .expect("complete");
    s.save(&state("order:O-1", 1), &entry("order:O-1", "created"))
        .await
        .expect("save");
    s.save(&state("order:O-1", 2), &entry("order:O-1", "updated"))
        .await
        .expect("save");
    s.save(&state("account:A-1", 1), &entry("account:A-1", "created"))
        .await
        .expect("save");
    for (id, dep) in [
        ("o-2", "account:A"),
        ("o-1", "account:A"),
        ("o-9", "account:B"),
    ] {
        s.park(&parked(id, dep)).await.expect("park");
    }
    s.append(&entry("dataverse/order/x", "ignored"))
        .await
        .expect("append");
    s.set_open_order("A-1", "O-1", "1200.50".parse().expect("dec"))
        .await
        .expect("open order");
    s.set_open_order("A-1", "O-2", "99.99".parse().expect("dec"))
        .await
        .expect("open order");
    s.clear_open_order("A-1", "O-2").await.expect("clear");
    let figures = RebateFigures {
        volume: "125000.00".parse().expect("dec"),
        accrued: "2500.00".parse().expect("dec"),
        ..RebateFigures::default()
    };
    s.save_rebate("A-1", "2026", &figures)
        .await
        .expect("rebate");
    let mut files = BTreeMap::new();
    files.insert(
        "credit_limit.rhai".to_string(),
        "fn rule(i) { 1 }".to_string(),
    );
    s.put_rules("r-abc", &files).await.expect("rules");
    s.activate(&Activation {
        seq: 1,
        version: "r-abc".into(),
        at: Utc::now(),
        by: "ana".into(),
        action: "publish".into(),
    })
    .await
    .expect("activate");
    s.record(&Decision {
        id: "d-1".into(),
        at: Utc::now(),
        rule: "credit_limit.rhai".into(),
        subject: "order:O-1".into(),
        input: json!({"order": {"total": "6440.00"}}),
        output: json!({"decision": "release"}),
        rules_version: "r-abc".into(),
    })
    .await
    .expect("decision");
    // Queues: five messages in three groups.
    s.send(
        QueueName::Inbound,
        &[
            msg("g1", "a"),
            msg("g1", "b"),
            msg("g2", "c"),
            msg("g3", "d"),
            msg("g3", "e"),
        ],
    )
    .await
    .expect("send");
    let got = s
        .receive(QueueName::Inbound, 10, LONG)
        .await
        .expect("receive");
    assert_eq!(got.len(), 5);
    // g1's two stay in flight; g2's is retried with its reason; g3's are acknowledged.
    s.retry(
        QueueName::Inbound,
        &got[2],
        Duration::from_millis(1),
        "Dataverse said 503",
    )
    .await
    .expect("retry");
    s.ack_all(QueueName::Inbound, &[&got[3].receipt, &got[4].receipt])
        .await
        .expect("ack");
    s.send(QueueName::ToErp, &[msg("e", "1")])
        .await
        .expect("send");
    let e = s.receive(QueueName::ToErp, 1, LONG).await.expect("receive");
    s.dead_letter(QueueName::ToErp, &e[0], "bc_rejected", "BC said no")
        .await
        .expect("dead letter");
    let by_hand = p2c_core::ports::Delivery {
        message_id: "msg-by-hand".into(),
        ..e[0].clone()
    };
    s.bury(QueueName::ToCrm, &by_hand, "buried", "by hand")
        .await
        .expect("bury");
}

/// Everything the ports can say about the store, without changing it.
async fn view(s: &EmbeddedStore) -> String {
    let mut out = Vec::new();
    out.push(format!("{:?}", s.peek("idem-done").await.expect("peek")));
    out.push(format!("{:?}", s.peek("idem-open").await.expect("peek")));
    for key in ["order:O-1", "account:A-1"] {
        let st = s
            .load(&key.parse().expect("key"))
            .await
            .expect("load")
            .expect("state");
        out.push(format!("{key} v{} {:?}", st.version, st.ids));
        out.push(format!("{:?}", s.trail(key).await.expect("trail")));
    }
    out.push(format!(
        "{:?}",
        s.resolve(&p2c_core::domain::SourceRef::new(
            p2c_core::domain::System::Dataverse,
            p2c_core::domain::EntityType::Order,
            "dv-order:O-1",
        ))
        .await
        .expect("resolve")
    ));
    out.push(format!(
        "{:?}",
        s.trail("dataverse/order/x").await.expect("trail")
    ));
    out.push(format!(
        "{:?}",
        s.waiting("account:A").await.expect("waiting")
    ));
    out.push(format!("{:?}", s.all_parked().await.expect("parked")));
    out.push(format!("{}", s.open_orders("A-1", "").await.expect("open")));
    out.push(format!(
        "{:?}",
        s.rebate("A-1", "2026").await.expect("rebate")
    ));
    out.push(format!("{:?}", s.get_rules("r-abc").await.expect("rules")));
    out.push(format!(
        "{:?}",
        s.activations(10).await.expect("activations")
    ));
    out.push(format!(
        "{:?}",
        s.decisions(Utc::now() - chrono::Duration::days(1))
            .await
            .expect("decisions")
    ));
    for q in QueueName::ALL {
        out.push(format!(
            "{q}: {} queued, dead {:?}",
            s.depth(q).await.expect("depth"),
            s.list(q).await.expect("dead letters")
        ));
    }
    out.join("\n")
}

/// After a restart, what the queues hand out next: g1 is still held by its messages in
/// flight, g2's retried message comes again with its count.
async fn queues_go_on(s: &EmbeddedStore) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let got = s
        .receive(QueueName::Inbound, 10, Duration::from_millis(1))
        .await
        .expect("receive");
    let bodies: Vec<(&str, u32)> = got
        .iter()
        .map(|d| (d.body.as_str(), d.receive_count))
        .collect();
    assert_eq!(bodies, [("g2:c", 2)]);
    assert_eq!(s.depth(QueueName::Inbound).await.expect("depth"), 3);
}

#[tokio::test]
async fn every_table_reads_back_the_same_after_a_restart_and_after_a_compaction() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    let s = EmbeddedStore::open(&path).expect("open");
    fill(&s).await;
    let before = view(&s).await;
    assert!(before.contains("inbound: 3 queued"), "{before}");
    assert!(
        before.contains("BC said no") && before.contains("by hand"),
        "{before}"
    );
    drop(s);
    let reopened = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(view(&reopened).await, before, "after a restart");
    let size = std::fs::metadata(&path).expect("meta").len();
    reopened.compact().expect("compact");
    assert!(
        std::fs::metadata(&path).expect("meta").len() < size,
        "the acknowledged and replaced records are gone"
    );
    assert_eq!(view(&reopened).await, before, "after compacting");
    drop(reopened);
    let compacted = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        view(&compacted).await,
        before,
        "the compacted file, reopened"
    );
    queues_go_on(&compacted).await;
    // Writes go on after a compaction, and the whole history is still there.
    compacted
        .save(&state("order:O-1", 3), &entry("order:O-1", "third"))
        .await
        .expect("save");
    drop(compacted);
    let last = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        outcomes(&last, "order:O-1").await,
        ["created", "updated", "third"]
    );
}

/// The outcomes of a subject's audit trail, in order.
async fn outcomes(s: &EmbeddedStore, subject: &str) -> Vec<String> {
    s.trail(subject)
        .await
        .expect("trail")
        .into_iter()
        .map(|e| e.outcome)
        .collect()
}

/// The process that compacts keeps its tables (only where the audit and decision bodies
/// are in the file changes): what it reads, compacts again and writes afterwards matches
/// what another process reads from the file.
#[tokio::test]
async fn the_compacting_process_reads_and_writes_on_from_its_own_tables() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    let s = EmbeddedStore::open(&path).expect("open");
    fill(&s).await;
    let before = view(&s).await;
    s.compact().expect("compact");
    assert_eq!(
        view(&s).await,
        before,
        "after compacting, in the same process"
    );
    s.save(&state("order:O-1", 3), &entry("order:O-1", "third"))
        .await
        .expect("save");
    let after = view(&s).await;
    assert_ne!(after, before);
    s.compact().expect("compact again");
    assert_eq!(view(&s).await, after, "after compacting twice");
    let other = EmbeddedStore::open(&path).expect("open");
    assert_eq!(
        view(&other).await,
        after,
        "the file, read by another process"
    );
    assert_eq!(
        outcomes(&s, "order:O-1").await,
        ["created", "updated", "third"]
    );
}

/// A write cut short (a process killed mid-write): the frame's length runs past the end.
fn tear(path: &Path) -> u64 {
    let before = std::fs::metadata(path).expect("meta").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(&200u32.to_le_bytes()).expect("len");
    f.write_all(&[7, 7, 7, 7, 1, 2, 3]).expect("partial");
    before
}

#[tokio::test]
async fn a_write_cut_short_by_a_crash_is_dropped_and_the_store_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    {
        let s = EmbeddedStore::open(&path).expect("open");
        s.save(&state("order:O-1", 1), &entry("order:O-1", "created"))
            .await
            .expect("save");
    }
    let good = tear(&path);
    let s = EmbeddedStore::open(&path).expect("opens past the torn write");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        good,
        "cut off"
    );
    assert!(s
        .load(&"order:O-1".parse().expect("key"))
        .await
        .expect("load")
        .is_some());
    s.save(&state("order:O-1", 2), &entry("order:O-1", "after"))
        .await
        .expect("save");
    drop(s);
    let again = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        again
            .load(&"order:O-1".parse().expect("key"))
            .await
            .expect("load")
            .expect("state")
            .version,
        2
    );
}

#[tokio::test]
async fn a_damaged_file_is_refused_with_where_the_damage_is() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    {
        let s = EmbeddedStore::open(&path).expect("open");
        for i in 1..=3 {
            s.save(&state("order:O-1", i), &entry("order:O-1", "saved"))
                .await
                .expect("save");
        }
    }
    // A byte flipped inside the first transaction's record.
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[40] ^= 0xff;
    std::fs::write(&path, bytes).expect("write");
    let err = EmbeddedStore::open(&path).err().expect("refused");
    assert!(
        err.to_string().contains("damaged") && err.to_string().contains("byte 16"),
        "{err}"
    );
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "these are my notes, not a store").expect("write");
    let err = EmbeddedStore::open(&other).err().expect("refused");
    assert!(err.to_string().contains("not a p2c store"), "{err}");
}

#[tokio::test]
async fn two_processes_on_one_file_see_each_others_commits_and_cannot_both_win() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    let a = EmbeddedStore::open(&path).expect("open");
    let b = EmbeddedStore::open(&path).expect("open");
    let key = "order:O-1".parse().expect("key");
    a.save(&state("order:O-1", 1), &entry("order:O-1", "by a"))
        .await
        .expect("save");
    assert_eq!(b.load(&key).await.expect("load").expect("seen").version, 1);
    // Both read version 1; b writes 2 first; a's version 2 is a conflict.
    b.save(&state("order:O-1", 2), &entry("order:O-1", "by b"))
        .await
        .expect("save");
    let lost = a
        .save(&state("order:O-1", 2), &entry("order:O-1", "by a again"))
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");
    assert_eq!(
        a.trail("order:O-1").await.expect("trail").len(),
        2,
        "the losing write left nothing"
    );
    // One queue between them: a sends, b receives, a acknowledges with b's receipt.
    a.send(QueueName::ToErp, &[msg("g", "1")])
        .await
        .expect("send");
    let got = b
        .receive(QueueName::ToErp, 10, LONG)
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert!(a
        .receive(QueueName::ToErp, 10, LONG)
        .await
        .expect("receive")
        .is_empty());
    a.ack(QueueName::ToErp, &got[0].receipt).await.expect("ack");
    assert_eq!(b.depth(QueueName::ToErp).await.expect("depth"), 0);
    // A compaction by one is followed by the other.
    b.compact().expect("compact");
    a.save(&state("order:O-1", 3), &entry("order:O-1", "by a after"))
        .await
        .expect("save");
    assert_eq!(b.load(&key).await.expect("load").expect("state").version, 3);
    assert_eq!(b.trail("order:O-1").await.expect("trail").len(), 3);
}

#[tokio::test]
async fn a_unit_of_work_is_one_commit_others_see_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    let a = EmbeddedStore::open(&path).expect("open");
    let b = EmbeddedStore::open(&path).expect("open");
    a.append(&entry("account:A-1", "before the unit"))
        .await
        .expect("append");
    let seen_inside = a
        .unit(async {
            a.send(QueueName::Inbound, &[msg("g", "1"), msg("h", "2")])
                .await
                .expect("send");
            a.save(&state("order:O-1", 1), &entry("order:O-1", "in a unit"))
                .await
                .expect("save");
            // While the unit holds the file's lock, readers go on without waiting for it
            // (as `p2c trace` does while `p2c serve` works): they see what was committed,
            // and nothing of the unit yet.
            let c = EmbeddedStore::open(&path).expect("opens while a unit is open");
            assert_eq!(c.trail("account:A-1").await.expect("trail").len(), 1);
            assert_eq!(b.trail("account:A-1").await.expect("trail").len(), 1);
            b.depth(QueueName::Inbound).await.expect("depth")
        })
        .await
        .expect("unit");
    assert_eq!(seen_inside, 0);
    assert_eq!(b.depth(QueueName::Inbound).await.expect("depth"), 2);
    assert!(b
        .load(&"order:O-1".parse().expect("key"))
        .await
        .expect("load")
        .is_some());
    // Queue settings survive as configured, not stored: a store opened with a limit of 1
    // dead-letters on the second receive.
    let strict = EmbeddedStore::open(&path)
        .expect("open")
        .with_queue_settings(QueueSettings {
            max_receives: 1,
            dedup_window: Duration::from_secs(300),
        });
    let got = strict
        .receive(QueueName::Inbound, 10, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(got.len(), 2);
    assert!(strict
        .receive(QueueName::Inbound, 10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty());
    assert_eq!(
        strict.list(QueueName::Inbound).await.expect("dead").len(),
        2
    );
}

/// A message's typed value travels with it inside the process (the consumer does not parse
/// what was just serialized) and moves to the consumer: the queue keeps no copy, so a
/// second delivery, like one read back from the file after a restart, is the body alone.
#[tokio::test]
async fn a_typed_value_travels_in_process_and_a_restart_leaves_the_body() {
    use p2c_core::ports::Typed;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    let ev: p2c_core::domain::ChangeEvent = parked("o-1", "x").event;
    let s = EmbeddedStore::open(&path).expect("open");
    s.send(
        QueueName::Inbound,
        &[p2c_core::pipeline::sync::event_message(&ev)],
    )
    .await
    .expect("send");
    let got = s
        .receive(QueueName::Inbound, 1, Duration::ZERO)
        .await
        .expect("receive");
    let Some(Typed::Event(typed)) = got[0].typed.take() else {
        panic!("the event travels typed");
    };
    assert_eq!(*typed, ev);
    assert_eq!(std::sync::Arc::strong_count(&typed), 1, "moved, not shared");
    assert!(got[0].typed.take().is_none(), "taken once");
    // Received again (its visibility was zero): the body.
    let got = s
        .receive(QueueName::Inbound, 1, Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert!(got[0].typed.take().is_none());
    drop(s);
    let again = EmbeddedStore::open(&path).expect("reopen");
    let got = again
        .receive(QueueName::Inbound, 1, Duration::ZERO)
        .await
        .expect("receive");
    assert!(got[0].typed.take().is_none());
    let parsed: p2c_core::domain::ChangeEvent = serde_json::from_str(&got[0].body).expect("body");
    assert_eq!(parsed, ev);
}
