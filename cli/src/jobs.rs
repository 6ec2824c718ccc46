//! Ready-made jobs: the pipelines the CLI, the examples and the benchmarks run.

use serde::{Deserialize, Serialize};

use eddy::prelude::*;

/// A streaming word count over generated sentences: generator -> flat_map
/// (words) -> key_by(word) -> count -> sink. Words are drawn from a fixed
/// vocabulary by each record's key, so the answer is checkable.
pub fn word_count<S: Sink<(String, u64)> + Clone>(
    pipeline: &Pipeline,
    generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    pipeline
        .source("sentences", GeneratorSource::new(generator))
        .set_parallelism(parallelism)
        .flat_map(|e: GenEvent| sentence(e.key))
        .set_parallelism(parallelism)
        .key_by(|w: &String| w.clone())
        .count()
        .set_parallelism(parallelism)
        .sink("counts", sink)
        .set_parallelism(parallelism);
}

const VOCABULARY: &[&str] = &[
    "sensor", "stream", "epoch", "marker", "window", "latency", "state", "edge", "eddy", "flow",
    "alert", "record",
];

/// The words of the sentence generated for `key`.
pub fn sentence(key: u64) -> Vec<String> {
    let n = 1 + (key % 4) as usize;
    (0..n)
        .map(|i| {
            VOCABULARY[((key / 4 + i as u64 * 7) % VOCABULARY.len() as u64) as usize].to_string()
        })
        .collect()
}

/// The keyed-count latency pipeline of the benchmarks:
/// generator -> map -> key_by(key) -> count -> sink.
pub fn keyed_count<S: Sink<(u64, u64)> + Clone>(
    pipeline: &Pipeline,
    generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    pipeline
        .source("generator", GeneratorSource::new(generator))
        .set_parallelism(parallelism)
        .map(|e: GenEvent| (e.key, e.value))
        .set_parallelism(parallelism)
        .key_by(|r: &(u64, u64)| r.0)
        .count()
        .set_parallelism(parallelism)
        .sink("sink", sink)
        .set_parallelism(parallelism);
}

/// Count and sum of values per key: the aggregation of the crash tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountSum;

impl Aggregator<GenEvent> for CountSum {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, u64), e: &GenEvent) {
        acc.0 += 1;
        acc.1 += e.value;
    }
    fn result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
}

/// Running count and sum per key: generator -> key_by(key) ->
/// aggregate(count, sum) -> sink. Output `(key, (count, sum))`.
pub fn key_totals<S: Sink<(u64, (u64, u64))> + Clone>(
    pipeline: &Pipeline,
    generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    pipeline
        .source("generator", GeneratorSource::new(generator))
        .set_parallelism(parallelism)
        .key_by(|e: &GenEvent| e.key)
        .aggregate("totals", CountSum)
        .set_parallelism(parallelism)
        .sink("files", sink)
        .set_parallelism(parallelism);
}

/// The line the crash tests' file sink writes for one update.
pub fn totals_line(r: &(u64, (u64, u64))) -> String {
    format!("{},{},{}", r.0, r.1 .0, r.1 .1)
}

/// Count, sum and largest value per key: the aggregation of the damage tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountSumMax;

impl Aggregator<GenEvent> for CountSumMax {
    type Acc = (u64, u64, u64);
    type Out = (u64, u64, u64);
    fn create(&self) -> (u64, u64, u64) {
        (0, 0, 0)
    }
    fn add(&self, acc: &mut (u64, u64, u64), e: &GenEvent) {
        acc.0 += 1;
        acc.1 += e.value;
        acc.2 = acc.2.max(e.value);
    }
    fn result(&self, acc: &(u64, u64, u64)) -> (u64, u64, u64) {
        *acc
    }
}

/// Keys of the `right` generator of [`union_stats`] are shifted by this.
pub const UNION_RIGHT_KEY_OFFSET: u64 = 1_000_000;

/// Whether [`union_stats`] keeps a record: values divisible by 10 are dropped.
pub fn union_keeps(e: &GenEvent) -> bool {
    e.value % 10 != 0
}

/// Two generators (`left` at `parallelism`, `right` at 1, its keys shifted
/// by [`UNION_RIGHT_KEY_OFFSET`]) -> union -> filter ([`union_keeps`]) ->
/// key_by(key) -> count, sum and max -> sink. Output `(key, (count, sum, max))`.
pub fn union_stats<S: Sink<(u64, (u64, u64, u64))> + Clone>(
    pipeline: &Pipeline,
    generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    let right = pipeline
        .source("right", GeneratorSource::new(generator.clone()))
        .set_parallelism(1)
        .map(|e: GenEvent| GenEvent {
            key: e.key + UNION_RIGHT_KEY_OFFSET,
            ..e
        });
    pipeline
        .source("left", GeneratorSource::new(generator))
        .set_parallelism(parallelism)
        .union(right)
        .filter(union_keeps)
        .set_parallelism(parallelism)
        .key_by(|e: &GenEvent| e.key)
        .aggregate("stats", CountSumMax)
        .set_parallelism(parallelism)
        .sink("files", sink)
        .set_parallelism(parallelism);
}

