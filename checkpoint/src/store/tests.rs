//! Tests of the checkpoint store: corruption is detected and named, recovery
//! falls back, retention and garbage collection keep exactly what is needed.
//!
//! Read-only directories: the tests run as root, where `chmod 0o555` does not
//! stop writes, so an unwritable store is simulated by putting a regular file
//! where the store expects a directory (every write below it then fails with
//! `ENOTDIR`, as it would with `EACCES`/`EROFS`).

use std::collections::BTreeMap;

use super::*;
use crate::backend::{MemoryBackend, StateBackend, WriteOp};
use crate::manifest::{OperatorShape, TaskSnapshot};
use crate::snapshot::{BackendFactory, BackendKind, MemoryBackendFactory, StateHandle};

fn task() -> TaskId {
    TaskId::new("counter", 0)
}

fn store(dir: &tempfile::TempDir) -> CheckpointStore {
    CheckpointStore::open(dir.path().join("chk")).unwrap()
}

/// A store at `root` keeping `retain` checkpoints.
fn retaining(root: &Path, retain: usize) -> CheckpointStore {
    CheckpointStore::open_with(
        root,
        StoreOptions {
            retain,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Persists a memory backend holding `value` under key `k` as `epoch`'s
/// snapshot of `task()`.
fn persist(store: &CheckpointStore, epoch: u64, value: &[u8]) -> StateHandle {
    let mut backend = MemoryBackend::new();
    backend
        .write_batch(vec![WriteOp::Put(b"k".to_vec(), value.to_vec())])
        .unwrap();
    backend
        .snapshot()
        .unwrap()
        .persist(store, &task(), epoch)
        .unwrap()
}

fn manifest(epoch: u64, handle: StateHandle) -> Manifest {
    let mut tasks = BTreeMap::new();
    tasks.insert(
        task(),
        TaskSnapshot {
            state: Some(handle),
            meta: format!("offset={}", epoch * 100).into_bytes(),
        },
    );
    Manifest {
        epoch,
        shape: vec![OperatorShape {
            name: "counter".into(),
            parallelism: 1,
        }],
        tasks,
        created_unix_ms: 1_700_000_000_000 + epoch,
    }
}

/// Completes checkpoints `epochs`, each with value `v<epoch>`.
fn complete(store: &CheckpointStore, epochs: std::ops::RangeInclusive<u64>) {
    for e in epochs {
        let h = persist(store, e, format!("v{e}").as_bytes());
        store.write_manifest(&manifest(e, h)).unwrap();
    }
}

fn restored_value(store: &CheckpointStore, m: &Manifest) -> Vec<u8> {
    let handle = m.tasks[&task()].state.as_ref().unwrap();
    let backend = MemoryBackendFactory
        .open(&task(), Some(handle), Some(store))
        .unwrap();
    backend.get(b"k").unwrap().unwrap()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn write_then_recover_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=1);
    let recovery = s.recover().unwrap();
    assert!(recovery.warnings.is_empty());
    let m = recovery.manifest.unwrap();
    assert_eq!(m.epoch, 1);
    assert_eq!(m.tasks[&task()].meta, b"offset=100");
    assert_eq!(restored_value(&s, &m), b"v1");
    assert_eq!(recovery.highest_epoch_seen, Some(1));
    assert_eq!(s.recover().unwrap().next_epoch(), 2);
}

#[test]
fn empty_store_recovers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let r = s.recover().unwrap();
    assert!(r.manifest.is_none() && r.warnings.is_empty());
    assert_eq!(r.next_epoch(), 1);
    assert!(s.latest_valid().unwrap().is_none());
}

#[test]
fn manifest_with_one_flipped_byte_falls_back_to_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=2);
    let path = s.manifest_path(2);
    let len = fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);

    let (m, warnings) = s.latest_valid().unwrap().unwrap();
    assert_eq!(m.epoch, 1);
    assert_eq!(restored_value(&s, &m), b"v1");
    assert_eq!(warnings.len(), 1);
    let w = &warnings[0];
    assert_eq!((w.epoch, &w.manifest), (2, &path));
    match &w.error {
        Error::Corrupt { path: p, reason } => {
            assert_eq!(p, &path);
            assert!(reason.contains("CRC32"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(w.to_string().contains(&path.display().to_string()));
}

#[test]
fn truncated_manifest_falls_back_to_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=3);
    let path = s.manifest_path(3);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();

    let r = s.recover().unwrap();
    assert_eq!(r.manifest.as_ref().unwrap().epoch, 2);
    assert_eq!(r.highest_epoch_seen, Some(3));
    assert_eq!(r.next_epoch(), 4, "new epochs go above the torn one");
    assert!(
        matches!(&r.warnings[0].error, Error::Truncated { path: p, .. } if p == &path),
        "{:?}",
        r.warnings
    );
}

#[test]
fn empty_and_garbage_manifests_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=1);
    fs::write(s.manifest_path(2), b"").unwrap();
    fs::write(s.manifest_path(3), b"not a frame at all, just text").unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.unwrap().epoch, 1);
    assert_eq!(r.warnings.len(), 2);
    assert!(matches!(r.warnings[0].error, Error::Corrupt { .. }));
    assert!(matches!(r.warnings[1].error, Error::Truncated { .. }));
}

