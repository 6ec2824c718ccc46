//! A typed keyed state table with an in-memory cache in front of a
//! [`StateBackend`].
//!
//! # Invariants
//! - A cached entry is either *clean* (equal to what the backend holds) or
//!   *dirty* (changed since it was last written). Dirty entries carry the
//!   generation (epoch of the table) they were changed in.
//! - [`KeyedTable::flush`] writes every dirty entry to the backend as one
//!   atomic batch; after it the backend alone holds the table's full contents.
//! - When the cache holds more than its capacity, dirty entries are written
//!   early and clean entries are evicted, so state larger than memory works.
//!   Writing early is safe: every record that changed them precedes the next
//!   marker, so they belong to the next snapshot anyway.
//! - A table opened over a backend that holds none of its entries (a fresh
//!   start) caches every entry it writes until it first evicts a live one:
//!   until then a cache miss is an absent key and reads nothing.
//!
//! # Flushing at a marker without a stall
//! At an epoch marker the runtime must capture the table as of that marker,
//! but encoding every dirty entry there stalls the task for
//! O(dirty entries) (48 ms for 95 k entries, measured: the random cache
//! lookups dominate). So the flush is split:
//! - [`KeyedTable::begin_flush`] is O(1): it closes the generation (the
//!   dirty keys become *pending*) and opens the next one.
//! - [`KeyedTable::flush_step`] encodes up to `budget` pending entries; the
//!   runtime calls it between input batches. The last step writes the
//!   pending batch to the backend.
//! - Records keep updating the table meanwhile. Before a pending entry is
//!   changed its marker-time value is encoded into the pending batch (copy
//!   on write), and the entry joins the new generation.
//! - While a flush is pending nothing else is written to the backend (the
//!   cache evicts only entries the backend already holds, applied, and may
//!   exceed its capacity by what the pending flush holds back); [`KeyedTable::flush`]
//!   refuses with [`Error::FlushInProgress`],
//!   since a write then would mix post-marker values into the marker's
//!   snapshot. Point reads and scans work at any time: scans overlay the
//!   backend with the cache's dirty entries and write nothing.
//! - An entry whose write the backend has queued but not applied (the
//!   snapshot thread applies a marker's batches) stays cached until it is
//!   applied, so a cache miss never needs a queued write, and reads the
//!   backend without waiting for the snapshot thread.
//!
//! Keys are stored as `table prefix ++ bincode(key)`; values as versioned
//! [`codec`] frames.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::hash::Hash;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{StateBackend, WriteOp};
use crate::codec;
use crate::error::{Error, Result};
use crate::snapshot::SnapshotJob;

/// Default number of cached entries per table.
pub const DEFAULT_CACHE_CAPACITY: usize = 1 << 20;

/// The generation of clean entries.
const CLEAN: u64 = 0;
/// Flag on `dirty_gen`: the entry's value of that generation is encoded in a
/// flush's batch, which may not be written yet.
const ENCODED: u64 = 1 << 63;

struct Entry<V> {
    /// `None`: known to be absent (a pending delete when dirty).
    value: Option<V>,
    /// [`CLEAN`]; the generation the entry was changed in; or that
    /// generation with [`ENCODED`] once a flush encoded it.
    dirty_gen: u64,
}

impl<V> Entry<V> {
    /// Whether the backend holds this entry's value, applied (its flush's
    /// generation is at most `settled_gen`), so it may be evicted.
    fn is_written(&self, settled_gen: u64) -> bool {
        self.dirty_gen == CLEAN
            || (self.dirty_gen & ENCODED != 0 && self.dirty_gen & !ENCODED <= settled_gen)
    }
}

