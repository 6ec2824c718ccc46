//! Latency measured at commit, in bounded memory.
//!
//! When a sink's output becomes visible only when its epoch commits
//! (micro-batches, exactly-once sinks), a record's end-to-end latency is
//! `commit time - creation time`, and the commit time is known only later.
//! Every record of an epoch becomes visible at the same instant, so the
//! sink needs only the *distribution* of the epoch's creation times, not
//! each one: [`PendingLatency`] summarises them in two hdrhistograms as
//! they arrive, and turns them into latencies at commit
//! ([`PendingLatency::latencies_at`]). Its memory depends on the spread of
//! the creation times (logarithmically), never on the number of records.
//!
//! # Precision
//! Creation times are recorded relative to a pivot: the first creation time
//! of the epoch. A record created `v` before the pivot has latency
//! `commit - pivot + v`, so the histogram's relative error on `v` (about
//! 1/1000 with 3 significant digits) is at most that fraction of its
//! latency: exact within the histogram's precision. A record created `v`
//! after the pivot has latency `commit - pivot - v`; its error is the same
//! fraction of `v`, which is at most the span of the epoch's creation times.
//! The latencies of the records created early in an epoch (its median and
//! every higher percentile, when records arrive in creation order) are
//! therefore within the histogram's precision; the latency of a record
//! created last is within 1/1000 of the epoch's span.

use hdrhistogram::Histogram;

/// Significant digits of the creation-time histograms: the precision of
/// the latency histograms they feed.
const SIGFIG: u8 = 3;

/// The creation times of one epoch's records, summarised until it commits.
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PendingLatency {
    /// The first creation time recorded (`None`: nothing recorded yet).
    pivot: Option<u64>,
    /// `pivot - created` of records created at or before the pivot.
    before: Histogram<u64>,
    /// `created - pivot` of records created after it.
    after: Histogram<u64>,
}

impl Default for PendingLatency {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // Auto-resizing: it grows with the largest offset recorded, so an
    // epoch spanning milliseconds stays a few kilobytes.
    Histogram::new(SIGFIG).expect("3 significant digits are valid")
}

/// Records `n` times `value`, growing the histogram to fit it (only a
/// value past what a `u64` histogram can track is clamped).
fn grow_record(h: &mut Histogram<u64>, value: u64, n: u64) {
    if h.record_n(value, n).is_err() {
        h.saturating_record_n(value, n);
    }
}

impl PendingLatency {
    /// An empty summary.
    pub fn new() -> Self {
        Self {
            pivot: None,
            before: histogram(),
            after: histogram(),
        }
    }

    /// Records one creation time (nanoseconds since the Unix epoch); `0`
    /// (not stamped) is ignored.
    pub fn record(&mut self, created_ns: u64) {
        self.record_n(created_ns, 1);
    }

    fn record_n(&mut self, created_ns: u64, n: u64) {
        if created_ns == 0 || n == 0 {
            return;
        }
        let pivot = *self.pivot.get_or_insert(created_ns);
        if created_ns <= pivot {
            grow_record(&mut self.before, pivot - created_ns, n);
        } else {
            grow_record(&mut self.after, created_ns - pivot, n);
        }
    }

    /// Records the creation times of a batch.
    pub fn record_all(&mut self, created_ns: impl Iterator<Item = u64>) {
        for c in created_ns {
            self.record(c);
        }
    }

