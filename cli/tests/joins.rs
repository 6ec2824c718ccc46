//! Interval joins give exactly the batch join: for random out-of-order
//! input on two keyed streams and random intervals (either bound may be
//! negative), inner, left, right and full outer joins — outer rows
//! included — at join parallelism 1, 2 and 4, on the memory and the RocksDB
//! backend, under every trigger. Seeded; the seed is printed
//! (`EDDY_JOIN_SEED` replays). Also: the latest-value join and broadcast
//! state (the late-row rule is unit-tested next to the operator, where the
//! watermark a row meets is fixed).

mod property;
use std::collections::BTreeMap;
use std::time::Duration;

use eddy::operators::join::interval::JoinKind;
use eddy::prelude::*;
use rand::{Rng, SeedableRng};

/// (key, event time, id)
type Row = (u64, i64, u64);
type Joined = (Option<Row>, Option<Row>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    RocksDb,
}

#[derive(Debug, Clone)]
struct Case {
    left: Vec<Row>,
    right: Vec<Row>,
    bound: i64,
    lower: i64,
    upper: i64,
    kind: JoinKind,
    parallelism: usize,
    backend: Backend,
    trigger: Trigger,
}

/// Rows in event-time order with disorder below `bound`: none is late at
/// its source, so none is late at the join (its watermark is at most the
/// watermark its source sent before the row).
fn rows(rng: &mut impl Rng, start: i64, n: usize, keys: u64, bound: i64, id0: u64) -> Vec<Row> {
    let mut t = start;
    (0..n)
        .map(|i| {
            t += rng.random_range(0..4);
            let ts = t - rng.random_range(0..bound.max(1));
            (rng.random_range(0..keys), ts, id0 + i as u64)
        })
        .collect()
}

/// The batch join.
fn batch(case: &Case) -> Vec<Joined> {
    let mut out = Vec::new();
    let mut right_matched = vec![false; case.right.len()];
    for l in &case.left {
        let mut matched = false;
        for (j, r) in case.right.iter().enumerate() {
            if l.0 == r.0 && r.1 >= l.1 + case.lower && r.1 <= l.1 + case.upper {
                out.push((Some(*l), Some(*r)));
                matched = true;
                right_matched[j] = true;
            }
        }
        if !matched && matches!(case.kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
            out.push((Some(*l), None));
        }
    }
    if matches!(case.kind, JoinKind::RightOuter | JoinKind::FullOuter) {
        for (j, r) in case.right.iter().enumerate() {
            if !right_matched[j] {
                out.push((None, Some(*r)));
            }
        }
    }
    out.sort();
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn pipeline(dir: &std::path::Path, backend: Backend, trigger: Trigger) -> Pipeline {
    let checkpoint = match backend {
        Backend::Memory => None,
        Backend::RocksDb => {
            Some(CheckpointConfig::new(dir.join("checkpoints")).with_rocksdb(dir.join("state")))
        }
    };
    Pipeline::with_config(PipelineConfig {
        batch_size: 64,
        channel_capacity: 4,
        trigger,
        checkpoint,
        ..Default::default()
    })
}

fn keyed(p: &Pipeline, name: &str, rows: Vec<Row>, bound: i64) -> KeyedStream<Row, u64> {
    p.source(name, VecSource::new(rows))
        .set_parallelism(2)
        .with_watermarks(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(bound as u64))
                .with_timestamps(|r: &Row| r.1),
        )
        .key_by(|r: &Row| r.0)
}

fn run(case: &Case) -> (Vec<Joined>, u64) {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let p = pipeline(dir.path(), case.backend, case.trigger.clone());
        let left = keyed(&p, "left", case.left.clone(), case.bound);
        let right = keyed(&p, "right", case.right.clone(), case.bound);
        let kind = case.kind;
        let (joined, late) = left
            .interval_join(right)
            .between(case.lower, case.upper)
            .name("join")
            .join_with(kind, move |l, r| {
                // What each kind may emit: a pair, or its outer rows.
                let ok = match (&l, &r) {
                    (Some(_), Some(_)) => true,
                    (Some(_), None) => matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter),
                    (None, Some(_)) => matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter),
                    (None, None) => false,
                };
                Some((l, r, ok))
            });
        let out = CollectSink::new();
        let late_out = CollectSink::new();
        joined
            .set_parallelism(case.parallelism)
            .sink("out", out.clone());
        late.sink("late", late_out.clone());
        let mut q = p.start().unwrap();
        tokio::time::timeout(Duration::from_secs(120), q.await_termination())
            .await
            .expect("the query finishes")
            .unwrap();
        let counted: u64 = q
            .progress()
            .instances
            .iter()
            .filter(|i| i.operator == "join")
            .map(|i| i.late_records)
            .sum();
        assert_eq!(counted, late_out.values().len() as u64);
        let mut got = Vec::new();
        for (l, r, ok) in out.values() {
            assert!(ok, "{kind:?} emitted ({l:?}, {r:?})");
            got.push((l, r));
        }
        got.sort();
        (got, counted)
    })
}

