//! The anomaly rules of `eddy demo iot` and what they emit.
//!
//! | rule | input | fires when | aimed at |
//! | --- | --- | --- | --- |
//! | `threshold` | a sensor's 1 s window | its max or min is past its kind's limit in the threshold table | spikes |
//! | `zscore` | a sensor's 1 s window | its mean is more than [`Z_LIMIT`] standard deviations from the sensor's own running mean | drifts |
//! | `stuck` | every reading | [`STUCK_REPEATS`] readings in a row with the same value | stuck sensors |
//! | `silence` | an event-time timer | no reading for [`SILENCE_MS`] of event time | dead sensors |
//!
//! Every rule decides from the input alone, never from when watermarks or
//! batches happen to arrive, so a run, a rerun and a run killed and
//! recovered any number of times commit the same alerts (see
//! [`Health`] for the silence rule, the one where that takes care).

use serde::{Deserialize, Serialize};

use super::decimal::push_fixed;
use super::fleet::{Reading, SensorKind};
use eddy::prelude::*;
use eddy::runtime::record::Timestamp;

/// Stuck rule: this many identical readings in a row.
pub const STUCK_REPEATS: u32 = 20;
/// Silence rule: this much event time without a reading (the fleet's
/// scale, 20 reporting periods; [`Health::silence_ms`]).
pub const SILENCE_MS: i64 = 2_000;
/// Z-score rule: the limit on |z|.
pub const Z_LIMIT: f64 = 7.0;
/// Z-score rule: windows a sensor needs before it is judged.
pub const Z_MIN_WINDOWS: u32 = 10;
/// Z-score rule: windows further than this many deviations out are not
/// learned.
pub const Z_LEARN: f64 = 3.0;
/// Z-score rule: the weight of a new window in the running statistics
/// (after the first `1 / Z_ALPHA` windows, which weigh equally).
pub const Z_ALPHA: f64 = 0.02;
/// Z-score rule: windows with fewer readings are not judged.
pub const Z_MIN_READINGS: u64 = 5;

/// Which rule raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rule {
    /// Window max or min past the sensor kind's limit.
    Threshold,
    /// Window mean far from the sensor's running statistics.
    ZScore,
    /// The same value again and again.
    Stuck,
    /// No reading for a while.
    Silence,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 4] = [Rule::Threshold, Rule::ZScore, Rule::Stuck, Rule::Silence];

    /// Its name, as written in the alert files.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Threshold => "threshold",
            Rule::ZScore => "zscore",
            Rule::Stuck => "stuck",
            Rule::Silence => "silence",
        }
    }

    /// The rule of `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// An alert: a rule fired for a sensor at an event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The event time the rule could decide at (the end of a window, the
    /// reading that completed a run, the end of a silence), ms.
    pub ts: Timestamp,
    /// The sensor.
    pub sensor: u32,
    /// The rule.
    pub rule: Rule,
    /// The evidence: the value past the limit, the z-score, the repeated
    /// value or the last value heard.
    pub value: f64,
}

impl Alert {
    /// Its line in the alert files: `ts,sensor,rule,value`.
    pub fn line(&self) -> String {
        let mut s = format!("{},{},{},", self.ts, self.sensor, self.rule.name());
        push_fixed(&mut s, self.value, 3);
        s
    }

    /// The alert of a line written by [`line`](Self::line).
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split(',');
        let ts = f.next()?.parse().ok()?;
        let sensor = f.next()?.parse().ok()?;
        let rule = Rule::parse(f.next()?)?;
        let value = f.next()?.parse().ok()?;
        f.next().is_none().then_some(Self {
            ts,
            sensor,
            rule,
            value,
        })
    }
}

/// The aggregates of one sensor's window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Readings.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
}

