//! Pipeline throughput: a 3-operator map chain at parallelism 1, and a hash
//! shuffle at parallelism 2 (into a stateless map, and into a keyed count).
//!
//! `cargo bench --bench pipeline` (figures in docs/benchmarks.md).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eddy::prelude::*;

const N: u64 = 2_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run(rt: &tokio::runtime::Runtime, build: impl Fn(&Pipeline)) {
    rt.block_on(async {
        let p = Pipeline::new();
        build(&p);
        p.start().unwrap().await_termination().await.unwrap();
    })
}

fn map_chain(c: &mut Criterion) {
    let rt = runtime();
    let data: Vec<u64> = (0..N).collect();
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(N));
    g.bench_function("map_chain_3_p1", |b| {
        b.iter(|| {
            run(&rt, |p| {
                p.source("src", VecSource::new(data.clone()))
                    .map(|x: u64| x.wrapping_mul(3))
                    .map(|x: u64| x ^ 0x5555)
                    .map(|x: u64| x.wrapping_add(7))
                    .sink("out", DiscardSink);
            })
        })
    });
    g.bench_function("shuffle_p2", |b| {
        b.iter(|| {
            run(&rt, |p| {
                p.source("src", VecSource::new(data.clone()))
                    .set_parallelism(2)
                    .key_by(|x: &u64| *x % 1024)
                    .partitioned()
                    .map(|x: u64| x + 1)
                    .set_parallelism(2)
                    .sink("out", DiscardSink)
                    .set_parallelism(2);
            })
        })
    });
    g.bench_function("shuffle_count_p2", |b| {
        b.iter(|| {
            run(&rt, |p| {
                p.source("src", VecSource::new(data.clone()))
                    .set_parallelism(2)
                    .key_by(|x: &u64| *x % 1024)
                    .count()
                    .set_parallelism(2)
                    .sink("out", DiscardSink)
                    .set_parallelism(2);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, map_chain);
criterion_main!(benches);
