//! The handle of a running pipeline.
//!
//! # Lifecycle
//! - [`Pipeline::start`](crate::Pipeline::start) spawns one task per instance
//!   and a monitor task that owns them all (a `JoinSet`).
//! - The query finishes when every task finished: bounded sources ran dry, or
//!   [`Query::stop`] asked the sources to stop; either way end-of-stream flows
//!   through every edge, so everything in flight is drained into the sinks.
//! - The first error or panic in user code fails the query: the monitor aborts
//!   every other task and [`Query::await_termination`] returns a
//!   [`QueryError`] naming the operator and instance. A task that fails only
//!   because a neighbour went away is never reported as the cause.
//! - Dropping the handle aborts the monitor, which drops the `JoinSet` and so
//!   aborts every task: nothing is left running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinHandle, JoinSet};

use crate::control::SourceCommand;
use crate::coordinator::CheckpointStats;
use crate::error::QueryError;
use crate::metrics::QueryMetrics;
pub use crate::monitor::{InstanceProgress, LatencySummary, QueryMonitor, QueryProgress};
use crate::plan::LogicalGraph;
use crate::task::{TaskFailure, TaskFuture};

/// Which instance a task runs.
#[derive(Debug, Clone)]
pub(crate) struct TaskInfo {
    pub operator: String,
    pub instance: usize,
}

pub(crate) struct QueryParts {
    pub tasks: Vec<(TaskInfo, TaskFuture)>,
    pub controls: Vec<UnboundedSender<SourceCommand>>,
    pub metrics: Arc<QueryMetrics>,
    pub logical: LogicalGraph,
    pub in_flight_bound: u64,
    pub checkpoint_stats: Option<Arc<Mutex<CheckpointStats>>>,
}

/// A running query.
pub struct Query {
    controls: Vec<UnboundedSender<SourceCommand>>,
    monitor: Option<JoinHandle<Result<(), QueryError>>>,
    result: Option<Result<(), QueryError>>,
    view: QueryMonitor,
}

impl Query {
    pub(crate) fn spawn(parts: QueryParts) -> Self {
        let mut set = JoinSet::new();
        let mut names = HashMap::new();
        for (info, fut) in parts.tasks {
            let handle = set.spawn(fut);
            names.insert(handle.id(), info);
        }
        let monitor = tokio::spawn(monitor(set, names));
        Self {
            controls: parts.controls,
            monitor: Some(monitor),
            result: None,
            view: QueryMonitor::new(
                parts.metrics,
                parts.logical,
                parts.in_flight_bound,
                parts.checkpoint_stats,
            ),
        }
    }

    /// A read-only handle on this query's metrics and progress that can be
    /// cloned and shared (with an HTTP handler, a status printer) and
    /// outlives the query.
    pub fn monitor(&self) -> QueryMonitor {
        self.view.clone()
    }

    /// The validated plan this query runs.
    pub fn logical(&self) -> &LogicalGraph {
        self.view.logical()
    }

    /// The query's metrics.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        self.view.metrics()
    }

    /// Waits until every task finished.
    ///
    /// # Errors
    /// The first failure of user code, naming the operator and instance.
    ///
    /// # Cancel safety
    /// Cancel safe: the query keeps running and a later call waits again.
    pub async fn await_termination(&mut self) -> Result<(), QueryError> {
        if let Some(r) = &self.result {
            return r.clone();
        }
        let monitor = self
            .monitor
            .as_mut()
            .expect("monitor present until a result");
        let r = match monitor.await {
            Ok(r) => r,
            Err(_) => Err(QueryError::Cancelled),
        };
        self.monitor = None;
        self.result = Some(r.clone());
        r
    }

    /// Whether every task finished.
    pub fn is_finished(&self) -> bool {
        self.result.is_some() || self.monitor.as_ref().is_none_or(|m| m.is_finished())
    }

    /// Stops gracefully: sources stop reading and send end of stream, every
    /// record in flight is drained into the sinks, then every task finishes.
    ///
    /// # Errors
    /// As [`await_termination`](Self::await_termination).
    ///
    /// # Cancel safety
    /// Cancel safe: the stop request is sent at once; a later
    /// `await_termination` waits for the drain.
    pub async fn stop(&mut self) -> Result<(), QueryError> {
        for c in &self.controls {
            let _ = c.send(SourceCommand::Stop);
        }
        self.await_termination().await
    }

    /// Checkpoint counters, when the query checkpoints.
    pub fn checkpoint_stats(&self) -> Option<CheckpointStats> {
        self.view.checkpoint_stats()
    }

    /// A progress report; rates are measured since the previous report
    /// (of any clone of its [`monitor`](Self::monitor)).
    pub fn progress(&self) -> QueryProgress {
        self.view.progress()
    }

    /// The query's metrics in Prometheus' text format
    /// ([`crate::prometheus`]).
    pub fn prometheus_text(&self) -> String {
        self.view.prometheus_text()
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        if let Some(m) = &self.monitor {
            m.abort();
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => crate::error::panic_text(&*payload),
        Err(e) => e.to_string(),
    }
}

/// Owns every task; returns when all finished, or at the first failure after
/// tearing the rest down.
async fn monitor(
    mut set: JoinSet<Result<(), TaskFailure>>,
    names: HashMap<tokio::task::Id, TaskInfo>,
) -> Result<(), QueryError> {
    let mut cause: Option<QueryError> = None;
    let mut secondary: Option<QueryError> = None;
    let mut tearing_down = false;
    while let Some(res) = set.join_next_with_id().await {
        let (id, outcome) = match res {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let info = names.get(&id).cloned().unwrap_or(TaskInfo {
            operator: "?".into(),
            instance: 0,
        });
        let err = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(TaskFailure::User(e))) => QueryError::OperatorFailed {
                operator: info.operator,
                instance: info.instance,
                message: e.message,
            },
            Ok(Err(TaskFailure::Disconnected)) => {
                secondary.get_or_insert(QueryError::OperatorFailed {
                    operator: info.operator,
                    instance: info.instance,
                    message: "a neighbouring task went away".into(),
                });
                if !tearing_down {
                    tearing_down = true;
                    set.abort_all();
                }
                continue;
            }
            Err(e) if e.is_panic() => QueryError::OperatorPanicked {
                operator: info.operator,
                instance: info.instance,
                message: panic_message(e),
            },
            Err(_) => continue, // cancelled by our own abort_all
        };
        if cause.is_none() {
            cause = Some(err);
        }
        if !tearing_down {
            tearing_down = true;
            set.abort_all();
        }
    }
    match (cause, secondary) {
        (Some(e), _) | (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}
