//! The keyed process operator gives exactly the batch answer: a
//! sessioniser written with it (event-time timers, list state; a session
//! is emitted once its key has been quiet for the gap) equals the batch
//! sessionisation for random out-of-order input with late records, at
//! parallelism 1, 2 and 4, on the memory and the RocksDB backend, under
//! every trigger. Seeded; the seed is printed (`EDDY_PROCESS_SEED`
//! replays). Also: timeouts and state TTL on tokio's paused clock, and
//! `update_state_by_key`.

mod property;
mod window_model;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::{SourceContext, SourcePoll};
use eddy_cli::jobs::{SessionRow, Sessionizer};
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use window_model::{answer, Event, Spec};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    RocksDb,
}

#[derive(Debug, Clone)]
struct Case {
    records: u64,
    keys: u64,
    et: EventTimeConfig,
    bound: i64,
    gap: i64,
    parallelism: usize,
    backend: Backend,
    trigger: Trigger,
}

/// Per session (key, start, end), every (count, sum, max) the sink received.
type Rows = BTreeMap<(u64, i64, i64), Vec<(u64, u64, u64)>>;

/// The sessions the sink received, and the late records counted.
fn run(case: &Case) -> (Rows, u64) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let checkpoint = match case.backend {
            Backend::Memory => None,
            Backend::RocksDb => Some(
                CheckpointConfig::new(dir.path().join("checkpoints"))
                    .with_rocksdb(dir.path().join("state")),
            ),
        };
        let pipeline = Pipeline::with_config(PipelineConfig {
            batch_size: 64,
            channel_capacity: 4,
            trigger: case.trigger.clone(),
            checkpoint,
            ..Default::default()
        });
        let rows = CollectSink::<SessionRow>::new();
        pipeline
            .source(
                "events",
                GeneratorSource::new(GeneratorConfig {
                    key_space: case.keys,
                    limit: Some(case.records),
                    event_time: Some(case.et),
                    ..Default::default()
                }),
            )
            .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
                Duration::from_millis(case.bound as u64),
            ))
            .key_by(|e: &GenEvent| e.key)
            .process("sessions", Sessionizer { gap_ms: case.gap })
            .set_parallelism(case.parallelism)
            .sink("rows", rows.clone());
        let mut q = pipeline.start().unwrap();
        tokio::time::timeout(Duration::from_secs(120), q.await_termination())
            .await
            .expect("the query finishes")
            .unwrap();
        let late: u64 = q
            .progress()
            .instances
            .iter()
            .filter(|i| i.operator == "sessions")
            .map(|i| i.late_records)
            .sum();
        let mut got = Rows::new();
        for (k, s, e, c, sum, max) in rows.values() {
            got.entry((k, s, e)).or_default().push((c, sum, max));
        }
        (got, late)
    })
}

fn check(case: &Case) {
    let events: Vec<Event> = (0..case.records)
        .map(|seq| {
            let e = GenEvent::generate(seq, case.keys, 0);
            Event {
                seq,
                key: e.key,
                value: e.value,
                ts: case.et.timestamp(seq),
            }
        })
        .collect();
    let want = answer(&events, case.bound, 0, Spec::Session(case.gap));
    let (got, late) = run(case);
    println!("{} sessions, {late} late records, in {case:?}", got.len());
    assert_eq!(late, want.late.len() as u64, "late records in {case:?}");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.rows.keys().collect::<Vec<_>>(),
        "sessions differ in {case:?}"
    );
    for (s, rows) in &got {
        assert_eq!(
            rows,
            &vec![want.rows[s]],
            "session {s:?}: emitted once, in {case:?}"
        );
    }
}

fn seed() -> u64 {
    property::seed("EDDY_PROCESS_SEED")
}

fn random_case(rng: &mut impl Rng) -> Case {
    let disorder = rng.random_range(0..40);
    Case {
        records: rng.random_range(500..2500),
        keys: rng.random_range(1..40),
        et: EventTimeConfig {
            start_ms: rng.random_range(-5_000..5_000),
            records_per_ms: rng.random_range(1..4),
            max_disorder_ms: disorder,
            late_every: [0, 7, 13][rng.random_range(0..3)],
            late_by_ms: rng.random_range(1..300),
        },
        bound: if rng.random_bool(0.7) {
            disorder
        } else {
            rng.random_range(0..disorder + 1)
        },
        gap: rng.random_range(2..60),
        parallelism: 1,
        backend: Backend::Memory,
        trigger: Trigger::AvailableNow,
    }
}

#[test]
fn a_sessioniser_with_timers_equals_the_batch_sessionisation() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    for parallelism in [1, 2, 4] {
        for backend in [Backend::Memory, Backend::RocksDb] {
            for trigger in property::triggers() {
                let mut case = random_case(&mut rng);
                case.parallelism = parallelism;
                case.backend = backend;
                case.trigger = trigger;
                check(&case);
            }
        }
    }
}

