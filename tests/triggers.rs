//! Triggers: the same query gives the same result under every trigger, and
//! micro-batches are scheduled as documented (on tokio's paused clock).

use std::collections::BTreeMap;
use std::time::Duration;

use eddy::prelude::*;
use proptest::prelude::*;

fn triggers() -> Vec<Trigger> {
    vec![
        Trigger::continuous(Duration::from_millis(5)),
        Trigger::ProcessingTime(Duration::from_millis(5)),
        Trigger::AvailableNow,
    ]
}

/// Keyed running sum; returns per key the number of updates and the total.
fn run(
    rows: Vec<(u8, u32)>,
    p: usize,
    trigger: Trigger,
    checkpoint_dir: Option<&std::path::Path>,
) -> BTreeMap<u8, (usize, u64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pipeline = Pipeline::with_config(PipelineConfig {
            batch_size: 8,
            channel_capacity: 2,
            trigger,
            checkpoint: checkpoint_dir.map(CheckpointConfig::new),
            ..Default::default()
        });
        let out = CollectSink::new();
        pipeline
            .source("rows", VecSource::new(rows))
            .set_parallelism(p)
            .key_by(|r: &(u8, u32)| r.0)
            .sum(|r: &(u8, u32)| r.1 as u64)
            .set_parallelism(p)
            .sink("sums", out.clone())
            .set_parallelism(p);
        let mut q = pipeline.start().unwrap();
        tokio::time::timeout(Duration::from_secs(60), q.await_termination())
            .await
            .expect("the query finishes by itself")
            .unwrap();
        let mut got: BTreeMap<u8, (usize, u64)> = BTreeMap::new();
        for (k, v) in out.values() {
            let e = got.entry(k).or_default();
            e.0 += 1;
            e.1 = e.1.max(v);
        }
        got
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn every_trigger_gives_the_same_result(
        rows in prop::collection::vec((0u8..8, 0u32..100), 0..400),
        p in prop::sample::select(vec![1usize, 2]),
    ) {
        let mut expected: BTreeMap<u8, (usize, u64)> = BTreeMap::new();
        for (k, v) in &rows {
            let e = expected.entry(*k).or_default();
            e.0 += 1;
            e.1 += *v as u64;
        }
        for trigger in triggers() {
            let got = run(rows.clone(), p, trigger.clone(), None);
            prop_assert_eq!(&got, &expected, "trigger {:?}, parallelism {}", trigger, p);
        }
        let dir = tempfile::tempdir().unwrap();
        let got = run(rows.clone(), p, Trigger::ProcessingTime(Duration::from_millis(5)), Some(dir.path()));
        prop_assert_eq!(&got, &expected, "micro-batches with checkpoints, parallelism {}", p);
    }
}

fn paced(rate: u64, limit: Option<u64>) -> GeneratorSource {
    GeneratorSource::new(GeneratorConfig {
        rate_per_sec: Some(rate),
        key_space: 4,
        limit,
        ..Default::default()
    })
}

fn micro_batch_query(
    trigger: Trigger,
    source: GeneratorSource,
    out: CollectSink<(u64, u64)>,
) -> Query {
    let p = Pipeline::with_config(PipelineConfig {
        trigger,
        ..Default::default()
    });
    p.source("gen", source)
        .key_by(|e: &GenEvent| e.key)
        .count()
        .sink("out", out);
    p.start().unwrap()
}

#[tokio::test(start_paused = true)]
async fn batches_start_on_ticks_and_skip_ticks_without_data() {
    let out = CollectSink::new();
    // 50 records/s, a tick every 5 ms: most ticks find nothing new.
    let mut q = micro_batch_query(
        Trigger::ProcessingTime(Duration::from_millis(5)),
        paced(50, Some(20)),
        out.clone(),
    );
    q.await_termination().await.unwrap();
    let stats = q.checkpoint_stats().unwrap();
    assert_eq!(out.len(), 20);
    let rows: u64 = stats.recent_batches.iter().map(|b| b.input_rows).sum();
    assert_eq!(rows, 20, "every record in exactly one batch");
    assert!(
        stats.recent_batches.iter().all(|b| b.input_rows > 0),
        "no empty batch ran"
    );
    assert!(
        stats.ticks > stats.batches_completed + 10,
        "ticks without data ran no batch: {} ticks, {} batches",
        stats.ticks,
        stats.batches_completed
    );
    for b in &stats.recent_batches {
        let ticks = b.trigger_at_ms / 5.0;
        assert!(
            (ticks - ticks.round()).abs() < 1e-6,
            "batch due off a tick: {b:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn available_now_drains_and_stops_by_itself() {
    let out = CollectSink::new();
    // Unbounded at 1000 records/s: AvailableNow takes what is there and stops.
    let mut q = micro_batch_query(Trigger::AvailableNow, paced(1000, None), out.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.await_termination().await.unwrap();
    let stats = q.checkpoint_stats().unwrap();
    assert!(stats.batches_completed >= 1);
    let rows: u64 = stats.recent_batches.iter().map(|b| b.input_rows).sum();
    assert_eq!(rows as usize, out.len());
    assert!(!out.is_empty());
}

#[tokio::test(start_paused = true)]
async fn processing_time_finishes_when_bounded_sources_run_dry() {
    let out = CollectSink::new();
    let mut q = micro_batch_query(
        Trigger::ProcessingTime(Duration::from_millis(100)),
        paced(10_000, Some(5_000)),
        out.clone(),
    );
    q.await_termination().await.unwrap();
    assert_eq!(out.len(), 5_000);
    let stats = q.checkpoint_stats().unwrap();
    // 5000 records at 10k/s take half a second: about five 100 ms batches.
    assert!(stats.batches_completed >= 4, "{stats:?}");
    for b in &stats.recent_batches {
        let ticks = b.trigger_at_ms / 100.0;
        assert!(
            (ticks - ticks.round()).abs() < 1e-6,
            "batch due off a tick: {b:?}"
        );
    }
}
