//! The one Eddy query of `eddy demo iot`:
//!
//! ```text
//! fleet (1 instance, event time, watermark bound 500 ms)
//!  ├─ key_by(sensor) ─ window "windows": 1 s tumbling, count/min/max/mean
//!  │    ├─ main ─┬─ sink "window-aggregates" (exactly-once files: windows/)
//!  │    │        ├─ lookup join "thresholds" (static table per sensor kind): threshold alerts
//!  │    │        └─ key_by(sensor) ─ process "zscore" (running mean/deviation) ─ z-score alerts
//!  │    └─ late ── sink "late-readings" (exactly-once files: late/)
//!  └─ key_by(sensor) ─ process "health" (stuck run, silence timer) ─ stuck / silence alerts
//! alerts: union ─ key_by(sensor, rule) ─ dedup "dedup" (10 s of event time)
//!         ─┬─ sink "alerts" (exactly-once files: alerts/)
//!          └─ sink "alerts-live" (at-least-once files, visible on write: alerts-live/)
//! with --kafka: window results and alerts also go, exactly once, to the
//! topics eddy-demo-windows and eddy-demo-alerts
//! ```
//!
//! Durations are the fleet's ([`Scale::FLEET`]); `--replay` runs the same
//! query over a recorded series at that series' scale. Every stateful
//! operator is named, so a rerun on the same checkpoint directory finds
//! its state.

use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use super::feed::AlertFeed;
use super::fleet::{Fleet, Reading, SensorKind};
use super::rules::{
    late_line, threshold_alert, threshold_table, window_line, Alert, Health, SensorWindow,
    WindowStats, ZScore,
};
use super::source::FleetSource;
use eddy::connectors::{KafkaSink, ProducerRecord};
use eddy::prelude::*;
use eddy::runtime::record::Timestamp;

/// The watermark's bound on out-of-orderness (the fleet's scale).
pub const WATERMARK_BOUND_MS: u64 = 500;
/// The windows' length (the fleet's scale).
pub const WINDOW_MS: u64 = 1_000;
/// Alerts of one sensor and rule within this much event time of the one
/// kept are duplicates (the fleet's scale).
pub const DEDUP_MS: u64 = 10_000;

/// The query's time scale: every duration is a multiple of the sensors'
/// reporting period. The fleet reports every 100 ms ([`Scale::FLEET`]):
/// 1 s windows, a 500 ms watermark bound, 10 s of deduplication, 2 s of
/// silence. A replayed hourly series gets 10 h windows, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// The reporting period, ms.
    pub period_ms: i64,
}

impl Scale {
    /// The simulated fleet's scale.
    pub const FLEET: Scale = Scale { period_ms: 100 };

    /// Window length: 10 periods.
    pub fn window_ms(self) -> i64 {
        self.period_ms.saturating_mul(10)
    }
    /// Watermark bound: 5 periods.
    pub fn bound_ms(self) -> i64 {
        self.period_ms.saturating_mul(5)
    }
    /// Deduplication bound: 100 periods.
    pub fn dedup_ms(self) -> i64 {
        self.period_ms.saturating_mul(100)
    }
    /// Silence that raises an alert: 20 periods.
    pub fn silence_ms(self) -> i64 {
        self.period_ms.saturating_mul(20)
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(1) as u64)
}

/// The topic of the window aggregates with `--kafka` (key: the sensor;
/// value: the line of the `windows/` files).
pub const KAFKA_WINDOWS_TOPIC: &str = "eddy-demo-windows";
/// The topic of the alerts with `--kafka` (key: the sensor; value: the
/// line of the `alerts/` files).
pub const KAFKA_ALERTS_TOPIC: &str = "eddy-demo-alerts";

/// What the running query shares with the live status.
#[derive(Debug, Clone)]
pub struct Live {
    /// The newest event time the source emitted.
    pub newest_ts: Arc<AtomicI64>,
    /// Alerts after deduplication.
    pub alerts: Arc<AlertFeed>,
}

/// Where the query writes, under the demo directory.
pub struct Outputs;

impl Outputs {
    /// Committed alerts.
    pub fn alerts(dir: &Path) -> std::path::PathBuf {
        dir.join("alerts")
    }
    /// Alerts as written, at least once.
    pub fn live_alerts(dir: &Path) -> std::path::PathBuf {
        dir.join("alerts-live")
    }
    /// Committed window aggregates.
    pub fn windows(dir: &Path) -> std::path::PathBuf {
        dir.join("windows")
    }
    /// Committed late readings.
    pub fn late(dir: &Path) -> std::path::PathBuf {
        dir.join("late")
    }
}