/// A flush begun at a marker and not yet written.
struct Pending<K, V> {
    /// The keys dirty at the marker (generation `gen - 1`).
    keys: Vec<K>,
    /// Keys before this index are encoded (or were re-dirtied and encoded
    /// on write).
    pos: usize,
    /// The batch being built: the marker-time values.
    ops: Vec<WriteOp>,
    /// Keys whose marker-time value is a delete: once the batch is
    /// written the backend knows them absent, and the cache drops those not
    /// changed since (a closed window, an expired key), so it holds live
    /// entries only instead of growing with every key ever removed.
    removed: Vec<K>,
    /// The cache as [`KeyedTable::take_all`] left it while this flush still
    /// needed some of its entries: they are encoded from here, in steps,
    /// instead of all at once when the table was emptied.
    frozen: Option<HashMap<K, Entry<V>, CacheHasher>>,
    /// Whether the batch starts with the table's prefix delete.
    clears: bool,
}

/// The cache's hasher: foldhash, seeded per process. Every record does a
/// lookup, and SipHash (std's default) was a fifth of a keyed count's CPU;
/// the cache is never persisted, so the hash needs no stability.
type CacheHasher = foldhash::fast::RandomState;

/// A typed key -> value table of one operator instance.
pub struct KeyedTable<K, V> {
    backend: Box<dyn StateBackend>,
    prefix: Vec<u8>,
    cache: HashMap<K, Entry<V>, CacheHasher>,
    capacity: usize,
    /// The current generation (starts at 1; [`CLEAN`] is 0).
    gen: u64,
    /// Keys of the entries dirty in the current generation, so a flush
    /// touches only those.
    dirty_keys: Vec<K>,
    pending: Option<Pending<K, V>>,
    /// The newest generation whose flush is written to the backend (it may
    /// still be queued there, not applied).
    written_gen: u64,
    /// The newest generation whose flush the backend has applied. Entries
    /// of later generations stay cached (never evicted, removed ones not
    /// dropped), so a key missing from the cache has no write queued or
    /// unapplied, and is read with [`StateBackend::get_settled`], which
    /// does not wait for the snapshot thread.
    settled_gen: u64,
    /// Keys whose delete a flush wrote, by generation, dropped from the
    /// cache once the backend applied it.
    unsettled_removed: Vec<(u64, Vec<K>)>,
    /// While a flush is pending and the cache cannot shrink, the size up to
    /// which it may grow before the next eviction pass.
    overshoot_until: usize,
    /// Whether the cache holds every entry the backend has: true for a
    /// table whose backend held none of its entries when it was opened (a
    /// fresh start, or a restore with nothing of this table), until the
    /// first eviction of a live entry. A cache miss is then an absent key,
    /// answered without reading the backend (a new window, a new key of a
    /// join or a process function costs no RocksDB read).
    complete: bool,
    /// Emptied by [`KeyedTable::take_all`] since the last marker: the next
    /// flush deletes the table's backend entries with one prefix delete.
    cleared: bool,
    /// The generation whose batch deleted the table's backend entries with
    /// a prefix delete (0: none). Until the backend has applied it, a scan
    /// answers from the cache alone, which holds every live entry then.
    cleared_gen: u64,
    /// Whether this table ever wrote to its backend under its prefix: an
    /// emptied table that never did has nothing there to delete.
    wrote: bool,
}

/// Whether `backend` holds any entry under `prefix` (stops at the first;
/// a failing scan counts as holding some, so reads stay on).
fn holds_any(backend: &dyn StateBackend, prefix: &[u8]) -> bool {
    let mut any = false;
    let scanned = backend.scan_prefix(prefix, &mut |_, _| {
        any = true;
        // Stops the scan; the error is not reported.
        Err(Error::Backend("stop".into()))
    });
    any || scanned.is_err()
}

fn encode_op<K: Serialize, V: Serialize>(
    prefix: &[u8],
    key: &K,
    value: Option<&V>,
) -> Result<WriteOp> {
    let mut bk = Vec::with_capacity(prefix.len() + 16);
    bk.extend_from_slice(prefix);
    codec::encode_into(key, &mut bk)?;
    Ok(match value {
        Some(v) => WriteOp::Put(bk, codec::encode(v)?),
        None => WriteOp::Delete(bk),
    })
}

