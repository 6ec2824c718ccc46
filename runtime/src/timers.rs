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
//!   Within a domain, timers fire in time order, and timers of one time
//!   in an order fixed by their keys (a stable hash of the key, then the
//!   key): the same in every run and after every recovery. A timer an
//!   operator registers while timers fire fires in the same pass if due.
//! - Each epoch's net change (registered minus fired or deleted) is
//!   written to the instance's backend (prefix `__timers`) when the runtime
//!   flushes at a marker, with the operator's tables: a restored instance
//!   reloads exactly the timers pending at its checkpoint. A timer
//!   registered and fired within one epoch is never written.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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
    pub key: Arc<[u8]>,
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

/// A timer in the ordered sets: its time, a stable hash of its encoded
/// key, the key. Comparing two timers almost never reaches the key bytes
/// (the time or the hash differ), and the key is shared, not copied,
/// between the set and the epoch's change map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    time: Timestamp,
    hash: u64,
    key: Arc<[u8]>,
}

impl Slot {
    fn new(time: Timestamp, key: &[u8]) -> Self {
        let mut h = crate::keys::StableHasher::default();
        h.write(key);
        h.write_usize(key.len());
        Self {
            time,
            hash: h.finish(),
            key: Arc::from(key),
        }
    }
}

/// Hashes what is cheap and nearly unique (equal slots have equal times
/// and hashes, so this agrees with `Eq`).
impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_i64(self.time);
        state.write_u64(self.hash);
    }
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

/// A timer as stored in the backend (its encoding is the row key).
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
    event: BTreeSet<Slot>,
    processing: BTreeSet<Slot>,
    backend: Box<dyn StateBackend>,
    changes: HashMap<(TimeDomain, Slot), bool, ChangeHasher>,
    /// Reused to encode the keys of registered and deleted timers.
    scratch: Vec<u8>,
    flushing: Option<Flush>,
    /// Whether a timer was ever registered or restored (the instance then
    /// has state to snapshot).
    used: bool,
}

