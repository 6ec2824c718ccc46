//! The latency harness behind `eddy bench latency`: runs the same workloads
//! under continuous processing and under micro-batches, at fixed input
//! rates, and measures end-to-end latency per record (creation at the
//! generator, or at an external load generator, to visibility at the sink)
//! in an hdrhistogram. Micro-batch output is visible when its batch commits,
//! so micro-batch latency is measured at commit.
//!
//! Workloads: W1 passthrough (source -> map -> sink), W2 keyed running
//! count over 10k keys (source -> map -> key_by -> count -> sink) and W3 a
//! 1 s tumbling event-time window count over 10k keys (source with event
//! time, 10 ms bounded disorder -> map -> key_by -> window count -> sink).
//! All checkpoint to a scratch directory with RocksDB state: continuous
//! mode every second, micro-batch mode at every batch (as Spark commits
//! offsets per batch). W3's latency is that of its window results: from the
//! creation of the record whose watermark closed the window to the
//! result's visibility; its rate check counts input records. W4 is an
//! inner interval join (+-50 ms) of two streams at half the input rate
//! each (split by sequence number), keyed over the same keys; a joined
//! row's latency runs from the creation of the later of its two rows, its
//! rate check counts input records and `output_rate` counts joined rows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use eddy::connectors::tcp::TcpLineSource;
use eddy::prelude::*;
use eddy::runtime::query::LatencySummary;
use eddy::runtime::source::DEFAULT_MAX_RECORDS_PER_BATCH;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// W1: source -> map -> sink.
    Passthrough,
    /// W2: source -> map -> key_by -> count -> sink (10k keys).
    KeyedCount,
    /// W3: source (event time) -> map -> key_by -> 1 s tumbling window
    /// count -> sink (10k keys).
    WindowCount,
    /// W4: source (event time) -> map -> split by sequence number into two
    /// streams of half the rate -> key_by -> inner interval join
    /// (+-[`W4_INTERVAL_MS`]) -> sink. Latency: from the creation of the
    /// later of the two rows to the joined row's visibility.
    IntervalJoin,
}

impl Workload {
    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Passthrough => "w1-passthrough",
            Workload::KeyedCount => "w2-keyed-count",
            Workload::WindowCount => "w3-window-count",
            Workload::IntervalJoin => "w4-interval-join",
        }
    }

    /// Parses `w1` / `w2`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "w1" => Ok(Workload::Passthrough),
            "w2" => Ok(Workload::KeyedCount),
            "w3" => Ok(Workload::WindowCount),
            "w4" => Ok(Workload::IntervalJoin),
            other => anyhow::bail!("unknown workload {other} (w1, w2, w3, w4)"),
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

/// W3, W4: how far out of order event time is, and the watermark's bound,
/// ms.
pub const W3_DISORDER_MS: i64 = 10;

/// W4: a row of one stream joins the rows of the other with its key within
/// this many ms either side.
pub const W4_INTERVAL_MS: i64 = 50;

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
    /// Distinct keys (W2, W3).
    pub keys: u64,
    /// The input.
    pub input: Input,
    /// Checkpoint (RocksDB state, every second in continuous mode, every
    /// batch in micro-batch mode).
    pub checkpoints: bool,
    /// Micro-batch mode: the most records the generator puts in one batch.
    /// `None` is the harness's uncapped mode, and the only place Eddy runs
    /// uncapped by default: a paced generator's batch is everything that
    /// became due since the last one (as Spark's rate source), so a mode's
    /// ceiling is the engine's, not the cap's (a 1 M cap allows at most
    /// 10 M records/s at one batch per 100 ms tick). An unthrottled
    /// generator keeps the default cap even then (its batch would never
    /// end). Memory stays bounded either way: records cross bounded edges,
    /// and sinks summarise the latency of a pending batch in a histogram.
    pub max_records_per_batch: Option<u64>,
    /// A TCP input's busy-poll window (zero: none; see
    /// [`TcpLineSource::with_busy_poll`]).
    pub busy_poll: Duration,
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
    /// Rows per second reaching the sinks (W4: joined rows).
    #[serde(default)]
    pub output_rate: f64,
    /// With `--input loadgen`: how late the generator sent the lines of the
    /// measured seconds (a share of the latency that is the sender's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<crate::send_lateness::SendLateness>,
    /// With a socket input: lines the TCP source refused as malformed (they
    /// are not in the latencies or the rates), and the last one refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed: Option<MalformedInput>,
}