impl Stats {
    /// The mean value.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Count, min, max and sum (hence mean) per window.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowStats;

impl Aggregator<Reading> for WindowStats {
    type Acc = Stats;
    type Out = Stats;
    fn create(&self) -> Stats {
        Stats {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }
    fn add(&self, acc: &mut Stats, r: &Reading) {
        acc.count += 1;
        acc.min = acc.min.min(r.value);
        acc.max = acc.max.max(r.value);
        acc.sum += r.value;
    }
    fn result(&self, acc: &Stats) -> Stats {
        *acc
    }
}

/// A sensor's window: `(sensor, window)` with its aggregates.
pub type SensorWindow = WindowResult<u32, Stats>;

/// The line of a window in the window files:
/// `sensor,window start,count,min,max,mean`.
pub fn window_line(w: &SensorWindow) -> String {
    let mut s = format!("{},{},{},", w.key, w.window.start, w.value.count);
    push_fixed(&mut s, w.value.min, 3);
    s.push(',');
    push_fixed(&mut s, w.value.max, 3);
    s.push(',');
    push_fixed(&mut s, w.value.mean(), 4);
    s
}

/// The line of a late reading in the late-reading files: `sensor,ts,value`.
pub fn late_line(r: &Reading) -> String {
    let mut s = format!("{},{},", r.sensor, r.ts);
    push_fixed(&mut s, r.value, 3);
    s
}

/// One row of the threshold table: the healthy range of a sensor kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// The kind.
    pub kind: SensorKind,
    /// Values below are anomalous.
    pub low: f64,
    /// Values above are anomalous.
    pub high: f64,
}

/// The threshold table: per kind, 8 noise sigmas past the healthy range
/// (machine spread and daily cycle included).
pub fn threshold_table() -> Vec<Limits> {
    SensorKind::ALL
        .into_iter()
        .map(|kind| {
            let p = kind.profile();
            let margin = p.machine_spread + p.daily_amplitude + 8.0 * p.noise_sigma;
            Limits {
                kind,
                low: p.base - margin,
                high: p.base + margin,
            }
        })
        .collect()
}

/// The threshold rule on one window and its kind's limits (none: no rule).
pub fn threshold_alert(w: &SensorWindow, limits: Option<&Limits>) -> Option<Alert> {
    let l = limits?;
    let value = if w.value.max > l.high {
        w.value.max
    } else if w.value.min < l.low {
        w.value.min
    } else {
        return None;
    };
    Some(Alert {
        ts: w.window.max_timestamp(),
        sensor: w.key,
        rule: Rule::Threshold,
        value,
    })
}

/// Running statistics of a sensor's window means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// Windows learned.
    pub n: u32,
    /// Their (exponentially weighted) mean.
    pub mean: f64,
    /// Their (exponentially weighted) variance.
    pub var: f64,
}

impl Running {
    /// Judges the window mean `x`: its z-score when it is past
    /// [`Z_LIMIT`] (once [`Z_MIN_WINDOWS`] are learned). A window within
    /// [`Z_LEARN`] deviations is learned; one further out is not, so an
    /// anomaly — a drift above all — neither drags the mean along nor
    /// inflates the deviation it is measured with. `floor` bounds the
    /// deviation from below.
    pub fn judge(&mut self, x: f64, floor: f64) -> Option<f64> {
        if self.n >= Z_MIN_WINDOWS {
            let z = (x - self.mean) / self.var.sqrt().max(floor);
            if z.abs() > Z_LIMIT {
                return Some(z);
            }
            if z.abs() > Z_LEARN {
                return None;
            }
        }
        self.n = self.n.saturating_add(1);
        let alpha = (1.0 / self.n as f64).max(Z_ALPHA);
        let delta = x - self.mean;
        self.mean += alpha * delta;
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta);
        None
    }
}

/// The z-score rule, a keyed process function over a sensor's windows:
/// each window's mean is compared with the running mean and deviation of
/// the sensor's earlier normal windows ([`Running::judge`]); past
/// [`Z_LIMIT`] it raises an alert. The deviation is floored at the noise
/// the sensor kind is specified with, for a mean of the window's readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZScore;

impl KeyedProcessFunction<SensorWindow, u32> for ZScore {
    type State = Running;
    type Out = Alert;

    fn process(
        &mut self,
        w: SensorWindow,
        ctx: &mut ProcessContext<'_, '_, u32, Running, Alert>,
    ) -> Result<(), OperatorError> {
        if w.value.count < Z_MIN_READINGS {
            return Ok(());
        }
        // The deviation is never taken below the noise the sensor kind is
        // specified with (for a mean of this many readings): ten windows
        // can happen to vary much less than the sensor does, and a
        // deviation estimated too low would make ordinary noise anomalous.
        let floor = (SensorKind::of(w.key).profile().noise_sigma / (w.value.count as f64).sqrt())
            .max(f64::MIN_POSITIVE);
        if let Some(z) = ctx.state_mut().judge(w.value.mean(), floor) {
            ctx.emit(Alert {
                ts: w.window.max_timestamp(),
                sensor: w.key,
                rule: Rule::ZScore,
                value: z,
            });
        }
        Ok(())
    }
}