/// A source that emits `(key, n)` records at given moments of (virtual)
/// time after it opens, then finishes at `end_ms`.
#[derive(Clone)]
struct Scripted {
    plan: Arc<Vec<(u64, &'static str)>>,
    end_ms: u64,
    start: Option<Instant>,
    next: usize,
}

impl Scripted {
    fn new(plan: Vec<(u64, &'static str)>, end_ms: u64) -> Self {
        Self {
            plan: Arc::new(plan),
            end_ms,
            start: None,
            next: 0,
        }
    }
}

impl Source<&'static str> for Scripted {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        self.start = Some(Instant::now());
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<&'static str>>,
        _max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let start = self.start.expect("opened");
        let elapsed = start.elapsed();
        if let Some(&(at, key)) = self.plan.get(self.next) {
            if elapsed >= Duration::from_millis(at) {
                self.next += 1;
                out.push(Record::new(key));
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

/// Counts a key's records; when the key has been quiet for a second of
/// processing time it times out and emits `(key, count)`.
#[derive(Clone)]
struct QuietAlert;

impl KeyedProcessFunction<&'static str, String> for QuietAlert {
    type State = ValueState<u64>;
    type Out = (String, u64);

    fn process(
        &mut self,
        _v: &'static str,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        *ctx.state_mut().get_or_insert_with(|| 0) += 1;
        ctx.set_timeout_duration(Duration::from_secs(1))
    }

    fn on_timeout(
        &mut self,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        assert!(ctx.has_timed_out());
        let key = ctx.key().clone();
        let n = ctx.clear_state().and_then(|mut s| s.take()).unwrap_or(0);
        ctx.emit((key, n));
        Ok(())
    }
}

/// A processing-time timeout fires on a quiet key although no input at
/// all reaches the task, and every record of the key pushes it back
/// (setting a timeout replaces the key's old one).
#[tokio::test(start_paused = true)]
async fn a_processing_time_timeout_fires_on_a_quiet_key_with_no_input() {
    let pipeline = Pipeline::new();
    let out = CollectSink::new();
    pipeline
        // a at 0; b at 0 and 600; then nothing until 5 s.
        .source(
            "clicks",
            Scripted::new(vec![(0, "a"), (0, "b"), (600, "b")], 5_000),
        )
        .key_by(|k: &&'static str| k.to_string())
        .process("quiet", QuietAlert)
        .sink("out", out.clone());
    let mut q = pipeline.start().unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(out.values(), vec![], "nothing quiet for 1 s yet");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = ("a".to_string(), 1);
    let b = ("b".to_string(), 2);
    assert_eq!(out.values(), vec![a.clone()], "a timed out with no input");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(out.values(), vec![a.clone()], "b's timeout was pushed back");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(out.values(), vec![a.clone(), b.clone()]);
    q.await_termination().await.unwrap();
    assert_eq!(out.values(), vec![a, b], "each timeout once");
}

/// Counts a key's records in state with a TTL.
#[derive(Clone)]
struct Count;

impl KeyedProcessFunction<&'static str, String> for Count {
    type State = ValueState<u64>;
    type Out = u64;

    fn process(
        &mut self,
        _v: &'static str,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, u64>,
    ) -> Result<(), OperatorError> {
        let n = ctx.state_mut().get_or_insert_with(|| 0);
        *n += 1;
        let n = *n;
        ctx.emit(n);
        Ok(())
    }
}

/// State with a TTL of 1 s of processing time, refreshed by every write:
/// records 500 ms apart keep counting; after 1.5 s of quiet the count
/// starts over.
#[tokio::test(start_paused = true)]
async fn state_ttl_expires_state_not_written_for_the_ttl() {
    let pipeline = Pipeline::new();
    let out = CollectSink::new();
    pipeline
        .source(
            "clicks",
            Scripted::new(
                vec![(0, "a"), (500, "a"), (1_000, "a"), (2_500, "a")],
                3_000,
            ),
        )
        .key_by(|k: &&'static str| k.to_string())
        .process("count", Count.with_state_ttl(Duration::from_secs(1)))
        .sink("out", out.clone());
    pipeline.start().unwrap().await_termination().await.unwrap();
    assert_eq!(out.values(), vec![1, 2, 3, 1]);
}

/// `update_state_by_key`: a running sum per key, the key's state removed
/// when the function leaves `None`.
#[tokio::test]
async fn update_state_by_key_keeps_a_running_state_per_key() {
    let pipeline = Pipeline::new();
    let out = CollectSink::new();
    let input = vec![
        ("a", 1u64),
        ("b", 10),
        ("a", 2),
        ("a", 0),
        ("a", 5),
        ("b", 1),
    ];
    pipeline
        .source("v", VecSource::new(input))
        .key_by(|r: &(&'static str, u64)| r.0.to_string())
        .update_state_by_key(
            "sums",
            |_k: &String, r: (&'static str, u64), s: &mut Option<u64>| {
                // A zero resets the key.
                *s = if r.1 == 0 {
                    None
                } else {
                    Some(s.unwrap_or(0) + r.1)
                };
            },
        )
        .sink("out", out.clone());
    pipeline.start().unwrap().await_termination().await.unwrap();
    let mut got = out.values();
    got.sort();
    let want: Vec<(String, u64)> = [("a", 1), ("a", 3), ("a", 5), ("b", 10), ("b", 11)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(got, want);
}
