//! Deduplication within a watermark bound gives exactly the batch answer:
//! which records are kept, which are dropped as duplicates (counted, and on
//! the side output) and which are late, for random out-of-order input with
//! late records, at parallelism 1, 2 and 4, on the memory and the RocksDB
//! backend, under every trigger. And its state is bounded: driven record by
//! record, the operator retains exactly the keys whose first-seen time plus
//! the bound the watermark has not reached, and none once it passes all.
//! Seeded; the seed is printed (`EDDY_DEDUP_SEED` replays).

mod property;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eddy::operators::process::Dedup;
use eddy::prelude::*;
use eddy::runtime::timers::ProcessingClock;
use eddy::runtime::{Output, TimerService};
use rand::{Rng, SeedableRng};

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
    /// The watermark's out-of-orderness bound, ms.
    wm_bound: i64,
    /// The dedup bound, ms.
    bound: i64,
    parallelism: usize,
    backend: Backend,
    trigger: Trigger,
}

/// Sequence numbers kept, dropped as duplicates, and late.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    kept: BTreeSet<u64>,
    dups: BTreeSet<u64>,
    late: BTreeSet<u64>,
}

/// One record: (seq, key, event time).
type Event = (u64, u64, i64);

fn events(case: &Case) -> Vec<Event> {
    (0..case.records)
        .map(|seq| {
            let e = GenEvent::generate(seq, case.keys, 0);
            (seq, e.key, case.et.timestamp(seq))
        })
        .collect()
}

/// The watermark a single source instance has sent before each record:
/// `max ts of the records before it - wm_bound - 1` (docs/event-time.md).
fn watermarks(events: &[Event], wm_bound: i64) -> Vec<i64> {
    let mut max = i64::MIN;
    events
        .iter()
        .map(|&(_, _, ts)| {
            let w = if max == i64::MIN {
                i64::MIN
            } else {
                max - wm_bound - 1
            };
            max = max.max(ts);
            w
        })
        .collect()
}

/// The batch dedup: a record behind the watermark is late; otherwise one
/// whose key was kept at `first` with `ts <= first + bound` is a duplicate;
/// otherwise it is kept and becomes its key's `first`.
fn answer(case: &Case) -> Answer {
    let evs = events(case);
    let mut a = Answer::default();
    let mut first: BTreeMap<u64, i64> = BTreeMap::new();
    for (&(seq, key, ts), w) in evs.iter().zip(watermarks(&evs, case.wm_bound)) {
        if ts <= w {
            a.late.insert(seq);
        } else if first.get(&key).is_some_and(|&f| ts <= f + case.bound) {
            a.dups.insert(seq);
        } else {
            first.insert(key, ts);
            a.kept.insert(seq);
        }
    }
    a
}

fn run(case: &Case) -> Answer {
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
        let (kept, dups) = pipeline
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
                Duration::from_millis(case.wm_bound as u64),
            ))
            .key_by(|e: &GenEvent| e.key)
            .dedup_with_duplicates("dedup", Duration::from_millis(case.bound as u64));
        let kept_out = CollectSink::<GenEvent>::new();
        let dups_out = CollectSink::<GenEvent>::new();
        kept.set_parallelism(case.parallelism)
            .sink("kept", kept_out.clone());
        dups.sink("dups", dups_out.clone());
        let mut q = pipeline.start().unwrap();
        tokio::time::timeout(Duration::from_secs(120), q.await_termination())
            .await
            .expect("the query finishes")
            .unwrap();
        let progress = q.progress();
        let ours = || progress.instances.iter().filter(|i| i.operator == "dedup");
        let late: u64 = ours().map(|i| i.late_records).sum();
        let dropped: u64 = ours().map(|i| i.dropped_records).sum();
        let out: u64 = ours().map(|i| i.records_out).sum();
        assert_eq!(ours().count(), case.parallelism);
        let kept: BTreeSet<u64> = kept_out.values().iter().map(|e| e.seq).collect();
        let dups: BTreeSet<u64> = dups_out.values().iter().map(|e| e.seq).collect();
        assert_eq!(kept.len(), kept_out.values().len(), "kept once each");
        assert_eq!(
            dropped,
            dups.len() as u64,
            "duplicates counted = on the side output"
        );
        assert_eq!(out, kept.len() as u64, "records out = kept");
        // Late records are only counted: the sequence numbers are what is
        // neither kept nor a duplicate.
        let late_seqs: BTreeSet<u64> = (0..case.records)
            .filter(|s| !kept.contains(s) && !dups.contains(s))
            .collect();
        assert_eq!(late, late_seqs.len() as u64, "late records counted");
        Answer {
            kept,
            dups,
            late: late_seqs,
        }
    })
}

fn seed() -> u64 {
    property::seed("EDDY_DEDUP_SEED")
}

