//! The query's metrics in Prometheus' text exposition format (version 0.0.4).
//!
//! [`QueryMonitor::prometheus_text`] reads the live counters every task already
//! keeps (records in and out, queued records, late and dropped records,
//! watermarks, the sinks' latency histograms, the checkpoint counters) at
//! the moment it is called, so a scrape sees the current values without
//! any sampler and without a global recorder; nothing is added to the hot
//! path. Serve it from any HTTP stack (the `eddy` command serves it on
//! `--metrics-addr`). An application adds its own families with
//! [`Exposition`].
//!
//! Families (labels `operator`, `instance` where per instance):
//!
//! | family | type | what |
//! | --- | --- | --- |
//! | `eddy_records_in_total` | counter | records read by an instance |
//! | `eddy_records_out_total` | counter | records emitted by an instance |
//! | `eddy_queued_records` | gauge | records queued on an instance's input edges |
//! | `eddy_late_records_total` | counter | records behind the watermark |
//! | `eddy_dropped_records_total` | counter | records dropped on purpose (duplicates) |
//! | `eddy_watermark_milliseconds` | gauge | an instance's watermark (event time, ms) |
//! | `eddy_event_time_max_milliseconds` | gauge | the newest event time a source instance stamped |
//! | `eddy_watermark_lag_seconds` | gauge | newest event time of any source less an instance's watermark |
//! | `eddy_alignment_max_seconds` | gauge | longest marker alignment of an instance |
//! | `eddy_latency_seconds` | summary | creation to visibility at the sinks |
//! | `eddy_checkpoints_*_total` | counter | checkpoints started, completed, failed |
//! | `eddy_checkpoint_duration_seconds` | gauge | start to manifest durable, newest checkpoint |
//! | `eddy_checkpoint_written_bytes` | gauge | bytes the newest checkpoint wrote |
//! | `eddy_state_bytes` | gauge | bytes of state the newest checkpoint references |

use std::fmt::Write;

use crate::metrics::InstanceMetrics;
use crate::monitor::QueryMonitor;
use crate::record::NO_TIMESTAMP;

/// How a per-instance family reads its value (`None`: no sample).
type PerInstance<'a> = &'a dyn Fn(&InstanceMetrics) -> Option<f64>;

