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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod codec;
pub mod durable;
pub mod error;
pub mod frame;
pub mod manifest;
pub mod map;
pub mod rocks;
pub mod snapshot;
pub mod store;
pub mod table;
pub mod tracker;

pub use backend::{MemoryBackend, SharedBackend, StateBackend, WriteOp};
pub use error::{Error, Result};
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
