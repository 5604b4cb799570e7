//! The store and queue contracts. The store contracts run on the embedded adapter and on
//! the DynamoDB adapter against moto, proving they behave the same; the queue contracts run
//! on the embedded queue (the SQS adapter is next).

use chrono::Utc;
use p2c_core::domain::{EntityKey, System};
use p2c_core::embedded::{EmbeddedStore, QueueSettings};
use p2c_core::error::StoreError;
use p2c_core::ports::{
    AuditEntry, AuditLog, Claim, Consumer, DeadLetters, EntityState, IdempotencyStore, OutMessage,
    Publisher, QueueName, StateStore,
};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

/// A message whose body names its group and deduplication id.
pub fn msg(group: &str, dedup: &str) -> OutMessage {
    OutMessage {
        group: group.into(),
        dedup_id: dedup.into(),
        body: format!("{group}:{dedup}"),
        typed: None,
    }
}

/// An audit entry of `subject`, stamped now.
fn step(subject: &str, outcome: &str) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        subject: subject.into(),
        step: "sync".into(),
        outcome: outcome.into(),
        detail: format!("{outcome} detail"),
        event_id: Some(format!("ev-{outcome}")),
        rules_version: Some("r-1".into()),
    }
}

/// An embedded store on a file (the contracts run on it as well as in memory).
fn on_file(settings: QueueSettings) -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let s = EmbeddedStore::open(dir.path().join("contract.p2c"))
        .expect("store")
        .with_queue_settings(settings);
    (s, dir)
}

/// What a contract left in the file reads back, before and after a compaction.
fn reopens(s: EmbeddedStore) {
    let path = s.path().expect("a file").to_path_buf();
    drop(s);
    EmbeddedStore::open(&path)
        .expect("reopens")
        .compact()
        .expect("compacts");
    EmbeddedStore::open(&path).expect("reopens compacted");
}

/// Runs a store contract on both adapters.
macro_rules! on_both_stores {
    ($contract:ident: $embedded:ident, $dynamo:ident) => {
        #[tokio::test]
        async fn $embedded() {
            $contract(&EmbeddedStore::in_memory().expect("store")).await;
            let (s, _dir) = on_file(QueueSettings::default());
            $contract(&s).await;
            reopens(s);
        }

        #[tokio::test]
        async fn $dynamo() {
            $contract(&crate::moto::dynamo().await).await;
        }
    };
}

on_both_stores!(claim_then_duplicate: claim_then_duplicate_embedded, claim_then_duplicate_dynamodb);

/// A claim is fresh, then in progress, then a duplicate once completed.
async fn claim_then_duplicate<S: IdempotencyStore>(s: &S) {
    assert_eq!(s.claim("k", LONG, LONG).await.expect("claim"), Claim::Fresh);
    assert!(matches!(
        s.claim("k", LONG, LONG).await.expect("claim"),
        Claim::InProgress { .. }
    ));
    s.complete("k", &json!({"done": 1}), LONG)
        .await
        .expect("complete");
    match s.claim("k", LONG, LONG).await.expect("claim") {
        Claim::Duplicate(rec) => assert_eq!(rec.outcome, json!({"done": 1})),
        other => panic!("{other:?}"),
    }
}

on_both_stores!(expiry_on_read: expiry_on_read_embedded, expiry_on_read_dynamodb);

/// Expiry is checked on read (TTL is housekeeping only) and lapsed locks can be taken over.
async fn expiry_on_read<S: IdempotencyStore>(s: &S) {
    s.complete("expired", &json!(1), Duration::from_millis(1))
        .await
        .expect("complete");
    s.claim("locked", Duration::from_millis(1), LONG)
        .await
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.claim("expired", LONG, LONG).await.expect("claim"),
        Claim::Fresh,
        "an expired record does not count"
    );
    assert_eq!(
        s.claim("locked", LONG, LONG).await.expect("claim"),
        Claim::Fresh,
        "a lapsed lock is taken over"
    );
    s.release("locked").await.expect("release");
    assert_eq!(
        s.claim("locked", LONG, LONG).await.expect("claim"),
        Claim::Fresh,
        "a released claim is free"
    );
    s.complete("locked", &json!("done"), LONG)
        .await
        .expect("complete");
    s.release("locked")
        .await
        .expect("release of a completed key");
    assert!(
        s.peek("locked").await.expect("peek").is_some(),
        "release never drops a completed record"
    );
    assert!(s.peek("expired").await.expect("peek").is_none());
}

