//! The interval-join job of the crash tests and `eddy totals --shape join`:
//! one generator (event time [`JOIN_EVENT_TIME`], no record late) split into
//! two streams by sequence number — "readings" (`seq % 3 != 0`) and
//! "alerts" (`seq % 3 == 0`) — joined per key with a full outer interval
//! join, `alert.ts` within [`JOIN_LOWER_MS`, `JOIN_UPPER_MS`] of the
//! reading's.

use eddy::prelude::*;

/// 20 sequence numbers per ms (event time keeps pace with the wall clock at
/// 20k records/s) and up to 40 ms of disorder, under the 50 ms bound: no
/// record is late, so the join's answer is the batch join's.
pub const JOIN_EVENT_TIME: EventTimeConfig = EventTimeConfig {
    start_ms: 1_700_000_000_000,
    records_per_ms: 20,
    max_disorder_ms: 40,
    late_every: 0,
    late_by_ms: 0,
};

/// The watermark's bound on out-of-orderness, ms.
pub const JOIN_BOUND_MS: u64 = 50;
/// An alert joins a reading of its key at most this many ms before it.
pub const JOIN_LOWER_MS: i64 = -10;
/// An alert joins a reading of its key at most this many ms after it.
pub const JOIN_UPPER_MS: i64 = 10;

/// Which side a generated record joins on.
pub fn join_is_alert(seq: u64) -> bool {
    seq % 3 == 0
}

/// (key, event time, seq)
pub type JoinRow = (u64, i64, u64);

/// The job: generator -> split -> key_by -> full outer interval join ->
/// sink. Output `(reading seq, alert seq)`, `None` for an outer row.
pub fn interval_join<S: Sink<(Option<u64>, Option<u64>)> + Clone>(
    pipeline: &Pipeline,
    mut generator: GeneratorConfig,
    parallelism: usize,
    sink: S,
) {
    generator.event_time = Some(JOIN_EVENT_TIME);
    let events = pipeline
        .source("generator", GeneratorSource::new(generator))
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            std::time::Duration::from_millis(JOIN_BOUND_MS),
        ))
        .map(|e: GenEvent| (e.key, e.ts, e.seq));
    let readings = events
        .clone()
        .filter(|r: &JoinRow| !join_is_alert(r.2))
        .key_by(|r: &JoinRow| r.0);
    let alerts = events
        .filter(|r: &JoinRow| join_is_alert(r.2))
        .key_by(|r: &JoinRow| r.0);
    readings
        .interval_join(alerts)
        .between(JOIN_LOWER_MS, JOIN_UPPER_MS)
        .name("join")
        .full_outer()
        .set_parallelism(parallelism)
        .map(|(r, a): (Option<JoinRow>, Option<JoinRow>)| (r.map(|r| r.2), a.map(|a| a.2)))
        .set_parallelism(parallelism)
        .sink("files", sink)
        .set_parallelism(parallelism);
}

/// The line the join crash test's file sink writes: `reading,alert`, `-`
/// for a missing side.
pub fn join_line(r: &(Option<u64>, Option<u64>)) -> String {
    let side = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |s| s.to_string());
    format!("{},{}", side(r.0), side(r.1))
}
