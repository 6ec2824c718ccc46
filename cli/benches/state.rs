//! State costs: keyed-table update throughput on the memory and RocksDB
//! backends; checkpoint duration (synchronous part vs persist) and bytes
//! written for a 1M-key state, full vs incremental after 1% of the keys
//! changed; restore time of that state.
//!
//! `cargo bench --bench state` (about two minutes). Under `cargo test` the
//! same code runs once on a 20k-key state, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use eddy::checkpoint::{
    BackendFactory, CheckpointStore, KeyedTable, Manifest, MemoryBackendFactory,
    RocksBackendFactory, StateHandle, TaskId, TaskSnapshot,
};

/// Updates between two markers (each batch ends with a flush, as at a marker).
const UPDATES_PER_MARKER: u64 = 10_000;
/// Table cache entries.
const CACHE: usize = 100_000;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Keys of the checkpoint figures.
fn state_keys() -> u64 {
    if bench_mode() {
        1_000_000
    } else {
        20_000
    }
}

fn task() -> TaskId {
    TaskId::new("counts", 0)
}

/// xorshift64: a fixed, seeded key sequence.
struct Keys(u64);

impl Keys {
    fn next(&mut self, space: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % space
    }
}

fn update_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("state/update");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(UPDATES_PER_MARKER));
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksBackendFactory::new(dir.path().join("local"));
    // hot: 10k keys, all cached; cold: 1M keys, 10% cached (spills to the backend).
    for (shape, space) in [("hot", 10_000u64), ("cold", 1_000_000)] {
        for (name, factory) in [
            ("memory", &MemoryBackendFactory as &dyn BackendFactory),
            ("rocksdb", &rocks as &dyn BackendFactory),
        ] {
            let backend = factory.open(&task(), None, None).unwrap();
            let mut table: KeyedTable<u64, u64> =
                KeyedTable::new(backend, "counts").with_cache_capacity(CACHE);
            let mut keys = Keys(0x9e37_79b9_7f4a_7c15);
            for k in 0..space {
                table.put(k, 0).unwrap();
            }
            table.flush().unwrap();
            g.bench_function(format!("{name}/{shape}"), |b| {
                b.iter(|| {
                    for _ in 0..UPDATES_PER_MARKER {
                        let k = keys.next(space);
                        table.update(&k, |v| *v = Some(v.unwrap_or(0) + 1)).unwrap();
                    }
                    table.flush().unwrap();
                    black_box(table.dirty_len())
                })
            });
        }
    }
    g.finish();
}

/// A RocksDB-backed table of `n` keys with its store.
struct Loaded {
    _dir: tempfile::TempDir,
    store: CheckpointStore,
    factory: RocksBackendFactory,
    table: KeyedTable<u64, u64>,
    epoch: u64,
    keys: Keys,
    n: u64,
}

