//! The snapshot lifecycle of a state backend, and how backends are opened
//! (fresh or restored).
//!
//! # Lifecycle
//! At epoch marker `e` a task, once aligned:
//! 1. flushes its tables' dirty entries into the backend
//!    ([`KeyedTable::flush`](crate::KeyedTable::flush));
//! 2. calls [`StateBackend::snapshot`] — the
//!    *synchronous part*: it freezes the backend's contents as of now (a
//!    RocksDB checkpoint of hard links, or a copy of an in-memory map) and
//!    returns a [`SnapshotJob`];
//! 3. forwards the marker and goes on processing; the backend may change
//!    freely from here on without affecting the job;
//! 4. runs [`SnapshotJob::persist`] on a blocking thread: it copies what the
//!    store does not hold yet and returns a [`StateHandle`], which goes into
//!    the task's ack.
//!
//! # Invariants
//! - A job captures exactly the state at step 2; later writes never leak in.
//! - Jobs of one backend may run concurrently and in any order; each is
//!   self-contained. A job dropped without `persist` (aborted epoch) cleans
//!   up its local files.
//! - A [`StateHandle`] names every file needed to restore, with its size
//!   and CRC32, so recovery can verify a checkpoint before using it.
//! - [`BackendFactory::open`] with a handle restores exactly the state the
//!   handle describes, or fails; it never returns a partly restored backend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{MemoryBackend, StateBackend};
use crate::codec;
use crate::error::{Error, Result};
use crate::manifest::TaskId;
use crate::store::CheckpointStore;

/// Which backend wrote a [`StateHandle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendKind {
    /// [`MemoryBackend`]: one framed file holding every entry.
    Memory,
    /// [`RocksBackend`](crate::RocksBackend): the files of a RocksDB checkpoint.
    RocksDb,
}

/// One file in the checkpoint store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredFile {
    /// Path relative to the store's root, `/`-separated.
    pub path: String,
    /// The name the file has in the backend's local directory (for RocksDB,
    /// the name in the DB directory: `000012.sst`, `CURRENT`, ...).
    pub local_name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32 (crc32fast) of the whole file.
    pub crc32: u32,
}

/// What a persisted snapshot consists of: enough to verify and restore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHandle {
    /// The backend that wrote it (and that can restore it).
    pub kind: BackendKind,
    /// Every file the snapshot needs, including files an earlier checkpoint
    /// stored and this one references (incremental checkpoints).
    pub files: Vec<StoredFile>,
    /// Bytes this snapshot newly wrote to the store.
    pub bytes_written: u64,
}

impl StateHandle {
    /// Bytes of all files the snapshot references.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The asynchronous part of a snapshot: makes the frozen state durable in a
/// [`CheckpointStore`]. Runs on a blocking thread while the task goes on.
pub trait SnapshotJob: Send + 'static {
    /// Writes the snapshot of `task` for `epoch` into `store` and describes
    /// what it wrote.
    ///
    /// # Errors
    /// Any I/O error of the store (full disk, read-only directory) or of the
    /// local snapshot files; the epoch's checkpoint then fails (the task
    /// declines it) and processing continues.
    fn persist(
        self: Box<Self>,
        store: &CheckpointStore,
        task: &TaskId,
        epoch: u64,
    ) -> Result<StateHandle>;
}

/// Opens the state backend of a task: empty, or restored from a snapshot.
pub trait BackendFactory: Send + Sync {
    /// The backend of `task`. With `restore`, its contents are those of the
    /// snapshot, read from `store`.
    ///
    /// # Errors
    /// [`Error::Restore`] when the handle belongs to another kind of backend
    /// or no store is given; [`Error::Corrupt`], [`Error::Truncated`],
    /// [`Error::Missing`] (each naming the file) when a snapshot file does not
    /// verify; I/O and backend errors otherwise.
    fn open(
        &self,
        task: &TaskId,
        restore: Option<&StateHandle>,
        store: Option<&CheckpointStore>,
    ) -> Result<Box<dyn StateBackend>>;
}

/// Checks that a handle can be restored by a backend of `kind` and that a
/// store was given; returns the store.
pub(crate) fn restore_source<'a>(
    kind: BackendKind,
    handle: &StateHandle,
    store: Option<&'a CheckpointStore>,
) -> Result<&'a CheckpointStore> {
    if handle.kind != kind {
        return Err(Error::Restore(format!(
            "a {:?} snapshot cannot be restored by the {kind:?} backend",
            handle.kind
        )));
    }
    store.ok_or_else(|| Error::Restore("a snapshot handle was given without a store".into()))
}

/// Opens [`MemoryBackend`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackendFactory;

/// The name of the single file of a memory snapshot.
const MEMORY_LOCAL_NAME: &str = "memory.snapshot";

impl BackendFactory for MemoryBackendFactory {
    fn open(
        &self,
        _task: &TaskId,
        restore: Option<&StateHandle>,
        store: Option<&CheckpointStore>,
    ) -> Result<Box<dyn StateBackend>> {
        let Some(handle) = restore else {
            return Ok(Box::new(MemoryBackend::new()));
        };
        let store = restore_source(BackendKind::Memory, handle, store)?;
        let [file] = handle.files.as_slice() else {
            return Err(Error::Restore(format!(
                "a memory snapshot has exactly one file, this handle lists {}",
                handle.files.len()
            )));
        };
        let payload = store.read_framed(file)?;
        let entries: BTreeMap<Vec<u8>, Vec<u8>> =
            codec::decode(&payload).map_err(|e| Error::Corrupt {
                path: store.path_of(file),
                reason: e.to_string(),
            })?;
        Ok(Box::new(MemoryBackend::from_entries(entries)))
    }
}

/// The snapshot of a [`MemoryBackend`]: a copy of its map.
pub(crate) struct MemorySnapshotJob {
    pub(crate) entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl SnapshotJob for MemorySnapshotJob {
    fn persist(
        self: Box<Self>,
        store: &CheckpointStore,
        task: &TaskId,
        epoch: u64,
    ) -> Result<StateHandle> {
        let payload = codec::encode(&self.entries)?;
        let name = format!("e{epoch:020}-{MEMORY_LOCAL_NAME}");
        let file = store.put_frame(epoch, task, &name, MEMORY_LOCAL_NAME, &payload)?;
        store.sync_task_dir(task)?;
        Ok(StateHandle {
            kind: BackendKind::Memory,
            bytes_written: file.size,
            files: vec![file],
        })
    }
}
