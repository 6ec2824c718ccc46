//! Event time at the sources: timestamp assignment and watermark generation.
//!
//! A [`WatermarkStrategy`] set on a source stream
//! ([`Stream::with_watermarks`](crate::Stream::with_watermarks)) runs inside
//! each source instance's task, on the records it polls:
//! - the record's event time comes from the source itself (Kafka's
//!   timestamp, the generator's event time), from an extractor
//!   ([`WatermarkStrategy::with_timestamps`]), or from the clock at ingestion
//!   ([`WatermarkStrategy::ingestion_time`]);
//! - the watermark is `max event time seen - max out-of-orderness - 1`
//!   (bounded out-of-orderness, as Flink's): a record within the bound is
//!   never late;
//! - it is sent in-band after each poll that advanced it, and also *just
//!   before a record that is behind it*. A record is therefore judged late
//!   against exactly the records that preceded it at its source instance,
//!   whatever the batching, the trigger or the timing: a query gives the
//!   same answer in continuous and micro-batch mode and after a recovery;
//! - with an idle timeout, an instance that has had no data for that long
//!   sends [`Message::Idle`](crate::Message::Idle), and downstream tasks
//!   stop waiting for its watermark until it sends again. Without one, a
//!   silent instance holds the watermark back (as in Flink);
//! - when the source is exhausted it sends the end-of-time watermark, so
//!   every window fires.
//!
//! The generator's state (the maximum event time and the watermark sent) is
//! stored with the source's offset in every checkpoint: a restored source
//! resumes the watermark where the checkpoint left it, so no window result
//! is fired twice or lost.
//!
//! A partitioned source (one instance reading several partitions, Kafka)
//! reports the lowest of its active partitions' newest event times after
//! every poll ([`Source::watermark`](crate::Source::watermark)); the
//! generator never lets the watermark pass it less the bound, so one
//! partition running ahead of another does not make the slower one's
//! records late. Lateness inside a poll is judged against the cap of the
//! previous poll (lower, so never too strict); the cap is not checkpointed:
//! a restored source reports it again before its first poll.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{Record, Timestamp, NO_TIMESTAMP};

/// The end of time: a watermark that fires every timer.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

type Extractor<T> = Arc<dyn Fn(&T) -> Timestamp + Send + Sync>;

enum Assigner<T> {
    /// The source stamps records itself.
    FromSource,
    /// An extractor over the value.
    Extract(Extractor<T>),
    /// The wall clock when the source task polls the record.
    IngestionTime,
}

impl<T> Clone for Assigner<T> {
    fn clone(&self) -> Self {
        match self {
            Assigner::FromSource => Assigner::FromSource,
            Assigner::Extract(f) => Assigner::Extract(f.clone()),
            Assigner::IngestionTime => Assigner::IngestionTime,
        }
    }
}

/// How a source assigns event time and generates watermarks.
pub struct WatermarkStrategy<T> {
    assigner: Assigner<T>,
    max_out_of_orderness_ms: i64,
    idle_timeout: Option<Duration>,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            assigner: self.assigner.clone(),
            max_out_of_orderness_ms: self.max_out_of_orderness_ms,
            idle_timeout: self.idle_timeout,
        }
    }
}

impl<T> WatermarkStrategy<T> {
    /// Event time as the source stamps it; records may arrive up to
    /// `max_out_of_orderness` behind the newest one seen and still be on
    /// time.
    pub fn bounded_out_of_orderness(max_out_of_orderness: Duration) -> Self {
        Self {
            assigner: Assigner::FromSource,
            max_out_of_orderness_ms: max_out_of_orderness.as_millis() as i64,
            idle_timeout: None,
        }
    }

    /// Event time that never goes backwards at a source instance.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// Ingestion time: each record is stamped with the wall clock (ms) when
    /// its source task reads it, and the watermark follows the clock. Windows
    /// over it are processing-time windows.
    pub fn ingestion_time() -> Self {
        Self {
            assigner: Assigner::IngestionTime,
            max_out_of_orderness_ms: 0,
            idle_timeout: None,
        }
    }

    /// Takes event time from the value instead of from the source.
    pub fn with_timestamps(mut self, f: impl Fn(&T) -> Timestamp + Send + Sync + 'static) -> Self {
        self.assigner = Assigner::Extract(Arc::new(f));
        self
    }

