//! The embedded adapters: one SQLite file (WAL journal) that implements every store
//! port and a durable FIFO queue with dead letters, for `p2c demo`, `p2c serve` and the
//! fast tests. Real implementations with the same contracts as DynamoDB and SQS FIFO:
//! conditional writes, expiry checked on read, per-group order, deduplication window,
//! a receive limit that moves messages to the dead-letter queue.
//!
//! `synchronous=NORMAL` in WAL mode survives a killed process (not a power cut) without an
//! fsync per commit, which is what a development store needs.

mod queue;
mod store;

pub use queue::QueueSettings;

use crate::error::StoreError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SCHEMA: &str = r#"
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

tokio::task_local! {
    /// Set on the task running a unit of work: the id of the store it belongs to.
    static UNIT: u64;
}

/// The connection, and whether a unit of work's transaction is open on it.
pub(crate) struct Inner {
    conn: Connection,
    unit_open: bool,
}

impl std::ops::Deref for Inner {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// The embedded store and queue. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EmbeddedStore {
    id: u64,
    conn: Arc<Mutex<Inner>>,
    path: Option<PathBuf>,
    queue: QueueSettings,
    /// When the queue's deduplication entries are next swept for expiry.
    next_sweep: Arc<std::sync::atomic::AtomicI64>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
            }
        }
        let conn = Connection::open(path).map_err(StoreError::backend)?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// An in-memory store (tests and benchmarks that do not need durability).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::backend)?;
        Self::init(conn, None)
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(StoreError::backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;
             PRAGMA cache_size=-16384; PRAGMA mmap_size=268435456;",
        )
        .map_err(StoreError::backend)?;
        // Every statement is prepared once and reused (there are about forty).
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(SCHEMA).map_err(StoreError::backend)?;
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Self {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conn: Arc::new(Mutex::new(Inner {
                conn,
                unit_open: false,
            })),
            path,
            queue: QueueSettings::default(),
            next_sweep: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    /// Changes the queue behaviour (receive limit, deduplication window).
    pub fn with_queue_settings(mut self, settings: QueueSettings) -> Self {
        self.queue = settings;
        self
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `work` as one unit: the store writes it makes become durable together, in one
    /// commit at the end, instead of one commit each. The queue runner wraps each batch in
    /// a unit; its acknowledgements are in the same transaction, so a crash loses the whole
    /// unit and the queue redelivers it, which the pipeline is built to survive. A write
    /// from anywhere else (a webhook being answered) first commits what the unit has done,
    /// so it is durable when it returns, as the ports promise.
    pub async fn unit<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, StoreError> {
        let out = UNIT.scope(self.id, work).await;
        let mut inner = self.conn.lock().map_err(|_| poisoned())?;
        if inner.unit_open {
            inner.unit_open = false;
            inner.conn.exec("COMMIT", []).map_err(StoreError::backend)?;
        }
        Ok(out)
    }

    /// The connection, with the unit transaction opened for a caller inside the unit and
    /// committed for any other caller.
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self.conn.lock().map_err(|_| poisoned())?;
        let in_unit = UNIT.try_with(|id| *id == self.id).unwrap_or(false);
        if in_unit && !inner.unit_open {
            inner
                .conn
                .exec("BEGIN IMMEDIATE", [])
                .map_err(StoreError::backend)?;
            inner.unit_open = true;
        } else if !in_unit && inner.unit_open {
            inner.unit_open = false;
            inner.conn.exec("COMMIT", []).map_err(StoreError::backend)?;
        }
        Ok(inner)
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "embedded store lock poisoned".into(),
        source: None,
    }
}

/// A write transaction (`BEGIN IMMEDIATE`: the write lock from the start, so two
/// processes sharing the file never deadlock on an upgrade), begun and ended through cached
/// statements. Rolled back on drop unless committed.
/// Inside an open unit it is a savepoint of the unit's transaction instead.
pub(crate) struct Tx<'a> {
    conn: &'a Connection,
    nested: bool,
    done: bool,
}

impl<'a> Tx<'a> {
    pub(crate) fn begin(inner: &'a Inner) -> rusqlite::Result<Self> {
        let nested = inner.unit_open;
        inner.conn.exec(
            if nested {
                "SAVEPOINT p2c_op"
            } else {
                "BEGIN IMMEDIATE"
            },
            [],
        )?;
        Ok(Self {
            conn: &inner.conn,
            nested,
            done: false,
        })
    }

    pub(crate) fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn
            .exec(
                if self.nested {
                    "RELEASE p2c_op"
                } else {
                    "COMMIT"
                },
                [],
            )
            .map(|_| ())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            if self.nested {
                let _ = self.conn.exec("ROLLBACK TO p2c_op", []);
                let _ = self.conn.exec("RELEASE p2c_op", []);
            } else {
                let _ = self.conn.exec("ROLLBACK", []);
            }
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Statements through the connection's prepared-statement cache.
pub(crate) trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