/// A Prometheus text exposition being written: a `# HELP` and `# TYPE`
/// header per family, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (the name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Quantiles with `_sum` and `_count`.
    Summary,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family (or of its `_sum` / `_count`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
        self
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.text
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl QueryMonitor {
    /// The query's metrics, read now, in Prometheus' text format (see the
    /// [module docs](crate::prometheus) for the families).
    pub fn prometheus_text(&self) -> String {
        let mut e = Exposition::new();
        self.write_prometheus(&mut e);
        e.into_string()
    }

    /// Appends the query's families to `e`, so an application can add its
    /// own before or after them.
    pub fn write_prometheus(&self, e: &mut Exposition) {
        let instances = self.metrics().instances();
        let newest = instances
            .iter()
            .map(|m| m.max_event_time())
            .filter(|&t| t != NO_TIMESTAMP)
            .max();
        let watermark = |m: &InstanceMetrics| Some(m.watermark()).filter(|&w| w != NO_TIMESTAMP);
        let families: [(&str, &str, Kind, PerInstance); 9] = [
            (
                "eddy_records_in_total",
                "Records read by an operator instance.",
                Kind::Counter,
                &|m| Some(m.records_in() as f64),
            ),
            (
                "eddy_records_out_total",
                "Records emitted by an operator instance.",
                Kind::Counter,
                &|m| Some(m.records_out() as f64),
            ),
            (
                "eddy_queued_records",
                "Records queued on an instance's input edges (sent, not yet received).",
                Kind::Gauge,
                &|m| Some(m.queued_input() as f64),
            ),
            (
                "eddy_late_records_total",
                "Records behind the watermark (dropped or sent to the late side output).",
                Kind::Counter,
                &|m| Some(m.late_records() as f64),
            ),
            (
                "eddy_dropped_records_total",
                "Records an operator dropped on purpose (duplicates).",
                Kind::Counter,
                &|m| Some(m.dropped_records() as f64),
            ),
            (
                "eddy_watermark_milliseconds",
                "An instance's watermark: event time, milliseconds since the epoch.",
                Kind::Gauge,
                &|m| watermark(m).map(|w| w as f64),
            ),
            (
                "eddy_event_time_max_milliseconds",
                "The newest event time a source instance stamped, milliseconds.",
                Kind::Gauge,
                &|m| {
                    Some(m.max_event_time())
                        .filter(|&t| t != NO_TIMESTAMP)
                        .map(|t| t as f64)
                },
            ),
            (
                "eddy_watermark_lag_seconds",
                "The newest event time any source stamped less an instance's watermark.",
                Kind::Gauge,
                // The end-of-input watermark is not a lag.
                &|m| {
                    let (w, n) = (watermark(m)?, newest?);
                    (w < i64::MAX).then(|| n.saturating_sub(w).max(0) as f64 / 1000.0)
                },
            ),
            (
                "eddy_alignment_max_seconds",
                "The longest time a marker alignment held an instance's inputs back.",
                Kind::Gauge,
                &|m| Some(m.max_alignment_ns() as f64 / 1e9),
            ),
        ];
        for (name, help, kind, value) in families {
            e.family(name, help, kind);
            for m in &instances {
                if let Some(v) = value(m) {
                    let instance = m.instance.to_string();
                    e.sample(
                        name,
                        &[("operator", &m.operator), ("instance", &instance)],
                        v,
                    );
                }
            }
        }

        let (input, output) = self.totals();
        e.family(
            "eddy_input_records_total",
            "Records the query's sources emitted.",
            Kind::Counter,
        )
        .sample("eddy_input_records_total", &[], input as f64);
        e.family(
            "eddy_output_records_total",
            "Records the query's sinks received.",
            Kind::Counter,
        )
        .sample("eddy_output_records_total", &[], output as f64);

        let h = self.metrics().merged_latency();
        e.family(
            "eddy_latency_seconds",
            "Creation of a record to its visibility at a sink (commit, for exactly-once sinks).",
            Kind::Summary,
        );
        for (q, label) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")] {
            let v = if h.is_empty() {
                f64::NAN
            } else {
                h.value_at_quantile(q) as f64 / 1e9
            };
            e.sample("eddy_latency_seconds", &[("quantile", label)], v);
        }
        e.sample(
            "eddy_latency_seconds_sum",
            &[],
            h.mean() * h.len() as f64 / 1e9,
        );
        e.sample("eddy_latency_seconds_count", &[], h.len() as f64);

        let c = self.checkpoint_stats().unwrap_or_default();
        for (name, help, v) in [
            (
                "eddy_checkpoints_started_total",
                "Checkpoints (epochs) started.",
                c.started,
            ),
            (
                "eddy_checkpoints_completed_total",
                "Checkpoints completed (manifest durable).",
                c.completed,
            ),
            (
                "eddy_checkpoints_failed_total",
                "Checkpoints that failed: declined, timed out, or manifest not written.",
                c.failed,
            ),
        ] {
            e.family(name, help, Kind::Counter)
                .sample(name, &[], v as f64);
        }
        for (name, help, v) in [
            (
                "eddy_checkpoint_duration_seconds",
                "Start to manifest durable, of the newest completed checkpoint.",
                c.last_duration_ms.map(|d| d as f64 / 1000.0),
            ),
            (
                "eddy_checkpoint_written_bytes",
                "Bytes the newest completed checkpoint wrote.",
                c.last_bytes_written.map(|b| b as f64),
            ),
            (
                "eddy_state_bytes",
                "Bytes of state the newest completed checkpoint references.",
                c.last_state_bytes.map(|b| b as f64),
            ),
            (
                "eddy_checkpoint_last_epoch",
                "The newest completed checkpoint's epoch.",
                c.last_completed_epoch.map(|b| b as f64),
            ),
        ] {
            e.family(name, help, Kind::Gauge)
                .sample(name, &[], v.unwrap_or(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_values_formatted() {
        let mut e = Exposition::new();
        e.family("x_total", "An x.\nTwo lines.", Kind::Counter)
            .sample("x_total", &[("operator", "a\"b\\c")], 3.0)
            .sample("x_total", &[], 0.25)
            .sample("x_total", &[], f64::NAN);
        assert_eq!(
            e.as_str(),
            "# HELP x_total An x.\\nTwo lines.\n# TYPE x_total counter\n\
             x_total{operator=\"a\\\"b\\\\c\"} 3\nx_total 0.25\nx_total NaN\n"
        );
    }
}
