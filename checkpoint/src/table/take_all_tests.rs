//! Emptying a table at once ([`KeyedTable::take_all`]): every entry is
//! handed out, the backend loses exactly this table's entries with one
//! prefix delete at the next flush, and a pending flush still writes its
//! marker's values.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::backend::{prefix_end, MemoryBackend, SharedBackend};

/// The backend's entries of table `name`, decoded.
fn stored(b: &SharedBackend, name: &str) -> BTreeMap<u64, u64> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let mut out = BTreeMap::new();
    b.scan_prefix(&prefix, &mut |k, v| {
        out.insert(codec::decode_body(&k[prefix.len()..])?, codec::decode(v)?);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn prefix_end_is_the_first_key_past_the_prefix() {
    assert_eq!(prefix_end(b"w@1\0").unwrap(), b"w@1\x01".to_vec());
    assert_eq!(prefix_end(b"a\xff\xff").unwrap(), b"b".to_vec());
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

/// A prefix delete in the memory backend removes its range and nothing
/// around it (`w@1` is a prefix of `w@10`'s name, not of its table prefix).
#[test]
fn a_prefix_delete_spares_its_neighbours() {
    let mut b = MemoryBackend::new();
    let keys: [&[u8]; 5] = [b"w@0\0k", b"w@1\0", b"w@1\0k", b"w@10\0k", b"w@2\0k"];
    b.write_batch(
        keys.iter()
            .map(|k| WriteOp::Put(k.to_vec(), b"v".to_vec()))
            .collect(),
    )
    .unwrap();
    b.write_batch(vec![WriteOp::DeletePrefix(b"w@1\0".to_vec())])
        .unwrap();
    let left: Vec<Vec<u8>> = b.entries().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        left,
        vec![b"w@0\0k".to_vec(), b"w@10\0k".to_vec(), b"w@2\0k".to_vec()]
    );
}

/// A complete table hands out every live entry; the next flush deletes
/// its backend entries (written at an earlier flush) and nothing of a
/// neighbouring table; the table is drained once that is written.
#[test]
fn take_all_empties_the_table_and_its_backend_range() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut a: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "w@1");
    let mut b: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "w@10");
    for k in 0..20u64 {
        a.put(k, k).unwrap();
        b.put(k, k + 100).unwrap();
    }
    a.remove(&3).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    a.update(&4, |v| *v = Some(44)).unwrap();
    let mut taken = BTreeMap::new();
    a.take_all(|k, v| {
        taken.insert(*k, *v);
    })
    .unwrap();
    let mut expect: BTreeMap<u64, u64> = (0..20).map(|k| (k, k)).collect();
    expect.remove(&3);
    expect.insert(4, 44);
    assert_eq!(taken, expect);
    assert!(!a.is_drained(), "the prefix delete is not written yet");
    assert_eq!(a.get(&5).unwrap(), None, "empty at once");
    assert_eq!(stored(&shared, "w@1").len(), 19, "still in the backend");
    a.flush().unwrap();
    assert!(a.is_drained());
    assert!(stored(&shared, "w@1").is_empty());
    assert_eq!(stored(&shared, "w@10").len(), 20, "the neighbour is intact");
}

/// A table whose cache does not hold everything (it spilled) takes the
/// backend's entries too, with the newest values.
#[test]
fn take_all_of_a_spilled_table_reads_the_backend() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> =
        KeyedTable::new(Box::new(shared.clone()), "t").with_cache_capacity(8);
    for k in 0..100u64 {
        t.put(k, k).unwrap();
    }
    for k in 0..100u64 {
        t.update(&k, |v| *v = v.map(|x| x * 2)).unwrap();
    }
    assert!(!t.is_complete());
    let mut taken = BTreeMap::new();
    t.take_all(|k, v| {
        taken.insert(*k, *v);
    })
    .unwrap();
    assert_eq!(taken, (0..100).map(|k| (k, k * 2)).collect());
    t.flush().unwrap();
    assert!(stored(&shared, "t").is_empty());
    assert!(t.is_drained());
}

/// A drained table takes a new name and starts empty and complete: its
/// writes go under the new name, the old name's entries stay deleted, and
/// a table that still has its delete to write refuses.
#[test]
fn a_drained_table_is_reused_under_a_new_name() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "w@1");
    for k in 0..50u64 {
        t.put(k, k).unwrap();
    }
    t.flush().unwrap();
    t.take_all(|_, _| {}).unwrap();
    assert!(!t.reuse_empty("w@2"), "its delete is not written yet");
    t.flush().unwrap();
    assert!(t.reuse_empty("w@2"));
    assert!(t.is_complete());
    assert_eq!(t.get(&3).unwrap(), None);
    t.put(3, 33).unwrap();
    t.flush().unwrap();
    assert!(stored(&shared, "w@1").is_empty());
    assert_eq!(stored(&shared, "w@2"), BTreeMap::from([(3, 33)]));
}

/// Emptying a table while a marker's flush has most of it still to
/// encode encodes nothing then (no stall): the flush's steps encode the
/// marker-time values later, and the backend ends up with exactly them.
#[test]
fn take_all_during_a_flush_leaves_the_encoding_to_its_steps() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "t");
    for k in 0..1000u64 {
        t.put(k, k).unwrap();
    }
    t.begin_flush().unwrap();
    assert!(!t.flush_step(10).unwrap());
    let encoded = t.pending.as_ref().unwrap().ops.len();
    assert_eq!(encoded, 10);
    let mut n = 0;
    t.take_all(|_, _| n += 1).unwrap();
    assert_eq!(n, 1000);
    assert_eq!(
        t.pending.as_ref().unwrap().ops.len(),
        encoded,
        "take_all encoded the flush's entries itself"
    );
    let mut steps = 1;
    while !t.flush_step(100).unwrap() {
        steps += 1;
    }
    assert!(steps >= 10, "the rest took {steps} steps of 100");
    assert_eq!(stored(&shared, "t"), (0..1000).map(|k| (k, k)).collect());
    t.flush().unwrap();
    assert!(stored(&shared, "t").is_empty());
}

