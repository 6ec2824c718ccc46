//! A memory table sink: the latest value per key, readable while the query
//! runs (Spark's memory sink in update mode).
//!
//! Each record `(key, value)` is an upsert: the table keeps one value per
//! key, so its memory grows with the number of distinct keys, never with
//! the number of updates or with run time. This is the in-memory sink for
//! a long-running query; [`CollectSink`](crate::CollectSink) keeps every
//! update and is meant for tests and bounded inputs.
//!
//! # Visibility and delivery
//! An update is visible as soon as the sink writes it (microseconds after
//! the record reached the sink), in every trigger mode. Upserts are
//! idempotent: after a restart from a checkpoint the replayed updates
//! overwrite the same keys with the same values, so the table converges to
//! the exact answer (the table itself lives in memory and does not survive
//! the process).
//!
//! # Ordering
//! A key's updates must reach one sink instance, in order: feed the sink
//! from a keyed operator (`key_by(..).count()`, `.aggregate(..)`) at the
//! same parallelism, so the records go forward on one edge per instance.
//! Instances share the table (clones share it), one lock per batch.
//!
//! ```
//! use eddy_connectors::{TableSink, VecSource};
//! use eddy_runtime::Pipeline;
//!
//! let table = TableSink::<String, u64>::new();
//! let pipeline = Pipeline::new();
//! pipeline
//!     .source("words", VecSource::new(vec![("a".to_string(), 1u64)]))
//!     .sink("table", table.clone());
//! // While the query runs: table.get(&"a".to_string()), table.len(), ...
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use eddy_runtime::{OperatorError, Record, Sink};

/// The latest value per key (see the [module docs](self)). Clones share
/// the same table: keep one to read it while and after the query runs.
pub struct TableSink<K, V> {
    table: Arc<RwLock<HashMap<K, V>>>,
    updates: Arc<AtomicU64>,
}

impl<K, V> Clone for TableSink<K, V> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            updates: self.updates.clone(),
        }
    }
}

impl<K, V> Default for TableSink<K, V> {
    fn default() -> Self {
        Self {
            table: Arc::new(RwLock::new(HashMap::new())),
            updates: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<K: Eq + Hash, V> TableSink<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest value of `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.read(|t| t.get(key).cloned())
    }

    /// Runs `f` on the table as it is now (no copy; writers wait meanwhile,
    /// so keep `f` short).
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<K, V>) -> R) -> R {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        f(&table)
    }

    /// A copy of the table as it is now.
    pub fn snapshot(&self) -> HashMap<K, V>
    where
        K: Clone,
        V: Clone,
    {
        self.read(HashMap::clone)
    }

    /// Keys in the table.
    pub fn len(&self) -> usize {
        self.read(HashMap::len)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Updates written so far (every record, including those that replaced
    /// an older value).
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }
}

impl<K, V> Sink<(K, V)> for TableSink<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn write(&mut self, records: Vec<Record<(K, V)>>) -> Result<(), OperatorError> {
        let n = records.len() as u64;
        // A panic elsewhere while holding the lock leaves whole entries
        // (each insert is one call): the table stays usable.
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for r in records {
            let (k, v) = r.value;
            table.insert(k, v);
        }
        drop(table);
        self.updates.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(v: &[(&str, u64)]) -> Vec<Record<(String, u64)>> {
        v.iter()
            .map(|&(k, n)| Record::new((k.to_string(), n)))
            .collect()
    }

    #[test]
    fn keeps_the_latest_value_per_key() {
        let table = TableSink::<String, u64>::new();
        let mut sink = table.clone();
        sink.write(recs(&[("a", 1), ("b", 1), ("a", 2)])).unwrap();
        sink.write(recs(&[("a", 3)])).unwrap();
        assert_eq!(table.get("a"), Some(3));
        assert_eq!(table.get("b"), Some(1));
        assert_eq!(table.get("c"), None);
        assert_eq!(table.len(), 2);
        assert_eq!(table.updates(), 4);
        let mut rows: Vec<_> = table.snapshot().into_iter().collect();
        rows.sort();
        assert_eq!(rows, vec![("a".to_string(), 3), ("b".to_string(), 1)]);
    }

    #[test]
    fn memory_follows_the_keys_not_the_updates() {
        let table = TableSink::<u64, u64>::new();
        let mut sink = table.clone();
        for round in 1..=100u64 {
            let batch = (0..1_000u64).map(|k| Record::new((k, round))).collect();
            sink.write(batch).unwrap();
        }
        assert_eq!(table.len(), 1_000);
        assert_eq!(table.updates(), 100_000);
        assert!(table.read(|t| t.values().all(|&v| v == 100)));
    }
}
