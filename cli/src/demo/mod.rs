//! `eddy demo iot`: anomaly detection over a simulated sensor fleet, the
//! demo of what Eddy does — event-time windows, keyed state with timers, a
//! lookup join, deduplication, late records on a side output and
//! exactly-once files, checkpointed so that killing and rerunning it
//! resumes where it was. See docs/demo.md.
//!
//! - [`fleet`]: the seeded simulator (and the ground truth).
//! - [`feed`]: the alerts on their way to the sink, for the status and dashboard.
//! - [`source`]: the fleet as the query's source.
//! - [`rules`]: the anomaly rules and the alert and window records.
//! - [`query`]: the Eddy query.
//! - [`score`]: precision, recall and detection delay against the faults.
//! - [`replay`]: the same query over a recorded series (`--replay FILE`).
//! - [`status`]: the live status line and the final summary.

pub mod decimal;
pub mod feed;
pub mod fleet;
pub mod query;
pub mod replay;
pub mod rules;
pub mod score;
pub mod source;
pub mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use eddy::prelude::*;
use fleet::{Fleet, FleetConfig};
use status::Summary;

/// The demos.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DemoCommand {
    /// Anomaly detection over a simulated fleet of machine sensors
    /// (temperature, vibration, pressure) with injected faults: 1 s
    /// event-time windows per sensor, threshold, z-score, stuck and silence
    /// rules, deduplicated alerts and window aggregates in exactly-once
    /// files under `--dir`. Prints a live status every second and, at the
    /// end, the alerts scored against the injected faults. Checkpoints into
    /// `--dir`: rerun with the same options to resume after a crash.
    Iot(IotArgs),
}

/// Options of `eddy demo iot`.
#[derive(clap::Args, Debug, Clone)]
pub struct IotArgs {
    /// Seed of the fleet, its noise, its faults and its late readings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sensors (three per machine).
    #[arg(long, default_value_t = 3_000)]
    pub sensors: u32,
    /// Seconds of event time to simulate (every sensor reports every
    /// 100 ms of it); 0: run until Ctrl-C.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Readings per second of wall time (0: as fast as the query goes).
    #[arg(long, default_value_t = 300_000)]
    pub rate: u64,
    /// Checkpoint and output directory; rerunning on it resumes.
    #[arg(long, default_value = "eddy-demo")]
    pub dir: PathBuf,
    /// Parallelism of the keyed operators and sinks (the fleet source is
    /// one instance).
    #[arg(long, default_value_t = 2)]
    pub parallelism: usize,
    /// Keep keyed state in RocksDB (default: in memory, checkpointed).
    #[arg(long)]
    pub rocksdb: bool,
    /// Milliseconds between checkpoints (continuous mode).
    #[arg(long, default_value_t = 1_000)]
    pub interval_ms: u64,
    /// Run micro-batches every this many milliseconds instead of
    /// continuously (a checkpoint per batch).
    #[arg(long)]
    pub trigger_ms: Option<u64>,
    /// Share of sensors given a fault.
    #[arg(long, default_value_t = 0.02)]
    pub fault_share: f64,
    /// Share of readings that arrive late (3 s behind, past the watermark).
    #[arg(long, default_value_t = 0.001)]
    pub late_share: f64,
    /// Other readings arrive up to this many ms out of order.
    #[arg(long, default_value_t = 200)]
    pub disorder_ms: i64,
    /// No live status line.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run the rules over a recorded series instead of the fleet: a CSV
    /// file of `time,value` lines (RFC 3339 or epoch ms), e.g.
    /// data/water-flow.csv. The fleet options are then ignored.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// The dashboard and Prometheus endpoints.
    #[command(flatten)]
    pub endpoints: crate::dashboard::EndpointArgs,
    /// Also write the window aggregates and the alerts, exactly once, to
    /// the Kafka topics eddy-demo-windows and eddy-demo-alerts on these
    /// brokers (created when missing); the files stay.
    #[arg(long)]
    pub kafka: Option<String>,
}

impl Default for IotArgs {
    fn default() -> Self {
        Self {
            seed: 1,
            sensors: 3_000,
            seconds: 120,
            rate: 300_000,
            dir: PathBuf::from("eddy-demo"),
            parallelism: 2,
            rocksdb: false,
            interval_ms: 1_000,
            trigger_ms: None,
            fault_share: 0.02,
            late_share: 0.001,
            disorder_ms: 200,
            quiet: false,
            json: None,
            replay: None,
            endpoints: Default::default(),
            kafka: None,
        }
    }
}

/// The longest bounded run, seconds of event time (a year).
pub const MAX_SECONDS: u64 = 365 * 86_400;

