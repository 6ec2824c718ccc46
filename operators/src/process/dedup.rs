//! Deduplication within a watermark bound (Spark's
//! `dropDuplicatesWithinWatermark`).
//!
//! State: per key, the event time `first` of the record kept for it, in a
//! [`KeyedTable`] named `dedup`, and one event-time timer at
//! `first + bound` that removes it. So:
//! - a record behind the watermark is late: counted and dropped (whether
//!   its key was seen may no longer be known);
//! - otherwise a record whose key has state with `ts <= first + bound` is
//!   a duplicate: counted as dropped and sent to the side output;
//! - otherwise it is kept and emitted, and its time becomes the key's
//!   `first` (replacing an older one).
//!
//! The answer does not depend on when watermarks arrive: a record on time
//! (`ts > watermark`) with `ts <= first + bound` finds its key's state
//! still there, because the state is removed only once the watermark
//! reaches `first + bound`. Every key's state is removed once the
//! watermark passes its `first + bound`, so state stays bounded by the
//! keys seen within the bound.

use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::record::NO_TIMESTAMP;
use eddy_runtime::{
    Collector, Operator, OperatorContext, OperatorError, Record, TimeDomain, Timer,
};

use crate::aggregate::StateKey;
use crate::state::{declared, open_table};

/// The deduplication operator (see the [module docs](self)).
pub struct Dedup<T, K> {
    name: String,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    bound_ms: i64,
    table: Option<KeyedTable<K, i64>>,
}

impl<T, K> Clone for Dedup<T, K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
            bound_ms: self.bound_ms,
            table: None,
        }
    }
}

impl<T, K> Dedup<T, K> {
    /// Drops records whose `key` was kept at most `bound_ms` of event time
    /// earlier (or later).
    pub fn new(key: Arc<dyn Fn(&T) -> K + Send + Sync>, bound_ms: i64) -> Self {
        Self {
            name: String::new(),
            key,
            bound_ms: bound_ms.max(0),
            table: None,
        }
    }

