//! The timer service: keyed event-time and processing-time timers, owned by
//! the runtime (one per operator instance), fired in time order and stored
//! in the instance's state so they survive recovery.
//!
//! # Invariants
//! - A timer is `(domain, time, key)`; registering one that exists does
//!   nothing (timers are deduplicated), so an operator may register "fire
//!   at the end of this window" for every record of the window.
//! - Event-time timers fire when the input watermark reaches their time
//!   (`time <= watermark`), processing-time timers when the clock does; the
//!   task wakes for the next processing-time timer even on a quiet input.
//!   Within a domain, timers fire in `(time, key)` order; a timer an
//!   operator registers while timers fire fires in the same pass if due.
//! - Every change is also written to a [`KeyedTable`] over the instance's
//!   backend (prefix `__timers`), which the runtime flushes at markers with
//!   the operator's tables: a restored instance reloads exactly the timers
//!   pending at its checkpoint.

use std::collections::BTreeSet;

use eddy_checkpoint::{KeyedTable, ManagedState, StateBackend};
use serde::{de::DeserializeOwned, Serialize};
use tokio::time::{Duration, Instant};

use crate::error::OperatorError;
use crate::record::Timestamp;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark passes its time.
    EventTime,
    /// Fires when the processing clock passes its time.
    ProcessingTime,
}

impl TimeDomain {
    fn tag(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Its clock.
    pub domain: TimeDomain,
    /// Its time (ms).
    pub time: Timestamp,
    /// The key it was registered under, encoded.
    pub key: Vec<u8>,
}

impl Timer {
    /// The key, decoded as the operator registered it.
    ///
    /// # Errors
    /// When `K` is not the type the key was registered with.
    pub fn key<K: DeserializeOwned>(&self) -> Result<K, OperatorError> {
        Ok(eddy_checkpoint::codec::decode_body(&self.key)?)
    }
}

/// Encodes a timer key.
pub(crate) fn encode_key<K: Serialize + ?Sized>(key: &K) -> Result<Vec<u8>, OperatorError> {
    let mut out = Vec::new();
    eddy_checkpoint::codec::encode_into(key, &mut out)?;
    Ok(out)
}

/// The processing clock of a task: wall-clock milliseconds that advance
/// with tokio's clock (so tests on a paused clock are deterministic).
#[derive(Debug, Clone, Copy)]
pub struct ProcessingClock {
    base: Instant,
    base_ms: Timestamp,
}

impl Default for ProcessingClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessingClock {
    /// A clock starting at the wall clock now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            base_ms: (crate::record::now_ns() / 1_000_000) as Timestamp,
        }
    }

    /// Processing time now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> Timestamp {
        self.base_ms + self.base.elapsed().as_millis() as Timestamp
    }

    /// The instant when processing time reaches `ms`.
    pub fn instant_at(&self, ms: Timestamp) -> Instant {
        let ahead = ms.saturating_sub(self.base_ms).max(0) as u64;
        self.base + Duration::from_millis(ahead)
    }
}

type TimerRow = (u8, Timestamp, Vec<u8>);

/// The timers of one operator instance (see the [module docs](self)).
pub struct TimerService {
    event: BTreeSet<(Timestamp, Vec<u8>)>,
    processing: BTreeSet<(Timestamp, Vec<u8>)>,
    table: KeyedTable<TimerRow, ()>,
    /// Whether a timer was ever registered or restored (the instance then
    /// has state to snapshot).
    used: bool,
}

impl TimerService {
    /// The timers stored in `backend` (none for a fresh one).
    ///
    /// # Errors
    /// Backend and decoding errors.
    pub fn open(backend: Box<dyn StateBackend>) -> Result<Self, OperatorError> {
        let mut table: KeyedTable<TimerRow, ()> = KeyedTable::new(backend, "__timers");
        let mut event = BTreeSet::new();
        let mut processing = BTreeSet::new();
        table.for_each(|(domain, time, key), ()| {
            if domain == 0 {
                event.insert((time, key));
            } else {
                processing.insert((time, key));
            }
            Ok(())
        })?;
        Ok(Self {
            used: !event.is_empty() || !processing.is_empty(),
            event,
            processing,
            table,
        })
    }

    /// A service over a fresh in-memory backend (operator unit tests).
    pub fn in_memory() -> Self {
        Self::open(Box::new(eddy_checkpoint::MemoryBackend::new()))
            .expect("an empty memory backend opens")
    }

    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(Timestamp, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer; one that exists already is left as is.
    ///
    /// # Errors
    /// Backend errors.
    pub fn register(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: Vec<u8>,
    ) -> Result<(), OperatorError> {
        self.used = true;
        if self.set(domain).insert((time, key.clone())) {
            self.table.put((domain.tag(), time, key), ())?;
        }
        Ok(())
    }

    /// Deletes a timer, if registered.
    ///
    /// # Errors
    /// Backend errors.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
    ) -> Result<(), OperatorError> {
        let k = (time, key.to_vec());
        if self.set(domain).remove(&k) {
            self.table.remove(&(domain.tag(), time, k.1))?;
        }
        Ok(())
    }

