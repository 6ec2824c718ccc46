//! The simulated fleet of `eddy demo iot`: machines with three sensors
//! each (temperature, vibration, pressure), every sensor reporting every
//! [`FleetConfig::period_ms`] of event time, with a per-machine offset, a
//! daily cycle and Gaussian noise, and faults injected into a share of the
//! sensors: spikes, stuck sensors, slow drifts and dead sensors that go
//! silent.
//!
//! # Determinism
//! Everything is a pure function of the seed and a reading's sequence
//! number: which sensor and time slot it is, its value, how far it is
//! delayed in transport (out of order within a bound, or late beyond it),
//! and the fault schedule (the ground truth the demo is scored against).
//! So the [`FleetSource`](super::source::FleetSource) can seek back to
//! any offset after a crash and regenerate exactly the readings that
//! followed it, and a test can recompute the faults from the options
//! alone.
//!
//! # Time
//! Sequence number `seq` is sensor `seq % sensors` in slot
//! `seq / sensors`, measured at the slot's time `START_MS + slot *
//! period_ms` less its transport delay: up to `max_disorder_ms` for most
//! readings (out of order, but within the watermark bound), `late_by_ms`
//! for a `late_share` of them (behind the watermark: late). Event time is
//! simulated: it runs as fast as `--rate` readings per second carry it.

use std::f64::consts::TAU;

use eddy::runtime::record::Timestamp;
use serde::{Deserialize, Serialize};

/// Event time of the first slot: 2026-01-01T00:00:00Z.
pub const START_MS: Timestamp = 1_767_225_600_000;
/// No fault starts in the first this many ms (the rules learn each
/// sensor's normal behaviour first).
pub const WARMUP_MS: i64 = 20_000;
/// No fault starts in the last this many ms of a bounded run (time to
/// detect it).
pub const FAULT_TAIL_MS: i64 = 15_000;
/// Unbounded runs: faults start within the first this many ms.
pub const UNBOUNDED_FAULT_SPAN_MS: i64 = 600_000;
/// A spike affects this many consecutive readings of its sensor.
pub const SPIKE_READINGS: u64 = 3;
/// A stuck sensor repeats one value for this long, then recovers.
pub const STUCK_MS: i64 = 30_000;
/// Noise is clipped at this many standard deviations.
const NOISE_CLIP: f64 = 4.5;

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SensorKind {
    /// Bearing temperature, °C.
    Temperature,
    /// Vibration velocity, mm/s.
    Vibration,
    /// Line pressure, bar.
    Pressure,
    /// A recorded series replayed with `--replay` (no profile: no
    /// threshold, no noise floor).
    Series,
}

/// Sensor ids from this one up are replayed series, not fleet sensors.
pub const SERIES_SENSOR: u32 = 1 << 31;

/// How a sensor kind behaves when healthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Mean value over the fleet.
    pub base: f64,
    /// Each machine's offset from `base` is within ± this.
    pub machine_spread: f64,
    /// Amplitude of the daily cycle.
    pub daily_amplitude: f64,
    /// Standard deviation of a reading's noise.
    pub noise_sigma: f64,
    /// Unit, for display.
    pub unit: &'static str,
}

impl SensorKind {
    /// Every kind, in sensor order within a machine.
    pub const ALL: [SensorKind; 3] = [
        SensorKind::Temperature,
        SensorKind::Vibration,
        SensorKind::Pressure,
    ];

    /// The kind of sensor `sensor` (machine `sensor / 3`; from
    /// [`SERIES_SENSOR`] on, a replayed series).
    pub fn of(sensor: u32) -> Self {
        if sensor >= SERIES_SENSOR {
            SensorKind::Series
        } else {
            Self::ALL[(sensor % 3) as usize]
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Vibration => "vibration",
            SensorKind::Pressure => "pressure",
            SensorKind::Series => "series",
        }
    }

