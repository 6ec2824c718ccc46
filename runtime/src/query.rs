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
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinHandle, JoinSet};

use crate::control::SourceCommand;
use crate::coordinator::CheckpointStats;
use crate::error::QueryError;
use crate::metrics::QueryMetrics;
use crate::plan::{LogicalGraph, NodeKind};
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

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Records measured.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds; `None` when empty.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// Counters of one operator instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceProgress {
    /// Operator name.
    pub operator: String,
    /// Instance index.
    pub instance: usize,
    /// Records read.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Records queued on its input edges (backpressure shows here).
    pub queued_input: u64,
    /// Late records it counted (behind the watermark).
    pub late_records: u64,
    /// Records it dropped on purpose (duplicates).
    pub dropped_records: u64,
    /// Its input watermark (`None` before the first).
    pub watermark: Option<i64>,
}

/// A progress report, like Spark's `lastProgress`.
#[derive(Debug, Clone, Serialize)]
pub struct QueryProgress {
    /// Seconds since start.
    pub elapsed_secs: f64,
    /// Records emitted by all sources.
    pub input_rows: u64,
    /// Records received by all sinks.
    pub output_rows: u64,
    /// Source records per second since the previous report.
    pub input_rows_per_second: f64,
    /// Sink records per second since the previous report.
    pub processed_rows_per_second: f64,
    /// Records queued on all edges right now.
    pub queued_records: u64,
    /// Upper bound of records in flight (all edges' capacities and the
    /// batches at their ends).
    pub max_in_flight_records: u64,
    /// End-to-end latency at the sinks since start (or the last reset).
    pub latency: Option<LatencySummary>,
    /// Per-instance counters.
    pub instances: Vec<InstanceProgress>,
    /// Checkpoint counters, when the query checkpoints.
    pub checkpoint: Option<CheckpointStats>,
    /// Longest marker alignment of any instance so far, microseconds.
    pub max_alignment_us: f64,
}

struct RateMark {
    at: Instant,
    input: u64,
    output: u64,
}

/// A running query.
pub struct Query {
    controls: Vec<UnboundedSender<SourceCommand>>,
    monitor: Option<JoinHandle<Result<(), QueryError>>>,
    result: Option<Result<(), QueryError>>,
    metrics: Arc<QueryMetrics>,
    logical: LogicalGraph,
    in_flight_bound: u64,
    checkpoint_stats: Option<Arc<Mutex<CheckpointStats>>>,
    started: Instant,
    last: Mutex<RateMark>,
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
        let now = Instant::now();
        Self {
            controls: parts.controls,
            monitor: Some(monitor),
            result: None,
            metrics: parts.metrics,
            logical: parts.logical,
            in_flight_bound: parts.in_flight_bound,
            checkpoint_stats: parts.checkpoint_stats,
            started: now,
            last: Mutex::new(RateMark {
                at: now,
                input: 0,
                output: 0,
            }),
        }
    }

    /// The validated plan this query runs.
    pub fn logical(&self) -> &LogicalGraph {
        &self.logical
    }

    /// The query's metrics.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
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
        self.checkpoint_stats
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// A progress report; rates are measured since the previous report.
    pub fn progress(&self) -> QueryProgress {
        let instances = self.metrics.instances();
        let kind_of = |name: &str| {
            self.logical
                .nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.kind)
        };
        let mut input = 0;
        let mut output = 0;
        let mut queued = 0;
        let mut per = Vec::with_capacity(instances.len());
        for m in &instances {
            match kind_of(&m.operator) {
                Some(NodeKind::Source) => input += m.records_out(),
                Some(NodeKind::Sink) => output += m.records_in(),
                _ => {}
            }
            let q = m.queued_input();
            queued += q;
            metrics::gauge!(
                "eddy_edge_queued_records",
                "operator" => m.operator.clone(),
                "instance" => m.instance.to_string()
            )
            .set(q as f64);
            per.push(InstanceProgress {
                operator: m.operator.clone(),
                instance: m.instance,
                records_in: m.records_in(),
                records_out: m.records_out(),
                queued_input: q,
                late_records: m.late_records(),
                dropped_records: m.dropped_records(),
                watermark: Some(m.watermark()).filter(|&w| w != crate::record::NO_TIMESTAMP),
            });
        }
        let now = Instant::now();
        let mut last = self.last.lock().expect("progress lock");
        let dt = now.duration_since(last.at).as_secs_f64().max(1e-9);
        let in_rate = (input - last.input) as f64 / dt;
        let out_rate = (output - last.output) as f64 / dt;
        *last = RateMark {
            at: now,
            input,
            output,
        };
        QueryProgress {
            elapsed_secs: now.duration_since(self.started).as_secs_f64(),
            input_rows: input,
            output_rows: output,
            input_rows_per_second: in_rate,
            processed_rows_per_second: out_rate,
            queued_records: queued,
            max_in_flight_records: self.in_flight_bound,
            latency: LatencySummary::from_histogram(&self.metrics.merged_latency()),
            instances: per,
            checkpoint: self.checkpoint_stats(),
            max_alignment_us: instances
                .iter()
                .map(|m| m.max_alignment_ns())
                .max()
                .unwrap_or(0) as f64
                / 1000.0,
        }
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