    /// A source instance without data for `timeout` stops holding the
    /// watermark back until it has data again.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The idle timeout, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The bound on out-of-orderness, in milliseconds.
    pub fn max_out_of_orderness_ms(&self) -> i64 {
        self.max_out_of_orderness_ms
    }
}

/// What a watermark generator stores in a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorState {
    /// The highest event time seen.
    pub max_timestamp: Timestamp,
    /// The last watermark sent.
    pub emitted: Timestamp,
}

/// One source instance's watermark generator (see the [module docs](self)).
pub struct WatermarkGenerator<T> {
    strategy: WatermarkStrategy<T>,
    state: GeneratorState,
    /// Creation time of the record that raised `max_timestamp`.
    max_created_ns: u64,
    /// The source's own progress ([`Source::watermark`](crate::Source::watermark)):
    /// the watermark never passes it less the bound.
    cap: Option<Timestamp>,
}

/// Where the source task must send a watermark inside a polled batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Records before this index go first.
    pub at: usize,
    /// Then this watermark.
    pub watermark: Timestamp,
    /// Its creation stamp.
    pub created_ns: u64,
}

impl<T> WatermarkGenerator<T> {
    /// A generator following `strategy`, starting from nothing.
    pub fn new(strategy: WatermarkStrategy<T>) -> Self {
        Self {
            strategy,
            state: GeneratorState {
                max_timestamp: NO_TIMESTAMP,
                emitted: NO_TIMESTAMP,
            },
            max_created_ns: 0,
            cap: None,
        }
    }

    /// Takes the source's own progress into account from now on (see
    /// [`Source::watermark`](crate::Source::watermark)); ignored when the
    /// strategy does not use the event time the source stamps.
    pub fn set_cap(&mut self, cap: Option<Timestamp>) {
        if matches!(self.strategy.assigner, Assigner::FromSource) {
            self.cap = cap;
        }
    }

    /// Resumes from a checkpoint.
    pub fn restore(&mut self, state: GeneratorState) {
        self.state = state;
    }

    /// What to store in a checkpoint.
    pub fn state(&self) -> GeneratorState {
        self.state
    }

