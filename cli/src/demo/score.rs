//! Scoring the demo's committed alerts against the injected faults.
//!
//! - An alert **matches** a fault when it is for the fault's sensor and its
//!   event time is within `[start, end + MATCH_GRACE_MS]` of the fault (a
//!   dead or drifting sensor's fault never ends).
//! - **Recall** of a fault kind: the share of its faults matched by at
//!   least one alert, of any rule.
//! - **Precision** of a fault kind: each rule is aimed at one kind
//!   (threshold: spikes, z-score: drifts, stuck: stuck sensors, silence:
//!   dead sensors); the share of that rule's alerts that match a fault (of
//!   any kind: a z-score alert on a spiking sensor is right, not a false
//!   alarm).
//! - **Detection delay** of a detected fault: the event time of its first
//!   matching alert less the fault's start. Event time, so the same in
//!   every run, whatever the machine's speed.
//! - A run stopped early (Ctrl-C) is scored on the faults that started at
//!   least [`DUE_MS`] before the newest committed window's end; the later
//!   ones are counted as pending, neither detected nor missed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fleet::{Fault, FaultKind, Fleet};
use super::rules::{Alert, Rule};

/// An alert this long after a fault's end still matches it (the window
/// closing, the watermark's bound and the silence time fit in it).
pub const MATCH_GRACE_MS: i64 = 5_000;

/// A fault is scored once the committed output reaches this long past
/// its start (every rule decides well within it).
pub const DUE_MS: i64 = 10_000;

/// The fault kind a rule is aimed at.
pub fn aimed_at(rule: Rule) -> FaultKind {
    match rule {
        Rule::Threshold => FaultKind::Spike,
        Rule::ZScore => FaultKind::Drift,
        Rule::Stuck => FaultKind::Stuck,
        Rule::Silence => FaultKind::Dead,
    }
}

/// Percentiles of detection delays, ms of event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delays {
    /// Median.
    pub p50_ms: i64,
    /// 90th percentile.
    pub p90_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
    /// Largest.
    pub max_ms: i64,
}

impl Delays {
    /// Nearest-rank percentiles of `delays` (`None` when empty).
    pub fn of(delays: &[i64]) -> Option<Self> {
        let mut d = delays.to_vec();
        d.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * d.len() as f64).ceil() as usize).clamp(1, d.len());
            d[rank - 1]
        };
        (!d.is_empty()).then(|| Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// The score of one fault kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScore {
    /// The kind.
    pub kind: FaultKind,
    /// Faults injected.
    pub injected: usize,
    /// Faults matched by an alert.
    pub detected: usize,
    /// `detected / injected` (1 when none was injected).
    pub recall: f64,
    /// Alerts of the rule aimed at this kind.
    pub alerts: usize,
    /// Those that match a fault.
    pub true_alerts: usize,
    /// `true_alerts / alerts` (1 when there were none).
    pub precision: f64,
    /// Detection delays of the detected faults.
    pub delay: Option<Delays>,
}

/// The score of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Per fault kind.
    pub kinds: Vec<KindScore>,
    /// All faults.
    pub injected: usize,
    /// All detected faults.
    pub detected: usize,
    /// All alerts.
    pub alerts: usize,
    /// Alerts matching a fault.
    pub true_alerts: usize,
    /// Detection delays of all detected faults.
    pub delay: Option<Delays>,
    /// Faults not scored: they start too close to the end of the
    /// committed output ([`DUE_MS`]).
    pub pending: usize,
}

impl Score {
    /// Overall recall.
    pub fn recall(&self) -> f64 {
        ratio(self.detected, self.injected)
    }

    /// Overall precision.
    pub fn precision(&self) -> f64 {
        ratio(self.true_alerts, self.alerts)
    }

