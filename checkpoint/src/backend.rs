//! The byte-level state backend of one operator instance.
//!
//! Operators never talk to a backend directly: they use a typed
//! [`KeyedTable`](crate::KeyedTable), which keeps hot and dirty entries in
//! memory and writes dirty ones here as one batch per epoch. A backend only has
//! to store bytes, read them back, and (for checkpoints) make its contents as of
//! now durable.
//!
//! For checkpoints a backend freezes its contents with
//! [`StateBackend::snapshot`]; the returned [`SnapshotJob`] persists them
//! while the backend goes on changing (see [`crate::snapshot`]).
//!
//! # Failure contract
//! Every method may fail with [`Error`](crate::Error); a failed `write_batch`
//! leaves the backend as it was before the call (batches are atomic), so the
//! caller may retry or fail the task without corrupting state.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::Result;
use crate::snapshot::{MemorySnapshotJob, SnapshotJob};

/// One mutation in a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (no error if absent).
    Delete(Vec<u8>),
    /// Remove every key that starts with these bytes: a whole table at
    /// once (a closed window's), one operation instead of one per key.
    DeletePrefix(Vec<u8>),
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (the prefix is empty or all `0xff`): the end
/// of a [`WriteOp::DeletePrefix`] range.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The callback of [`StateBackend::scan_prefix`]: sees each key and value.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A byte-level key/value store owned by one operator instance.
pub trait StateBackend: Send + 'static {
    /// Reads the value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies `ops` atomically, in order.
    fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()>;

    /// Calls `visit` for every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut ScanVisitor<'_>) -> Result<()>;

    /// The synchronous part of a snapshot: freezes the current contents
    /// (everything written by completed `write_batch` calls) and returns the
    /// job that persists them. Must be quick (RocksDB: a memtable flush and
    /// hard links); the backend may be written again as soon as it returns.
    ///
    /// # Errors
    /// Backend or local I/O errors; the epoch's checkpoint then fails.
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>>;

    /// A reader that works while another thread writes or snapshots this
    /// backend, if it can offer one (RocksDB can: its reads and writes are
    /// thread-safe).
    fn reader(&self) -> Option<Arc<dyn BackendReader>> {
        None
    }

    /// Reads `key`, which the caller guarantees has no write queued, or
    /// frozen and not yet applied (see [`SharedBackend`]): a backend that
    /// queues writes need not wait for them to answer.
    fn get_settled(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }

    /// Whether every write accepted so far is applied, so that every read
    /// sees it.
    fn settled(&self) -> bool {
        true
    }

    /// Whether writes are being queued for a marker's snapshot (between
    /// [`SharedBackend::defer_writes`] and the freeze): a table must not
    /// spill then, or changes made after the marker would join its
    /// snapshot.
    fn deferring(&self) -> bool {
        false
    }
}

/// Reads a backend concurrently with its writes and snapshots (see
/// [`StateBackend::reader`]).
pub trait BackendReader: Send + Sync {
    /// Reads the value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// The in-memory backend: an ordered map. Used by unit tests, benches and
/// queries that run without durable state.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries, in key order (used to snapshot the backend).
    pub fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }

    /// A backend holding exactly `entries` (used to restore a snapshot).
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            map: entries.into_iter().collect(),
        }
    }
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }

    fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        for op in ops {
            match op {
                WriteOp::Put(k, v) => {
                    self.map.insert(k, v);
                }
                WriteOp::Delete(k) => {
                    self.map.remove(&k);
                }
                WriteOp::DeletePrefix(prefix) => {
                    // Split off the range and keep what follows it.
                    let mut tail = self.map.split_off(&prefix);
                    if let Some(end) = prefix_end(&prefix) {
                        let mut after = tail.split_off(&end);
                        self.map.append(&mut after);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut ScanVisitor<'_>) -> Result<()> {
        for (k, v) in self.map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            visit(k, v)?;
        }
        Ok(())
    }

    /// Copies the map: O(state) in the synchronous part, fine for the small
    /// states this backend is meant for.
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        Ok(Box::new(MemorySnapshotJob {
            entries: self.map.clone(),
        }))
    }
}

