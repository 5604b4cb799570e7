//! Stores written by earlier versions of p2c, on SQLite (schema versions 1 and 2), are
//! imported into the log when first opened: the SQLite file is brought to schema version 2,
//! every row is written to a new log, and the SQLite file is kept beside it
//! (`<path>.sqlite-backup`) before the log takes its place.

use super::log::LogFile;
use super::tables::{Cold, Entity, Idem, Op, Parked};
use crate::error::StoreError;
use crate::ports::{DeadLetter, QueueName};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS idem (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    locked_until INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    outcome TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entity (
    key TEXT PRIMARY KEY,
    entity_type TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
DROP INDEX IF EXISTS entity_by_type;
CREATE TABLE IF NOT EXISTS xref (
    source TEXT PRIMARY KEY,
    entity_key TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parked (
    dependency TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (dependency, id)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit (subject, seq);
CREATE TABLE IF NOT EXISTS open_order (
    account TEXT NOT NULL,
    order_no TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (account, order_no)
);
CREATE TABLE IF NOT EXISTS rebate (
    account TEXT NOT NULL,
    period TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (account, period)
);
CREATE TABLE IF NOT EXISTS message (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    group_id TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    visible_at INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS message_order ON message (queue, seq);
CREATE TABLE IF NOT EXISTS message_dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decision (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decision_by_time ON decision (at);
CREATE TABLE IF NOT EXISTS rule_version (
    version TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_activation (
    seq INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    group_id TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    body TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#;

/// The schema version [`SCHEMA`] describes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Version 2 makes the small keyed tables `WITHOUT ROWID` (one b-tree each instead of a
/// table and its key index), drops the `AUTOINCREMENT` counters of the hot tables, and
/// keeps queued messages in `message` without a receipt index: queueing a webhook writes
/// three b-tree pages instead of seven. Before [`SCHEMA`] runs, the version-1 tables that
/// change shape are renamed out of the way; after, their rows are copied over.
const MIGRATE_1_BEFORE: &str = r#"
ALTER TABLE idem RENAME TO idem_v1;
ALTER TABLE xref RENAME TO xref_v1;
ALTER TABLE audit RENAME TO audit_v1;
DROP INDEX IF EXISTS audit_by_subject;
"#;

/// The deduplication entries of a version-1 store are dropped: a redelivery inside the
/// old window is still caught by the sync step's idempotency claim.
const MIGRATE_1_AFTER: &str = r#"
INSERT INTO idem SELECT key, status, locked_until, expires_at, outcome FROM idem_v1;
DROP TABLE idem_v1;
INSERT INTO xref SELECT source, entity_key FROM xref_v1;
DROP TABLE xref_v1;
INSERT INTO audit (seq, subject, body) SELECT seq, subject, body FROM audit_v1;
DROP TABLE audit_v1;
INSERT INTO message (queue, group_id, dedup_id, message_id, body, receive_count, visible_at,
                     receipt, last_error)
    SELECT queue, group_id, dedup_id, message_id, body, receive_count, visible_at, receipt,
           last_error
    FROM queue ORDER BY seq;
DROP TABLE queue;
DROP TABLE IF EXISTS queue_dedup;
"#;

/// Creates the schema, or brings a store written by an earlier version up to it, in one
/// transaction.
fn create_or_migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::backend)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend {
            message: format!(
                "the store was written by a newer p2c (schema version {version}; this one \
                 knows up to {SCHEMA_VERSION})"
            ),
            source: None,
        });
    }
    migrate(conn, version).map_err(StoreError::backend)
}

fn migrate(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let version_1: bool = version < 2
        && tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'idem')",
            [],
            |r| r.get(0),
        )?;
    if version_1 {
        tx.execute_batch(MIGRATE_1_BEFORE)?;
    }
    tx.execute_batch(SCHEMA)?;
    if version_1 {
        tx.execute_batch(MIGRATE_1_AFTER)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Every row of an SQLite store as the ops that rebuild it.
fn rows(conn: &Connection) -> rusqlite::Result<Vec<Op>> {
    let mut ops = Vec::new();
    let each = |ops: &mut Vec<Op>,
                sql: &str,
                f: &mut dyn FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<Op>|
     -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            ops.push(f(r)?);
        }
        Ok(())
    };
    each(
        &mut ops,
        "SELECT key, status, locked_until, expires_at, outcome FROM idem",
        &mut |r| {
            Ok(Op::IdemPut {
                key: r.get(0)?,
                idem: Idem {
                    completed: r.get::<_, String>(1)? == "completed",
                    locked_until: r.get(2)?,
                    expires_at: r.get(3)?,
                    outcome: r.get(4)?,
                },
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT key, version, body FROM entity",
        &mut |r| {
            Ok(Op::EntityPut {
                key: r.get(0)?,
                entity: Entity {
                    version: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    body: r.get::<_, String>(2)?.into_bytes(),
                },
            })
        },
    )?;
    each(&mut ops, "SELECT source, entity_key FROM xref", &mut |r| {
        Ok(Op::XrefPut {
            source: r.get(0)?,
            entity_key: r.get(1)?,
        })
    })?;
    each(
        &mut ops,
        "SELECT dependency, id, seq, body FROM parked",
        &mut |r| {
            Ok(Op::ParkPut {
                dependency: r.get(0)?,
                id: r.get(1)?,
                parked: Parked {
                    seq: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    body: r.get(3)?,
                },
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT subject, body FROM audit ORDER BY seq",
        &mut |r| {
            Ok(Op::AuditAdd {
                subject: r.get(0)?,
                body: Cold::Mem(r.get(1)?),
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT account, order_no, amount FROM open_order",
        &mut |r| {
            Ok(Op::OpenOrderPut {
                account: r.get(0)?,
                order: r.get(1)?,
                amount: r.get(2)?,
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT account, period, body FROM rebate",
        &mut |r| {
            Ok(Op::RebatePut {
                account: r.get(0)?,
                period: r.get(1)?,
                body: r.get(2)?,
            })
        },
    )?;
    let queue = |s: String| -> rusqlite::Result<QueueName> {
        s.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
    };
    let mut states = Vec::new();
    each(
        &mut ops,
        "SELECT seq, queue, group_id, dedup_id, message_id, body, receive_count, visible_at,
                receipt, last_error
         FROM message ORDER BY seq",
        &mut |r| {
            let queue = queue(r.get(1)?)?;
            let seq = u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
            states.push(Op::MsgState {
                queue,
                seq,
                receive_count: r.get(6)?,
                visible_at: r.get(7)?,
                receipt: r.get(8)?,
                last_error: r.get(9)?,
            });
            Ok(Op::MsgAdd {
                queue,
                seq,
                group: r.get(2)?,
                dedup_id: r.get(3)?,
                message_id: r.get(4)?,
                body: r.get(5)?,
                typed: None,
            })
        },
    )?;
    ops.append(&mut states);
    each(
        &mut ops,
        "SELECT queue, dedup_id, expires_at FROM message_dedup",
        &mut |r| {
            Ok(Op::DedupPut {
                queue: queue(r.get(0)?)?,
                dedup_id: r.get(1)?,
                expires_at: r.get(2)?,
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT seq, message_id, queue, group_id, dedup_id, body, code, reason, at
         FROM dead_letter ORDER BY seq",
        &mut |r| {
            Ok(Op::DeadAdd {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                dead: DeadLetter {
                    message_id: r.get(1)?,
                    queue: queue(r.get(2)?)?,
                    group: r.get(3)?,
                    dedup_id: r.get(4)?,
                    body: r.get(5)?,
                    code: r.get(6)?,
                    reason: r.get(7)?,
                    at: super::ms_to_time(r.get(8)?),
                },
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT id, at, body FROM decision ORDER BY at, id",
        &mut |r| {
            Ok(Op::DecisionAdd {
                id: r.get(0)?,
                at: r.get(1)?,
                body: Cold::Mem(r.get(2)?),
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT version, body, stored_at FROM rule_version",
        &mut |r| {
            Ok(Op::RuleVersionPut {
                version: r.get(0)?,
                body: r.get(1)?,
                stored_at: r.get(2)?,
            })
        },
    )?;
    each(
        &mut ops,
        "SELECT seq, body FROM rule_activation ORDER BY seq",
        &mut |r| {
            Ok(Op::ActivationPut {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                body: r.get(1)?,
            })
        },
    )?;
    Ok(ops)
}

/// Converts the SQLite store at `path` into a log in place; the SQLite file is kept as
/// `<path>.sqlite-backup`.
pub(crate) fn from_sqlite(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(StoreError::backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(StoreError::backend)?;
    create_or_migrate(&conn)?;
    let ops = rows(&conn).map_err(StoreError::backend)?;
    // Its WAL checkpointed and removed, so the backup is one whole file.
    conn.close().map_err(|(_, e)| StoreError::backend(e))?;
    let new_path = with_suffix(path, "-import");
    let _ = std::fs::remove_file(&new_path);
    let mut log = LogFile::open(&new_path).map_err(|e| StoreError::Backend {
        message: format!("creating {}: {e:?}", new_path.display()),
        source: None,
    })?;
    log.lock().map_err(StoreError::backend)?;
    log.rewrite(|emit| {
        let mut buf = Vec::new();
        for op in &ops {
            op.encode(&mut buf);
            if buf.len() >= 1 << 20 {
                emit(&buf)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            emit(&buf)?;
        }
        Ok(())
    })
    .map_err(StoreError::backend)?;
    drop(log);
    let _ = std::fs::remove_file(with_suffix(&new_path, "-lock"));
    std::fs::rename(path, with_suffix(path, ".sqlite-backup")).map_err(StoreError::backend)?;
    std::fs::rename(&new_path, path).map_err(StoreError::backend)?;
    tracing::info!(path = %path.display(), ops = ops.len(), "imported the SQLite store of an earlier p2c into the log; the SQLite file is kept as .sqlite-backup");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{now_ms, EmbeddedStore};
    use crate::ports::{AuditLog, Claim, Consumer, IdempotencyStore, QueueName, StateStore};

    /// The schema of the first release of the embedded store (version 1).
    const V1_SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS idem (
        key TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        locked_until INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS entity (
        key TEXT PRIMARY KEY,
        entity_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    DROP INDEX IF EXISTS entity_by_type;
    CREATE TABLE IF NOT EXISTS xref (
        source TEXT PRIMARY KEY,
        entity_key TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS parked (
        dependency TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (dependency, id)
    );
    CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        subject TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_by_subject ON audit (subject, seq);
    CREATE TABLE IF NOT EXISTS open_order (
        account TEXT NOT NULL,
        order_no TEXT NOT NULL,
        amount TEXT NOT NULL,
        PRIMARY KEY (account, order_no)
    );
    CREATE TABLE IF NOT EXISTS rebate (
        account TEXT NOT NULL,
        period TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (account, period)
    );
    CREATE TABLE IF NOT EXISTS queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        group_id TEXT NOT NULL,
        dedup_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        visible_at INTEGER NOT NULL DEFAULT 0,
        receipt TEXT,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS queue_order ON queue (queue, seq);
    CREATE UNIQUE INDEX IF NOT EXISTS queue_receipt ON queue (receipt);
    CREATE TABLE IF NOT EXISTS queue_dedup (
        queue TEXT NOT NULL,
        dedup_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, dedup_id)
    );
    CREATE INDEX IF NOT EXISTS queue_dedup_expiry ON queue_dedup (expires_at);
    CREATE TABLE IF NOT EXISTS dead_letter (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        group_id TEXT NOT NULL,
        dedup_id TEXT NOT NULL,
        body TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    "#;

    #[tokio::test]
    async fn a_version_1_store_is_migrated_with_its_keys_trail_and_queued_messages() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(V1_SCHEMA).expect("v1 schema");
            let far = now_ms() + 3_600_000;
            c.execute(
                "INSERT INTO idem VALUES ('k', 'completed', 0, ?1, '{\"outcome\":\"applied\"}')",
                [far],
            )
            .expect("idem");
            c.execute_batch(
                "INSERT INTO xref VALUES ('dataverse/account/1', 'account:ACC-1');
                 INSERT INTO audit (subject, body) VALUES ('dataverse/account/1',
                   '{\"at\":\"2026-01-01T00:00:00Z\",\"subject\":\"dataverse/account/1\",\"step\":\"sync\",\"outcome\":\"applied\",\"detail\":\"\"}');
                 INSERT INTO queue (queue, group_id, dedup_id, message_id, body)
                   VALUES ('inbound', 'g', 'd1', 'msg-1', 'first'), ('inbound', 'g', 'd2', 'msg-2', 'second');
                 INSERT INTO queue_dedup VALUES ('inbound', 'd1', 0);",
            )
            .expect("rows");
        }
        let s = EmbeddedStore::open(&path).expect("migrated");
        let long = std::time::Duration::from_secs(60);
        assert!(matches!(
            s.claim("k", long, long).await.expect("claim"),
            Claim::Duplicate(_)
        ));
        let source = "dataverse/account/1";
        let key = s
            .resolve(&crate::domain::SourceRef::new(
                crate::domain::System::Dataverse,
                crate::domain::EntityType::Account,
                "1",
            ))
            .await
            .expect("resolve");
        assert_eq!(key.map(|k| k.to_string()).as_deref(), Some("account:ACC-1"));
        assert_eq!(s.trail(source).await.expect("trail").len(), 1);
        let got = s
            .receive(QueueName::Inbound, 10, long)
            .await
            .expect("receive");
        let bodies: Vec<_> = got.iter().map(|d| d.body.as_str()).collect();
        assert_eq!(bodies, ["first", "second"], "both carried over, in order");
        assert_eq!(got[0].message_id, "msg-1");
        let receipts: Vec<_> = got.iter().map(|d| d.receipt.as_str()).collect();
        s.ack_all(QueueName::Inbound, &receipts).await.expect("ack");
        assert_eq!(s.depth(QueueName::Inbound).await.expect("depth"), 0);
        drop(s);
        // The SQLite file is kept beside the log, brought to the last SQLite schema.
        let c = Connection::open(with_suffix(&path, ".sqlite-backup")).expect("open");
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        drop(c);
        // Opening it again reads the log: what was imported, and what happened since.
        let again = EmbeddedStore::open(&path).expect("reopened");
        assert_eq!(again.trail(source).await.expect("trail").len(), 1);
        assert_eq!(again.depth(QueueName::Inbound).await.expect("depth"), 0);
        assert!(matches!(
            again.claim("k", long, long).await.expect("claim"),
            Claim::Duplicate(_)
        ));
    }

    #[test]
    fn a_store_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch("PRAGMA user_version = 99")
            .expect("version");
        let err = EmbeddedStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("newer p2c"), "{err}");
    }
}
