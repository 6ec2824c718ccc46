//! Tests of the RocksDB backend: reads and writes, snapshot isolation,
//! incremental checkpoints, restore (also of state far larger than the
//! table cache), and corruption at restore.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use crate::manifest::{Manifest, TaskSnapshot};
use crate::table::KeyedTable;

struct Fixture {
    _dir: tempfile::TempDir,
    store: CheckpointStore,
    factory: RocksBackendFactory,
}

/// Compactions off, so that which SSTs a checkpoint stores does not depend
/// on background timing.
fn fixture() -> Fixture {
    fixture_with(true)
}

/// Small RocksDB instances for tests.
fn small(disable_auto_compactions: bool, full_snapshot_every: u32) -> RocksConfig {
    RocksConfig {
        write_buffer_size: 4 << 20,
        block_cache_bytes: 8 << 20,
        disable_auto_compactions,
        full_snapshot_every,
        ..RocksConfig::default()
    }
}

fn fixture_with(disable_auto_compactions: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("store")).unwrap();
    // Incremental only: these tests check exactly which files a checkpoint
    // references (full snapshots have a test of their own).
    let factory = RocksBackendFactory::with_config(
        dir.path().join("local"),
        small(disable_auto_compactions, 0),
    );
    Fixture {
        _dir: dir,
        store,
        factory,
    }
}

fn task() -> TaskId {
    TaskId::new("agg", 3)
}

impl Fixture {
    fn open(&self, restore: Option<&StateHandle>) -> Box<dyn StateBackend> {
        self.factory
            .open(&task(), restore, Some(&self.store))
            .unwrap()
    }

    /// Snapshot, persist and complete checkpoint `epoch` of one backend.
    fn checkpoint(&self, backend: &mut dyn StateBackend, epoch: u64) -> StateHandle {
        let job = backend.snapshot().unwrap();
        let handle = job.persist(&self.store, &task(), epoch).unwrap();
        self.complete(epoch, &handle);
        handle
    }

    fn complete(&self, epoch: u64, handle: &StateHandle) {
        let mut tasks = BTreeMap::new();
        tasks.insert(
            task(),
            TaskSnapshot {
                state: Some(handle.clone()),
                meta: vec![],
            },
        );
        let m = Manifest {
            epoch,
            shape: vec![],
            tasks,
            created_unix_ms: 0,
        };
        self.store.write_manifest(&m).unwrap();
    }
}

