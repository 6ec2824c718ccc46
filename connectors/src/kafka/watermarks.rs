//! Per-partition event-time watermarks of a Kafka source instance.
//!
//! Each assigned partition's watermark is the highest Kafka timestamp it
//! delivered minus the allowed out-of-orderness. The instance's watermark
//! is the minimum over its active partitions: a partition that delivered
//! nothing for the idle timeout (or never delivered since it was assigned
//! that long ago) stops holding the watermark back, and rejoins when it
//! delivers again. The watermark never goes backwards: a partition that
//! rejoins behind it does not pull it back (its records are late).
//!
//! In-band, the source reports [`PartitionWatermarks::newest_minimum`]
//! through [`eddy_runtime::Source::watermark`] after every poll, and the
//! runtime's watermark generator never passes it less its bound. The source
//! also publishes each instance's watermark through a [`WatermarkHandle`]
//! and the gauge `eddy_kafka_watermark_ms{source,instance}` (monitoring).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::offsets::TopicPartition;

/// How a source derives watermarks from its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind a partition's newest timestamp its records may
    /// arrive, in milliseconds.
    pub out_of_orderness_ms: i64,
    /// A partition silent for this long stops holding the watermark back.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_ts: Option<i64>,
    last_seen: Instant,
}

/// The watermark state of one source instance (pure logic: time is
/// passed in).
#[derive(Debug, Clone)]
pub struct PartitionWatermarks {
    config: WatermarkConfig,
    partitions: BTreeMap<TopicPartition, Partition>,
    current: Option<i64>,
}

impl PartitionWatermarks {
    /// No partitions yet.
    pub fn new(config: WatermarkConfig) -> Self {
        Self {
            config,
            partitions: BTreeMap::new(),
            current: None,
        }
    }

    /// `tp` is assigned at `now`: it holds the watermark back until it
    /// delivers or idles.
    pub fn assign(&mut self, tp: TopicPartition, now: Instant) {
        self.partitions.entry(tp).or_insert(Partition {
            max_ts: None,
            last_seen: now,
        });
    }

    /// `tp` delivered a record with timestamp `ts` at `now`.
    pub fn observe(&mut self, tp: &TopicPartition, ts: i64, now: Instant) {
        let p = self.partitions.entry(tp.clone()).or_insert(Partition {
            max_ts: None,
            last_seen: now,
        });
        p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
        p.last_seen = now;
    }

    /// The in-band cap at `now` ([`eddy_runtime::Source::watermark`]): the
    /// lowest newest timestamp over active partitions, `NO_TIMESTAMP` while
    /// an active partition has delivered nothing, `None` when every
    /// partition is idle (or none is assigned).
    pub fn newest_minimum(&self, now: Instant) -> Option<i64> {
        let mut min: Option<i64> = None;
        for p in self.partitions.values() {
            if now.saturating_duration_since(p.last_seen) >= self.config.idle_timeout {
                continue;
            }
            let newest = p.max_ts.unwrap_or(eddy_runtime::record::NO_TIMESTAMP);
            min = Some(min.map_or(newest, |m| m.min(newest)));
        }
        min
    }

    /// The instance's watermark at `now` (milliseconds since the Unix
    /// epoch), or `None` while no active partition has delivered.
    pub fn current(&mut self, now: Instant) -> Option<i64> {
        let mut min: Option<i64> = None;
        for p in self.partitions.values() {
            let idle = now.saturating_duration_since(p.last_seen) >= self.config.idle_timeout;
            if idle {
                continue;
            }
            match p.max_ts {
                // An active partition that has not delivered yet: nothing
                // can be said until it does or idles.
                None => return self.current,
                Some(m) => {
                    let wm = m.saturating_sub(self.config.out_of_orderness_ms);
                    min = Some(min.map_or(wm, |x| x.min(wm)));
                }
            }
        }
        if let Some(m) = min {
            self.current = Some(self.current.map_or(m, |c| c.max(m)));
        }
        self.current
    }
}

/// Where instances publish their watermarks; clones share it.
#[derive(Debug, Clone, Default)]
pub struct WatermarkHandle {
    per_instance: Arc<Mutex<BTreeMap<usize, i64>>>,
}

impl WatermarkHandle {
    /// An empty handle.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn publish(&self, source: &str, instance: usize, watermark: i64) {
        let mut m = self.per_instance.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(instance, watermark);
        metrics::gauge!(
            "eddy_kafka_watermark_ms",
            "source" => source.to_string(),
            "instance" => instance.to_string()
        )
        .set(watermark as f64);
    }

    /// Each instance's last published watermark.
    pub fn per_instance(&self) -> BTreeMap<usize, i64> {
        self.per_instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The source's watermark: the minimum over its instances (`None`
    /// until every one of `parallelism` instances published).
    pub fn minimum(&self, parallelism: usize) -> Option<i64> {
        let m = self.per_instance();
        (m.len() >= parallelism)
            .then(|| m.values().copied().min())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn minimum_over_active_partitions_idle_ones_excluded_never_backwards() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = PartitionWatermarks::new(WatermarkConfig {
            out_of_orderness_ms: 10,
            idle_timeout: Duration::from_millis(1000),
        });
        w.assign(tp(0), at(0));
        w.assign(tp(1), at(0));
        assert_eq!(w.current(at(0)), None);
        w.observe(&tp(0), 500, at(10));
        // Partition 1 has not delivered and is not idle yet: no watermark.
        assert_eq!(w.current(at(20)), None);
        w.observe(&tp(1), 300, at(30));
        assert_eq!(w.current(at(40)), Some(290));
        w.observe(&tp(1), 800, at(50));
        assert_eq!(w.current(at(60)), Some(490));
        // Partition 0 goes silent: after the idle timeout only 1 counts.
        assert_eq!(w.current(at(1011)), Some(790));
        // It rejoins behind the watermark: the watermark stays.
        w.observe(&tp(0), 600, at(1100));
        assert_eq!(w.current(at(1100)), Some(790));
        w.observe(&tp(0), 2000, at(1200));
        w.observe(&tp(1), 1500, at(1200));
        assert_eq!(w.current(at(1200)), Some(1490));
        // Everything idle: the watermark holds.
        assert_eq!(w.current(at(5000)), Some(1490));
    }

    #[test]
    fn the_in_band_cap_is_the_slowest_active_partition() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = PartitionWatermarks::new(WatermarkConfig {
            out_of_orderness_ms: 10,
            idle_timeout: Duration::from_millis(1000),
        });
        assert_eq!(w.newest_minimum(at(0)), None, "nothing assigned");
        w.assign(tp(0), at(0));
        w.assign(tp(1), at(0));
        w.observe(&tp(0), 500, at(10));
        assert_eq!(
            w.newest_minimum(at(20)),
            Some(eddy_runtime::record::NO_TIMESTAMP),
            "partition 1 has not delivered"
        );
        w.observe(&tp(1), 300, at(30));
        assert_eq!(w.newest_minimum(at(40)), Some(300));
        assert_eq!(w.newest_minimum(at(1020)), Some(300), "0 idle, 1 not yet");
        assert_eq!(w.newest_minimum(at(5000)), None, "all idle");
    }

    #[test]
    fn the_handle_takes_the_minimum_once_every_instance_published() {
        let h = WatermarkHandle::new();
        h.publish("s", 0, 100);
        assert_eq!(h.minimum(2), None);
        h.publish("s", 1, 50);
        assert_eq!(h.minimum(2), Some(50));
        h.publish("s", 1, 150);
        assert_eq!(h.minimum(2), Some(100));
    }
}