impl IotArgs {
    /// The fleet these options describe.
    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            seed: self.seed,
            sensors: self.sensors,
            seconds: (self.seconds > 0).then_some(self.seconds),
            fault_share: self.fault_share,
            late_share: self.late_share,
            max_disorder_ms: self.disorder_ms,
            ..Default::default()
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.sensors > 0, "--sensors must be at least 1");
        anyhow::ensure!(
            self.seconds <= MAX_SECONDS,
            "--seconds must be at most {MAX_SECONDS} (a year of event time)"
        );
        anyhow::ensure!(self.parallelism > 0, "--parallelism must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fault_share) && (0.0..=1.0).contains(&self.late_share),
            "--fault-share and --late-share are shares between 0 and 1"
        );
        anyhow::ensure!(
            (0..query::WATERMARK_BOUND_MS as i64).contains(&self.disorder_ms),
            "--disorder-ms must be below the watermark bound ({} ms)",
            query::WATERMARK_BOUND_MS
        );
        Ok(())
    }
}

/// Runs a demo.
///
/// # Errors
/// Bad options, a query failure, or the output directory unreadable.
pub async fn run(cmd: DemoCommand) -> anyhow::Result<()> {
    match cmd {
        DemoCommand::Iot(args) => match &args.replay {
            Some(file) => run_replay(&args, file).await.map(|_| ()),
            None => run_iot(&args).await.map(|_| ()),
        },
    }
}

/// The file recording the options a demo directory was started with.
const OPTIONS_FILE: &str = "demo-options.json";

/// A rerun on `dir` must simulate the same fleet at the same parallelism
/// and state backend, or its checkpoint and outputs would not fit: refused
/// with what differs.
fn check_options(dir: &Path, input: serde_json::Value, args: &IotArgs) -> anyhow::Result<()> {
    let path = dir.join(OPTIONS_FILE);
    let mut now = serde_json::json!({
        "input": input,
        "parallelism": args.parallelism,
        "rocksdb": args.rocksdb,
    });
    // Kafka sinks change the plan; a directory started without them
    // (or before they existed) keeps its options file as it was.
    if args.kafka.is_some() {
        now["kafka"] = serde_json::json!(true);
    }
    match std::fs::read(&path) {
        Ok(bytes) => {
            let before: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            anyhow::ensure!(
                before == now,
                "{} was started with other options ({before}); rerun with those to resume, or \
                 use another --dir",
                dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, serde_json::to_vec_pretty(&now)?)
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A pipeline checkpointing into `args.dir`, with the trigger asked for.
fn checkpointed_pipeline(args: &IotArgs) -> Pipeline {
    let mut checkpoint = CheckpointConfig::new(args.dir.join("checkpoints"));
    if args.rocksdb {
        checkpoint = checkpoint.with_rocksdb(args.dir.join("rocksdb"));
    }
    let trigger = match args.trigger_ms {
        Some(ms) => Trigger::ProcessingTime(Duration::from_millis(ms.max(1))),
        None => Trigger::continuous(Duration::from_millis(args.interval_ms.max(1))),
    };
    Pipeline::with_config(PipelineConfig {
        checkpoint: Some(checkpoint),
        trigger,
        default_parallelism: args.parallelism,
        ..Default::default()
    })
}

/// Waits until `q` finishes or Ctrl-C stops it (draining what is in
/// flight), calling `every_second` once a second meanwhile.
///
/// # Errors
/// The query's failure.
async fn run_to_end(q: &mut Query, mut every_second: impl FnMut(&Query)) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut printed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if q.is_finished() {
                    break;
                }
                if printed.elapsed() >= Duration::from_secs(1) {
                    printed = tokio::time::Instant::now();
                    every_second(q);
                }
            }
            _ = tokio::signal::ctrl_c() => {
                println!("stopping: draining what is in flight and committing it");
                break;
            }
        }
    }
    q.stop().await?;
    Ok(())
}

/// The demo's additions to the dashboard and the Prometheus text: the
/// alert feed, the machine map at the newest event time, the alert
/// counters.
fn dashboard_hooks(
    fleet: &Fleet,
    alerts: Arc<feed::AlertFeed>,
    newest_ts: Arc<AtomicI64>,
) -> crate::dashboard::AppHooks {
    let sensors = fleet.config().sensors;
    let feed = alerts.clone();
    crate::dashboard::AppHooks {
        title: format!("IoT demo: {sensors} sensors, seed {}", fleet.config().seed),
        panel: Some(Arc::new(move || {
            let now = newest_ts.load(std::sync::atomic::Ordering::Relaxed);
            serde_json::to_value(feed.panel(sensors, now)).unwrap_or_default()
        })),
        metrics: Some(Arc::new(move |e| alerts.write_prometheus(e))),
    }
}

