//! The keyed process operator driven directly, as its task drives it:
//! timeouts, slots removed when empty, TTL on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use eddy_runtime::record::Timestamp;
use eddy_runtime::timers::ProcessingClock;
use eddy_runtime::{
    Collector, Operator, OperatorContext, OperatorError, Output, Record, TimeDomain, TimerService,
};

use super::*;

type In = (String, &'static str);

struct Harness<F: KeyedProcessFunction<In, String>> {
    op: KeyedProcess<In, String, F>,
    timers: TimerService,
    clock: ProcessingClock,
    out: Output<F::Out>,
    watermark: Timestamp,
}

impl<F: KeyedProcessFunction<In, String>> Harness<F> {
    fn new(f: F) -> Self {
        let mut op = KeyedProcess::new(Arc::new(|r: &In| r.0.clone()), f);
        op.open(&mut OperatorContext::for_test("process")).unwrap();
        Self {
            op,
            timers: TimerService::in_memory(),
            clock: ProcessingClock::new(),
            out: Output::default(),
            watermark: i64::MIN,
        }
    }

    fn record(&mut self, key: &str, what: &'static str, ts: Timestamp) {
        let mut c = Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
        c.set_input(ts, 0);
        let mut r = Record::new((key.to_string(), what));
        r.timestamp = ts;
        self.op.process(r, &mut c).unwrap();
    }

    fn fire(&mut self, domain: TimeDomain, upto: Timestamp) {
        while let Some(t) = self.timers.pop_due(domain, upto).unwrap() {
            let mut c =
                Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
            c.set_input(t.time, 0);
            self.op.on_timer(&t, &mut c).unwrap();
        }
    }

    fn watermark(&mut self, w: Timestamp) {
        self.watermark = w;
        self.fire(TimeDomain::EventTime, w);
    }

    fn emitted(&mut self) -> Vec<F::Out> {
        self.out.main.drain(..).map(|r| r.value).collect()
    }

    fn keys(&mut self) -> Vec<String> {
        let mut keys = Vec::new();
        self.op
            .table_mut()
            .unwrap()
            .for_each(|k, _| {
                keys.push(k);
                Ok(())
            })
            .unwrap();
        keys
    }
}

/// `set`: timeout 100 ms of event time after the record; `keep`: state
/// only (which, by Spark's rule, clears the timeout); on timeout emits
/// `(key, time)`.
#[derive(Clone)]
struct Timeouts;

impl KeyedProcessFunction<In, String> for Timeouts {
    type State = ValueState<u64>;
    type Out = (String, Timestamp);

    fn process(
        &mut self,
        (_, what): In,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        match what {
            "set" => ctx.set_timeout_timestamp(ctx.timestamp() + 100),
            "keep" => {
                ctx.state_mut().set(1);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_timeout(
        &mut self,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        assert!(ctx.has_timed_out() && ctx.timeout().is_none());
        let out = (ctx.key().clone(), ctx.timestamp());
        ctx.emit(out);
        Ok(())
    }
}

#[test]
fn a_new_timeout_replaces_the_old_one_and_a_record_without_one_clears_it() {
    let mut h = Harness::new(Timeouts);
    h.record("a", "set", 0);
    h.record("a", "set", 50); // replaces the timeout at 100 by 150
    assert_eq!(h.timers.len(), 1);
    h.watermark(120);
    assert_eq!(h.emitted(), vec![], "the replaced timeout does not fire");
    h.watermark(150);
    assert_eq!(h.emitted(), vec![("a".to_string(), 150)]);
    h.record("b", "set", 200);
    h.record("b", "other", 210); // no new timeout: the old one is cleared
    h.watermark(1_000);
    assert_eq!(h.emitted(), vec![]);
    assert!(h.timers.is_empty());
    assert!(h.keys().is_empty(), "no state, no timeout: no slot");
    // State without a timeout stays; the timeout of a key with state
    // leaves the state.
    h.record("c", "keep", 1_100);
    h.record("d", "set", 1_100);
    h.watermark(2_000);
    assert_eq!(h.emitted(), vec![("d".to_string(), 1_200)]);
    assert_eq!(h.keys(), vec!["c".to_string()]);
}

/// Counts per key; `clear` clears the state; a timer at the record's time
/// plus 10 emits the count.
#[derive(Clone)]
struct CountWithTimer;

impl KeyedProcessFunction<In, String> for CountWithTimer {
    type State = MapState<String, u64>;
    type Out = (String, u64);

    fn process(
        &mut self,
        (_, what): In,
        ctx: &mut ProcessContext<'_, '_, String, MapState<String, u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        if what == "clear" {
            ctx.clear_state();
            return Ok(());
        }
        *ctx.state_mut().entry(what.to_string()).or_default() += 1;
        ctx.register_event_time_timer(ctx.timestamp() + 10)
    }

    fn on_timer(
        &mut self,
        timer: FiredTimer,
        ctx: &mut ProcessContext<'_, '_, String, MapState<String, u64>, Self::Out>,
    ) -> Result<(), OperatorError> {
        assert_eq!(timer.domain, TimeDomain::EventTime);
        let total = ctx.state().map_or(0, |m| m.iter().map(|(_, n)| n).sum());
        let key = ctx.key().clone();
        ctx.emit((key, total));
        Ok(())
    }
}

#[test]
fn timers_of_a_key_see_its_state_and_cleared_state_frees_the_slot() {
    let mut h = Harness::new(CountWithTimer);
    h.record("a", "x", 0);
    h.record("a", "y", 0); // the same timer: registered once
    h.record("b", "x", 5);
    assert_eq!(h.timers.len(), 2);
    h.watermark(10);
    assert_eq!(h.emitted(), vec![("a".to_string(), 2)]);
    h.record("a", "clear", 20);
    h.watermark(100);
    assert_eq!(h.emitted(), vec![("b".to_string(), 1)]);
    assert_eq!(h.keys(), vec!["b".to_string()], "a's slot is gone");
}

/// Writes state on every record.
#[derive(Clone)]
struct Touch;

impl KeyedProcessFunction<In, String> for Touch {
    type State = ValueState<u64>;
    type Out = u64;

    fn process(
        &mut self,
        _v: In,
        ctx: &mut ProcessContext<'_, '_, String, ValueState<u64>, u64>,
    ) -> Result<(), OperatorError> {
        let n = ctx.state_mut().get_or_insert_with(|| 0);
        *n += 1;
        let n = *n;
        ctx.emit(n);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn state_ttl_removes_the_slot_without_input_and_writes_refresh_it() {
    let mut h = Harness::new(Touch.with_state_ttl(Duration::from_secs(1)));
    h.record("a", "", 0);
    h.record("b", "", 0);
    tokio::time::advance(Duration::from_millis(600)).await;
    h.record("a", "", 0); // a's deadline moves to 1.6 s
    assert_eq!(h.timers.len(), 2, "one TTL timer per key");
    tokio::time::advance(Duration::from_millis(500)).await;
    h.fire(TimeDomain::ProcessingTime, h.clock.now_ms());
    assert_eq!(h.keys(), vec!["a".to_string()], "b expired with no input");
    tokio::time::advance(Duration::from_millis(600)).await;
    h.fire(TimeDomain::ProcessingTime, h.clock.now_ms());
    assert!(h.keys().is_empty() && h.timers.is_empty());
    h.record("a", "", 0);
    assert_eq!(h.emitted(), vec![1, 1, 2, 1], "a starts over");
}
