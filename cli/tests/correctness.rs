//! Running keyed aggregations give exactly the batch answer, for random
//! inputs, at parallelism 1, 2 and 4, with and without `rebalance` and `union`.

use std::collections::BTreeMap;

use eddy::prelude::*;
use proptest::prelude::*;

mod common;
use common::runtime;

const WORDS: &[&str] = &["ant", "bee", "cat", "dog", "eel", "fox", "gnu"];

/// Small batches and channels so that even small inputs cross many batch and
/// backpressure boundaries.
fn small_config() -> PipelineConfig {
    PipelineConfig {
        batch_size: 4,
        channel_capacity: 2,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Plain,
    Rebalance,
    Union,
}

/// Checks that, per key, the emitted running results are exactly the
/// sequence of a batch fold: `n` updates whose largest is the total.
fn check_running<V: Ord + Copy + std::fmt::Debug>(
    emitted: Vec<(String, V)>,
    expected: BTreeMap<String, (usize, V)>,
) {
    let mut got: BTreeMap<String, Vec<V>> = BTreeMap::new();
    for (k, v) in emitted {
        got.entry(k).or_default().push(v);
    }
    let got: BTreeMap<String, (usize, V)> = got
        .into_iter()
        .map(|(k, vs)| {
            let last = *vs.last().unwrap();
            assert_eq!(
                last,
                *vs.iter().max().unwrap(),
                "key {k}: last update is not the total"
            );
            (k, (vs.len(), last))
        })
        .collect();
    assert_eq!(got, expected);
}

fn word_count(
    lines: Vec<String>,
    extra: Vec<String>,
    p: usize,
    shape: Shape,
) -> Vec<(String, u64)> {
    runtime().block_on(async move {
        let pipeline = Pipeline::with_config(small_config());
        let out = CollectSink::new();
        let lines_stream = pipeline
            .source("lines", VecSource::new(lines))
            .set_parallelism(p);
        let lines_stream = match shape {
            Shape::Plain => lines_stream,
            Shape::Rebalance => lines_stream.rebalance(),
            Shape::Union => lines_stream.union(
                pipeline
                    .source("more-lines", VecSource::new(extra))
                    .set_parallelism(1),
            ),
        };
        lines_stream
            .flat_map(|l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .set_parallelism(p)
            .key_by(|w: &String| w.clone())
            .count()
            .set_parallelism(p)
            .sink("counts", out.clone())
            .set_parallelism(p);
        pipeline.start().unwrap().await_termination().await.unwrap();
        out.values()
    })
}

fn keyed_sum(rows: Vec<(u8, u32)>, p: usize, shape: Shape) -> Vec<(String, u64)> {
    runtime().block_on(async move {
        let pipeline = Pipeline::with_config(small_config());
        let out = CollectSink::new();
        let (first, second): (Vec<_>, Vec<_>) =
            rows.into_iter().enumerate().partition(|(i, _)| i % 3 != 0);
        let strip = |v: Vec<(usize, (u8, u32))>| v.into_iter().map(|(_, r)| r).collect::<Vec<_>>();
        let (first, second) = (strip(first), strip(second));
        let s = match shape {
            Shape::Union => pipeline
                .source("rows", VecSource::new(first))
                .set_parallelism(p)
                .union(
                    pipeline
                        .source("rows-2", VecSource::new(second))
                        .set_parallelism(p),
                ),
            Shape::Plain | Shape::Rebalance => {
                let s = pipeline
                    .source("rows", VecSource::new(first.into_iter().chain(second)))
                    .set_parallelism(p)
                    .map(|r: (u8, u32)| r)
                    .set_parallelism(p);
                if let Shape::Rebalance = shape {
                    s.rebalance()
                } else {
                    s
                }
            }
        };
        s.key_by(|r: &(u8, u32)| format!("k{}", r.0))
            .sum(|r: &(u8, u32)| r.1 as u64)
            .set_parallelism(p)
            .sink("sums", out.clone())
            .set_parallelism(p);
        pipeline.start().unwrap().await_termination().await.unwrap();
        out.values()
    })
}

fn lines_strategy() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::collection::vec(prop::sample::select(WORDS), 0..6).prop_map(|w| w.join(" ")),
        0..60,
    )
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    prop::sample::select(vec![Shape::Plain, Shape::Rebalance, Shape::Union])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn word_count_equals_batch_count(
        lines in lines_strategy(),
        extra in lines_strategy(),
        p in prop::sample::select(vec![1usize, 2, 4]),
        shape in shape_strategy(),
    ) {
        let mut expected: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let all: Vec<&String> = match shape {
            Shape::Union => lines.iter().chain(extra.iter()).collect(),
            _ => lines.iter().collect(),
        };
        for w in all.iter().flat_map(|l| l.split_whitespace()) {
            let e = expected.entry(w.to_string()).or_default();
            e.0 += 1;
            e.1 += 1;
        }
        check_running(word_count(lines, extra, p, shape), expected);
    }

    #[test]
    fn keyed_running_sum_equals_batch_sum(
        rows in prop::collection::vec((0u8..12, 0u32..1000), 0..300),
        p in prop::sample::select(vec![1usize, 2, 4]),
        shape in shape_strategy(),
    ) {
        let mut expected: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (k, v) in &rows {
            let e = expected.entry(format!("k{k}")).or_default();
            e.0 += 1;
            e.1 += *v as u64;
        }
        check_running(keyed_sum(rows, p, shape), expected);
    }
}

