//! The task loops: one long-running tokio task per source, operator and sink
//! instance.
//!
//! Every loop reads without waiting while it can, and flushes its output
//! buffers only when it is about to wait: records travel alone under light load
//! and in full batches under heavy load. User code runs synchronously, one
//! record at a time; an error or a panic ends the task and the query monitor
//! fails the query naming the operator and instance. Markers, watermarks,
//! timers and state flushing are handled here, once, for every operator (see
//! [`checkpointing`](crate::checkpointing)).
//!
//! - [`source`]: [`SourceTask`]: polling, marker injection, event time and
//!   watermarks ([`crate::watermark`]), idleness, micro-batches.
//! - [`operator`]: [`OperatorTask`]: the operator contract's hooks, timers,
//!   side output, and the stepped state flush at markers.
//! - [`sink`]: [`SinkTask`]: writes, pre-commit at markers, commit.

use crate::edge::Disconnected;
use crate::error::OperatorError;

pub mod operator;
pub mod sink;
pub mod source;

pub use operator::OperatorTask;
pub use sink::SinkTask;
pub use source::{SourceMeta, SourceTask};

pub use crate::control::SourceCommand;

/// A task future.
pub type TaskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = TaskResult> + Send>>;

/// Why a task ended early.
#[derive(Debug)]
pub enum TaskFailure {
    /// User code returned an error.
    User(OperatorError),
    /// A neighbour went away (it failed, or the query is being torn down).
    Disconnected,
}

impl From<OperatorError> for TaskFailure {
    fn from(e: OperatorError) -> Self {
        TaskFailure::User(e)
    }
}

impl From<Disconnected> for TaskFailure {
    fn from(_: Disconnected) -> Self {
        TaskFailure::Disconnected
    }
}

/// What a task's future returns.
pub type TaskResult = Result<(), TaskFailure>;
