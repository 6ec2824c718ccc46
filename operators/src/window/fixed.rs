//! The tumbling and sliding window operator.
//!
//! State: one [`KeyedTable`] per open window, named after its start
//! (`window@<start>`), holding one accumulator per key, and one
//! event-time timer per window start at `end - 1 + allowed lateness`
//! (every key's window of a start closes at the same time).
//! - A record is added to each of its windows that is not yet closed
//!   (`end - 1 + lateness > watermark`); a record no window takes is late:
//!   counted, and sent to the side output.
//! - Append mode: when the window's timer fires (the watermark passed its
//!   end plus the lateness) each key's final result is emitted once.
//!   Update mode: every change emits the window's new result (upsert by
//!   key and window); the timer only removes the state.
//! - Closing a window empties its table at once
//!   ([`KeyedTable::take_all`]): one pass over that window's entries
//!   alone (W3's result p99 was 2.4 ms with a random lookup per key and
//!   1.8 ms with a pass over one table holding every window), and its
//!   backend entries go with one prefix delete at the next flush instead
//!   of a delete per key. The results leave [`FIRE_SLICE`] per timer
//!   call: the timer is registered again while results remain, so the
//!   runtime sends each slice and may yield between slices instead of
//!   holding its thread for all of a window's keys.
//! - The runtime flushes the tables (a closed window's until its delete is
//!   written) and the timers at markers and restores both with the
//!   watermark, so a recovered query fires each window once. On recovery
//!   the open windows are found by one scan of the restored state.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState, SharedBackend, StateBackend};
use eddy_runtime::record::NO_TIMESTAMP;
use eddy_runtime::{
    Collector, Operator, OperatorContext, OperatorError, Record, TimeDomain, Timer,
};

use super::{OutputMode, Window, WindowResult, WindowSpec};
use crate::aggregate::{Aggregator, StateKey};

/// Tumbling or sliding windows with incremental aggregation.
pub struct FixedWindowAggregate<T, K, A: Aggregator<T>> {
    name: String,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    agg: A,
    spec: WindowSpec,
    lateness: i64,
    mode: OutputMode,
    /// Opens the window tables; set in `open`.
    backend: Option<SharedBackend>,
    cache_capacity: usize,
    /// One table per open window, by window start.
    open: BTreeMap<i64, KeyedTable<K, A::Acc>>,
    /// Tables of closed windows, declared until their delete is written.
    retired: Vec<KeyedTable<K, A::Acc>>,
    /// A drained table, reused for the next window (its cache allocated).
    spare: Option<KeyedTable<K, A::Acc>>,
    /// Results of a closing window not yet emitted: (key, window start,
    /// result).
    closing: Vec<(K, i64, A::Out)>,
    windows: Vec<Window>,
}

/// Keys of a window closed per timer call (see the module docs).
pub const FIRE_SLICE: usize = 512;

/// The names of the window tables start with this, then the start.
const TABLE: &str = "window@";

fn table_name(start: i64) -> String {
    format!("{TABLE}{start}")
}

/// The window starts with state in `backend`: one scan of the window
/// tables' entries (recovery only).
fn starts_held(backend: &SharedBackend) -> Result<Vec<i64>, OperatorError> {
    let mut starts: Vec<i64> = Vec::new();
    let mut bad = None;
    backend
        .scan_prefix(TABLE.as_bytes(), &mut |k, _| {
            let rest = &k[TABLE.len()..];
            let digits = rest.split(|b| *b == 0).next().unwrap_or_default();
            match std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
            {
                Some(start) if starts.last() != Some(&start) => starts.push(start),
                Some(_) => {}
                None => bad = Some(String::from_utf8_lossy(k).into_owned()),
            }
            Ok(())
        })
        .map_err(OperatorError::from)?;
    if let Some(key) = bad {
        return Err(OperatorError::new(format!(
            "window state: a key `{key}` that names no window start"
        )));
    }
    // One table's entries are contiguous (its prefix ends in a 0 byte),
    // so each start appears once; in text order, which the caller's map
    // puts in numeric order.
    Ok(starts)
}

