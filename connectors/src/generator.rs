//! A deterministic, rate-limited generator: the workload of benchmarks,
//! demos and crash tests.
//!
//! Record `seq` is a pure function of `seq` (key, value, payload), so a
//! restored query that seeks to an offset regenerates exactly the records it
//! had not yet checkpointed. With parallelism `p`, instance `i` emits the
//! sequence numbers `i, i + p, i + 2p, ...`, each instance at `rate / p`.
//! Each record is stamped with its creation time (`created_ns`), which the
//! runtime carries to the sinks for end-to-end latency.

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

use eddy_runtime::record::now_ns;
use eddy_runtime::source::DEFAULT_MAX_RECORDS_PER_BATCH;
use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

use crate::decode_offset;

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenEvent {
    /// Global sequence number.
    pub seq: u64,
    /// Key in `0..key_space`.
    pub key: u64,
    /// A value in `0..1000`.
    pub value: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// `payload_bytes` bytes derived from `seq`.
    pub payload: Vec<u8>,
    /// Event time in ms ([`EventTimeConfig::timestamp`]; 0 without an
    /// event-time mode). Also the record's timestamp.
    pub ts: i64,
}

/// The generator's event-time mode: event time advances with the sequence
/// number, with bounded disorder and a share of late records, all a pure
/// function of the sequence number, so tests and benchmarks can compute
/// the batch answer (which records are late included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeConfig {
    /// Event time of sequence number 0, ms.
    pub start_ms: i64,
    /// Sequence numbers per millisecond of event time (at least 1).
    pub records_per_ms: u64,
    /// Each record is up to this many ms behind the time of its sequence
    /// number (a watermark bound at least this large makes none of these
    /// late).
    pub max_disorder_ms: i64,
    /// One record in `late_every` (by a hash of the sequence number) is
    /// `late_by_ms` further behind; 0: none.
    pub late_every: u64,
    /// How far behind the late records are, ms.
    pub late_by_ms: i64,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        Self {
            start_ms: 1_700_000_000_000,
            records_per_ms: 1,
            max_disorder_ms: 0,
            late_every: 0,
            late_by_ms: 0,
        }
    }
}

impl EventTimeConfig {
    /// The event time of sequence number `seq`.
    pub fn timestamp(&self, seq: u64) -> i64 {
        let base = self.start_ms + (seq / self.records_per_ms.max(1)) as i64;
        let h = mix(seq ^ 0x005e_ed0f_e7e7);
        let disorder = if self.max_disorder_ms > 0 {
            (h % (self.max_disorder_ms as u64 + 1)) as i64
        } else {
            0
        };
        let late = self.late_every > 0 && (h >> 20) % self.late_every == 0;
        base - disorder - if late { self.late_by_ms } else { 0 }
    }
}

/// How the generator runs.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Records per second over all instances; `None`: as fast as the
    /// pipeline takes them.
    pub rate_per_sec: Option<u64>,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Bytes of payload per record.
    pub payload_bytes: usize,
    /// Total records over all instances; `None`: unbounded.
    pub limit: Option<u64>,
    /// Spin (yielding to other tasks) instead of sleeping when the next
    /// record is due within two milliseconds: exact pacing for latency
    /// benchmarks, at the cost of a busy core. Off with tokio's paused clock.
    pub busy_wait: bool,
    /// Micro-batch mode: most records one instance puts in one batch
    /// (default [`DEFAULT_MAX_RECORDS_PER_BATCH`]; `u64::MAX`: the batch
    /// is everything that became due since the last one, as Spark's rate
    /// source, which under overload grows with the backlog). See
    /// [`Source::max_records_per_batch`].
    pub max_records_per_batch: u64,
    /// Event time (stamped on every record, for a
    /// [`WatermarkStrategy`](eddy_runtime::WatermarkStrategy) that takes
    /// it from the source); `None`: records have none.
    pub event_time: Option<EventTimeConfig>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: None,
            key_space: 1_000,
            payload_bytes: 0,
            limit: None,
            busy_wait: false,
            max_records_per_batch: DEFAULT_MAX_RECORDS_PER_BATCH,
            event_time: None,
        }
    }
}