/// Runs the demo's query over the recorded series in `file`
/// (`--replay`), prints and returns what it committed.
///
/// # Errors
/// Bad options, a file without readings, a directory started with other
/// options, a query failure.
pub async fn run_replay(args: &IotArgs, file: &Path) -> anyhow::Result<replay::ReplaySummary> {
    args.validate()?;
    let series = replay::read_series(file)?;
    check_options(&args.dir, serde_json::json!({ "replay": file }), args)?;
    let pipeline = checkpointed_pipeline(args);
    let scale = series.scale();
    let readings = pipeline
        .source("replay", VecSource::new(series.readings.clone()))
        .set_parallelism(1)
        .with_watermarks(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
                scale.bound_ms().max(0) as u64,
            ))
            .with_timestamps(|r: &fleet::Reading| r.ts),
        );
    query::build(
        readings,
        scale,
        series.horizon(),
        &args.dir,
        args.parallelism,
        None,
    );
    println!(
        "eddy demo iot --replay {}: {} readings, one every {} s; checkpoints in {}",
        file.display(),
        series.readings.len(),
        series.period_ms / 1000,
        args.dir.display()
    );
    let mut q = pipeline.start()?;
    run_to_end(&mut q, |_| {}).await?;
    let (mut alerts, _) = status::committed_alerts(&args.dir)?;
    alerts.sort_by_key(|a| (a.ts, a.rule));
    let count = |dir: PathBuf| FileSink::<()>::read_committed(&dir).map_or(0, |l| l.len());
    let summary = replay::ReplaySummary {
        file: file.to_path_buf(),
        readings: series.readings.len(),
        skipped: series.skipped,
        period_ms: series.period_ms,
        windows: count(query::Outputs::windows(&args.dir)),
        late_readings: count(query::Outputs::late(&args.dir)),
        alerts,
    };
    println!("{summary}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

/// Runs `eddy demo iot` to its end (or Ctrl-C), prints and returns its
/// summary.
///
/// # Errors
/// Bad options, a directory started with other options, a query failure.
pub async fn run_iot(args: &IotArgs) -> anyhow::Result<Summary> {
    args.validate()?;
    let fleet = Arc::new(Fleet::new(args.fleet_config()));
    check_options(&args.dir, serde_json::json!(fleet.config()), args)?;
    status::write_faults(&args.dir, &fleet)?;
    let pipeline = checkpointed_pipeline(args);
    let rate = (args.rate > 0).then_some(args.rate);
    let newest_ts = Arc::new(AtomicI64::new(i64::MIN));
    let readings = query::fleet_readings(&pipeline, fleet.clone(), rate, newest_ts.clone());
    if let Some(brokers) = &args.kafka {
        for topic in [query::KAFKA_WINDOWS_TOPIC, query::KAFKA_ALERTS_TOPIC] {
            // The admin client blocks: off the runtime's threads.
            let (b, partitions) = (brokers.clone(), args.parallelism as i32);
            tokio::task::spawn_blocking(move || {
                eddy::connectors::kafka::admin::create_topic(
                    &b,
                    topic,
                    partitions,
                    Duration::from_secs(30),
                )
            })
            .await?
            .with_context(|| format!("creating topic {topic} on {brokers}"))?;
        }
    }
    let alerts = query::build(
        readings,
        query::Scale::FLEET,
        fleet.end_ms(),
        &args.dir,
        args.parallelism,
        args.kafka.as_deref(),
    );
    let live = query::Live {
        newest_ts: newest_ts.clone(),
        alerts: alerts.clone(),
    };
    println!("{}", status::banner(args, &fleet));
    let mut q = pipeline.start()?;
    let hooks = dashboard_hooks(&fleet, alerts, newest_ts);
    let _endpoints = crate::dashboard::start(q.monitor(), hooks, &args.endpoints).await?;
    if let Some(epoch) = q.checkpoint_stats().and_then(|s| s.restored_epoch) {
        println!("resumed from checkpoint {epoch} in {}", args.dir.display());
    }
    let printer = status::StatusPrinter::new(fleet.clone(), live);
    run_to_end(&mut q, |q| {
        if !args.quiet {
            println!("{}", printer.line(q));
        }
    })
    .await?;
    let summary = status::summarise(&args.dir, &fleet, &q)?;
    println!("{summary}");
    println!(
        "done: restored from {:?}, {} checkpoints completed",
        summary.resumed_from, summary.checkpoints
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_resumes_only_with_the_options_it_was_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let args = IotArgs {
            dir: dir.path().join("demo"),
            ..Default::default()
        };
        check_options(&args.dir, serde_json::json!(args.fleet_config()), &args).unwrap();
        check_options(&args.dir, serde_json::json!(args.fleet_config()), &args).unwrap();
        let other = IotArgs {
            seed: 2,
            ..args.clone()
        };
        let e =
            check_options(&other.dir, serde_json::json!(other.fleet_config()), &other).unwrap_err();
        assert!(e.to_string().contains("other options"), "{e}");
        let rocks = IotArgs {
            rocksdb: true,
            ..args.clone()
        };
        assert!(
            check_options(&rocks.dir, serde_json::json!(rocks.fleet_config()), &rocks).is_err()
        );
    }

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        for bad in [
            IotArgs {
                sensors: 0,
                ..Default::default()
            },
            IotArgs {
                parallelism: 0,
                ..Default::default()
            },
            IotArgs {
                fault_share: 1.5,
                ..Default::default()
            },
            IotArgs {
                disorder_ms: 800,
                ..Default::default()
            },
            IotArgs {
                seconds: u64::MAX,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(IotArgs::default().validate().is_ok());
    }
}
