//! Event-time windows give exactly the batch answer (which records were
//! late included) for random out-of-order input with random lateness: for
//! tumbling, sliding and session windows, count, sum and a user aggregator,
//! at parallelism 1, 2 and 4, on the memory and the RocksDB backend, under
//! every trigger. Seeded; the seed is printed (`EDDY_WINDOW_SEED` replays).

mod property;
mod window_model;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eddy::prelude::*;
use rand::{Rng, SeedableRng};
use window_model::{answer, Event, Spec};

/// Count, sum and largest value, with merge: the user aggregator.
#[derive(Clone, Copy, Debug, Default)]
struct CountSumMax;

impl Aggregator<GenEvent> for CountSumMax {
    type Acc = (u64, u64, u64);
    type Out = (u64, u64, u64);
    fn create(&self) -> Self::Acc {
        (0, 0, 0)
    }
    fn add(&self, acc: &mut Self::Acc, e: &GenEvent) {
        acc.0 += 1;
        acc.1 += e.value;
        acc.2 = acc.2.max(e.value);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        *acc
    }
    fn merge(&self, acc: &mut Self::Acc, o: Self::Acc) -> bool {
        acc.0 += o.0;
        acc.1 += o.1;
        acc.2 = acc.2.max(o.2);
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Count,
    Sum,
    User,
}

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
    lateness: i64,
    spec: Spec,
    agg: Agg,
    mode: OutputMode,
    parallelism: usize,
    backend: Backend,
    trigger: Trigger,
    /// A state cache of a few entries: windows close through keys read
    /// back from the backend instead of a pass over a cache holding all.
    small_cache: bool,
}

/// Per window, every value the sink received (as count/sum/max triples
/// with the unchecked parts zero), and the late records' sequence numbers.
type Got = (Rows, BTreeSet<u64>);
type Rows = BTreeMap<(u64, i64, i64), Vec<(u64, u64, u64)>>;

fn windows_spec(spec: Spec) -> WindowSpec {
    let ms = |x: i64| Duration::from_millis(x as u64);
    match spec {
        Spec::Tumbling(s) => Windows::tumbling(ms(s)),
        Spec::Sliding(s, sl) => Windows::sliding(ms(s), ms(sl)),
        Spec::Session(g) => Windows::session(ms(g)),
    }
}

use eddy::operators::window::WindowSpec;

fn run(case: &Case) -> Got {
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
            state_cache_capacity: if case.small_cache {
                4
            } else {
                PipelineConfig::default().state_cache_capacity
            },
            ..Default::default()
        });
        let windowed = pipeline
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
            .window(windows_spec(case.spec))
            .allowed_lateness(Duration::from_millis(case.lateness as u64))
            .output_mode(case.mode);
        let late = CollectSink::<GenEvent>::new();
        let rows = CollectSink::<(u64, i64, i64, (u64, u64, u64))>::new();
        let p = case.parallelism;
        let (results, late_stream) = match case.agg {
            Agg::Count => {
                let (r, l) = windowed.aggregate_with_late(eddy::operators::aggregate::Count);
                let r = r.set_parallelism(p);
                (
                    r.map(|r| (r.key, r.window.start, r.window.end, (r.value, 0, 0))),
                    l,
                )
            }
            Agg::Sum => {
                let (r, l) = windowed.aggregate_with_late(CountSumMax);
                let r = r.set_parallelism(p);
                (
                    r.map(|r| (r.key, r.window.start, r.window.end, (0, r.value.1, 0))),
                    l,
                )
            }
            Agg::User => {
                let (r, l) = windowed.aggregate_with_late(CountSumMax);
                let r = r.set_parallelism(p);
                (r.map(|r| (r.key, r.window.start, r.window.end, r.value)), l)
            }
        };
        results.sink("rows", rows.clone());
        late_stream.sink("late", late.clone());
        let mut q = pipeline.start().unwrap();
        tokio::time::timeout(Duration::from_secs(120), q.await_termination())
            .await
            .expect("the query finishes")
            .unwrap();
        let progress = q.progress();
        let counted: u64 = progress
            .instances
            .iter()
            .filter(|i| i.operator == "window")
            .map(|i| i.late_records)
            .sum();
        let mut got = Rows::new();
        for (k, s, e, v) in rows.values() {
            got.entry((k, s, e)).or_default().push(v);
        }
        let late: BTreeSet<u64> = late.values().into_iter().map(|e| e.seq).collect();
        assert_eq!(
            counted,
            late.len() as u64,
            "late records counted = on the side output"
        );
        (got, late)
    })
}