on_both_stores!(optimistic_locking: optimistic_locking_embedded, optimistic_locking_dynamodb);

/// Two writers of the same version cannot both win; cross-references follow the winner, and
/// are kept for CRM ids only (ERP records name what they point at by number, so an ERP id is
/// never looked up and costs no write).
async fn optimistic_locking<S: StateStore>(s: &S) {
    use p2c_core::domain::SourceRef;
    let key: EntityKey = "account:A".parse().expect("key");
    let mut first = EntityState::new(key.clone());
    first.version = 1;
    s.save(&first, &step("account:A", "created"))
        .await
        .expect("created");
    let mut a = s.load(&key).await.expect("load").expect("state");
    let mut b = a.clone();
    a.version += 1;
    a.ids.insert(System::Dataverse, "x".into());
    a.ids.insert(System::BusinessCentral, "erp-x".into());
    b.version += 1;
    b.ids.insert(System::Dataverse, "y".into());
    s.save(&a, &step("account:A", "a"))
        .await
        .expect("first wins");
    assert!(matches!(
        s.save(&b, &step("account:A", "b")).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut again = EntityState::new(key.clone());
    again.version = 1;
    assert!(
        matches!(
            s.save(&again, &step("account:A", "again")).await,
            Err(StoreError::Conflict { .. })
        ),
        "a second create conflicts too"
    );
    let stored = s.load(&key).await.expect("load").expect("state");
    assert_eq!(stored.ids[&System::Dataverse], "x");
    assert_eq!(
        stored.ids[&System::BusinessCentral],
        "erp-x",
        "kept on the state"
    );
    let resolve = |system, id: &str| {
        let source = SourceRef::new(system, key.entity_type, id);
        async move { s.resolve(&source).await.expect("xref") }
    };
    assert_eq!(resolve(System::Dataverse, "x").await, Some(key.clone()));
    assert_eq!(resolve(System::BusinessCentral, "erp-x").await, None);
}

on_both_stores!(a_loaded_state_is_the_saved_one: a_loaded_state_is_the_saved_one_embedded, a_loaded_state_is_the_saved_one_dynamodb);

/// A state with something in every part, money among it.
fn rich_state(key: &EntityKey, version: u64, name: &str) -> EntityState {
    use p2c_core::command::{Action, Command};
    use p2c_core::domain::{EventId, SourceVersion};
    use p2c_core::ports::Applied;
    let mut s = EntityState::new(key.clone());
    s.version = version;
    s.ids.insert(System::Dataverse, format!("dv-{name}"));
    s.ids.insert(System::BusinessCentral, format!("bc-{name}"));
    s.applied.insert(
        System::Dataverse,
        SourceVersion {
            sequence: Some((7, 2)),
            modified_ms: Some(1_778_749_965_123),
        },
    );
    s.written.insert(System::BusinessCentral, "ab".repeat(32));
    s.sent.insert("account_to_customer".into(), "cd".repeat(32));
    let mut customer: serde_json::Value = serde_json::from_str(
        r#"{"credit_limit": 12345678901234567.89, "tiers": [0.10, 2.50e3], "note": "Zürich \"Ost\"\n"}"#,
    )
    .expect("record");
    customer["name"] = json!(name);
    s.records.insert("customer".into(), customer);
    let cmd = Command::new(
        "cause",
        &EventId("dataverse:e1:Update".into()),
        System::BusinessCentral,
        key.clone(),
        Action::SetOrderErpNumber {
            order_number: "SO-1".into(),
            erp_number: "101".into(),
        },
        "r-1",
    );
    s.mark_delivered("cmd-earlier");
    s.last_applied = Some(Applied {
        idempotency_key: format!("sync#e{version}#abc"),
        commands: vec![cmd],
    });
    s
}

/// What a load returns is exactly what was saved, however often it is loaded: money to the
/// last digit, escaped text, commands and all.
async fn a_loaded_state_is_the_saved_one<S: StateStore>(s: &S) {
    let key: EntityKey = "account:RICH".parse().expect("key");
    for version in 1..=2 {
        let saved = rich_state(&key, version, &format!("Rich {version}"));
        s.save(&saved, &step("account:RICH", "saved"))
            .await
            .expect("saved");
        let mut expected = saved.clone();
        expected.stored_ids = saved.ids.clone();
        for n in 0..3 {
            let loaded = s.load(&key).await.expect("load").expect("state");
            assert_eq!(loaded, expected, "load {n} of version {version}");
        }
    }
}

/// A state another process saved is what a load returns, not what this process last
/// saved and kept.
#[tokio::test]
async fn a_load_sees_the_state_another_process_saved_since() {
    let (a, dir) = on_file(QueueSettings::default());
    let b = EmbeddedStore::open(dir.path().join("contract.p2c")).expect("second process");
    let key: EntityKey = "account:SHARED".parse().expect("key");
    a.save(&rich_state(&key, 1, "from a"), &step("account:SHARED", "a"))
        .await
        .expect("a saves");
    let from_b = b.load(&key).await.expect("load").expect("state");
    assert_eq!(from_b.records["customer"]["name"], json!("from a"));
    b.save(&rich_state(&key, 2, "from b"), &step("account:SHARED", "b"))
        .await
        .expect("b saves over it");
    let seen = a.load(&key).await.expect("load").expect("state");
    assert_eq!(seen.version, 2);
    assert_eq!(seen.records["customer"]["name"], json!("from b"));
}

/// What a queue adapter offers.
trait Queues: Publisher + Consumer + DeadLetters + p2c_core::ports::DeadLetterSink {}
impl<T: Publisher + Consumer + DeadLetters + p2c_core::ports::DeadLetterSink> Queues for T {}

/// Runs a queue contract on both adapters (receive limit 2).
macro_rules! on_both_queues {
    ($contract:ident: $embedded:ident, $sqs:ident) => {
        #[tokio::test]
        async fn $embedded() {
            let settings = QueueSettings {
                max_receives: 2,
                dedup_window: Duration::from_secs(300),
            };
            $contract(
                &EmbeddedStore::in_memory()
                    .expect("store")
                    .with_queue_settings(settings),
            )
            .await;
            let (q, _dir) = on_file(settings);
            $contract(&q).await;
            reopens(q);
        }

        #[tokio::test]
        async fn $sqs() {
            let q = crate::moto::sqs(2).await;
            $contract(&q).await;
        }
    };
}

on_both_queues!(fifo_order: fifo_order_embedded, fifo_order_sqs);

/// FIFO groups deliver in order and a message in flight holds its group; a retried
/// message comes first again with its receive count up.
async fn fifo_order<Q: Queues>(s: &Q) {
    s.send(
        QueueName::Inbound,
        &[msg("a", "1"), msg("b", "4"), msg("a", "2"), msg("a", "3")],
    )
    .await
    .expect("send");
    let first = s
        .receive(QueueName::Inbound, 1, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(first[0].body, "a:1");
    let next = s
        .receive(QueueName::Inbound, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(
        next.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
        vec!["b:4"],
        "group a waits behind its message in flight"
    );
    s.retry(QueueName::Inbound, &first[0], Duration::ZERO, "failed")
        .await
        .expect("retry");
    let again = s
        .receive(QueueName::Inbound, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(
        again.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
        vec!["a:1", "a:2", "a:3"],
        "the failed message comes first again"
    );
    assert_eq!(again[0].receive_count, 2);
    let receipts: Vec<_> = again.iter().map(|d| d.receipt.as_str()).collect();
    s.ack_all(QueueName::Inbound, &receipts).await.expect("ack");
    let b = s
        .receive(QueueName::Inbound, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(b.len(), 0, "b:4 is still in flight");
    assert_eq!(s.depth(QueueName::Inbound).await.expect("depth"), 1);
}

on_both_queues!(dedup_window: dedup_window_embedded, dedup_window_sqs);

/// A second send with the same deduplication id inside the window is dropped; batches
/// larger than one request are split and all sent; acknowledgements go in batches too.
async fn dedup_window<Q: Queues>(s: &Q) {
    s.send(QueueName::ToErp, &[msg("g", "same"), msg("g", "same")])
        .await
        .expect("send");
    s.send(QueueName::ToErp, &[msg("g", "same")])
        .await
        .expect("send");
    let many: Vec<_> = (0..23)
        .map(|i| msg(&format!("m{i}"), &format!("d{i}")))
        .collect();
    s.send(QueueName::ToErp, &many).await.expect("send 23");
    let mut got = Vec::new();
    for _ in 0..10 {
        let batch = s
            .receive(QueueName::ToErp, 10, Duration::from_secs(60))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 10);
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt.as_str()).collect();
        s.ack_all(QueueName::ToErp, &receipts).await.expect("ack");
        got.extend(batch.into_iter().map(|d| d.body));
    }
    got.sort();
    assert_eq!(got.len(), 24, "one `same` and 23 others: {got:?}");
    assert_eq!(got.iter().filter(|b| *b == "g:same").count(), 1);
    assert_eq!(s.depth(QueueName::ToErp).await.expect("depth"), 0);
}

on_both_queues!(dead_letters: dead_letters_embedded, dead_letters_sqs);

/// A message goes to the dead-letter queue after the receive limit, or at once with a
/// code and reason; both are listed and can be replayed by id.
async fn dead_letters<Q: Queues>(s: &Q) {
    s.send(QueueName::ToCrm, &[msg("g", "m"), msg("h", "n")])
        .await
        .expect("send");
    for _ in 0..2 {
        let d = s
            .receive(QueueName::ToCrm, 10, Duration::from_secs(60))
            .await
            .expect("receive");
        let m = d.iter().find(|d| d.body == "g:m").expect("g:m received");
        s.retry(QueueName::ToCrm, m, Duration::ZERO, "target down")
            .await
            .expect("retry");
        if let Some(n) = d.iter().find(|d| d.body == "h:n") {
            s.dead_letter(
                QueueName::ToCrm,
                n,
                "target_rejected",
                "400: no such customer",
            )
            .await
            .expect("dead letter");
        }
    }
    assert!(s
        .receive(QueueName::ToCrm, 10, Duration::from_secs(60))
        .await
        .expect("receive")
        .is_empty());
    let mut dead = s.list(QueueName::ToCrm).await.expect("list");
    dead.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].body, "g:m");
    assert_eq!(dead[0].code, "max_receives_exceeded");
    assert_eq!(dead[0].reason, "target down", "the last error is kept");
    assert_eq!(
        (
            dead[1].body.as_str(),
            dead[1].code.as_str(),
            dead[1].reason.as_str()
        ),
        ("h:n", "target_rejected", "400: no such customer")
    );
    assert_eq!(dead[1].group, "h");
    assert_eq!(
        s.list(QueueName::ToCrm).await.expect("list again").len(),
        2,
        "listing leaves them there"
    );
    let ids: Vec<_> = dead.iter().map(|d| d.message_id.clone()).collect();
    assert_eq!(s.replay(QueueName::ToCrm, &ids).await.expect("replay"), 2);
    let back = s
        .receive(QueueName::ToCrm, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    let mut bodies: Vec<_> = back.iter().map(|d| d.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["g:m", "h:n"]);
    assert!(s.list(QueueName::ToCrm).await.expect("list").is_empty());
}

/// The embedded queue's window is configurable, so its end can be tested too (SQS's is
/// five minutes).
#[tokio::test]
async fn a_second_send_with_the_same_dedup_id_is_dropped_within_the_window_only() {
    let s = EmbeddedStore::in_memory()
        .expect("store")
        .with_queue_settings(QueueSettings {
            max_receives: 5,
            dedup_window: Duration::from_millis(50),
        });
    s.send(QueueName::ToErp, &[msg("g", "same")])
        .await
        .expect("send");
    s.send(QueueName::ToErp, &[msg("g", "same")])
        .await
        .expect("send");
    assert_eq!(s.depth(QueueName::ToErp).await.expect("depth"), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    s.send(QueueName::ToErp, &[msg("g", "same")])
        .await
        .expect("send");
    assert_eq!(s.depth(QueueName::ToErp).await.expect("depth"), 2);
}

#[tokio::test]
async fn state_and_queued_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p2c.db");
    {
        let s = EmbeddedStore::open(&path).expect("open");
        let mut st = EntityState::new("order:O-1".parse().expect("key"));
        st.version = 1;
        st.updated_at = Utc::now();
        s.save(&st, &step("order:O-1", "saved"))
            .await
            .expect("save");
        s.send(QueueName::Inbound, &[msg("g", "kept")])
            .await
            .expect("send");
        s.complete("idem", &json!(true), LONG)
            .await
            .expect("complete");
    }
    let s = EmbeddedStore::open(&path).expect("reopen");
    assert!(s
        .load(&"order:O-1".parse().expect("key"))
        .await
        .expect("load")
        .is_some());
    assert_eq!(
        s.receive(QueueName::Inbound, 10, Duration::from_secs(60))
            .await
            .expect("receive")[0]
            .body,
        "g:kept"
    );
    assert!(matches!(
        s.claim("idem", LONG, LONG).await.expect("claim"),
        Claim::Duplicate(_)
    ));
}

on_both_stores!(parking: parking_embedded, parking_dynamodb);

/// An order event parked on `dependency`.
pub fn parked(id: &str, dependency: &str) -> p2c_core::ports::ParkedEvent {
    let event = serde_json::from_value(json!({
        "event_id": id, "operation": "update", "received_at": "2026-11-22T10:00:00Z",
        "source": { "system": "dataverse", "entity_type": "order", "id": id },
        "version": { "sequence": [1, 0], "modified_ms": 1 },
    }))
    .expect("event");
    p2c_core::ports::ParkedEvent {
        id: id.into(),
        dependency: dependency.into(),
        event,
        parked_at: Utc::now(),
    }
}

/// Parked events wait in arrival order, parking twice keeps one, unparking removes one.
async fn parking<S: p2c_core::ports::ParkingStore>(s: &S) {
    for id in ["o-1", "o-2", "o-1"] {
        s.park(&parked(id, "account:A")).await.expect("park");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    s.park(&parked("o-9", "account:B")).await.expect("park");
    let ids =
        |v: Vec<p2c_core::ports::ParkedEvent>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.waiting("account:A").await.expect("waiting")),
        ["o-1", "o-2"]
    );
    assert_eq!(ids(s.all_parked().await.expect("all")).len(), 3);
    s.unpark("account:A", "o-1").await.expect("unpark");
    assert_eq!(ids(s.waiting("account:A").await.expect("waiting")), ["o-2"]);
    assert!(s.waiting("account:C").await.expect("waiting").is_empty());
}

on_both_stores!(audit_trail: audit_trail_embedded, audit_trail_dynamodb);

/// The trail keeps every entry of a subject in order, even several in one millisecond.
async fn audit_trail<S: p2c_core::ports::AuditLog>(s: &S) {
    let at = Utc::now();
    for (i, step) in ["ingest", "sync", "deliver", "sync"].iter().enumerate() {
        s.append(&p2c_core::ports::AuditEntry {
            at,
            subject: "account:A".into(),
            step: step.to_string(),
            outcome: format!("outcome {i}"),
            detail: String::new(),
            event_id: None,
            rules_version: Some("r-1".into()),
        })
        .await
        .expect("append");
    }
    let trail = s.trail("account:A").await.expect("trail");
    let outcomes: Vec<_> = trail.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["outcome 0", "outcome 1", "outcome 2", "outcome 3"]
    );
    assert!(s.trail("account:B").await.expect("trail").is_empty());
}

on_both_stores!(a_save_records_its_step: a_save_records_its_step_embedded, a_save_records_its_step_dynamodb);

/// A state write carries its step's audit entry: the trail shows it among the subject's
/// other entries, in order, and a write that lost its race leaves no entry behind.
async fn a_save_records_its_step<S: StateStore + AuditLog>(s: &S) {
    let key: EntityKey = "account:T".parse().expect("key");
    let mut st = EntityState::new(key.clone());
    st.version = 1;
    s.save(&st, &step("account:T", "created"))
        .await
        .expect("created");
    s.append(&step("account:T", "noted")).await.expect("append");
    let mut next = s.load(&key).await.expect("load").expect("state");
    let stale = next.clone();
    next.version += 1;
    next.records
        .insert("customer".into(), json!({"name": "Tee"}));
    s.save(&next, &step("account:T", "updated"))
        .await
        .expect("updated");
    let mut lost = stale;
    lost.version += 1;
    assert!(matches!(
        s.save(&lost, &step("account:T", "lost")).await,
        Err(StoreError::Conflict { .. })
    ));
    let trail = s.trail("account:T").await.expect("trail");
    let outcomes: Vec<_> = trail.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["created", "noted", "updated"]);
    assert_eq!(trail[2].detail, "updated detail");
    assert_eq!(trail[2].event_id.as_deref(), Some("ev-updated"));
    let stored = s.load(&key).await.expect("load").expect("state");
    assert_eq!(stored.version, 2);
    assert_eq!(stored.records["customer"], json!({"name": "Tee"}));
}