#[test]
fn min_max_avg_reduce_at_parallelism_two() {
    let rows: Vec<(u8, i64)> = (0..500)
        .map(|i| ((i % 7) as u8, (i * 37 % 101) - 50))
        .collect();
    let out = runtime().block_on(async {
        let pipeline = Pipeline::with_config(small_config());
        let mins = CollectSink::new();
        let maxs = CollectSink::new();
        let avgs = CollectSink::new();
        let reds = CollectSink::new();
        let src = pipeline
            .source("rows", VecSource::new(rows.clone()))
            .set_parallelism(2);
        src.clone()
            .key_by(|r: &(u8, i64)| r.0)
            .min(|r: &(u8, i64)| r.1)
            .set_parallelism(2)
            .sink("min", mins.clone());
        src.clone()
            .key_by(|r: &(u8, i64)| r.0)
            .max(|r: &(u8, i64)| r.1)
            .set_parallelism(2)
            .sink("max", maxs.clone());
        src.clone()
            .key_by(|r: &(u8, i64)| r.0)
            .avg(|r: &(u8, i64)| r.1 as f64)
            .set_parallelism(2)
            .sink("avg", avgs.clone());
        src.key_by(|r: &(u8, i64)| r.0)
            .reduce(|a: &(u8, i64), b: &(u8, i64)| (a.0, a.1 + b.1))
            .set_parallelism(2)
            .sink("reduce", reds.clone());
        pipeline.start().unwrap().await_termination().await.unwrap();
        (mins.values(), maxs.values(), avgs.values(), reds.values())
    });
    let last = |v: &[(u8, i64)], k: u8| v.iter().rev().find(|r| r.0 == k).unwrap().1;
    for k in 0..7u8 {
        let vals: Vec<i64> = rows.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
        assert_eq!(last(&out.0, k), *vals.iter().min().unwrap());
        assert_eq!(last(&out.1, k), *vals.iter().max().unwrap());
        let avg = out.2.iter().rev().find(|r| r.0 == k).unwrap().1;
        let expect = vals.iter().sum::<i64>() as f64 / vals.len() as f64;
        assert!((avg - expect).abs() < 1e-9, "avg {avg} vs {expect}");
        let red = out.3.iter().rev().find(|r| r.0 == k).unwrap().1;
        assert_eq!(red, (k, vals.iter().sum::<i64>()));
    }
}

#[test]
fn build_errors_are_typed() {
    let rt = runtime();
    let _guard = rt.enter();
    let p = Pipeline::new();
    let _ = p
        .source("nums", VecSource::new(vec![1u32, 2]))
        .map(|x: u32| x + 1);
    assert!(matches!(p.start(), Err(BuildError::NoSink)));

    let p = Pipeline::new();
    p.source("nums", VecSource::new(vec![1u32]))
        .map(|x: u32| x)
        .set_parallelism(0)
        .sink("out", DiscardSink);
    assert!(
        matches!(p.start(), Err(BuildError::ZeroParallelism { operator }) if operator == "map")
    );

    let p = Pipeline::new();
    let s = p.source("nums", VecSource::new(vec![1u32]));
    s.clone().sink("out", DiscardSink);
    let _unused = s.map(|x: u32| x);
    assert!(matches!(p.start(), Err(BuildError::Dangling { operator }) if operator == "map"));
}
