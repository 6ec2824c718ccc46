//! The `eddy` command-line tool.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy::prelude::*;
use eddy_cli::bench::{run_latency, LatencyRun, Workload};

#[derive(Parser)]
#[command(name = "eddy", about = "Eddy: a continuous-processing dataflow engine")]
struct Cli {
    /// Worker threads (default: the number of cores; for `demo`, at least
    /// 4; for `bench latency --input loadgen`, one less than the cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
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
    Latency(LatencyArgs),
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

#[derive(clap::Args)]
struct LatencyArgs {
    /// Workloads: w1 (passthrough), w2 (keyed count), w3 (1 s tumbling
    /// event-time window count), w4 (interval join of two half-rate
    /// streams).
    #[arg(long, value_delimiter = ',', default_value = "w1,w2")]
    workloads: Vec<String>,
    /// Distinct keys of w2, w3 and w4.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Modes: continuous, mbN (micro-batches every N ms).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "continuous,mb10,mb100,mb1000"
    )]
    modes: Vec<String>,
    /// Input rates in records per second.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    rates: Vec<u64>,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Warm-up seconds per cell.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Parallelism of every operator.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Rates tried, in ascending order, to find each mode's ceiling: the
    /// highest rate it sustains (output at 95% of the input rate or more);
    /// the walk stops at the first rate not sustained, then bisects (see
    /// --ceiling-bisect-steps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8000000,16000000,32000000,64000000"
    )]
    ceiling_rates: Vec<u64>,
    /// Geometric bisection steps between the last ceiling rate sustained and
    /// the first not sustained (each one more 2 s cell; 2 steps narrow a
    /// factor-2 bracket to about 1.19x). If the first ceiling rate is not
    /// sustained, the lower end is the highest of --rates below it that the
    /// mode sustained (none: the ceiling is 0, no bisection).
    #[arg(long, default_value_t = eddy_cli::bench::DEFAULT_BISECT_STEPS)]
    ceiling_bisect_steps: u32,
    /// Skip the ceiling search.
    #[arg(long)]
    no_ceiling: bool,
    /// Micro-batch modes: the most records the generator puts in one batch.
    /// Default: uncapped (each batch is everything that became due since
    /// the last, as Spark's rate source), so that a mode's ceiling is the
    /// engine's and not the cap's; the unthrottled generator keeps Eddy's
    /// default cap of 1,000,000.
    #[arg(long)]
    max_records_per_batch: Option<u64>,
    /// With `--input loadgen`: how the generator paces its lines (`hybrid`,
    /// `sleep`, `yield`; see `eddy loadgen --help`).
    #[arg(long, default_value = "hybrid")]
    loadgen_pacing: eddy_cli::loadgen::Pacing,
    /// With `--input`: the TCP source keeps polling its socket for this
    /// many microseconds after data last arrived before it waits for
    /// readiness (0: it waits at once, the library's default). With one
    /// worker (`--threads 1`, or `--input loadgen` on 2 cores), while lines
    /// keep coming within the window no thread is woken per line, for a
    /// core kept busy (see `TcpLineSource::with_busy_poll`). On by default
    /// here, as Eddy's low-latency setting (docs/benchmarks-latency-tail.md).
    #[arg(long, default_value_t = 1000)]
    busy_poll_us: u64,
    /// Run without checkpoints (by default: RocksDB state, checkpoints every
    /// second in continuous mode and at every micro-batch).
    #[arg(long)]
    no_checkpoints: bool,
    /// Read records from an external load generator instead
    /// (tcp://127.0.0.1:PORT; lines `create_us,seq,key`), or `loadgen`: start
    /// `eddy loadgen` as a child process for every cell, at the cell's rate
    /// (one connection per source instance), and read through the socket.
    #[arg(long)]
    input: Option<String>,
    /// Write the results as a JSON array here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the ceilings and each mode's ratio to continuous as a JSON
    /// object here.
    #[arg(long)]
    ceilings_json: Option<std::path::PathBuf>,
    /// Write a markdown table here (with the ceiling tables, if searched).
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Write an SVG plot of latency percentiles per mode here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
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
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The demo's ~20 tasks and window bursts: 4 workers on 2 cores cut alert
    // p99 (4.3-4.5 ms against 4.6-6.3 ms; docs/benchmarks-demo.md, session 8).
    let default = match cli.command {
        Command::Demo { .. } => cores.max(4),
        // The generator process this starts takes a core: workers on the
        // rest (2 workers sharing 1 core put p99 at 3 ms at 500 k/s, 1
        // worker at 0.1 ms; docs/benchmarks.md, issue 13).
        Command::Bench {
            which: BenchCommand::Latency(ref a),
        } if a.input.as_deref() == Some("loadgen") => cores.saturating_sub(1).max(1),
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
                BenchCommand::Latency(args) => bench_latency(args).await,
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

async fn run_latency_cell(run: LatencyRun) -> anyhow::Result<eddy_cli::bench::LatencyResult> {
    let r = run_latency(&run).await?;
    eprint!("\r");
    println!(
        "{:<16} {:<18} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} {} out {}",
        r.workload,
        r.mode,
        if r.rate == 0 {
            "max".to_string()
        } else {
            r.rate.to_string()
        },
        eddy_cli::report::format_latency(r.p50_us),
        eddy_cli::report::format_latency(r.p99_us),
        eddy_cli::report::format_latency(r.p999_us),
        eddy_cli::report::format_latency(r.max_us),
        eddy_cli::report::format_rate(r.achieved_rate),
        r.sustained,
        eddy_cli::report::format_rate(r.output_rate),
    );
    Ok(r)
}

/// Measured seconds of a ceiling-search cell.
const CEILING_CELL_SECONDS: u64 = 2;

async fn bench_latency(args: LatencyArgs) -> anyhow::Result<()> {
    use eddy_cli::bench::{parse_mode, Ceiling, CeilingSearch, Input};
    let started = std::time::Instant::now();
    let workloads = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modes = args
        .modes
        .iter()
        .map(|m| parse_mode(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spawn_loadgen = args.input.as_deref() == Some("loadgen");
    let input = match &args.input {
        Some(_) if spawn_loadgen => Input::Generator,
        Some(a) => Input::Tcp(a.clone()),
        None => Input::Generator,
    };
    let mut cells: Vec<(Workload, Trigger, Option<u64>)> = Vec::new();
    for &w in &workloads {
        for m in &modes {
            if matches!(input, Input::Generator) {
                for &r in &args.rates {
                    cells.push((w, m.clone(), Some(r)));
                }
            } else {
                cells.push((w, m.clone(), None));
            }
        }
    }
    println!(
        "{:<16} {:<18} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} sustained",
        "workload", "mode", "rate", "p50", "p99", "p99.9", "max", "achieved"
    );
    let exe = std::env::current_exe()?;
    let run_cell = |workload: Workload, trigger: Trigger, rate: Option<u64>, seconds: u64| {
        // With `--input loadgen`, a generator process per cell, at the
        // cell's rate split over the source instances; killed after it.
        let loadgen = match (spawn_loadgen, rate) {
            (true, Some(r)) => {
                let p = args.parallelism.max(1) as u64;
                Some(eddy_cli::loadgen::LoadgenProcess::spawn(
                    &exe,
                    r.div_ceil(p),
                    10_000,
                    p,
                    args.loadgen_pacing,
                ))
            }
            _ => None,
        };
        let cell_input = match &loadgen {
            Some(Ok(g)) => Input::Tcp(format!("tcp://{}", g.addr())),
            _ => input.clone(),
        };
        async move {
            if let Some(Err(e)) = &loadgen {
                anyhow::bail!("starting eddy loadgen: {e}");
            }
            let mut result = run_latency_cell(LatencyRun {
                workload,
                trigger,
                rate,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(args.warmup),
                parallelism: args.parallelism,
                keys: args.keys,
                input: cell_input,
                checkpoints: !args.no_checkpoints,
                max_records_per_batch: args.max_records_per_batch,
                busy_poll: Duration::from_micros(args.busy_poll_us),
            })
            .await;
            // The sender's share of the tail: how late the generator sent
            // the lines of the measured seconds.
            if let (Ok(r), Some(Ok(g))) = (&mut result, &loadgen) {
                r.sender = Some(g.sender_of_cell(args.warmup, seconds, args.parallelism.max(1)));
            }
            drop(loadgen);
            result
        }
    };
    let mut results = Vec::new();
    let total = cells.len();
    for (i, (workload, trigger, rate)) in cells.into_iter().enumerate() {
        eprint!(
            "\r[{}/{}] {} {} {} ...          ",
            i + 1,
            total,
            workload.name(),
            trigger.name(),
            rate.map_or("unthrottled".to_string(), |r| r.to_string())
        );
        results.push(run_cell(workload, trigger, rate, args.seconds).await?);
    }
    let mut ceilings = Vec::new();
    let searched = !args.no_ceiling && !spawn_loadgen && matches!(input, Input::Generator);
    if searched {
        let first_grid = args.ceiling_rates.iter().copied().min().unwrap_or(0);
        for &w in &workloads {
            for m in &modes {
                // The highest fixed rate below the grid this mode sustained:
                // the bracket's lower end if the grid's first rate is not.
                let floor = results
                    .iter()
                    .filter(|r| r.workload == w.name() && r.mode == m.name() && r.sustained)
                    .map(|r| r.rate)
                    .filter(|&r| r > 0 && r < first_grid)
                    .max()
                    .unwrap_or(0);
                let mut search =
                    CeilingSearch::new(&args.ceiling_rates, floor, args.ceiling_bisect_steps);
                while let Some(r) = search.next_rate() {
                    eprint!("\r[ceiling] {} {} {} ...          ", w.name(), m.name(), r);
                    let res = run_cell(w, m.clone(), Some(r), CEILING_CELL_SECONDS).await?;
                    search.record(r, res.sustained);
                    results.push(res);
                }
                let (ceiling, first_unsustained) = search.bracket();
                ceilings.push(Ceiling {
                    workload: w.name().to_string(),
                    mode: m.name(),
                    ceiling,
                    first_unsustained,
                });
            }
        }
        println!(
            "\nceiling search: {:?}, then {} bisection step(s)\n\n{}",
            args.ceiling_rates,
            args.ceiling_bisect_steps,
            eddy_cli::report::ceiling_tables(&ceilings)
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.ceilings_json {
        let report = serde_json::json!({
            "grid": args.ceiling_rates,
            "bisect_steps": args.ceiling_bisect_steps,
            "cell_seconds": CEILING_CELL_SECONDS,
            "warmup_seconds": args.warmup,
            "ratio_target": eddy_cli::bench::CEILING_RATIO_TARGET,
            "searched": searched,
            "ceilings": ceilings,
            "comparisons": eddy_cli::bench::compare_ceilings(&ceilings),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let mut md = eddy_cli::report::markdown_table(&results);
        if searched {
            md.push('\n');
            md.push_str(&eddy_cli::report::ceiling_tables(&ceilings));
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        eddy_cli::report::write_svg(&results, path)?;
    }
    println!("harness time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