/// Lines a cell's socket input refused (see [`LatencyResult::malformed`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedInput {
    /// How many, over the whole cell (warm-up included).
    pub lines: u64,
    /// The last one (its first bytes) and why it was refused.
    pub last: String,
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
    // Only W3 and W4 have event time: W1 and W2 run without watermarks.
    let w3 = matches!(run.workload, Workload::WindowCount | Workload::IntervalJoin);
    let mut tcp_log: Option<TcpLineSource> = None;
    let records: Stream<(u64, u64)> = match &run.input {
        Input::Generator => pipeline
            .source(
                "generator",
                GeneratorSource::new(GeneratorConfig {
                    rate_per_sec: run.rate,
                    key_space: run.keys,
                    // W3: event time keeps pace with the wall clock at the
                    // cell's rate (5 M records per event-time second when
                    // unthrottled), up to 10 ms out of order.
                    event_time: w3.then(|| EventTimeConfig {
                        start_ms: (eddy::runtime::record::now_ns() / 1_000_000) as i64,
                        records_per_ms: (run.rate.unwrap_or(5_000_000) / 1000).max(1),
                        max_disorder_ms: W3_DISORDER_MS,
                        ..Default::default()
                    }),
                    // Exact pacing needs a spinning source in continuous
                    // mode; a micro-batch source only wakes at ticks.
                    busy_wait: run.rate.is_some() && !run.trigger.is_micro_batch(),
                    // See `LatencyRun::max_records_per_batch`.
                    max_records_per_batch: match (run.max_records_per_batch, run.rate) {
                        (Some(cap), _) => cap,
                        (None, Some(_)) => u64::MAX,
                        (None, None) => DEFAULT_MAX_RECORDS_PER_BATCH,
                    },
                    ..Default::default()
                }),
            )
            .set_parallelism(p)
            .with_watermarks_if(w3, || {
                WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
                    W3_DISORDER_MS as u64,
                ))
            })
            .map(|e: GenEvent| (e.key, e.seq))
            .set_parallelism(p),
        Input::Tcp(addr) => pipeline
            .source("tcp", {
                let source = TcpLineSource::new(addr).with_busy_poll(run.busy_poll);
                // Clones share the source's log of refused lines.
                tcp_log = Some(source.clone());
                source
            })
            .set_parallelism(p)
            // Event time: the generator's scheduled creation time.
            .with_watermarks_if(w3, || {
                WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
                    W3_DISORDER_MS as u64,
                ))
                .with_timestamps(|e: &eddy::connectors::tcp::TcpEvent| (e.created_us / 1000) as i64)
            })
            .map(|e: eddy::connectors::tcp::TcpEvent| (e.key, e.seq))
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
        Workload::WindowCount => {
            records
                .key_by(|r: &(u64, u64)| r.0)
                .window(Windows::tumbling(Duration::from_secs(1)))
                .count()
                .set_parallelism(p)
                .sink("sink", DiscardSink)
                .set_parallelism(p);
        }
        Workload::IntervalJoin => {
            let left = records
                .clone()
                .filter(|r: &(u64, u64)| r.1 % 2 == 0)
                .set_parallelism(p)
                .key_by(|r: &(u64, u64)| r.0);
            let right = records
                .filter(|r: &(u64, u64)| r.1 % 2 == 1)
                .set_parallelism(p)
                .key_by(|r: &(u64, u64)| r.0);
            left.interval_join(right)
                .between(-W4_INTERVAL_MS, W4_INTERVAL_MS)
                .inner()
                .set_parallelism(p)
                .sink("sink", DiscardSink)
                .set_parallelism(p);
        }
    }
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut query = pipeline.start()?;
    tokio::time::sleep(run.warmup).await;
    query.metrics().reset_latency();
    let _ = query.progress();
    tokio::time::sleep(run.duration).await;
    let progress = query.progress();
    let lat = LatencySummary::from_histogram(&query.metrics().merged_latency());
    // Stop gracefully and wait until every task of the query is gone, so
    // that nothing of this cell (a spinning source, a final checkpoint, a
    // closing RocksDB) runs into the next one.
    let _ = tokio::time::timeout(Duration::from_secs(30), query.stop()).await;
    drop(query);
    let settle = Instant::now();
    while tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        > tasks_before
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let lat = lat.ok_or_else(|| anyhow::anyhow!("no latency measured (no output)"))?;
    // W3 emits one row per key and second, W4 as many rows as pairs: their
    // rate is the input's.
    let achieved = match run.workload {
        Workload::WindowCount | Workload::IntervalJoin => progress.input_rows_per_second,
        _ => progress.processed_rows_per_second,
    };
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
        output_rate: progress.processed_rows_per_second,
        sender: None,
        malformed: tcp_log.as_ref().and_then(refused_lines),
    })
}

