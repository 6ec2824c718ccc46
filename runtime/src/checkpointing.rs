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
//! restores the newest manifest that verifies: sources seek to their offsets,
//! stateful tasks reopen their state from their snapshots, sinks re-commit
//! the restored epoch and discard staged output of later ones.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_checkpoint::{
    AckOutcome, BackendFactory, CheckpointStore, CheckpointTracker, MemoryBackendFactory,
    OperatorShape, RocksBackendFactory, SharedBackend, StoreOptions, TaskId, TaskSnapshot,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::BuildError;
use crate::graph::{InstanceBuild, LogicalGraph, LogicalNode, NodeKind};
use crate::message::{EpochMarker, MarkerKind};
use crate::task::{SourceCommand, TaskFailure, TaskResult};

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

/// Checkpointing settings.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The checkpoint store's directory.
    pub dir: PathBuf,
    /// Time between two epochs.
    pub interval: Duration,
    /// Most epochs pending at once.
    pub max_in_flight: usize,
    /// An epoch not complete after this long is aborted.
    pub timeout: Duration,
    /// Completed checkpoints kept.
    pub retain: usize,
    /// Where keyed state lives.
    pub state: StateBackendChoice,
}

impl CheckpointConfig {
    /// Checkpoints into `dir` every `interval`, with in-memory state.
    pub fn new(dir: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            dir: dir.into(),
            interval,
            max_in_flight: 2,
            timeout: Duration::from_secs(60),
            retain: 3,
            state: StateBackendChoice::Memory,
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
                Arc::new(RocksBackendFactory::new(local_dir.clone()))
            }
        }
    }
}

/// What tasks tell the coordinator.
#[derive(Debug)]
pub enum TaskEvent {
    /// The task's part of epoch `epoch` is durable.
    Ack {
        /// The epoch.
        epoch: u64,
        /// The task.
        task: TaskId,
        /// Its snapshot.
        snapshot: TaskSnapshot,
    },
    /// The task could not snapshot epoch `epoch`.
    Decline {
        /// The epoch.
        epoch: u64,
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
    },
    /// A source has no more input (exhausted or stopped).
    SourceFinished,
}

/// What the coordinator tells a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkCommand {
    /// Every epoch up to and including this one is in a durable manifest:
    /// make its output visible.
    Commit(u64),
    /// The final checkpoint failed: stop waiting for a commit.
    Abandon,
}

/// A task's link to the coordinator.
#[derive(Clone)]
pub struct CheckpointLink {
    /// The task.
    pub task: TaskId,
    /// Events to the coordinator.
    pub events: mpsc::UnboundedSender<TaskEvent>,
    /// The store snapshots go to.
    pub store: CheckpointStore,
}

impl CheckpointLink {
    /// Acks `epoch` with `snapshot` (ignored if the coordinator is gone).
    pub fn ack(&self, epoch: u64, snapshot: TaskSnapshot) {
        let _ = self.events.send(TaskEvent::Ack {
            epoch,
            task: self.task.clone(),
            snapshot,
        });
    }

    /// Declines `epoch`.
    pub fn decline(&self, epoch: u64, reason: String) {
        let _ = self.events.send(TaskEvent::Decline {
            epoch,
            task: self.task.clone(),
            reason,
        });
    }
}

/// Checkpoint counters, reported in [`QueryProgress`](crate::QueryProgress).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CheckpointStats {
    /// Epochs started.
    pub started: u64,
    /// Checkpoints completed (manifest durable).
    pub completed: u64,
    /// Checkpoints that failed: declined, timed out, or manifest not written.
    pub failed: u64,
    /// The newest completed epoch.
    pub last_completed_epoch: Option<u64>,
    /// Start to manifest durable, of the newest completed checkpoint.
    pub last_duration_ms: Option<u64>,
    /// Bytes the newest completed checkpoint wrote.
    pub last_bytes_written: Option<u64>,
    /// Bytes of state the newest completed checkpoint references.
    pub last_state_bytes: Option<u64>,
    /// The epoch restored at start, if any.
    pub restored_epoch: Option<u64>,
    /// The newest failure, for operators of the query.
    pub last_failure: Option<String>,
}

/// The coordinator task's inputs.
pub(crate) struct Coordinator {
    pub tracker: CheckpointTracker,
    pub store: CheckpointStore,
    pub shape: Vec<OperatorShape>,
    pub interval: Duration,
    pub sources: Vec<mpsc::UnboundedSender<SourceCommand>>,
    pub sinks: Vec<mpsc::UnboundedSender<SinkCommand>>,
    pub events: mpsc::UnboundedReceiver<TaskEvent>,
    pub stats: Arc<Mutex<CheckpointStats>>,
}