/// What [`Health`] keeps per sensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthState {
    /// Newest event time heard.
    pub last_ts: Timestamp,
    /// The previous reading's value.
    pub last_value: f64,
    /// Readings in a row with that value.
    pub repeats: u32,
    /// Whether this run of repeats was reported.
    pub stuck_reported: bool,
    /// Whether the silence ending at `last_ts + silence_ms` was reported.
    pub silence_reported: bool,
    /// The pending silence timer, at or before `last_ts + silence_ms`.
    pub timer_at: Option<Timestamp>,
}

/// The stuck-sensor and silence rules, a keyed process function over a
/// sensor's readings.
///
/// - **Stuck**: [`STUCK_REPEATS`] readings in a row with the same value
///   raise one alert (at the last one's event time); a different value
///   ends the run.
/// - **Silence**: no reading for `silence_ms` of event time after the last
///   one (the deadline `last + silence_ms`). One *event-time* timer per
///   sensor follows the deadline lazily: a reading only moves the deadline
///   (no timer is deleted or registered per reading); when the timer fires
///   before the deadline it is registered again at the deadline, and when
///   it fires at the deadline the alert is raised. The alert is raised when
///   the watermark passes the deadline, as a timer moved on by every
///   reading would, with a timer operation per silence period instead of
///   two per reading. Event time, not processing time: a processing-time
///   timer would fire depending on the input rate and the machine's speed,
///   and the demo's alerts must be the same in every run and after every
///   recovery. To be exact whatever the watermark's timing, the silence
///   is also found from the input: a reading at or past the deadline means
///   the deadline passed in between, so the alert is raised there (at the
///   deadline) unless the timer raised it already. Deadlines at or after
///   `horizon` (the end of a bounded run, where every timer fires) raise
///   nothing.
///
/// Readings behind the watermark (late) are ignored here: the window
/// operator counts them and sends them to its side output.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// The end of the input's event time (`i64::MAX`: unbounded).
    pub horizon: Timestamp,
    /// The silence that raises an alert, ms of event time.
    pub silence_ms: i64,
}

impl Health {
    fn silence(sensor: u32, at: Timestamp, last_value: f64) -> Alert {
        Alert {
            ts: at,
            sensor,
            rule: Rule::Silence,
            value: last_value,
        }
    }
}

impl KeyedProcessFunction<Reading, u32> for Health {
    type State = HealthState;
    type Out = Alert;

