//! The stepped flush and the cache's interplay with a backend that queues
//! writes: completed flushes hold their marker's state, and reads never
//! see a queued write's older value.

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

/// While a marker's batch is frozen and not yet applied (the snapshot
/// thread has not taken it), the table answers from its cache for every key
/// that batch wrote, however full the cache gets, and reads other keys
/// without waiting for the batch: before, such a read waited for the
/// snapshot thread (here, which never comes, forever).
#[test]
fn reads_neither_wait_for_nor_miss_an_unapplied_batch() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker_shared = shared.clone();
    let worker = std::thread::spawn(move || {
        let mut t = table(&worker_shared, 8);
        for k in 0..4u64 {
            t.put(k, 5).unwrap();
        }
        t.flush().unwrap();
        // The marker: 0 -> 10, 1 removed, into a queued batch, frozen.
        t.put(0, 10).unwrap();
        t.remove(&1).unwrap();
        worker_shared.defer_writes();
        t.begin_flush().unwrap();
        assert!(t.flush_step(usize::MAX).unwrap());
        let frozen = worker_shared.freeze();
        assert!(!worker_shared.settled());
        // Reads of 40 absent keys fill the cache far past its capacity of
        // 8: evictions, but not of 0 and 1, whose writes are unapplied.
        for k in 100..140u64 {
            assert_eq!(t.get(&k).unwrap(), None);
        }
        assert_eq!(t.get(&0).unwrap(), Some(&10));
        assert_eq!(t.get(&1).unwrap(), None);
        assert_eq!(t.get(&2).unwrap(), Some(&5));
        // The snapshot thread's part: apply and snapshot.
        frozen.take().unwrap();
        assert!(worker_shared.settled());
        // Once applied, the deleted key leaves the cache at the next marker.
        assert!(t.cache.contains_key(&1));
        t.begin_flush().unwrap();
        assert!(!t.cache.contains_key(&1));
        assert_eq!(t.get(&1).unwrap(), None);
        assert_eq!(t.get(&0).unwrap(), Some(&10));
        done_tx.send(()).unwrap();
    });
    // A read that waited for the batch would never return: fail instead of
    // hanging the test run.
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(60));
    assert!(
        finished.is_ok(),
        "a read waited for the unapplied batch (or the thread failed)"
    );
    worker.join().unwrap();
    let mut expected: BTreeMap<u64, u64> = (0..4).map(|k| (k, 5)).collect();
    expected.insert(0, 10);
    expected.remove(&1);
    assert_eq!(backend_contents(&shared), expected);
}

/// `update_existing` runs only for a key with a value, and leaves an
/// absent key clean (nothing for the next flush to write).
#[test]
fn update_existing_touches_present_keys_only() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t = table(&shared, 8);
    t.put(1, 10).unwrap();
    t.flush().unwrap();
    assert_eq!(t.update_existing(&2, |_| unreachable!()).unwrap(), None);
    assert_eq!(t.dirty_len(), 0, "an absent key is not marked dirty");
    let seen = t
        .update_existing(&1, |v| {
            let old = *v.as_ref().unwrap();
            *v = None;
            old
        })
        .unwrap();
    assert_eq!(seen, Some(10));
    assert_eq!(t.dirty_len(), 1);
    t.flush().unwrap();
    assert!(backend_contents(&shared).is_empty());
    // Read back from the backend when not cached.
    let mut fresh = table(&shared, 8);
    assert_eq!(fresh.update_existing(&1, |_| ()).unwrap(), None);
}

/// Two tables of one task: while the first one's marker batch is queued
/// (the backend defers writes until the freeze), the second one, which
/// had nothing to flush at the marker, fills its cache past capacity. It
/// must not spill then: its post-marker values would join the marker's
/// snapshot.
#[test]
fn no_spill_joins_a_marker_batch() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut a = table(&shared, 1024);
    let mut b: KeyedTable<u64, u64> =
        KeyedTable::new(Box::new(shared.clone()), "b").with_cache_capacity(4);
    for k in 0..10u64 {
        a.put(k, k).unwrap();
    }
    shared.defer_writes();
    a.begin_flush().unwrap();
    b.begin_flush().unwrap();
    assert!(!a.flush_step(3).unwrap());
    // After the marker: b fills past its capacity.
    for k in 0..40u64 {
        b.put(k, 1).unwrap();
    }
    assert!(a.flush_step(usize::MAX).unwrap());
    shared.freeze().take().unwrap();
    let mut of_b = 0;
    shared
        .scan_prefix(b"b\0", &mut |_, _| {
            of_b += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        of_b, 0,
        "b's post-marker entries are in the marker's snapshot"
    );
    assert_eq!(backend_contents(&shared).len(), 10);
    for k in 0..40u64 {
        assert_eq!(b.get(&k).unwrap(), Some(&1));
    }
}