on_both_stores!(figures: figures_embedded, figures_dynamodb);

/// Open orders sum exactly (decimal, never float); rebate figures round-trip exactly.
async fn figures<S: p2c_core::ports::FiguresStore>(s: &S) {
    use rust_decimal::Decimal;
    let d = |x: &str| x.parse::<Decimal>().expect("decimal");
    s.set_open_order("A", "O-1", d("100.10"))
        .await
        .expect("set");
    s.set_open_order("A", "O-2", d("0.20")).await.expect("set");
    s.set_open_order("A", "O-2", d("200.20"))
        .await
        .expect("replace");
    s.set_open_order("B", "O-3", d("5")).await.expect("set");
    assert_eq!(s.open_orders("A", "").await.expect("sum"), d("300.30"));
    assert_eq!(s.open_orders("A", "O-1").await.expect("sum"), d("200.20"));
    s.clear_open_order("A", "O-2").await.expect("clear");
    assert_eq!(s.open_orders("A", "").await.expect("sum"), d("100.10"));

    assert_eq!(
        s.rebate("A", "2026").await.expect("rebate"),
        p2c_core::ports::RebateFigures::default()
    );
    let mut f = p2c_core::ports::RebateFigures {
        volume: d("12345678901234567.89"),
        accrued: d("0.01"),
        tier: Some("Silver".into()),
        ..Default::default()
    };
    f.results.insert("INV-1".into(), json!({"accrual": "0.01"}));
    s.save_rebate("A", "2026", &f).await.expect("save");
    assert_eq!(s.rebate("A", "2026").await.expect("rebate"), f);
}