fn seed() -> u64 {
    property::seed("EDDY_JOIN_SEED")
}

fn random_case(rng: &mut impl Rng, kind: JoinKind) -> Case {
    let bound = rng.random_range(1..40);
    let keys = rng.random_range(1..8);
    let (lower, upper) = match rng.random_range(0..3) {
        0 => {
            let x = rng.random_range(0..30);
            (-x, rng.random_range(0..30))
        }
        1 => {
            let lo = rng.random_range(0..20);
            (lo, lo + rng.random_range(0..20))
        }
        _ => {
            let hi = -rng.random_range(0..20);
            (hi - rng.random_range(0..20), hi)
        }
    };
    // Both sides cover about the same event time (1.5 ms per row).
    let n = rng.random_range(200..1200);
    let start = rng.random_range(-1_000..1_000);
    let (nl, nr) = (n + rng.random_range(0..100), n + rng.random_range(0..100));
    let start_r = start + rng.random_range(-50..50);
    Case {
        left: rows(rng, start, nl, keys, bound, 0),
        right: rows(rng, start_r, nr, keys, bound, 1_000_000),
        bound,
        lower,
        upper,
        kind,
        parallelism: 1,
        backend: Backend::Memory,
        trigger: Trigger::AvailableNow,
    }
}

fn triggers() -> Vec<Trigger> {
    property::triggers().to_vec()
}

fn sweep(kinds: [JoinKind; 2], salt: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed() ^ salt);
    let mut i = 0;
    for parallelism in [1, 2, 4] {
        for backend in [Backend::Memory, Backend::RocksDb] {
            for trigger in triggers() {
                let mut case = random_case(&mut rng, kinds[i % 2]);
                case.parallelism = parallelism;
                case.backend = backend;
                case.trigger = trigger;
                let want = batch(&case);
                let (got, late) = run(&case);
                let summary = format!(
                    "{:?} [{}, {}] p{} {:?} {:?}: {} left, {} right",
                    case.kind,
                    case.lower,
                    case.upper,
                    case.parallelism,
                    case.backend,
                    case.trigger,
                    case.left.len(),
                    case.right.len()
                );
                let pairs = want
                    .iter()
                    .filter(|(l, r)| l.is_some() && r.is_some())
                    .count();
                println!("{summary}: {} rows, {pairs} pairs", want.len());
                assert_eq!(late, 0, "no row is late in {summary}");
                assert_eq!(got.len(), want.len(), "row count in {summary}");
                assert_eq!(got, want, "rows in {summary}");
                i += 1;
            }
        }
    }
}

#[test]
fn inner_and_full_outer_interval_joins_equal_the_batch_join() {
    sweep([JoinKind::Inner, JoinKind::FullOuter], 1);
}

#[test]
fn left_and_right_outer_interval_joins_equal_the_batch_join() {
    sweep([JoinKind::LeftOuter, JoinKind::RightOuter], 2);
}

