//! Map state: per key, a map of user keys to values (e.g. per user, the
//! sessions by id), kept in one [`KeyedTable`] under composite keys.
//!
//! # Invariants
//! - Entry `(key, user_key) -> value` is stored under
//!   `table prefix ++ bincode(key) ++ bincode(user_key)`, so the whole map of
//!   one key is one contiguous key range of the backend, scanned by prefix.
//! - Caching, dirty tracking, spilling and snapshots are the
//!   [`KeyedTable`]'s; see there.
//!
//! List state needs no type of its own: a `KeyedTable<K, Vec<V>>` appends
//! with `update(&k, |l| l.get_or_insert_with(Vec::new).push(v))`.

use std::hash::Hash;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::StateBackend;
use crate::error::Result;
use crate::snapshot::SnapshotJob;
use crate::table::KeyedTable;

/// Per key, a map of user keys to values.
pub struct MapTable<K, UK, V> {
    table: KeyedTable<(K, UK), V>,
}

impl<K, UK, V> MapTable<K, UK, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    UK: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A map table named `name` over `backend`.
    pub fn new(backend: Box<dyn StateBackend>, name: &str) -> Self {
        Self {
            table: KeyedTable::new(backend, name),
        }
    }

    /// Sets how many entries the cache may hold before spilling.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.table = self.table.with_cache_capacity(capacity);
        self
    }

    /// The underlying table (flushing is the runtime's, through
    /// [`ManagedState`](crate::ManagedState)).
    pub fn table_mut(&mut self) -> &mut KeyedTable<(K, UK), V> {
        &mut self.table
    }

    /// The value under `(key, user_key)`.
    pub fn get(&mut self, key: &K, user_key: &UK) -> Result<Option<&V>> {
        self.table.get(&(key.clone(), user_key.clone()))
    }

    /// Sets the value under `(key, user_key)`.
    pub fn put(&mut self, key: K, user_key: UK, value: V) -> Result<()> {
        self.table.put((key, user_key), value)
    }

    /// Removes the value under `(key, user_key)`.
    pub fn remove(&mut self, key: &K, user_key: &UK) -> Result<()> {
        self.table.remove(&(key.clone(), user_key.clone()))
    }

    /// Visits every `(user_key, value)` of `key`.
    pub fn for_each_in(
        &mut self,
        key: &K,
        mut visit: impl FnMut(UK, V) -> Result<()>,
    ) -> Result<()> {
        self.table
            .for_each_prefix(key, |(_, user_key), value| visit(user_key, value))
    }

    /// Writes every dirty entry to the backend as one batch.
    pub fn flush(&mut self) -> Result<()> {
        self.table.flush()
    }

    /// Flushes, then takes the synchronous part of a snapshot.
    pub fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        self.table.snapshot()
    }

    /// Gives the backend back, flushing first.
    pub fn into_backend(self) -> Result<Box<dyn StateBackend>> {
        self.table.into_backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn maps_of_different_keys_stay_apart() {
        let mut m: MapTable<String, u32, String> =
            MapTable::new(Box::new(MemoryBackend::new()), "sessions").with_cache_capacity(2);
        // Keys whose strings are prefixes of each other.
        m.put("a".into(), 1, "a1".into()).unwrap();
        m.put("ab".into(), 1, "ab1".into()).unwrap();
        m.put("a".into(), 300, "a300".into()).unwrap();
        m.put("a".into(), 2, "a2".into()).unwrap();
        m.remove(&"a".into(), &2).unwrap();
        let mut seen = Vec::new();
        m.for_each_in(&"a".into(), |uk, v| {
            seen.push((uk, v));
            Ok(())
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, vec![(1, "a1".into()), (300, "a300".into())]);
        assert_eq!(
            m.get(&"ab".into(), &1).unwrap().map(String::as_str),
            Some("ab1")
        );
        assert_eq!(m.get(&"b".into(), &1).unwrap(), None);
    }

    #[test]
    fn list_state_is_a_keyed_table_of_vectors() {
        let mut l: KeyedTable<u64, Vec<u32>> = KeyedTable::new(Box::new(MemoryBackend::new()), "l");
        for v in [3, 1, 2] {
            l.update(&7, |list| list.get_or_insert_with(Vec::new).push(v))
                .unwrap();
        }
        l.flush().unwrap();
        assert_eq!(l.get(&7).unwrap(), Some(&vec![3, 1, 2]));
    }
}
