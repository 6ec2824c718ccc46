//! The `eddy` command-line tool.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy::bench::{run_latency, LatencyRun, Workload};
use eddy::prelude::*;

#[derive(Parser)]
#[command(name = "eddy", about = "Eddy: a continuous-processing dataflow engine")]
struct Cli {
    /// Worker threads (default: the number of cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the main job: a streaming word count over generated sentences,
    /// printing progress every second.
    Run {
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Input sentences per second.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Parallelism of every operator.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
    },
    /// Runs running count and sum per key over a bounded generator into an
    /// exactly-once file sink, checkpointing into `--dir`; restarted on the
    /// same directory it recovers from the newest checkpoint. The crash tests
    /// kill it with SIGKILL at random moments.
    Totals {
        /// Checkpoint and output directory.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Records to generate in total.
        #[arg(long, default_value_t = 100_000)]
        limit: u64,
        /// Records per second.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 100)]
        keys: u64,
        /// Parallelism of every operator.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
        /// Milliseconds between checkpoints.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Keep keyed state in RocksDB (default: in memory).
        #[arg(long)]
        rocksdb: bool,
        /// Run micro-batches every this many milliseconds instead of
        /// continuously (checkpointing every batch).
        #[arg(long)]
        trigger_ms: Option<u64>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// End-to-end latency at fixed input rates.
    Latency {
        /// Workloads: w1 (passthrough), w2 (keyed count).
        #[arg(long, value_delimiter = ',', default_value = "w1,w2")]
        workloads: Vec<String>,
        /// Input rates in records per second.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        rates: Vec<u64>,
        /// Measured seconds per cell.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Warm-up seconds per cell.
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// Parallelism of every operator.
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Run {
                seconds,
                rate,
                parallelism,
            } => run_word_count(seconds, rate, parallelism).await,
            Command::Totals {
                dir,
                limit,
                rate,
                keys,
                parallelism,
                interval_ms,
                rocksdb,
                trigger_ms,
            } => {
                let mut ckpt = CheckpointConfig::new(dir.join("checkpoints"));
                if rocksdb {
                    ckpt = ckpt.with_rocksdb(dir.join("rocksdb"));
                }
                let trigger = match trigger_ms {
                    Some(ms) => Trigger::ProcessingTime(Duration::from_millis(ms)),
                    None => Trigger::continuous(Duration::from_millis(interval_ms)),
                };
                let pipeline = Pipeline::with_config(PipelineConfig {
                    checkpoint: Some(ckpt),
                    trigger,
                    ..Default::default()
                });
                eddy::jobs::key_totals(
                    &pipeline,
                    GeneratorConfig {
                        rate_per_sec: Some(rate),
                        key_space: keys,
                        limit: Some(limit),
                        ..Default::default()
                    },
                    parallelism,
                    FileSink::new(
                        dir.join("out"),
                        Delivery::ExactlyOnce,
                        eddy::jobs::totals_line,
                    ),
                );
                let mut q = pipeline.start()?;
                q.await_termination().await?;
                let stats = q.checkpoint_stats().unwrap_or_default();
                println!(
                    "done: restored from {:?}, {} checkpoints completed, {} failed",
                    stats.restored_epoch, stats.completed, stats.failed
                );
                Ok(())
            }
            Command::Bench { which } => match which {
                BenchCommand::Latency {
                    workloads,
                    rates,
                    seconds,
                    warmup,
                    parallelism,
                    json,
                } => bench_latency(workloads, rates, seconds, warmup, parallelism, json).await,
            },
        }
    })
}

async fn run_word_count(seconds: u64, rate: u64, parallelism: usize) -> anyhow::Result<()> {
    let pipeline = Pipeline::new();
    let counts = CollectSink::new();
    eddy::jobs::word_count(
        &pipeline,
        GeneratorConfig {
            rate_per_sec: Some(rate),
            key_space: 10_000,
            ..Default::default()
        },
        parallelism,
        counts.clone(),
    );
    let mut query = pipeline.start()?;
    println!("word count: {rate} sentences/s, parallelism {parallelism}, {seconds} s");
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p = query.progress();
        let lat = p
            .latency
            .as_ref()
            .map(|l| format!("latency p50 {:.0} us  p99 {:.0} us", l.p50_us, l.p99_us))
            .unwrap_or_default();
        println!(
            "{:>5.1}s  in {:>9.0}/s  out {:>9.0}/s  queued {:>6}  {lat}",
            p.elapsed_secs, p.input_rows_per_second, p.processed_rows_per_second, p.queued_records
        );
    }
    query.stop().await?;
    let mut latest = std::collections::BTreeMap::new();
    for (word, n) in counts.values() {
        let e = latest.entry(word).or_insert(0);
        *e = n.max(*e);
    }
    println!("final counts:");
    for (word, n) in latest {
        println!("  {word:<10} {n}");
    }
    Ok(())
}

async fn bench_latency(
    workloads: Vec<String>,
    rates: Vec<u64>,
    seconds: u64,
    warmup: u64,
    parallelism: usize,
    json: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    println!(
        "{:<16} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} sustained",
        "workload", "mode", "rate", "p50_us", "p99_us", "p999_us", "max_us", "achieved"
    );
    for w in &workloads {
        let workload = match w.as_str() {
            "w1" => Workload::Passthrough,
            "w2" => Workload::KeyedCount,
            other => anyhow::bail!("unknown workload {other} (w1, w2)"),
        };
        for &rate in &rates {
            let r = run_latency(&LatencyRun {
                workload,
                rate,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(warmup),
                parallelism,
            })
            .await?;
            println!(
                "{:<16} {:<12} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {}",
                r.workload,
                r.mode,
                r.rate,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                r.achieved_rate,
                r.sustained
            );
            results.push(r);
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
