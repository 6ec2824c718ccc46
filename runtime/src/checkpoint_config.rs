//! [`CheckpointConfig`]: where checkpoints go, where keyed state lives, and
//! the knobs of the epoch protocol ([`checkpointing`](crate::checkpointing)).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eddy_checkpoint::{BackendFactory, MemoryBackendFactory, RocksBackendFactory, RocksConfig};

/// Where keyed state lives.
#[derive(Debug, Clone)]
pub enum StateBackendChoice {
    /// In memory; snapshots are full copies. For small state and tests.
    Memory,
    /// RocksDB per task under `local_dir` (scratch space, not the
    /// checkpoint store); snapshots are incremental.
    RocksDb {
        /// Scratch directory for the live databases.
        local_dir: PathBuf,
    },
}

/// Default [`CheckpointConfig::snapshot_niceness`].
pub const DEFAULT_SNAPSHOT_NICENESS: u8 = 10;

/// Default [`CheckpointConfig::full_snapshot_every`].
pub const DEFAULT_FULL_SNAPSHOT_EVERY: u32 = 8;

/// Checkpointing settings.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The checkpoint store's directory.
    pub dir: PathBuf,
    /// Most epochs pending at once.
    pub max_in_flight: usize,
    /// An epoch not complete after this long is aborted.
    pub timeout: Duration,
    /// Completed checkpoints kept.
    pub retain: usize,
    /// Where keyed state lives.
    pub state: StateBackendChoice,
    /// Niceness of the threads that take and persist snapshots (0: as the
    /// process, 19: the lowest priority). Snapshot work then yields to the
    /// operator tasks when cores are short; see `docs/checkpointing.md`.
    pub snapshot_niceness: u8,
    /// RocksDB state: every this many epochs a task's snapshot copies all
    /// its files instead of sharing the earlier checkpoints' (0: never), so
    /// that a damaged shared file cannot make every retained checkpoint
    /// unusable. See `docs/checkpointing.md`.
    pub full_snapshot_every: u32,
    /// When the checkpoint to restore is older than output a sink that
    /// cannot retract has already committed (the newer checkpoints were
    /// damaged), start anyway and commit that output again: at-least-once
    /// for this recovery. Off by default: the start is then refused with
    /// [`BuildError::RecoveryWouldDuplicate`](crate::BuildError::RecoveryWouldDuplicate). Sinks that can retract (the
    /// file sink) move the later output aside instead and stay exactly-once.
    pub accept_duplicates_on_fallback: bool,
}

impl CheckpointConfig {
    /// Checkpoints into `dir`, with in-memory state. How often is the
    /// trigger's business ([`Trigger`](crate::Trigger)).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_in_flight: 2,
            timeout: Duration::from_secs(60),
            retain: 3,
            state: StateBackendChoice::Memory,
            snapshot_niceness: DEFAULT_SNAPSHOT_NICENESS,
            full_snapshot_every: DEFAULT_FULL_SNAPSHOT_EVERY,
            accept_duplicates_on_fallback: false,
        }
    }

    /// Keeps keyed state in RocksDB with scratch space under `local_dir`.
    pub fn with_rocksdb(mut self, local_dir: impl Into<PathBuf>) -> Self {
        self.state = StateBackendChoice::RocksDb {
            local_dir: local_dir.into(),
        };
        self
    }

    pub(crate) fn backend_factory(&self) -> Arc<dyn BackendFactory> {
        match &self.state {
            StateBackendChoice::Memory => Arc::new(MemoryBackendFactory),
            StateBackendChoice::RocksDb { local_dir } => {
                Arc::new(RocksBackendFactory::with_config(
                    local_dir.clone(),
                    RocksConfig {
                        full_snapshot_every: self.full_snapshot_every,
                        ..RocksConfig::default()
                    },
                ))
            }
        }
    }
}