on_both_stores!(published_rules: published_rules_embedded, published_rules_dynamodb);

/// Published rule sets: stored once by version, activations in order, a stale or racing
/// activation refused, the newest one active — and a running process follows them.
async fn published_rules<S: p2c_core::ports::RuleStore + Clone + 'static>(s: &S) {
    use p2c_core::ports::Activation;
    use p2c_core::rules::live::{activate, LiveRules};
    use std::sync::Arc;
    assert_eq!(s.activations(5).await.expect("none yet"), vec![]);
    assert_eq!(s.get_rules("r-none").await.expect("read"), None);
    let files = crate::common::rule_files();
    let first = activate(s, &files, "publish", "ana")
        .await
        .expect("published");
    assert_eq!(first.seq, 1);
    assert_eq!(
        s.get_rules(&first.version).await.expect("read"),
        Some(files.clone())
    );
    let mut changed = files.clone();
    changed.insert(
        "credit_limit.rhai".into(),
        files["credit_limit.rhai"]
            .replace("let hold_after_days = 60;", "let hold_after_days = 45;"),
    );
    let live = LiveRules::new(
        Arc::new(s.clone()),
        Arc::new(p2c_core::rules::RuleSet::from_files(files.clone()).expect("rules")),
        std::time::Duration::ZERO,
    );
    let second = activate(s, &changed, "publish", "ana")
        .await
        .expect("published");
    assert_eq!(second.seq, 2);
    assert_eq!(live.current().await.version, second.version);
    // Another activation with a seq already taken, or one that skips ahead, loses.
    for seq in [2, 4] {
        let stale = Activation {
            seq,
            version: first.version.clone(),
            at: chrono::Utc::now(),
            by: "bo".into(),
            action: "rollback".into(),
        };
        assert!(!s.activate(&stale).await.expect("answers"), "seq {seq}");
    }
    let back = activate(s, &files, "rollback", "bo")
        .await
        .expect("rolled back");
    assert_eq!(
        (back.seq, back.version.as_str()),
        (3, first.version.as_str())
    );
    assert_eq!(live.current().await.version, first.version);
    let seen: Vec<(u64, String, String)> = s
        .activations(10)
        .await
        .expect("history")
        .into_iter()
        .map(|a| (a.seq, a.action, a.by))
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, "rollback".into(), "bo".into()),
            (2, "publish".into(), "ana".into()),
            (1, "publish".into(), "ana".into())
        ]
    );
    assert_eq!(s.activations(1).await.expect("newest").len(), 1);
}