/// Refuses a checkpoint whose windows are in one table keyed by (key,
/// start), as builds before per-window tables wrote them.
fn refuse_old_layout(backend: &SharedBackend) -> Result<(), OperatorError> {
    let mut old = false;
    let _ = backend.scan_prefix(b"window\0", &mut |_, _| {
        old = true;
        Err(eddy_checkpoint::Error::Backend("stop".into()))
    });
    if old {
        return Err(OperatorError::new(
            "window state written by an earlier build (one table keyed by key and window \
             start) cannot be restored by this one; start the query from a fresh checkpoint \
             directory",
        ));
    }
    Ok(())
}

impl<T, K, A: Aggregator<T>> Clone for FixedWindowAggregate<T, K, A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
            agg: self.agg.clone(),
            spec: self.spec,
            lateness: self.lateness,
            mode: self.mode,
            backend: None,
            cache_capacity: self.cache_capacity,
            open: BTreeMap::new(),
            retired: Vec::new(),
            spare: None,
            closing: Vec::new(),
            windows: Vec::new(),
        }
    }
}

impl<T, K, A: Aggregator<T>> FixedWindowAggregate<T, K, A> {
    /// Windows `spec` (tumbling or sliding) over `key`, folded with `agg`.
    pub fn new(
        key: Arc<dyn Fn(&T) -> K + Send + Sync>,
        agg: A,
        spec: WindowSpec,
        lateness_ms: i64,
        mode: OutputMode,
    ) -> Self {
        Self {
            name: String::new(),
            key,
            agg,
            spec,
            lateness: lateness_ms.max(0),
            mode,
            backend: None,
            cache_capacity: eddy_checkpoint::table::DEFAULT_CACHE_CAPACITY,
            open: BTreeMap::new(),
            retired: Vec::new(),
            spare: None,
            closing: Vec::new(),
            windows: Vec::new(),
        }
    }
}

/// The error for a record that has no event time.
pub(crate) fn no_event_time(name: &str) -> OperatorError {
    OperatorError::new(format!(
        "window `{name}`: a record without event time; give its source a WatermarkStrategy \
         (Stream::with_watermarks)"
    ))
}

pub(crate) fn not_open() -> OperatorError {
    OperatorError::new("window operator used before open")
}