    /// Records summarised.
    pub fn len(&self) -> u64 {
        self.before.len() + self.after.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the latencies of every record summarised, had they all become
    /// visible at `commit_ns`, to `into` (nanoseconds, at least 1).
    pub fn latencies_at(&self, commit_ns: u64, into: &mut Histogram<u64>) {
        let Some(pivot) = self.pivot else {
            return;
        };
        let since_pivot = commit_ns.saturating_sub(pivot);
        for v in self.before.iter_recorded() {
            let offset = self.before.median_equivalent(v.value_iterated_to());
            let latency = since_pivot.saturating_add(offset).max(1);
            into.saturating_record_n(latency, v.count_at_value());
        }
        for v in self.after.iter_recorded() {
            let offset = self.after.median_equivalent(v.value_iterated_to());
            let latency = since_pivot.saturating_sub(offset).max(1);
            into.saturating_record_n(latency, v.count_at_value());
        }
    }

    /// Moves every record of `other` into this summary (re-recorded against
    /// this summary's pivot, so once more within the histogram's precision).
    pub fn absorb(&mut self, other: PendingLatency) {
        let Some(pivot) = other.pivot else {
            return;
        };
        for v in other.before.iter_recorded() {
            let offset = other.before.median_equivalent(v.value_iterated_to());
            self.record_n(pivot.saturating_sub(offset).max(1), v.count_at_value());
        }
        for v in other.after.iter_recorded() {
            let offset = other.after.median_equivalent(v.value_iterated_to());
            self.record_n(pivot.saturating_add(offset), v.count_at_value());
        }
    }
}

/// A histogram of latencies in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic jitter in `0..modulo`.
    fn jitter(i: u64, modulo: u64) -> u64 {
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) % modulo
    }

    /// The latencies of `created` at `commit`, exactly as the sink recorded
    /// them before: one histogram record per record.
    fn exact(created: &[u64], commit: u64) -> Histogram<u64> {
        let mut h = new_latency_histogram();
        for &c in created {
            h.record((commit - c).max(1)).unwrap();
        }
        h
    }

    fn summarised(created: &[u64], commit: u64) -> Histogram<u64> {
        let mut p = PendingLatency::new();
        p.record_all(created.iter().copied());
        assert_eq!(p.len(), created.len() as u64);
        let mut h = new_latency_histogram();
        p.latencies_at(commit, &mut h);
        h
    }

    /// Each quantile of the summary is within the precision of two 3-digit
    /// histograms (the summary's and the latency histogram's) of the exact
    /// one, plus `extra` nanoseconds.
    fn assert_close(exact: &Histogram<u64>, got: &Histogram<u64>, q: f64, extra: u64) {
        let (e, g) = (exact.value_at_quantile(q), got.value_at_quantile(q));
        let tolerance = e / 500 + extra + 1;
        assert!(
            e.abs_diff(g) <= tolerance,
            "quantile {q}: exact {e} ns, summary {g} ns, tolerance {tolerance} ns"
        );
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn a_micro_batch_matches_the_exact_percentiles() {
        // 100 ms of records at 1 M/s, slightly out of order (two upstream
        // instances interleaved), committed 5 ms after the last.
        let created: Vec<u64> = (0..100_000u64)
            .map(|i| T0 + i * 1_000 + jitter(i, 50_000))
            .collect();
        let commit = T0 + 105_000_000;
        let (e, g) = (exact(&created, commit), summarised(&created, commit));
        assert_eq!(e.len(), g.len());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_close(&e, &g, q, 0);
        }
        // Below the median: within 1/1000 of the epoch's span (100 ms).
        for q in [0.0, 0.01, 0.1, 0.25] {
            assert_close(&e, &g, q, 100_000);
        }
    }

    #[test]
    fn a_backlog_created_before_the_first_record_is_exact() {
        // Under overload records arrive seconds after their creation, and a
        // straggler from another upstream instance may be older than the
        // first one the sink saw: everything before the pivot is exact.
        let mut created: Vec<u64> = vec![T0 + 5_000_000_000];
        created.extend((0..50_000u64).map(|i| T0 + i * 100_000 + jitter(i, 1_000_000)));
        let commit = T0 + 9_000_000_000;
        let (e, g) = (exact(&created, commit), summarised(&created, commit));
        for q in [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_close(&e, &g, q, 0);
        }
    }

    #[test]
    fn memory_does_not_grow_with_the_records() {
        let mut p = PendingLatency::new();
        p.record_all((0..10_000u64).map(|i| T0 + i * 10_000));
        let small = p.before.distinct_values() + p.after.distinct_values();
        p.record_all((0..1_000_000u64).map(|i| T0 + (i % 10_000) * 10_000));
        let large = p.before.distinct_values() + p.after.distinct_values();
        assert_eq!(small, large, "same values, same histogram size");
        assert_eq!(p.len(), 1_010_000);
    }

    #[test]
    fn absorbing_an_older_epoch_keeps_its_records() {
        let first: Vec<u64> = (0..1_000u64).map(|i| T0 + i * 1_000_000).collect();
        let second: Vec<u64> = (1_000..2_000u64).map(|i| T0 + i * 1_000_000).collect();
        let mut a = PendingLatency::new();
        a.record_all(first.iter().copied());
        let mut b = PendingLatency::new();
        b.record_all(second.iter().copied());
        b.absorb(a);
        let commit = T0 + 2_500_000_000;
        let mut all = first;
        all.extend(second);
        let mut g = new_latency_histogram();
        b.latencies_at(commit, &mut g);
        let e = exact(&all, commit);
        assert_eq!(e.len(), g.len());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_close(&e, &g, q, 0);
        }
        // Zero stamps are not records.
        b.record(0);
        assert_eq!(b.len(), 2_000);
        assert!(!b.is_empty() && PendingLatency::new().is_empty());
    }
}