#[test]
fn manifest_of_an_unknown_frame_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=2);
    let path = s.manifest_path(2);
    let mut bytes = fs::read(&path).unwrap();
    bytes[4] = 200;
    fs::write(&path, bytes).unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.unwrap().epoch, 1);
    assert!(matches!(
        r.warnings[0].error,
        Error::UnsupportedFrameVersion { found: 200, .. }
    ));
}

#[test]
fn missing_snapshot_file_falls_back_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=2);
    let m2 = s.read_manifest(2).unwrap();
    let file = &m2.tasks[&task()].state.as_ref().unwrap().files[0];
    let snapshot_path = s.path_of(file);
    fs::remove_file(&snapshot_path).unwrap();

    let (m, warnings) = s.latest_valid().unwrap().unwrap();
    assert_eq!(m.epoch, 1);
    assert_eq!(restored_value(&s, &m), b"v1");
    match &warnings[0].error {
        Error::Missing { path } => assert_eq!(path, &snapshot_path),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(warnings[0]
        .to_string()
        .contains(&snapshot_path.display().to_string()));
}

#[test]
fn corrupt_or_truncated_snapshot_file_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=3);
    let file_of = |e| {
        let m = s.read_manifest(e).unwrap();
        s.path_of(&m.tasks[&task()].state.as_ref().unwrap().files[0])
    };
    let p3 = file_of(3);
    flip_byte(&p3, 30);
    let p2 = file_of(2);
    let bytes = fs::read(&p2).unwrap();
    fs::write(&p2, &bytes[..bytes.len() - 1]).unwrap();

    let r = s.recover().unwrap();
    assert_eq!(r.manifest.unwrap().epoch, 1);
    assert!(matches!(&r.warnings[0].error, Error::Corrupt { path, .. } if path == &p3));
    assert!(matches!(&r.warnings[1].error, Error::Truncated { path, .. } if path == &p2));
}

