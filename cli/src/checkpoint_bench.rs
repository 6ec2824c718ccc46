//! `eddy bench checkpoint`: what checkpoints cost a running query.
//!
//! 1. Throughput of generator -> key_by -> count -> sink, unthrottled, with
//!    checkpoints every second vs without, alternating runs, medians. Both
//!    keep their state in RocksDB; "without" only never takes a checkpoint.
//! 2. Latency at a fixed rate while a state of `keys` keys (RocksDB) is
//!    checkpointed every second: a preload source fills the state first,
//!    then latency is measured on the paced source only; meanwhile every
//!    completed checkpoint's duration and bytes written are recorded, and
//!    the longest marker alignment.
//! 3. Recovery: the time `Pipeline::start` takes to restore that state.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use eddy::prelude::*;
use eddy::runtime::query::LatencySummary;

/// Settings of the checkpoint benchmark.
#[derive(Debug, Clone)]
pub struct CheckpointBench {
    /// Keys in the checkpointed state.
    pub keys: u64,
    /// Input rate of the latency run.
    pub rate: u64,
    /// Measured seconds per run.
    pub seconds: u64,
    /// Throughput runs per setting (alternating).
    pub repeats: usize,
    /// Niceness of the snapshot threads.
    pub snapshot_niceness: u8,
}

