//! The embedded adapters: one file that implements every store port and a durable FIFO
//! queue with dead letters, for `p2c demo`, `p2c serve` and the fast tests. Real
//! implementations with the same contracts as DynamoDB and SQS FIFO: conditional writes,
//! expiry checked on read, per-group order, deduplication window, a receive limit that
//! moves messages to the dead-letter queue.
//!
//! The file is a log ([`log`]): each commit appends one frame of changes ([`tables::Op`]),
//! and the tables live in memory, rebuilt from the log when the store is opened. Several
//! processes can share the file: each commit first reads what the others appended. Audit
//! entries and recorded decisions stay in the file; only their index is in memory. When
//! the file has grown to more than twice what the tables hold, it is compacted.
//!
//! A commit survives a killed process (the write is in the operating system's page cache
//! when it returns), not a power cut, which is what a development store needs. Stores
//! written by earlier versions on SQLite are imported when first opened ([`import`]).

mod codec;
mod import;
mod log;
mod queue;
mod state_codec;
mod store;
mod tables;

pub use queue::QueueSettings;

use crate::error::StoreError;
use log::{Frame, LogFile, OpenError, Tail};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tables::{Cold, ColdAt, Op, Tables};

/// The file is not considered for compaction below this size.
const COMPACT_MIN: u64 = 64 << 20;
/// Frames of a compacted file are about this large.
const SNAPSHOT_FRAME: usize = 1 << 20;

tokio::task_local! {
    /// Set on the task running a unit of work: the id of the store it belongs to.
    static UNIT: u64;
}

/// The tables, the file, and the transaction being built.
pub(crate) struct Engine {
    pub(crate) tables: Tables,
    log: Option<LogFile>,
    /// Encoded ops not yet in the file.
    txn: Frame,
    /// Entries kept in the file that are in `txn`: where they are (from the start of the
    /// frame, head included), and how long.
    cold: Vec<(ColdAt, usize, usize)>,
    /// A unit of work is open: the file is locked and `txn` collects its ops.
    unit_open: bool,
    /// A write to the file failed: memory is ahead of the file, so it is read again.
    stale: bool,
    /// The file size at which compaction is next considered.
    compact_at: u64,
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend {
        message: format!("{}: {e}", path.display()),
        source: None,
    }
}

impl Engine {
    fn memory() -> Self {
        Self {
            tables: Tables::default(),
            log: None,
            txn: Frame::new(),
            cold: Vec::new(),
            unit_open: false,
            stale: false,
            compact_at: u64::MAX,
        }
    }

