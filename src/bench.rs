//! The latency harness behind `eddy bench latency`: runs the same workloads
//! under continuous processing and under micro-batches, at fixed input
//! rates, and measures end-to-end latency per record (creation at the
//! generator, or at an external load generator, to visibility at the sink)
//! in an hdrhistogram. Micro-batch output is visible when its batch commits,
//! so micro-batch latency is measured at commit.
//!
//! Workloads: W1 passthrough (source -> map -> sink) and W2 keyed running
//! count over 10k keys (source -> map -> key_by -> count -> sink). Both
//! checkpoint to a scratch directory with RocksDB state: continuous mode
//! every second, micro-batch mode at every batch (as Spark commits offsets
//! per batch).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::tcp::TcpLineSource;
use crate::prelude::*;
use crate::runtime::query::LatencySummary;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// W1: source -> map -> sink.
    Passthrough,
    /// W2: source -> map -> key_by -> count -> sink (10k keys).
    KeyedCount,
}

impl Workload {
    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Passthrough => "w1-passthrough",
            Workload::KeyedCount => "w2-keyed-count",
        }
    }

    /// Parses `w1` / `w2`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "w1" => Ok(Workload::Passthrough),
            "w2" => Ok(Workload::KeyedCount),
            "w3" => anyhow::bail!(
                "w3 (tumbling event-time window count) needs windows, which Eddy does not have yet"
            ),
            other => anyhow::bail!("unknown workload {other} (w1, w2)"),
        }
    }
}

/// Parses a mode: `continuous`, `mb10`, `microbatch-100ms`, ...
pub fn parse_mode(s: &str) -> anyhow::Result<Trigger> {
    if s == "continuous" {
        return Ok(Trigger::continuous(Duration::from_secs(1)));
    }
    let ms = s
        .strip_prefix("microbatch-")
        .and_then(|r| r.strip_suffix("ms"))
        .or_else(|| s.strip_prefix("mb"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("unknown mode {s} (continuous, mb10, mb100, mb1000)"))?;
    Ok(Trigger::ProcessingTime(Duration::from_millis(ms)))
}

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// The in-process generator, at the cell's rate.
    Generator,
    /// An external load generator: Eddy connects to `addr` and reads
    /// `create_us,seq,key` lines (it sets the rate itself).
    Tcp(String),
}

/// One measurement to make.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// What to run.
    pub workload: Workload,
    /// How.
    pub trigger: Trigger,
    /// Input records per second (`None`: as fast as it goes — the ceiling).
    pub rate: Option<u64>,
    /// Measured time (after warm-up).
    pub duration: Duration,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Parallelism of every operator.
    pub parallelism: usize,
    /// The input.
    pub input: Input,
    /// Checkpoint (RocksDB state, every second in continuous mode, every
    /// batch in micro-batch mode).
    pub checkpoints: bool,
}

/// One measured cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyResult {
    /// Workload name.
    pub workload: String,
    /// Trigger mode: `continuous`, `microbatch-100ms`, ...
    pub mode: String,
    /// Target input rate (0: unthrottled, the ceiling run).
    pub rate: u64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Output rate reached during the measurement.
    pub achieved_rate: f64,
    /// Whether the rate was held: output at 95% of the target or more.
    pub sustained: bool,
}

/// Runs one cell. Must run on a multi-threaded tokio runtime sized to the cores.
pub async fn run_latency(run: &LatencyRun) -> anyhow::Result<LatencyResult> {
    let scratch = tempdir()?;
    let checkpoint = match run.input {
        // An external socket cannot replay: no checkpoints (at-least-once).
        Input::Tcp(_) => None,
        Input::Generator if !run.checkpoints => None,
        Input::Generator => Some(
            CheckpointConfig::new(scratch.join("checkpoints"))
                .with_rocksdb(scratch.join("rocksdb")),
        ),
    };
    let pipeline = Pipeline::with_config(PipelineConfig {
        trigger: run.trigger.clone(),
        checkpoint,
        ..Default::default()
    });
    let p = run.parallelism;
    let records: Stream<(u64, u64)> = match &run.input {
        Input::Generator => pipeline
            .source(
                "generator",
                GeneratorSource::new(GeneratorConfig {
                    rate_per_sec: run.rate,
                    key_space: 10_000,
                    // Exact pacing needs a spinning source in continuous
                    // mode; a micro-batch source only wakes at ticks.
                    busy_wait: run.rate.is_some() && !run.trigger.is_micro_batch(),
                    // A paced source's batch is what became due since the
                    // last one (no cap, as Spark's rate source); only an
                    // unthrottled source needs one.
                    max_records_per_batch: if run.rate.is_some() {
                        u64::MAX
                    } else {
                        1_000_000
                    },
                    ..Default::default()
                }),
            )
            .set_parallelism(p)
            .map(|e: GenEvent| (e.key, e.value))
            .set_parallelism(p),
        Input::Tcp(addr) => pipeline
            .source("tcp", TcpLineSource::new(addr))
            .set_parallelism(p)
            .map(|e: crate::connectors::tcp::TcpEvent| (e.key, e.seq))
            .set_parallelism(p),
    };
    match run.workload {
        Workload::Passthrough => {
            records.sink("sink", DiscardSink).set_parallelism(p);
        }
        Workload::KeyedCount => {
            records
                .key_by(|r: &(u64, u64)| r.0)
                .count()
                .set_parallelism(p)
                .sink("sink", DiscardSink)
                .set_parallelism(p);
        }
    }
    let query = pipeline.start()?;
    tokio::time::sleep(run.warmup).await;
    query.metrics().reset_latency();
    let _ = query.progress();
    tokio::time::sleep(run.duration).await;
    let progress = query.progress();
    let lat = LatencySummary::from_histogram(&query.metrics().merged_latency());
    drop(query);
    let _ = std::fs::remove_dir_all(&scratch);
    let lat = lat.ok_or_else(|| anyhow::anyhow!("no latency measured (no output)"))?;
    let achieved = progress.processed_rows_per_second;
    Ok(LatencyResult {
        workload: run.workload.name().to_string(),
        mode: run.trigger.name(),
        rate: run.rate.unwrap_or(0),
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        p999_us: lat.p999_us,
        max_us: lat.max_us,
        achieved_rate: achieved,
        sustained: run.rate.is_none_or(|r| achieved >= 0.95 * r as f64),
    })
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "eddy-bench-{}-{}",
        std::process::id(),
        crate::runtime::record::now_ns()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