/// The latest-value join: whatever the interleaving, every stream record is
/// emitted once (left join) with `None` or with a value its key had in the
/// table; once the table has been read completely, records meet the final
/// values. Broadcast state: every instance applies the rules it received.
#[test]
fn latest_join_and_broadcast_state() {
    runtime().block_on(async {
        let p = Pipeline::with_config(PipelineConfig {
            default_parallelism: 2,
            ..Default::default()
        });
        // table: (sensor, limit) updates; stream: (sensor, reading)
        let table: Vec<(u64, u64)> = (0..40).map(|i| (i % 4, 100 + i)).collect();
        let stream: Vec<(u64, u64)> = (0..200).map(|i| (i % 5, i)).collect();
        let t = p
            .source("limits", VecSource::new(table.clone()))
            .key_by(|r: &(u64, u64)| r.0);
        let s = p
            .source("readings", VecSource::new(stream.clone()))
            .key_by(|r: &(u64, u64)| r.0);
        let out = CollectSink::new();
        s.latest_join(t)
            .name("enrich")
            .left()
            .sink("out", out.clone());
        // Broadcast: a rule per sensor; readings above their rule's limit.
        let rules: Vec<(u64, u64)> = (0..5).map(|s| (s, 150)).collect();
        let alerts = CollectSink::new();
        p.source("readings2", VecSource::new(stream.clone()))
            .with_broadcast(
                "alert",
                p.source("rules", VecSource::new(rules)).set_parallelism(1),
                |r: &(u64, u64)| r.0,
                |x: (u64, u64), rules: &std::collections::BTreeMap<u64, (u64, u64)>| {
                    let limit = rules.get(&x.0)?.1;
                    (x.1 > limit).then_some(x)
                },
            )
            .sink("alerts", alerts.clone());
        p.start().unwrap().await_termination().await.unwrap();
        let rows = out.values();
        assert_eq!(rows.len(), stream.len(), "every reading once");
        let mut limits: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (k, v) in &table {
            limits.entry(*k).or_default().push(*v);
        }
        let mut seen: Vec<(u64, u64)> = Vec::new();
        for (reading, limit) in rows {
            seen.push(reading);
            match limit {
                None => {}
                Some((k, v)) => {
                    assert_eq!(k, reading.0, "the reading's own key");
                    assert!(limits[&k].contains(&v), "a value the key had");
                }
            }
            if reading.0 == 4 {
                assert_eq!(limit, None, "key 4 is in no table row");
            }
        }
        seen.sort();
        let mut want = stream.clone();
        want.sort();
        assert_eq!(seen, want);
        // Alerts: each is above its limit; a reading above the limit may
        // precede its rule at an instance and be missed, never invented.
        for (s, v) in alerts.values() {
            assert!(v > 150, "alert ({s}, {v}) is above the limit");
        }
    });
}

/// The stream-static joins in a running pipeline at parallelism 2: left
/// keeps misses as `None`, inner drops them, and `lookup_with` emits what
/// its join function returns for each record and its key's row.
#[test]
fn static_table_lookups_left_inner_and_with_a_join_function() {
    runtime().block_on(async {
        let p = Pipeline::with_config(PipelineConfig {
            default_parallelism: 2,
            ..Default::default()
        });
        // Rows for keys 0..4; records for keys 0..6.
        let rows: Vec<(u64, u64)> = (0..4).map(|k| (k, 100 * k)).collect();
        let table = StaticTable::new(rows, |r: &(u64, u64)| r.0);
        let records: Vec<(u64, u64)> = (0..300).map(|i| (i % 6, i)).collect();
        let src = p.source("records", VecSource::new(records.clone()));
        let left = CollectSink::new();
        let inner = CollectSink::new();
        let with = CollectSink::new();
        src.clone()
            .lookup_left(table.clone(), |r: &(u64, u64)| r.0)
            .sink("left", left.clone());
        src.clone()
            .lookup_inner(table.clone(), |r: &(u64, u64)| r.0)
            .sink("inner", inner.clone());
        src.lookup_with(
            table,
            |r: &(u64, u64)| r.0,
            |r, row: Option<&(u64, u64)>| Some(r.1 + row?.1).filter(|s| s % 2 == 0),
        )
        .sink("with", with.clone());
        p.start().unwrap().await_termination().await.unwrap();

        let mut want_left: Vec<(u64, u64, Option<u64>)> = records
            .iter()
            .map(|&(k, v)| (k, v, (k < 4).then_some(100 * k)))
            .collect();
        let mut got_left: Vec<_> = left
            .values()
            .into_iter()
            .map(|((k, v), row)| (k, v, row.map(|r| r.1)))
            .collect();
        want_left.sort();
        got_left.sort();
        assert_eq!(got_left, want_left);
        let mut want_inner: Vec<_> = want_left
            .iter()
            .filter_map(|&(k, v, r)| Some((k, v, r?)))
            .collect();
        let mut got_inner: Vec<_> = inner
            .values()
            .into_iter()
            .map(|((k, v), row)| (k, v, row.1))
            .collect();
        want_inner.sort();
        got_inner.sort();
        assert_eq!(got_inner, want_inner);
        let mut want_with: Vec<u64> = want_inner
            .iter()
            .map(|&(_, v, r)| v + r)
            .filter(|s| s % 2 == 0)
            .collect();
        let mut got_with = with.values();
        want_with.sort();
        got_with.sort();
        assert!(!want_with.is_empty());
        assert_eq!(got_with, want_with);
    });
}
