//! A typed keyed state table with an in-memory cache in front of a
//! [`StateBackend`].
//!
//! # Invariants
//! - A cached entry is either *clean* (equal to what the backend holds) or
//!   *dirty* (changed since the last [`KeyedTable::flush`]).
//! - [`KeyedTable::flush`] writes every dirty entry to the backend as one
//!   atomic batch; after it the backend alone holds the table's full contents.
//!   The runtime calls it at every epoch marker, just before the backend is
//!   snapshotted.
//! - When the cache holds more than its capacity, dirty entries are written
//!   early and clean entries are evicted, so state larger than memory works.
//!   Writing early is safe: every record that changed them precedes the next
//!   marker, so they belong to the next snapshot anyway.
//!
//! Keys are stored as `table prefix ++ bincode(key)`; values as versioned
//! [`codec`] frames.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{StateBackend, WriteOp};
use crate::codec;
use crate::error::Result;
use crate::snapshot::SnapshotJob;

/// Default number of cached entries per table.
pub const DEFAULT_CACHE_CAPACITY: usize = 1 << 20;

struct Entry<V> {
    /// `None`: known to be absent (a pending delete when dirty).
    value: Option<V>,
    dirty: bool,
}

/// A typed key -> value table of one operator instance.
pub struct KeyedTable<K, V> {
    backend: Box<dyn StateBackend>,
    prefix: Vec<u8>,
    cache: HashMap<K, Entry<V>>,
    capacity: usize,
    /// Keys of the dirty entries, so a flush touches only those.
    dirty_keys: Vec<K>,
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
            cache: HashMap::new(),
            capacity: DEFAULT_CACHE_CAPACITY,
            dirty_keys: Vec::new(),
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

    fn load(&mut self, key: &K) -> Result<()> {
        if self.cache.contains_key(key) {
            return Ok(());
        }
        let bk = self.backend_key(key)?;
        let value = match self.backend.get(&bk)? {
            Some(bytes) => Some(codec::decode(&bytes)?),
            None => None,
        };
        self.make_room()?;
        self.cache.insert(
            key.clone(),
            Entry {
                value,
                dirty: false,
            },
        );
        Ok(())
    }

    /// The value under `key`, if any.
    pub fn get(&mut self, key: &K) -> Result<Option<&V>> {
        self.load(key)?;
        Ok(self.cache.get(key).and_then(|e| e.value.as_ref()))
    }

    /// Read-modify-write of the value under `key`: `f` sees the current value
    /// (or `None`) and may change, set or clear it. Returns what `f` returns.
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut Option<V>) -> R) -> Result<R> {
        if !self.cache.contains_key(key) {
            self.load(key)?;
        }
        let entry = self.cache.get_mut(key).expect("entry loaded above");
        if !entry.dirty {
            entry.dirty = true;
            self.dirty_keys.push(key.clone());
        }
        Ok(f(&mut entry.value))
    }

    /// Sets the value under `key`.
    pub fn put(&mut self, key: K, value: V) -> Result<()> {
        self.make_room()?;
        let entry = self.cache.entry(key.clone()).or_insert(Entry {
            value: None,
            dirty: false,
        });
        if !entry.dirty {
            entry.dirty = true;
            self.dirty_keys.push(key);
        }
        entry.value = Some(value);
        Ok(())
    }

    /// Removes the value under `key`.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        self.update(key, |v| *v = None)
    }

    /// Number of dirty (unflushed) entries.
    pub fn dirty_len(&self) -> usize {
        self.dirty_keys.len()
    }

    /// Writes every dirty entry to the backend as one batch and marks it clean.
    pub fn flush(&mut self) -> Result<()> {
        if self.dirty_keys.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(self.dirty_keys.len());
        for k in &self.dirty_keys {
            // Dirty entries are never evicted (eviction flushes first).
            let Some(e) = self.cache.get(k) else { continue };
            let mut bk = self.prefix.clone();
            codec::encode_into(k, &mut bk)?;
            ops.push(match &e.value {
                Some(v) => WriteOp::Put(bk, codec::encode(v)?),
                None => WriteOp::Delete(bk),
            });
        }
        self.backend.write_batch(ops)?;
        for k in std::mem::take(&mut self.dirty_keys) {
            if let Some(e) = self.cache.get_mut(&k) {
                e.dirty = false;
            }
        }
        Ok(())
    }

    /// Keeps the cache within capacity: spills dirty entries, then evicts
    /// clean ones down to three quarters of the capacity.
    fn make_room(&mut self) -> Result<()> {
        if self.cache.len() < self.capacity {
            return Ok(());
        }
        self.flush()?;
        let keep = self.capacity * 3 / 4;
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

    /// Visits every entry of the table (flushes first, then scans the backend).
    pub fn for_each(&mut self, mut visit: impl FnMut(K, V) -> Result<()>) -> Result<()> {
        self.flush()?;
        let plen = self.prefix.len();
        self.backend.scan_prefix(&self.prefix, &mut |k, v| {
            let key: K = codec::decode_body(&k[plen..])?;
            let value: V = codec::decode(v)?;
            visit(key, value)
        })
    }

    /// Visits, in backend key order, every entry whose key's encoding starts
    /// with the encoding of `key_prefix` (flushes first). With tuple keys
    /// `(A, B)` and `key_prefix: &A` this visits exactly the entries whose
    /// first component equals the prefix: bincode encodings are
    /// self-delimiting, so one `A`'s encoding is never a prefix of another's.
    pub fn for_each_prefix<P: Serialize + ?Sized>(
        &mut self,
        key_prefix: &P,
        mut visit: impl FnMut(K, V) -> Result<()>,
    ) -> Result<()> {
        self.flush()?;
        let plen = self.prefix.len();
        let mut scan = self.prefix.clone();
        codec::encode_into(key_prefix, &mut scan)?;
        self.backend.scan_prefix(&scan, &mut |k, v| {
            let key: K = codec::decode_body(&k[plen..])?;
            let value: V = codec::decode(v)?;
            visit(key, value)
        })
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
