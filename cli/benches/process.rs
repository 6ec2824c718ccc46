//! Keyed process operator throughput: one event-time timer per record.
//!
//! Generator (event time, 100 k keys) -> key_by -> a keyed process
//! function that counts per key in a `ValueState` and registers an
//! event-time timer 1 s after every record (the timer emits the count and
//! clears the key), at parallelism 2, on the memory backend and on RocksDB
//! with checkpoints every second, and on RocksDB in micro-batches of
//! 100 ms for comparison. Target: at least 3 M records/s on RocksDB
//! (docs/stateful.md).
//!
//! `cargo bench --bench process`. `EDDY_PROCESS_BENCH_RECORDS` (default
//! 2 M) and `EDDY_PROCESS_BENCH_CHECKPOINT_MS` (default 1000) change the
//! records per iteration and the checkpoint interval, e.g. to make sure
//! checkpoints fall inside every iteration.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eddy::prelude::*;

const KEYS: u64 = 100_000;

/// A setting from the environment, or its default.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a whole number")),
        Err(_) => default,
    }
}

/// Counts a key's records; a timer 1 s after each emits the count and
/// clears the key.
#[derive(Clone, Copy)]
struct CountThenFlush;

impl KeyedProcessFunction<GenEvent, u64> for CountThenFlush {
    type State = ValueState<u64>;
    type Out = (u64, u64);

    fn process(
        &mut self,
        _e: GenEvent,
        ctx: &mut ProcessContext<'_, '_, u64, ValueState<u64>, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        *ctx.state_mut().get_or_insert_with(|| 0) += 1;
        let at = ctx.timestamp() + 1_000;
        ctx.register_event_time_timer(at)
    }

    fn on_timer(
        &mut self,
        _timer: FiredTimer,
        ctx: &mut ProcessContext<'_, '_, u64, ValueState<u64>, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        if let Some(n) = ctx.clear_state().and_then(|mut s| s.take()) {
            let key = *ctx.key();
            ctx.emit((key, n));
        }
        Ok(())
    }
}

fn run(n: u64, rocksdb: bool, trigger: Trigger) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let checkpoint = rocksdb.then(|| {
            CheckpointConfig::new(dir.path().join("checkpoints"))
                .with_rocksdb(dir.path().join("state"))
        });
        let p = Pipeline::with_config(PipelineConfig {
            checkpoint,
            trigger,
            ..Default::default()
        });
        p.source(
            "gen",
            GeneratorSource::new(GeneratorConfig {
                key_space: KEYS,
                limit: Some(n),
                event_time: Some(EventTimeConfig {
                    records_per_ms: 100,
                    max_disorder_ms: 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(20),
        ))
        .key_by(|e: &GenEvent| e.key)
        .process("count_then_flush", CountThenFlush)
        .set_parallelism(2)
        .sink("out", DiscardSink)
        .set_parallelism(2);
        p.start().unwrap().await_termination().await.unwrap();
    });
}

fn keyed_process(c: &mut Criterion) {
    let n = setting("EDDY_PROCESS_BENCH_RECORDS", 2_000_000);
    let checkpoint_ms = setting("EDDY_PROCESS_BENCH_CHECKPOINT_MS", 1_000);
    println!("{n} records per iteration, checkpoints every {checkpoint_ms} ms");
    let mut g = c.benchmark_group("keyed_process");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(n));
    let continuous = || Trigger::continuous(Duration::from_millis(checkpoint_ms));
    let micro_batch = || Trigger::ProcessingTime(Duration::from_millis(100));
    g.bench_function("timer_per_record_memory_p2", |b| {
        b.iter(|| run(n, false, continuous()))
    });
    g.bench_function("timer_per_record_rocksdb_p2", |b| {
        b.iter(|| run(n, true, continuous()))
    });
    // The same query in micro-batches of 100 ms (a checkpoint each).
    g.bench_function("timer_per_record_rocksdb_p2_microbatch100", |b| {
        b.iter(|| run(n, true, micro_batch()))
    });
    g.finish();
}

criterion_group!(benches, keyed_process);
criterion_main!(benches);
