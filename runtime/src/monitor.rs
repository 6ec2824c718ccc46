//! A read-only, shareable view of a running query: its plan, metrics,
//! checkpoint counters and progress reports.
//!
//! [`Query`](crate::Query) owns the tasks and needs `&mut` to wait for them;
//! a [`QueryMonitor`] is a cheap clone that an HTTP handler, a status
//! printer or a sampler holds instead, and that stays readable after the
//! query finished.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::coordinator::CheckpointStats;
use crate::metrics::QueryMetrics;
use crate::plan::{LogicalGraph, NodeKind};

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
    /// A source instance: the newest event time it stamped.
    pub max_event_time: Option<i64>,
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

/// A shareable view of a running query (see the [module docs](self)).
#[derive(Clone)]
pub struct QueryMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Arc<QueryMetrics>,
    logical: LogicalGraph,
    in_flight_bound: u64,
    checkpoint_stats: Option<Arc<Mutex<CheckpointStats>>>,
    started: Instant,
    last: Mutex<RateMark>,
}

impl QueryMonitor {
    pub(crate) fn new(
        metrics: Arc<QueryMetrics>,
        logical: LogicalGraph,
        in_flight_bound: u64,
        checkpoint_stats: Option<Arc<Mutex<CheckpointStats>>>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                metrics,
                logical,
                in_flight_bound,
                checkpoint_stats,
                started: now,
                last: Mutex::new(RateMark {
                    at: now,
                    input: 0,
                    output: 0,
                }),
            }),
        }
    }

    /// The validated plan the query runs.
    pub fn logical(&self) -> &LogicalGraph {
        &self.inner.logical
    }

    /// The query's metrics.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.inner.metrics
    }

    /// When the query started.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Records the query's sources emitted and its sinks received so far.
    pub fn totals(&self) -> (u64, u64) {
        let (mut input, mut output) = (0, 0);
        for m in self.inner.metrics.instances() {
            match self.kind_of(&m.operator) {
                Some(NodeKind::Source) => input += m.records_out(),
                Some(NodeKind::Sink) => output += m.records_in(),
                _ => {}
            }
        }
        (input, output)
    }

    /// What the node called `name` is.
    pub fn kind_of(&self, name: &str) -> Option<NodeKind> {
        self.inner
            .logical
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.kind)
    }

    /// Checkpoint counters, when the query checkpoints.
    pub fn checkpoint_stats(&self) -> Option<CheckpointStats> {
        self.inner
            .checkpoint_stats
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// A progress report; rates are measured since the previous report
    /// (of any clone of this monitor, or of the query).
    pub fn progress(&self) -> QueryProgress {
        let instances = self.inner.metrics.instances();
        let mut input = 0;
        let mut output = 0;
        let mut queued = 0;
        let mut per = Vec::with_capacity(instances.len());
        for m in &instances {
            match self.kind_of(&m.operator) {
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
                max_event_time: Some(m.max_event_time())
                    .filter(|&w| w != crate::record::NO_TIMESTAMP),
            });
        }
        let now = Instant::now();
        let mut last = self.inner.last.lock().expect("progress lock");
        let dt = now.duration_since(last.at).as_secs_f64().max(1e-9);
        let in_rate = (input - last.input) as f64 / dt;
        let out_rate = (output - last.output) as f64 / dt;
        *last = RateMark {
            at: now,
            input,
            output,
        };
        QueryProgress {
            elapsed_secs: now.duration_since(self.inner.started).as_secs_f64(),
            input_rows: input,
            output_rows: output,
            input_rows_per_second: in_rate,
            processed_rows_per_second: out_rate,
            queued_records: queued,
            max_in_flight_records: self.inner.in_flight_bound,
            latency: LatencySummary::from_histogram(&self.inner.metrics.merged_latency()),
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
