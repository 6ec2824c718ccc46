//! The session window operator.
//!
//! State: per key, its open sessions (start, end, accumulator) in a
//! [`KeyedTable`]; per session one event-time timer at
//! `end - 1 + allowed lateness`, keyed by (key, start).
//! - A record at `ts` opens the session `[ts, ts + gap)` and merges with
//!   every open session of its key it overlaps (`a.start < b.end &&
//!   b.start < a.end`: records less than `gap` apart share a session, as in
//!   Spark); the merged session's
//!   accumulator is the merge of theirs ([`Aggregator::merge`]), their
//!   timers are replaced by the merged session's.
//! - A record that overlaps no open session and whose own session is
//!   already closed (`ts + gap - 1 + lateness <= watermark`) is late.
//! - Append mode emits each session once, when its timer fires; update mode
//!   emits the merged session at every change (a session merged into
//!   another is not retracted: its row is superseded by the merged one).

use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::record::NO_TIMESTAMP;
use eddy_runtime::{
    Collector, Operator, OperatorContext, OperatorError, Record, TimeDomain, Timer,
};
use serde::{Deserialize, Serialize};

use super::fixed::{no_event_time, not_open};
use super::{OutputMode, Window, WindowResult};
use crate::aggregate::{Aggregator, StateKey};
use crate::state::{declared, open_table};

/// One open session of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session<Acc> {
    /// Its window.
    pub window: Window,
    /// Its accumulator.
    pub acc: Acc,
}

/// Session windows with incremental aggregation.
pub struct SessionWindowAggregate<T, K, A: Aggregator<T>> {
    name: String,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    agg: A,
    gap: i64,
    lateness: i64,
    mode: OutputMode,
    table: Option<KeyedTable<K, Vec<Session<A::Acc>>>>,
}

impl<T, K, A: Aggregator<T>> Clone for SessionWindowAggregate<T, K, A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
            agg: self.agg.clone(),
            gap: self.gap,
            lateness: self.lateness,
            mode: self.mode,
            table: None,
        }
    }
}

impl<T, K, A: Aggregator<T>> SessionWindowAggregate<T, K, A> {
    /// Sessions of `gap_ms` per `key`, folded with `agg`.
    pub fn new(
        key: Arc<dyn Fn(&T) -> K + Send + Sync>,
        agg: A,
        gap_ms: i64,
        lateness_ms: i64,
        mode: OutputMode,
    ) -> Self {
        Self {
            name: String::new(),
            key,
            agg,
            gap: gap_ms.max(1),
            lateness: lateness_ms.max(0),
            mode,
            table: None,
        }
    }

    fn cleanup(&self, w: &Window) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }
}

/// Whether two sessions overlap. Strictly: a session that merely ends
/// where a record's begins may already be closed by a watermark that is
/// still in flight, and the answer must not depend on that timing.
fn touches(a: &Window, b: &Window) -> bool {
    a.start < b.end && b.start < a.end
}

impl<T, K, A> Operator<T, WindowResult<K, A::Out>, T> for SessionWindowAggregate<T, K, A>
where
    T: Clone + Send + 'static,
    K: StateKey,
    A: Aggregator<T>,
    A::Acc: Clone,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.name = ctx.name.clone();
        self.table = Some(open_table(ctx, "sessions")?);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }

    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, WindowResult<K, A::Out>, T>,
    ) -> Result<(), OperatorError> {
        let ts = record.timestamp;
        if ts == NO_TIMESTAMP {
            return Err(no_event_time(&self.name));
        }
        let watermark = out.watermark();
        let key = (self.key)(&record.value);
        let own = Window {
            start: ts,
            end: ts.saturating_add(self.gap),
        };
        let mut sessions = self
            .table
            .as_mut()
            .ok_or_else(not_open)?
            .get(&key)?
            .cloned()
            .unwrap_or_default();
        let touching = sessions.iter().any(|s| touches(&s.window, &own));
        if !touching && self.cleanup(&own) <= watermark {
            out.count_late(1);
            out.emit_side(record.value);
            return Ok(());
        }
        let mut merged = Session {
            window: own,
            acc: self.agg.create(),
        };
        self.agg.add(&mut merged.acc, &record.value);
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for s in sessions.drain(..) {
            if touches(&s.window, &own) {
                out.delete_timer(
                    TimeDomain::EventTime,
                    self.cleanup(&s.window),
                    &(&key, s.window.start),
                )?;
                merged.window.start = merged.window.start.min(s.window.start);
                merged.window.end = merged.window.end.max(s.window.end);
                if !self.agg.merge(&mut merged.acc, s.acc) {
                    return Err(OperatorError::new(format!(
                        "session window `{}`: its aggregator cannot merge accumulators \
                         (implement Aggregator::merge)",
                        self.name
                    )));
                }
            } else {
                kept.push(s);
            }
        }
        out.register_timer(
            TimeDomain::EventTime,
            self.cleanup(&merged.window),
            &(&key, merged.window.start),
        )?;
        if self.mode == OutputMode::Update {
            out.emit_at(
                WindowResult {
                    key: key.clone(),
                    window: merged.window,
                    value: self.agg.result(&merged.acc),
                },
                merged.window.max_timestamp(),
            );
        }
        kept.push(merged);
        kept.sort_by_key(|s| s.window.start);
        self.table.as_mut().ok_or_else(not_open)?.put(key, kept)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, WindowResult<K, A::Out>, T>,
    ) -> Result<(), OperatorError> {
        let (key, start): (K, i64) = timer.key()?;
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let Some(mut sessions) = table.get(&key)?.cloned() else {
            return Ok(());
        };
        let Some(i) = sessions.iter().position(|s| s.window.start == start) else {
            return Ok(());
        };
        let s = sessions.remove(i);
        if self.mode == OutputMode::Append {
            out.emit_at(
                WindowResult {
                    key: key.clone(),
                    window: s.window,
                    value: self.agg.result(&s.acc),
                },
                s.window.max_timestamp(),
            );
        }
        if sessions.is_empty() {
            table.remove(&key)?;
        } else {
            table.put(key, sessions)?;
        }
        Ok(())
    }
}