    /// Its healthy behaviour.
    pub fn profile(self) -> Profile {
        match self {
            SensorKind::Temperature => Profile {
                base: 65.0,
                machine_spread: 5.0,
                daily_amplitude: 3.0,
                noise_sigma: 0.4,
                unit: "°C",
            },
            SensorKind::Vibration => Profile {
                base: 4.0,
                machine_spread: 0.8,
                daily_amplitude: 0.4,
                noise_sigma: 0.15,
                unit: "mm/s",
            },
            SensorKind::Pressure => Profile {
                base: 6.0,
                machine_spread: 0.4,
                daily_amplitude: 0.15,
                noise_sigma: 0.05,
                unit: "bar",
            },
            SensorKind::Series => Profile {
                base: 0.0,
                machine_spread: 0.0,
                daily_amplitude: 0.0,
                noise_sigma: 0.0,
                unit: "",
            },
        }
    }
}

/// One reading of one sensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The sensor (machine `sensor / 3`, kind [`SensorKind::of`]).
    pub sensor: u32,
    /// When it was measured (event time), ms.
    pub ts: Timestamp,
    /// The value, rounded to 1/1000 of the unit.
    pub value: f64,
}

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// A few readings far above the normal range.
    Spike,
    /// The sensor repeats one value ([`STUCK_MS`]).
    Stuck,
    /// The value drifts away at a steady rate until the end.
    Drift,
    /// The sensor stops reporting for good.
    Dead,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Spike,
        FaultKind::Stuck,
        FaultKind::Drift,
        FaultKind::Dead,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Stuck => "stuck",
            FaultKind::Drift => "drift",
            FaultKind::Dead => "dead",
        }
    }
}

/// One injected fault: the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fault {
    /// The sensor.
    pub sensor: u32,
    /// What goes wrong.
    pub kind: FaultKind,
    /// Event time it starts (a spike: its first affected reading's).
    pub start_ms: Timestamp,
    /// Event time it ends (exclusive); `i64::MAX`: never.
    pub end_ms: Timestamp,
    /// A spike: the amount added; a drift: the change per second; a stuck
    /// sensor: the value it repeats.
    pub magnitude: f64,
    /// A spike: the slot of its first reading.
    pub first_slot: u64,
}

/// The fleet's options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Sensors (three per machine; fewer than [`SERIES_SENSOR`]).
    pub sensors: u32,
    /// Every sensor reports every this many ms of event time.
    pub period_ms: i64,
    /// Seconds of event time to simulate; `None`: unbounded.
    pub seconds: Option<u64>,
    /// Share of sensors given a fault (kinds dealt in turn).
    pub fault_share: f64,
    /// Share of readings delayed by `late_by_ms` (late).
    pub late_share: f64,
    /// Other readings are delayed by up to this many ms (out of order).
    pub max_disorder_ms: i64,
    /// Delay of the late readings, ms.
    pub late_by_ms: i64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            sensors: 3_000,
            period_ms: 100,
            seconds: Some(120),
            fault_share: 0.02,
            late_share: 0.001,
            max_disorder_ms: 200,
            late_by_ms: 3_000,
        }
    }
}

