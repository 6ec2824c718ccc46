//! Triggers: the same query gives the same result under every trigger, and
//! micro-batches are scheduled as documented (on tokio's paused clock).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::BatchProgress;
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

/// A source whose records arrive at fixed times after it opens (on tokio's
/// clock), each record's value being its arrival time in milliseconds. At a
/// tick it fixes the batch end at the records arrived by then.
#[derive(Clone)]
struct ArrivalsSource {
    arrivals_ms: Vec<u64>,
    opened: Option<tokio::time::Instant>,
    next: usize,
    end: usize,
}

impl ArrivalsSource {
    fn new(arrivals_ms: &[u64]) -> Self {
        assert!(arrivals_ms.is_sorted());
        Self {
            arrivals_ms: arrivals_ms.to_vec(),
            opened: None,
            next: 0,
            end: 0,
        }
    }
}

impl Source<u64> for ArrivalsSource {
    fn open(&mut self, _ctx: &eddy::runtime::SourceContext) -> Result<(), OperatorError> {
        self.opened = Some(tokio::time::Instant::now());
        Ok(())
    }

    fn fix_batch_end(&mut self) -> bool {
        let elapsed = self.opened.expect("opened").elapsed();
        self.end = self
            .arrivals_ms
            .iter()
            .take_while(|&&at| Duration::from_millis(at) <= elapsed)
            .count();
        self.end > self.next
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<u64>>,
        max: usize,
    ) -> Result<eddy::runtime::SourcePoll, OperatorError> {
        use eddy::runtime::SourcePoll;
        if self.next == self.arrivals_ms.len() {
            return Ok(SourcePoll::Finished);
        }
        let n = (self.end - self.next).min(max);
        out.extend(
            self.arrivals_ms[self.next..self.next + n]
                .iter()
                .map(|&at| Record::new(at)),
        );
        self.next += n;
        Ok(if n > 0 {
            SourcePoll::Ready
        } else {
            SourcePoll::Pending
        })
    }
}

/// Passes records through; the state flush that begins at the marker of
/// epoch `slow_epoch` takes `cost` on tokio's clock: [`ManagedState::flush_step`](eddy::checkpoint::ManagedState::flush_step)
/// says "not yet" until then (the runtime steps it between input batches
/// until it is done, and the batch waits for this task's ack). CPU work
/// takes no time on a paused clock, so whoever runs the test moves the
/// clock on while the flush is in progress; `begun` tells them when it
/// began. (No user hook in the micro-batch path awaits: `Source::wait` is
/// only called in continuous mode. A flush that is not done is the one
/// way user code can hold a batch open.)
#[derive(Clone)]
struct SlowFlush {
    slow_epoch: u64,
    table: SlowTable,
}

/// The "table" of [`SlowFlush`]: the runtime begins its flush at every
/// marker and steps it until it says it is written.
#[derive(Clone)]
struct SlowTable {
    cost: Duration,
    begun: Arc<tokio::sync::Notify>,
    slow_next: bool,
    flushing_since: Option<tokio::time::Instant>,
}

impl eddy::checkpoint::ManagedState for SlowTable {
    fn begin_flush(&mut self) -> eddy::checkpoint::Result<()> {
        if std::mem::take(&mut self.slow_next) {
            self.flushing_since = Some(tokio::time::Instant::now());
            self.begun.notify_one();
        }
        Ok(())
    }

    fn flush_step(&mut self, _budget: usize) -> eddy::checkpoint::Result<bool> {
        match self.flushing_since {
            Some(since) if since.elapsed() < self.cost => Ok(false),
            _ => {
                self.flushing_since = None;
                Ok(true)
            }
        }
    }
}

impl Operator<u64, u64> for SlowFlush {
    fn process(
        &mut self,
        record: Record<u64>,
        out: &mut Collector<'_, u64>,
    ) -> Result<(), OperatorError> {
        out.emit(record.value);
        Ok(())
    }