fn random_case(rng: &mut impl Rng) -> Case {
    let disorder = rng.random_range(0..40);
    Case {
        records: rng.random_range(500..3000),
        keys: rng.random_range(1..300),
        et: EventTimeConfig {
            start_ms: rng.random_range(-5_000..5_000),
            records_per_ms: rng.random_range(1..4),
            max_disorder_ms: disorder,
            late_every: [0, 7, 13][rng.random_range(0..3)],
            late_by_ms: rng.random_range(1..300),
        },
        wm_bound: if rng.random_bool(0.7) {
            disorder
        } else {
            rng.random_range(0..disorder + 1)
        },
        bound: rng.random_range(0..200),
        parallelism: 1,
        backend: Backend::Memory,
        trigger: Trigger::AvailableNow,
    }
}

#[test]
fn dedup_equals_the_batch_dedup_within_the_bound() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    for parallelism in [1, 2, 4] {
        for backend in [Backend::Memory, Backend::RocksDb] {
            for trigger in property::triggers() {
                let mut case = random_case(&mut rng);
                case.parallelism = parallelism;
                case.backend = backend;
                case.trigger = trigger;
                let want = answer(&case);
                println!(
                    "{} kept, {} duplicates, {} late, in {case:?}",
                    want.kept.len(),
                    want.dups.len(),
                    want.late.len()
                );
                assert!(!want.dups.is_empty() || case.keys > case.records / 2);
                assert_eq!(run(&case), want, "in {case:?}");
            }
        }
    }
}

/// Drives the operator as its task does (records, watermarks, the timers
/// they make due) and compares its state with the batch model's after
/// every watermark.
#[test]
fn dedup_state_holds_exactly_the_keys_within_the_bound() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed() ^ 1);
    for _ in 0..20 {
        let mut case = random_case(&mut rng);
        // Many keys: most records are new keys, as on an unbounded stream.
        case.keys = rng.random_range(1..5_000);
        case.records = 20_000;
        let evs = events(&case);
        let wms = watermarks(&evs, case.wm_bound);
        let mut op = Dedup::new(Arc::new(|e: &(u64, i64)| e.0), case.bound);
        op.open(&mut OperatorContext::for_test("dedup")).unwrap();
        let mut timers = TimerService::in_memory();
        let clock = ProcessingClock::new();
        let mut out: Output<(u64, i64), (u64, i64)> = Output::default();
        let mut model: BTreeMap<u64, i64> = BTreeMap::new();
        let mut watermark = i64::MIN;
        let mut max_retained = 0;
        for (&(_, key, ts), w) in evs.iter().zip(wms) {
            if w > watermark {
                watermark = w;
                while let Some(t) = timers.pop_due(TimeDomain::EventTime, w).unwrap() {
                    let mut c = Collector::new(&mut out, &mut timers, &clock, w);
                    op.on_timer(&t, &mut c).unwrap();
                }
                model.retain(|_, f| *f + case.bound > w);
                let retained = retained(&mut op);
                assert_eq!(retained, model, "state after watermark {w} in {case:?}");
                max_retained = max_retained.max(retained.len());
            }
            let mut c = Collector::new(&mut out, &mut timers, &clock, watermark);
            c.set_input(ts, 0);
            let mut r = Record::new((key, ts));
            r.timestamp = ts;
            op.process(r, &mut c).unwrap();
            if ts > watermark && model.get(&key).is_none_or(|&f| ts > f + case.bound) {
                model.insert(key, ts);
            }
        }
        // Bounded by the records within the bound (plus the watermark's
        // bound and the disorder) of the newest one, whatever the length
        // of the stream.
        let span = case.bound + case.wm_bound + case.et.max_disorder_ms + case.et.late_by_ms + 2;
        let per_ms = case.et.records_per_ms as i64;
        assert!(
            (max_retained as i64) <= (span * per_ms).min(case.keys as i64) + 1,
            "retained {max_retained} keys in {case:?}"
        );
        while let Some(t) = timers.pop_due(TimeDomain::EventTime, i64::MAX).unwrap() {
            let mut c = Collector::new(&mut out, &mut timers, &clock, i64::MAX);
            op.on_timer(&t, &mut c).unwrap();
        }
        assert!(
            retained(&mut op).is_empty(),
            "no state once the watermark passes"
        );
        assert!(timers.is_empty(), "no timer left");
    }
}

fn retained(op: &mut Dedup<(u64, i64), u64>) -> BTreeMap<u64, i64> {
    let mut m = BTreeMap::new();
    op.table_mut()
        .unwrap()
        .for_each(|k, v| {
            m.insert(k, v);
            Ok(())
        })
        .unwrap();
    m
}

/// `dedup_by` on a stream not keyed yet.
#[tokio::test]
async fn dedup_by_keys_and_deduplicates() {
    let pipeline = Pipeline::new();
    let out = CollectSink::new();
    let events = vec![
        (1u64, 100i64),
        (1, 150),
        (2, 160),
        (1, 400),
        (2, 161),
        (1, 500),
    ];
    pipeline
        .source("events", VecSource::new(events))
        .with_watermarks(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1))
                .with_timestamps(|e: &(u64, i64)| e.1),
        )
        .dedup_by("dedup", |e: &(u64, i64)| e.0, Duration::from_millis(100))
        .sink("out", out.clone());
    pipeline.start().unwrap().await_termination().await.unwrap();
    assert_eq!(out.values(), vec![(1, 100), (2, 160), (1, 400)]);
}