/// One backend shared by several tables of a task (keyed value, map and
/// list state of one operator instance, each under its own table name).
/// Cloning gives another handle to the same backend; a snapshot through any
/// handle covers every table (flush them all first).
///
/// The lock is never contended in practice: a task's tables are used from
/// the task alone.
///
/// # Snapshots off the task's thread
/// At a marker the runtime calls [`defer_writes`](SharedBackend::defer_writes),
/// lets the operator flush its tables (their write batches are queued, not
/// applied), then [`freeze`](SharedBackend::freeze)s the backend and hands
/// the [`Frozen`] snapshot point to a blocking thread, where
/// [`Frozen::take`] applies the queued batches and runs the snapshot's
/// synchronous part. Neither call waits, so the task never stalls at a
/// marker; snapshot points frozen while an earlier one is still being taken
/// are taken after it, in order, on their own threads. Until a point is
/// taken, direct writes (cache spills) wait; until its queued batches are
/// applied, reads wait too (a table may have evicted those entries, and the
/// backend must not answer with older values). A table writes to its
/// backend directly only when its cache spills, and reads it only on a
/// cache miss, so with state that fits the cache nothing waits.
///
/// A table that keeps every entry with a queued or unapplied write in its
/// cache reads the others with [`StateBackend::get_settled`], which waits
/// for neither the queued batches nor the snapshot thread's lock when the
/// backend offers a concurrent [`reader`](StateBackend::reader): a key seen
/// for the first time right after a marker (a new window, a key whose state
/// expired) then costs a read, not the snapshot's 20-50 ms of applying and
/// snapshotting.
#[derive(Clone)]
pub struct SharedBackend {
    /// Declared before `inner`, so it is dropped first (a RocksDB reader
    /// must not keep the DB open once its backend removed its files).
    reader: Option<Arc<dyn BackendReader>>,
    inner: Arc<Mutex<Box<dyn StateBackend>>>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Default)]
struct Gate {
    /// Snapshot points frozen and not yet taken or dropped: direct writes
    /// wait until there is none.
    frozen: u64,
    /// Sequence number of the next snapshot point.
    next_seq: u64,
    /// Sequence number of the snapshot point whose turn it is: points are
    /// applied and snapshotted in the order they were frozen.
    turn: u64,
    /// Writes are queued (between `defer_writes` and `freeze`).
    deferring: bool,
    queued: Vec<WriteOp>,
    /// Snapshot points whose queued writes are not applied yet: reads wait
    /// while there is one (a table may have evicted those entries, so the
    /// backend must not answer with older values).
    unapplied: u64,
    /// Queued writes could not be applied: the live state is incomplete, so
    /// every later call fails (the task fails and the query recovers from
    /// its last checkpoint).
    failed: Option<String>,
}

/// A snapshot point of a [`SharedBackend`]: direct writes wait until it is
/// taken (or dropped).
#[must_use = "writes to the backend wait until the frozen snapshot is taken or dropped"]
pub struct Frozen {
    backend: SharedBackend,
    seq: u64,
    queued: Vec<WriteOp>,
    /// Its queued writes are not applied (counted in `Gate::unapplied`).
    unapplied: bool,
    /// It waited for its turn.
    has_turn: bool,
}