    fn on_marker(
        &mut self,
        epoch: u64,
        _out: &mut Collector<'_, u64>,
    ) -> Result<(), OperatorError> {
        self.table.slow_next = epoch == self.slow_epoch;
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn eddy::checkpoint::ManagedState> {
        vec![&mut self.table]
    }
}

/// Asserts two durations in milliseconds (from `BatchProgress`) are equal.
#[track_caller]
fn assert_ms(got: f64, want: u64, what: &str, b: &BatchProgress) {
    assert!(
        (got - want as f64).abs() < 1e-6,
        "{what}: {got} ms, expected {want} ms, in {b:?}"
    );
}

/// One batch (the first) takes 250 ms with a 100 ms trigger: the next batch
/// starts the moment it commits, not at the 300 ms tick, and the batch after
/// that is back on the 100 ms grid (as in Spark). Ticks that find no new
/// data run no batch.
#[tokio::test(start_paused = true)]
async fn an_overrunning_batch_is_followed_at_once_by_the_next() {
    const INTERVAL: u64 = 100;
    const COST: u64 = 250;
    // Arrival times (ms after start): three at once; two during the
    // overrunning first batch; one before the tick at 300; nothing until
    // 720, so the ticks at 400, 500, 600 and 700 find nothing new.
    let arrivals = [0, 0, 0, 120, 200, 280, 720, 720];
    let begun = Arc::new(tokio::sync::Notify::new());
    let out = CollectSink::new();
    let p = Pipeline::with_config(PipelineConfig {
        trigger: Trigger::ProcessingTime(Duration::from_millis(INTERVAL)),
        ..Default::default()
    });
    p.source("arrivals", ArrivalsSource::new(&arrivals))
        .transform(
            "slow-flush",
            SlowFlush {
                slow_epoch: 1,
                table: SlowTable {
                    cost: Duration::from_millis(COST),
                    begun: begun.clone(),
                    slow_next: false,
                    flushing_since: None,
                },
            },
        )
        .sink("out", out.clone());
    let start = tokio::time::Instant::now();
    let mut q = p.start().unwrap();

    // The first batch's flush began (at the first tick, t = 0); the runtime
    // is busy stepping it, so the clock stands still until moved on.
    tokio::time::timeout(Duration::from_secs(10), begun.notified())
        .await
        .expect("the first batch reaches the slow operator");
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::advance(Duration::from_millis(COST)).await;

    tokio::time::timeout(Duration::from_secs(60), q.await_termination())
        .await
        .expect("the query finishes by itself")
        .unwrap();
    let stats = q.progress().checkpoint.expect("micro-batch stats");
    let batches = &stats.recent_batches;
    let summary: Vec<(u64, f64, u64)> = batches
        .iter()
        .map(|b| (b.batch_id, b.trigger_at_ms, b.input_rows))
        .collect();
    assert!(
        batches.len() >= 2,
        "batches (id, due at, rows): {summary:?}"
    );

    // Batch 1, due at the first tick, overran it: 250 ms > 100 ms.
    let b1 = &batches[0];
    assert_eq!((b1.batch_id, b1.input_rows), (1, 3), "{b1:?}");
    assert_ms(b1.trigger_at_ms, 0, "batch 1 due at", b1);
    assert_ms(b1.scheduling_delay_ms, 0, "batch 1 scheduling delay", b1);
    assert_ms(b1.processing_time_ms, COST, "batch 1 processing time", b1);
    assert_ms(b1.total_delay_ms, COST, "batch 1 total delay", b1);

    // Batch 2 is due, and starts, the moment batch 1 committed (250 ms):
    // not at the next tick boundary (300 ms), and not late for the missed
    // ticks at 100 and 200 ms. It takes what arrived meanwhile.
    let b2 = &batches[1];
    assert_ms(
        b2.trigger_at_ms,
        COST,
        "batch 2 (after the overrun) due at",
        b2,
    );
    assert_ms(b2.scheduling_delay_ms, 0, "batch 2 scheduling delay", b2);
    assert_eq!((b2.batch_id, b2.input_rows), (2, 2), "{b2:?}");
    assert_ms(b2.processing_time_ms, 0, "batch 2 processing time", b2);

    assert_eq!(batches.len(), 4, "batches (id, due at, rows): {summary:?}");

    // The batch after the one that started off the grid is due at the next
    // grid tick (300 ms), and starts on it.
    let b3 = &batches[2];
    assert_eq!((b3.batch_id, b3.input_rows), (3, 1), "{b3:?}");
    assert_ms(b3.trigger_at_ms, 3 * INTERVAL, "batch 3 due at", b3);
    assert_ms(b3.scheduling_delay_ms, 0, "batch 3 scheduling delay", b3);

    // The ticks at 400, 500, 600 and 700 ms found nothing new and ran no
    // batch (nor used an epoch); the one at 800 ms takes the records of
    // 720 ms.
    let b4 = &batches[3];
    assert_eq!((b4.batch_id, b4.input_rows), (4, 2), "{b4:?}");
    assert_ms(b4.trigger_at_ms, 8 * INTERVAL, "batch 4 due at", b4);
    assert_ms(b4.scheduling_delay_ms, 0, "batch 4 scheduling delay", b4);

    // Ticks: 0, 250, 300, 400, 500, 600, 700, 800, and 900 ms, where the
    // source had run dry and the query ended (with an empty final epoch, no
    // batch).
    assert_eq!(stats.ticks, 9, "{stats:?}");
    assert_eq!(stats.batches_completed, 4, "{stats:?}");
    let mut got = out.values();
    got.sort_unstable();
    assert_eq!(got, arrivals, "every record once");
    // The query ended at the last tick, on the clock it was tested on.
    assert_eq!(start.elapsed(), Duration::from_millis(9 * INTERVAL));
}
