//! The store and queue contracts, on the embedded adapters. (The DynamoDB and SQS
//! adapters will run this same suite against moto.)

use chrono::Utc;
use p2c_core::domain::{EntityKey, System};
use p2c_core::embedded::{EmbeddedStore, QueueSettings};
use p2c_core::error::StoreError;
use p2c_core::ports::{
    Claim, Consumer, DeadLetters, EntityState, IdempotencyStore, OutMessage, Publisher, QueueName,
    StateStore,
};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

fn msg(group: &str, dedup: &str) -> OutMessage {
    OutMessage {
        group: group.into(),
        dedup_id: dedup.into(),
        body: format!("{group}:{dedup}"),
    }
}

#[tokio::test]
async fn a_claim_is_fresh_then_in_progress_then_a_duplicate_once_completed() {
    let s = EmbeddedStore::in_memory().expect("store");
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

#[tokio::test]
async fn expiry_is_checked_on_read_and_lapsed_locks_can_be_taken_over() {
    let s = EmbeddedStore::in_memory().expect("store");
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
}

#[tokio::test]
async fn two_writers_of_the_same_version_cannot_both_win() {
    let s = EmbeddedStore::in_memory().expect("store");
    let key: EntityKey = "account:A".parse().expect("key");
    let mut first = EntityState::new(key.clone());
    first.version = 1;
    s.save(&first).await.expect("created");
    let mut a = s.load(&key).await.expect("load").expect("state");
    let mut b = a.clone();
    a.version += 1;
    a.ids.insert(System::BusinessCentral, "x".into());
    b.version += 1;
    b.ids.insert(System::BusinessCentral, "y".into());
    s.save(&a).await.expect("first wins");
    assert!(matches!(s.save(&b).await, Err(StoreError::Conflict { .. })));
    let mut again = EntityState::new(key.clone());
    again.version = 1;
    assert!(
        matches!(s.save(&again).await, Err(StoreError::Conflict { .. })),
        "a second create conflicts too"
    );
    let stored = s.load(&key).await.expect("load").expect("state");
    assert_eq!(stored.ids[&System::BusinessCentral], "x");
    let found = s
        .resolve(&p2c_core::domain::SourceRef::new(
            System::BusinessCentral,
            key.entity_type,
            "x",
        ))
        .await
        .expect("xref");
    assert_eq!(found, Some(key));
}

#[tokio::test]
async fn fifo_groups_deliver_in_order_and_a_message_in_flight_holds_its_group() {
    let s = EmbeddedStore::in_memory().expect("store");
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
    s.retry(
        QueueName::Inbound,
        &first[0].receipt,
        Duration::ZERO,
        "failed",
    )
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
}

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
async fn a_message_moves_to_the_dead_letter_queue_after_max_receives_and_can_be_replayed() {
    let s = EmbeddedStore::in_memory()
        .expect("store")
        .with_queue_settings(QueueSettings {
            max_receives: 2,
            dedup_window: LONG,
        });
    s.send(QueueName::ToCrm, &[msg("g", "m")])
        .await
        .expect("send");
    for _ in 0..2 {
        let d = s
            .receive(QueueName::ToCrm, 10, Duration::from_secs(60))
            .await
            .expect("receive");
        s.retry(
            QueueName::ToCrm,
            &d[0].receipt,
            Duration::ZERO,
            "target down",
        )
        .await
        .expect("retry");
    }
    assert!(s
        .receive(QueueName::ToCrm, 10, Duration::from_secs(60))
        .await
        .expect("receive")
        .is_empty());
    let dead = s.list(QueueName::ToCrm).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "max_receives_exceeded");
    assert_eq!(dead[0].reason, "target down");
    assert_eq!(
        s.replay(QueueName::ToCrm, &[dead[0].message_id.clone()])
            .await
            .expect("replay"),
        1
    );
    assert_eq!(
        s.receive(QueueName::ToCrm, 10, Duration::from_secs(60))
            .await
            .expect("receive")
            .len(),
        1
    );
    assert!(s.list(QueueName::ToCrm).await.expect("list").is_empty());
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
        s.save(&st).await.expect("save");
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