    /// Reads what other processes appended; a file replaced by another process's
    /// compaction, or a failed write here, means reading it all again. Readers do this
    /// without the lock (a writer's frame still being written looks torn and is left for
    /// later); a writer does it with the lock, and then a torn frame is what a crash left,
    /// which it cuts off.
    fn catch_up(&mut self, locked: bool) -> Result<(), StoreError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let path = log.path().to_path_buf();
        let (replaced, _) = log.changed().map_err(|e| io_error(&path, e))?;
        if replaced || self.stale {
            log.reopen(locked).map_err(|e| open_error(&path, e))?;
            self.tables = Tables::default();
            self.stale = false;
        }
        let tables = &mut self.tables;
        let read = log
            .read_new(|base, payload| {
                tables.apply_frame(base, payload).map_err(|e| {
                    ReadFailed(StoreError::Corrupt {
                        key: format!("{} at {base}", path.display()),
                        message: e.to_string(),
                    })
                })
            })
            .map_err(|ReadFailed(e)| e)?;
        match read {
            Ok(Tail::Clean) => Ok(()),
            // Cut short by a crash: nobody else is writing while the lock is held.
            Ok(Tail::Torn(at)) if locked => {
                tracing::warn!(path = %path.display(), at, "dropping a transaction cut short by a crash");
                log.cut_torn_tail().map_err(|e| io_error(&path, e))
            }
            // Being written by another process, or left by a crash for a writer to cut.
            Ok(Tail::Torn(_)) => Ok(()),
            Err(d) => Err(StoreError::Corrupt {
                key: path.display().to_string(),
                message: format!(
                    "the frame at byte {} fails its checksum and more follows: the file is damaged",
                    d.at
                ),
            }),
        }
    }

    /// Before reading: what other processes committed is read in first, without waiting
    /// for the lock (a long unit of work in `p2c serve` does not hold up `p2c trace`).
    /// Inside a unit the lock is held, so there is nothing to read; a reader outside an
    /// open unit commits what the unit has done so far first.
    fn refresh(&mut self, in_unit: bool) -> Result<(), StoreError> {
        if self.unit_open {
            if in_unit {
                return Ok(());
            }
            self.commit_unit()?;
        }
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let (replaced, grown) = log.changed().map_err(|e| io_error(log.path(), e))?;
        if replaced || grown || self.stale {
            self.catch_up(false)?;
        }
        Ok(())
    }

    fn lock(&mut self) -> Result<(), StoreError> {
        if let Some(log) = self.log.as_mut() {
            log.lock().map_err(|e| io_error(log.path(), e))?;
        }
        Ok(())
    }

    fn unlock(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.unlock();
        }
    }

    /// Starts a write: the file locked and read up to date (once per unit).
    fn begin(&mut self, in_unit: bool) -> Result<(), StoreError> {
        if self.unit_open && !in_unit {
            self.commit_unit()?;
        }
        if in_unit && self.unit_open {
            return Ok(());
        }
        self.lock()?;
        if let Err(e) = self.catch_up(true) {
            self.unlock();
            return Err(e);
        }
        self.unit_open = in_unit;
        Ok(())
    }

    /// Applies `ops` to the tables and adds them to the transaction.
    fn apply(&mut self, ops: Vec<Op>) {
        let durable = self.log.is_some();
        for op in ops {
            let body = if durable {
                op.encode(self.txn.buf())
            } else {
                None
            };
            if let (Some(at), Some((pos, len))) = (self.tables.apply(op), body) {
                self.cold.push((at, pos, len));
            }
        }
    }

    /// Ends a write: outside a unit, the transaction is written and the file unlocked.
    fn end(&mut self) -> Result<(), StoreError> {
        if self.unit_open {
            return Ok(());
        }
        let r = self.flush();
        self.unlock();
        r
    }

    fn commit_unit(&mut self) -> Result<(), StoreError> {
        self.unit_open = false;
        let r = self.flush();
        self.unlock();
        r
    }

    /// Writes the transaction as one frame (with the lock held).
    fn flush(&mut self) -> Result<(), StoreError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        if self.txn.is_empty() {
            return Ok(());
        }
        let written = log.append_frame(&mut self.txn);
        self.txn.clear();
        match written {
            Ok(start) => {
                for (at, pos, len) in self.cold.drain(..) {
                    self.tables.settle_cold(&at, start + pos as u64, len);
                }
            }
            Err(e) => {
                self.cold.clear();
                self.stale = true;
                return Err(io_error(log.path(), e));
            }
        }
        if log.end() > self.compact_at {
            self.compact(false)?;
        }
        Ok(())
    }

    /// Rewrites the file with only what the tables hold, when that is less than half of it
    /// (or when `force`d), with the lock held.
    fn compact(&mut self, force: bool) -> Result<(), StoreError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let path = log.path().to_path_buf();
        let size = log.end();
        let live = self.tables.live_bytes();
        if !force && (size < COMPACT_MIN || size < live.saturating_mul(2)) {
            self.compact_at = size.saturating_mul(2).max(COMPACT_MIN);
            return Ok(());
        }
        let mut reader = log.reader().map_err(|e| io_error(&path, e))?;
        let started = std::time::Instant::now();
        let tables = &self.tables;
        let mut moved = Vec::new();
        let written = log.rewrite(|emit| {
            moved = tables.snapshot(SNAPSHOT_FRAME, &mut reader, emit)?;
            Ok(())
        });
        // The tables stay (the file now holds just what they hold); only the bodies kept
        // in the file moved. If anything went wrong, they are read again from the file.
        if let Err(e) = written {
            self.stale = true;
            return Err(io_error(&path, e));
        }
        if !self.tables.relocate_cold(&mut moved) {
            tracing::error!(path = %path.display(), "compaction: audit bodies out of step; reading the file again");
            self.stale = true;
            self.catch_up(true)?;
        }
        let log = self.log.as_ref().map(LogFile::end).unwrap_or_default();
        tracing::info!(
            path = %path.display(),
            from = size,
            to = log,
            ms = started.elapsed().as_millis() as u64,
            "compacted the store (writers waited meanwhile)"
        );
        self.compact_at = log.saturating_mul(2).max(COMPACT_MIN);
        Ok(())
    }

    /// The body of an audit entry or decision.
    pub(crate) fn cold(&self, c: &Cold) -> Result<String, StoreError> {
        match c {
            Cold::Mem(s) => Ok(s.clone()),
            Cold::Disk { offset, len } => {
                let log = self.log.as_ref().ok_or_else(|| StoreError::Backend {
                    message: "a value kept in a file, in a store without one".into(),
                    source: None,
                })?;
                log.read_at(*offset, *len as usize)
                    .map_err(|e| io_error(log.path(), e))
                    .and_then(|b| {
                        String::from_utf8(b).map_err(|e| StoreError::Corrupt {
                            key: format!("{} at {offset}", log.path().display()),
                            message: e.to_string(),
                        })
                    })
            }
        }
    }
}