    /// The idle timeout of the strategy.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.strategy.idle_timeout
    }

    /// The watermark the records seen so far allow.
    fn candidate(&self) -> Timestamp {
        let newest = match self.cap {
            Some(cap) => self.state.max_timestamp.min(cap),
            None => self.state.max_timestamp,
        };
        if newest == NO_TIMESTAMP {
            return NO_TIMESTAMP;
        }
        newest
            .saturating_sub(self.strategy.max_out_of_orderness_ms)
            .saturating_sub(1)
    }

    /// Stamps the polled records with event time (`now_ms`: the clock, for
    /// ingestion time) and appends to `splits` where a watermark must go
    /// before a record that is behind it. A record without event time (the
    /// source did not stamp it) does not move the watermark.
    pub fn assign(
        &mut self,
        records: &mut [Record<T>],
        now_ms: Timestamp,
        splits: &mut Vec<Split>,
    ) {
        for (i, r) in records.iter_mut().enumerate() {
            match &self.strategy.assigner {
                Assigner::FromSource => {}
                Assigner::Extract(f) => r.timestamp = f(&r.value),
                Assigner::IngestionTime => r.timestamp = now_ms,
            }
            if r.timestamp == NO_TIMESTAMP {
                continue;
            }
            let candidate = self.candidate();
            if r.timestamp <= candidate && candidate > self.state.emitted {
                self.state.emitted = candidate;
                splits.push(Split {
                    at: i,
                    watermark: candidate,
                    created_ns: self.max_created_ns,
                });
            }
            if r.timestamp > self.state.max_timestamp {
                self.state.max_timestamp = r.timestamp;
                self.max_created_ns = r.created_ns;
            }
        }
    }

    /// The watermark to send after a poll, if it advanced.
    pub fn advance(&mut self) -> Option<(Timestamp, u64)> {
        let candidate = self.candidate();
        if candidate > self.state.emitted {
            self.state.emitted = candidate;
            Some((candidate, self.max_created_ns))
        } else {
            None
        }
    }

    /// The source is exhausted: the end-of-time watermark, unless sent.
    pub fn finish(&mut self) -> Option<Timestamp> {
        if self.state.emitted == MAX_WATERMARK {
            return None;
        }
        self.state.emitted = MAX_WATERMARK;
        Some(MAX_WATERMARK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partitioned source's progress caps the watermark: with a lagging
    /// partition, the newest record of the fast one does not make the slow
    /// one's records late.
    #[test]
    fn the_source_cap_holds_the_watermark_at_the_slowest_partition() {
        let mut g = WatermarkGenerator::<u32>::new(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(10),
        ));
        let mut splits = Vec::new();
        // An active partition has delivered nothing yet: no watermark.
        g.set_cap(Some(NO_TIMESTAMP));
        g.assign(&mut recs(&[1_000, 1_005]), 0, &mut splits);
        assert_eq!(g.advance(), None);
        // Partition B delivers 500: the watermark follows B.
        g.set_cap(Some(500));
        g.assign(&mut recs(&[500]), 0, &mut splits);
        assert_eq!(g.advance().map(|w| w.0), Some(489));
        // B's next records are far behind A's 1_005 but not late.
        g.assign(&mut recs(&[495, 520]), 0, &mut splits);
        assert!(splits.is_empty(), "nothing late: {splits:?}");
        // Without a cap the same record would be late.
        let mut h = WatermarkGenerator::<u32>::new(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(10),
        ));
        h.assign(&mut recs(&[1_000, 1_005, 500]), 0, &mut splits);
        assert_eq!(splits.len(), 1);
        // An extractor ignores the cap (it is about the source's stamps).
        let mut x = WatermarkGenerator::<u32>::new(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10))
                .with_timestamps(|_| 1_000),
        );
        x.set_cap(Some(NO_TIMESTAMP));
        x.assign(&mut recs(&[0]), 0, &mut Vec::new());
        assert_eq!(x.advance().map(|w| w.0), Some(989));
    }

    fn recs(ts: &[Timestamp]) -> Vec<Record<u32>> {
        ts.iter()
            .map(|&t| Record {
                value: 0,
                timestamp: t,
                created_ns: t as u64,
            })
            .collect()
    }

    #[test]
    fn bounded_out_of_orderness_lags_the_maximum() {
        let mut g = WatermarkGenerator::new(WatermarkStrategy::<u32>::bounded_out_of_orderness(
            Duration::from_millis(10),
        ));
        let mut splits = Vec::new();
        g.assign(&mut recs(&[100, 105, 103]), 0, &mut splits);
        assert!(splits.is_empty(), "within the bound: no split");
        assert_eq!(g.advance(), Some((94, 105)));
        assert_eq!(g.advance(), None, "never sent twice");
    }

    #[test]
    fn a_record_behind_the_watermark_gets_it_sent_first() {
        let mut g = WatermarkGenerator::new(WatermarkStrategy::<u32>::bounded_out_of_orderness(
            Duration::from_millis(10),
        ));
        let mut splits = Vec::new();
        // 50 is behind 200 - 10 - 1 = 189.
        g.assign(&mut recs(&[100, 200, 50, 210]), 0, &mut splits);
        assert_eq!(
            splits,
            vec![Split {
                at: 2,
                watermark: 189,
                created_ns: 200
            }]
        );
        assert_eq!(g.advance(), Some((199, 210)));
    }

    #[test]
    fn watermarks_never_go_backwards_and_restore() {
        let mut g = WatermarkGenerator::new(WatermarkStrategy::<u32>::monotonous());
        let mut splits = Vec::new();
        g.assign(&mut recs(&[100]), 0, &mut splits);
        assert_eq!(g.advance().map(|w| w.0), Some(99));
        g.assign(&mut recs(&[90]), 0, &mut splits);
        assert_eq!(g.advance(), None);
        let saved = g.state();
        let mut h = WatermarkGenerator::new(WatermarkStrategy::<u32>::monotonous());
        h.restore(saved);
        h.assign(&mut recs(&[95]), 0, &mut splits);
        assert_eq!(h.advance(), None);
        assert_eq!(h.finish(), Some(MAX_WATERMARK));
        assert_eq!(h.finish(), None);
    }

    #[test]
    fn extractor_and_ingestion_time_stamp_records() {
        let mut g = WatermarkGenerator::new(
            WatermarkStrategy::<u32>::monotonous().with_timestamps(|v| *v as i64 * 10),
        );
        let mut r = vec![Record::new(7u32)];
        g.assign(&mut r, 0, &mut Vec::new());
        assert_eq!(r[0].timestamp, 70);
        let mut g = WatermarkGenerator::new(WatermarkStrategy::<u32>::ingestion_time());
        let mut r = vec![Record::new(7u32)];
        g.assign(&mut r, 12_345, &mut Vec::new());
        assert_eq!(r[0].timestamp, 12_345);
    }
}
