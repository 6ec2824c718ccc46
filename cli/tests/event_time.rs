//! Event time on tokio's paused clock: idle source instances, and
//! processing-time timers on a quiet input.

use std::sync::Arc;
use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::{SourceContext, SourcePoll};
use tokio::time::Instant;

/// A source that emits, per instance, records `(instance, ts)` at given
/// moments of (virtual) time after it opens, then finishes at `end_ms`.
#[derive(Clone)]
struct Scripted {
    plan: Arc<Vec<Vec<(u64, i64)>>>,
    end_ms: u64,
    instance: usize,
    start: Option<Instant>,
    next: usize,
}

impl Scripted {
    fn new(plan: Vec<Vec<(u64, i64)>>, end_ms: u64) -> Self {
        Self {
            plan: Arc::new(plan),
            end_ms,
            instance: 0,
            start: None,
            next: 0,
        }
    }
}

impl Source<(usize, i64)> for Scripted {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.instance = ctx.instance;
        self.start = Some(Instant::now());
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<(usize, i64)>>,
        _max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let start = self.start.expect("opened");
        let plan = &self.plan[self.instance];
        let elapsed = start.elapsed();
        if let Some(&(at, ts)) = plan.get(self.next) {
            if elapsed >= Duration::from_millis(at) {
                self.next += 1;
                let mut r = Record::new((self.instance, ts));
                r.timestamp = ts;
                out.push(r);
                return Ok(SourcePoll::Ready);
            }
            return Ok(SourcePoll::IdleUntil(start + Duration::from_millis(at)));
        }
        if elapsed < Duration::from_millis(self.end_ms) {
            return Ok(SourcePoll::IdleUntil(
                start + Duration::from_millis(self.end_ms),
            ));
        }
        Ok(SourcePoll::Finished)
    }
}

/// Instance 0 emits event times 0, 100, ..., 2000 in the first 200 ms;
/// instance 1 is silent until 1 s, then emits 50 and 60 (behind the
/// watermark of instance 0); both finish at 1.5 s.
fn plan() -> Vec<Vec<(u64, i64)>> {
    vec![
        (0..=20).map(|i| (10 * i, 100 * i as i64)).collect(),
        vec![(1000, 50), (1010, 60)],
    ]
}

struct Run {
    /// (window start, count) visible at 500 ms.
    early: Vec<(i64, u64)>,
    /// (window start, count) at the end.
    all: Vec<(i64, u64)>,
    late: Vec<(usize, i64)>,
    late_counted: u64,
}