/// Splitmix64: a fast, well-mixed pure function of `seq` (also how the
/// load generator and benchmarks spread keys).
pub fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl GenEvent {
    /// The record with sequence number `seq` (creation time left at 0).
    pub fn generate(seq: u64, key_space: u64, payload_bytes: usize) -> Self {
        let h = mix(seq);
        Self {
            seq,
            key: h % key_space.max(1),
            value: (h >> 32) % 1000,
            created_ns: 0,
            payload: (0..payload_bytes)
                .map(|i| (seq as u8).wrapping_add(i as u8))
                .collect(),
            ts: 0,
        }
    }
}

/// The generator source. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct GeneratorSource {
    cfg: GeneratorConfig,
    instance: u64,
    parallelism: u64,
    /// Records this instance emitted (its offset).
    emitted: u64,
    /// Pacing origin: when `paced_from` records had been emitted (and the
    /// wall clock then, in nanoseconds since the Unix epoch).
    start: Option<Instant>,
    start_wall_ns: u64,
    paced_from: u64,
    /// Micro-batch mode: emit no record at or past this count.
    batch_end: Option<u64>,
}

impl GeneratorSource {
    /// A generator with `cfg`.
    pub fn new(cfg: GeneratorConfig) -> Self {
        Self {
            cfg,
            instance: 0,
            parallelism: 1,
            emitted: 0,
            start: None,
            start_wall_ns: 0,
            paced_from: 0,
            batch_end: None,
        }
    }

    fn start_at(&mut self, now: Instant) -> Instant {
        if self.start.is_none() {
            self.start = Some(now);
            self.start_wall_ns = now_ns();
        }
        self.start.expect("set above")
    }

    /// When record `n` of this instance is due, on the wall clock: its
    /// creation time. A paced record is stamped with its schedule, not with
    /// the moment it was polled, so time it spends waiting for a late
    /// poll or for a micro-batch tick counts as latency.
    fn scheduled_ns(&self, n: u64, per_instance: f64) -> u64 {
        self.start_wall_ns + ((n - self.paced_from) as f64 / per_instance * 1e9) as u64
    }

    /// Records due by `now` (counted from the start), when rate-limited.
    fn due_total(&mut self, now: Instant) -> Option<u64> {
        let rate = self.cfg.rate_per_sec?;
        let per_instance = (rate as f64 / self.parallelism as f64).max(1e-3);
        let start = self.start_at(now);
        Some(self.paced_from + (now.duration_since(start).as_secs_f64() * per_instance) as u64 + 1)
    }

    fn seq_of(&self, n: u64) -> u64 {
        self.instance + n * self.parallelism
    }

    /// Records this instance may still emit.
    fn remaining(&self) -> u64 {
        match self.cfg.limit {
            None => u64::MAX,
            Some(limit) => {
                let first = self.seq_of(self.emitted);
                if first >= limit {
                    0
                } else {
                    (limit - first).div_ceil(self.parallelism)
                }
            }
        }
    }
}

