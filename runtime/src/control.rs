//! The control plane: every message between the query, the coordinator
//! and the tasks, in one place (data-plane messages, on edges, are in
//! [`message`](crate::message)).
//!
//! - query/coordinator -> source task: [`SourceCommand`];
//! - coordinator -> sink task: [`SinkCommand`];
//! - task -> coordinator: [`TaskEvent`], sent through a task's
//!   [`CheckpointLink`].

use eddy_checkpoint::{CheckpointStore, TaskId, TaskSnapshot};
use tokio::sync::mpsc;

use crate::message::EpochMarker;
use crate::snapshot_pool::SnapshotPool;

/// Commands the query sends to a source task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCommand {
    /// Inject this marker between two records.
    Marker(EpochMarker),
    /// Inject this marker, then end the stream (sent once every source ran
    /// dry or was stopped).
    FinalMarker(EpochMarker),
    /// Stop reading.
    Stop,
    /// Micro-batch mode: fix the end of the next batch at what is available
    /// now and report whether anything is.
    Probe,
    /// Micro-batch mode: emit records up to the fixed end, then this marker.
    Batch(EpochMarker),
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
    /// Micro-batch mode: a source's answer to a probe.
    Probed {
        /// Records are available for the next batch.
        has_data: bool,
        /// The source is exhausted (or stopped).
        finished: bool,
    },
    /// Micro-batch mode: records a source emitted in epoch `epoch`.
    SourceRows {
        /// The epoch.
        epoch: u64,
        /// Records emitted.
        rows: u64,
    },
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
    /// The store snapshots go to (`None`: micro-batches without a
    /// checkpoint directory; epochs commit without a manifest).
    pub store: Option<CheckpointStore>,
    /// Where snapshots are taken and persisted (with `store`).
    pub(crate) snapshots: Option<SnapshotPool>,
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
