//! What `eddy demo iot` prints: a banner, a live status line every second
//! and the summary at the end, scored against the injected faults.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::fleet::{FaultKind, Fleet, START_MS};
use super::query::{Live, Outputs, WINDOW_MS};
use super::rules::{Alert, Rule};
use super::score::{score, Score};
use super::IotArgs;
use eddy::prelude::*;
use eddy::runtime::query::LatencySummary;

/// The first lines: what runs, with its seed.
pub fn banner(args: &IotArgs, fleet: &Fleet) -> String {
    let cfg = fleet.config();
    let length = match cfg.seconds {
        Some(s) => format!("{s} s of event time"),
        None => "unbounded (Ctrl-C stops)".to_string(),
    };
    let mut kinds = String::new();
    for k in FaultKind::ALL {
        let n = fleet.faults().iter().filter(|f| f.kind == k).count();
        kinds.push_str(&format!(" {} {n}", k.name()));
    }
    if fleet.faults().is_empty() {
        kinds.push_str(&format!(
            " (none: --fault-share is 0, or the run is shorter than the {} s warm-up plus the \
             last {} s, when no fault starts)",
            super::fleet::WARMUP_MS / 1000,
            super::fleet::FAULT_TAIL_MS / 1000
        ));
    }
    format!(
        "eddy demo iot: seed {}, {} sensors on {} machines, {length}, {} readings/s, \
         parallelism {}, {} state, checkpoints in {}\ninjected faults:{kinds}",
        cfg.seed,
        cfg.sensors,
        cfg.sensors.div_ceil(3),
        if args.rate == 0 {
            "unthrottled".to_string()
        } else {
            args.rate.to_string()
        },
        args.parallelism,
        if args.rocksdb { "RocksDB" } else { "memory" },
        args.dir.display()
    )
}

/// The ground truth, `faults.csv` in `dir`: one line per injected fault,
/// `sensor,kind,start_ms,end_ms` (end empty: never ends).
///
/// # Errors
/// The file cannot be written.
pub fn write_faults(dir: &Path, fleet: &Fleet) -> anyhow::Result<()> {
    let mut csv = String::from("sensor,kind,start_ms,end_ms\n");
    for f in fleet.faults() {
        let end = if f.end_ms == i64::MAX {
            String::new()
        } else {
            f.end_ms.to_string()
        };
        csv.push_str(&format!(
            "{},{},{},{end}\n",
            f.sensor,
            f.kind.name(),
            f.start_ms
        ));
    }
    let path = dir.join("faults.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))
}

/// Prints the live status from the query's progress.
pub struct StatusPrinter {
    fleet: Arc<Fleet>,
    live: Live,
}

impl StatusPrinter {
    /// A printer for the query sharing `live`.
    pub fn new(fleet: Arc<Fleet>, live: Live) -> Self {
        Self { fleet, live }
    }

    /// One status line: wall time, input rate, simulated event time,
    /// watermark lag (newest event time emitted less the window operator's
    /// lowest watermark), queued records, alerts per rule since this
    /// process started, checkpoints and latency at the sinks.
    pub fn line(&self, q: &Query) -> String {
        let p = q.progress();
        let newest = self.live.newest_ts.load(Ordering::Relaxed);
        let event_s = if newest == i64::MIN {
            0.0
        } else {
            (newest - START_MS) as f64 / 1000.0
        };
        let watermark = p
            .instances
            .iter()
            .filter(|i| i.operator == "windows")
            .filter_map(|i| i.watermark)
            .min();
        let lag = match watermark {
            Some(w) if newest != i64::MIN && w < self.fleet.end_ms() => {
                format!("{:.2} s", (newest - w) as f64 / 1000.0)
            }
            _ => "-".to_string(),
        };
        let late: u64 = p
            .instances
            .iter()
            .filter(|i| i.operator == "windows")
            .map(|i| i.late_records)
            .sum();
        let alerts: Vec<String> = Rule::ALL
            .iter()
            .map(|&r| format!("{} {}", r.name(), self.live.alerts.get(r)))
            .collect();
        let ckpt = p.checkpoint.as_ref().map_or("-".to_string(), |c| {
            format!(
                "{} ({} ms)",
                c.completed,
                c.last_duration_ms
                    .map_or("-".to_string(), |d| d.to_string())
            )
        });
        format!(
            "{:>6.1}s  in {:>8.0}/s  event time {:>6.1} s  watermark lag {lag}  queued {:>6}  \
             late {late}  alerts: {}  checkpoints {ckpt}  visible p99 {}",
            p.elapsed_secs,
            p.input_rows_per_second,
            event_s,
            p.queued_records,
            alerts.join(", "),
            p.latency
                .as_ref()
                .map_or("-".to_string(), |l| crate::report::format_latency(l.p99_us)),
        )
    }
}

/// The end of a run: what was committed, scored against the faults.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The fleet's seed.
    pub seed: u64,
    /// Sensors.
    pub sensors: u32,
    /// Window aggregates committed.
    pub windows: usize,
    /// Late readings committed from the side output.
    pub late_readings: usize,
    /// Readings injected late (bounded runs that reached their end).
    pub late_injected: Option<u64>,
    /// Alerts committed, per rule.
    pub alerts_per_rule: Vec<(String, usize)>,
    /// Committed lines that did not parse (0 unless the files were edited).
    pub unreadable_lines: usize,
    /// The score.
    pub score: Score,
    /// Checkpoints completed by this process.
    pub checkpoints: u64,
    /// The checkpoint this process resumed from.
    pub resumed_from: Option<u64>,
    /// Wall-clock latency from a record's creation to its visibility at the
    /// sinks (commit, for these exactly-once sinks), this process's records.
    pub visibility: Option<LatencySummary>,
    /// Wall-clock latency from the creation of the record an alert was
    /// decided on (for a window rule: the record whose watermark closed
    /// the window) to the alert's write at the `alerts-live` sink.
    pub alert_latency_live: Option<LatencySummary>,
    /// The same to the alert's commit at the exactly-once `alerts` sink.
    pub alert_latency_committed: Option<LatencySummary>,
    /// Readings this process read, per second of its wall time.
    pub readings_per_second: f64,
}