/// [`KeyedTable::mark_dirty`] on a table's fields (a macro, so the borrows
/// stay disjoint from the cache entry the caller holds).
macro_rules! mark_dirty {
    ($t:ident, $entry:expr, $key:expr, $gen:expr) => {
        Self::mark_dirty(
            $entry,
            $key,
            $gen,
            &mut $t.pending,
            &$t.prefix,
            &mut $t.dirty_keys,
        )
    };
}

impl<K, V> KeyedTable<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A table named `name` (its key prefix in the backend) over `backend`.
    pub fn new(backend: Box<dyn StateBackend>, name: &str) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let complete = !holds_any(backend.as_ref(), &prefix);
        Self::with_prefix(backend, prefix, complete)
    }

    /// A table named `name` that the caller knows its backend holds no
    /// entry of (a name never used before in this backend's history, such
    /// as a window's table named after its start): it opens complete
    /// without reading the backend.
    pub fn new_empty(backend: Box<dyn StateBackend>, name: &str) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        Self::with_prefix(backend, prefix, true)
    }

    fn with_prefix(backend: Box<dyn StateBackend>, prefix: Vec<u8>, complete: bool) -> Self {
        Self {
            complete,
            cleared: false,
            cleared_gen: 0,
            wrote: false,
            backend,
            prefix,
            cache: HashMap::default(),
            capacity: DEFAULT_CACHE_CAPACITY,
            gen: 1,
            dirty_keys: Vec::new(),
            pending: None,
            written_gen: 0,
            settled_gen: 0,
            unsettled_removed: Vec::new(),
            overshoot_until: 0,
        }
    }

    /// Sets how many entries the cache may hold before spilling (at least 1).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    fn backend_key(&self, key: &K) -> Result<Vec<u8>> {
        let mut out = self.prefix.clone();
        codec::encode_into(key, &mut out)?;
        Ok(out)
    }

    /// Reads `key` from the backend (unless the cache holds everything)
    /// and makes room to cache it.
    fn read(&mut self, key: &K) -> Result<Option<V>> {
        let value = if self.complete {
            None
        } else {
            let bk = self.backend_key(key)?;
            // Not cached, so no write of it is queued or unapplied.
            match self.backend.get_settled(&bk)? {
                Some(bytes) => Some(codec::decode(&bytes)?),
                None => None,
            }
        };
        self.make_room()?;
        Ok(value)
    }

    /// Whether a cache miss is known to be an absent key (see the field).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Marks a cached entry of `key` dirty in generation `gen`; a pending
    /// entry first gives its marker-time value to the pending batch (copy
    /// on write). Takes the fields it needs, not `self`, so the caller keeps
    /// the entry it looked up (one hash lookup per update).
    fn mark_dirty(
        entry: &mut Entry<V>,
        key: &K,
        gen: u64,
        pending: &mut Option<Pending<K, V>>,
        prefix: &[u8],
        dirty_keys: &mut Vec<K>,
    ) -> Result<()> {
        if entry.dirty_gen != gen {
            if entry.dirty_gen != CLEAN && entry.dirty_gen & ENCODED == 0 {
                // Dirty at the marker and not yet encoded: copy on write.
                let pending = pending
                    .as_mut()
                    .expect("an entry of an older generation belongs to a pending flush");
                pending
                    .ops
                    .push(encode_op(prefix, key, entry.value.as_ref())?);
            }
            entry.dirty_gen = gen;
            dirty_keys.push(key.clone());
        }
        Ok(())
    }

    /// Caches `key`, not cached, as the backend holds it (a clean entry).
    fn load(&mut self, key: &K) -> Result<&mut Entry<V>> {
        let value = self.read(key)?;
        Ok(self.cache.entry(key.clone()).or_insert(Entry {
            value,
            dirty_gen: CLEAN,
        }))
    }

    /// The value under `key`, if any.
    pub fn get(&mut self, key: &K) -> Result<Option<&V>> {
        if !self.cache.contains_key(key) {
            self.load(key)?;
        }
        Ok(self.cache.get(key).and_then(|e| e.value.as_ref()))
    }

    /// Asks the CPU to bring `key`'s cache entry, if cached, into its
    /// caches, without waiting for it and without changing anything:
    /// called for a batch of keys before they are updated one by one, the
    /// memory reads of the whole batch overlap (see the `prefetch`
    /// module).
    pub fn prefetch(&self, key: &K) {
        let _ = self
            .cache
            .get(&crate::prefetch::Prefetch::<K, Entry<V>>::new(key));
    }

    /// Read-modify-write of the value under `key`: `f` sees the current value
    /// (or `None`) and may change, set or clear it. Returns what `f` returns.
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut Option<V>) -> R) -> Result<R> {
        let gen = self.gen;
        // One lookup when the key is cached (the common case), two when it
        // is read from the backend.
        if let Some(entry) = self.cache.get_mut(key) {
            if entry.dirty_gen != gen {
                mark_dirty!(self, entry, key, gen)?;
            }
            return Ok(f(&mut entry.value));
        }
        // Read first: making room may flush, which opens a generation.
        let value = self.read(key)?;
        let gen = self.gen;
        let entry = self.cache.entry(key.clone()).or_insert(Entry {
            value,
            dirty_gen: CLEAN,
        });
        mark_dirty!(self, entry, key, gen)?;
        Ok(f(&mut entry.value))
    }

    /// Like [`update`](Self::update), for a key that has a value: `f` runs
    /// (and may change or clear it) only then, and an absent key is not
    /// marked dirty (nothing to write at the next flush). Returns what `f`
    /// returned, or `None` for an absent key.
    pub fn update_existing<R>(
        &mut self,
        key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> Result<Option<R>> {
        let present = match self.cache.get(key) {
            Some(entry) => entry.value.is_some(),
            None => self.load(key)?.value.is_some(),
        };
        if !present {
            return Ok(None);
        }
        self.update(key, f).map(Some)
    }

    /// Empties the table, showing every entry to `visit` (in no
    /// particular order): the way a window closes. The cache is emptied at
    /// once and the next flush deletes the backend's entries with one
    /// [`WriteOp::DeletePrefix`], instead of a delete per key. A table
    /// whose cache holds everything visits its cache; another scans the
    /// backend too. A pending flush keeps the entries it has not encoded
    /// yet, with their marker-time values, and encodes them in its steps:
    /// closing a window during a marker's flush costs no stall.
    pub fn take_all(&mut self, mut visit: impl FnMut(&K, &V)) -> Result<()> {
        let closed = self.gen - 1;
        let flushing = self.pending.is_some();
        let mut needed = false;
        if self.complete {
            for (k, e) in &self.cache {
                needed |= flushing && e.dirty_gen == closed;
                if let Some(v) = &e.value {
                    visit(k, v);
                }
            }
        } else {
            self.for_each(|k, v| {
                visit(&k, &v);
                Ok(())
            })?;
            needed = flushing && self.cache.values().any(|e| e.dirty_gen == closed);
        }
        if needed {
            let cache = std::mem::take(&mut self.cache);
            let pending = self.pending.as_mut().expect("checked above");
            match pending.frozen.as_mut() {
                // Emptied twice during one flush: the first map holds the
                // marker-time values.
                Some(frozen) => {
                    for (k, e) in cache {
                        frozen.entry(k).or_insert(e);
                    }
                }
                None => pending.frozen = Some(cache),
            }
        } else {
            // The map keeps its allocation for
            // [`reuse_empty`](Self::reuse_empty).
            self.cache.clear();
        }
        let spilled = !self.complete;
        self.dirty_keys.clear();
        self.unsettled_removed.clear();
        self.overshoot_until = 0;
        self.complete = true;
        // Nothing to delete if the table never wrote under its prefix and
        // no pending flush will.
        self.cleared = self.wrote || self.pending.is_some();
        if self.cleared && spilled && self.pending.is_none() && !self.backend.deferring() {
            // A table that spilled writes early as a spill does, so that
            // a query without markers (no checkpoints) drops it too.
            self.flush()?;
        }
        Ok(())
    }

    /// Whether the table holds no entry and has nothing left to write: a
    /// table emptied by [`take_all`](Self::take_all) once its prefix delete
    /// is written (the owner may then drop it). O(cached entries).
    pub fn is_drained(&self) -> bool {
        self.dirty_keys.is_empty()
            && self.pending.is_none()
            && !self.cleared
            && self.cache.values().all(|e| e.value.is_none())
    }

    /// Gives a [drained](Self::is_drained) table a name its backend never
    /// held, as [`new_empty`](Self::new_empty) would, keeping its cache's
    /// allocation: the next window's table starts at the size the last one
    /// reached instead of growing (and rehashing) from nothing. Returns
    /// whether it was drained; otherwise nothing changes.
    pub fn reuse_empty(&mut self, name: &str) -> bool {
        if !self.is_drained() {
            return false;
        }
        self.prefix.clear();
        self.prefix.extend_from_slice(name.as_bytes());
        self.prefix.push(0);
        self.cache.clear();
        self.unsettled_removed.clear();
        self.wrote = false;
        self.cleared_gen = 0;
        self.overshoot_until = 0;
        self.complete = true;
        true
    }

    /// Sets the value under `key`.
    pub fn put(&mut self, key: K, value: V) -> Result<()> {
        if !self.cache.contains_key(&key) {
            self.make_room()?;
        }
        // After making room, which may flush and open a generation.
        let gen = self.gen;
        let entry = self.cache.entry(key.clone()).or_insert(Entry {
            value: None,
            dirty_gen: CLEAN,
        });
        mark_dirty!(self, entry, &key, gen)?;
        entry.value = Some(value);
        Ok(())
    }

    /// Removes the value under `key`.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        self.update(key, |v| *v = None)
    }

    /// Number of entries changed since the last marker.
    pub fn dirty_len(&self) -> usize {
        self.dirty_keys.len()
    }

    /// Whether a flush begun by [`begin_flush`](Self::begin_flush) is not
    /// yet written.
    pub fn is_flushing(&self) -> bool {
        self.pending.is_some()
    }

    /// Writes every dirty entry to the backend as one batch and marks it clean.
    ///
    /// # Errors
    /// [`Error::FlushInProgress`] while a flush begun at a marker is not
    /// finished; backend and codec errors.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_some() {
            return Err(Error::FlushInProgress);
        }
        self.begin_flush()?;
        self.flush_step(usize::MAX)?;
        Ok(())
    }

    /// Closes the current generation at a marker, in O(1): its dirty
    /// entries are to be written by [`flush_step`](Self::flush_step) with
    /// their values as of now, while later changes go to the next
    /// generation. A flush still pending is finished first.
    pub fn begin_flush(&mut self) -> Result<()> {
        if self.pending.is_some() {
            self.flush_step(usize::MAX)?;
        }
        self.refresh_settled();
        if !self.dirty_keys.is_empty() || self.cleared {
            // The next epoch likely dirties as many: start it at that
            // capacity instead of growing (and copying) from empty.
            let cap = self.dirty_keys.len();
            let keys = std::mem::replace(&mut self.dirty_keys, Vec::with_capacity(cap));
            let mut ops = Vec::with_capacity(keys.len() + 1);
            let clears = std::mem::take(&mut self.cleared);
            if clears {
                // Before the entries written since the table was emptied.
                ops.push(WriteOp::DeletePrefix(self.prefix.clone()));
            }
            self.pending = Some(Pending {
                ops,
                keys,
                pos: 0,
                removed: Vec::new(),
                frozen: None,
                clears,
            });
            // What an earlier flush held back is written now.
            self.overshoot_until = 0;
        }
        self.gen += 1;
        Ok(())
    }

    /// Encodes up to `budget` entries of the pending flush; once all are
    /// encoded, writes them to the backend as one batch. Returns whether no
    /// flush is pending any more.
    pub fn flush_step(&mut self, budget: usize) -> Result<bool> {
        let Some(pending) = self.pending.as_mut() else {
            return Ok(true);
        };
        let closed = self.gen - 1;
        let Pending {
            keys,
            pos,
            ops,
            removed,
            frozen,
            ..
        } = pending;
        let end = keys.len().min(pos.saturating_add(budget));
        for k in &keys[*pos..end] {
            // Taken by take_all: the marker-time value, if not yet encoded.
            if let Some(e) = frozen.as_mut().and_then(|f| f.get_mut(k)) {
                if e.dirty_gen == closed {
                    ops.push(encode_op(&self.prefix, k, e.value.as_ref())?);
                    e.dirty_gen = closed | ENCODED;
                }
                continue;
            }
            // Dirty entries are never evicted. An entry of the current
            // generation was encoded when it was changed.
            if let Some(e) = self.cache.get_mut(k) {
                if e.dirty_gen == closed {
                    ops.push(encode_op(&self.prefix, k, e.value.as_ref())?);
                    // Not clean yet: the backend gets it with the batch.
                    e.dirty_gen = closed | ENCODED;
                    if e.value.is_none() {
                        removed.push(k.clone());
                    }
                }
            }
        }
        *pos = end;
        if end < keys.len() {
            return Ok(false);
        }
        let Pending {
            ops,
            removed,
            clears,
            ..
        } = self.pending.take().expect("checked above");
        if clears {
            self.cleared_gen = closed;
        }
        if !ops.is_empty() {
            self.wrote = true;
            self.backend.write_batch(ops)?;
        }
        self.written_gen = closed;
        if !removed.is_empty() {
            self.unsettled_removed.push((closed, removed));
        }
        self.refresh_settled();
        Ok(true)
    }

    /// Notes whether the backend has applied every written flush, and then
    /// drops from the cache the entries those flushes deleted.
    fn refresh_settled(&mut self) {
        if self.settled_gen < self.written_gen && self.backend.settled() {
            self.settled_gen = self.written_gen;
            // Those entries may be evicted now: no need to wait for the
            // overshoot before the next eviction pass.
            self.overshoot_until = 0;
        }
        let settled = self.settled_gen;
        while self
            .unsettled_removed
            .first()
            .is_some_and(|(gen, _)| *gen <= settled)
        {
            let (gen, removed) = self.unsettled_removed.remove(0);
            for k in &removed {
                // Still the delete that flush wrote (not changed since): the
                // backend answers the same, so the entry needs no memory.
                if self
                    .cache
                    .get(k)
                    .is_some_and(|e| e.value.is_none() && e.dirty_gen == gen | ENCODED)
                {
                    self.cache.remove(k);
                }
            }
        }
    }

    /// Keeps the cache within capacity: spills dirty entries (unless a
    /// marker's flush is pending, which writes them, or the backend is
    /// queueing a marker's batches), then evicts entries
    /// the backend has applied down to three quarters of the capacity.
    /// Entries held back (dirty, or written and not yet applied) let the
    /// cache grow a quarter beyond its capacity before the next pass instead
    /// of a scan of the cache at every insert.
    fn make_room(&mut self) -> Result<()> {
        if self.cache.len() < self.capacity.max(self.overshoot_until) {
            return Ok(());
        }
        // No spill while a marker's batches are being queued (another
        // table of the task still flushing): it would join that marker's
        // snapshot. Only written entries are evicted meanwhile.
        if self.pending.is_none() && !self.backend.deferring() {
            self.flush()?;
        }
        self.refresh_settled();
        let mut excess = self.cache.len().saturating_sub(self.capacity * 3 / 4);
        let settled = self.settled_gen;
        let mut evicted_live = false;
        self.cache.retain(|_, e| {
            if excess > 0 && e.is_written(settled) {
                excess -= 1;
                evicted_live |= e.value.is_some();
                false
            } else {
                true
            }
        });
        // The backend now holds entries the cache does not.
        self.complete &= !evicted_live;
        self.overshoot_until = if excess > 0 {
            self.cache.len() + self.capacity / 4 + 1
        } else {
            0
        };
        Ok(())
    }

    /// Visits every entry of the table, in backend key order.
    pub fn for_each(&mut self, visit: impl FnMut(K, V) -> Result<()>) -> Result<()> {
        let scan = self.prefix.clone();
        self.scan(&scan, visit)
    }

    /// Visits, in backend key order, every entry whose key's encoding starts
    /// with the encoding of `key_prefix`. With tuple keys `(A, B)` and
    /// `key_prefix: &A` this visits exactly the entries whose first
    /// component equals the prefix: bincode encodings are self-delimiting,
    /// so one `A`'s encoding is never a prefix of another's.
    pub fn for_each_prefix<P: Serialize + ?Sized>(
        &mut self,
        key_prefix: &P,
        visit: impl FnMut(K, V) -> Result<()>,
    ) -> Result<()> {
        let mut scan = self.prefix.clone();
        codec::encode_into(key_prefix, &mut scan)?;
        self.scan(&scan, visit)
    }

    /// A scan that works at any time, a flush pending or not: the backend's
    /// entries under `scan`, overlaid with the cache's dirty entries (their
    /// values are newer than the backend's, which may still lack the
    /// pending flush). Nothing is written, so a pending flush stays exactly
    /// the marker's state. O(entries in range + dirty entries).
    fn scan(&mut self, scan: &[u8], mut visit: impl FnMut(K, V) -> Result<()>) -> Result<()> {
        let plen = self.prefix.len();
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.refresh_settled();
        // Emptied by take_all and its prefix delete not applied yet: the
        // backend's entries are gone, and the cache holds every live one.
        let emptied = self.cleared
            || self.pending.as_ref().is_some_and(|p| p.clears)
            || self.cleared_gen > self.settled_gen;
        if !emptied {
            self.backend.scan_prefix(scan, &mut |k, v| {
                entries.insert(k.to_vec(), v.to_vec());
                Ok(())
            })?;
        }
        for (k, e) in &self.cache {
            if e.dirty_gen == CLEAN && !emptied {
                continue;
            }
            let mut bk = self.prefix.clone();
            codec::encode_into(k, &mut bk)?;
            if !bk.starts_with(scan) {
                continue;
            }
            match &e.value {
                Some(v) => {
                    entries.insert(bk, codec::encode(v)?);
                }
                None => {
                    entries.remove(&bk);
                }
            }
        }
        for (k, v) in entries {
            visit(codec::decode_body(&k[plen..])?, codec::decode(&v)?)?;
        }
        Ok(())
    }

    /// Flushes, then takes the synchronous part of a snapshot of the backend
    /// (see [`crate::snapshot`]). Use it when this table is the backend's
    /// only user.
    pub fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        self.flush()?;
        self.backend.snapshot()
    }

    /// The backend (to snapshot it after [`flush`](Self::flush)).
    pub fn backend_mut(&mut self) -> &mut dyn StateBackend {
        self.backend.as_mut()
    }

    /// Gives the backend back, flushing first.
    pub fn into_backend(mut self) -> Result<Box<dyn StateBackend>> {
        self.flush()?;
        Ok(self.backend)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod flush_tests;

#[cfg(test)]
mod complete_tests;

#[cfg(test)]
mod take_all_tests;