fn put(backend: &mut dyn StateBackend, kvs: &[(&str, &str)]) {
    backend
        .write_batch(
            kvs.iter()
                .map(|(k, v)| WriteOp::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
}

fn get(backend: &dyn StateBackend, k: &str) -> Option<String> {
    backend
        .get(k.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn batch_put_delete_scan() {
    let f = fixture();
    let mut b = f.open(None);
    put(b.as_mut(), &[("a/1", "x"), ("a/2", "y"), ("b/1", "z")]);
    b.write_batch(vec![WriteOp::Delete(b"a/1".to_vec())])
        .unwrap();
    assert_eq!(get(b.as_ref(), "a/1"), None);
    assert_eq!(get(b.as_ref(), "a/2").as_deref(), Some("y"));
    let mut seen = Vec::new();
    b.scan_prefix(b"a/", &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![(b"a/2".to_vec(), b"y".to_vec())]);
}

/// A prefix delete is one range tombstone: it removes the prefix's keys
/// and spares a key that only shares
/// the name's first bytes.
#[test]
fn prefix_delete_removes_exactly_its_range() {
    let f = fixture();
    let mut b = f.open(None);
    put(
        b.as_mut(),
        &[("w@1\0a", "x"), ("w@1\0b", "y"), ("w@10\0a", "z")],
    );
    b.write_batch(vec![WriteOp::DeletePrefix(b"w@1\0".to_vec())])
        .unwrap();
    assert_eq!(get(b.as_ref(), "w@1\0a"), None);
    assert_eq!(get(b.as_ref(), "w@1\0b"), None);
    assert_eq!(get(b.as_ref(), "w@10\0a").as_deref(), Some("z"));
    let mut seen = 0;
    b.scan_prefix(b"w@", &mut |_, _| {
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 1);
}

#[test]
fn snapshot_is_isolated_from_later_writes_and_restores() {
    let f = fixture();
    let mut b = f.open(None);
    put(b.as_mut(), &[("k1", "old"), ("k2", "kept")]);
    let job = b.snapshot().unwrap();
    put(b.as_mut(), &[("k1", "new"), ("k3", "later")]);
    let handle = job.persist(&f.store, &task(), 1).unwrap();
    f.complete(1, &handle);
    assert_eq!(handle.kind, BackendKind::RocksDb);
    assert!(handle.files.iter().any(|f| f.local_name == "CURRENT"));
    assert!(handle.files.iter().any(|f| f.local_name.ends_with(".sst")));
    drop(b);

    let r = f.open(Some(&handle));
    assert_eq!(get(r.as_ref(), "k1").as_deref(), Some("old"));
    assert_eq!(get(r.as_ref(), "k2").as_deref(), Some("kept"));
    assert_eq!(get(r.as_ref(), "k3"), None);
}

#[test]
fn aborted_snapshot_cleans_up_its_local_directory() {
    let f = fixture();
    let mut b = f.open(None);
    put(b.as_mut(), &[("k", "v")]);
    let job = b.snapshot().unwrap();
    let home = f.factory.local_dir().join(task().dir_name());
    let count_snaps = || {
        fs::read_dir(&home)
            .unwrap()
            .flat_map(|inc| fs::read_dir(inc.unwrap().path()).unwrap())
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snap-")
            })
            .count()
    };
    assert_eq!(count_snaps(), 1);
    drop(job);
    assert_eq!(count_snaps(), 0);
}

fn fill(backend: &mut dyn StateBackend, keys: std::ops::Range<u64>, tag: &str) {
    let ops: Vec<WriteOp> = keys
        .map(|k| {
            WriteOp::Put(
                format!("key-{k:08}").into_bytes(),
                format!("{tag}-value-of-{k}").into_bytes(),
            )
        })
        .collect();
    for chunk in ops.chunks(10_000) {
        backend.write_batch(chunk.to_vec()).unwrap();
    }
}

#[test]
fn second_checkpoint_with_few_changes_writes_far_fewer_bytes() {
    let f = fixture();
    let mut b = f.open(None);
    fill(b.as_mut(), 0..200_000, "v1");
    let h1 = f.checkpoint(b.as_mut(), 1);
    assert_eq!(
        h1.bytes_written,
        h1.total_bytes(),
        "first checkpoint is full"
    );

    fill(b.as_mut(), 0..200, "v2"); // 0.1% of the keys change
    let h2 = f.checkpoint(b.as_mut(), 2);
    println!(
        "full: {} bytes, incremental: {} bytes written of {} referenced",
        h1.bytes_written,
        h2.bytes_written,
        h2.total_bytes()
    );
    assert!(
        h2.bytes_written * 10 < h1.bytes_written,
        "incremental wrote {} bytes, full {}",
        h2.bytes_written,
        h1.bytes_written
    );
    let reused = h2.files.iter().filter(|f| h1.files.contains(f)).count();
    assert!(reused > 0, "the SSTs of checkpoint 1 are referenced");

    // Nothing changed: only the small metadata files are written.
    let h3 = f.checkpoint(b.as_mut(), 3);
    let h3_ssts = h3.files.iter().filter(|f| f.local_name.ends_with(".sst"));
    assert!(h3_ssts.clone().all(|f| h2.files.contains(f)), "no new SST");
    assert!(h3.bytes_written < 64 << 10, "{} bytes", h3.bytes_written);

    drop(b);
    let r = f.open(Some(&h3));
    assert_eq!(
        get(r.as_ref(), "key-00000007").as_deref(),
        Some("v2-value-of-7")
    );
    assert_eq!(
        get(r.as_ref(), "key-00199999").as_deref(),
        Some("v1-value-of-199999")
    );
}

#[test]
fn restored_files_are_referenced_and_incarnations_never_collide() {
    let f = fixture();
    let mut b = f.open(None);
    fill(b.as_mut(), 0..50_000, "base");
    let base = f.checkpoint(b.as_mut(), 1);
    drop(b);

    // Incarnation A: restore, change a few keys, checkpoint.
    let mut a = f.open(Some(&base));
    fill(a.as_mut(), 0..10, "a");
    let ha = a.snapshot().unwrap().persist(&f.store, &task(), 2).unwrap();
    assert!(
        ha.bytes_written * 5 < base.bytes_written,
        "restored SSTs reused"
    );
    f.complete(2, &ha);
    drop(a);

    // Incarnation B: restore the same base, write different data; its new
    // SSTs get the same RocksDB file numbers as A's, but other store names.
    let mut bb = f.open(Some(&base));
    fill(bb.as_mut(), 0..10, "b");
    let hb = bb
        .snapshot()
        .unwrap()
        .persist(&f.store, &task(), 3)
        .unwrap();
    drop(bb);
    let new_a: Vec<_> = ha
        .files
        .iter()
        .filter(|x| !base.files.contains(x))
        .collect();
    let new_b: Vec<_> = hb
        .files
        .iter()
        .filter(|x| !base.files.contains(x))
        .collect();
    for x in &new_a {
        assert!(
            new_b.iter().all(|y| y.path != x.path),
            "{} stored twice",
            x.path
        );
    }
    f.complete(3, &hb);

    let ra = f.open(Some(&ha));
    assert_eq!(
        get(ra.as_ref(), "key-00000003").as_deref(),
        Some("a-value-of-3")
    );
    drop(ra);
    let rb = f.open(Some(&hb));
    assert_eq!(
        get(rb.as_ref(), "key-00000003").as_deref(),
        Some("b-value-of-3")
    );
    assert_eq!(
        get(rb.as_ref(), "key-00049999").as_deref(),
        Some("base-value-of-49999")
    );
}

#[test]
fn corrupt_sst_in_the_store_fails_restore_and_recovery_falls_back() {
    let f = fixture();
    let mut b = f.open(None);
    fill(b.as_mut(), 0..1_000, "one");
    let h1 = f.checkpoint(b.as_mut(), 1);
    fill(b.as_mut(), 1_000..2_000, "two");
    let h2 = f.checkpoint(b.as_mut(), 2);
    drop(b);
    let fresh = h2
        .files
        .iter()
        .find(|x| x.local_name.ends_with(".sst") && !h1.files.contains(x))
        .unwrap();
    let path = f.store.path_of(fresh);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let err = f
        .factory
        .open(&task(), Some(&h2), Some(&f.store))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Corrupt { path: p, .. } if p == &path),
        "{err}"
    );

    let (m, warnings) = f.store.latest_valid().unwrap().unwrap();
    assert_eq!(m.epoch, 1);
    assert!(matches!(&warnings[0].error, Error::Corrupt { path: p, .. } if p == &path));
    let r = f.open(m.tasks[&task()].state.as_ref());
    assert_eq!(
        get(r.as_ref(), "key-00000999").as_deref(),
        Some("one-value-of-999")
    );
    assert_eq!(get(r.as_ref(), "key-00001000"), None);
}

#[test]
fn opening_wipes_the_previous_local_state() {
    let f = fixture();
    let mut b = f.open(None);
    put(b.as_mut(), &[("k", "v")]);
    drop(b);
    let b = f.open(None);
    assert_eq!(get(b.as_ref(), "k"), None);
}

#[test]
fn persist_into_an_unwritable_store_fails() {
    let f = fixture();
    let mut b = f.open(None);
    put(b.as_mut(), &[("k", "v")]);
    let job = b.snapshot().unwrap();
    let state = f.store.root().join("state");
    fs::remove_dir_all(&state).unwrap();
    fs::write(&state, b"a file where the state directory was").unwrap();
    let err = job.persist(&f.store, &task(), 1).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn restoring_a_memory_handle_is_refused() {
    let f = fixture();
    let handle = StateHandle {
        kind: BackendKind::Memory,
        files: vec![],
        bytes_written: 0,
    };
    let err = f
        .factory
        .open(&task(), Some(&handle), Some(&f.store))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Restore(_)));
}