fn committed(dir: &Path) -> anyhow::Result<Vec<String>> {
    match FileSink::<()>::read_committed(dir) {
        Ok(lines) => Ok(lines),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Reads the committed alerts under `dir` (every run's), and the number of
/// lines that did not parse.
pub fn committed_alerts(dir: &Path) -> anyhow::Result<(Vec<Alert>, usize)> {
    let lines = committed(&Outputs::alerts(dir))?;
    let alerts: Vec<Alert> = lines.iter().filter_map(|l| Alert::parse(l)).collect();
    let bad = lines.len() - alerts.len();
    Ok((alerts, bad))
}

/// Readings of a bounded run injected late (the ground truth of the late
/// side output).
pub fn late_injected(fleet: &Fleet) -> Option<u64> {
    let total = fleet.total_seqs()?;
    Some(
        (0..total)
            .filter(|&s| fleet.is_late(s) && fleet.reading(s).is_some())
            .count() as u64,
    )
}

/// Reads what the runs on `dir` committed and scores it.
///
/// # Errors
/// An output directory that cannot be read.
pub fn summarise(dir: &Path, fleet: &Fleet, q: &Query) -> anyhow::Result<Summary> {
    let (alerts, unreadable_lines) = committed_alerts(dir)?;
    let stats = q.checkpoint_stats().unwrap_or_default();
    let windows = committed(&Outputs::windows(dir))?;
    // The end of the committed output: the newest window's end.
    let until = windows
        .iter()
        .filter_map(|l| l.split(',').nth(1)?.parse::<i64>().ok())
        .max()
        .map_or(i64::MIN, |start| start.saturating_add(WINDOW_MS as i64));
    let complete = until >= fleet.end_ms();
    Ok(Summary {
        seed: fleet.config().seed,
        sensors: fleet.config().sensors,
        windows: windows.len(),
        late_readings: committed(&Outputs::late(dir))?.len(),
        late_injected: late_injected(fleet).filter(|_| complete),
        alerts_per_rule: Rule::ALL
            .iter()
            .map(|&r| {
                let n = alerts.iter().filter(|a| a.rule == r).count();
                (r.name().to_string(), n)
            })
            .collect(),
        unreadable_lines,
        score: score(fleet, &alerts, until),
        checkpoints: stats.completed,
        resumed_from: stats.restored_epoch,
        visibility: {
            let mut h = q.metrics().merged_latency_of("window-aggregates");
            for sink in ["late-readings", "alerts"] {
                let _ = h.add(q.metrics().merged_latency_of(sink));
            }
            LatencySummary::from_histogram(&h)
        },
        alert_latency_live: LatencySummary::from_histogram(
            &q.metrics().merged_latency_of("alerts-live"),
        ),
        alert_latency_committed: LatencySummary::from_histogram(
            &q.metrics().merged_latency_of("alerts"),
        ),
        readings_per_second: {
            let p = q.progress();
            p.input_rows as f64 / p.elapsed_secs.max(1e-9)
        },
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "\nsummary (seed {}, {} sensors)",
            self.seed, self.sensors
        )?;
        writeln!(f, "window aggregates committed: {}", self.windows)?;
        match self.late_injected {
            Some(n) => writeln!(
                f,
                "late readings on the side output: {} ({n} injected late)",
                self.late_readings
            )?,
            None => writeln!(
                f,
                "late readings on the side output: {}",
                self.late_readings
            )?,
        }
        let per_rule: Vec<String> = self
            .alerts_per_rule
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(f, "alerts committed: {}", per_rule.join(", "))?;
        if self.unreadable_lines > 0 {
            writeln!(f, "unreadable alert lines: {}", self.unreadable_lines)?;
        }
        writeln!(
            f,
            "\nscored against the injected faults (detection delay: event time from the \
             fault's start to its first alert)"
        )?;
        writeln!(f, "{}", self.score)?;
        if let Some(l) = &self.visibility {
            writeln!(
                f,
                "\nwall-clock visibility at the sinks (record created -> committed): p50 {}  \
                 p99 {}  max {}",
                crate::report::format_latency(l.p50_us),
                crate::report::format_latency(l.p99_us),
                crate::report::format_latency(l.max_us)
            )?;
        }
        for (what, l) in [
            ("written (alerts-live)", &self.alert_latency_live),
            ("committed (alerts)", &self.alert_latency_committed),
        ] {
            if let Some(l) = l {
                writeln!(
                    f,
                    "alert latency, deciding record created -> alert {what}: p50 {}  p99 {}  \
                     max {}  ({} alerts)",
                    crate::report::format_latency(l.p50_us),
                    crate::report::format_latency(l.p99_us),
                    crate::report::format_latency(l.max_us),
                    l.count
                )?;
            }
        }
        writeln!(
            f,
            "input: {:.0} readings/s of wall time",
            self.readings_per_second
        )?;
        write!(
            f,
            "checkpoints completed: {}{}",
            self.checkpoints,
            self.resumed_from
                .map_or(String::new(), |e| format!(" (resumed from {e})"))
        )
    }
}