/// The fleet's readings: its source (one instance) with event time and
/// watermarks at the fleet's scale. `newest_ts` follows the newest event
/// time emitted.
pub fn fleet_readings(
    pipeline: &Pipeline,
    fleet: Arc<Fleet>,
    rate: Option<u64>,
    newest_ts: Arc<AtomicI64>,
) -> Stream<Reading> {
    pipeline
        .source("fleet", FleetSource::new(fleet, rate, newest_ts))
        .set_parallelism(1)
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(WATERMARK_BOUND_MS),
        ))
}

/// Adds the demo query over `readings` (a stream a source returned, with
/// watermarks) to the pipeline, at time scale `scale`, with `horizon` the
/// end of the input's event time (`i64::MAX`: unbounded), writing into
/// `dir`; keyed operators and sinks run at `parallelism`. Returns the
/// alert feed.
pub fn build(
    readings: Stream<Reading>,
    scale: Scale,
    horizon: Timestamp,
    dir: &Path,
    parallelism: usize,
    kafka: Option<&str>,
) -> Arc<AlertFeed> {
    let alerts = Arc::new(AlertFeed::default());
    let (windows, late) = readings
        .clone()
        .key_by(|r: &Reading| r.sensor)
        .window(Windows::tumbling(millis(scale.window_ms())))
        .name("windows")
        .aggregate_with_late(WindowStats);
    let windows = windows.set_parallelism(parallelism);
    let windows_to_kafka = windows.clone();
    windows
        .clone()
        .sink(
            "window-aggregates",
            FileSink::new(Outputs::windows(dir), Delivery::ExactlyOnce, window_line),
        )
        .set_parallelism(parallelism);
    late.sink(
        "late-readings",
        FileSink::new(Outputs::late(dir), Delivery::ExactlyOnce, late_line),
    )
    .set_parallelism(parallelism);

    let table = StaticTable::new(threshold_table(), |l| l.kind);
    let thresholds = windows
        .clone()
        .lookup_with(
            table,
            |w: &SensorWindow| SensorKind::of(w.key),
            |w, limits| threshold_alert(&w, limits),
        )
        .name("thresholds")
        .set_parallelism(parallelism);
    let zscores = windows
        .key_by(|w: &SensorWindow| w.key)
        .process("zscore", ZScore)
        .set_parallelism(parallelism);
    let health = Health {
        horizon,
        silence_ms: scale.silence_ms(),
    };
    let health = readings
        .key_by(|r: &Reading| r.sensor)
        .process("health", health)
        .set_parallelism(parallelism);

    let counts = alerts.clone();
    let alerts_out = thresholds
        .union(zscores)
        .union(health)
        .key_by(|a: &Alert| (a.sensor, a.rule))
        .dedup("dedup", millis(scale.dedup_ms()))
        .set_parallelism(parallelism)
        .inspect(move |a: &Alert| counts.record(a))
        .name("count-alerts")
        .set_parallelism(parallelism);
    alerts_out
        .clone()
        .sink(
            "alerts",
            FileSink::new(Outputs::alerts(dir), Delivery::ExactlyOnce, Alert::line),
        )
        .set_parallelism(parallelism);
    // The same alerts, visible as soon as they are written (a pager's
    // feed); after a crash the replayed epoch writes some again, which a
    // reader drops by (sensor, rule, ts).
    if let Some(brokers) = kafka {
        windows_to_kafka
            .sink(
                "kafka-windows",
                KafkaSink::exactly_once(
                    brokers,
                    KAFKA_WINDOWS_TOPIC,
                    dir.join("kafka-staging").join("windows"),
                    |w: &SensorWindow| ProducerRecord::keyed(w.key.to_string(), window_line(w)),
                ),
            )
            .set_parallelism(parallelism);
        alerts_out
            .clone()
            .sink(
                "kafka-alerts",
                KafkaSink::exactly_once(
                    brokers,
                    KAFKA_ALERTS_TOPIC,
                    dir.join("kafka-staging").join("alerts"),
                    |a: &Alert| ProducerRecord::keyed(a.sensor.to_string(), a.line()),
                ),
            )
            .set_parallelism(parallelism);
    }
    alerts_out
        .sink(
            "alerts-live",
            FileSink::new(
                Outputs::live_alerts(dir),
                Delivery::AtLeastOnce,
                Alert::line,
            ),
        )
        .set_parallelism(parallelism);
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_scale_is_the_documented_one() {
        let s = Scale::FLEET;
        assert_eq!(s.window_ms(), WINDOW_MS as i64);
        assert_eq!(s.bound_ms(), WATERMARK_BOUND_MS as i64);
        assert_eq!(s.dedup_ms(), DEDUP_MS as i64);
        assert_eq!(s.silence_ms(), crate::demo::rules::SILENCE_MS);
    }
}