/// A frame that would not apply, or the file that would not read.
struct ReadFailed(StoreError);

impl From<std::io::Error> for ReadFailed {
    fn from(e: std::io::Error) -> Self {
        ReadFailed(StoreError::backend(e))
    }
}

fn open_error(path: &Path, e: OpenError) -> StoreError {
    let message = match e {
        OpenError::Io(e) => format!("{}: {e}", path.display()),
        OpenError::Sqlite => format!(
            "{} is an SQLite store of an earlier p2c that was not imported",
            path.display()
        ),
        OpenError::NotAStore => format!("{} is not a p2c store", path.display()),
        OpenError::Newer(v) => format!(
            "the store was written by a newer p2c (store format {v}; this one knows up to {})",
            log::FORMAT
        ),
    };
    StoreError::Backend {
        message,
        source: None,
    }
}

/// The embedded store and queue. Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct EmbeddedStore {
    id: u64,
    engine: Arc<Mutex<Engine>>,
    path: Option<PathBuf>,
    queue: QueueSettings,
    /// When the queue's deduplication entries are next swept for expiry.
    next_sweep: Arc<std::sync::atomic::AtomicI64>,
    /// When expired idempotency records are next dropped.
    next_idem_sweep: Arc<std::sync::atomic::AtomicI64>,
    /// Sends waiting for the next group commit.
    pending_sends: Arc<Mutex<Vec<queue::PendingSend>>>,
    /// Group commits made (for tests and the benchmark's report).
    group_commits: Arc<std::sync::atomic::AtomicU64>,
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
        let log = match LogFile::open(path) {
            Err(OpenError::Sqlite) => {
                import::from_sqlite(path)?;
                LogFile::open(path)
            }
            other => other,
        }
        .map_err(|e| open_error(path, e))?;
        let mut engine = Engine {
            log: Some(log),
            compact_at: 0,
            ..Engine::memory()
        };
        // Read it all in (without waiting for another process's transaction); then, if
        // nobody is writing, cut off what a crash left and compact the file if it is mostly
        // what was deleted since.
        engine.catch_up(false)?;
        let free = match engine.log.as_mut() {
            Some(log) => log.try_lock_now().map_err(|e| io_error(path, e))?,
            None => false,
        };
        if free {
            let tidied = engine.catch_up(true).and_then(|()| engine.compact(false));
            engine.unlock();
            tidied?;
        }
        Ok(Self::with_engine(engine, Some(path.to_path_buf())))
    }

    /// An in-memory store (tests and benchmarks that do not need durability).
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self::with_engine(Engine::memory(), None))
    }

    fn with_engine(engine: Engine, path: Option<PathBuf>) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            engine: Arc::new(Mutex::new(engine)),
            path,
            queue: QueueSettings::default(),
            next_sweep: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            next_idem_sweep: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            pending_sends: Arc::new(Mutex::new(Vec::new())),
            group_commits: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
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
        let mut engine = self.engine()?;
        if engine.unit_open {
            engine.commit_unit()?;
        }
        Ok(out)
    }

    /// Rewrites the file now with only what the store holds (it is done by itself when the
    /// file has grown to more than twice that).
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut engine = self.engine()?;
        engine.begin(false)?;
        let r = engine.compact(true);
        engine.unlock();
        r
    }

    /// How many group commits of webhook sends this store has made.
    pub fn commits(&self) -> u64 {
        self.group_commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the running task is inside one of this store's units of work.
    fn in_unit(&self) -> bool {
        UNIT.try_with(|id| *id == self.id).unwrap_or(false)
    }

    fn engine(&self) -> Result<MutexGuard<'_, Engine>, StoreError> {
        self.engine.lock().map_err(|_| poisoned())
    }

    /// Reads the tables, up to date with what other processes committed.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut engine = self.engine()?;
        engine.refresh(self.in_unit())?;
        f(&engine)
    }

    /// A write: `decide` looks at the tables and returns the ops to apply (every check is
    /// made before anything changes) and its answer; the ops are committed, or join the
    /// open unit.
    pub(crate) fn write<T, E: From<StoreError>>(
        &self,
        decide: impl FnOnce(&Tables) -> Result<(Vec<Op>, T), E>,
    ) -> Result<T, E> {
        let mut engine = self.engine()?;
        engine.begin(self.in_unit())?;
        match decide(&engine.tables) {
            Ok((ops, out)) => {
                engine.apply(ops);
                engine.end()?;
                Ok(out)
            }
            Err(e) => {
                engine.end()?;
                Err(e)
            }
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "embedded store lock poisoned".into(),
        source: None,
    }
}

