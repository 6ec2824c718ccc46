//! The fleet as a source of the query: [`FleetSource`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::fleet::{Fleet, Reading};
use eddy::runtime::record::now_ns;
use eddy::runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

/// The fleet as a source: one instance (so that which readings are late
/// is a function of the input alone, see docs/event-time.md), paced at
/// `rate` readings per second of wall time, replayable from its offset
/// (the next sequence number).
#[derive(Debug, Clone)]
pub struct FleetSource {
    fleet: Arc<Fleet>,
    rate: Option<u64>,
    next: u64,
    start: Option<Instant>,
    start_wall_ns: u64,
    paced_from: u64,
    batch_end: Option<u64>,
    newest_ts: Arc<AtomicI64>,
}

impl FleetSource {
    /// The source of `fleet` at `rate` readings per second (`None`: as fast
    /// as the query takes them). `newest_ts` is kept at the newest event
    /// time emitted (for the live status's watermark lag).
    pub fn new(fleet: Arc<Fleet>, rate: Option<u64>, newest_ts: Arc<AtomicI64>) -> Self {
        Self {
            fleet,
            rate: rate.filter(|&r| r > 0),
            next: 0,
            start: None,
            start_wall_ns: 0,
            paced_from: 0,
            batch_end: None,
            newest_ts,
        }
    }

    fn remaining(&self) -> u64 {
        self.fleet
            .total_seqs()
            .map_or(u64::MAX, |t| t.saturating_sub(self.next))
    }

    /// Sequence numbers due by now (from the start of pacing).
    fn due(&mut self, now: Instant) -> u64 {
        let Some(rate) = self.rate else {
            return u64::MAX;
        };
        let start = *self.start.get_or_insert_with(|| {
            self.start_wall_ns = now_ns();
            now
        });
        let due_total =
            self.paced_from + (now.duration_since(start).as_secs_f64() * rate as f64) as u64 + 1;
        due_total.saturating_sub(self.next)
    }
}

impl Source<Reading> for FleetSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        if ctx.parallelism != 1 {
            return Err(OperatorError::new(
                "the fleet source runs as one instance (deterministic lateness)",
            ));
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<Reading>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let remaining = self.remaining();
        if remaining == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut n = (max as u64).min(remaining);
        if let Some(end) = self.batch_end {
            if self.next >= end {
                return Ok(SourcePoll::Pending);
            }
            n = n.min(end - self.next);
        }
        let now = Instant::now();
        let due = self.due(now);
        if due == 0 {
            let rate = self.rate.unwrap_or(1) as f64;
            let next_at = self.start.unwrap_or(now)
                + Duration::from_secs_f64((self.next - self.paced_from) as f64 / rate);
            return Ok(SourcePoll::IdleUntil(next_at));
        }
        n = n.min(due);
        let wall = now_ns();
        let mut newest = i64::MIN;
        for seq in self.next..self.next + n {
            let Some(r) = self.fleet.reading(seq) else {
                continue;
            };
            let created = match self.rate {
                Some(rate) => (self.start_wall_ns
                    + ((seq - self.paced_from) as f64 / rate as f64 * 1e9) as u64)
                    .min(wall),
                None => wall,
            };
            let mut rec = Record::created_at(r, created);
            rec.timestamp = r.ts;
            newest = newest.max(r.ts);
            out.push(rec);
        }
        self.next += n;
        self.newest_ts.fetch_max(newest, Ordering::Relaxed);
        Ok(SourcePoll::Ready)
    }

    fn offset(&self) -> Vec<u8> {
        self.next.to_le_bytes().to_vec()
    }

    fn seek(&mut self, offset: &[u8]) -> Result<(), OperatorError> {
        let bytes: [u8; 8] = offset
            .try_into()
            .map_err(|_| OperatorError::new("fleet source: an offset of 8 bytes expected"))?;
        self.next = u64::from_le_bytes(bytes);
        self.start = None;
        self.paced_from = self.next;
        Ok(())
    }

    fn replayable(&self) -> bool {
        true
    }

    fn fix_batch_end(&mut self) -> bool {
        let n = self.due(Instant::now()).min(self.remaining());
        self.batch_end = Some(self.next.saturating_add(n));
        n > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::fleet::{FleetConfig, START_MS};

    #[test]
    fn the_source_replays_from_its_offset() {
        let fleet = Arc::new(Fleet::new(FleetConfig {
            sensors: 300,
            seconds: Some(60),
            ..Default::default()
        }));
        let newest = Arc::new(AtomicI64::new(i64::MIN));
        let mut s = FleetSource::new(fleet, None, newest.clone());
        let mut first = Vec::new();
        s.poll_next(&mut first, 1000).unwrap();
        let offset = s.offset();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.poll_next(&mut a, 1000).unwrap();
        s.seek(&offset).unwrap();
        s.poll_next(&mut b, 1000).unwrap();
        let values = |v: Vec<Record<Reading>>| v.into_iter().map(|r| r.value).collect::<Vec<_>>();
        assert_eq!(values(a), values(b));
        assert!(newest.load(Ordering::Relaxed) > START_MS);
        assert!(s.seek(&[1, 2]).is_err());
    }
}
