//! The embedded store's file: an append-only log of committed transactions.
//!
//! Layout: a 16-byte header (magic `P2CLOG`, format version), then one frame per commit:
//! the payload's length (u32 LE), its CRC-32 (u32 LE), the payload. A commit is one
//! positioned write at the end, made while holding an exclusive lock on a companion file
//! (`<path>-lock`) and after reading whatever other processes appended since this one last
//! looked, so several processes (`p2c serve`, `p2c rules publish`, `p2c dlq replay`) share
//! one store. A process killed in the middle of a write leaves a torn last frame (it runs
//! past the end, or its checksum does not match): readers stop before it, and the next
//! writer, holding the lock so that nobody else can be mid-write, cuts it off.
//!
//! Like SQLite's WAL with `synchronous=NORMAL`, a commit survives a killed process (it is
//! in the operating system's page cache when the write returns), not a power cut.
//! Compaction writes a new file, syncs it, and renames it over the old one; the other
//! processes see the new file on their next look and read it from the start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"P2CLOG\0\0";
/// The log format this build writes and reads. 2: entity states are binary
/// ([`super::state_codec`]); a format 1 file (states as JSON) is read as it is and marked 2
/// when opened, so an earlier p2c refuses it rather than misreading it.
pub(crate) const FORMAT: u32 = 2;
pub(crate) const HEADER: u64 = 16;
/// Where the format number sits in the header (after the magic).
const FORMAT_AT: usize = 8;
const FRAME_HEAD: usize = 8;
/// No transaction is anywhere near this; a larger length is damage, not data.
const MAX_FRAME: usize = 1 << 30;
/// How long a writer waits for another process's transaction (SQLite's busy timeout).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A file header of format `format`: the magic, the format number, four bytes reserved.
fn header(format: u32) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..FORMAT_AT].copy_from_slice(MAGIC);
    h[FORMAT_AT..FORMAT_AT + 4].copy_from_slice(&format.to_le_bytes());
    h
}

/// A transaction being built: room for its frame's head, then its payload encoded after
/// it, so [`LogFile::append_frame`] fills the head in and writes the frame where it was
/// encoded (a transaction is not copied into a frame of its own). Offsets into
/// [`Frame::buf`] count from the frame's start, head included.
#[derive(Debug)]
pub struct Frame(Vec<u8>);

impl Frame {
    pub fn new() -> Self {
        Self(vec![0; FRAME_HEAD])
    }

    /// Whether it holds no payload.
    pub fn is_empty(&self) -> bool {
        self.0.len() <= FRAME_HEAD
    }

    /// Empties it, keeping its room for the head (and its capacity).
    pub fn clear(&mut self) {
        self.0.truncate(FRAME_HEAD);
    }

    /// The frame so far, to encode the payload onto.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Default for Frame {
    fn default() -> Self {
        Self::new()
    }
}

/// What opening a file found.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(io::Error),
    /// An SQLite database: a store written by an earlier p2c, to be imported.
    Sqlite,
    /// Neither a log nor SQLite.
    NotAStore,
    /// A log written by a newer p2c.
    Newer(u32),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// How reading the frames after the last one seen ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// At the end of the file.
    Clean,
    /// At a frame that is incomplete or fails its checksum, at this offset: a write still
    /// under way (seen without the lock) or cut short by a crash (seen with it).
    Torn(u64),
}

/// A frame in the middle of the log that fails its checksum: damage, not a torn write.
#[derive(Debug)]
pub(crate) struct Damaged {
    pub at: u64,
}

pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    lock: File,
    ino: u64,
    /// The end of the last whole frame read or written: where the next one goes.
    end: u64,
    locked: bool,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-lock");
    PathBuf::from(p)
}