#[test]
fn a_flipped_snapshot_byte_is_caught_at_restore_even_without_checksum_verification() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open_with(
        dir.path(),
        StoreOptions {
            verify_checksums: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    complete(&s, 1..=1);
    let m = s.read_manifest(1).unwrap();
    let handle = m.tasks[&task()].state.clone().unwrap();
    flip_byte(&s.path_of(&handle.files[0]), 25);
    assert_eq!(
        s.recover().unwrap().manifest.unwrap().epoch,
        1,
        "size still matches"
    );
    let err = MemoryBackendFactory
        .open(&task(), Some(&handle), Some(&s))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn retention_keeps_the_last_n_and_collects_unreferenced_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = retaining(dir.path(), 2);
    complete(&s, 1..=4);
    // Leftovers of a crash: an aborted epoch's snapshot file, a torn temp
    // file, a temporary manifest.
    let task_dir = dir.path().join("state").join(task().dir_name());
    fs::write(task_dir.join("e00000000000000000099-orphan"), b"x").unwrap();
    fs::write(task_dir.join("whatever.tmp-1-1"), b"x").unwrap();
    fs::write(s.manifest_path(9).with_extension("manifest.tmp-1-1"), b"x").unwrap();

    let h = persist(&s, 5, b"v5");
    let report = s.write_manifest(&manifest(5, h)).unwrap();
    assert_eq!(report.retained, vec![5, 4]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(s.manifest_epochs().unwrap(), vec![4, 5]);

    let mut expected: Vec<String> = [4, 5]
        .iter()
        .flat_map(|&e| {
            s.read_manifest(e).unwrap().tasks[&task()]
                .state
                .clone()
                .unwrap()
                .files
        })
        .map(|f| f.path)
        .collect();
    expected.sort();
    let mut present: Vec<String> = fs::read_dir(&task_dir)
        .unwrap()
        .map(|e| {
            format!(
                "state/{}/{}",
                task().dir_name(),
                e.unwrap().file_name().to_str().unwrap()
            )
        })
        .collect();
    present.sort();
    assert_eq!(present, expected);
    let manifest_dir_files = fs::read_dir(dir.path().join("manifests")).unwrap().count();
    assert_eq!(manifest_dir_files, 2);
}

#[test]
fn files_reserved_by_an_in_flight_epoch_survive_collection() {
    let dir = tempfile::tempdir().unwrap();
    let s = retaining(dir.path(), 1);
    complete(&s, 1..=1);
    // Epoch 3's snapshot is persisted before epoch 2 completes.
    let h3 = persist(&s, 3, b"v3");
    let h2 = persist(&s, 2, b"v2");
    s.write_manifest(&manifest(2, h2)).unwrap();
    s.verify_file(&h3.files[0], true).unwrap();
    // Epoch 3 completes: epoch 2 is now the one dropped by retention.
    s.write_manifest(&manifest(3, h3.clone())).unwrap();
    let m = s.recover().unwrap().manifest.unwrap();
    assert_eq!(m.epoch, 3);
    assert_eq!(restored_value(&s, &m), b"v3");

    // A file reserved by an epoch that was then aborted (4) is collected once
    // a later checkpoint (5) completes.
    let h4 = persist(&s, 4, b"v4");
    let h5 = persist(&s, 5, b"v5");
    s.write_manifest(&manifest(5, h5)).unwrap();
    assert!(matches!(
        s.verify_file(&h4.files[0], false),
        Err(Error::Missing { .. })
    ));
}

#[test]
fn reuse_reports_whether_a_file_is_still_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let h = persist(&s, 1, b"v1");
    let f = &h.files[0];
    assert!(s.reuse(2, f));
    let mut wrong_size = f.clone();
    wrong_size.size += 1;
    assert!(!s.reuse(2, &wrong_size));
    fs::remove_file(s.path_of(f)).unwrap();
    assert!(!s.reuse(2, f));
}

#[test]
fn epochs_must_increase() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=3);
    let h = persist(&s, 2, b"again");
    match s.write_manifest(&manifest(2, h)) {
        Err(Error::EpochNotIncreasing {
            epoch: 2,
            existing: 3,
        }) => {}
        other => panic!("expected EpochNotIncreasing, got {other:?}"),
    }
}

#[test]
fn a_corrupt_newer_manifest_is_replaced_by_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=3);
    flip_byte(&s.manifest_path(3), 40);
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.as_ref().unwrap().epoch, 2);
    // The restarted dataflow numbers from next_epoch (4); a corrupt 3 left
    // behind never shadows anything.
    complete(&s, r.next_epoch()..=r.next_epoch());
    assert_eq!(
        s.manifest_epochs().unwrap(),
        vec![1, 2, 4],
        "corrupt 3 collected"
    );
    assert_eq!(s.recover().unwrap().manifest.unwrap().epoch, 4);
}

#[test]
fn unwritable_store_makes_write_manifest_and_persist_fail() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=1);
    let h = persist(&s, 2, b"v2");

    // Manifests directory replaced by a regular file.
    let manifests = dir.path().join("chk/manifests");
    fs::rename(&manifests, dir.path().join("chk/manifests.saved")).unwrap();
    fs::write(&manifests, b"in the way").unwrap();
    let err = s.write_manifest(&manifest(2, h)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("manifests"), "{err}");

    // State directory replaced by a regular file.
    let state = dir.path().join("chk/state");
    fs::rename(&state, dir.path().join("chk/state.saved")).unwrap();
    fs::write(&state, b"in the way").unwrap();
    let mut backend = MemoryBackend::new();
    let job = backend.snapshot().unwrap();
    let err = job.persist(&s, &task(), 3).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");

    // A store cannot be opened below a regular file.
    let err = CheckpointStore::open(state.join("below")).unwrap_err();
    assert!(err.to_string().contains("below"), "{err}");
}