/// One completed checkpoint seen during the latency run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSample {
    /// Its epoch.
    pub epoch: u64,
    /// Start to manifest durable.
    pub duration_ms: u64,
    /// Bytes it wrote.
    pub bytes_written: u64,
    /// Bytes of state it references.
    pub state_bytes: u64,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointBenchResult {
    /// Records/s without checkpoints, per run.
    pub throughput_without: Vec<f64>,
    /// Records/s with checkpoints every second, per run.
    pub throughput_with: Vec<f64>,
    /// Median with / median without.
    pub throughput_ratio: f64,
    /// Checkpoints completed in each measured window of the "with" runs
    /// (one per second is every checkpoint keeping up).
    pub throughput_checkpoints_completed: Vec<u64>,
    /// Checkpoints that failed in those windows.
    pub throughput_checkpoints_failed: u64,
    /// Latency at `rate` with the state checkpointed every second.
    pub latency: Option<LatencySummary>,
    /// Latency of the same pipeline and state, taking no checkpoint while
    /// measured (run just before).
    pub latency_without_checkpoints: Option<LatencySummary>,
    /// The rate held during the latency run.
    pub achieved_rate: f64,
    /// Every checkpoint completed during the latency run.
    pub checkpoints: Vec<CheckpointSample>,
    /// Checkpoints that failed during the latency run.
    pub failed_checkpoints: u64,
    /// Longest marker alignment of any instance, microseconds.
    pub max_alignment_us: f64,
    /// Time `Pipeline::start` took to restore the state.
    pub recovery_ms: f64,
    /// Epoch restored.
    pub restored_epoch: Option<u64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn config(dir: Option<&Path>, interval: Duration, niceness: u8) -> PipelineConfig {
    PipelineConfig {
        checkpoint: dir.map(|d| CheckpointConfig {
            snapshot_niceness: niceness,
            ..CheckpointConfig::new(d.join("checkpoints")).with_rocksdb(d.join("rocksdb"))
        }),
        trigger: Trigger::continuous(interval),
        ..Default::default()
    }
}

/// The checkpoint interval of the baseline latency run: longer than the run,
/// so the same pipeline on the same RocksDB state takes no checkpoint while
/// measured.
const NO_CHECKPOINT: Duration = Duration::from_secs(24 * 3600);

/// Records/s over the measured window, and the checkpoints completed and
/// failed in it.
async fn throughput(
    dir: &Path,
    interval: Duration,
    b: &CheckpointBench,
) -> anyhow::Result<(f64, u64, u64)> {
    let seconds = b.seconds;
    let p = Pipeline::with_config(config(Some(dir), interval, b.snapshot_niceness));
    p.source(
        "gen",
        GeneratorSource::new(GeneratorConfig {
            key_space: 100_000,
            ..Default::default()
        }),
    )
    .key_by(|e: &GenEvent| e.key)
    .count()
    .sink("out", DiscardSink);
    let q = p.start()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = q.progress();
    let before = q.checkpoint_stats().unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = q.progress().processed_rows_per_second;
    let after = q.checkpoint_stats().unwrap_or_default();
    Ok((
        rate,
        after.completed - before.completed,
        after.failed - before.failed,
    ))
}

fn latency_pipeline(dir: &Path, b: &CheckpointBench, interval: Duration) -> Pipeline {
    let p = Pipeline::with_config(config(Some(dir), interval, b.snapshot_niceness));
    let preload = p.source(
        "preload",
        GeneratorSource::new(GeneratorConfig {
            key_space: b.keys,
            limit: Some(3 * b.keys),
            ..Default::default()
        }),
    );
    p.source(
        "paced",
        GeneratorSource::new(GeneratorConfig {
            rate_per_sec: Some(b.rate),
            key_space: b.keys,
            busy_wait: true,
            ..Default::default()
        }),
    )
    .union(preload)
    .key_by(|e: &GenEvent| e.key)
    .count()
    .sink("out", DiscardSink);
    p
}

/// What one latency run measured.
struct LatencyWindow {
    latency: Option<LatencySummary>,
    achieved_rate: f64,
    checkpoints: Vec<CheckpointSample>,
    failed: u64,
    max_alignment_us: f64,
}

/// Preloads the state, then measures latency for `b.seconds` with
/// checkpoints every `interval`; stops the query (a final checkpoint) and
/// leaves its directory.
async fn latency_run(
    dir: &Path,
    b: &CheckpointBench,
    interval: Duration,
    what: &str,
) -> anyhow::Result<LatencyWindow> {
    eprint!("\r[latency {what}: preloading {} keys]   ", b.keys);
    let mut q = latency_pipeline(dir, b, interval).start()?;
    let preload_done = |q: &Query| {
        q.progress()
            .instances
            .iter()
            .any(|i| i.operator == "preload" && i.records_out >= 3 * b.keys)
    };
    while !preload_done(&q) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With checkpoints, let two complete after the preload (the first
    // writes the whole state).
    if interval < NO_CHECKPOINT {
        let settled = q.checkpoint_stats().unwrap_or_default().completed + 2;
        while q.checkpoint_stats().unwrap_or_default().completed < settled {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The paced source fell behind while the preload ran: wait until it has
    // caught up (a whole second without a record older than 100 ms), so the
    // window measures the steady state, not the catch-up.
    let settle_from = Instant::now();
    loop {
        q.metrics().reset_latency();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let max_ms = q.metrics().merged_latency().max() / 1_000_000;
        if max_ms < 100 || settle_from.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    eprint!("\r[latency {what}: measuring {} s]          ", b.seconds);
    q.metrics().reset_latency();
    let _ = q.progress();
    let failed_before = q.checkpoint_stats().unwrap_or_default().failed;
    let mut samples: Vec<CheckpointSample> = Vec::new();
    let end = Instant::now() + Duration::from_secs(b.seconds);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = q.checkpoint_stats().unwrap_or_default();
        if let Some(epoch) = s.last_completed_epoch {
            if samples.last().is_none_or(|x| x.epoch != epoch) {
                samples.push(CheckpointSample {
                    epoch,
                    duration_ms: s.last_duration_ms.unwrap_or(0),
                    bytes_written: s.last_bytes_written.unwrap_or(0),
                    state_bytes: s.last_state_bytes.unwrap_or(0),
                });
            }
        }
    }
    let progress = q.progress();
    let latency = LatencySummary::from_histogram(&q.metrics().merged_latency());
    let failed = q.checkpoint_stats().unwrap_or_default().failed - failed_before;
    eprint!("\r[latency {what}: final checkpoint]        ");
    q.stop().await?;
    Ok(LatencyWindow {
        latency,
        achieved_rate: progress.input_rows_per_second,
        checkpoints: samples,
        failed,
        max_alignment_us: progress.max_alignment_us,
    })
}

/// Runs the benchmark in scratch directories under `scratch`.
pub async fn run(b: &CheckpointBench, scratch: &Path) -> anyhow::Result<CheckpointBenchResult> {
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut throughput_checkpoints = Vec::new();
    let mut throughput_failed = 0;
    for i in 0..b.repeats {
        eprint!("\r[throughput {}/{}]   ", i + 1, b.repeats);
        let dir = scratch.join(format!("throughput-without-{i}"));
        without.push(throughput(&dir, NO_CHECKPOINT, b).await?.0);
        let _ = std::fs::remove_dir_all(&dir);
        let dir = scratch.join(format!("throughput-{i}"));
        let (rate, completed, failed) = throughput(&dir, Duration::from_secs(1), b).await?;
        with.push(rate);
        throughput_checkpoints.push(completed);
        throughput_failed += failed;
        let _ = std::fs::remove_dir_all(&dir);
    }

    let baseline_dir = scratch.join("latency-baseline");
    let baseline = latency_run(&baseline_dir, b, NO_CHECKPOINT, "without checkpoints").await?;
    let _ = std::fs::remove_dir_all(&baseline_dir);
    let dir = scratch.join("latency");
    let checkpointed =
        latency_run(&dir, b, Duration::from_secs(1), "checkpoints every 1 s").await?;

    eprint!("\r[recovery: restoring]               ");
    let t = Instant::now();
    let q = latency_pipeline(&dir, b, Duration::from_secs(1)).start()?;
    let recovery_ms = t.elapsed().as_secs_f64() * 1000.0;
    let restored_epoch = q.checkpoint_stats().and_then(|s| s.restored_epoch);
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
    eprint!("\r                                    \r");
    Ok(CheckpointBenchResult {
        throughput_ratio: median(&with) / median(&without).max(1.0),
        throughput_without: without,
        throughput_checkpoints_completed: throughput_checkpoints,
        throughput_checkpoints_failed: throughput_failed,
        throughput_with: with,
        latency: checkpointed.latency,
        latency_without_checkpoints: baseline.latency,
        achieved_rate: checkpointed.achieved_rate,
        checkpoints: checkpointed.checkpoints,
        failed_checkpoints: checkpointed.failed,
        max_alignment_us: checkpointed.max_alignment_us,
        recovery_ms,
        restored_epoch,
    })
}