impl Source<GenEvent> for GeneratorSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.instance = ctx.instance as u64;
        self.parallelism = ctx.parallelism as u64;
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<GenEvent>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let remaining = self.remaining();
        if remaining == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut n = (max as u64).min(remaining);
        if let Some(end) = self.batch_end {
            if self.emitted >= end {
                return Ok(SourcePoll::Pending);
            }
            n = n.min(end - self.emitted);
        }
        if let Some(rate) = self.cfg.rate_per_sec {
            let per_instance = (rate as f64 / self.parallelism as f64).max(1e-3);
            let now = Instant::now();
            let start = self.start_at(now);
            let due_total = self.paced_from
                + (now.duration_since(start).as_secs_f64() * per_instance) as u64
                + 1;
            let due = due_total.saturating_sub(self.emitted);
            if due == 0 {
                let next_at = start
                    + Duration::from_secs_f64(
                        (self.emitted - self.paced_from) as f64 / per_instance,
                    );
                if self.cfg.busy_wait
                    && next_at.saturating_duration_since(now) < Duration::from_millis(2)
                {
                    return Ok(SourcePoll::Ready);
                }
                return Ok(SourcePoll::IdleUntil(next_at));
            }
            n = n.min(due);
        }
        let per_instance = self
            .cfg
            .rate_per_sec
            .map(|rate| (rate as f64 / self.parallelism as f64).max(1e-3));
        let now = now_ns();
        for i in 0..n {
            let created = match per_instance {
                Some(r) => self.scheduled_ns(self.emitted + i, r).min(now),
                None => now,
            };
            let mut ev = GenEvent::generate(
                self.seq_of(self.emitted + i),
                self.cfg.key_space,
                self.cfg.payload_bytes,
            );
            ev.created_ns = created;
            let mut r = Record::created_at(ev, created);
            if let Some(et) = &self.cfg.event_time {
                r.value.ts = et.timestamp(r.value.seq);
                r.timestamp = r.value.ts;
            }
            out.push(r);
        }
        self.emitted += n;
        Ok(SourcePoll::Ready)
    }

    fn offset(&self) -> Vec<u8> {
        self.emitted.to_le_bytes().to_vec()
    }

    fn seek(&mut self, offset: &[u8]) -> Result<(), OperatorError> {
        self.emitted = decode_offset(offset)?;
        self.start = None;
        self.paced_from = self.emitted;
        Ok(())
    }

    fn replayable(&self) -> bool {
        true
    }

    fn max_records_per_batch(&self) -> u64 {
        self.cfg.max_records_per_batch
    }

    fn fix_batch_end(&mut self) -> bool {
        let available = match self.due_total(Instant::now()) {
            Some(due) => due.saturating_sub(self.emitted),
            None => u64::MAX,
        };
        let n = available
            .min(self.remaining())
            .min(self.cfg.max_records_per_batch.max(1));
        self.batch_end = Some(self.emitted + n);
        n > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(g: &mut GeneratorSource, instance: usize, parallelism: usize) {
        g.open(&SourceContext {
            name: "gen".into(),
            instance,
            parallelism,
        })
        .unwrap();
    }

    #[test]
    fn bounded_instances_cover_every_sequence_number_once() {
        let cfg = GeneratorConfig {
            limit: Some(1001),
            ..Default::default()
        };
        let mut seqs = Vec::new();
        for i in 0..3 {
            let mut g = GeneratorSource::new(cfg.clone());
            open(&mut g, i, 3);
            let mut out = Vec::new();
            while g.poll_next(&mut out, 64).unwrap() == SourcePoll::Ready {}
            seqs.extend(out.into_iter().map(|r| r.value.seq));
        }
        seqs.sort();
        assert_eq!(seqs, (0..1001).collect::<Vec<_>>());
    }

    #[test]
    fn replay_from_offset_regenerates_the_same_records() {
        let cfg = GeneratorConfig {
            key_space: 17,
            payload_bytes: 4,
            ..Default::default()
        };
        let mut g = GeneratorSource::new(cfg);
        open(&mut g, 0, 1);
        let mut first = Vec::new();
        g.poll_next(&mut first, 10).unwrap();
        let offset = g.offset();
        let mut a = Vec::new();
        g.poll_next(&mut a, 10).unwrap();
        g.seek(&offset).unwrap();
        let mut b = Vec::new();
        g.poll_next(&mut b, 10).unwrap();
        let strip = |v: Vec<Record<GenEvent>>| {
            v.into_iter()
                .map(|r| GenEvent {
                    created_ns: 0,
                    ..r.value
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn event_time_is_bounded_in_disorder_except_the_late_records() {
        let et = EventTimeConfig {
            start_ms: 0,
            records_per_ms: 4,
            max_disorder_ms: 5,
            late_every: 10,
            late_by_ms: 100,
        };
        let mut max = i64::MIN;
        let (mut late, mut n) = (0, 0);
        for seq in 0..10_000u64 {
            let ts = et.timestamp(seq);
            assert_eq!(ts, et.timestamp(seq), "a pure function");
            if max != i64::MIN && ts < max - 5 {
                late += 1;
                assert!(ts <= max - 100 + 10, "late records are far behind");
            }
            max = max.max(ts);
            n += 1;
        }
        assert!(late > n / 20 && late < n / 5, "{late} of {n} late");
    }

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_configured_rate() {
        let mut g = GeneratorSource::new(GeneratorConfig {
            rate_per_sec: Some(1000),
            ..Default::default()
        });
        open(&mut g, 0, 1);
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.len() < 100 {
            match g.poll_next(&mut out, 512).unwrap() {
                SourcePoll::IdleUntil(t) => tokio::time::sleep_until(t).await,
                SourcePoll::Ready => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // 100 records at 1000/s take 99 ms of (virtual) time.
        let took = Instant::now() - t0;
        assert!(
            took >= Duration::from_millis(98) && took <= Duration::from_millis(100),
            "{took:?}"
        );
    }
}