    /// The state table: first-seen event time per key (unit tests count
    /// its entries).
    pub fn table_mut(&mut self) -> Option<&mut KeyedTable<K, i64>> {
        self.table.as_mut()
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("dedup used before open")
}

impl<T, K> Operator<T, T, T> for Dedup<T, K>
where
    T: Send + 'static,
    K: StateKey,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.name = ctx.name.clone();
        self.table = Some(open_table(ctx, "dedup")?);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }

    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, T, T>,
    ) -> Result<(), OperatorError> {
        let ts = record.timestamp;
        if ts == NO_TIMESTAMP {
            return Err(OperatorError::new(format!(
                "dedup `{}`: a record without event time (give the source \
                 with_watermarks(...))",
                self.name
            )));
        }
        if ts <= out.watermark() {
            out.count_late(1);
            return Ok(());
        }
        let key = (self.key)(&record.value);
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let first = table.get(&key)?.copied();
        if let Some(first) = first {
            let until = first.saturating_add(self.bound_ms);
            if ts <= until {
                out.count_dropped(1);
                out.emit_side(record.value);
                return Ok(());
            }
            out.delete_timer(TimeDomain::EventTime, until, &key)?;
        }
        out.register_timer(
            TimeDomain::EventTime,
            ts.saturating_add(self.bound_ms),
            &key,
        )?;
        table.put(key, ts)?;
        out.emit_record(record);
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        _out: &mut Collector<'_, T, T>,
    ) -> Result<(), OperatorError> {
        let key: K = timer.key()?;
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let first = table.get(&key)?.copied();
        if first.is_some_and(|f| f.saturating_add(self.bound_ms) <= timer.time) {
            table.remove(&key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use eddy_runtime::timers::ProcessingClock;
    use eddy_runtime::{Output, TimerService};

    use super::*;

    /// Drives the operator as its task would: records, then watermarks
    /// with the timers they make due.
    struct Harness {
        op: Dedup<(u64, i64), u64>,
        timers: TimerService,
        clock: ProcessingClock,
        out: Output<(u64, i64), (u64, i64)>,
        watermark: i64,
    }

    impl Harness {
        fn new(bound_ms: i64) -> Self {
            let mut op = Dedup::new(Arc::new(|r: &(u64, i64)| r.0), bound_ms);
            op.open(&mut OperatorContext::for_test("dedup")).unwrap();
            Self {
                op,
                timers: TimerService::in_memory(),
                clock: ProcessingClock::new(),
                out: Output::default(),
                watermark: NO_TIMESTAMP,
            }
        }

        fn record(&mut self, key: u64, ts: i64) {
            let mut c =
                Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
            c.set_input(ts, 0);
            let mut r = Record::new((key, ts));
            r.timestamp = ts;
            self.op.process(r, &mut c).unwrap();
        }

        fn watermark(&mut self, w: i64) {
            self.watermark = w;
            while let Some(t) = self.timers.pop_due(TimeDomain::EventTime, w).unwrap() {
                let mut c =
                    Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
                self.op.on_timer(&t, &mut c).unwrap();
            }
        }

        fn retained(&mut self) -> Vec<(u64, i64)> {
            let mut keys = Vec::new();
            self.op
                .table_mut()
                .unwrap()
                .for_each(|k, v| {
                    keys.push((k, v));
                    Ok(())
                })
                .unwrap();
            keys.sort();
            keys
        }
    }

    #[test]
    fn duplicates_within_the_bound_are_dropped_and_counted() {
        let mut h = Harness::new(100);
        h.record(1, 1_000);
        h.record(1, 1_100); // first + bound: a duplicate
        h.record(1, 950); // earlier than first, within the bound
        h.record(2, 1_050);
        h.record(1, 1_101); // past the bound: kept, becomes first
        h.record(1, 1_150);
        let main: Vec<_> = h.out.main.iter().map(|r| r.value).collect();
        let side: Vec<_> = h.out.side.iter().map(|r| r.value).collect();
        assert_eq!(main, vec![(1, 1_000), (2, 1_050), (1, 1_101)]);
        assert_eq!(side, vec![(1, 1_100), (1, 950), (1, 1_150)]);
        assert_eq!(h.out.dropped, 3);
        assert_eq!(h.out.late, 0);
        // The replaced first time's timer is gone: one timer per key.
        assert_eq!(h.timers.len(), 2);
    }

    #[test]
    fn late_records_are_counted_and_dropped() {
        let mut h = Harness::new(10);
        h.watermark(500);
        h.record(1, 500);
        h.record(1, 501);
        assert_eq!(h.out.late, 1);
        assert_eq!(h.out.main.len(), 1);
        let mut c = Collector::new(&mut h.out, &mut h.timers, &h.clock, 0);
        let err = h.op.process(Record::new((1, 0)), &mut c).unwrap_err();
        assert!(err.to_string().contains("without event time"), "{err}");
    }

    /// On an unbounded stream of ever new keys, the state holds only the
    /// keys whose bound the watermark has not passed.
    #[test]
    fn state_stays_bounded_as_the_watermark_passes() {
        let bound = 50;
        let mut h = Harness::new(bound);
        let mut max_retained = 0;
        for i in 0..10_000i64 {
            let ts = i; // one record per ms, a new key every 3 records
            h.record((i / 3) as u64, ts);
            if i % 7 == 0 {
                h.watermark(ts - 20);
                let w = h.watermark;
                let retained = h.retained();
                // Exactly the keys whose first + bound is ahead of the
                // watermark.
                assert!(retained.iter().all(|(_, first)| first + bound > w));
                max_retained = max_retained.max(retained.len());
            }
        }
        assert!(max_retained <= 30, "retained at most {max_retained} keys");
        assert_eq!(h.out.main.len(), 3_334);
        assert_eq!(h.out.dropped, 10_000 - 3_334);
        h.watermark(i64::MAX);
        assert!(
            h.retained().is_empty(),
            "no state after the watermark passes"
        );
        assert!(h.timers.is_empty(), "no timer left");
    }
}