/// Checks one case against the batch answer.
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
    let want = answer(&events, case.bound, case.lateness, case.spec);
    let project = |acc: (u64, u64, u64)| match case.agg {
        Agg::Count => (acc.0, 0, 0),
        Agg::Sum => (0, acc.1, 0),
        Agg::User => acc,
    };
    let (got, late) = run(case);
    assert_eq!(late, want.late, "late records differ in {case:?}");
    let windows: BTreeSet<_> = got.keys().copied().collect();
    let expected_windows: BTreeSet<_> = want.rows.keys().copied().collect();
    assert_eq!(windows, expected_windows, "windows differ in {case:?}");
    for (w, values) in &got {
        let expected = project(want.rows[w]);
        match case.mode {
            OutputMode::Append => {
                assert_eq!(values, &vec![expected], "window {w:?} in {case:?}")
            }
            OutputMode::Update => assert_eq!(
                values.last(),
                Some(&expected),
                "latest row of window {w:?} in {case:?}"
            ),
        }
    }
}

fn seed() -> u64 {
    property::seed("EDDY_WINDOW_SEED")
}

fn random_case(rng: &mut impl Rng, spec_kind: usize) -> Case {
    let disorder = rng.random_range(0..40);
    let et = EventTimeConfig {
        start_ms: rng.random_range(-5_000..5_000),
        records_per_ms: rng.random_range(1..4),
        max_disorder_ms: disorder,
        late_every: [0, 7, 13][rng.random_range(0..3)],
        late_by_ms: rng.random_range(1..300),
    };
    let spec = match spec_kind {
        0 => Spec::Tumbling(rng.random_range(5..200)),
        1 => {
            let slide = rng.random_range(5..60);
            Spec::Sliding(slide * rng.random_range(1..5), slide)
        }
        _ => Spec::Session(rng.random_range(2..40)),
    };
    Case {
        records: rng.random_range(500..2500),
        keys: rng.random_range(1..12),
        et,
        // Sometimes tighter than the disorder: then disorder alone makes
        // records late too.
        bound: if rng.random_bool(0.7) {
            disorder
        } else {
            rng.random_range(0..disorder + 1)
        },
        lateness: [0, 0, rng.random_range(1..100)][rng.random_range(0..3)],
        spec,
        agg: Agg::Count,
        mode: OutputMode::Append,
        parallelism: 1,
        backend: Backend::Memory,
        trigger: Trigger::AvailableNow,
        small_cache: false,
    }
}

fn triggers() -> Vec<Trigger> {
    property::triggers().to_vec()
}

/// Every spec x parallelism x backend x trigger once, the aggregation and
/// the output mode rotating (update mode on fixed windows only: a session
/// merged into another is not retracted in update mode).
fn sweep(spec_kind: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed() ^ spec_kind as u64);
    let mut i = 0;
    for parallelism in [1, 2, 4] {
        for backend in [Backend::Memory, Backend::RocksDb] {
            for trigger in triggers() {
                let mut case = random_case(&mut rng, spec_kind);
                case.parallelism = parallelism;
                case.backend = backend;
                case.trigger = trigger;
                case.agg = [Agg::Count, Agg::Sum, Agg::User][i % 3];
                case.small_cache = i % 4 < 2;
                case.mode = if spec_kind < 2 && i % 2 == 1 {
                    OutputMode::Update
                } else {
                    OutputMode::Append
                };
                check(&case);
                i += 1;
            }
        }
    }
}

#[test]
fn tumbling_windows_equal_the_batch_answer() {
    sweep(0);
}

#[test]
fn sliding_windows_equal_the_batch_answer() {
    sweep(1);
}

#[test]
fn session_windows_equal_the_batch_answer() {
    sweep(2);
}
