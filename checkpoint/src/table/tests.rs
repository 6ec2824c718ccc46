//! The table's basic behaviour: reads after writes and flushes, removed
//! entries leaving the cache, spills past the cache's capacity.

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

/// A prefetch changes nothing: cached and absent keys, large and small
/// entries, read back the same, and nothing becomes dirty.
#[test]
fn prefetch_changes_nothing() {
    let mut t: KeyedTable<String, Vec<u64>> = KeyedTable::new(Box::new(MemoryBackend::new()), "p");
    for k in 0..1000u64 {
        t.update(&k.to_string(), |v| *v = Some(vec![k; (k % 7) as usize]))
            .unwrap();
    }
    t.flush().unwrap();
    let cached = t.cache.len();
    for k in 0..2000u64 {
        t.prefetch(&k.to_string());
    }
    assert_eq!(t.dirty_len(), 0);
    assert_eq!(t.cache.len(), cached, "an absent key is not cached");
    for k in 0..2000u64 {
        let expected = (k < 1000).then(|| vec![k; (k % 7) as usize]);
        assert_eq!(t.get(&k.to_string()).unwrap(), expected.as_ref());
    }
}