impl<T, K, A> Operator<T, WindowResult<K, A::Out>, T> for FixedWindowAggregate<T, K, A>
where
    T: Clone + Send + 'static,
    K: StateKey,
    A: Aggregator<T>,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.name = ctx.name.clone();
        self.cache_capacity = ctx.state_cache_capacity;
        let backend = ctx.shared_state_backend();
        refuse_old_layout(&backend)?;
        // Recovery: a table for each window with restored state.
        self.open.clear();
        self.retired.clear();
        self.spare = None;
        for start in starts_held(&backend)? {
            let table = KeyedTable::new(Box::new(backend.clone()), &table_name(start))
                .with_cache_capacity(self.cache_capacity);
            self.open.insert(start, table);
        }
        self.backend = Some(backend);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        // A closed window's table leaves once its delete is written (one
        // is kept for reuse).
        let mut i = 0;
        while i < self.retired.len() {
            if self.retired[i].is_drained() {
                let t = self.retired.swap_remove(i);
                self.spare.get_or_insert(t);
            } else {
                i += 1;
            }
        }
        // The oldest window first: the one with the most to flush.
        self.open
            .values_mut()
            .chain(self.retired.iter_mut())
            .map(|t| t as &mut dyn ManagedState)
            .collect()
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
        self.spec.assign(ts, &mut self.windows);
        let agg = &self.agg;
        let update = self.mode == OutputMode::Update;
        let mut placed = false;
        for w in &self.windows {
            let cleanup = w.max_timestamp().saturating_add(self.lateness);
            if cleanup <= watermark {
                continue; // this window is closed
            }
            placed = true;
            let table = match self.open.entry(w.start) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let backend = self.backend.as_ref().ok_or_else(not_open)?;
                    out.register_timer(TimeDomain::EventTime, cleanup, &w.start)?;
                    // A window opens once: a start the watermark passed
                    // never takes a record again, and the starts with
                    // restored state were opened in `open`.
                    let name = table_name(w.start);
                    let reused = self
                        .spare
                        .take()
                        .and_then(|mut t| t.reuse_empty(&name).then_some(t));
                    let table = reused.unwrap_or_else(|| {
                        KeyedTable::new_empty(Box::new(backend.clone()), &name)
                            .with_cache_capacity(self.cache_capacity)
                    });
                    e.insert(table)
                }
            };
            let result = table.update(&key, |acc| {
                let a = acc.get_or_insert_with(|| agg.create());
                agg.add(a, &record.value);
                update.then(|| agg.result(a))
            })?;
            if let Some(value) = result {
                out.emit_at(
                    WindowResult {
                        key: key.clone(),
                        window: *w,
                        value,
                    },
                    w.max_timestamp(),
                );
            }
        }
        if !placed {
            out.count_late(1);
            out.emit_side(record.value);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, WindowResult<K, A::Out>, T>,
    ) -> Result<(), OperatorError> {
        let start: i64 = timer.key()?;
        if self.closing.is_empty() {
            if let Some(mut table) = self.open.remove(&start) {
                let closing = &mut self.closing;
                let agg = &self.agg;
                if self.mode == OutputMode::Append {
                    table
                        .take_all(|key, acc| closing.push((key.clone(), start, agg.result(acc))))?;
                } else {
                    table.take_all(|_, _| {})?;
                }
                self.retired.push(table);
            }
        }
        let rest = self.closing.len().saturating_sub(FIRE_SLICE);
        for (key, start, value) in self.closing.drain(rest..) {
            let window = self.spec.window_at(start);
            out.emit_at(WindowResult { key, window, value }, window.max_timestamp());
        }
        if rest > 0 {
            // The rest in the next call (due at once).
            out.register_timer(TimeDomain::EventTime, timer.time, &start)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Count;
    use eddy_runtime::timers::ProcessingClock;
    use eddy_runtime::{Output, TimerService};

    /// Windows the watermark passed leave no state and no timer behind:
    /// state stays bounded on an unbounded stream.
    #[test]
    fn closed_windows_leave_no_state() {
        let mut op = FixedWindowAggregate::new(
            Arc::new(|v: &u64| *v % 3),
            Count,
            WindowSpec::Tumbling { size: 10 },
            5,
            OutputMode::Append,
        );
        let mut ctx = OperatorContext::for_test("w");
        Operator::<u64, WindowResult<u64, u64>, u64>::open(&mut op, &mut ctx).unwrap();
        let mut out: Output<WindowResult<u64, u64>, u64> = Output::default();
        let mut timers = TimerService::in_memory();
        let clock = ProcessingClock::new();
        let fire_upto = |op: &mut FixedWindowAggregate<u64, u64, Count>,
                         out: &mut Output<WindowResult<u64, u64>, u64>,
                         timers: &mut TimerService,
                         w: i64| {
            while let Some(t) = timers.pop_due(TimeDomain::EventTime, w).unwrap() {
                let mut c = Collector::new(out, timers, &clock, w);
                op.on_timer(&t, &mut c).unwrap();
            }
        };
        for ts in 0..100i64 {
            let mut c = Collector::new(&mut out, &mut timers, &clock, NO_TIMESTAMP);
            let mut r = Record::new(ts as u64);
            r.timestamp = ts;
            c.set_input(ts, 0);
            op.process(r, &mut c).unwrap();
        }
        assert_eq!(timers.len(), 10, "one timer per window");
        fire_upto(&mut op, &mut out, &mut timers, 50);
        // Entries left in the open windows' tables.
        let left = |op: &mut FixedWindowAggregate<u64, u64, Count>| {
            let mut n = 0;
            for t in op.open.values_mut() {
                t.for_each(|_, _| {
                    n += 1;
                    Ok(())
                })
                .unwrap();
            }
            n
        };
        // Windows with end - 1 + 5 <= 50 fired: ends 10, 20, 30, 40, per key.
        assert_eq!(out.main.len(), 12);
        assert_eq!(left(&mut op), 18);
        assert_eq!(op.open.len(), 6, "one table per open window");
        // The closed windows' tables never wrote to the backend: nothing
        // to delete, they leave at once (no leak without checkpoints).
        let flush_all = |op: &mut FixedWindowAggregate<u64, u64, Count>| {
            let tables = Operator::<u64, WindowResult<u64, u64>, u64>::tables(op);
            let n = tables.len();
            for t in tables {
                t.begin_flush().unwrap();
                assert!(t.flush_step(usize::MAX).unwrap());
            }
            n
        };
        assert_eq!(flush_all(&mut op), 6, "the open windows' tables");
        fire_upto(&mut op, &mut out, &mut timers, i64::MAX);
        assert_eq!(out.main.len(), 30);
        assert_eq!(left(&mut op), 0, "no state left");
        assert!(op.open.is_empty(), "no open window left");
        assert!(timers.is_empty(), "no timer left");
        // Those wrote at the flush: they stay declared until the next
        // flush writes their deletes, then leave.
        assert_eq!(flush_all(&mut op), 6);
        assert_eq!(flush_all(&mut op), 0);
        let total: u64 = out.main.iter().map(|r| r.value.value).sum();
        assert_eq!(total, 100);
    }

    fn op() -> FixedWindowAggregate<u64, u64, Count> {
        FixedWindowAggregate::new(
            Arc::new(|v: &u64| *v % 3),
            Count,
            WindowSpec::Tumbling { size: 10 },
            0,
            OutputMode::Append,
        )
    }

    /// Recovery: the open windows are found in the restored state (one
    /// table per start, including negative starts, which sort apart from
    /// positive ones as text), and closing them emits their counts.
    #[test]
    fn restored_windows_are_found_and_closed() {
        let mut first = op();
        let mut ctx = OperatorContext::for_test("w");
        let backend = ctx.shared_state_backend();
        Operator::<u64, WindowResult<u64, u64>, u64>::open(&mut first, &mut ctx).unwrap();
        let mut out: Output<WindowResult<u64, u64>, u64> = Output::default();
        let mut timers = TimerService::in_memory();
        let clock = ProcessingClock::new();
        for ts in [-15i64, -5, 3, 4, 25] {
            let mut c = Collector::new(&mut out, &mut timers, &clock, NO_TIMESTAMP);
            let mut r = Record::new(ts.unsigned_abs());
            r.timestamp = ts;
            c.set_input(ts, 0);
            first.process(r, &mut c).unwrap();
        }
        for t in Operator::<u64, WindowResult<u64, u64>, u64>::tables(&mut first) {
            t.begin_flush().unwrap();
            assert!(t.flush_step(usize::MAX).unwrap());
        }
        // A new instance over the same state, as after a restart.
        let mut second = op();
        let mut ctx = OperatorContext::for_test_over("w", backend);
        Operator::<u64, WindowResult<u64, u64>, u64>::open(&mut second, &mut ctx).unwrap();
        assert_eq!(
            second.open.keys().copied().collect::<Vec<_>>(),
            vec![-20, -10, 0, 20]
        );
        // The restored timers (the runtime restores them with the state).
        let mut timers = TimerService::in_memory();
        for start in [-20i64, -10, 0, 20] {
            let mut c = Collector::new(&mut out, &mut timers, &clock, NO_TIMESTAMP);
            c.register_timer(TimeDomain::EventTime, start + 9, &start)
                .unwrap();
        }
        while let Some(t) = timers.pop_due(TimeDomain::EventTime, i64::MAX).unwrap() {
            let mut c = Collector::new(&mut out, &mut timers, &clock, i64::MAX);
            second.on_timer(&t, &mut c).unwrap();
        }
        let mut got: Vec<(i64, u64, u64)> = out
            .main
            .iter()
            .map(|r| (r.value.window.start, r.value.key, r.value.value))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![(-20, 0, 1), (-10, 2, 1), (0, 0, 1), (0, 1, 1), (20, 1, 1)]
        );
    }

    /// State in the layout of builds before per-window tables is refused
    /// with an error that says so, not silently ignored.
    #[test]
    fn window_state_of_an_earlier_layout_is_refused() {
        let mut ctx = OperatorContext::for_test("w");
        let mut backend = ctx.shared_state_backend();
        backend
            .write_batch(vec![eddy_checkpoint::WriteOp::Put(
                b"window\0\x01".to_vec(),
                b"x".to_vec(),
            )])
            .unwrap();
        let err = Operator::<u64, WindowResult<u64, u64>, u64>::open(&mut op(), &mut ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("earlier build"), "{err}");
    }
}
