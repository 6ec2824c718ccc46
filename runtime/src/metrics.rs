//! Per-instance metrics.
//!
//! Each task owns an [`InstanceMetrics`]: atomic counters the query handle
//! reads for [`progress`](crate::Query::progress), mirrored into the
//! `metrics` crate (counters `eddy_records_in_total` / `eddy_records_out_total`,
//! gauge `eddy_edge_queued_records`, labelled by operator and instance) so any
//! installed recorder (Prometheus) sees them. Counters move once per batch,
//! never per record. Sinks record end-to-end latency (now minus the record's
//! creation stamp) into an hdrhistogram, one clock read per batch.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

pub use crate::commit_latency::new_latency_histogram;
use crate::commit_latency::PendingLatency;

/// Counters of one operator instance.
pub struct InstanceMetrics {
    /// Operator name.
    pub operator: String,
    /// Instance index.
    pub instance: usize,
    records_in: AtomicU64,
    records_out: AtomicU64,
    in_counter: metrics::Counter,
    out_counter: metrics::Counter,
    /// Records queued on each input edge of this instance (sent, not yet received).
    pub(crate) input_queues: Mutex<Vec<Arc<AtomicI64>>>,
    pub(crate) latency: Option<Mutex<Histogram<u64>>>,
    last_alignment_ns: AtomicU64,
    max_alignment_ns: AtomicU64,
    late_records: AtomicU64,
    dropped_records: AtomicU64,
    watermark: AtomicI64,
    max_event_time: AtomicI64,
}

impl InstanceMetrics {
    pub(crate) fn new(operator: &str, instance: usize, is_sink: bool) -> Self {
        let labels = [
            ("operator", operator.to_string()),
            ("instance", instance.to_string()),
        ];
        Self {
            operator: operator.to_string(),
            instance,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            in_counter: metrics::counter!("eddy_records_in_total", &labels),
            out_counter: metrics::counter!("eddy_records_out_total", &labels),
            input_queues: Mutex::new(Vec::new()),
            latency: is_sink.then(|| Mutex::new(new_latency_histogram())),
            last_alignment_ns: AtomicU64::new(0),
            max_alignment_ns: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
            watermark: AtomicI64::new(crate::record::NO_TIMESTAMP),
            max_event_time: AtomicI64::new(crate::record::NO_TIMESTAMP),
        }
    }

    /// Counts `n` records read.
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
        self.in_counter.increment(n as u64);
    }

    /// Counts `n` records emitted.
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
        self.out_counter.increment(n as u64);
    }

    /// Counts `n` late records (behind the watermark, dropped or sent to
    /// the side output).
    pub fn add_late(&self, n: u64) {
        self.late_records.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("eddy_late_records_total", "operator" => self.operator.clone())
            .increment(n);
    }

    /// Late records counted so far.
    pub fn late_records(&self) -> u64 {
        self.late_records.load(Ordering::Relaxed)
    }

    /// Counts `n` records the operator dropped on purpose (duplicates).
    pub fn add_dropped(&self, n: u64) {
        self.dropped_records.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("eddy_dropped_records_total", "operator" => self.operator.clone())
            .increment(n);
    }

    /// Records dropped on purpose so far.
    pub fn dropped_records(&self) -> u64 {
        self.dropped_records.load(Ordering::Relaxed)
    }

    /// Records the input watermark.
    pub fn set_watermark(&self, w: crate::record::Timestamp) {
        self.watermark.store(w, Ordering::Relaxed);
    }

    /// The input watermark ([`NO_TIMESTAMP`](crate::record::NO_TIMESTAMP)
    /// before the first).
    pub fn watermark(&self) -> crate::record::Timestamp {
        self.watermark.load(Ordering::Relaxed)
    }

    /// Records the highest event time a source instance has stamped.
    pub fn set_max_event_time(&self, t: crate::record::Timestamp) {
        self.max_event_time.store(t, Ordering::Relaxed);
    }

    /// The highest event time this (source) instance has stamped
    /// ([`NO_TIMESTAMP`](crate::record::NO_TIMESTAMP) before the first, and
    /// for every other instance).
    pub fn max_event_time(&self) -> crate::record::Timestamp {
        self.max_event_time.load(Ordering::Relaxed)
    }

    /// Records how long the last marker alignment held inputs back.
    pub fn record_alignment(&self, d: std::time::Duration) {
        let ns = d.as_nanos() as u64;
        self.last_alignment_ns.store(ns, Ordering::Relaxed);
        self.max_alignment_ns.fetch_max(ns, Ordering::Relaxed);
        metrics::histogram!("eddy_alignment_seconds").record(d.as_secs_f64());
    }

    /// Alignment time of the last marker, nanoseconds.
    pub fn last_alignment_ns(&self) -> u64 {
        self.last_alignment_ns.load(Ordering::Relaxed)
    }

    /// Longest alignment so far, nanoseconds.
    pub fn max_alignment_ns(&self) -> u64 {
        self.max_alignment_ns.load(Ordering::Relaxed)
    }

    /// Records read so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Records emitted so far.
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Ordering::Relaxed)
    }

    /// Records queued on this instance's input edges right now.
    pub fn queued_input(&self) -> u64 {
        let q: i64 = self
            .input_queues
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        q.max(0) as u64
    }

    /// Records the latencies of an epoch's records that became visible at
    /// `now_ns` (latency measured at commit).
    pub(crate) fn record_committed(&self, now_ns: u64, pending: &PendingLatency) {
        if let Some(h) = &self.latency {
            pending.latencies_at(now_ns, &mut h.lock().expect("latency lock"));
        }
    }

    /// Records latencies of a batch that became visible at `now_ns`.
    pub(crate) fn record_latencies(&self, now_ns: u64, created: impl Iterator<Item = u64>) {
        if let Some(h) = &self.latency {
            let mut h = h.lock().expect("latency lock");
            for c in created {
                if c != 0 {
                    h.saturating_record(now_ns.saturating_sub(c).max(1));
                }
            }
        }
    }
}

/// Metrics of every instance of a query.
#[derive(Default)]
pub struct QueryMetrics {
    pub(crate) instances: Mutex<Vec<Arc<InstanceMetrics>>>,
}

impl QueryMetrics {
    pub(crate) fn register(&self, m: InstanceMetrics) -> Arc<InstanceMetrics> {
        let m = Arc::new(m);
        self.instances.lock().expect("metrics lock").push(m.clone());
        m
    }

    /// All instances, in registration order.
    pub fn instances(&self) -> Vec<Arc<InstanceMetrics>> {
        self.instances.lock().expect("metrics lock").clone()
    }

    /// The latency histograms of all sinks merged.
    pub fn merged_latency(&self) -> Histogram<u64> {
        let mut all = new_latency_histogram();
        for m in self.instances() {
            if let Some(h) = &m.latency {
                let _ = all.add(&*h.lock().expect("latency lock"));
            }
        }
        all
    }

    /// The latency histograms of the instances of sink `operator` merged.
    pub fn merged_latency_of(&self, operator: &str) -> Histogram<u64> {
        let mut all = new_latency_histogram();
        for m in self.instances() {
            if let (true, Some(h)) = (m.operator == operator, &m.latency) {
                let _ = all.add(&*h.lock().expect("latency lock"));
            }
        }
        all
    }

    /// Clears the sinks' latency histograms (e.g. after a warm-up).
    pub fn reset_latency(&self) {
        for m in self.instances() {
            if let Some(h) = &m.latency {
                h.lock().expect("latency lock").reset();
            }
        }
    }
}