impl Loaded {
    fn new(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("store")).unwrap();
        let factory = RocksBackendFactory::new(dir.path().join("local"));
        let backend = factory.open(&task(), None, None).unwrap();
        let mut table = KeyedTable::new(backend, "counts").with_cache_capacity(CACHE);
        for k in 0..n {
            table.put(k, k).unwrap();
        }
        table.flush().unwrap();
        Self {
            _dir: dir,
            store,
            factory,
            table,
            epoch: 0,
            keys: Keys(42),
            n,
        }
    }

    /// Changes 1% of the keys (random ones).
    fn change_one_percent(&mut self) {
        for _ in 0..self.n / 100 {
            let k = self.keys.next(self.n);
            self.table.update(&k, |v| *v = v.map(|v| v + 1)).unwrap();
        }
    }

    /// Takes a checkpoint; returns (sync part, persist, handle).
    fn checkpoint(&mut self) -> (Duration, Duration, StateHandle) {
        self.epoch += 1;
        let t = Instant::now();
        let job = self.table.snapshot().unwrap();
        let sync = t.elapsed();
        let t = Instant::now();
        let handle = job.persist(&self.store, &task(), self.epoch).unwrap();
        let persist = t.elapsed();
        let mut tasks = std::collections::BTreeMap::new();
        tasks.insert(
            task(),
            TaskSnapshot {
                state: Some(handle.clone()),
                meta: vec![],
            },
        );
        self.store
            .write_manifest(&Manifest {
                epoch: self.epoch,
                shape: vec![],
                tasks,
                created_unix_ms: 0,
            })
            .unwrap();
        (sync, persist, handle)
    }

    fn restore(&self, handle: &StateHandle) -> Duration {
        let t = Instant::now();
        let backend = self
            .factory
            .open(&TaskId::new("restored", 0), Some(handle), Some(&self.store))
            .unwrap();
        let took = t.elapsed();
        black_box(backend.get(b"x").unwrap());
        took
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One pass printing the figures criterion does not measure (bytes written)
/// next to the durations, full vs incremental.
fn checkpoint_figures() {
    let n = state_keys();
    let t = Instant::now();
    let mut s = Loaded::new(n);
    println!(
        "\nstate figures, {n} keys (u64 -> u64) on RocksDB, loaded in {:.0} ms",
        ms(t.elapsed())
    );
    let (sync, persist, full) = s.checkpoint();
    println!(
        "  full checkpoint:        sync {:7.1} ms, persist {:7.1} ms, written {:8.2} MiB ({} files)",
        ms(sync),
        ms(persist),
        mib(full.bytes_written),
        full.files.len()
    );
    let mut last = full.clone();
    for round in 1..=3 {
        s.change_one_percent();
        let (sync, persist, inc) = s.checkpoint();
        println!(
            "  incremental #{round} (1%):  sync {:7.1} ms, persist {:7.1} ms, written {:8.2} MiB of {:.2} MiB referenced",
            ms(sync),
            ms(persist),
            mib(inc.bytes_written),
            mib(inc.total_bytes())
        );
        last = inc;
    }
    let restore = s.restore(&last);
    println!(
        "  restore:                {:7.1} ms for {:.2} MiB",
        ms(restore),
        mib(last.total_bytes())
    );

    // The in-memory backend, for comparison (every checkpoint is full).
    let store_dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(store_dir.path()).unwrap();
    let backend = MemoryBackendFactory.open(&task(), None, None).unwrap();
    let mut table: KeyedTable<u64, u64> = KeyedTable::new(backend, "counts");
    for k in 0..n {
        table.put(k, k).unwrap();
    }
    table.flush().unwrap(); // as for RocksDB above: time the snapshot itself
    let t = Instant::now();
    let job = table.snapshot().unwrap();
    let sync = t.elapsed();
    let t = Instant::now();
    let handle = job.persist(&store, &task(), 1).unwrap();
    println!(
        "  memory backend:         sync {:7.1} ms, persist {:7.1} ms, written {:8.2} MiB\n",
        ms(sync),
        ms(t.elapsed()),
        mib(handle.bytes_written)
    );
}

fn checkpoint_durations(c: &mut Criterion) {
    let mut s = Loaded::new(state_keys());
    let (_, _, mut handle) = s.checkpoint();
    let mut g = c.benchmark_group("state/checkpoint");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(5));
    // Each iteration: change 1% of the keys (not timed), then checkpoint.
    g.bench_function("incremental_1pct/sync_part", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.change_one_percent();
                let (sync, _, h) = s.checkpoint();
                total += sync;
                handle = h;
            }
            total
        })
    });
    g.bench_function("incremental_1pct/persist", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                s.change_one_percent();
                let (_, persist, h) = s.checkpoint();
                total += persist;
                handle = h;
            }
            total
        })
    });
    g.bench_function("restore", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| s.restore(&handle)).sum())
    });
    g.finish();
}

fn main() {
    checkpoint_figures();
    let mut c = Criterion::default().configure_from_args();
    update_throughput(&mut c);
    checkpoint_durations(&mut c);
    c.final_summary();
}
