//! # eddy-checkpoint
//!
//! State and durability for Eddy. This crate knows nothing of tasks, channels
//! or operators; the runtime drives it.
//!
//! - [`backend`]: the [`StateBackend`] trait — a byte-level key/value store
//!   owned by one operator instance — and its in-memory implementation.
//! - [`table`]: [`KeyedTable`], a typed cache of hot and dirty entries in front
//!   of a backend; dirty entries reach the backend as one write batch at each
//!   epoch marker.
//! - [`managed`]: [`ManagedState`], what the runtime flushes at markers.
//! - [`map`]: [`MapTable`] — map state (per key, user key -> value) over a
//!   [`KeyedTable`] with composite keys; [`SharedBackend`] lets several tables
//!   of one task share its backend.
//! - [`snapshot`]: the snapshot lifecycle — [`SnapshotJob`], [`StateHandle`],
//!   [`BackendFactory`] (open a backend fresh or restored).
//! - [`rocks`]: [`RocksBackend`] — RocksDB with the WAL off and incremental
//!   checkpoints of immutable SST files.
//! - [`tracker`]: [`CheckpointTracker`] — the coordinator's pure state machine
//!   (epoch -> pending acks -> complete / aborted).
//! - [`store`]: [`CheckpointStore`] — manifests and snapshot files in a local
//!   directory, retention, garbage collection, recovery.
//! - [`manifest`]: [`Manifest`], [`TaskSnapshot`], [`TaskId`].
//! - [`frame`] and [`durable`]: length + CRC32 framing, and atomic durable
//!   writes (temp, fsync, rename, fsync dir).
//! - [`codec`]: the one place keys and values become bytes (serde + bincode,
//!   every frame versioned).
//! - [`error`]: the crate's [`Error`] and [`Result`].
//!
//! Dependency direction: `checkpoint <- runtime <- {operators, connectors} <- eddy`.
//!
//! # How the runtime drives it
//! One checkpoint, then a recovery, with every step the runtime takes (the
//! coordinator's steps use the [`CheckpointTracker`]; a task's steps use its
//! table and backend; `persist` runs on a blocking thread in real life):
//!
//! ```
//! use std::collections::BTreeSet;
//! use eddy_checkpoint::*;
//!
//! # fn main() -> Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = CheckpointStore::open(dir.path())?;
//! let factory = MemoryBackendFactory; // or RocksBackendFactory::new(local_dir)
//! let task = TaskId::new("count", 0);
//! let mut tracker = CheckpointTracker::new(BTreeSet::from([task.clone()]), 2, 60_000);
//! let mut table: KeyedTable<String, u64> =
//!     KeyedTable::new(factory.open(&task, None, None)?, "counts");
//! table.update(&"a".to_string(), |v| *v = Some(v.unwrap_or(0) + 1))?;
//!
//! // Coordinator: open an epoch, inject its markers.
//! let epoch = tracker.try_start(0).expect("nothing in flight");
//! // Task, at the aligned marker: the synchronous part, then forward the
//! // marker; the job persists off the hot path.
//! let job = table.snapshot()?;
//! let handle = job.persist(&store, &task, epoch)?;
//! let ack = TaskSnapshot { state: Some(handle), meta: b"offset=42".to_vec() };
//! // Coordinator: the last ack completes the epoch; write the manifest,
//! // then tell the sinks to commit.
//! if let AckOutcome::Complete(done) = tracker.ack(epoch, &task, ack, 5) {
//!     store.write_manifest(&done.into_manifest(vec![], 0))?;
//! }
//!
//! // After a crash: the newest checkpoint that verifies, state restored.
//! let recovery = store.recover()?;
//! let manifest = recovery.manifest.as_ref().expect("one checkpoint");
//! let snapshot = &manifest.tasks[&task];
//! let backend = factory.open(&task, snapshot.state.as_ref(), Some(&store))?;
//! let mut table: KeyedTable<String, u64> = KeyedTable::new(backend, "counts");
//! assert_eq!(table.get(&"a".to_string())?, Some(&1));
//! assert_eq!(snapshot.meta, b"offset=42");
//! // New epochs go above every manifest on disk.
//! let tracker = CheckpointTracker::new(BTreeSet::from([task]), 2, 60_000)
//!     .with_first_epoch(recovery.next_epoch());
//! assert_eq!(tracker.next_epoch(), 2);
//! # Ok(())
//! # }
//! ```
// One `unsafe` block, a prefetch hint (src/prefetch.rs), allowed there.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod codec;
pub mod durable;
pub mod error;
pub mod frame;
pub mod managed;
pub mod manifest;
pub mod map;
mod prefetch;
pub mod rocks;
pub mod snapshot;
pub mod store;
pub mod table;
pub mod tracker;

pub use backend::{BackendReader, Frozen, MemoryBackend, SharedBackend, StateBackend, WriteOp};
pub use error::{Error, Result};
pub use managed::ManagedState;
pub use manifest::{Manifest, OperatorShape, TaskId, TaskSnapshot};
pub use map::MapTable;
pub use rocks::{RocksBackend, RocksBackendFactory, RocksConfig};
pub use snapshot::{
    BackendFactory, BackendKind, MemoryBackendFactory, SnapshotJob, StateHandle, StoredFile,
};
pub use store::{CheckpointStore, GcReport, Recovery, RecoveryWarning, StoreOptions};
pub use table::KeyedTable;
pub use tracker::{
    AbortReason, Aborted, AckOutcome, CheckpointTracker, CompletedCheckpoint, IgnoreReason,
    TrackerStats,
};