/// The changes of a closed epoch, being encoded.
struct Flush {
    changes: Vec<((TimeDomain, Slot), bool)>,
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
                event.insert(Slot::new(time, &key));
            } else {
                processing.insert(Slot::new(time, &key));
            }
            Ok(())
        })?;
        Ok(Self {
            used: !event.is_empty() || !processing.is_empty(),
            event,
            processing,
            backend,
            changes: HashMap::default(),
            scratch: Vec::new(),
            flushing: None,
        })
    }

    /// A service over a fresh in-memory backend (operator unit tests).
    pub fn in_memory() -> Self {
        Self::open(Box::new(eddy_checkpoint::MemoryBackend::new()))
            .expect("an empty memory backend opens")
    }

    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<Slot> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// A timer joined the set: it is to be written, unless it was removed
    /// earlier this epoch (then it is still in the backend).
    fn added(&mut self, row: (TimeDomain, Slot)) {
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
    fn removed(&mut self, row: (TimeDomain, Slot)) {
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
        key: &[u8],
    ) -> Result<(), OperatorError> {
        self.used = true;
        let slot = Slot::new(time, key);
        if self.set(domain).insert(slot.clone()) {
            self.added((domain, slot));
        }
        Ok(())
    }

    /// Registers a timer for `key`, encoded (see [`Self::register`]).
    ///
    /// # Errors
    /// Encoding errors.
    pub fn register_key<K: Serialize + ?Sized>(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &K,
    ) -> Result<(), OperatorError> {
        self.with_encoded(key, |s, k| s.register(domain, time, k))
    }

    /// Runs `f` with `key` encoded into the reused buffer.
    fn with_encoded<K: Serialize + ?Sized>(
        &mut self,
        key: &K,
        f: impl FnOnce(&mut Self, &[u8]) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let r = codec::encode_into(key, &mut buf)
            .map_err(OperatorError::from)
            .and_then(|()| f(self, &buf));
        self.scratch = buf;
        r
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
        let slot = Slot::new(time, key);
        if let Some(slot) = self.set(domain).take(&slot) {
            self.removed((domain, slot));
        }
        Ok(())
    }

    /// Deletes the timer for `key`, encoded (see [`Self::delete`]).
    ///
    /// # Errors
    /// Encoding errors.
    pub fn delete_key<K: Serialize + ?Sized>(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &K,
    ) -> Result<(), OperatorError> {
        self.with_encoded(key, |s, k| s.delete(domain, time, k))
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
            Some(first) if first.time <= upto => {}
            _ => return Ok(None),
        }
        let slot = set.pop_first().expect("checked above");
        let (time, key) = (slot.time, slot.key.clone());
        self.removed((domain, slot));
        Ok(Some(Timer { domain, time, key }))
    }

    /// The time of the earliest timer of `domain`.
    pub fn next_time(&self, domain: TimeDomain) -> Option<Timestamp> {
        match domain {
            TimeDomain::EventTime => self.event.first().map(|s| s.time),
            TimeDomain::ProcessingTime => self.processing.first().map(|s| s.time),
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
            // The next epoch's map starts at this one's size instead of
            // growing (and rehashing) from empty.
            let fresh =
                HashMap::with_capacity_and_hasher(self.changes.len(), ChangeHasher::default());
            let changes: Vec<_> = std::mem::replace(&mut self.changes, fresh)
                .into_iter()
                .collect();
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
        for ((domain, slot), put) in &f.changes[f.pos..end] {
            let mut k = PREFIX.to_vec();
            codec::encode_into(&(domain.tag(), slot.time, &slot.key[..]), &mut k)?;
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
        let mut out = Vec::new();
        codec::encode_into(&k, &mut out).unwrap();
        out
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
            s.register(TimeDomain::EventTime, t, &key(k)).unwrap();
        }
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 5), vec![]);
        let mut due = drain(&mut s, TimeDomain::EventTime, 20);
        assert!(due.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        due.sort();
        assert_eq!(due, vec![(10, 1), (10, 2), (20, 3)]);
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(30, 1)]);
        assert!(s.is_empty());
    }

    /// Timers of one time fire in an order fixed by their keys: the same
    /// for two services registered in different orders, and after a
    /// restore from the backend.
    #[test]
    fn timers_of_one_time_fire_in_the_same_order_in_every_run() {
        let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
        let mut a = TimerService::open(Box::new(shared.clone())).unwrap();
        let mut b = TimerService::in_memory();
        for k in 0..100u32 {
            a.register(TimeDomain::EventTime, 7, &key(k)).unwrap();
            b.register(TimeDomain::EventTime, 7, &key(99 - k)).unwrap();
        }
        a.begin_flush().unwrap();
        while !a.flush_step(usize::MAX).unwrap() {}
        let mut restored = TimerService::open(Box::new(shared)).unwrap();
        let order = drain(&mut a, TimeDomain::EventTime, 7);
        assert_eq!(order.len(), 100);
        assert_eq!(drain(&mut b, TimeDomain::EventTime, 7), order);
        assert_eq!(drain(&mut restored, TimeDomain::EventTime, 7), order);
    }

    #[test]
    fn timers_are_deduplicated_and_deletable() {
        let mut s = TimerService::in_memory();
        s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
        s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
        s.register(TimeDomain::EventTime, 11, &key(1)).unwrap();
        assert_eq!(s.len(), 2);
        s.delete(TimeDomain::EventTime, 11, &key(1)).unwrap();
        s.delete(TimeDomain::EventTime, 99, &key(1)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(10, 1)]);
    }

    #[test]
    fn event_and_processing_time_are_separate_clocks() {
        let mut s = TimerService::in_memory();
        s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
        s.register(TimeDomain::ProcessingTime, 5, &key(2)).unwrap();
        assert_eq!(s.next_time(TimeDomain::ProcessingTime), Some(5));
        assert_eq!(drain(&mut s, TimeDomain::ProcessingTime, 100), vec![(5, 2)]);
        assert_eq!(s.next_time(TimeDomain::EventTime), Some(10));
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
    }

    #[test]
    fn timers_pending_at_a_flush_are_restored_and_later_ones_are_not() {
        let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
        let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
        s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
        s.register(TimeDomain::ProcessingTime, 20, &key(2)).unwrap();
        s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
        // The marker: the flush captures these three, in steps.
        s.begin_flush().unwrap();
        // After the marker: one fires, one is added; the flush still
        // writes the marker-time set (copy on write).
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
        s.register(TimeDomain::EventTime, 40, &key(4)).unwrap();
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
        s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
        s.register(TimeDomain::EventTime, 20, &key(2)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
        s.begin_flush().unwrap();
        while !s.flush_step(usize::MAX).unwrap() {}
        assert_eq!(rows(&shared), 1, "only (20, 2) was written");
        // (20, 2) fires, comes back, fires again: deleted.
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
        s.register(TimeDomain::EventTime, 20, &key(2)).unwrap();
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        assert_eq!(rows(&shared), 0);
        // Fired and registered again within an epoch: still there.
        s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        assert_eq!(drain(&mut s, TimeDomain::EventTime, 30), vec![(30, 3)]);
        s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
        s.begin_flush().unwrap();
        while !s.flush_step(1).unwrap() {}
        let mut r = TimerService::open(Box::new(shared.clone())).unwrap();
        assert_eq!(drain(&mut r, TimeDomain::EventTime, 100), vec![(30, 3)]);
    }
}
