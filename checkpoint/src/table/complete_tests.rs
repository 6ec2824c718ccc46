//! A table that holds every entry of its backend in its cache answers a
//! miss without reading the backend, and only while that is true.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::KeyedTable;
use crate::backend::{MemoryBackend, ScanVisitor, StateBackend, WriteOp};
use crate::error::Result;
use crate::snapshot::SnapshotJob;

/// A memory backend that counts point reads.
struct Counting {
    inner: MemoryBackend,
    gets: Arc<AtomicUsize>,
}

impl StateBackend for Counting {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        self.inner.write_batch(ops)
    }
    fn scan_prefix(&self, prefix: &[u8], visit: &mut ScanVisitor<'_>) -> Result<()> {
        self.inner.scan_prefix(prefix, visit)
    }
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        self.inner.snapshot()
    }
}

fn counting(inner: MemoryBackend) -> (Box<dyn StateBackend>, Arc<AtomicUsize>) {
    let gets = Arc::new(AtomicUsize::new(0));
    let b = Counting {
        inner,
        gets: gets.clone(),
    };
    (Box::new(b), gets)
}

/// Fresh: no read at all, through flushes and removals; after the first
/// eviction of a live entry, misses read the backend, and every key still
/// reads back right.
#[test]
fn a_fresh_table_reads_nothing_until_it_evicts() {
    let (backend, gets) = counting(MemoryBackend::new());
    let mut t: KeyedTable<u64, u64> = KeyedTable::new(backend, "t").with_cache_capacity(64);
    assert!(t.is_complete());
    for k in 0..60u64 {
        t.update(&k, |v| *v = Some(v.unwrap_or(0) + k)).unwrap();
    }
    t.flush().unwrap();
    for k in 0..30u64 {
        t.remove(&k).unwrap();
    }
    t.flush().unwrap();
    for k in 0..60u64 {
        let expect = (k >= 30).then_some(k);
        assert_eq!(t.get(&k).unwrap().copied(), expect, "key {k}");
    }
    assert_eq!(gets.load(Ordering::Relaxed), 0, "no read while complete");
    assert!(t.is_complete());
    // Past the capacity: live entries are evicted.
    for k in 100..400u64 {
        t.update(&k, |v| *v = Some(k)).unwrap();
    }
    assert!(!t.is_complete(), "a live entry was evicted");
    let before = gets.load(Ordering::Relaxed);
    for k in (30..60u64).chain(100..400) {
        assert_eq!(t.get(&k).unwrap().copied(), Some(k), "key {k}");
    }
    assert!(
        gets.load(Ordering::Relaxed) > before,
        "misses read the backend"
    );
}

/// A table opened over a backend that holds its entries reads them; one
/// whose name has no entries there is complete.
#[test]
fn a_table_over_its_old_entries_reads_them() {
    let mut old: KeyedTable<u64, u64> = KeyedTable::new(Box::new(MemoryBackend::new()), "a");
    old.put(7, 70).unwrap();
    let mut mem = MemoryBackend::new();
    let backend = old.into_backend().unwrap();
    backend
        .scan_prefix(b"", &mut |k, v| {
            mem.write_batch(vec![WriteOp::Put(k.to_vec(), v.to_vec())])
        })
        .unwrap();
    let (backend, gets) = counting(mem.clone());
    let mut a: KeyedTable<u64, u64> = KeyedTable::new(backend, "a");
    assert!(!a.is_complete());
    assert_eq!(a.get(&7).unwrap(), Some(&70));
    assert_eq!(a.get(&8).unwrap(), None);
    assert_eq!(gets.load(Ordering::Relaxed), 2);
    let (backend, gets) = counting(mem);
    let mut b: KeyedTable<u64, u64> = KeyedTable::new(backend, "b");
    assert!(b.is_complete(), "table `a`'s entries are not `b`'s");
    assert_eq!(b.get(&7).unwrap(), None);
    assert_eq!(gets.load(Ordering::Relaxed), 0);
}