/// `n` keys through a [`KeyedTable`] with a cache of 10 000 entries: the
/// state is 100x the cache. Checkpoint, restore, verify every value.
fn large_state_round_trip(n: u64) {
    let f = fixture_with(false);
    let t0 = Instant::now();
    let mut table: KeyedTable<u64, u64> =
        KeyedTable::new(f.open(None), "counts").with_cache_capacity(10_000);
    for k in 0..n {
        table.put(k, k * 3).unwrap();
    }
    // A second pass through part of the keys: reads spill back from RocksDB.
    for k in (0..n).step_by(97) {
        table.update(&k, |v| *v = v.map(|v| v + 1)).unwrap();
    }
    let loaded = t0.elapsed();

    let t1 = Instant::now();
    let job = table.snapshot().unwrap();
    let sync = t1.elapsed();
    let t2 = Instant::now();
    let handle = job.persist(&f.store, &task(), 1).unwrap();
    f.complete(1, &handle);
    let persisted = t2.elapsed();
    drop(table);

    let t3 = Instant::now();
    let (m, warnings) = f.store.latest_valid().unwrap().unwrap();
    assert!(warnings.is_empty());
    let mut restored: KeyedTable<u64, u64> =
        KeyedTable::new(f.open(m.tasks[&task()].state.as_ref()), "counts")
            .with_cache_capacity(10_000);
    let restore = t3.elapsed();

    let t4 = Instant::now();
    let mut count = 0u64;
    restored
        .for_each(|k, v| {
            let expect = k * 3 + u64::from(k % 97 == 0);
            if v != expect {
                return Err(Error::Backend(format!("key {k}: {v} != {expect}")));
            }
            count += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(count, n);
    for k in [0, 1, 97, n / 2, n - 1] {
        let expect = k * 3 + u64::from(k % 97 == 0);
        assert_eq!(restored.get(&k).unwrap().copied(), Some(expect));
    }
    assert_eq!(restored.get(&n).unwrap(), None);
    println!(
        "{n} keys: load {loaded:?}, snapshot sync part {sync:?}, persist {persisted:?} \
         ({} bytes in {} files), verify+restore {restore:?}, scan-verify {:?}",
        handle.bytes_written,
        handle.files.len(),
        t4.elapsed()
    );
}

#[test]
fn one_million_keys_checkpoint_and_restore_through_a_small_cache() {
    large_state_round_trip(1_000_000);
}

/// About 35 s in the dev profile on 2 cores (most of it loading the table).
#[test]
fn ten_million_keys_checkpoint_and_restore_through_a_small_cache() {
    large_state_round_trip(10_000_000);
}

#[test]
fn a_full_snapshot_every_n_epochs_starts_a_chain_sharing_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("store")).unwrap();
    let factory = RocksBackendFactory::with_config(dir.path().join("local"), small(true, 3));
    let mut b = factory.open(&task(), None, Some(&store)).unwrap();
    let mut handles = Vec::new();
    for epoch in 1..=4 {
        fill(b.as_mut(), epoch * 100..epoch * 100 + 50, "v");
        let h = b
            .snapshot()
            .unwrap()
            .persist(&store, &task(), epoch)
            .unwrap();
        handles.push(h);
    }
    let ssts = |h: &StateHandle| -> std::collections::HashSet<String> {
        h.files
            .iter()
            .filter(|f| f.local_name.ends_with(".sst"))
            .map(|f| f.path.clone())
            .collect()
    };
    // 1 is full; 2 and 3 reference its SSTs; 4 (= 1 + 3) is full again:
    // it shares no file with the chain before it, and writes all its bytes.
    assert!(!ssts(&handles[0]).is_disjoint(&ssts(&handles[1])));
    assert!(!ssts(&handles[1]).is_disjoint(&ssts(&handles[2])));
    assert!(ssts(&handles[3]).is_disjoint(&ssts(&handles[2])));
    let all: std::collections::HashSet<String> =
        handles[3].files.iter().map(|f| f.path.clone()).collect();
    assert!(all.is_disjoint(&handles[2].files.iter().map(|f| f.path.clone()).collect()));
    assert_eq!(handles[3].bytes_written, handles[3].total_bytes());
    assert!(handles[2].bytes_written < handles[2].total_bytes());
    drop(b);

    // A restored open starts a new chain at once (the restored chain's age
    // is unknown); the next snapshot continues it.
    let mut r = factory
        .open(&task(), Some(&handles[3]), Some(&store))
        .unwrap();
    fill(r.as_mut(), 0..10, "r");
    let h5 = r.snapshot().unwrap().persist(&store, &task(), 5).unwrap();
    assert!(ssts(&h5).is_disjoint(&ssts(&handles[3])));
    let h6 = r.snapshot().unwrap().persist(&store, &task(), 6).unwrap();
    assert!(!ssts(&h6).is_disjoint(&ssts(&h5)));
    drop(r);

    // With full snapshots off, a restored open continues the restored chain.
    let off = RocksBackendFactory::with_config(dir.path().join("local-off"), small(true, 0));
    let mut r = off.open(&task(), Some(&h6), Some(&store)).unwrap();
    let h7 = r.snapshot().unwrap().persist(&store, &task(), 7).unwrap();
    assert!(!ssts(&h7).is_disjoint(&ssts(&h6)));
}
