//! Epoch checkpoints: configuration, the messages between tasks and the
//! coordinator, and the coordinator task.
//!
//! # Protocol (aligned barriers, Chandy-Lamport over FIFO edges)
//! 1. Every `interval` the coordinator opens epoch `e`
//!    ([`CheckpointTracker::try_start`]) and tells every source to inject
//!    `Marker(e)`. A source, between two records, records its offset, acks
//!    `e` with it and sends `Marker(e)` on all its edges.
//! 2. A task with several inputs stops reading an input that delivered
//!    `Marker(e)` until every live input did ([`Inputs`](crate::edge::Inputs)).
//!    Then a stateful task flushes its state tables and takes the synchronous
//!    part of its snapshot (RocksDB: flush + hard-link checkpoint), forwards
//!    `Marker(e)` at once, and persists the snapshot on a blocking thread; it
//!    acks `e` when the snapshot is durable (or declines it on error).
//! 3. A sink pre-commits `e` (stages its output) and acks with what it needs
//!    to commit it.
//! 4. When every task acked `e`, the coordinator writes the manifest (atomic,
//!    CRC-framed), then tells every sink `Commit(e)`. Commit is idempotent.
//! 5. A declined or timed-out epoch is aborted and counted; processing never
//!    stops. At most `max_in_flight` epochs are pending at once.
//!
//! # End of input
//! A source that runs dry (or is stopped) tells the coordinator and waits.
//! When every source has, the coordinator injects a final marker; sources
//! forward it and then end their stream. Sinks, after the end of their
//! input, wait until their last pre-committed epoch is committed, so a
//! finished query has committed all of its output.
//!
//! # Recovery
//! [`Pipeline::start`](crate::Pipeline::start) with a checkpoint directory
//! restores the newest manifest that verifies: sinks that had committed later
//! epochs retract them or the start is refused ([`crate::recovery`]),
//! sources seek to their offsets, stateful tasks reopen their state from
//! their snapshots, sinks re-commit the restored epoch and discard staged
//! output of later ones.

use std::sync::{Arc, Mutex};

use eddy_checkpoint::{
    BackendFactory, CheckpointStore, CheckpointTracker, MemoryBackendFactory, OperatorShape,
    Recovery, SharedBackend, StoreOptions, TaskId,
};
use tokio::sync::mpsc;

pub use crate::checkpoint_config::{
    CheckpointConfig, StateBackendChoice, DEFAULT_FULL_SNAPSHOT_EVERY, DEFAULT_SNAPSHOT_NICENESS,
};
use crate::control::{CheckpointLink, SinkCommand, SourceCommand, TaskEvent};
pub use crate::coordinator::CheckpointStats;
use crate::coordinator::Coordinator;
use crate::error::BuildError;
use crate::plan::{LogicalGraph, LogicalNode, NodeKind};
use crate::recovery::{self, RecoveryReport, Restoring, SinkProbe};
use crate::snapshot_pool::SnapshotPool;
use crate::trigger::Trigger;

/// What checkpointing gives one instance when the query starts.
#[derive(Default)]
pub(crate) struct Wiring {
    /// Its link to the coordinator.
    pub ckpt: Option<CheckpointLink>,
    /// Sources: the encoded offset and watermark to restore.
    pub restore_offset: Option<Vec<u8>>,
    /// Operators: the state backend (restored when recovering).
    pub state: Option<SharedBackend>,
    /// Operators: the encoded meta of the restored checkpoint.
    pub restore_meta: Option<Vec<u8>>,
    /// Sinks: commits from the coordinator.
    pub sink_commands: Option<mpsc::UnboundedReceiver<SinkCommand>>,
    /// Sinks: the restored epoch and the sink's pre-commit information
    /// (`Some(None)`: nothing to restore).
    pub sink_restore: Option<Option<(u64, Vec<u8>)>>,
}

/// Everything `Pipeline::start` needs to wire checkpointing into the tasks.
pub(crate) struct CheckpointSetup {
    config: CheckpointConfig,
    trigger: Trigger,
    store: Option<CheckpointStore>,
    factory: Arc<dyn BackendFactory>,
    restored: Option<eddy_checkpoint::Manifest>,
    /// Newer checkpoints recovery skipped: epoch, and why (with the file at
    /// fault).
    skipped: Vec<(u64, String)>,
    recovery: Option<RecoveryReport>,
    first_epoch: u64,
    shape: Vec<OperatorShape>,
    expected: std::collections::BTreeSet<TaskId>,
    events_tx: mpsc::UnboundedSender<TaskEvent>,
    events_rx: mpsc::UnboundedReceiver<TaskEvent>,
    sinks: Vec<mpsc::UnboundedSender<SinkCommand>>,
    snapshots: Option<SnapshotPool>,
}