impl Frozen {
    /// Waits until every earlier snapshot point is taken or dropped.
    fn wait_turn(&mut self) {
        if !self.has_turn {
            let (gate, cv) = &*self.backend.gate;
            let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
            while g.turn != self.seq {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            self.has_turn = true;
        }
    }

    /// Applies the queued writes (once), failing the backend if they could
    /// not be applied. Fails without writing when an earlier point's writes
    /// were lost: the backend then lacks them, so no later snapshot of it
    /// may be taken (its epoch could complete with that state).
    fn apply(&mut self, inner: &mut dyn StateBackend) -> Result<()> {
        let queued = std::mem::take(&mut self.queued);
        let earlier = {
            let (gate, _) = &*self.backend.gate;
            self.backend
                .check(&gate.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let result = match earlier {
            Err(e) => Err(e),
            Ok(()) if queued.is_empty() => Ok(()),
            Ok(()) => {
                let result = inner.write_batch(queued);
                if let Err(e) = &result {
                    self.backend.fail(e);
                }
                result
            }
        };
        if self.unapplied {
            self.unapplied = false;
            let (gate, cv) = &*self.backend.gate;
            gate.lock().unwrap_or_else(|p| p.into_inner()).unapplied -= 1;
            cv.notify_all();
        }
        result
    }

    /// Waits for earlier snapshot points, applies the queued write batches,
    /// runs the synchronous part of the snapshot, then lets direct writes
    /// through again.
    ///
    /// # Errors
    /// As [`StateBackend::write_batch`] and [`StateBackend::snapshot`].
    pub fn take(mut self) -> Result<Box<dyn SnapshotJob>> {
        self.wait_turn();
        let backend = self.backend.clone();
        let mut inner = backend.lock();
        self.apply(inner.as_mut())?;
        inner.snapshot()
        // `self` drops after the guard and passes the turn on.
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Not taken (or failed before applying): the queued writes must still
        // reach the backend, in order, or the live state would lose them.
        if self.queued.is_empty() && self.unapplied {
            // Applying them panicked after taking them: they are lost.
            self.backend.fail(&crate::Error::Backend(
                "applying the queued writes panicked".into(),
            ));
        }
        if !self.queued.is_empty() || self.unapplied {
            self.wait_turn();
            let backend = self.backend.clone();
            let _ = self.apply(backend.lock().as_mut());
        }
        self.wait_turn();
        let (gate, cv) = &*self.backend.gate;
        let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
        g.frozen -= 1;
        g.turn += 1;
        drop(g);
        cv.notify_all();
    }
}

impl SharedBackend {
    /// Shares `backend`.
    pub fn new(backend: Box<dyn StateBackend>) -> Self {
        Self {
            reader: backend.reader(),
            inner: Arc::new(Mutex::new(backend)),
            gate: Arc::new((Mutex::new(Gate::default()), Condvar::new())),
        }
    }

    fn fail(&self, e: &crate::Error) {
        tracing::error!(%e, "applying queued state writes failed; the state backend is unusable");
        let (gate, _) = &*self.gate;
        gate.lock().unwrap_or_else(|p| p.into_inner()).failed = Some(e.to_string());
    }

    /// Waits until no frozen write is unapplied, then fails if queued writes
    /// were lost.
    fn readable(&self) -> Result<()> {
        let (gate, cv) = &*self.gate;
        let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
        while g.unapplied > 0 {
            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        self.check(&g)
    }

    /// Fails when queued writes were lost.
    fn check(&self, g: &Gate) -> Result<()> {
        match &g.failed {
            Some(e) => Err(crate::Error::Backend(format!(
                "state writes queued at a marker were not applied ({e})"
            ))),
            None => Ok(()),
        }
    }

    /// Queues later write batches instead of applying them, until
    /// [`freeze`](Self::freeze). Never waits.
    pub fn defer_writes(&self) {
        let (gate, _) = &*self.gate;
        gate.lock().unwrap_or_else(|p| p.into_inner()).deferring = true;
    }

    /// Marks the current contents, plus the queued writes, as the snapshot's
    /// (see the type docs). Never waits: a snapshot point frozen while an
    /// earlier one is still being taken waits for it in
    /// [`Frozen::take`], on the snapshot's thread.
    pub fn freeze(&self) -> Frozen {
        let (gate, _) = &*self.gate;
        let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
        g.frozen += 1;
        g.deferring = false;
        let seq = g.next_seq;
        g.next_seq += 1;
        let queued = std::mem::take(&mut g.queued);
        let unapplied = !queued.is_empty();
        if unapplied {
            g.unapplied += 1;
        }
        Frozen {
            backend: self.clone(),
            seq,
            queued,
            unapplied,
            has_turn: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn StateBackend>> {
        // A panic inside a backend call leaves nothing half-updated on this
        // side of the lock (batches are atomic), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateBackend for SharedBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.readable()?;
        self.lock().get(key)
    }

    fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        let (gate, cv) = &*self.gate;
        let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&g)?;
        if g.deferring {
            // Moved, not copied: a marker's batch can be 100 k entries.
            if g.queued.is_empty() {
                g.queued = ops;
            } else {
                g.queued.extend(ops);
            }
            return Ok(());
        }
        // A direct write (a cache spill) lands after every frozen point.
        while g.frozen > 0 {
            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        self.check(&g)?;
        drop(g);
        self.lock().write_batch(ops)
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut ScanVisitor<'_>) -> Result<()> {
        self.readable()?;
        self.lock().scan_prefix(prefix, visit)
    }

    fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        self.freeze().take()
    }

    fn reader(&self) -> Option<Arc<dyn BackendReader>> {
        self.reader.clone()
    }

    fn get_settled(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        {
            let (gate, _) = &*self.gate;
            self.check(&gate.lock().unwrap_or_else(|p| p.into_inner()))?;
        }
        match &self.reader {
            Some(reader) => reader.get(key),
            None => self.lock().get(key),
        }
    }

    fn settled(&self) -> bool {
        let (gate, _) = &*self.gate;
        let g = gate.lock().unwrap_or_else(|p| p.into_inner());
        g.queued.is_empty() && g.unapplied == 0
    }

    fn deferring(&self) -> bool {
        let (gate, _) = &*self.gate;
        gate.lock().unwrap_or_else(|p| p.into_inner()).deferring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_put_delete_scan() {
        let mut b = MemoryBackend::new();
        b.write_batch(vec![
            WriteOp::Put(b"a/1".to_vec(), b"x".to_vec()),
            WriteOp::Put(b"a/2".to_vec(), b"y".to_vec()),
            WriteOp::Put(b"b/1".to_vec(), b"z".to_vec()),
            WriteOp::Delete(b"a/1".to_vec()),
        ])
        .unwrap();
        assert_eq!(b.get(b"a/1").unwrap(), None);
        assert_eq!(b.get(b"a/2").unwrap(), Some(b"y".to_vec()));
        let mut seen = Vec::new();
        b.scan_prefix(b"a/", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"a/2".to_vec(), b"y".to_vec())]);
    }

    #[test]
    fn shared_backend_serves_several_tables() {
        use crate::table::KeyedTable;
        let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        let mut counts: KeyedTable<String, u64> =
            KeyedTable::new(Box::new(shared.clone()), "counts");
        let mut names: KeyedTable<u64, String> = KeyedTable::new(Box::new(shared.clone()), "names");
        counts.put("a".into(), 1).unwrap();
        names.put(1, "one".into()).unwrap();
        counts.flush().unwrap();
        names.flush().unwrap();
        let mut n = 0;
        shared
            .scan_prefix(b"", &mut |_, _| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(names.get(&1).unwrap().map(String::as_str), Some("one"));
    }
}

#[cfg(test)]
mod frozen_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn writes_and_reads_wait_for_a_frozen_snapshot() {
        let mut shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        shared
            .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"0".to_vec())])
            .unwrap();
        // The marker's flush is queued, then frozen with the snapshot point.
        shared.defer_writes();
        shared
            .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"1".to_vec())])
            .unwrap();
        assert_eq!(
            shared.get(b"k").unwrap(),
            Some(b"0".to_vec()),
            "queued, not applied"
        );
        let frozen = shared.freeze();
        let wrote = Arc::new(AtomicBool::new(false));
        let writer = {
            let mut shared = shared.clone();
            let wrote = wrote.clone();
            std::thread::spawn(move || {
                shared
                    .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"2".to_vec())])
                    .unwrap();
                wrote.store(true, Ordering::SeqCst);
            })
        };
        // A read while frozen waits for the queued write: never the old value.
        let reader = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.get(b"k").unwrap())
        };
        let job = frozen.take().unwrap();
        writer.join().unwrap();
        assert_ne!(reader.join().unwrap(), Some(b"0".to_vec()));
        assert!(wrote.load(Ordering::SeqCst));
        assert_eq!(shared.get(b"k").unwrap(), Some(b"2".to_vec()));
        // The snapshot holds the contents as of the freeze.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::CheckpointStore::open(dir.path()).unwrap();
        let task = crate::TaskId::new("t", 0);
        let handle = job.persist(&store, &task, 1).unwrap();
        use crate::BackendFactory;
        let restored = crate::MemoryBackendFactory
            .open(&task, Some(&handle), Some(&store))
            .unwrap();
        assert_eq!(restored.get(b"k").unwrap(), Some(b"1".to_vec()));
    }
}