async fn run(idle: Option<Duration>) -> Run {
    let pipeline = Pipeline::new();
    let mut strategy = WatermarkStrategy::monotonous();
    if let Some(d) = idle {
        strategy = strategy.with_idleness(d);
    }
    let counts = CollectSink::new();
    let late = CollectSink::new();
    let (windows, late_records) = pipeline
        .source("scripted", Scripted::new(plan(), 1500))
        .set_parallelism(2)
        .with_watermarks(strategy)
        .key_by(|_: &(usize, i64)| 0u8)
        .window(Windows::tumbling(Duration::from_millis(500)))
        .aggregate_with_late(eddy::operators::aggregate::Count);
    windows
        .map(|r: WindowResult<u8, u64>| (r.window.start, r.value))
        .sink("counts", counts.clone());
    late_records.sink("late", late.clone());
    let mut q = pipeline.start().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut early = counts.values();
    early.sort();
    q.await_termination().await.unwrap();
    let late_counted = q.progress().instances.iter().map(|i| i.late_records).sum();
    let mut all = counts.values();
    all.sort();
    Run {
        early,
        all,
        late: late.values(),
        late_counted,
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_instance_stops_holding_the_watermark_and_its_return_is_late() {
    let r = run(Some(Duration::from_millis(100))).await;
    assert_eq!(
        r.early,
        vec![(0, 5), (500, 5), (1000, 5), (1500, 5)],
        "windows fire while instance 1 is idle"
    );
    assert_eq!(r.late, vec![(1, 50), (1, 60)], "its older records are late");
    assert_eq!(r.late_counted, 2);
    assert_eq!(
        r.all,
        vec![(0, 5), (500, 5), (1000, 5), (1500, 5), (2000, 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn without_idleness_a_silent_instance_holds_the_watermark() {
    let r = run(None).await;
    assert_eq!(
        r.early,
        vec![],
        "no window fires while instance 1 is silent"
    );
    assert!(r.late.is_empty());
    assert_eq!(r.late_counted, 0);
    assert_eq!(
        r.all,
        vec![(0, 7), (500, 5), (1000, 5), (1500, 5), (2000, 1)],
        "at the end every window fires, with instance 1's records"
    );
}

/// Emits `"record"` for each record and `"timer"` when a processing-time
/// timer, set one second after each record, fires.
#[derive(Clone)]
struct RemindLater;

impl Operator<(usize, i64), &'static str> for RemindLater {
    fn process(
        &mut self,
        _record: Record<(usize, i64)>,
        out: &mut Collector<'_, &'static str>,
    ) -> Result<(), OperatorError> {
        let at = out.processing_time() + 1_000;
        out.register_timer(TimeDomain::ProcessingTime, at, &0u8)?;
        out.emit("record");
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, &'static str>,
    ) -> Result<(), OperatorError> {
        assert_eq!(timer.domain, TimeDomain::ProcessingTime);
        out.emit("timer");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_processing_time_timer_fires_on_a_quiet_input() {
    let pipeline = Pipeline::new();
    let out = CollectSink::new();
    pipeline
        // One record at once, then nothing for 5 s.
        .source("one", Scripted::new(vec![vec![(0, 0)]], 5_000))
        .key_by(|_: &(usize, i64)| 0u8)
        .transform("remind", RemindLater)
        .sink("out", out.clone());
    let mut q = pipeline.start().unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(out.values(), vec!["record"], "not due yet");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(out.values(), vec!["record", "timer"], "fired with no input");
    q.await_termination().await.unwrap();
    assert_eq!(out.values(), vec!["record", "timer"]);
}

#[test]
fn watermarks_are_refused_where_no_source_generates_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pipeline = Pipeline::new();
        pipeline
            .source("v", VecSource::new(vec![1u64, 2, 3]))
            .map(|x: u64| x + 1)
            .with_watermarks(WatermarkStrategy::monotonous())
            .sink("out", CollectSink::new());
        match pipeline.start() {
            Err(BuildError::Config(msg)) => assert!(msg.contains("sources"), "{msg}"),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("the plan must be refused"),
        }
    });
}

/// A running count kept in operator state on a non-keyed stream.
#[derive(Default)]
struct RunningCount {
    table: Option<eddy::checkpoint::KeyedTable<u8, u64>>,
}

impl Clone for RunningCount {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Operator<GenEvent, u64> for RunningCount {
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        let backend = ctx.take_state_backend().expect("a backend");
        self.table = Some(eddy::checkpoint::KeyedTable::new(backend, "count"));
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn eddy::checkpoint::ManagedState> {
        self.table
            .as_mut()
            .map(|t| t as &mut dyn eddy::checkpoint::ManagedState)
            .into_iter()
            .collect()
    }

    fn process(
        &mut self,
        _record: Record<GenEvent>,
        out: &mut Collector<'_, u64>,
    ) -> Result<(), OperatorError> {
        let n = self.table.as_mut().expect("open").update(&0, |v| {
            let n = v.unwrap_or(0) + 1;
            *v = Some(n);
            n
        })?;
        out.emit(n);
        Ok(())
    }
}

/// State of an operator on a non-keyed stream is checkpointed and restored
/// like keyed state: a query stopped half-way and restarted ends with the
/// count of every record, not only of those read after the restart.
#[test]
fn state_on_a_non_keyed_stream_survives_a_restart() {
    const LIMIT: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let run = |stop_after: Option<Duration>| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = dir.path().to_path_buf();
        rt.block_on(async move {
            let pipeline = Pipeline::with_config(PipelineConfig {
                checkpoint: Some(CheckpointConfig::new(dir.join("checkpoints"))),
                trigger: Trigger::continuous(Duration::from_millis(50)),
                ..Default::default()
            });
            let out = CollectSink::new();
            pipeline
                .source(
                    "gen",
                    GeneratorSource::new(GeneratorConfig {
                        rate_per_sec: Some(40_000),
                        limit: Some(LIMIT),
                        ..Default::default()
                    }),
                )
                .transform("running", RunningCount::default())
                .sink("out", out.clone());
            let mut q = pipeline.start().unwrap();
            if let Some(d) = stop_after {
                tokio::time::sleep(d).await;
                q.stop().await.unwrap();
            } else {
                q.await_termination().await.unwrap();
            }
            out.values()
        })
    };
    let first = run(Some(Duration::from_millis(200)));
    assert!(
        !first.is_empty() && (first.len() as u64) < LIMIT,
        "stopped half-way: {} records",
        first.len()
    );
    let second = run(None);
    assert_eq!(
        second.first().copied(),
        Some(first.len() as u64 + 1),
        "the count resumes"
    );
    assert_eq!(
        second.last().copied(),
        Some(LIMIT),
        "every record counted once"
    );
}