/// Every entry of a table, by a scan.
fn scanned(t: &mut KeyedTable<u64, u64>) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    t.for_each(|k, v| {
        out.insert(k, v);
        Ok(())
    })
    .unwrap();
    out
}

/// A scan after `take_all` sees only what was written since, while the
/// prefix delete is pending, queued at a marker and not yet applied, and
/// after it is.
#[test]
fn scans_after_take_all_see_only_new_entries() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "t");
    for k in 0..10u64 {
        t.put(k, k).unwrap();
    }
    t.flush().unwrap();
    t.take_all(|_, _| {}).unwrap();
    assert!(scanned(&mut t).is_empty(), "deleted entries scanned");
    t.put(5, 55).unwrap();
    let only_new = BTreeMap::from([(5, 55)]);
    assert_eq!(scanned(&mut t), only_new);
    shared.defer_writes();
    t.begin_flush().unwrap();
    assert!(t.flush_step(usize::MAX).unwrap());
    assert_eq!(
        scanned(&mut t),
        only_new,
        "the delete is queued, not applied"
    );
    shared.freeze().take().unwrap();
    assert_eq!(scanned(&mut t), only_new);
    assert_eq!(stored(&shared, "t"), only_new);
}

/// A table that never wrote to its backend has nothing to delete once
/// emptied: it is drained at once, without a flush (a query without
/// checkpoints never flushes).
#[test]
fn a_table_that_never_wrote_is_drained_at_once() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> = KeyedTable::new_empty(Box::new(shared.clone()), "t");
    for k in 0..10u64 {
        t.put(k, k).unwrap();
    }
    t.take_all(|_, _| {}).unwrap();
    assert!(t.is_drained());
}

/// A table that spilled (its state outgrew the cache) and is emptied with
/// no flush pending deletes its backend range at once, as a spill writes:
/// drained without waiting for a marker.
#[test]
fn a_spilled_table_deletes_its_range_at_once() {
    let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
    let mut t: KeyedTable<u64, u64> =
        KeyedTable::new_empty(Box::new(shared.clone()), "t").with_cache_capacity(8);
    for k in 0..100u64 {
        t.put(k, k).unwrap();
    }
    assert!(!stored(&shared, "t").is_empty(), "it spilled");
    let mut n = 0;
    t.take_all(|_, _| n += 1).unwrap();
    assert_eq!(n, 100);
    assert!(t.is_drained());
    assert!(stored(&shared, "t").is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Put(u64, u64),
    Remove(u64),
    Marker,
    Step(usize),
    TakeAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24u64, 0..1000u64).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (0..24u64).prop_map(Op::Remove),
        2 => Just(Op::Marker),
        2 => (1..6usize).prop_map(Op::Step),
        1 => Just(Op::TakeAll),
    ]
}

proptest! {
    /// Whatever the interleaving of writes, markers, flush steps and
    /// `take_all`: each completed flush leaves the backend holding the
    /// table as of its marker, `take_all` hands out exactly the live
    /// entries, and a small cache (spills) changes neither.
    #[test]
    fn take_all_keeps_every_flush_at_its_marker(
        ops in proptest::collection::vec(op(), 1..200),
        capacity in prop_oneof![Just(1024usize), 2..12usize],
    ) {
        let shared = SharedBackend::new(Box::new(MemoryBackend::new()));
        let mut t: KeyedTable<u64, u64> =
            KeyedTable::new(Box::new(shared.clone()), "t").with_cache_capacity(capacity);
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        let mut at_marker: Option<BTreeMap<u64, u64>> = None;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    t.put(k, v).unwrap();
                    live.insert(k, v);
                }
                Op::Remove(k) => {
                    t.remove(&k).unwrap();
                    live.remove(&k);
                }
                Op::TakeAll => {
                    let mut taken = BTreeMap::new();
                    t.take_all(|k, v| {
                        taken.insert(*k, *v);
                    })
                    .unwrap();
                    prop_assert_eq!(&taken, &live);
                    live.clear();
                }
                Op::Marker => {
                    if let Some(expected) = at_marker.take() {
                        t.flush_step(usize::MAX).unwrap();
                        prop_assert_eq!(&stored(&shared, "t"), &expected);
                    }
                    t.begin_flush().unwrap();
                    if t.is_flushing() {
                        at_marker = Some(live.clone());
                    } else {
                        // Nothing was dirty: the backend already holds it.
                        prop_assert_eq!(&stored(&shared, "t"), &live);
                    }
                }
                Op::Step(n) => {
                    if t.flush_step(n).unwrap() {
                        if let Some(expected) = at_marker.take() {
                            prop_assert_eq!(&stored(&shared, "t"), &expected);
                        }
                    }
                }
            }
            for (k, v) in &live {
                prop_assert_eq!(t.get(k).unwrap().copied(), Some(*v));
            }
            prop_assert_eq!(&scanned(&mut t), &live);
        }
        t.flush_step(usize::MAX).unwrap();
        t.flush().unwrap();
        prop_assert_eq!(&stored(&shared, "t"), &live);
    }
}
