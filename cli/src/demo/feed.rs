//! The alerts as they pass on their way to the alert sink, for the live
//! status line, the dashboard's alert feed and machine map, and the
//! Prometheus `eddy_demo_alerts_total` family. These are the alerts the
//! query produced (a run that replays after a recovery sees some again);
//! what was committed exactly once is in the alert files.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::rules::{Alert, Rule};
use eddy::runtime::prometheus::{Exposition, Kind};

/// Alerts kept for the feed.
const RECENT: usize = 50;
/// How long (event time) a machine shows an alert on the map.
const SHOWN_MS: i64 = 10_000;

/// Counters and the recent alerts (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct AlertFeed {
    counts: [AtomicU64; 4],
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    alerts: VecDeque<Alert>,
    /// Per machine, the newest alert's event time and rule.
    machines: HashMap<u32, (i64, Rule)>,
}

/// What the dashboard's demo panel shows.
#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    /// Alerts so far per rule.
    pub alerts_per_rule: Vec<(String, u64)>,
    /// The newest alerts, newest first.
    pub recent: Vec<FeedAlert>,
    /// Machines in the fleet.
    pub machines: u32,
    /// Machines with an alert in the last 10 s of event time: machine,
    /// rule.
    pub alerting: Vec<(u32, String)>,
}

/// One alert of the feed.
#[derive(Debug, Clone, Serialize)]
pub struct FeedAlert {
    /// Event time, ms.
    pub ts: i64,
    /// Sensor.
    pub sensor: u32,
    /// Machine (`sensor / 3`).
    pub machine: u32,
    /// Rule name.
    pub rule: &'static str,
    /// Evidence.
    pub value: f64,
}

impl AlertFeed {
    /// Counts `a` and keeps it in the feed.
    pub fn record(&self, a: &Alert) {
        self.counts[a.rule as usize].fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.alerts.len() == RECENT {
            r.alerts.pop_front();
        }
        r.alerts.push_back(*a);
        let m = r.machines.entry(a.sensor / 3).or_insert((a.ts, a.rule));
        if a.ts >= m.0 {
            *m = (a.ts, a.rule);
        }
    }

    /// Alerts of `rule` so far.
    pub fn get(&self, rule: Rule) -> u64 {
        self.counts[rule as usize].load(Ordering::Relaxed)
    }

    /// The dashboard panel, as of event time `now_ms`, for a fleet of
    /// `sensors`.
    pub fn panel(&self, sensors: u32, now_ms: i64) -> Panel {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut alerting: Vec<(u32, String)> = r
            .machines
            .iter()
            .filter(|(_, (ts, _))| now_ms.saturating_sub(*ts) <= SHOWN_MS)
            .map(|(&m, (_, rule))| (m, rule.name().to_string()))
            .collect();
        alerting.sort();
        Panel {
            alerts_per_rule: Rule::ALL
                .iter()
                .map(|&rule| (rule.name().to_string(), self.get(rule)))
                .collect(),
            recent: r
                .alerts
                .iter()
                .rev()
                .map(|a| FeedAlert {
                    ts: a.ts,
                    sensor: a.sensor,
                    machine: a.sensor / 3,
                    rule: a.rule.name(),
                    value: a.value,
                })
                .collect(),
            machines: sensors.div_ceil(3),
            alerting,
        }
    }

    /// The `eddy_demo_alerts_total` family.
    pub fn write_prometheus(&self, e: &mut Exposition) {
        e.family(
            "eddy_demo_alerts_total",
            "Alerts the demo's query produced, after deduplication, per rule.",
            Kind::Counter,
        );
        for rule in Rule::ALL {
            e.sample(
                "eddy_demo_alerts_total",
                &[("rule", rule.name())],
                self.get(rule) as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(ts: i64, sensor: u32, rule: Rule) -> Alert {
        Alert {
            ts,
            sensor,
            rule,
            value: 1.0,
        }
    }

    #[test]
    fn the_panel_shows_recent_alerts_and_machines_alerting_lately() {
        let f = AlertFeed::default();
        f.record(&alert(1_000, 4, Rule::Stuck));
        f.record(&alert(30_000, 9, Rule::Threshold));
        f.record(&alert(31_000, 10, Rule::Silence));
        let p = f.panel(12, 32_000);
        assert_eq!(p.machines, 4);
        assert_eq!(p.recent.len(), 3);
        assert_eq!(p.recent[0].sensor, 10, "newest first");
        assert_eq!(p.alerting, vec![(3, "silence".to_string())]);
        assert_eq!(f.get(Rule::Stuck), 1);
        let mut e = Exposition::new();
        f.write_prometheus(&mut e);
        assert!(e
            .as_str()
            .contains("eddy_demo_alerts_total{rule=\"threshold\"} 1\n"));
    }
}