/// Whether a periodic task whose next run is at `next` is due at `now`; if so, moves
/// `next` on by `every` ms (one caller wins when several ask at once).
pub(crate) fn due(next: &std::sync::atomic::AtomicI64, now: i64, every: i64) -> bool {
    use std::sync::atomic::Ordering;
    let at = next.load(Ordering::Relaxed);
    now >= at
        && next
            .compare_exchange(at, now + every, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{Consumer, QueueName};

    /// A store of the earlier format, its states JSON, reads on: the states load as they
    /// were, new saves are binary, and the file is marked with the new format.
    #[test]
    fn states_an_earlier_store_wrote_as_json_load() {
        use crate::ports::{AuditEntry, EntityState, StateStore};
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("earlier.db");
        let key: crate::domain::EntityKey = "account:OLD-1".parse().expect("key");
        let mut old = EntityState::new(key.clone());
        old.version = 1;
        old.records.insert(
            "customer".into(),
            serde_json::json!({"name": "Old", "limit": 1.50}),
        );
        let s = EmbeddedStore::open(&path).expect("store");
        s.write(|_| {
            Ok::<_, StoreError>((
                vec![Op::EntityPut {
                    key: key.to_string(),
                    entity: tables::Entity {
                        version: 1,
                        body: serde_json::to_vec(&old).expect("json"),
                    },
                }],
                (),
            ))
        })
        .expect("written as JSON");
        drop(s);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("file");
        file.write_all_at(&1u32.to_le_bytes(), 8).expect("format 1");
        drop(file);

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let s = EmbeddedStore::open(&path).expect("an earlier store opens");
        let mut loaded = rt.block_on(s.load(&key)).expect("loads").expect("state");
        let mut expected = old.clone();
        expected.stored_ids = old.ids.clone();
        assert_eq!(loaded, expected);
        loaded.version = 2;
        let entry = AuditEntry {
            at: chrono::Utc::now(),
            subject: key.to_string(),
            step: "sync".into(),
            outcome: "applied".into(),
            detail: String::new(),
            event_id: None,
            rules_version: None,
        };
        rt.block_on(s.save(&loaded, &entry)).expect("saves over it");
        drop(s);
        let mut header = [0u8; 12];
        std::fs::File::open(&path)
            .expect("file")
            .read_exact_at(&mut header, 0)
            .expect("header");
        assert_eq!(header[8..12], log::FORMAT.to_le_bytes());
        let s = EmbeddedStore::open(&path).expect("reopens");
        let again = rt.block_on(s.load(&key)).expect("loads").expect("state");
        assert_eq!(again, loaded);
    }

    #[test]
    fn sends_that_arrive_together_share_a_commit_and_are_durable_when_answered() {
        use crate::ports::{OutMessage, Publisher};
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("group.db");
        let s = EmbeddedStore::open(&path).expect("store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // 60 webhooks at once, every third one a redelivery of an earlier one.
        let commits_before = s.commits();
        let answered = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..60 {
                let s = s.clone();
                let id = if i % 3 == 2 { i - 1 } else { i };
                set.spawn(async move {
                    let m = OutMessage {
                        group: format!("g{}", id % 7),
                        dedup_id: format!("d{id}"),
                        body: format!("event {id}"),
                        typed: None,
                    };
                    s.send(QueueName::Inbound, &[m]).await
                });
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                r.expect("joins").expect("queued");
                n += 1;
            }
            n
        });
        assert_eq!(answered, 60);
        let commits = s.commits() - commits_before;
        assert!(commits < 5, "{commits} commits for 60 sends made together");
        drop(s);
        // Another process opening the file finds every distinct message, once.
        let reopened = EmbeddedStore::open(&path).expect("reopened");
        let depth = rt
            .block_on(reopened.depth(QueueName::Inbound))
            .expect("depth");
        assert_eq!(depth, 40, "60 sends, 20 of them redeliveries");
        // A send with nothing to group with still commits on its own.
        rt.block_on(reopened.send(
            QueueName::Inbound,
            &[OutMessage {
                group: "g".into(),
                dedup_id: "alone".into(),
                body: "alone".into(),
                typed: None,
            }],
        ))
        .expect("queued");
        drop(reopened);
        let again = EmbeddedStore::open(&path).expect("reopened");
        assert_eq!(
            rt.block_on(again.depth(QueueName::Inbound)).expect("depth"),
            41
        );
    }
}
