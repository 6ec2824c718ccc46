//! The stream-stream interval join: keyed, with an event-time interval
//! condition `left.ts + lower <= right.ts <= left.ts + upper` (Flink's
//! interval join; Spark's stream-stream join with a time-range condition).
//!
//! # State and its bound
//! Per key, the buffered rows of each side (`KeyedTable<K, Vec<Row<_>>>`,
//! tables `left` and `right`). A left row at `ta` can match right rows up
//! to `ta + upper`; once the watermark reaches that time no right row that
//! is not late can match it, so it is removed. A right row at `tb` is
//! removed when the watermark reaches `tb - lower`. Each removal is an
//! event-time timer per (key, time), which the runtime persists and fires;
//! so state holds only rows whose interval is still open.
//!
//! # What is emitted, and when
//! - A pair, as soon as its second row arrives, at event time
//!   `max(ta, tb)` (never behind the watermark: the arriving row is not
//!   late) and with the arriving row's creation stamp.
//! - Outer joins: a row that matched nothing when its interval closed is
//!   emitted with the other side `None`, at event time `ta + upper`
//!   (left) or `tb - lower` (right): the time its interval closed, which
//!   is never behind the watermark the row travels before.
//! - A late row (event time at or below the watermark when it arrives)
//!   could miss rows already removed, so it joins nothing: it is counted
//!   as late and sent to the side output.

use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::record::NO_TIMESTAMP;
use eddy_runtime::two_input::{Either, TwoInputOperator};
use eddy_runtime::{Collector, OperatorContext, OperatorError, Record, TimeDomain, Timer};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::aggregate::StateKey;
use crate::state::open_table;

/// Which unmatched rows an interval join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Matched pairs only.
    Inner,
    /// Matched pairs, and left rows that matched nothing.
    LeftOuter,
    /// Matched pairs, and right rows that matched nothing.
    RightOuter,
    /// Matched pairs, and the rows of either side that matched nothing.
    FullOuter,
}

impl JoinKind {
    fn left_outer(self) -> bool {
        matches!(self, JoinKind::LeftOuter | JoinKind::FullOuter)
    }

    fn right_outer(self) -> bool {
        matches!(self, JoinKind::RightOuter | JoinKind::FullOuter)
    }
}

/// A buffered row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row<T> {
    ts: i64,
    matched: bool,
    value: T,
}

/// Builds an output from a matched pair (both `Some`) or an unmatched row
/// (one side `None`); `None` emits nothing.
pub type JoinFn<L, R, O> = Arc<dyn Fn(Option<L>, Option<R>) -> Option<O> + Send + Sync>;

/// The interval join operator (see the module docs).
pub struct IntervalJoin<L, R, K, O> {
    name: String,
    left_key: Arc<dyn Fn(&L) -> K + Send + Sync>,
    right_key: Arc<dyn Fn(&R) -> K + Send + Sync>,
    lower: i64,
    upper: i64,
    kind: JoinKind,
    build: JoinFn<L, R, O>,
    left: Option<KeyedTable<K, Vec<Row<L>>>>,
    right: Option<KeyedTable<K, Vec<Row<R>>>>,
}

impl<L, R, K, O> Clone for IntervalJoin<L, R, K, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            left_key: self.left_key.clone(),
            right_key: self.right_key.clone(),
            lower: self.lower,
            upper: self.upper,
            kind: self.kind,
            build: self.build.clone(),
            left: None,
            right: None,
        }
    }
}

