//! The `eddy` command-line tool.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy::prelude::*;
use eddy_cli::cpu_list::CpuList;
use eddy_cli::latency_command::{bench_latency, LatencyArgs};

#[derive(Parser)]
#[command(name = "eddy", about = "Eddy: a continuous-processing dataflow engine")]
struct Cli {
    /// Worker threads (default: the number of cores; for `demo`, at least
    /// 4; for `bench latency` fed from this host, `--input loadgen` or a
    /// loopback `tcp://` address, without `--cpus`: one less than the
    /// cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Run on these CPUs only (`taskset -c` syntax: `1`, `0,2`, `2-3`):
    /// every thread of the process, the runtime's workers included, is
    /// pinned to them, and "the cores" in `--threads`' defaults are the
    /// CPUs listed (with `bench latency --input loadgen`, all of them: the
    /// generator runs where `--loadgen-cpus` says). The other cores are left
    /// to the kernel's housekeeping and to other processes.
    #[arg(long, global = true)]
    cpus: Option<CpuList>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a streaming word count over generated sentences, printing
    /// progress every second (the main job is `eddy demo iot`).
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
        /// The dashboard and Prometheus endpoints.
        #[command(flatten)]
        endpoints: eddy_cli::dashboard::EndpointArgs,
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
        /// The pipeline: `totals` (generator -> key_by -> count and sum),
        /// `union` (two generators -> union -> filter -> count, sum, max),
        /// `windows-append` / `windows-update` (200 ms event-time windows,
        /// jobs::windowed_counts) or `sessions` (keyed process, jobs::sessions).
        #[arg(long, default_value = "totals")]
        shape: String,
        /// When the checkpoint to restore is older than output a sink that
        /// cannot retract has committed, start anyway: at-least-once for
        /// this recovery (CheckpointConfig::accept_duplicates_on_fallback).
        #[arg(long)]
        accept_duplicates_on_fallback: bool,
    },
    /// Kafka: counts `key,seq` lines of an input topic per key into an
    /// exactly-once output topic (and optionally an at-least-once one),
    /// checkpointing into `--dir`; restarted on the same directory it
    /// recovers. The Kafka crash tests kill it with SIGKILL.
    KafkaCount(KafkaCountArgs),
    /// Counts `{"key":k,"seq":s}` JSON lines from the files of a directory
    /// (new files picked up as they appear) per key into an exactly-once
    /// file sink in `--dir`/out, checkpointing into `--dir`.
    DirCount {
        /// The input directory.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Checkpoint, output and dead-letter directory.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Parallelism of every operator.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
        /// Milliseconds between checkpoints.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Read the files present at start, then stop.
        #[arg(long)]
        bounded: bool,
    },
    /// An external load generator: listens on a loopback port and writes
    /// `created_us,seq,key` lines to every client at a fixed rate, stamped
    /// with their scheduled time (no coordinated omission); reports per
    /// second on stderr how far behind schedule it is.
    Loadgen(eddy_cli::loadgen::LoadgenConfig),
    /// Demos: `eddy demo iot`, anomaly detection over a simulated fleet.
    Demo {
        #[command(subcommand)]
        which: eddy_cli::demo::DemoCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Kafka -> map -> Kafka, exactly-once vs at-least-once: latency from
    /// production to visibility to a read_committed consumer at a fixed
    /// rate, and the throughput of a bounded read. Needs a broker.
    Kafka {
        /// Bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Input records per second in the latency runs.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of load per latency run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Milliseconds between checkpoints.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Parallelism of every operator.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
        /// Records in the throughput runs.
        #[arg(long, default_value_t = 500_000)]
        drain_records: u64,
        /// The source consumer's fetch.wait.max.ms (default: librdkafka's).
        #[arg(long)]
        fetch_wait_ms: Option<u64>,
    },
    /// End-to-end latency, continuous vs micro-batch, at fixed input rates,
    /// plus each mode's throughput ceiling.
    Latency(Box<LatencyArgs>),
    /// What checkpoints cost: throughput with vs without, latency with a
    /// large checkpointed state, checkpoint sizes, recovery time.
    Checkpoint {
        /// Keys in the checkpointed state.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Input rate of the latency run.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Throughput runs per setting (alternating; the ratio is of the
        /// medians, so more runs make it steadier on a noisy machine).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Niceness of the snapshot threads (0: as the process, 19: lowest).
        #[arg(long, default_value_t = eddy::runtime::checkpointing::DEFAULT_SNAPSHOT_NICENESS)]
        snapshot_niceness: u8,
        /// Scratch directory (default: the system temp directory).
        #[arg(long)]
        scratch: Option<std::path::PathBuf>,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// What full snapshots cost in bytes written: one RocksDB state
    /// checkpointed with a full snapshot every N epochs and incremental only,
    /// same updates, same run.
    SnapshotBytes {
        /// Keys in the state.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Keys rewritten between two checkpoints.
        #[arg(long, default_value_t = 100_000)]
        changed_per_epoch: u64,
        /// Checkpoints per policy.
        #[arg(long, default_value_t = 33)]
        epochs: u64,
        /// The policy: a full snapshot every this many epochs.
        #[arg(long, default_value_t = eddy::runtime::checkpointing::DEFAULT_FULL_SNAPSHOT_EVERY)]
        full_every: u32,
        /// Seed of the updates.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct KafkaCountArgs {
    /// Bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Input topic (`key,seq` lines).
    #[arg(long)]
    input: String,
    /// Exactly-once output topic.
    #[arg(long)]
    output: String,
    /// At-least-once output topic for the same updates.
    #[arg(long)]
    at_least_once_output: Option<String>,
    /// Checkpoint, staging and dead-letter directory.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Parallelism of every operator.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Stop at the input's end offsets found at start.
    #[arg(long)]
    bounded: bool,
    /// Scale-out: this process's index.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// Scale-out: the number of processes.
    #[arg(long, default_value_t = 1)]
    processes: usize,
}

async fn run_kafka_count(args: KafkaCountArgs) -> anyhow::Result<()> {
    let pipeline = Pipeline::with_config(PipelineConfig {
        checkpoint: Some(CheckpointConfig::new(args.dir.join("checkpoints"))),
        trigger: Trigger::continuous(Duration::from_millis(args.interval_ms)),
        ..Default::default()
    });
    let job = eddy_cli::kafka_job::KafkaCountJob {
        brokers: args.brokers,
        input: args.input,
        output: args.output,
        at_least_once_output: args.at_least_once_output,
        dir: args.dir,
        parallelism: args.parallelism,
        bounded: args.bounded,
        process: (args.process, args.processes),
    };
    let dead = eddy_cli::kafka_job::kafka_count(&pipeline, &job);
    let mut q = pipeline.start()?;
    q.await_termination().await?;
    let stats = q.checkpoint_stats().unwrap_or_default();
    println!(
        "done: restored from {:?}, {} checkpoints completed, {} failed, {} dead letters",
        stats.restored_epoch,
        stats.completed,
        stats.failed,
        dead.count()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before any other thread starts, so that every thread inherits it.
    if let Some(cpus) = &cli.cpus {
        cpus.pin_current_thread()?;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The demo's ~20 tasks and window bursts: 4 workers on 2 cores cut alert
    // p99 (4.3-4.5 ms against 4.6-6.3 ms; docs/benchmarks-demo.md, session 8).
    let default = match cli.command {
        Command::Demo { .. } => cores.max(4),
        // A generator process on this host (started here, or feeding a
        // loopback socket) takes a core: workers on the rest (2 workers
        // sharing 1 core put p99 at 3 ms at 500 k/s, 1 worker at 0.1 ms;
        // with an external generator at 100 k/s, p99 0.95 ms against 40 us;
        // docs/benchmarks-latency-tail.md).
        Command::Bench {
            which: BenchCommand::Latency(ref a),
        } if a.feed_on_this_host() && cli.cpus.is_none() => cores.saturating_sub(1).max(1),
        _ => cores,
    };
    let threads = cli.threads.unwrap_or(default);
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
                endpoints,
            } => run_word_count(seconds, rate, parallelism, &endpoints).await,
            Command::Totals {
                dir,
                limit,
                rate,
                keys,
                parallelism,
                interval_ms,
                rocksdb,
                trigger_ms,
                shape,
                accept_duplicates_on_fallback,
            } => {
                let mut ckpt = CheckpointConfig::new(dir.join("checkpoints"));
                ckpt.accept_duplicates_on_fallback = accept_duplicates_on_fallback;
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
                let generator = GeneratorConfig {
                    rate_per_sec: Some(rate),
                    key_space: keys,
                    limit: Some(limit),
                    ..Default::default()
                };
                let out = dir.join("out");
                eddy_cli::jobs::totals_by_shape(&pipeline, &shape, generator, parallelism, out)?;
                let mut q = pipeline.start()?;
                q.await_termination().await?;
                let stats = q.checkpoint_stats().unwrap_or_default();
                println!(
                    "done: restored from {:?}, {} checkpoints completed, {} failed",
                    stats.restored_epoch, stats.completed, stats.failed
                );
                if let Some(r) = stats.recovery.filter(|r| !r.sinks_ahead.is_empty()) {
                    println!("recovery: {}", serde_json::to_string(&r)?);
                }
                Ok(())
            }
            Command::KafkaCount(args) => run_kafka_count(args).await,
            Command::DirCount {
                input,
                dir,
                parallelism,
                interval_ms,
                bounded,
            } => {
                let pipeline = Pipeline::with_config(PipelineConfig {
                    checkpoint: Some(CheckpointConfig::new(dir.join("checkpoints"))),
                    trigger: Trigger::continuous(Duration::from_millis(interval_ms)),
                    ..Default::default()
                });
                let dead =
                    eddy_cli::dir_job::dir_count(&pipeline, input, dir, parallelism, bounded);
                let mut q = pipeline.start()?;
                q.await_termination().await?;
                let stats = q.checkpoint_stats().unwrap_or_default();
                println!(
                    "done: restored from {:?}, {} checkpoints completed, {} dead letters",
                    stats.restored_epoch,
                    stats.completed,
                    dead.count()
                );
                Ok(())
            }
            Command::Loadgen(config) => {
                tokio::task::spawn_blocking(move || eddy_cli::loadgen::serve(&config)).await??;
                Ok(())
            }
            Command::Demo { which } => eddy_cli::demo::run(which).await,
            Command::Bench { which } => match which {
                BenchCommand::SnapshotBytes {
                    keys,
                    changed_per_epoch,
                    epochs,
                    full_every,
                    seed,
                    json,
                } => {
                    let b = eddy_cli::snapshot_bytes::SnapshotBytesBench {
                        keys,
                        changed_per_epoch,
                        epochs,
                        full_every,
                        seed,
                    };
                    let scratch =
                        std::env::temp_dir().join(format!("eddy-snapbytes-{}", std::process::id()));
                    let r = eddy_cli::snapshot_bytes::run(&b, &scratch);
                    let _ = std::fs::remove_dir_all(&scratch);
                    let r = r?;
                    println!("{}", eddy_cli::snapshot_bytes::markdown(&b, &r));
                    if let Some(path) = json {
                        std::fs::write(path, serde_json::to_string_pretty(&r)?)?;
                    }
                    Ok(())
                }
                BenchCommand::Latency(args) => bench_latency(*args).await,
                BenchCommand::Kafka {
                    brokers,
                    rate,
                    seconds,
                    interval_ms,
                    parallelism,
                    drain_records,
                    fetch_wait_ms,
                } => {
                    let rows = eddy_cli::kafka_bench::run(&eddy_cli::kafka_bench::KafkaBench {
                        brokers,
                        rate,
                        seconds,
                        interval_ms,
                        parallelism,
                        drain_records,
                        fetch_wait_ms,
                    })
                    .await?;
                    print!("{}", eddy_cli::kafka_bench::markdown(&rows));
                    Ok(())
                }
                BenchCommand::Checkpoint {
                    keys,
                    rate,
                    seconds,
                    repeats,
                    snapshot_niceness,
                    scratch,
                    json,
                } => {
                    let scratch = scratch.unwrap_or_else(|| {
                        std::env::temp_dir().join(format!("eddy-ckbench-{}", std::process::id()))
                    });
                    let b = eddy_cli::checkpoint_bench::CheckpointBench {
                        keys,
                        rate,
                        seconds,
                        repeats,
                        snapshot_niceness,
                    };
                    let r = eddy_cli::checkpoint_bench::run(&b, &scratch).await?;
                    let _ = std::fs::remove_dir_all(&scratch);
                    println!("{}", serde_json::to_string_pretty(&r)?);
                    if let Some(path) = json {
                        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    Ok(())
                }
            },
        }
    })
}

async fn run_word_count(
    seconds: u64,
    rate: u64,
    parallelism: usize,
    endpoints: &eddy_cli::dashboard::EndpointArgs,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::new();
    // The latest count per word: memory follows the vocabulary, not the
    // number of updates or the run time.
    let counts = TableSink::<String, u64>::new();
    eddy_cli::jobs::word_count(
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
    let hooks = eddy_cli::dashboard::AppHooks {
        title: format!("word count, {rate} sentences/s"),
        ..Default::default()
    };
    let _endpoints = eddy_cli::dashboard::start(query.monitor(), hooks, endpoints).await?;
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
            "{:>5.1}s  in {:>9.0}/s  out {:>9.0}/s  queued {:>6}  words {:>3}  {lat}",
            p.elapsed_secs,
            p.input_rows_per_second,
            p.processed_rows_per_second,
            p.queued_records,
            counts.len()
        );
    }
    query.stop().await?;
    let latest: std::collections::BTreeMap<String, u64> = counts.snapshot().into_iter().collect();
    println!("final counts:");
    for (word, n) in latest {
        println!("  {word:<10} {n}");
    }
    Ok(())
}