/// What a socket source refused, if anything.
fn refused_lines(source: &TcpLineSource) -> Option<MalformedInput> {
    let last = source.recent_malformed().pop()?;
    Some(MalformedInput {
        lines: source.malformed_count(),
        last: format!("{:?}: {}", last.line, last.error),
    })
}

/// Sets a watermark strategy on a source stream when `on`.
trait WatermarksIf<T>: Sized {
    fn with_watermarks_if(self, on: bool, s: impl FnOnce() -> WatermarkStrategy<T>) -> Self;
}

impl<T: Data> WatermarksIf<T> for Stream<T> {
    fn with_watermarks_if(self, on: bool, s: impl FnOnce() -> WatermarkStrategy<T>) -> Self {
        if on {
            self.with_watermarks(s())
        } else {
            self
        }
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "eddy-bench-{}-{}",
        std::process::id(),
        eddy::runtime::record::now_ns()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Default number of geometric bisection steps after the ceiling grid: two
/// steps split a factor-2 bracket to within 2^(1/4), about 1.19x.
pub const DEFAULT_BISECT_STEPS: u32 = 2;

/// The question of issue 4: is a micro-batch mode's ceiling within this
/// factor of the continuous one?
pub const CEILING_RATIO_TARGET: f64 = 1.5;

/// A mode's throughput ceiling as the search bracketed it: the true ceiling
/// lies in `[ceiling, first_unsustained)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ceiling {
    /// Workload name.
    pub workload: String,
    /// Trigger mode name.
    pub mode: String,
    /// The highest rate sustained (0: none).
    pub ceiling: u64,
    /// The lowest rate above `ceiling` that was tried and not sustained
    /// (`None`: every rate tried up to the top of the grid was sustained,
    /// so the true ceiling may be higher).
    pub first_unsustained: Option<u64>,
}

/// The search for one mode's ceiling: first a walk up an ascending grid of
/// rates, stopping at the first rate not sustained; then a fixed number of
/// geometric bisection steps between the last rate sustained and that one.
/// A pure state machine: ask [`next_rate`](Self::next_rate) what to run,
/// report the outcome with [`record`](Self::record).
///
/// If the first grid rate is not sustained, the lower end of the bracket is
/// `floor` (the highest rate below the grid the mode sustained elsewhere, 0
/// if none); from 0 there is nothing to bisect and the ceiling is 0. The
/// search assumes that a mode sustaining a rate sustains every lower one;
/// a noisy cell can break that, and the bracket then only reflects the
/// cells tried.
///
/// ```
/// use eddy_cli::bench::CeilingSearch;
///
/// let mut s = CeilingSearch::new(&[2, 4, 8, 16, 32].map(|m| m * 1_000_000), 0, 2);
/// let mut tried = Vec::new();
/// while let Some(rate) = s.next_rate() {
///     tried.push(rate);
///     s.record(rate, rate <= 20_000_000); // the true ceiling: 20M/s
/// }
/// assert_eq!(tried, [2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000, 22_600_000, 19_000_000]);
/// assert_eq!(s.bracket(), (19_000_000, Some(22_600_000)));
/// ```
#[derive(Debug, Clone)]
pub struct CeilingSearch {
    grid: Vec<u64>,
    next_grid: usize,
    lo: u64,
    hi: Option<u64>,
    steps_left: u32,
}

impl CeilingSearch {
    /// A search over `grid` (sorted here, duplicates dropped) followed by
    /// `bisect_steps` bisection steps; `floor` is a rate known sustained
    /// below the grid (0: none).
    pub fn new(grid: &[u64], floor: u64, bisect_steps: u32) -> Self {
        let mut grid = grid.to_vec();
        grid.sort_unstable();
        grid.dedup();
        // A floor is only evidence below the grid.
        let floor = if grid.first().is_some_and(|&g0| floor >= g0) {
            0
        } else {
            floor
        };
        CeilingSearch {
            grid,
            next_grid: 0,
            lo: floor,
            hi: None,
            steps_left: bisect_steps,
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        match self.hi {
            None => self.grid.get(self.next_grid).copied(),
            Some(_) if self.steps_left == 0 => None,
            Some(hi) => geometric_mid(self.lo, hi),
        }
    }

    /// Reports whether `rate` (the last one [`next_rate`](Self::next_rate)
    /// returned) was sustained.
    pub fn record(&mut self, rate: u64, sustained: bool) {
        if self.hi.is_none() {
            self.next_grid += 1;
        } else {
            self.steps_left = self.steps_left.saturating_sub(1);
        }
        if sustained {
            self.lo = self.lo.max(rate);
        } else {
            self.hi = Some(self.hi.map_or(rate, |h| h.min(rate)));
        }
    }

    /// The bracket found so far: (highest rate sustained, lowest rate above
    /// it not sustained).
    pub fn bracket(&self) -> (u64, Option<u64>) {
        (self.lo, self.hi)
    }
}

/// The geometric mean of `lo` and `hi` rounded to three significant digits
/// (readable rates, shared across modes with the same bracket), or exactly
/// if rounding leaves the open interval; `None` if no integer lies strictly
/// between them or `lo` is 0.
pub fn geometric_mid(lo: u64, hi: u64) -> Option<u64> {
    if lo == 0 || hi <= lo.saturating_add(1) {
        return None;
    }
    let mid = ((lo as f64) * (hi as f64)).sqrt();
    let scale = 10f64.powi(mid.log10().floor() as i32 - 2).max(1.0);
    let rounded = ((mid / scale).round() * scale) as u64;
    if rounded > lo && rounded < hi {
        return Some(rounded);
    }
    let exact = mid.round() as u64;
    (exact > lo && exact < hi).then_some(exact)
}

/// A micro-batch mode's ceiling against the continuous one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CeilingComparison {
    /// Workload name.
    pub workload: String,
    /// The micro-batch mode.
    pub mode: String,
    /// The continuous ceiling (highest rate sustained).
    pub continuous: u64,
    /// The micro-batch ceiling.
    pub micro_batch: u64,
    /// `continuous / micro_batch` (`None` when the micro-batch ceiling is 0).
    pub ratio: Option<f64>,
    /// The smallest ratio the brackets allow (the continuous ceiling over
    /// the micro-batch mode's first rate not sustained; 0 when that mode
    /// held the top of the grid).
    pub ratio_min: f64,
    /// The largest ratio the brackets allow (`None`: unbounded, when the
    /// continuous mode held the top of the grid or micro-batch held nothing).
    pub ratio_max: Option<f64>,
    /// Whether the micro-batch ceiling is within [`CEILING_RATIO_TARGET`] of
    /// the continuous one, judged on the measured ceilings; `None` when a
    /// mode held the top of the grid and that leaves the answer open.
    pub within_target: Option<bool>,
}

/// Compares, per workload, every mode's ceiling with the `continuous`
/// one (workloads without a continuous ceiling are skipped), in input order.
pub fn compare_ceilings(ceilings: &[Ceiling]) -> Vec<CeilingComparison> {
    let mut out = Vec::new();
    for c in ceilings {
        let Some(cont) = ceilings
            .iter()
            .find(|k| k.workload == c.workload && k.mode == "continuous")
        else {
            continue;
        };
        if c.mode == cont.mode {
            continue;
        }
        let (lo_c, hi_c) = (cont.ceiling as f64, cont.first_unsustained);
        let (lo_m, hi_m) = (c.ceiling as f64, c.first_unsustained);
        let ratio = (c.ceiling > 0).then(|| lo_c / lo_m);
        let ratio_min = hi_m.map_or(0.0, |h| lo_c / h as f64);
        let ratio_max = match hi_c {
            Some(h) if c.ceiling > 0 => Some(h as f64 / lo_m),
            _ => None,
        };
        let over = ratio.is_none_or(|r| r > CEILING_RATIO_TARGET);
        let within_target = match (hi_c.is_some(), hi_m.is_some()) {
            _ if cont.ceiling == 0 && c.ceiling == 0 => None,
            // Both bracketed: the measured ceilings answer it.
            (true, true) => Some(!over),
            // Continuous could be higher still: only "no" is certain.
            (false, true) => over.then_some(false),
            // Micro-batch could be higher still: only "yes" is certain.
            (true, false) => (!over).then_some(true),
            (false, false) => None,
        };
        out.push(CeilingComparison {
            workload: c.workload.clone(),
            mode: c.mode.clone(),
            continuous: cont.ceiling,
            micro_batch: c.ceiling,
            ratio,
            ratio_min,
            ratio_max,
            within_target,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1_000_000;

    /// The rates a search tries against a mode whose true ceiling is `truth`.
    fn run(grid: &[u64], floor: u64, steps: u32, truth: u64) -> (Vec<u64>, (u64, Option<u64>)) {
        let mut s = CeilingSearch::new(grid, floor, steps);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            assert!(tried.len() < 64, "search does not end: {tried:?}");
            tried.push(rate);
            s.record(rate, rate <= truth);
        }
        (tried, s.bracket())
    }

    fn grid() -> Vec<u64> {
        [2, 4, 8, 16, 32].map(|m| m * M).to_vec()
    }

    #[test]
    fn bisects_the_grid_bracket_geometrically() {
        let (tried, bracket) = run(&grid(), 0, 2, 17 * M);
        assert_eq!(
            tried,
            [2 * M, 4 * M, 8 * M, 16 * M, 32 * M, 22_600_000, 19_000_000]
        );
        assert_eq!(bracket, (16 * M, Some(19_000_000)));
        let (tried, bracket) = run(&grid(), 0, 2, 30 * M);
        assert_eq!(&tried[5..], [22_600_000, 26_900_000]);
        assert_eq!(bracket, (26_900_000, Some(32 * M)));
        // A bracket in the middle of the grid.
        let (tried, bracket) = run(&grid(), 0, 2, 5 * M);
        assert_eq!(tried, [2 * M, 4 * M, 8 * M, 5_660_000, 4_760_000]);
        assert_eq!(bracket, (4_760_000, Some(5_660_000)));
    }

    #[test]
    fn two_steps_resolve_a_factor_two_bracket_to_about_1_19x() {
        for truth in (16..32).map(|t| t * M) {
            let (_, (lo, hi)) = run(&grid(), 0, 2, truth);
            let hi = hi.unwrap();
            assert!(lo <= truth && truth < hi, "{lo} {truth} {hi}");
            let width = hi as f64 / lo as f64;
            assert!(width < 1.2, "bracket {lo}..{hi} for {truth}");
        }
    }

    #[test]
    fn no_bisection_at_the_top_of_the_grid_or_with_zero_steps() {
        let (tried, bracket) = run(&grid(), 0, 2, 100 * M);
        assert_eq!(tried, grid());
        assert_eq!(bracket, (32 * M, None));
        let (tried, bracket) = run(&grid(), 0, 0, 10 * M);
        assert_eq!(tried, [2 * M, 4 * M, 8 * M, 16 * M]);
        assert_eq!(bracket, (8 * M, Some(16 * M)));
    }

    #[test]
    fn below_the_grid_bisects_from_the_floor_or_reports_zero() {
        let (tried, bracket) = run(&grid(), 0, 2, M);
        assert_eq!(tried, [2 * M]);
        assert_eq!(bracket, (0, Some(2 * M)));
        let (tried, bracket) = run(&grid(), M, 2, 1_500_000);
        assert_eq!(tried, [2 * M, 1_410_000, 1_680_000]);
        assert_eq!(bracket, (1_410_000, Some(1_680_000)));
        // A floor at or above the grid's first rate is not evidence of it.
        let (tried, bracket) = run(&grid(), 5 * M, 2, M);
        assert_eq!((tried, bracket), (vec![2 * M], (0, Some(2 * M))));
    }

    #[test]
    fn grid_is_sorted_and_deduplicated() {
        let (tried, _) = run(&[8 * M, 2 * M, 8 * M, 4 * M], 0, 0, 100 * M);
        assert_eq!(tried, [2 * M, 4 * M, 8 * M]);
    }

    #[test]
    fn geometric_mid_stays_strictly_inside() {
        assert_eq!(geometric_mid(16 * M, 32 * M), Some(22_600_000));
        assert_eq!(geometric_mid(10, 40), Some(20));
        assert_eq!(geometric_mid(100, 102), Some(101));
        // Rounding to three digits would hit an end: exact instead.
        assert_eq!(geometric_mid(1_000, 1_002), Some(1_001));
        assert_eq!(geometric_mid(5, 6), None);
        assert_eq!(geometric_mid(5, 5), None);
        assert_eq!(geometric_mid(0, 100), None);
        assert_eq!(geometric_mid(u64::MAX - 2, u64::MAX), None);
    }

    fn ceiling(workload: &str, mode: &str, ceiling: u64, hi: Option<u64>) -> Ceiling {
        Ceiling {
            workload: workload.into(),
            mode: mode.into(),
            ceiling,
            first_unsustained: hi,
        }
    }

    #[test]
    fn compares_each_micro_batch_mode_with_continuous() {
        let cs = [
            ceiling("w2", "microbatch-10ms", 13_500_000, Some(16 * M)),
            ceiling("w2", "continuous", 19 * M, Some(22_600_000)),
            ceiling("w2", "microbatch-100ms", 11_300_000, Some(13_500_000)),
            ceiling("w1", "microbatch-10ms", 16 * M, Some(19 * M)),
        ];
        let cmp = compare_ceilings(&cs);
        assert_eq!(cmp.len(), 2, "w1 has no continuous ceiling: {cmp:?}");
        let a = &cmp[0];
        assert_eq!(
            (a.mode.as_str(), a.continuous, a.micro_batch),
            ("microbatch-10ms", 19 * M, 13_500_000)
        );
        assert!((a.ratio.unwrap() - 19.0 / 13.5).abs() < 1e-9);
        assert!((a.ratio_min - 19.0 / 16.0).abs() < 1e-9);
        assert!((a.ratio_max.unwrap() - 22.6 / 13.5).abs() < 1e-9);
        assert_eq!(a.within_target, Some(true));
        let b = &cmp[1];
        assert!((b.ratio.unwrap() - 19.0 / 11.3).abs() < 1e-9);
        assert_eq!(b.within_target, Some(false));
    }

    #[test]
    fn top_of_grid_leaves_only_the_certain_answer() {
        let top = 32 * M;
        let cmp = |cont: Ceiling, mb: Ceiling| compare_ceilings(&[cont, mb])[0].clone();
        // Continuous may be higher still: a ratio already over 1.5 is "no"...
        let c = cmp(
            ceiling("w", "continuous", top, None),
            ceiling("w", "mb", 16 * M, Some(19 * M)),
        );
        assert_eq!((c.within_target, c.ratio_max), (Some(false), None));
        // ...one under it is open.
        let c = cmp(
            ceiling("w", "continuous", top, None),
            ceiling("w", "mb", 26_900_000, Some(top)),
        );
        assert_eq!(c.within_target, None);
        // Micro-batch may be higher still: a ratio under 1.5 is "yes".
        let c = cmp(
            ceiling("w", "continuous", 26_900_000, Some(top)),
            ceiling("w", "mb", top, None),
        );
        assert_eq!((c.within_target, c.ratio_min), (Some(true), 0.0));
        // Both at the top: open.
        let c = cmp(
            ceiling("w", "continuous", top, None),
            ceiling("w", "mb", top, None),
        );
        assert_eq!((c.within_target, c.ratio), (None, Some(1.0)));
    }

    #[test]
    fn zero_ceilings() {
        let c = compare_ceilings(&[
            ceiling("w", "continuous", 2 * M, Some(4 * M)),
            ceiling("w", "mb", 0, Some(2 * M)),
        ]);
        assert_eq!(
            (c[0].ratio, c[0].ratio_max, c[0].within_target),
            (None, None, Some(false))
        );
        let c = compare_ceilings(&[
            ceiling("w", "continuous", 0, Some(2 * M)),
            ceiling("w", "mb", 0, Some(2 * M)),
        ]);
        assert_eq!((c[0].ratio, c[0].within_target), (None, None));
    }
}