/// The line the damage tests' file sink writes for one update of [`union_stats`].
pub fn stats_line(r: &(u64, (u64, u64, u64))) -> String {
    format!("{},{},{},{}", r.0, r.1 .0, r.1 .1, r.1 .2)
}

/// The event time of [`windowed_counts`]: 20 sequence numbers per ms (event
/// time keeps pace with the wall clock at 20k records/s), up to 50 ms of
/// disorder, and one record in 50 400 ms late.
pub const WINDOWED_EVENT_TIME: EventTimeConfig = EventTimeConfig {
    start_ms: 1_700_000_000_000,
    records_per_ms: 20,
    max_disorder_ms: 50,
    late_every: 50,
    late_by_ms: 400,
};

/// [`windowed_counts`]: the watermark's bound on out-of-orderness, ms.
pub const WINDOWED_BOUND_MS: u64 = 50;
/// [`windowed_counts`]: tumbling windows of this many ms.
pub const WINDOWED_SIZE_MS: u64 = 200;
/// [`windowed_counts`]: allowed lateness, ms.
pub const WINDOWED_LATENESS_MS: u64 = 100;

/// Count and sum per key and 200 ms tumbling event-time window: generator
/// (one instance, event time [`WINDOWED_EVENT_TIME`]) -> key_by(key) ->
/// window -> sink, in `mode`. Output `(key, window start, count, sum)`;
/// late records are counted and dropped.
pub fn windowed_counts<S: Sink<(u64, i64, u64, u64)> + Clone>(
    pipeline: &Pipeline,
    mut generator: GeneratorConfig,
    parallelism: usize,
    mode: OutputMode,
    sink: S,
) {
    generator.event_time = Some(WINDOWED_EVENT_TIME);
    pipeline
        .source("generator", GeneratorSource::new(generator))
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            std::time::Duration::from_millis(WINDOWED_BOUND_MS),
        ))
        .key_by(|e: &GenEvent| e.key)
        .window(Windows::tumbling(std::time::Duration::from_millis(
            WINDOWED_SIZE_MS,
        )))
        .allowed_lateness(std::time::Duration::from_millis(WINDOWED_LATENESS_MS))
        .output_mode(mode)
        .name("windows")
        .aggregate(CountSum)
        .set_parallelism(parallelism)
        .map(|r: WindowResult<u64, (u64, u64)>| (r.key, r.window.start, r.value.0, r.value.1))
        .set_parallelism(parallelism)
        .sink("files", sink)
        .set_parallelism(parallelism);
}

/// The line the window crash tests' file sink writes for one result.
pub fn window_line(r: &(u64, i64, u64, u64)) -> String {
    format!("{},{},{},{}", r.0, r.1, r.2, r.3)
}

/// One open session of a key in [`Sessionizer`]'s state: `[start, end)`
/// with `end` = its last record's time + the gap, and count, sum and max of
/// its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    /// Its first record's event time.
    pub start: i64,
    /// Its last record's event time plus the gap.
    pub end: i64,
    /// Records in it.
    pub count: u64,
    /// Sum of their values.
    pub sum: u64,
    /// Largest value.
    pub max: u64,
}

/// A session: `(key, start, end, count, sum, max)`.
pub type SessionRow = (u64, i64, i64, u64, u64, u64);

/// A sessioniser written as a keyed process function with event-time
/// timers: a key's session is emitted once the key has been quiet for
/// `gap_ms` of event time (the watermark reaches `end - 1`). Records less
/// than `gap_ms` apart share a session, including out-of-order ones that
/// bridge two sessions (which merge); a record that touches no open
/// session and whose own session would already be over is late (counted,
/// dropped). The same answer as `Windows::session(gap)` with a count, sum
/// and max, and the test of the keyed process operator's timers.
#[derive(Debug, Clone, Copy)]
pub struct Sessionizer {
    /// The quiet time that ends a session, ms.
    pub gap_ms: i64,
}

impl KeyedProcessFunction<GenEvent, u64> for Sessionizer {
    type State = ListState<OpenSession>;
    type Out = SessionRow;