#[test]
fn memory_snapshot_is_isolated_from_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut backend = MemoryBackend::new();
    backend
        .write_batch(vec![WriteOp::Put(b"a".to_vec(), b"1".to_vec())])
        .unwrap();
    let job = backend.snapshot().unwrap();
    backend
        .write_batch(vec![
            WriteOp::Put(b"a".to_vec(), b"2".to_vec()),
            WriteOp::Put(b"b".to_vec(), b"3".to_vec()),
        ])
        .unwrap();
    let handle = job.persist(&s, &task(), 1).unwrap();
    assert_eq!(handle.kind, BackendKind::Memory);
    assert_eq!(handle.bytes_written, handle.total_bytes());
    let restored = MemoryBackendFactory
        .open(&task(), Some(&handle), Some(&s))
        .unwrap();
    assert_eq!(restored.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(restored.get(b"b").unwrap(), None);
}

#[test]
fn restore_needs_a_store_and_a_matching_backend() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let handle = persist(&s, 1, b"v");
    let no_store = MemoryBackendFactory.open(&task(), Some(&handle), None);
    assert!(matches!(no_store.err().unwrap(), Error::Restore(_)));
    let mut rocks_handle = handle.clone();
    rocks_handle.kind = BackendKind::RocksDb;
    let wrong = MemoryBackendFactory.open(&task(), Some(&rocks_handle), Some(&s));
    assert!(matches!(wrong.err().unwrap(), Error::Restore(_)));
}

#[test]
fn retention_keeps_a_checkpoint_independent_of_the_newest_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = retaining(dir.path(), 2);
    // Two chains of incremental checkpoints: 1..=3 share file `a`, 4..=6
    // share file `b`.
    let a = persist(&s, 1, b"a");
    for e in 1..=3 {
        s.write_manifest(&manifest(e, a.clone())).unwrap();
    }
    let b = persist(&s, 4, b"b");
    let mut retained = Vec::new();
    for e in 4..=6 {
        retained.push(s.write_manifest(&manifest(e, b.clone())).unwrap().retained);
    }
    // 4 keeps 3 (independent already); 5 and 6 share `b` with each other,
    // so the newest of chain `a` stays as the fallback.
    assert_eq!(retained, vec![vec![4, 3], vec![5, 4, 3], vec![6, 5, 3]]);
    assert_eq!(s.manifest_epochs().unwrap(), vec![3, 5, 6]);
    assert!(s.path_of(&a.files[0]).exists(), "chain a's file is kept");

    // One damaged shared file spoils the newest chain; recovery falls back
    // to the independent checkpoint and names the file.
    let shared = s.path_of(&b.files[0]);
    flip_byte(&shared, 5);
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.as_ref().map(|m| m.epoch), Some(3));
    assert_eq!(r.warnings.len(), 2);
    assert!(r.warnings[0].to_string().contains(&b.files[0].path));
    assert_eq!(restored_value(&s, r.manifest.as_ref().unwrap()), b"a");

    // With retain 1 no fallback is asked for, and none is kept.
    let one = retaining(&dir.path().join("one"), 1);
    let a = persist(&one, 1, b"a");
    one.write_manifest(&manifest(1, a)).unwrap();
    let b = persist(&one, 2, b"b");
    one.write_manifest(&manifest(2, b.clone())).unwrap();
    let r = one.write_manifest(&manifest(3, b)).unwrap();
    assert_eq!(r.retained, vec![3]);
}

#[test]
fn set_aside_moves_skipped_manifests_out_of_recovery_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    complete(&s, 1..=3);
    flip_byte(&s.manifest_path(3), 10);
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.as_ref().map(|m| m.epoch), Some(2));
    let moved = s.set_aside(&[3, 7]).unwrap();
    assert_eq!(moved.len(), 1, "epoch 7 has no manifest: nothing to move");
    assert!(moved[0].starts_with(dir.path().join("chk/manifests/skipped")));
    assert!(moved[0].exists() && !s.manifest_path(3).exists());
    assert_eq!(s.manifest_epochs().unwrap(), vec![1, 2]);
    // Repaired or not, it is never restored again; garbage collection
    // leaves it alone.
    let r = s.recover().unwrap();
    assert_eq!(r.manifest.as_ref().map(|m| m.epoch), Some(2));
    assert!(r.warnings.is_empty());
    s.collect_garbage().unwrap();
    assert!(moved[0].exists());
}

#[test]
fn only_damage_makes_recovery_fall_back() {
    use std::io::ErrorKind;
    let damage = Error::Corrupt {
        path: "x".into(),
        reason: "crc".into(),
    };
    assert!(damage.is_damage());
    assert!(Error::Missing { path: "x".into() }.is_damage());
    let busy = Error::io("x", std::io::Error::from(ErrorKind::PermissionDenied));
    assert!(!busy.is_damage());
}