on_both_stores!(decision_log: decision_log_embedded, decision_log_dynamodb);

/// Decisions are kept once each and read back by time, across days.
async fn decision_log<S: p2c_core::ports::DecisionLog>(s: &S) {
    use p2c_core::ports::Decision;
    let now = chrono::Utc::now();
    let decision = |id: &str, at: chrono::DateTime<chrono::Utc>| Decision {
        id: id.into(),
        at,
        rule: "credit_limit.rhai".into(),
        subject: format!("order:{id}"),
        input: serde_json::json!({"order": {"total": 1}}),
        output: serde_json::json!({"decision": "release"}),
        rules_version: "r-1".into(),
    };
    let old = decision("ORD-OLD", now - chrono::Duration::days(1));
    let new = decision("ORD-NEW", now);
    s.record(&old).await.expect("kept");
    s.record(&new).await.expect("kept");
    s.record(&new).await.expect("kept again: once");
    let ids = |ds: Vec<Decision>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s
            .decisions(now - chrono::Duration::days(2))
            .await
            .expect("read")),
        vec!["ORD-OLD", "ORD-NEW"]
    );
    assert_eq!(
        ids(s
            .decisions(now - chrono::Duration::hours(1))
            .await
            .expect("read")),
        vec!["ORD-NEW"]
    );
    let back = s.decisions(now).await.expect("read");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0], new, "stored as recorded");
}