    fn process(
        &mut self,
        e: GenEvent,
        ctx: &mut ProcessContext<'_, '_, u64, Self::State, SessionRow>,
    ) -> Result<(), OperatorError> {
        let ts = ctx.timestamp();
        if ts == eddy::runtime::record::NO_TIMESTAMP {
            return Err(OperatorError::new(
                "sessionizer: a record without event time",
            ));
        }
        let mut own = OpenSession {
            start: ts,
            end: ts.saturating_add(self.gap_ms.max(1)),
            count: 1,
            sum: e.value,
            max: e.value,
        };
        let touches = |s: &OpenSession| s.start < own.end && own.start < s.end;
        let touching = ctx.state().is_some_and(|l| l.iter().any(touches));
        if !touching && own.end - 1 <= ctx.watermark() {
            ctx.count_late(1);
            return Ok(());
        }
        let mut replaced = Vec::new();
        let (start, end) = (own.start, own.end);
        ctx.state_mut().values_mut().retain(|s| {
            if s.start < end && start < s.end {
                own.start = own.start.min(s.start);
                own.end = own.end.max(s.end);
                own.count += s.count;
                own.sum += s.sum;
                own.max = own.max.max(s.max);
                replaced.push(s.end - 1);
                false
            } else {
                true
            }
        });
        ctx.state_mut().add(own);
        for t in replaced {
            ctx.delete_event_time_timer(t)?;
        }
        ctx.register_event_time_timer(own.end - 1)
    }

    fn on_timer(
        &mut self,
        timer: FiredTimer,
        ctx: &mut ProcessContext<'_, '_, u64, Self::State, SessionRow>,
    ) -> Result<(), OperatorError> {
        if !ctx.state_exists() {
            return Ok(());
        }
        let key = *ctx.key();
        let sessions = ctx.state_mut().values_mut();
        let Some(i) = sessions.iter().position(|s| s.end - 1 == timer.time) else {
            return Ok(());
        };
        let s = sessions.remove(i);
        if sessions.is_empty() {
            ctx.clear_state();
        }
        ctx.emit_at((key, s.start, s.end, s.count, s.sum, s.max), timer.time);
        Ok(())
    }
}

/// [`sessions`]: the gap that ends a session, ms.
pub const SESSION_GAP_MS: i64 = 100;

/// Sessions per key: generator (one instance, event time
/// [`WINDOWED_EVENT_TIME`], watermark bound [`WINDOWED_BOUND_MS`]) ->
/// key_by(key) -> keyed process [`Sessionizer`] (gap [`SESSION_GAP_MS`],
/// named `sessions`) -> sink. Output [`SessionRow`]s.
pub fn sessions<S: Sink<SessionRow> + Clone>(
    pipeline: &Pipeline,
    mut generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    generator.event_time = Some(WINDOWED_EVENT_TIME);
    pipeline
        .source("generator", GeneratorSource::new(generator))
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            std::time::Duration::from_millis(WINDOWED_BOUND_MS),
        ))
        .key_by(|e: &GenEvent| e.key)
        .process(
            "sessions",
            Sessionizer {
                gap_ms: SESSION_GAP_MS,
            },
        )
        .set_parallelism(parallelism)
        .sink("files", sink)
        .set_parallelism(parallelism);
}

/// The line the session crash test's file sink writes for one session.
pub fn session_line(r: &SessionRow) -> String {
    format!("{},{},{},{},{},{}", r.0, r.1, r.2, r.3, r.4, r.5)
}

/// The crash-test and CLI job `eddy totals --shape <shape>` over
/// `generator`, into an exactly-once file sink in `out`.
///
/// # Errors
/// An unknown shape.
pub fn totals_by_shape(
    pipeline: &Pipeline,
    shape: &str,
    generator: GeneratorConfig,
    parallelism: usize,
    out: std::path::PathBuf,
) -> anyhow::Result<()> {
    match shape {
        "totals" => key_totals(
            pipeline,
            generator,
            parallelism,
            FileSink::new(out, Delivery::ExactlyOnce, totals_line),
        ),
        "union" => union_stats(
            pipeline,
            generator,
            parallelism,
            FileSink::new(out, Delivery::ExactlyOnce, stats_line),
        ),
        "windows-append" | "windows-update" => windowed_counts(
            pipeline,
            generator,
            parallelism,
            if shape == "windows-append" {
                OutputMode::Append
            } else {
                OutputMode::Update
            },
            FileSink::new(out, Delivery::ExactlyOnce, window_line),
        ),
        "join" => crate::join_job::interval_join(
            pipeline,
            generator,
            parallelism,
            FileSink::new(out, Delivery::ExactlyOnce, crate::join_job::join_line),
        ),
        "sessions" => sessions(
            pipeline,
            generator,
            parallelism,
            FileSink::new(out, Delivery::ExactlyOnce, session_line),
        ),
        other => anyhow::bail!(
            "unknown --shape {other:?}: totals, union, windows-append, windows-update, join or \
             sessions"
        ),
    }
    Ok(())
}