impl<L, R, K, O> IntervalJoin<L, R, K, O> {
    /// Joins left and right rows of one key with
    /// `left.ts + lower <= right.ts <= left.ts + upper` (ms; `lower <=
    /// upper`), emitting `build(left, right)`.
    pub fn new(
        left_key: Arc<dyn Fn(&L) -> K + Send + Sync>,
        right_key: Arc<dyn Fn(&R) -> K + Send + Sync>,
        lower: i64,
        upper: i64,
        kind: JoinKind,
        build: JoinFn<L, R, O>,
    ) -> Self {
        Self {
            name: String::new(),
            left_key,
            right_key,
            lower,
            upper,
            kind,
            build,
            left: None,
            right: None,
        }
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("interval join used before open")
}

fn no_event_time(name: &str) -> OperatorError {
    OperatorError::new(format!(
        "interval join `{name}`: a record without event time; give its source a \
         WatermarkStrategy (Stream::with_watermarks)"
    ))
}

impl<L, R, K, O> IntervalJoin<L, R, K, O>
where
    L: Clone + Serialize + DeserializeOwned + Send + 'static,
    R: Clone + Serialize + DeserializeOwned + Send + 'static,
    K: StateKey,
    O: Send + 'static,
{
    /// Emits every outer row of `key` whose interval closed at
    /// `watermark`, and drops every closed row from the state.
    fn expire(
        &mut self,
        key: &K,
        watermark: i64,
        out: &mut Collector<'_, O, Either<L, R>>,
    ) -> Result<(), OperatorError> {
        let (upper, lower, kind) = (self.upper, self.lower, self.kind);
        let build = &self.build;
        let left = self.left.as_mut().ok_or_else(not_open)?;
        expire_side(
            left,
            key,
            watermark,
            |ts| ts.saturating_add(upper),
            |v, closes| {
                if kind.left_outer() {
                    if let Some(o) = build(Some(v), None) {
                        out.emit_at(o, closes);
                    }
                }
            },
        )?;
        let right = self.right.as_mut().ok_or_else(not_open)?;
        expire_side(
            right,
            key,
            watermark,
            |ts| ts.saturating_sub(lower),
            |v, closes| {
                if kind.right_outer() {
                    if let Some(o) = build(None, Some(v)) {
                        out.emit_at(o, closes);
                    }
                }
            },
        )
    }
}

/// Drops the rows of `key` whose interval (closing at `closes(ts)`) the
/// watermark reached, handing each one that matched nothing to
/// `unmatched` with its closing time.
fn expire_side<K: StateKey, T: Clone + Serialize + DeserializeOwned>(
    table: &mut KeyedTable<K, Vec<Row<T>>>,
    key: &K,
    watermark: i64,
    closes: impl Fn(i64) -> i64,
    mut unmatched: impl FnMut(T, i64),
) -> Result<(), OperatorError> {
    // One lookup, and an absent key is not marked dirty; the rows are
    // kept in place, in order (no new vector per expiry).
    table.update_existing(key, |rows| {
        let Some(all) = rows.as_mut() else {
            return;
        };
        all.retain(|r| {
            let c = closes(r.ts);
            if c > watermark {
                return true;
            }
            if !r.matched {
                // Outer joins only; the row leaves the state right after.
                unmatched(r.value.clone(), c);
            }
            false
        });
        if all.is_empty() {
            *rows = None;
        }
    })?;
    Ok(())
}

/// A row arriving on one side (the "own" side; the other side is the one
/// it probes), with its interval: it pairs with the other side's rows at
/// `from..=to` and its own interval closes at `closes`.
struct Arrival {
    ts: i64,
    from: i64,
    to: i64,
    closes: i64,
    /// Record matches on the other side's rows (they have outer rows).
    mark_other: bool,
    /// This side has outer rows.
    outer: bool,
}

impl Arrival {
    /// Emits the pairs with the other side's buffered rows, then buffers
    /// the row with a timer at its close, or, when its interval already
    /// closed, emits its outer row if it matched nothing.
    #[allow(clippy::too_many_arguments)]
    fn handle<K, A, B, O, S>(
        &self,
        key: &K,
        value: A,
        own: &mut KeyedTable<K, Vec<Row<A>>>,
        other: &mut KeyedTable<K, Vec<Row<B>>>,
        pair: impl Fn(A, B) -> Option<O>,
        single: impl Fn(A) -> Option<O>,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError>
    where
        K: StateKey,
        A: Clone + Serialize + DeserializeOwned,
        B: Clone + Serialize + DeserializeOwned,
    {
        let (ts, from, to) = (self.ts, self.from, self.to);
        let mut matched = false;
        let mut probe = |row: &Row<B>, out: &mut Collector<'_, O, S>| {
            if row.ts >= from && row.ts <= to {
                matched = true;
                if let Some(o) = pair(value.clone(), row.value.clone()) {
                    out.emit_at(o, ts.max(row.ts));
                }
                true
            } else {
                false
            }
        };
        if self.mark_other {
            // Matches are recorded on the other side's rows (for their
            // outer rows).
            other.update(key, |rows| {
                for row in rows.iter_mut().flatten() {
                    if probe(row, out) {
                        row.matched = true;
                    }
                }
            })?;
        } else if let Some(rows) = other.get(key)? {
            // Read only: nothing is written back to the other table.
            for row in rows {
                probe(row, out);
            }
        }
        if self.closes <= out.watermark() {
            // No row of the other side that is not late can still match.
            if !matched && self.outer {
                if let Some(o) = single(value) {
                    out.emit_at(o, self.closes);
                }
            }
            return Ok(());
        }
        own.update(key, |rows| {
            rows.get_or_insert_with(Vec::new)
                .push(Row { ts, matched, value })
        })?;
        out.register_timer(TimeDomain::EventTime, self.closes, key)
    }
}

impl<L, R, K, O> TwoInputOperator<L, R, O, Either<L, R>> for IntervalJoin<L, R, K, O>
where
    L: Clone + Serialize + DeserializeOwned + Send + 'static,
    R: Clone + Serialize + DeserializeOwned + Send + 'static,
    K: StateKey,
    O: Send + 'static,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.name = ctx.name.clone();
        if self.lower > self.upper {
            return Err(OperatorError::new(format!(
                "interval join `{}`: lower bound {} ms above upper bound {} ms",
                self.name, self.lower, self.upper
            )));
        }
        self.left = Some(open_table(ctx, "left")?);
        self.right = Some(open_table(ctx, "right")?);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        let mut v: Vec<&mut dyn ManagedState> = Vec::new();
        if let Some(t) = self.left.as_mut() {
            v.push(t);
        }
        if let Some(t) = self.right.as_mut() {
            v.push(t);
        }
        v
    }

    fn process_left(
        &mut self,
        record: Record<L>,
        out: &mut Collector<'_, O, Either<L, R>>,
    ) -> Result<(), OperatorError> {
        let ta = record.timestamp;
        if ta == NO_TIMESTAMP {
            return Err(no_event_time(&self.name));
        }
        if ta <= out.watermark() {
            out.count_late(1);
            out.emit_side(Either::Left(record.value));
            return Ok(());
        }
        let key = (self.left_key)(&record.value);
        let build = &self.build;
        let arrival = Arrival {
            ts: ta,
            // right.ts in [ta + lower, ta + upper]
            from: ta.saturating_add(self.lower),
            to: ta.saturating_add(self.upper),
            closes: ta.saturating_add(self.upper),
            mark_other: self.kind.right_outer(),
            outer: self.kind.left_outer(),
        };
        let own = self.left.as_mut().ok_or_else(not_open)?;
        let other = self.right.as_mut().ok_or_else(not_open)?;
        arrival.handle(
            &key,
            record.value,
            own,
            other,
            |l, r| build(Some(l), Some(r)),
            |l| build(Some(l), None),
            out,
        )
    }

    fn process_right(
        &mut self,
        record: Record<R>,
        out: &mut Collector<'_, O, Either<L, R>>,
    ) -> Result<(), OperatorError> {
        let tb = record.timestamp;
        if tb == NO_TIMESTAMP {
            return Err(no_event_time(&self.name));
        }
        if tb <= out.watermark() {
            out.count_late(1);
            out.emit_side(Either::Right(record.value));
            return Ok(());
        }
        let key = (self.right_key)(&record.value);
        let build = &self.build;
        let arrival = Arrival {
            ts: tb,
            // left.ts in [tb - upper, tb - lower]
            from: tb.saturating_sub(self.upper),
            to: tb.saturating_sub(self.lower),
            closes: tb.saturating_sub(self.lower),
            mark_other: self.kind.left_outer(),
            outer: self.kind.right_outer(),
        };
        let own = self.right.as_mut().ok_or_else(not_open)?;
        let other = self.left.as_mut().ok_or_else(not_open)?;
        arrival.handle(
            &key,
            record.value,
            own,
            other,
            |r, l| build(Some(l), Some(r)),
            |r| build(None, Some(r)),
            out,
        )
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, O, Either<L, R>>,
    ) -> Result<(), OperatorError> {
        let key: K = timer.key()?;
        let watermark = out.watermark().max(timer.time);
        self.expire(&key, watermark, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_runtime::timers::{ProcessingClock, TimerService};
    use eddy_runtime::two_input::TwoInput;
    use eddy_runtime::{Operator, Output};

    type Row = (u32, i64);
    /// An output row and its event time.
    type Emitted = ((Option<Row>, Option<Row>), i64);
    type Op = TwoInput<IntervalJoin<Row, Row, u32, (Option<Row>, Option<Row>)>>;

    struct Harness {
        op: Op,
        timers: TimerService,
        clock: ProcessingClock,
        out: Output<(Option<Row>, Option<Row>), Either<Row, Row>>,
    }

    impl Harness {
        fn new(kind: JoinKind, lower: i64, upper: i64) -> Self {
            let mut op = TwoInput(IntervalJoin::new(
                Arc::new(|r: &Row| r.0),
                Arc::new(|r: &Row| r.0),
                lower,
                upper,
                kind,
                Arc::new(|l, r| Some((l, r))),
            ));
            op.open(&mut OperatorContext::for_test("join")).unwrap();
            Self {
                op,
                timers: TimerService::in_memory(),
                clock: ProcessingClock::new(),
                out: Output::default(),
            }
        }

        fn push(&mut self, v: Either<Row, Row>, watermark: i64) {
            let ts = match &v {
                Either::Left(r) | Either::Right(r) => r.1,
            };
            let mut c = Collector::new(&mut self.out, &mut self.timers, &self.clock, watermark);
            c.set_input(ts, 0);
            let rec = Record {
                value: v,
                timestamp: ts,
                created_ns: 0,
            };
            self.op.process(rec, &mut c).unwrap();
        }

        /// Advances the watermark: fires the due timers, as the task does.
        fn watermark(&mut self, w: i64) {
            while let Some(t) = self.timers.pop_due(TimeDomain::EventTime, w).unwrap() {
                let mut c = Collector::new(&mut self.out, &mut self.timers, &self.clock, w);
                c.set_input(t.time, 0);
                self.op.on_timer(&t, &mut c).unwrap();
            }
        }

        fn take(&mut self) -> Vec<Emitted> {
            self.out
                .main
                .drain(..)
                .map(|r| (r.value, r.timestamp))
                .collect()
        }

        fn buffered(&mut self) -> usize {
            let mut n = 0;
            let j = &mut self.op.0;
            j.left
                .as_mut()
                .unwrap()
                .for_each(|_, v| {
                    n += v.len();
                    Ok(())
                })
                .unwrap();
            j.right
                .as_mut()
                .unwrap()
                .for_each(|_, v| {
                    n += v.len();
                    Ok(())
                })
                .unwrap();
            n
        }
    }

    #[test]
    fn pairs_at_the_later_time_and_late_rows_to_the_side() {
        let mut h = Harness::new(JoinKind::Inner, -50, 50);
        h.push(Either::Left((1, 1_000)), 900);
        h.push(Either::Right((1, 1_005)), 900);
        h.push(Either::Right((2, 1_010)), 900);
        assert_eq!(
            h.take(),
            vec![((Some((1, 1_000)), Some((1, 1_005))), 1_005)]
        );
        // At or below the watermark: late, joins nothing.
        h.push(Either::Left((1, 1_010)), 1_010);
        assert!(h.take().is_empty());
        assert_eq!(h.out.late, 1);
        assert_eq!(h.out.side.len(), 1);
        assert_eq!(h.out.side[0].value, Either::Left((1, 1_010)));
    }

    #[test]
    fn outer_rows_when_their_interval_closes_and_state_drains() {
        let mut h = Harness::new(JoinKind::FullOuter, -10, 20);
        h.push(Either::Left((1, 1_000)), 0); // open until 1_020
        h.push(Either::Right((1, 1_015)), 0); // matches; open until 1_025
        h.push(Either::Right((1, 1_100)), 0); // open until 1_110
        h.push(Either::Left((3, 1_050)), 0); // open until 1_070
        assert_eq!(h.take().len(), 1);
        assert_eq!(h.buffered(), 4);
        h.watermark(1_019);
        assert!(h.take().is_empty(), "nothing closed yet");
        h.watermark(1_070);
        // The matched rows leave silently; key 3's left row is outer.
        assert_eq!(h.take(), vec![((Some((3, 1_050)), None), 1_070)]);
        assert_eq!(h.buffered(), 1);
        h.watermark(2_000);
        assert_eq!(h.take(), vec![((None, Some((1, 1_100))), 1_110)]);
        assert_eq!(h.buffered(), 0, "no row outlives its interval");
    }

    #[test]
    fn a_row_whose_interval_already_closed_is_not_buffered() {
        // right.ts in [left.ts - 30, left.ts - 20]: a left row's interval
        // closes 20 ms before its own time, so at watermark 990 a left row
        // at 1_000 can match only right rows already here.
        let mut h = Harness::new(JoinKind::LeftOuter, -30, -20);
        h.push(Either::Right((1, 975)), 900); // closes at 1_005
        h.push(Either::Left((1, 1_000)), 990); // matches; closes at 980 <= 990
        h.push(Either::Left((1, 1_100)), 990); // closes at 1_080: buffered
        assert_eq!(h.take(), vec![((Some((1, 1_000)), Some((1, 975))), 1_000)]);
        assert_eq!(h.buffered(), 2);
        h.watermark(1_080);
        assert_eq!(h.take(), vec![((Some((1, 1_100)), None), 1_080)]);
        assert_eq!(h.buffered(), 0);
    }
}