/// Splitmix64: a well-mixed pure function.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal number from a hash (Box-Muller), clipped.
fn gaussian(h: u64) -> f64 {
    let u1 = unit(h).max(1e-12);
    let u2 = unit(mix(h));
    ((-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()).clamp(-NOISE_CLIP, NOISE_CLIP)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Hash domains, so that different uses of one seed are independent.
const D_MACHINE: u64 = 0x6d61_6368;
const D_PHASE: u64 = 0x7068_6173;
const D_NOISE: u64 = 0x6e6f_6973;
const D_DELAY: u64 = 0x6465_6c61;
const D_FAULT: u64 = 0x6661_756c;

/// The fleet: its options and its fault schedule.
#[derive(Debug, Clone)]
pub struct Fleet {
    cfg: FleetConfig,
    faults: Vec<Fault>,
    /// Index into `faults` per sensor.
    by_sensor: Vec<Option<usize>>,
}

impl Fleet {
    /// The fleet of `cfg`, with its faults drawn from the seed.
    pub fn new(mut cfg: FleetConfig) -> Self {
        cfg.sensors = cfg.sensors.clamp(1, SERIES_SENSOR - 1);
        cfg.period_ms = cfg.period_ms.max(1);
        cfg.max_disorder_ms = cfg.max_disorder_ms.max(0);
        let mut fleet = Self {
            by_sensor: vec![None; cfg.sensors as usize],
            cfg,
            faults: Vec::new(),
        };
        fleet.faults = fleet.draw_faults();
        for (i, f) in fleet.faults.iter().enumerate() {
            fleet.by_sensor[f.sensor as usize] = Some(i);
        }
        fleet
    }

    /// The options.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// The injected faults, by sensor.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Slots in the run (`None`: unbounded).
    pub fn slots(&self) -> Option<u64> {
        self.cfg
            .seconds
            .map(|s| (s as i64 * 1000 / self.cfg.period_ms) as u64)
    }

    /// Readings in the run, dead sensors' missing ones included (`None`:
    /// unbounded): the last sequence number plus one.
    pub fn total_seqs(&self) -> Option<u64> {
        self.slots().map(|s| s * self.cfg.sensors as u64)
    }

    /// Event time the run ends at (`i64::MAX`: never).
    pub fn end_ms(&self) -> Timestamp {
        match self.slots() {
            Some(s) => START_MS + s as i64 * self.cfg.period_ms,
            None => i64::MAX,
        }
    }

    fn slot_ms(&self, slot: u64) -> Timestamp {
        START_MS + slot as i64 * self.cfg.period_ms
    }

    fn seq_of(&self, sensor: u32, slot: u64) -> u64 {
        slot * self.cfg.sensors as u64 + sensor as u64
    }

    /// Transport delay of reading `seq`, ms, and whether it is a late one.
    fn delay(&self, seq: u64) -> (i64, bool) {
        let h = mix(self.cfg.seed ^ D_DELAY ^ mix(seq));
        // The first slot is never late: nothing precedes it to be late against.
        let late = seq >= self.cfg.sensors as u64 && unit(h) < self.cfg.late_share;
        if late {
            (self.cfg.late_by_ms, true)
        } else {
            (
                (mix(h) % (self.cfg.max_disorder_ms as u64 + 1)) as i64,
                false,
            )
        }
    }

    /// Whether reading `seq` is injected late (delayed by `late_by_ms`).
    pub fn is_late(&self, seq: u64) -> bool {
        self.delay(seq).1
    }

    /// Event time of reading `seq`.
    pub fn ts_of(&self, seq: u64) -> Timestamp {
        self.slot_ms(seq / self.cfg.sensors as u64) - self.delay(seq).0
    }

    /// The healthy value of `sensor` at `ts`, before noise.
    pub fn clean_value(&self, sensor: u32, ts: Timestamp) -> f64 {
        let kind = SensorKind::of(sensor);
        let p = kind.profile();
        let machine = (sensor / 3) as u64;
        let key = mix(self.cfg.seed ^ mix(machine ^ ((kind as u64) << 40)));
        let offset = (unit(mix(key ^ D_MACHINE)) * 2.0 - 1.0) * p.machine_spread;
        let phase = unit(mix(key ^ D_PHASE)) * TAU;
        let day = (ts - START_MS) as f64 / 86_400_000.0 * TAU;
        p.base + offset + p.daily_amplitude * (day + phase).sin()
    }

    /// The healthy reading of `sensor` in `slot` at `ts`: clean value plus
    /// noise, rounded.
    fn healthy(&self, sensor: u32, slot: u64, ts: Timestamp) -> f64 {
        let sigma = SensorKind::of(sensor).profile().noise_sigma;
        let h = mix(self.cfg.seed ^ D_NOISE ^ mix(self.seq_of(sensor, slot)));
        round3(self.clean_value(sensor, ts) + sigma * gaussian(h))
    }

    /// Reading `seq`, or `None` when its sensor is dead by then.
    pub fn reading(&self, seq: u64) -> Option<Reading> {
        let n = self.cfg.sensors as u64;
        let (slot, sensor) = (seq / n, (seq % n) as u32);
        let ts = self.ts_of(seq);
        let mut value = self.healthy(sensor, slot, ts);
        if let Some(f) = self.fault_of(sensor) {
            match f.kind {
                FaultKind::Dead if self.slot_ms(slot) >= f.start_ms => return None,
                FaultKind::Spike
                    if (f.first_slot..f.first_slot + SPIKE_READINGS).contains(&slot) =>
                {
                    value = round3(value + f.magnitude)
                }
                FaultKind::Stuck if (f.start_ms..f.end_ms).contains(&ts) => value = f.magnitude,
                FaultKind::Drift if ts >= f.start_ms => {
                    value = round3(value + f.magnitude * (ts - f.start_ms) as f64 / 1000.0)
                }
                _ => {}
            }
        }
        Some(Reading { sensor, ts, value })
    }

    /// The fault of `sensor`, if it has one.
    pub fn fault_of(&self, sensor: u32) -> Option<&Fault> {
        self.by_sensor
            .get(sensor as usize)
            .copied()
            .flatten()
            .map(|i| &self.faults[i])
    }

    /// The fault schedule: `fault_share` of the sensors, chosen by a seeded
    /// shuffle, kinds dealt in turn, start times uniform over
    /// `[WARMUP_MS, end - FAULT_TAIL_MS)`.
    fn draw_faults(&self) -> Vec<Fault> {
        let n = self.cfg.sensors as u64;
        let count = ((self.cfg.fault_share.clamp(0.0, 1.0) * n as f64).round() as u64).min(n);
        let span = match self.cfg.seconds {
            Some(s) => s as i64 * 1000 - FAULT_TAIL_MS - WARMUP_MS,
            None => UNBOUNDED_FAULT_SPAN_MS,
        };
        if count == 0 || span <= 0 {
            return Vec::new();
        }
        // A partial Fisher-Yates shuffle picks `count` distinct sensors.
        let mut sensors: Vec<u32> = (0..self.cfg.sensors).collect();
        let mut h = mix(self.cfg.seed ^ D_FAULT);
        for i in 0..count as usize {
            h = mix(h);
            let j = i + (h % (n - i as u64)) as usize;
            sensors.swap(i, j);
        }
        let mut faults: Vec<Fault> = sensors[..count as usize]
            .iter()
            .enumerate()
            .map(|(i, &sensor)| {
                let h = mix(self.cfg.seed ^ D_FAULT ^ mix(sensor as u64 + 1));
                let kind = FaultKind::ALL[i % FaultKind::ALL.len()];
                let start = START_MS + WARMUP_MS + (h % span as u64) as i64;
                self.fault(sensor, kind, start, mix(h))
            })
            .collect();
        faults.sort_by_key(|f| f.sensor);
        faults
    }

    fn fault(&self, sensor: u32, kind: FaultKind, start: Timestamp, h: u64) -> Fault {
        let p = SensorKind::of(sensor).profile();
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        let mut f = Fault {
            sensor,
            kind,
            start_ms: start,
            end_ms: i64::MAX,
            magnitude: 0.0,
            first_slot: 0,
        };
        match kind {
            FaultKind::Spike => {
                // Far above anything healthy, even from the lowest healthy
                // value: the threshold table's limit is 8 sigma past the
                // healthy range, a spike reaches 15.5 sigma past it.
                f.magnitude = 2.0 * (p.machine_spread + p.daily_amplitude) + 20.0 * p.noise_sigma;
                let slot = ((start - START_MS) / self.cfg.period_ms) as u64;
                let seqs = (slot..slot + SPIKE_READINGS).map(|s| self.seq_of(sensor, s));
                let ts: Vec<i64> = seqs.map(|s| self.ts_of(s)).collect();
                f.first_slot = slot;
                f.start_ms = ts.iter().copied().min().unwrap_or(start);
                f.end_ms = ts.iter().copied().max().unwrap_or(start) + 1;
            }
            FaultKind::Stuck => {
                let slot = ((start - START_MS) / self.cfg.period_ms) as u64;
                f.magnitude = self.healthy(sensor, slot, start);
                f.end_ms = start + STUCK_MS;
            }
            FaultKind::Drift => f.magnitude = sign * p.noise_sigma,
            FaultKind::Dead => {}
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Fleet {
        Fleet::new(FleetConfig {
            sensors: 300,
            seconds: Some(60),
            fault_share: 0.1,
            late_share: 0.01,
            ..Default::default()
        })
    }

    #[test]
    fn readings_are_a_pure_function_of_seed_and_sequence_number() {
        let (a, b) = (small(), small());
        for seq in (0..180_000).step_by(997) {
            assert_eq!(a.reading(seq), b.reading(seq));
        }
        let other = Fleet::new(FleetConfig {
            seed: 2,
            ..small().cfg
        });
        assert_ne!(a.reading(12_345), other.reading(12_345));
    }

    #[test]
    fn faults_are_dealt_evenly_and_start_after_the_warm_up() {
        let f = small();
        assert_eq!(f.faults().len(), 30);
        for kind in FaultKind::ALL {
            let n = f.faults().iter().filter(|x| x.kind == kind).count();
            assert!((7..=8).contains(&n), "{kind:?}: {n}");
        }
        for x in f.faults() {
            assert!(x.start_ms >= START_MS + WARMUP_MS - 300, "{x:?}");
            assert!(x.start_ms < f.end_ms() - FAULT_TAIL_MS, "{x:?}");
        }
    }

    #[test]
    fn faults_change_the_readings_as_documented() {
        let f = small();
        let n = f.cfg.sensors as u64;
        for x in f.faults() {
            let of_sensor = (0..f.slots().unwrap()).map(|slot| slot * n + x.sensor as u64);
            let readings: Vec<Reading> = of_sensor.filter_map(|s| f.reading(s)).collect();
            match x.kind {
                FaultKind::Dead => assert!(readings.iter().all(|r| r.ts < x.start_ms)),
                FaultKind::Stuck => {
                    let during = readings
                        .iter()
                        .filter(|r| (x.start_ms..x.end_ms).contains(&r.ts));
                    let values: Vec<f64> = during.map(|r| r.value).collect();
                    assert!(
                        values.len() >= 140,
                        "{x:?}: {} stuck readings",
                        values.len()
                    );
                    assert!(values.iter().all(|&v| v == x.magnitude), "{x:?}");
                }
                FaultKind::Spike => {
                    let limit = x.magnitude * 0.5 + SensorKind::of(x.sensor).profile().base;
                    let high = readings.iter().filter(|r| r.value > limit).count();
                    assert_eq!(high as u64, SPIKE_READINGS, "{x:?}");
                }
                FaultKind::Drift => {
                    let last = readings.last().unwrap();
                    let moved = (last.value - f.clean_value(x.sensor, last.ts)).abs();
                    assert!(moved > 5.0 * x.magnitude.abs(), "{x:?}: {moved}");
                }
            }
        }
    }

    #[test]
    fn disorder_stays_within_its_bound_and_late_readings_are_far_behind() {
        let f = small();
        let (mut late, mut max) = (0, i64::MIN);
        for seq in 0..f.total_seqs().unwrap() {
            let ts = f.ts_of(seq);
            if f.is_late(seq) {
                late += 1;
                assert!(ts <= max - 2_000);
            } else if max != i64::MIN {
                assert!(ts >= max - f.cfg.period_ms - f.cfg.max_disorder_ms);
            }
            max = max.max(ts);
        }
        assert!((1_400..2_200).contains(&late), "{late} late");
    }
}