#[cfg(test)]
mod overlap_tests {
    use super::*;
    use crate::BackendFactory;

    fn restore(job: Box<dyn SnapshotJob>, epoch: u64) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::CheckpointStore::open(dir.path()).unwrap();
        let task = crate::TaskId::new("t", 0);
        let handle = job.persist(&store, &task, epoch).unwrap();
        let restored = crate::MemoryBackendFactory
            .open(&task, Some(&handle), Some(&store))
            .unwrap();
        restored.get(b"k").unwrap()
    }

    /// Two markers' flushes (`k` = 1, then `k` = 2), the second frozen
    /// before the first point is taken: neither freeze waits.
    fn two_points() -> (SharedBackend, Frozen, Frozen) {
        let mut shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        let mut points = Vec::new();
        for v in [b"1", b"2"] {
            shared.defer_writes();
            shared
                .write_batch(vec![WriteOp::Put(b"k".to_vec(), v.to_vec())])
                .unwrap();
            points.push(shared.freeze());
        }
        let second = points.pop().unwrap();
        let first = points.pop().unwrap();
        (shared, first, second)
    }

    #[test]
    fn snapshot_points_frozen_back_to_back_are_taken_in_order() {
        let (mut shared, first, second) = two_points();
        // The second is taken first on another thread: it waits its turn.
        let later = std::thread::spawn(move || second.take().unwrap());
        let job1 = first.take().unwrap();
        let job2 = later.join().unwrap();
        assert_eq!(restore(job1, 1), Some(b"1".to_vec()));
        assert_eq!(restore(job2, 2), Some(b"2".to_vec()));
        assert_eq!(shared.get(b"k").unwrap(), Some(b"2".to_vec()));
        // Both taken: direct writes go through again.
        shared
            .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"3".to_vec())])
            .unwrap();
        assert_eq!(shared.get(b"k").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn a_dropped_point_still_applies_its_writes_in_order() {
        let (shared, first, second) = two_points();
        let later = std::thread::spawn(move || drop(second));
        drop(first);
        later.join().unwrap();
        assert_eq!(shared.get(b"k").unwrap(), Some(b"2".to_vec()));
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    /// A backend whose writes fail.
    struct Broken;

    impl StateBackend for Broken {
        fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn write_batch(&mut self, _ops: Vec<WriteOp>) -> Result<()> {
            Err(crate::Error::Backend("disk gone".into()))
        }
        fn scan_prefix(&self, _prefix: &[u8], _visit: &mut ScanVisitor<'_>) -> Result<()> {
            Ok(())
        }
        fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
            Err(crate::Error::Backend("no snapshot".into()))
        }
    }

    /// A backend whose first write fails (a transient error) and whose
    /// later writes succeed.
    struct FailsOnce {
        inner: MemoryBackend,
        failed: bool,
    }

    impl StateBackend for FailsOnce {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()> {
            if !self.failed {
                self.failed = true;
                return Err(crate::Error::Backend("transient".into()));
            }
            self.inner.write_batch(ops)
        }
        fn scan_prefix(&self, prefix: &[u8], visit: &mut ScanVisitor<'_>) -> Result<()> {
            self.inner.scan_prefix(prefix, visit)
        }
        fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
            self.inner.snapshot()
        }
    }

    /// Two markers' points frozen back to back; the first one's writes are
    /// lost. The second point's snapshot would lack them (the keys changed
    /// only in the first epoch would hold older values): it must fail too,
    /// or its epoch could complete with that state.
    #[test]
    fn a_point_after_lost_writes_is_not_snapshotted() {
        let mut shared = SharedBackend::new(Box::new(FailsOnce {
            inner: MemoryBackend::new(),
            failed: false,
        }));
        let mut points = Vec::new();
        for (k, v) in [(b"a", b"1"), (b"b", b"2")] {
            shared.defer_writes();
            shared
                .write_batch(vec![WriteOp::Put(k.to_vec(), v.to_vec())])
                .unwrap();
            points.push(shared.freeze());
        }
        let second = points.pop().unwrap();
        let first = points.pop().unwrap();
        assert!(first.take().is_err());
        assert!(
            second.take().is_err(),
            "a snapshot without the first point's writes was taken"
        );
    }

    /// A backend whose writes panic.
    struct Panics;

    impl StateBackend for Panics {
        fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn write_batch(&mut self, _ops: Vec<WriteOp>) -> Result<()> {
            panic!("backend bug");
        }
        fn scan_prefix(&self, _prefix: &[u8], _visit: &mut ScanVisitor<'_>) -> Result<()> {
            Ok(())
        }
        fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
            Err(crate::Error::Backend("no snapshot".into()))
        }
    }

    /// A panic while the queued writes are applied loses them: the backend
    /// must say so rather than answer reads with the older values.
    #[test]
    fn queued_writes_lost_to_a_panic_make_the_backend_fail() {
        let mut shared = SharedBackend::new(Box::new(Panics));
        shared.defer_writes();
        shared
            .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"1".to_vec())])
            .unwrap();
        let frozen = shared.freeze();
        assert!(std::thread::spawn(move || frozen.take()).join().is_err());
        let err = shared.get(b"k").unwrap_err().to_string();
        assert!(err.contains("not applied"), "{err}");
    }

    #[test]
    fn lost_queued_writes_make_the_backend_fail_from_then_on() {
        let mut shared = SharedBackend::new(Box::new(Broken));
        shared.defer_writes();
        shared
            .write_batch(vec![WriteOp::Put(b"k".to_vec(), b"1".to_vec())])
            .unwrap();
        assert!(shared.freeze().take().is_err());
        // The live state misses those writes: every later call says so.
        let err = shared.get(b"k").unwrap_err().to_string();
        assert!(err.contains("not applied"), "{err}");
        assert!(shared
            .write_batch(vec![WriteOp::Delete(b"k".to_vec())])
            .is_err());
    }
}
