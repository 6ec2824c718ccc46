//! The latency harness behind `eddy bench latency`: runs a workload at a fixed
//! input rate and measures end-to-end latency per record (creation at the
//! generator to arrival at the sink) in an hdrhistogram.

use std::time::Duration;

use serde::Serialize;

use crate::jobs;
use crate::prelude::*;
use crate::runtime::query::LatencySummary;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// W1: generator -> map -> sink.
    Passthrough,
    /// W2: generator -> map -> key_by -> count -> sink (10k keys).
    KeyedCount,
}

impl Workload {
    /// Short name (`w1`, `w2`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Passthrough => "w1-passthrough",
            Workload::KeyedCount => "w2-keyed-count",
        }
    }
}

/// One measurement to make.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// What to run.
    pub workload: Workload,
    /// Input records per second.
    pub rate: u64,
    /// Measured time (after warm-up).
    pub duration: Duration,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Parallelism of every operator.
    pub parallelism: usize,
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Workload name.
    pub workload: String,
    /// Trigger mode.
    pub mode: String,
    /// Target input rate.
    pub rate: u64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Input rate reached during the measurement.
    pub achieved_rate: f64,
    /// Whether the rate was held (achieved at least 95% of target).
    pub sustained: bool,
}

/// Runs one cell. Must run on a multi-threaded tokio runtime sized to the cores.
pub async fn run_latency(run: &LatencyRun) -> anyhow::Result<LatencyResult> {
    let pipeline = Pipeline::new();
    let gen = GeneratorConfig {
        rate_per_sec: Some(run.rate),
        key_space: 10_000,
        busy_wait: true,
        ..Default::default()
    };
    match run.workload {
        Workload::Passthrough => {
            pipeline
                .source("generator", GeneratorSource::new(gen))
                .set_parallelism(run.parallelism)
                .map(|e: GenEvent| (e.key, e.value))
                .set_parallelism(run.parallelism)
                .sink("sink", DiscardSink)
                .set_parallelism(run.parallelism);
        }
        Workload::KeyedCount => jobs::keyed_count(&pipeline, gen, run.parallelism, DiscardSink),
    }
    let mut query = pipeline.start()?;
    tokio::time::sleep(run.warmup).await;
    query.metrics().reset_latency();
    let _ = query.progress();
    tokio::time::sleep(run.duration).await;
    let progress = query.progress();
    query.stop().await?;
    let lat = LatencySummary::from_histogram(&query.metrics().merged_latency())
        .ok_or_else(|| anyhow::anyhow!("no latency measured"))?;
    let achieved = progress.input_rows_per_second;
    Ok(LatencyResult {
        workload: run.workload.name().to_string(),
        mode: "continuous".to_string(),
        rate: run.rate,
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        p999_us: lat.p999_us,
        max_us: lat.max_us,
        achieved_rate: achieved,
        sustained: achieved >= 0.95 * run.rate as f64,
    })
}
