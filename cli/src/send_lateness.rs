//! How late `eddy loadgen` sent its lines, so a latency tail can be split
//! between the sender and the engine.
//!
//! A line's latency runs from its *scheduled* time to its visibility at the
//! sink (no coordinated omission), so a generator that wakes late, or a
//! host that deschedules it, adds to the engine's latency. The generator
//! counts, per second, how many lines left more than 0.1, 0.5, 1, 2 and
//! 4 ms after their scheduled time (measured when the write that carries
//! them begins, so it includes any wait behind the previous write) and
//! how long its longest write took (a reader that stops
//! reading blocks it, and the lines behind it then leave late: that share
//! is the engine's). It reports the tally on its once-a-second stderr line;
//! the harness that started it adds up the seconds it measured
//! ([`SendLateness::merge`]) and prints the sender's share beside the
//! latencies. If more than 0.1% of lines left over 2 ms late, a p99.9 over
//! 2 ms is the sender's (or its host's) before the engine has read a byte.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The thresholds of [`SendLateness::late_over`], in microseconds.
pub const THRESHOLDS_US: [u64; 5] = [100, 500, 1_000, 2_000, 4_000];

/// Lateness of the lines sent over some seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendLateness {
    /// Lines sent.
    pub lines: u64,
    /// Lines whose write began more than `THRESHOLDS_US[i]` after their
    /// scheduled time.
    pub late_over: [u64; 5],
    /// The largest lateness of a line, in microseconds.
    pub max_late_us: u64,
    /// The longest write (with its flush), in microseconds.
    pub max_write_us: u64,
}

/// The marker before the tally on a report line.
const MARK: &str = "sent ";

impl SendLateness {
    /// Counts one line whose write began `late` after its scheduled time.
    pub fn record_line(&mut self, late: Duration) {
        let us = late.as_micros().min(u128::from(u64::MAX)) as u64;
        self.lines += 1;
        for (count, &t) in self.late_over.iter_mut().zip(&THRESHOLDS_US) {
            if us > t {
                *count += 1;
            }
        }
        self.max_late_us = self.max_late_us.max(us);
    }

    /// Counts one write (with its flush) that took `took`.
    pub fn record_write(&mut self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.max_write_us = self.max_write_us.max(us);
    }

    /// Adds `other`'s lines to these.
    pub fn merge(&mut self, other: &Self) {
        self.lines += other.lines;
        for (a, b) in self.late_over.iter_mut().zip(&other.late_over) {
            *a += b;
        }
        self.max_late_us = self.max_late_us.max(other.max_late_us);
        self.max_write_us = self.max_write_us.max(other.max_write_us);
    }

    /// The share of lines (0 to 1) that left more than `THRESHOLDS_US[i]`
    /// late (0 when none were sent).
    pub fn share_over(&self, i: usize) -> f64 {
        if self.lines == 0 {
            0.0
        } else {
            self.late_over[i] as f64 / self.lines as f64
        }
    }

    /// The tally as it ends a report line:
    /// `sent 100000 lines, late over 0.1/0.5/1/2/4 ms 3/1/0/0/0, max late
    /// 612 us, max write 25 us`.
    pub fn report(&self) -> String {
        let [a, b, c, d, e] = self.late_over;
        format!(
            "{MARK}{} lines, late over 0.1/0.5/1/2/4 ms {a}/{b}/{c}/{d}/{e}, max late {} us, max write {} us",
            self.lines, self.max_late_us, self.max_write_us
        )
    }

    /// Reads back the tally from a line that ends with [`report`](Self::report)'s
    /// text (`None` if it has none).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.rfind(MARK)? + MARK.len()..];
        let (lines, rest) = rest.split_once(" lines, late over 0.1/0.5/1/2/4 ms ")?;
        let (counts, rest) = rest.split_once(", max late ")?;
        let (max_late, rest) = rest.split_once(" us, max write ")?;
        let max_write = rest.trim_end().strip_suffix(" us")?;
        let mut late_over = [0u64; 5];
        let mut parts = counts.split('/');
        for slot in &mut late_over {
            *slot = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            lines: lines.parse().ok()?,
            late_over,
            max_late_us: max_late.parse().ok()?,
            max_write_us: max_write.parse().ok()?,
        })
    }

    /// One line for the harness's output: the share of lines sent over 1
    /// and 2 ms late, the largest lateness and the longest write.
    pub fn summary(&self) -> String {
        format!(
            "sender: {} lines, {:.3}% left >1 ms late, {:.3}% >2 ms, worst {:.2} ms late, longest write {:.2} ms",
            self.lines,
            100.0 * self.share_over(2),
            100.0 * self.share_over(3),
            self.max_late_us as f64 / 1e3,
            self.max_write_us as f64 / 1e3,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_over_each_threshold_they_pass() {
        let mut s = SendLateness::default();
        for us in [0, 100, 101, 600, 1_500, 2_001, 9_000] {
            s.record_line(Duration::from_micros(us));
        }
        s.record_write(Duration::from_micros(40));
        s.record_write(Duration::from_micros(7));
        assert_eq!(s.lines, 7);
        // 100 us is not over 100 us.
        assert_eq!(s.late_over, [5, 4, 3, 2, 1]);
        assert_eq!(s.max_late_us, 9_000);
        assert_eq!(s.max_write_us, 40);
        assert!((s.share_over(3) - 2.0 / 7.0).abs() < 1e-12);
        assert_eq!(SendLateness::default().share_over(3), 0.0);
    }

    #[test]
    fn a_report_reads_back_from_the_generators_line() {
        let mut s = SendLateness::default();
        for us in [3, 700, 4_500] {
            s.record_line(Duration::from_micros(us));
        }
        s.record_write(Duration::from_micros(12));
        let line = format!(
            "loadgen: connection 0: 3 s, seq 300000, behind schedule 0.002 ms, {}",
            s.report()
        );
        assert_eq!(SendLateness::parse(&line), Some(s));
        assert_eq!(SendLateness::parse("loadgen: connection 0: 3 s"), None);
        assert_eq!(
            SendLateness::parse(
                "sent 5 lines, late over 0.1/0.5/1/2/4 ms 1/2/3, max late 1 us, max write 1 us"
            ),
            None,
            "too few counts"
        );
    }

    #[test]
    fn merged_seconds_add_lines_and_keep_the_maxima() {
        let mut a = SendLateness::default();
        a.record_line(Duration::from_micros(2_500));
        a.record_write(Duration::from_micros(90));
        let mut b = SendLateness::default();
        b.record_line(Duration::from_micros(10));
        b.record_line(Duration::from_micros(600));
        b.record_write(Duration::from_micros(30));
        let mut sum = SendLateness::default();
        sum.merge(&a);
        sum.merge(&b);
        assert_eq!(sum.lines, 3);
        assert_eq!(sum.late_over, [2, 2, 1, 1, 0]);
        assert_eq!(sum.max_late_us, 2_500);
        assert_eq!(sum.max_write_us, 90);
    }
}