impl LogFile {
    /// Opens the log at `path`, creating it (with its header) when it does not exist or
    /// is empty. The frames are not read: [`LogFile::read_new`] does that.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut log = Self {
            path: path.to_path_buf(),
            ino: file.metadata()?.ino(),
            file,
            lock,
            end: HEADER,
            locked: false,
        };
        if log.file.metadata()?.len() == 0 {
            // Two processes creating the store at once: the lock decides who writes the header.
            log.lock()?;
            let r = log.init_header();
            log.unlock();
            r?;
        }
        if log.check_header()? < FORMAT {
            log.lock()?;
            let r = log.upgrade_header();
            log.unlock();
            r?;
        }
        Ok(log)
    }

    /// Marks an earlier format's file as this one's (with the lock held): what it holds
    /// reads as it is, and what is appended from now on an earlier p2c would not read.
    fn upgrade_header(&mut self) -> Result<(), OpenError> {
        if self.check_header()? < FORMAT {
            self.file
                .write_all_at(&FORMAT.to_le_bytes(), FORMAT_AT as u64)?;
        }
        Ok(())
    }

    fn init_header(&mut self) -> io::Result<()> {
        if self.file.metadata()?.len() == 0 {
            self.file.write_all_at(&header(FORMAT), 0)?;
        }
        Ok(())
    }

    /// The file's format, if this build reads it.
    fn check_header(&self) -> Result<u32, OpenError> {
        let mut h = [0u8; HEADER as usize];
        if self.file.read_exact_at(&mut h, 0).is_err() {
            return Err(OpenError::NotAStore);
        }
        if h.starts_with(b"SQLite format 3\0") {
            return Err(OpenError::Sqlite);
        }
        if &h[..FORMAT_AT] != MAGIC {
            return Err(OpenError::NotAStore);
        }
        let at = FORMAT_AT;
        let version = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        if version > FORMAT {
            return Err(OpenError::Newer(version));
        }
        Ok(version)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The end of the last whole frame read or written (the log's size as this process
    /// knows it).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Takes the exclusive lock, waiting up to ten seconds for another process's
    /// transaction to end.
    pub fn lock(&mut self) -> io::Result<()> {
        if self.locked {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            match self.lock.try_lock() {
                Ok(()) => {
                    self.locked = true;
                    return Ok(());
                }
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} is busy: another process held it for more than {} s",
                            self.path.display(),
                            LOCK_WAIT.as_secs()
                        ),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// Takes the exclusive lock if nobody holds it; says whether it did.
    pub fn try_lock_now(&mut self) -> io::Result<bool> {
        if self.locked {
            return Ok(true);
        }
        match self.lock.try_lock() {
            Ok(()) => {
                self.locked = true;
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn unlock(&mut self) {
        if self.locked {
            let _ = self.lock.unlock();
            self.locked = false;
        }
    }

    /// Whether the file at the path is no longer the one open here (another process
    /// compacted the log), or has grown past what this process has read.
    pub fn changed(&self) -> io::Result<(bool, bool)> {
        let meta = std::fs::metadata(&self.path)?;
        Ok((meta.ino() != self.ino, meta.len() > self.end))
    }

    /// Opens the file now at the path again, to be read from the start (`locked`: by a
    /// writer holding the lock).
    pub fn reopen(&mut self, locked: bool) -> Result<(), OpenError> {
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.ino = file.metadata()?.ino();
        self.file = file;
        self.end = HEADER;
        // A file an earlier p2c compacted has its format's header: a writer marks it as this
        // format's before it writes to it, as `open` does, so that p2c refuses it from then on.
        if locked {
            self.upgrade_header()
        } else {
            self.check_header().map(|_| ())
        }
    }

    /// Calls `apply` with each whole frame after the last one seen (its payload and the
    /// payload's offset in the file) and moves past it.
    pub fn read_new<E>(
        &mut self,
        mut apply: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Result<Tail, Damaged>, E>
    where
        E: From<io::Error>,
    {
        let len = self.file.metadata()?.len();
        if len <= self.end {
            return Ok(Ok(Tail::Clean));
        }
        let mut buf = vec![0u8; usize::try_from(len - self.end).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut buf, self.end)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = self.end;
            let Some(head) = buf.get(pos..pos + FRAME_HEAD) else {
                return Ok(Ok(Tail::Torn(at)));
            };
            let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let start = pos + FRAME_HEAD;
            let Some(payload) = (n <= MAX_FRAME)
                .then(|| buf.get(start..start + n))
                .flatten()
            else {
                return Ok(Ok(Tail::Torn(at)));
            };
            if crc32fast::hash(payload) != crc {
                // The last frame: a write cut short. Anything after it: damage.
                return Ok(if start + n == buf.len() {
                    Ok(Tail::Torn(at))
                } else {
                    Err(Damaged { at })
                });
            }
            apply(at + FRAME_HEAD as u64, payload)?;
            pos = start + n;
            self.end = at + (FRAME_HEAD + n) as u64;
        }
        Ok(Ok(Tail::Clean))
    }

    /// Cuts off a torn last frame (with the lock held: nobody else is writing).
    pub fn cut_torn_tail(&mut self) -> io::Result<()> {
        debug_assert!(self.locked);
        self.file.set_len(self.end)
    }

    /// Appends `frame` (with the lock held, after [`LogFile::read_new`]). Returns where the
    /// frame starts in the file (its byte `i` lands at that offset plus `i`).
    pub fn append_frame(&mut self, frame: &mut Frame) -> io::Result<u64> {
        debug_assert!(self.locked);
        let frame = frame.buf();
        let Some((head, payload)) = frame.split_at_mut_checked(FRAME_HEAD) else {
            return Err(io::Error::other("a frame without room for its head"));
        };
        if payload.len() > MAX_FRAME {
            return Err(io::Error::other("a transaction larger than 1 GiB"));
        }
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.file.write_all_at(frame, self.end)?;
        let at = self.end;
        self.end += frame.len() as u64;
        Ok(at)
    }

    /// Appends one frame holding `payload`; returns the payload's offset in the file.
    #[cfg(test)]
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        let mut frame = Frame::new();
        frame.buf().extend_from_slice(payload);
        Ok(self.append_frame(&mut frame)? + FRAME_HEAD as u64)
    }

    /// `len` bytes at `offset` (a value kept in the file rather than in memory).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Replaces the log with the frames `write` emits (compaction, import), with the lock
    /// held: written to a new file, synced, renamed over the old one. `emit` answers where
    /// the frame's payload lands in the new file. Afterwards the log is positioned at its
    /// end: what it holds is what the writer had (a compaction's tables stay as they are).
    pub fn rewrite(
        &mut self,
        write: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<u64>) -> io::Result<()>,
    ) -> io::Result<()> {
        debug_assert!(self.locked);
        let mut tmp_path = self.path.as_os_str().to_owned();
        tmp_path.push("-compact");
        let tmp_path = PathBuf::from(tmp_path);
        let mut end = HEADER;
        {
            let tmp = File::create(&tmp_path)?;
            let mut w = io::BufWriter::with_capacity(1 << 20, &tmp);
            w.write_all(&header(FORMAT))?;
            write(&mut |p: &[u8]| {
                if p.len() > MAX_FRAME {
                    return Err(io::Error::other("a frame larger than 1 GiB"));
                }
                w.write_all(&(p.len() as u32).to_le_bytes())?;
                w.write_all(&crc32fast::hash(p).to_le_bytes())?;
                w.write_all(p)?;
                let at = end + FRAME_HEAD as u64;
                end = at + p.len() as u64;
                Ok(at)
            })?;
            w.flush()?;
            drop(w);
            tmp.sync_all()?;
        }
        std::fs::rename(&tmp_path, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.ino = file.metadata()?.ino();
        self.file = file;
        self.end = end;
        Ok(())
    }

    /// A second handle on the file, to read values from while the log is rewritten.
    pub fn reader(&self) -> io::Result<WindowReader> {
        Ok(WindowReader {
            file: self.file.try_clone()?,
            start: 0,
            window: Vec::new(),
        })
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// Reads values from the file through a window of a megabyte or more: values asked for in
/// the order of their offsets (compaction copying the bodies kept in the file) cost one
/// read per window rather than one each. A value asked for out of order is read alone.
pub(crate) struct WindowReader {
    file: File,
    start: u64,
    window: Vec<u8>,
}

impl WindowReader {
    const WINDOW: usize = 1 << 20;

    /// The `len` bytes at `offset`.
    pub fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::other("offset out of range"))?;
        let window_end = self.start + self.window.len() as u64;
        if offset < self.start || end > window_end {
            // Reading on from the window (or from nothing yet): the next window. Anywhere
            // else: just the value.
            let onward = self.window.is_empty()
                || (offset >= self.start && offset < window_end + Self::WINDOW as u64);
            let want = if onward {
                let size = self.file.metadata()?.len();
                (Self::WINDOW as u64)
                    .min(size.saturating_sub(offset))
                    .max(len as u64)
            } else {
                len as u64
            };
            self.window.resize(want as usize, 0);
            self.file.read_exact_at(&mut self.window, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.window[at..at + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(log: &mut LogFile) -> (Vec<Vec<u8>>, Tail) {
        let mut out = Vec::new();
        let tail = log
            .read_new(|_, p| {
                out.push(p.to_vec());
                Ok::<(), io::Error>(())
            })
            .expect("reads")
            .expect("not damaged");
        (out, tail)
    }

    #[test]
    fn frames_written_by_one_handle_are_read_by_another() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut a = LogFile::open(&path).expect("open");
        let mut b = LogFile::open(&path).expect("open");
        a.lock().expect("lock");
        let at = a.append(b"first").expect("append");
        a.append(b"second").expect("append");
        a.unlock();
        assert_eq!(a.read_at(at, 5).expect("read"), b"first");
        let (seen, tail) = frames(&mut b);
        assert_eq!(seen, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(tail, Tail::Clean);
        assert_eq!(b.end(), a.end());
        // Nothing new: nothing read.
        assert!(frames(&mut b).0.is_empty());
    }

    #[test]
    fn a_torn_last_frame_is_skipped_then_cut_off_by_the_next_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut a = LogFile::open(&path).expect("open");
        a.lock().expect("lock");
        a.append(b"kept").expect("append");
        let good_end = a.end();
        a.append(b"torn by a crash").expect("append");
        drop(a);
        // The crash: the last frame loses its last bytes.
        let f = OpenOptions::new().write(true).open(&path).expect("file");
        f.set_len(good_end + 12).expect("cut");
        let mut b = LogFile::open(&path).expect("open");
        let (seen, tail) = frames(&mut b);
        assert_eq!(seen, vec![b"kept".to_vec()]);
        assert_eq!(tail, Tail::Torn(good_end));
        b.lock().expect("lock");
        b.cut_torn_tail().expect("cut");
        b.append(b"after").expect("append");
        b.unlock();
        let mut c = LogFile::open(&path).expect("open");
        let (seen, tail) = frames(&mut c);
        assert_eq!(seen, vec![b"kept".to_vec(), b"after".to_vec()]);
        assert_eq!(tail, Tail::Clean);
    }

    #[test]
    fn a_bad_checksum_before_the_end_is_damage_not_a_torn_write() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut a = LogFile::open(&path).expect("open");
        a.lock().expect("lock");
        let first = a.append(b"first").expect("append");
        a.append(b"second").expect("append");
        a.unlock();
        let f = OpenOptions::new().write(true).open(&path).expect("file");
        f.write_all_at(b"F", first).expect("flip a byte");
        let mut b = LogFile::open(&path).expect("open");
        let r = b.read_new(|_, _| Ok::<(), io::Error>(())).expect("reads");
        assert_eq!(r.err().map(|d| d.at), Some(HEADER));
    }

    #[test]
    fn the_window_reader_reads_values_in_any_order() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut log = LogFile::open(&path).expect("open");
        log.lock().expect("lock");
        // Values of 100 KB, so the reads cross windows.
        let values: Vec<(u64, Vec<u8>)> = (0..40u8)
            .map(|i| {
                let v = vec![i; 100_000];
                (log.append(&v).expect("append"), v)
            })
            .collect();
        let mut r = log.reader().expect("reader");
        for (at, v) in &values {
            assert_eq!(r.get(*at, v.len()).expect("get"), &v[..], "in order");
        }
        for i in [39usize, 0, 20, 21, 5, 38, 1] {
            let (at, v) = &values[i];
            assert_eq!(r.get(*at, v.len()).expect("get"), &v[..], "value {i}");
            assert_eq!(
                r.get(at + 10, 5).expect("get"),
                &v[10..15],
                "inside value {i}"
            );
        }
        assert!(r.get(log.end(), 1).is_err(), "past the end");
    }

    #[test]
    fn a_compacted_log_is_seen_as_replaced_by_other_handles() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut a = LogFile::open(&path).expect("open");
        let mut b = LogFile::open(&path).expect("open");
        a.lock().expect("lock");
        for i in 0..10 {
            a.append(format!("old {i}").as_bytes()).expect("append");
        }
        a.rewrite(|emit| {
            assert_eq!(emit(b"snapshot")?, HEADER + FRAME_HEAD as u64);
            Ok(())
        })
        .expect("rewrite");
        // The writer is at the end: it has what it wrote.
        assert_eq!(a.end(), HEADER + (FRAME_HEAD + 8) as u64);
        assert_eq!(frames(&mut a).0, Vec::<Vec<u8>>::new());
        a.append(b"after").expect("append");
        a.unlock();
        assert!(b.changed().expect("stat").0, "replaced");
        b.reopen(false).expect("reopen");
        assert_eq!(
            frames(&mut b).0,
            vec![b"snapshot".to_vec(), b"after".to_vec()]
        );
        assert!(!b.changed().expect("stat").0);
    }

    /// An earlier p2c, sharing the file, compacts it: its new file has the earlier format's
    /// header. A reader leaves it; a writer marks it as this format's before writing.
    #[test]
    fn a_file_an_earlier_format_compacted_is_marked_by_the_next_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut b = LogFile::open(&path).expect("open");
        let earlier = dir.path().join("s.log.compacting");
        std::fs::write(&earlier, header(1)).expect("write");
        std::fs::rename(&earlier, &path).expect("rename");
        assert!(b.changed().expect("stat").0, "replaced");
        b.reopen(false).expect("a reader reopens");
        assert_eq!(b.check_header().expect("header"), 1);
        b.lock().expect("lock");
        b.reopen(true).expect("a writer reopens");
        assert_eq!(b.check_header().expect("header"), FORMAT);
        b.unlock();
    }

    #[test]
    fn the_lock_excludes_other_handles_and_other_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.log");
        let mut a = LogFile::open(&path).expect("open");
        let b = LogFile::open(&path).expect("open");
        a.lock().expect("lock");
        assert!(matches!(
            b.lock.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        a.unlock();
        assert!(b.lock.try_lock().is_ok());
        let other = dir.path().join("other");
        std::fs::write(&other, b"hello, this is not a store at all").expect("write");
        assert!(matches!(LogFile::open(&other), Err(OpenError::NotAStore)));
        let sqlite = dir.path().join("old.db");
        std::fs::write(&sqlite, b"SQLite format 3\0 and more").expect("write");
        assert!(matches!(LogFile::open(&sqlite), Err(OpenError::Sqlite)));
        let newer = dir.path().join("newer");
        std::fs::write(&newer, header(FORMAT + 1)).expect("write");
        assert!(matches!(
            LogFile::open(&newer),
            Err(OpenError::Newer(v)) if v == FORMAT + 1
        ));
        // An earlier format's file opens, and is marked as this format's from then on.
        let earlier = dir.path().join("earlier");
        std::fs::write(&earlier, header(1)).expect("write");
        let log = LogFile::open(&earlier).expect("an earlier format opens");
        assert_eq!(log.check_header().expect("header"), FORMAT);
    }
}