    fn process(
        &mut self,
        r: Reading,
        ctx: &mut ProcessContext<'_, '_, u32, HealthState, Alert>,
    ) -> Result<(), OperatorError> {
        if r.ts <= ctx.watermark() {
            return Ok(());
        }
        let fresh = !ctx.state_exists();
        let mut s = *ctx.state_mut();
        if fresh {
            s.last_ts = r.ts;
        }
        let deadline = s.last_ts.saturating_add(self.silence_ms.max(1));
        if !fresh && !s.silence_reported && r.ts >= deadline {
            // The deadline passed before this reading and the timer has not
            // fired yet: the silence is found from the input.
            if deadline < self.horizon {
                ctx.emit_at(Self::silence(r.sensor, deadline, s.last_value), deadline);
            }
            s.silence_reported = true;
        }
        if !fresh && r.value == s.last_value {
            s.repeats = s.repeats.saturating_add(1);
        } else {
            s.repeats = 1;
            s.stuck_reported = false;
        }
        s.last_value = r.value;
        if s.repeats >= STUCK_REPEATS && !s.stuck_reported {
            s.stuck_reported = true;
            ctx.emit(Alert {
                ts: r.ts,
                sensor: r.sensor,
                rule: Rule::Stuck,
                value: r.value,
            });
        }
        if r.ts > s.last_ts {
            s.last_ts = r.ts;
            s.silence_reported = false;
        }
        if s.timer_at.is_none() {
            let at = s.last_ts.saturating_add(self.silence_ms.max(1));
            ctx.register_event_time_timer(at)?;
            s.timer_at = Some(at);
        }
        ctx.set_state(s);
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: FiredTimer,
        ctx: &mut ProcessContext<'_, '_, u32, HealthState, Alert>,
    ) -> Result<(), OperatorError> {
        let Some(mut s) = ctx.state().copied() else {
            return Ok(());
        };
        if s.timer_at != Some(timer.time) {
            return Ok(());
        }
        s.timer_at = None;
        let deadline = s.last_ts.saturating_add(self.silence_ms.max(1));
        if deadline > timer.time {
            // Readings moved the deadline on since the timer was set: follow
            // it (this fires in the same pass if the watermark passed it).
            ctx.register_event_time_timer(deadline)?;
            s.timer_at = Some(deadline);
        } else if !s.silence_reported {
            if deadline < self.horizon {
                let alert = Self::silence(*ctx.key(), deadline, s.last_value);
                ctx.emit_at(alert, deadline);
            }
            s.silence_reported = true;
        }
        ctx.set_state(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Window means of a healthy sensor: N(10, 0.1), seeded.
    fn noise(i: u64) -> f64 {
        let h = super::super::fleet::mix(i);
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        10.0 + 0.1 * (u - 0.5) * 12f64.sqrt()
    }

    #[test]
    fn the_z_score_flags_a_drift_within_seconds_and_noise_never() {
        let mut r = Running::default();
        for i in 0..2_000 {
            assert_eq!(r.judge(noise(i), 0.01), None, "window {i}: {r:?}");
        }
        // A drift of one deviation per window is flagged within 10 windows,
        // and stays flagged.
        let flagged: Vec<bool> = (0..30)
            .map(|i| r.judge(noise(5_000 + i) + 0.1 * i as f64, 0.01).is_some())
            .collect();
        let first = flagged.iter().position(|&f| f).expect("flagged");
        assert!(first < 10, "first flagged at window {first}");
        assert!(flagged[first..].iter().all(|&f| f));
    }

    #[test]
    fn alert_lines_round_trip() {
        let a = Alert {
            ts: 1_767_225_600_999,
            sensor: 42,
            rule: Rule::ZScore,
            value: -7.125,
        };
        assert_eq!(Alert::parse(&a.line()), Some(a));
        assert_eq!(Alert::parse("1,2,nonsense,3"), None);
        assert_eq!(Alert::parse("1,2"), None);
        assert_eq!(Alert::parse("1,2,stuck,3,4"), None);
    }

    #[test]
    fn thresholds_flag_only_values_past_the_limits() {
        let table = threshold_table();
        let limits = table.iter().find(|l| l.kind == SensorKind::Pressure);
        let window = |min: f64, max: f64| SensorWindow {
            key: 2,
            window: Window {
                start: 1_000,
                end: 2_000,
            },
            value: Stats {
                count: 10,
                min,
                max,
                sum: 10.0 * (min + max) / 2.0,
            },
        };
        let l = limits.unwrap();
        assert_eq!(threshold_alert(&window(l.low, l.high), limits), None);
        let a = threshold_alert(&window(6.0, l.high + 1.0), limits).unwrap();
        assert_eq!(
            (a.ts, a.rule, a.value),
            (1_999, Rule::Threshold, l.high + 1.0)
        );
        assert!(threshold_alert(&window(l.low - 1.0, 6.0), limits).is_some());
        assert_eq!(threshold_alert(&window(-100.0, 100.0), None), None);
    }

    /// The health rules driven as the runtime drives them: records at a
    /// watermark, timers fired when the watermark passes them.
    struct HealthHarness {
        op: eddy::operators::process::KeyedProcess<Reading, u32, Health>,
        timers: eddy::runtime::TimerService,
        clock: eddy::runtime::timers::ProcessingClock,
        out: eddy::runtime::Output<Alert>,
        watermark: Timestamp,
    }

    impl HealthHarness {
        fn new(horizon: Timestamp) -> Self {
            use eddy::runtime::Operator;
            let key = std::sync::Arc::new(|r: &Reading| r.sensor);
            let mut op = eddy::operators::process::KeyedProcess::new(
                key,
                Health {
                    horizon,
                    silence_ms: SILENCE_MS,
                },
            );
            op.open(&mut OperatorContext::for_test("health")).unwrap();
            Self {
                op,
                timers: eddy::runtime::TimerService::in_memory(),
                clock: eddy::runtime::timers::ProcessingClock::new(),
                out: Default::default(),
                watermark: i64::MIN,
            }
        }

        fn reading(&mut self, ts: Timestamp, value: f64) {
            use eddy::runtime::Operator;
            let mut c =
                Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
            c.set_input(ts, 0);
            let mut r = eddy::runtime::Record::new(Reading {
                sensor: 7,
                ts,
                value,
            });
            r.timestamp = ts;
            self.op.process(r, &mut c).unwrap();
        }

        fn watermark(&mut self, w: Timestamp) {
            use eddy::runtime::Operator;
            self.watermark = w;
            while let Some(t) = self.timers.pop_due(TimeDomain::EventTime, w).unwrap() {
                let mut c =
                    Collector::new(&mut self.out, &mut self.timers, &self.clock, self.watermark);
                c.set_input(t.time, 0);
                self.op.on_timer(&t, &mut c).unwrap();
            }
        }

        fn alerts(&mut self) -> Vec<(Timestamp, Rule, Timestamp)> {
            self.out
                .main
                .drain(..)
                .map(|r| (r.value.ts, r.value.rule, r.timestamp))
                .collect()
        }
    }

    #[test]
    fn a_silence_is_found_the_same_whether_the_timer_or_the_next_reading_comes_first() {
        // Readings every 100 ms until 1_000, then nothing until 3_500.
        let run = |watermark_first: bool| {
            let mut h = HealthHarness::new(i64::MAX);
            for ts in (0..=1_000).step_by(100) {
                h.reading(ts, ts as f64);
                h.watermark(ts - 500);
            }
            if watermark_first {
                h.watermark(3_000); // past the timer at 1_000 + SILENCE_MS
            }
            h.reading(3_500, 1.0);
            h.watermark(4_000);
            h.alerts()
        };
        let silence = (1_000 + SILENCE_MS, Rule::Silence, 1_000 + SILENCE_MS);
        assert_eq!(run(true), vec![silence]);
        assert_eq!(run(false), vec![silence]);
    }

    /// The silence timer follows the deadline lazily: one timer per sensor
    /// however many readings arrive, and each silence still found once, at
    /// its deadline, when the watermark passes it.
    #[test]
    fn one_silence_timer_per_sensor_and_each_silence_found_once() {
        let mut h = HealthHarness::new(i64::MAX);
        let mut registered = 0;
        for ts in (0..=5_000).step_by(100) {
            h.reading(ts, (ts % 700) as f64);
            h.watermark(ts - 500);
            registered = registered.max(h.timers.len());
        }
        assert_eq!(registered, 1, "one pending timer at most");
        h.watermark(5_000 + SILENCE_MS - 1);
        assert_eq!(h.alerts(), vec![], "not silent yet");
        h.watermark(5_000 + SILENCE_MS);
        let first = 5_000 + SILENCE_MS;
        assert_eq!(h.alerts(), vec![(first, Rule::Silence, first)]);
        assert!(h.timers.is_empty());
        // Readings again, then a second silence found by the next reading
        // before the watermark gets there.
        for ts in (10_000..=11_000).step_by(100) {
            h.reading(ts, (ts % 700) as f64);
        }
        h.reading(20_000, 1.0);
        let second = 11_000 + SILENCE_MS;
        assert_eq!(h.alerts(), vec![(second, Rule::Silence, second)]);
        h.watermark(19_000);
        assert_eq!(h.alerts(), vec![], "the timer found it reported");
    }

    #[test]
    fn no_silence_at_the_end_of_a_bounded_input_and_late_readings_are_ignored() {
        let mut h = HealthHarness::new(2_000);
        for ts in (0..=1_500).step_by(100) {
            h.reading(ts, ts as f64);
            h.watermark(ts - 500);
        }
        // Behind the watermark: ignored (no stuck run, no timer moved).
        h.reading(900, 1_500.0);
        h.watermark(i64::MAX); // the end of input fires every timer
        assert_eq!(h.alerts(), vec![]);
    }

    #[test]
    fn a_stuck_run_raises_one_alert_and_a_new_value_ends_it() {
        let mut h = HealthHarness::new(i64::MAX);
        let mut ts = 0;
        let mut read = |h: &mut HealthHarness, v: f64, n: u32| {
            for _ in 0..n {
                h.reading(ts, v);
                ts += 100;
            }
        };
        read(&mut h, 5.0, STUCK_REPEATS - 1);
        assert_eq!(h.alerts(), vec![]);
        read(&mut h, 5.0, 10);
        let at = 100 * (STUCK_REPEATS as i64 - 1);
        assert_eq!(h.alerts(), vec![(at, Rule::Stuck, at)]);
        read(&mut h, 6.0, STUCK_REPEATS);
        assert_eq!(h.alerts().len(), 1, "a new run, a new alert");
    }
}