fn store_error(e: impl std::fmt::Display) -> BuildError {
    BuildError::Checkpoint(e.to_string())
}

impl CheckpointSetup {
    /// Opens the store and finds the checkpoint to restore, refusing a
    /// checkpoint of another pipeline shape.
    pub(crate) fn prepare(
        config: Option<&CheckpointConfig>,
        trigger: &Trigger,
        logical: &LogicalGraph,
    ) -> Result<Self, BuildError> {
        trigger.validate()?;
        let store = match config {
            Some(c) => Some(
                CheckpointStore::open_with(
                    &c.dir,
                    StoreOptions {
                        retain: c.retain.max(1),
                        ..StoreOptions::default()
                    },
                )
                .map_err(store_error)?,
            ),
            None => None,
        };
        let recovery = match &store {
            Some(s) => s.recover().map_err(store_error)?,
            None => Recovery::default(),
        };
        let dir_name = config
            .map(|c| c.dir.display().to_string())
            .unwrap_or_default();
        for w in &recovery.warnings {
            tracing::warn!(%w, "skipping a checkpoint that does not verify");
        }
        if recovery.manifest.is_none() && !recovery.warnings.is_empty() {
            // Output of those checkpoints may have been committed: starting
            // from scratch would duplicate it.
            let list: Vec<String> = recovery.warnings.iter().map(|w| w.to_string()).collect();
            return Err(BuildError::Checkpoint(format!(
                "no checkpoint in {dir_name} verifies: {}",
                list.join("; ")
            )));
        }
        let shape: Vec<OperatorShape> = logical
            .nodes
            .iter()
            .map(|n| OperatorShape {
                name: n.name.clone(),
                parallelism: n.parallelism as u32,
            })
            .collect();
        if let Some(m) = &recovery.manifest {
            let mut a = m.shape.clone();
            let mut b = shape.clone();
            a.sort_by(|x, y| x.name.cmp(&y.name));
            b.sort_by(|x, y| x.name.cmp(&y.name));
            if a != b {
                let fmt = |v: &[OperatorShape]| {
                    v.iter()
                        .map(|s| format!("{}x{}", s.name, s.parallelism))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(BuildError::IncompatibleCheckpoint(format!(
                    "checkpoint {} of {} has operators [{}], the pipeline has [{}]; \
                     changing operators or parallelism needs a new checkpoint directory",
                    m.epoch,
                    dir_name,
                    fmt(&a),
                    fmt(&b)
                )));
            }
        }
        let expected = logical
            .nodes
            .iter()
            .flat_map(|n| (0..n.parallelism).map(move |i| TaskId::new(n.name.clone(), i as u32)))
            .collect();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let config = config.cloned().unwrap_or_else(|| CheckpointConfig::new(""));
        // One snapshot thread per operator instance (any of them may hold
        // state): an instance's batch is applied at once, never queued
        // behind another's file copies.
        let stateful: usize = logical
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Operator))
            .map(|n| n.parallelism)
            .sum();
        let snapshots = match &store {
            Some(_) if stateful > 0 => Some(
                SnapshotPool::new(stateful, config.snapshot_niceness).map_err(|e| {
                    BuildError::Checkpoint(format!("starting snapshot threads: {e}"))
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            factory: config.backend_factory(),
            config,
            trigger: trigger.clone(),
            first_epoch: recovery.next_epoch(),
            skipped: recovery
                .warnings
                .iter()
                .map(|w| (w.epoch, w.to_string()))
                .collect(),
            recovery: None,
            restored: recovery.manifest,
            store,
            shape,
            expected,
            events_tx,
            events_rx,
            sinks: Vec::new(),
            snapshots,
        })
    }

    /// Checks the restored checkpoint against what the sinks have already
    /// made visible (see [`crate::recovery`]), changing nothing, and numbers
    /// new epochs above every epoch a sink committed. Does nothing without
    /// a store.
    ///
    /// # Errors
    /// As [`recovery::check`].
    pub(crate) fn check_sinks(
        &mut self,
        sinks: &[(&LogicalNode, &dyn SinkProbe)],
    ) -> Result<(), BuildError> {
        if self.store.is_none() {
            return Ok(());
        }
        let report = recovery::check(
            Restoring {
                restored_epoch: self.restored.as_ref().map(|m| m.epoch),
                skipped: self.skipped.iter().map(|(_, w)| w.clone()).collect(),
                accept_duplicates: self.config.accept_duplicates_on_fallback,
            },
            sinks,
        )?;
        if let Some(c) = report.highest_committed_epoch {
            self.first_epoch = self.first_epoch.max(c + 1);
        }
        self.recovery = Some(report);
        Ok(())
    }

    /// The last step of a start, once every backend is restored: sets aside
    /// the manifests recovery skipped, then has the sinks ahead retract
    /// (see [`crate::recovery`]).
    ///
    /// # Errors
    /// As [`recovery::retract`], or the store's errors setting manifests aside.
    pub(crate) fn apply_recovery(
        &mut self,
        sinks: &[(&LogicalNode, &dyn SinkProbe)],
    ) -> Result<(), BuildError> {
        let (Some(store), Some(report)) = (&self.store, self.recovery.as_mut()) else {
            return Ok(());
        };
        let epochs: Vec<u64> = self.skipped.iter().map(|(e, _)| *e).collect();
        let moved = store.set_aside(&epochs).map_err(store_error)?;
        if !moved.is_empty() {
            tracing::warn!(
                ?moved,
                "manifests of checkpoints that do not verify set aside"
            );
        }
        recovery::retract(report, sinks)
    }

    /// Wires instance `instance` of `node`: its coordinator link, and what
    /// it restores.
    pub(crate) fn wire(
        &mut self,
        instance: usize,
        node: &LogicalNode,
    ) -> Result<Wiring, BuildError> {
        let mut build = Wiring::default();
        let task = TaskId::new(node.name.clone(), instance as u32);
        let restored = self.restored.as_ref().and_then(|m| m.tasks.get(&task));
        if self.restored.is_some() && restored.is_none() {
            return Err(BuildError::IncompatibleCheckpoint(format!(
                "the checkpoint has no snapshot of task {task}"
            )));
        }
        match node.kind {
            NodeKind::Source => build.restore_offset = restored.map(|t| t.meta.clone()),
            NodeKind::Operator => {
                // Keyed state lives in the configured backend; state of an
                // operator on a non-keyed stream (small by nature: per
                // instance, not per key) in memory, snapshotted all the
                // same, so it is never silently lost on recovery.
                let factory: &dyn BackendFactory = if node.keyed {
                    self.factory.as_ref()
                } else {
                    &MemoryBackendFactory
                };
                let backend = factory
                    .open(
                        &task,
                        restored.and_then(|t| t.state.as_ref()),
                        self.store.as_ref(),
                    )
                    .map_err(|e| {
                        BuildError::Checkpoint(format!("restoring the state of {task}: {e}"))
                    })?;
                build.state = Some(SharedBackend::new(backend));
                build.restore_meta = restored.map(|t| t.meta.clone()).filter(|m| !m.is_empty());
            }
            NodeKind::Sink => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.sinks.push(tx);
                build.sink_commands = Some(rx);
                build.sink_restore = Some(
                    self.restored
                        .as_ref()
                        .zip(restored)
                        .map(|(m, t)| (m.epoch, t.meta.clone())),
                );
            }
        }
        build.ckpt = Some(CheckpointLink {
            task,
            events: self.events_tx.clone(),
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        });
        Ok(build)
    }

    /// The coordinator task, and the stats it keeps.
    pub(crate) fn into_coordinator(
        self,
        sources: Vec<mpsc::UnboundedSender<SourceCommand>>,
    ) -> (Coordinator, Arc<Mutex<CheckpointStats>>) {
        let stats = Arc::new(Mutex::new(CheckpointStats {
            restored_epoch: self.restored.as_ref().map(|m| m.epoch),
            recovery: self.recovery,
            ..Default::default()
        }));
        let tracker = CheckpointTracker::new(
            self.expected,
            self.config.max_in_flight,
            self.config.timeout.as_millis() as u64,
        )
        .with_first_epoch(self.first_epoch);
        // Drop our own sender: the coordinator sees the channel close when
        // every task is gone.
        drop(self.events_tx);
        (
            Coordinator {
                tracker,
                store: self.store,
                shape: self.shape,
                trigger: self.trigger,
                sources,
                sinks: self.sinks,
                events: self.events_rx,
                stats: stats.clone(),
            },
            stats,
        )
    }
}