    /// The score of `kind`.
    pub fn kind(&self, kind: FaultKind) -> Option<&KindScore> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn matches(f: &Fault, a: &Alert) -> bool {
    a.sensor == f.sensor && a.ts >= f.start_ms && a.ts <= f.end_ms.saturating_add(MATCH_GRACE_MS)
}

/// Scores `alerts` against the faults of `fleet` that started at least
/// [`DUE_MS`] before `until`, the end of the committed output.
pub fn score(fleet: &Fleet, alerts: &[Alert], until: i64) -> Score {
    let mut by_sensor: BTreeMap<u32, Vec<&Alert>> = BTreeMap::new();
    for a in alerts {
        by_sensor.entry(a.sensor).or_default().push(a);
    }
    // The first matching alert's time per fault.
    let due = |f: &&Fault| f.start_ms.saturating_add(DUE_MS) <= until;
    let first: Vec<(FaultKind, Option<i64>)> = fleet
        .faults()
        .iter()
        .filter(due)
        .map(|f| {
            let hit = by_sensor
                .get(&f.sensor)
                .into_iter()
                .flatten()
                .filter(|a| matches(f, a))
                .map(|a| a.ts)
                .min();
            (f.kind, hit.map(|t| t - f.start_ms))
        })
        .collect();
    let is_true = |a: &Alert| fleet.fault_of(a.sensor).is_some_and(|f| matches(f, a));
    let kinds: Vec<KindScore> = FaultKind::ALL
        .into_iter()
        .map(|kind| {
            let delays: Vec<i64> = first
                .iter()
                .filter(|(k, _)| *k == kind)
                .filter_map(|(_, d)| *d)
                .collect();
            let injected = first.iter().filter(|(k, _)| *k == kind).count();
            let aimed: Vec<&Alert> = alerts.iter().filter(|a| aimed_at(a.rule) == kind).collect();
            let true_alerts = aimed.iter().filter(|a| is_true(a)).count();
            KindScore {
                kind,
                injected,
                detected: delays.len(),
                recall: ratio(delays.len(), injected),
                alerts: aimed.len(),
                true_alerts,
                precision: ratio(true_alerts, aimed.len()),
                delay: Delays::of(&delays),
            }
        })
        .collect();
    let all_delays: Vec<i64> = first.iter().filter_map(|(_, d)| *d).collect();
    Score {
        injected: first.len(),
        detected: all_delays.len(),
        alerts: alerts.len(),
        true_alerts: alerts.iter().filter(|a| is_true(a)).count(),
        delay: Delays::of(&all_delays),
        pending: fleet.faults().len() - first.len(),
        kinds,
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let delay = |d: &Option<Delays>| match d {
            Some(d) => format!(
                "{:>7} {:>7} {:>7} {:>7}",
                d.p50_ms, d.p90_ms, d.p99_ms, d.max_ms
            ),
            None => format!("{:>7} {:>7} {:>7} {:>7}", "-", "-", "-", "-"),
        };
        writeln!(
            f,
            "{:<7} {:>8} {:>8} {:>6} {:>7} {:>9}   {:>7} {:>7} {:>7} {:>7}",
            "fault",
            "injected",
            "detected",
            "recall",
            "alerts",
            "precision",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        )?;
        for k in &self.kinds {
            writeln!(
                f,
                "{:<7} {:>8} {:>8} {:>6.3} {:>7} {:>9.3}   {}",
                k.kind.name(),
                k.injected,
                k.detected,
                k.recall,
                k.alerts,
                k.precision,
                delay(&k.delay)
            )?;
        }
        write!(
            f,
            "{:<7} {:>8} {:>8} {:>6.3} {:>7} {:>9.3}   {}",
            "all",
            self.injected,
            self.detected,
            self.recall(),
            self.alerts,
            self.precision(),
            delay(&self.delay)
        )?;
        if self.pending > 0 {
            write!(
                f,
                "\n{} faults start too close to the end of the committed output to be scored",
                self.pending
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::fleet::FleetConfig;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<i64> = (1..=100).collect();
        let p = Delays::of(&d).unwrap();
        assert_eq!((p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms), (50, 90, 99, 100));
        assert_eq!(Delays::of(&[]), None);
        assert_eq!(Delays::of(&[7]).unwrap().p99_ms, 7);
    }

    #[test]
    fn an_alert_per_fault_scores_one_and_a_stray_alert_costs_precision() {
        let fleet = Fleet::new(FleetConfig {
            sensors: 400,
            seconds: Some(60),
            fault_share: 0.04,
            ..Default::default()
        });
        let rule_for = |k: FaultKind| Rule::ALL.into_iter().find(|&r| aimed_at(r) == k);
        let mut alerts: Vec<Alert> = fleet
            .faults()
            .iter()
            .map(|f| Alert {
                ts: f.start_ms + 1_000,
                sensor: f.sensor,
                rule: rule_for(f.kind).unwrap(),
                value: 0.0,
            })
            .collect();
        let s = score(&fleet, &alerts, fleet.end_ms());
        assert_eq!((s.injected, s.detected), (16, 16));
        assert_eq!((s.recall(), s.precision()), (1.0, 1.0));
        assert_eq!(s.delay.unwrap().p99_ms, 1_000);
        let healthy = (0..400).find(|&x| fleet.fault_of(x).is_none()).unwrap();
        alerts.push(Alert {
            ts: 0,
            sensor: healthy,
            rule: Rule::Stuck,
            value: 0.0,
        });
        let s = score(&fleet, &alerts, fleet.end_ms());
        let stuck = s.kind(FaultKind::Stuck).unwrap();
        assert_eq!((stuck.alerts, stuck.true_alerts), (5, 4));
        assert_eq!(s.recall(), 1.0);
        // Stopped early: only the faults due by then are scored.
        let until = fleet.faults().iter().map(|f| f.start_ms).min().unwrap() + DUE_MS;
        let s = score(&fleet, &alerts, until);
        assert_eq!((s.injected, s.pending), (1, 15));
    }
}
