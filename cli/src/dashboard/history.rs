//! What the dashboard plots over time, sampled once a second from a
//! [`QueryMonitor`]: input and output rates, the latency percentiles of
//! the records that became visible in that second (not since the start),
//! and every completed checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use eddy::runtime::metrics::new_latency_histogram;
use eddy::runtime::plan::NodeKind;
use eddy::runtime::QueryMonitor;

/// Seconds of samples kept.
const SAMPLES: usize = 300;
/// Checkpoints kept.
const CHECKPOINTS: usize = 100;

/// One second of the query.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the query started.
    pub t: f64,
    /// Source records per second.
    pub input_per_s: f64,
    /// Sink records per second.
    pub output_per_s: f64,
    /// Records queued on all edges.
    pub queued: u64,
    /// Latency of the records that became visible this second, µs
    /// (`None`: none did).
    pub p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<f64>,
    /// Per operator, records per second: emitted, or received for a sink.
    pub operators: BTreeMap<String, f64>,
}

/// One completed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointPoint {
    /// Its epoch.
    pub epoch: u64,
    /// Seconds since the query started, when it was seen completed.
    pub t: f64,
    /// Start to manifest durable, ms.
    pub duration_ms: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes of state referenced.
    pub state_bytes: u64,
    /// The longest last alignment of any instance, µs.
    pub alignment_us: f64,
}

/// The sampled history (see the [module docs](self)).
#[derive(Debug, Default, Clone, Serialize)]
pub struct History {
    /// Newest last.
    pub samples: VecDeque<Sample>,
    /// Newest last.
    pub checkpoints: VecDeque<CheckpointPoint>,
}

/// Samples `monitor` every second into `history` until aborted.
pub async fn sample(monitor: QueryMonitor, history: Arc<Mutex<History>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = new_latency_histogram();
    let mut last = (0.0f64, 0u64, 0u64);
    let mut last_completed = 0;
    let mut last_ops: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tick.tick().await;
        let t = monitor.started().elapsed().as_secs_f64();
        let (input, output) = monitor.totals();
        let mut now = monitor.metrics().merged_latency();
        let all = now.clone();
        // The histogram only grows unless someone reset it; then this
        // second's records are all of it.
        if now.subtract(&seen).is_err() {
            now = all.clone();
        }
        seen = all;
        let pct = |q: f64| (!now.is_empty()).then(|| now.value_at_quantile(q) as f64 / 1000.0);
        let dt = (t - last.0).max(1e-3);
        let queued = monitor
            .metrics()
            .instances()
            .iter()
            .map(|m| m.queued_input())
            .sum();
        let ops = per_operator(&monitor);
        let operators = ops
            .iter()
            .map(|(name, &n)| {
                let before = last_ops.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(before) as f64 / dt)
            })
            .collect();
        last_ops = ops;
        let s = Sample {
            t,
            input_per_s: input.saturating_sub(last.1) as f64 / dt,
            output_per_s: output.saturating_sub(last.2) as f64 / dt,
            queued,
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            operators,
        };
        last = (t, input, output);
        let point = monitor.checkpoint_stats().and_then(|c| {
            let fresh = c.completed > last_completed;
            last_completed = c.completed;
            fresh.then(|| CheckpointPoint {
                epoch: c.last_completed_epoch.unwrap_or(0),
                t,
                duration_ms: c.last_duration_ms.unwrap_or(0),
                bytes_written: c.last_bytes_written.unwrap_or(0),
                state_bytes: c.last_state_bytes.unwrap_or(0),
                alignment_us: monitor
                    .metrics()
                    .instances()
                    .iter()
                    .map(|m| m.last_alignment_ns())
                    .max()
                    .unwrap_or(0) as f64
                    / 1000.0,
            })
        });
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        if h.samples.len() == SAMPLES {
            h.samples.pop_front();
        }
        h.samples.push_back(s);
        if let Some(p) = point {
            if h.checkpoints.len() == CHECKPOINTS {
                h.checkpoints.pop_front();
            }
            h.checkpoints.push_back(p);
        }
    }
}

/// Per operator, records emitted (received, for a sink) so far.
fn per_operator(monitor: &QueryMonitor) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in monitor.metrics().instances() {
        let sink = monitor.kind_of(&m.operator) == Some(NodeKind::Sink);
        *out.entry(m.operator.clone()).or_default() += if sink {
            m.records_in()
        } else {
            m.records_out()
        };
    }
    out
}
