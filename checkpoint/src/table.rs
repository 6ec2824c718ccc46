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
//!   cache evicts only entries the backend already holds, and may exceed
//!   its capacity by what the pending flush holds back); [`KeyedTable::flush`]
//!   refuses with [`Error::FlushInProgress`](crate::Error::FlushInProgress),
//!   since a write then would mix post-marker values into the marker's
//!   snapshot. Point reads and scans work at any time: scans overlay the
//!   backend with the cache's dirty entries and write nothing.
//!
//! Keys are stored as `table prefix ++ bincode(key)`; values as versioned
//! [`codec`] frames.

use std::collections::{BTreeMap, HashMap};
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
    /// Whether the backend holds this entry's value, so it may be evicted.
    fn is_written(&self, written_gen: u64) -> bool {
        self.dirty_gen == CLEAN
            || (self.dirty_gen & ENCODED != 0 && self.dirty_gen & !ENCODED <= written_gen)
    }
}

/// A flush begun at a marker and not yet written.
struct Pending<K> {
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
    pending: Option<Pending<K>>,
    /// The newest generation whose flush is written to the backend.
    written_gen: u64,
    /// While a flush is pending and the cache cannot shrink, the size up to
    /// which it may grow before the next eviction pass.
    overshoot_until: usize,
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

impl<K, V> KeyedTable<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A table named `name` (its key prefix in the backend) over `backend`.
    pub fn new(backend: Box<dyn StateBackend>, name: &str) -> Self {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        Self {
            backend,
            prefix,
            cache: HashMap::default(),
            capacity: DEFAULT_CACHE_CAPACITY,
            gen: 1,
            dirty_keys: Vec::new(),
            pending: None,
            written_gen: 0,
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

    /// Reads `key` from the backend and makes room to cache it.
    fn read(&mut self, key: &K) -> Result<Option<V>> {
        let bk = self.backend_key(key)?;
        let value = match self.backend.get(&bk)? {
            Some(bytes) => Some(codec::decode(&bytes)?),
            None => None,
        };
        self.make_room()?;
        Ok(value)
    }

    /// Marks a cached entry of `key` dirty in generation `gen`; a pending
    /// entry first gives its marker-time value to the pending batch (copy
    /// on write). Takes the fields it needs, not `self`, so the caller keeps
    /// the entry it looked up (one hash lookup per update).
    fn mark_dirty(
        entry: &mut Entry<V>,
        key: &K,
        gen: u64,
        pending: &mut Option<Pending<K>>,
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

    /// The value under `key`, if any.
    pub fn get(&mut self, key: &K) -> Result<Option<&V>> {
        if !self.cache.contains_key(key) {
            let value = self.read(key)?;
            self.cache.insert(
                key.clone(),
                Entry {
                    value,
                    dirty_gen: CLEAN,
                },
            );
        }
        Ok(self.cache.get(key).and_then(|e| e.value.as_ref()))
    }

    /// Read-modify-write of the value under `key`: `f` sees the current value
    /// (or `None`) and may change, set or clear it. Returns what `f` returns.
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut Option<V>) -> R) -> Result<R> {
        let gen = self.gen;
        // One lookup when the key is cached (the common case), two when it
        // is read from the backend.
        if let Some(entry) = self.cache.get_mut(key) {
            if entry.dirty_gen != gen {
                Self::mark_dirty(
                    entry,
                    key,
                    gen,
                    &mut self.pending,
                    &self.prefix,
                    &mut self.dirty_keys,
                )?;
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
        Self::mark_dirty(
            entry,
            key,
            gen,
            &mut self.pending,
            &self.prefix,
            &mut self.dirty_keys,
        )?;
        Ok(f(&mut entry.value))
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
        Self::mark_dirty(
            entry,
            &key,
            gen,
            &mut self.pending,
            &self.prefix,
            &mut self.dirty_keys,
        )?;
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
        if !self.dirty_keys.is_empty() {
            // The next epoch likely dirties as many: start it at that
            // capacity instead of growing (and copying) from empty.
            let cap = self.dirty_keys.len();
            let keys = std::mem::replace(&mut self.dirty_keys, Vec::with_capacity(cap));
            self.pending = Some(Pending {
                ops: Vec::with_capacity(keys.len()),
                keys,
                pos: 0,
                removed: Vec::new(),
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
        let end = pending.keys.len().min(pending.pos.saturating_add(budget));
        for k in &pending.keys[pending.pos..end] {
            // Dirty entries are never evicted. An entry of the current
            // generation was encoded when it was changed.
            if let Some(e) = self.cache.get_mut(k) {
                if e.dirty_gen == closed {
                    pending
                        .ops
                        .push(encode_op(&self.prefix, k, e.value.as_ref())?);
                    // Not clean yet: the backend gets it with the batch.
                    e.dirty_gen = closed | ENCODED;
                    if e.value.is_none() {
                        pending.removed.push(k.clone());
                    }
                }
            }
        }
        pending.pos = end;
        if end < pending.keys.len() {
            return Ok(false);
        }
        let Pending { ops, removed, .. } = self.pending.take().expect("checked above");
        if !ops.is_empty() {
            self.backend.write_batch(ops)?;
        }
        self.written_gen = closed;
        for k in &removed {
            // Still the delete this batch wrote (not changed since): the
            // backend answers the same, so the entry needs no memory.
            if self
                .cache
                .get(k)
                .is_some_and(|e| e.value.is_none() && e.dirty_gen == closed | ENCODED)
            {
                self.cache.remove(k);
            }
        }
        Ok(true)
    }

    /// Keeps the cache within capacity: spills dirty entries, then evicts
    /// clean ones down to three quarters of the capacity. While a flush is
    /// pending nothing may be written, so only clean entries are evicted.
    fn make_room(&mut self) -> Result<()> {
        if self.cache.len() < self.capacity {
            return Ok(());
        }
        let keep = self.capacity * 3 / 4;
        if self.pending.is_some() {
            if self.cache.len() < self.overshoot_until {
                return Ok(());
            }
            let mut excess = self.cache.len().saturating_sub(keep);
            let written = self.written_gen;
            self.cache.retain(|_, e| {
                if excess > 0 && e.is_written(written) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
            // Entries held back by the flush: grow a quarter before the next
            // pass instead of scanning the cache at every insert.
            self.overshoot_until = self.cache.len() + self.capacity / 4 + 1;
            return Ok(());
        }
        self.flush()?;
        let mut excess = self.cache.len().saturating_sub(keep);
        self.cache.retain(|_, _| {
            if excess > 0 {
                excess -= 1;
                false
            } else {
                true
            }
        });
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
        self.backend.scan_prefix(scan, &mut |k, v| {
            entries.insert(k.to_vec(), v.to_vec());
            Ok(())
        })?;
        for (k, e) in &self.cache {
            if e.dirty_gen == CLEAN {
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
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    /// Entries whose delete a flush wrote leave the cache (it holds live
    /// entries only); one changed again after the marker stays, and every
    /// key reads back as the backend and the cache agree.
    #[test]
    fn removed_entries_leave_the_cache_once_their_delete_is_written() {
        let mut t: KeyedTable<u64, u64> = KeyedTable::new(Box::new(MemoryBackend::new()), "w");
        for k in 0..100 {
            t.update(&k, |v| *v = Some(k)).unwrap();
        }
        t.flush().unwrap();
        for k in 0..50 {
            t.remove(&k).unwrap();
        }
        t.remove(&60).unwrap();
        t.update(&60, |v| *v = Some(1)).unwrap();
        t.remove(&80).unwrap();
        t.begin_flush().unwrap();
        // After the marker: 80 is set again before its delete is encoded
        // (copy on write), 90 is removed in the next epoch.
        t.update(&80, |v| *v = Some(5)).unwrap();
        t.remove(&90).unwrap();
        while !t.flush_step(7).unwrap() {}
        assert_eq!(t.cache.len(), 50, "0..50 dropped; 80 and 90 kept");
        for k in 0..50 {
            assert_eq!(t.get(&k).unwrap(), None);
        }
        assert_eq!(t.get(&60).unwrap(), Some(&1));
        assert_eq!(t.get(&80).unwrap(), Some(&5));
        assert_eq!(t.get(&90).unwrap(), None);
        t.flush().unwrap();
        let mut left = 0;
        t.for_each(|_, _| {
            left += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(left, 49, "50..100 less 90");
    }

    #[test]
    fn update_flush_and_reread() {
        let mut t: KeyedTable<String, u64> = KeyedTable::new(Box::new(MemoryBackend::new()), "c");
        for w in ["a", "b", "a", "c", "a"] {
            t.update(&w.to_string(), |v| *v = Some(v.unwrap_or(0) + 1))
                .unwrap();
        }
        assert_eq!(t.dirty_len(), 3);
        t.flush().unwrap();
        assert_eq!(t.dirty_len(), 0);
        let mut all = Vec::new();
        t.for_each(|k, v| {
            all.push((k, v));
            Ok(())
        })
        .unwrap();
        all.sort();
        assert_eq!(all, vec![("a".into(), 3), ("b".into(), 1), ("c".into(), 1)]);
    }

    #[test]
    fn state_larger_than_cache_spills_and_reads_back() {
        let mut t: KeyedTable<u64, u64> =
            KeyedTable::new(Box::new(MemoryBackend::new()), "big").with_cache_capacity(64);
        for round in 0..3u64 {
            for k in 0..1000u64 {
                t.update(&k, |v| *v = Some(v.unwrap_or(0) + k + round))
                    .unwrap();
            }
        }
        t.remove(&5).unwrap();
        for k in 0..1000u64 {
            let expect = if k == 5 { None } else { Some(3 * k + 3) };
            assert_eq!(t.get(&k).unwrap().copied(), expect, "key {k}");
        }
        let mut n = 0;
        t.for_each(|_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 999);
    }
}

#[cfg(test)]
mod flush_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::backend::{MemoryBackend, SharedBackend};

    /// Everything the backend holds, decoded.
    fn backend_contents(b: &SharedBackend) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        b.scan_prefix(b"t\0", &mut |k, v| {
            out.insert(codec::decode_body(&k[2..])?, codec::decode(v)?);
            Ok(())
        })
        .unwrap();
        out
    }

    fn table(shared: &SharedBackend, capacity: usize) -> KeyedTable<u64, u64> {
        KeyedTable::new(Box::new(shared.clone()), "t").with_cache_capacity(capacity)
    }

    #[test]
    fn a_pending_flush_writes_the_values_as_of_its_marker() {
        let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        let mut t = table(&shared, 1024);
        for k in 0..10u64 {
            t.put(k, k).unwrap();
        }
        t.begin_flush().unwrap();
        assert!(t.is_flushing());
        assert_eq!(t.dirty_len(), 0, "the dirty keys moved to the flush");
        // Changed before and after their turn in the flush.
        t.update(&2, |v| *v = Some(100)).unwrap();
        assert!(!t.flush_step(5).unwrap());
        t.update(&8, |v| *v = None).unwrap();
        t.put(50, 50).unwrap();
        assert!(backend_contents(&shared).is_empty(), "nothing written yet");
        assert!(matches!(t.flush(), Err(Error::FlushInProgress)));
        // A scan sees the live values, and writes nothing.
        let mut live = BTreeMap::new();
        t.for_each(|k, v| {
            live.insert(k, v);
            Ok(())
        })
        .unwrap();
        let mut want: BTreeMap<u64, u64> = (0..10).map(|k| (k, k)).collect();
        want.insert(2, 100);
        want.remove(&8);
        want.insert(50, 50);
        assert_eq!(live, want);
        assert!(
            backend_contents(&shared).is_empty(),
            "the scan wrote nothing"
        );
        assert!(t.flush_step(5).unwrap());
        let at_marker: BTreeMap<u64, u64> = (0..10).map(|k| (k, k)).collect();
        assert_eq!(backend_contents(&shared), at_marker);
        // The table reads the live values; the next flush writes them.
        assert_eq!(t.get(&2).unwrap(), Some(&100));
        assert_eq!(t.get(&8).unwrap(), None);
        assert_eq!(t.dirty_len(), 3);
        t.flush().unwrap();
        let mut now = at_marker;
        now.insert(2, 100);
        now.remove(&8);
        now.insert(50, 50);
        assert_eq!(backend_contents(&shared), now);
    }

    /// The cache grows past its capacity during a pending flush only by
    /// what that flush holds back, not by what an earlier flush did.
    #[test]
    fn a_later_flush_does_not_inherit_an_earlier_overshoot() {
        let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        let mut t = table(&shared, 8);
        for k in 0..8u64 {
            t.put(k, k).unwrap();
        }
        // A flush holds back its 8 entries and 16 changed meanwhile.
        t.begin_flush().unwrap();
        for k in 100..116u64 {
            t.put(k, k).unwrap();
        }
        assert!(t.cache.len() >= 24);
        assert!(t.flush_step(usize::MAX).unwrap());
        // The next insert spills everything written; one entry is dirty at
        // the next marker.
        t.put(50, 50).unwrap();
        assert!(t.cache.len() <= 8);
        t.begin_flush().unwrap();
        assert!(t.is_flushing());
        // Reads of absent keys: every entry but one can be evicted.
        for k in 200..240u64 {
            assert_eq!(t.get(&k).unwrap(), None);
            assert!(t.cache.len() <= 8 + 8 / 4 + 1, "cache at {}", t.cache.len());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u64, u64),
        Remove(u64),
        Marker,
        Step(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..40u64, 1..5u64).prop_map(|(k, d)| Op::Add(k, d)),
            1 => (0..40u64).prop_map(Op::Remove),
            1 => Just(Op::Marker),
            2 => (1..8usize).prop_map(Op::Step),
        ]
    }

    proptest! {
        /// Whatever the interleaving of updates, markers and flush steps,
        /// and however small the cache: each completed flush leaves the
        /// backend holding exactly the table as of its marker, and reads
        /// always see the live values.
        #[test]
        fn completed_flushes_hold_the_marker_state(
            ops in proptest::collection::vec(op(), 1..300),
            capacity in 2..64usize,
        ) {
            let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
            let mut t = table(&shared, capacity);
            let mut live: BTreeMap<u64, u64> = BTreeMap::new();
            let mut at_marker: Option<BTreeMap<u64, u64>> = None;
            for op in ops {
                match op {
                    Op::Add(k, d) => {
                        t.update(&k, |v| *v = Some(v.unwrap_or(0) + d)).unwrap();
                        *live.entry(k).or_default() += d;
                    }
                    Op::Remove(k) => {
                        t.remove(&k).unwrap();
                        live.remove(&k);
                    }
                    Op::Marker => {
                        if let Some(expected) = at_marker.take() {
                            // begin_flush finishes the previous flush first.
                            t.flush_step(usize::MAX).unwrap();
                            prop_assert_eq!(&backend_contents(&shared), &expected);
                        }
                        t.begin_flush().unwrap();
                        if t.is_flushing() {
                            at_marker = Some(live.clone());
                        } else {
                            // Nothing was dirty: the backend already holds it.
                            prop_assert_eq!(&backend_contents(&shared), &live);
                        }
                    }
                    Op::Step(budget) => {
                        if t.flush_step(budget).unwrap() {
                            if let Some(expected) = at_marker.take() {
                                prop_assert_eq!(&backend_contents(&shared), &expected);
                            }
                        }
                    }
                }
            }
            for (k, v) in &live {
                prop_assert_eq!(t.get(k).unwrap(), Some(v));
            }
        }
    }
}