    /// Removes and returns the earliest timer of `domain` due at `upto`.
    ///
    /// # Errors
    /// Backend errors.
    pub fn pop_due(
        &mut self,
        domain: TimeDomain,
        upto: Timestamp,
    ) -> Result<Option<Timer>, OperatorError> {
        let set = self.set(domain);
        match set.first() {
            Some((t, _)) if *t <= upto => {}
            _ => return Ok(None),
        }
        let (time, key) = set.pop_first().expect("checked above");
        let row = (domain.tag(), time, key);
        self.table.remove(&row)?;
        Ok(Some(Timer {
            domain,
            time,
            key: row.2,
        }))
    }

    /// The time of the earliest timer of `domain`.
    pub fn next_time(&self, domain: TimeDomain) -> Option<Timestamp> {
        match domain {
            TimeDomain::EventTime => self.event.first().map(|(t, _)| *t),
            TimeDomain::ProcessingTime => self.processing.first().map(|(t, _)| *t),
        }
    }

    /// Timers registered, over both domains.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Whether a timer was ever registered (or restored).
    pub fn used(&self) -> bool {
        self.used
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ManagedState for TimerService {
    fn begin_flush(&mut self) -> eddy_checkpoint::Result<()> {
        self.table.begin_flush()
    }

    fn flush_step(&mut self, budget: usize) -> eddy_checkpoint::Result<bool> {
        self.table.flush_step(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_checkpoint::SharedBackend;

    fn key(k: u32) -> Vec<u8> {
        encode_key(&k).unwrap()
    }

    fn drain(s: &mut TimerService, domain: TimeDomain, upto: Timestamp) -> Vec<(Timestamp, u32)> {
        let mut fired = Vec::new();
        while let Some(t) = s.pop_due(domain, upto).unwrap() {
            fired.push((t.time, t.key::<u32>().unwrap()));
        }
        fired
    }

    #[test]
    fn timers_fire_in_time_order_and_only_when_due() {
        let mut s = TimerService::in_memory();
        for (t, k) in [(30, 1), (10, 2), (20, 3), (10, 1)] {
            s.register(TimeDomain::EventTime, t, key(k)).unwrap();
        }
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 5), vec![]);
        assert_eq!(
            drain(&mut s, TimeDomain::EventTime, 20),
            vec![(10, 1), (10, 2), (20, 3)]
        );
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(30, 1)]);
        assert!(s.is_empty());
    }

    #[test]
    fn timers_are_deduplicated_and_deletable() {
        let mut s = TimerService::in_memory();
        s.register(TimeDomain::EventTime, 10, key(1)).unwrap();
        s.register(TimeDomain::EventTime, 10, key(1)).unwrap();
        s.register(TimeDomain::EventTime, 11, key(1)).unwrap();
        assert_eq!(s.len(), 2);
        s.delete(TimeDomain::EventTime, 11, &key(1)).unwrap();
        s.delete(TimeDomain::EventTime, 99, &key(1)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(10, 1)]);
    }

    #[test]
    fn event_and_processing_time_are_separate_clocks() {
        let mut s = TimerService::in_memory();
        s.register(TimeDomain::EventTime, 10, key(1)).unwrap();
        s.register(TimeDomain::ProcessingTime, 5, key(2)).unwrap();
        assert_eq!(s.next_time(TimeDomain::ProcessingTime), Some(5));
        assert_eq!(drain(&mut s, TimeDomain::ProcessingTime, 100), vec![(5, 2)]);
        assert_eq!(s.next_time(TimeDomain::EventTime), Some(10));
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
    }

    #[test]
    fn timers_pending_at_a_flush_are_restored_and_later_ones_are_not() {
        let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
        let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
        s.register(TimeDomain::EventTime, 10, key(1)).unwrap();
        s.register(TimeDomain::ProcessingTime, 20, key(2)).unwrap();
        s.register(TimeDomain::EventTime, 30, key(3)).unwrap();
        // The marker: the flush captures these three, in steps.
        s.begin_flush().unwrap();
        // After the marker: one fires, one is added; the flush still
        // writes the marker-time set (copy on write).
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
        s.register(TimeDomain::EventTime, 40, key(4)).unwrap();
        while !s.flush_step(1).unwrap() {}
        let mut r = TimerService::open(Box::new(shared.clone())).unwrap();
        assert_eq!(
            drain(&mut r, TimeDomain::EventTime, 100),
            vec![(10, 1), (30, 3)]
        );
        assert_eq!(
            drain(&mut r, TimeDomain::ProcessingTime, 100),
            vec![(20, 2)]
        );
    }
}
