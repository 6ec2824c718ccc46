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
//! - Each epoch's net change (registered minus fired or deleted) is
//!   written to the instance's backend (prefix `__timers`) when the runtime
//!   flushes at a marker, with the operator's tables: a restored instance
//!   reloads exactly the timers pending at its checkpoint. A timer
//!   registered and fired within one epoch is never written.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use eddy_checkpoint::{codec, ManagedState, StateBackend, WriteOp};
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

/// The backend key prefix of the timers (as a keyed table named
/// `__timers` would store them, so that checkpoints keep their layout).
const PREFIX: &[u8] = b"__timers\0";

/// The change map's hasher: foldhash, one lookup per timer change (std's
/// SipHash with a remove-then-insert was a sixth of a keyed process
/// operator's time with a timer per record); the map is never persisted.
type ChangeHasher = foldhash::fast::RandomState;

/// The timers of one operator instance (see the [module docs](self)).
///
/// # Persistence
/// The two ordered sets are the truth. What reaches the backend is only the
/// net change of each epoch: `changes` maps a timer to `true` (registered
/// this epoch, not in the backend) or `false` (in the backend, removed this
/// epoch); a timer registered and fired within one epoch never reaches the
/// backend, and one removed and registered again cancels out. At a marker
/// the epoch's changes are taken in O(1) and encoded in steps; the batch is
/// written when all are encoded (before the next marker's, so the backend
/// always sees the epochs in order).
pub struct TimerService {
    event: BTreeSet<(Timestamp, Vec<u8>)>,
    processing: BTreeSet<(Timestamp, Vec<u8>)>,
    backend: Box<dyn StateBackend>,
    changes: HashMap<TimerRow, bool, ChangeHasher>,
    flushing: Option<Flush>,
    /// Whether a timer was ever registered or restored (the instance then
    /// has state to snapshot).
    used: bool,
}

/// The changes of a closed epoch, being encoded.
struct Flush {
    changes: Vec<(TimerRow, bool)>,
    pos: usize,
    ops: Vec<WriteOp>,
}

impl TimerService {
    /// The timers stored in `backend` (none for a fresh one).
    ///
    /// # Errors
    /// Backend and decoding errors.
    pub fn open(backend: Box<dyn StateBackend>) -> Result<Self, OperatorError> {
        let mut event = BTreeSet::new();
        let mut processing = BTreeSet::new();
        backend.scan_prefix(PREFIX, &mut |k, _| {
            let (domain, time, key): TimerRow = codec::decode_body(&k[PREFIX.len()..])?;
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
            backend,
            changes: HashMap::default(),
            flushing: None,
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

    /// A timer joined the set: it is to be written, unless it was removed
    /// earlier this epoch (then it is still in the backend).
    fn added(&mut self, row: TimerRow) {
        match self.changes.entry(row) {
            Entry::Occupied(e) => {
                if !*e.get() {
                    e.remove();
                }
            }
            Entry::Vacant(e) => {
                e.insert(true);
            }
        }
    }

    /// A timer left the set: it is to be deleted, unless it was registered
    /// this epoch (then it never reached the backend).
    fn removed(&mut self, row: TimerRow) {
        match self.changes.entry(row) {
            Entry::Occupied(e) => {
                if *e.get() {
                    e.remove();
                }
            }
            Entry::Vacant(e) => {
                e.insert(false);
            }
        }
    }

    /// Registers a timer; one that exists already is left as is.
    ///
    /// # Errors
    /// None today; kept for backends that may fail.
    pub fn register(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: Vec<u8>,
    ) -> Result<(), OperatorError> {
        self.used = true;
        if self.set(domain).insert((time, key.clone())) {
            self.added((domain.tag(), time, key));
        }
        Ok(())
    }

    /// Deletes a timer, if registered.
    ///
    /// # Errors
    /// None today; kept for backends that may fail.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
    ) -> Result<(), OperatorError> {
        let k = (time, key.to_vec());
        if self.set(domain).remove(&k) {
            self.removed((domain.tag(), time, k.1));
        }
        Ok(())
    }

    /// Removes and returns the earliest timer of `domain` due at `upto`.
    ///
    /// # Errors
    /// None today; kept for backends that may fail.
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
        self.removed((domain.tag(), time, key.clone()));
        Ok(Some(Timer { domain, time, key }))
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
        if self.flushing.is_some() {
            self.flush_step(usize::MAX)?;
        }
        if !self.changes.is_empty() {
            let changes: Vec<_> = std::mem::take(&mut self.changes).into_iter().collect();
            self.flushing = Some(Flush {
                ops: Vec::with_capacity(changes.len()),
                changes,
                pos: 0,
            });
        }
        Ok(())
    }

    fn flush_step(&mut self, budget: usize) -> eddy_checkpoint::Result<bool> {
        let Some(f) = self.flushing.as_mut() else {
            return Ok(true);
        };
        let end = f.changes.len().min(f.pos.saturating_add(budget));
        for (row, put) in &f.changes[f.pos..end] {
            let mut k = PREFIX.to_vec();
            codec::encode_into(row, &mut k)?;
            f.ops.push(if *put {
                WriteOp::Put(k, codec::encode(&())?)
            } else {
                WriteOp::Delete(k)
            });
        }
        f.pos = end;
        if end < f.changes.len() {
            return Ok(false);
        }
        let ops = std::mem::take(&mut f.ops);
        self.flushing = None;
        self.backend.write_batch(ops)?;
        Ok(true)
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

    /// Only each epoch's net change reaches the backend: a timer registered
    /// and fired within an epoch is never written; one that was written,
    /// fired, registered again and fired again is deleted.
    #[test]
    fn only_the_net_change_of_an_epoch_is_written() {
        let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
        let rows = |b: &SharedBackend| {
            let mut n = 0;
            b.scan_prefix(PREFIX, &mut |_, _| {
                n += 1;
                Ok(())
            })
            .unwrap();
            n
        };
        let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
        s.register(TimeDomain::EventTime, 10, key(1)).unwrap();
        s.register(TimeDomain::EventTime, 20, key(2)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
        s.begin_flush().unwrap();
        while !s.flush_step(usize::MAX).unwrap() {}
        assert_eq!(rows(&shared), 1, "only (20, 2) was written");
        // (20, 2) fires, comes back, fires again: deleted.
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
        s.register(TimeDomain::EventTime, 20, key(2)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        assert_eq!(rows(&shared), 0);
        // Fired and registered again within an epoch: still there.
        s.register(TimeDomain::EventTime, 30, key(3)).unwrap();
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 30), vec![(30, 3)]);
        s.register(TimeDomain::EventTime, 30, key(3)).unwrap();
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        let mut r = TimerService::open(Box::new(shared.clone())).unwrap();
        assert_eq!(drain(&mut r, TimeDomain::EventTime, 100), vec![(30, 3)]);
    }
}