fn unix_ms() -> u64 {
    crate::record::now_ns() / 1_000_000
}

impl Coordinator {
    fn stats(&self) -> std::sync::MutexGuard<'_, CheckpointStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, epoch: u64, reason: String) {
        tracing::warn!(epoch, %reason, "checkpoint failed");
        metrics::counter!("eddy_checkpoints_failed_total").increment(1);
        let mut s = self.stats();
        s.failed += 1;
        s.last_failure = Some(format!("epoch {epoch}: {reason}"));
    }

    fn start_epoch(&mut self, now_ms: u64, kind: Option<MarkerKind>) -> Option<u64> {
        let epoch = self.tracker.try_start(now_ms)?;
        self.stats().started += 1;
        let marker = EpochMarker {
            epoch,
            kind: kind.unwrap_or(MarkerKind::Checkpoint),
        };
        let cmd = if kind.is_some() {
            SourceCommand::FinalMarker(marker)
        } else {
            SourceCommand::Marker(marker)
        };
        for s in &self.sources {
            let _ = s.send(cmd);
        }
        Some(epoch)
    }

    /// The final epoch failed. Sources already ended their streams, so it
    /// cannot be retried: sinks stop waiting and the query fails, its last
    /// epoch's output staged but not committed (a restart recovers it).
    fn abandon(&self, epoch: u64) -> TaskResult {
        for s in &self.sinks {
            let _ = s.send(SinkCommand::Abandon);
        }
        Err(TaskFailure::User(crate::OperatorError::new(format!(
            "the final checkpoint (epoch {epoch}) failed; its output was not committed"
        ))))
    }

    /// Runs until the final epoch is committed (or every task is gone).
    pub async fn run(mut self) -> TaskResult {
        let origin = Instant::now();
        let now_ms = |o: Instant| o.elapsed().as_millis() as u64;
        let mut ticker = tokio::time::interval_at(origin + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finished_sources = 0;
        let mut final_epoch: Option<u64> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    for a in self.tracker.tick(now_ms(origin)) {
                        self.fail(a.epoch, format!("{:?}", a.reason));
                        if Some(a.epoch) == final_epoch {
                            return self.abandon(a.epoch);
                        }
                    }
                    if finished_sources == self.sources.len() {
                        if final_epoch.is_none() {
                            final_epoch = self.start_epoch(now_ms(origin), Some(MarkerKind::Checkpoint));
                        }
                    } else {
                        self.start_epoch(now_ms(origin), None);
                    }
                }
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    match ev {
                        TaskEvent::SourceFinished => {
                            finished_sources += 1;
                            if finished_sources == self.sources.len() && final_epoch.is_none() {
                                final_epoch = self.start_epoch(now_ms(origin), Some(MarkerKind::Checkpoint));
                            }
                        }
                        TaskEvent::Decline { epoch, task, reason } => {
                            if let Some(a) = self.tracker.decline(epoch, &task, reason) {
                                self.fail(a.epoch, format!("{:?}", a.reason));
                                if Some(a.epoch) == final_epoch {
                                    return self.abandon(a.epoch);
                                }
                            }
                        }
                        TaskEvent::Ack { epoch, task, snapshot } => {
                            match self.tracker.ack(epoch, &task, snapshot, now_ms(origin)) {
                                AckOutcome::Complete(done) => {
                                    for sub in &done.subsumed {
                                        tracing::debug!(epoch = sub, by = done.epoch, "checkpoint subsumed");
                                    }
                                    let epoch = done.epoch;
                                    let started = done.started_ms;
                                    let manifest = done.into_manifest(self.shape.clone(), unix_ms());
                                    let written = manifest.bytes_written();
                                    let total = manifest.total_state_bytes();
                                    let store = self.store.clone();
                                    let res = tokio::task::spawn_blocking(move || store.write_manifest(&manifest)).await;
                                    match res {
                                        Ok(Ok(_gc)) => {
                                            let dur = now_ms(origin).saturating_sub(started);
                                            metrics::counter!("eddy_checkpoints_completed_total").increment(1);
                                            metrics::histogram!("eddy_checkpoint_duration_ms").record(dur as f64);
                                            metrics::gauge!("eddy_checkpoint_bytes_written").set(written as f64);
                                            {
                                                let mut s = self.stats();
                                                s.completed += 1;
                                                s.last_completed_epoch = Some(epoch);
                                                s.last_duration_ms = Some(dur);
                                                s.last_bytes_written = Some(written);
                                                s.last_state_bytes = Some(total);
                                            }
                                            for s in &self.sinks {
                                                let _ = s.send(SinkCommand::Commit(epoch));
                                            }
                                            if final_epoch.is_some_and(|f| epoch >= f) {
                                                return Ok(());
                                            }
                                        }
                                        Ok(Err(e)) => {
                                            self.fail(epoch, format!("writing the manifest: {e}"));
                                            if final_epoch.is_some_and(|f| epoch >= f) {
                                                return self.abandon(epoch);
                                            }
                                        }
                                        Err(e) => {
                                            self.fail(epoch, format!("manifest writer: {e}"));
                                            if final_epoch.is_some_and(|f| epoch >= f) {
                                                return self.abandon(epoch);
                                            }
                                        }
                                    }
                                }
                                AckOutcome::Pending { .. } | AckOutcome::Ignored(_) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Everything `Pipeline::start` needs to wire checkpointing into the tasks.
pub(crate) struct CheckpointSetup {
    config: CheckpointConfig,
    store: CheckpointStore,
    factory: Arc<dyn BackendFactory>,
    restored: Option<eddy_checkpoint::Manifest>,
    first_epoch: u64,
    shape: Vec<OperatorShape>,
    expected: std::collections::BTreeSet<TaskId>,
    events_tx: mpsc::UnboundedSender<TaskEvent>,
    events_rx: mpsc::UnboundedReceiver<TaskEvent>,
    sinks: Vec<mpsc::UnboundedSender<SinkCommand>>,
}

fn store_error(e: impl std::fmt::Display) -> BuildError {
    BuildError::Checkpoint(e.to_string())
}

impl CheckpointSetup {
    /// Opens the store and finds the checkpoint to restore, refusing a
    /// checkpoint of another pipeline shape.
    pub(crate) fn prepare(
        config: &CheckpointConfig,
        logical: &LogicalGraph,
    ) -> Result<Self, BuildError> {
        if config.interval.is_zero() {
            return Err(BuildError::Config(
                "checkpoint interval must be above zero".into(),
            ));
        }
        let store = CheckpointStore::open_with(
            &config.dir,
            StoreOptions {
                retain: config.retain.max(1),
                ..StoreOptions::default()
            },
        )
        .map_err(store_error)?;
        let recovery = store.recover().map_err(store_error)?;
        for w in &recovery.warnings {
            tracing::warn!(%w, "skipping a checkpoint that does not verify");
        }
        if recovery.manifest.is_none() && !recovery.warnings.is_empty() {
            // Output of those checkpoints may have been committed: starting
            // from scratch would duplicate it.
            let list: Vec<String> = recovery.warnings.iter().map(|w| w.to_string()).collect();
            return Err(BuildError::Checkpoint(format!(
                "no checkpoint in {} verifies: {}",
                config.dir.display(),
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
                    config.dir.display(),
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
        Ok(Self {
            config: config.clone(),
            factory: config.backend_factory(),
            first_epoch: recovery.next_epoch(),
            restored: recovery.manifest,
            store,
            shape,
            expected,
            events_tx,
            events_rx,
            sinks: Vec::new(),
        })
    }

    /// Wires one instance: its coordinator link, and what it restores.
    pub(crate) fn wire(
        &mut self,
        build: &mut InstanceBuild,
        node: &LogicalNode,
    ) -> Result<(), BuildError> {
        let task = TaskId::new(node.name.clone(), build.instance as u32);
        let restored = self.restored.as_ref().and_then(|m| m.tasks.get(&task));
        if self.restored.is_some() && restored.is_none() {
            return Err(BuildError::IncompatibleCheckpoint(format!(
                "the checkpoint has no snapshot of task {task}"
            )));
        }
        match node.kind {
            NodeKind::Source => build.restore_offset = restored.map(|t| t.meta.clone()),
            NodeKind::Operator if node.keyed => {
                let backend = self
                    .factory
                    .open(
                        &task,
                        restored.and_then(|t| t.state.as_ref()),
                        Some(&self.store),
                    )
                    .map_err(|e| {
                        BuildError::Checkpoint(format!("restoring the state of {task}: {e}"))
                    })?;
                build.state = Some(SharedBackend::new(backend));
            }
            NodeKind::Operator => {}
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
        });
        Ok(())
    }

    /// The coordinator task, and the stats it keeps.
    pub(crate) fn into_coordinator(
        self,
        sources: Vec<mpsc::UnboundedSender<SourceCommand>>,
    ) -> (Coordinator, Arc<Mutex<CheckpointStats>>) {
        let stats = Arc::new(Mutex::new(CheckpointStats {
            restored_epoch: self.restored.as_ref().map(|m| m.epoch),
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
                interval: self.config.interval,
                sources,
                sinks: self.sinks,
                events: self.events_rx,
                stats: stats.clone(),
            },
            stats,
        )
    }
}
