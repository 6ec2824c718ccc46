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
//! - Each epoch's net change is written to the instance's backend (prefix
//!   `__timers`) when the runtime flushes at a marker, with the operator's
//!   tables: a restored instance reloads exactly the timers pending at its
//!   checkpoint. A timer registered and fired within one epoch is never
//!   written.

use eddy_checkpoint::{codec, ManagedState, StateBackend, WriteOp};
use serde::{de::DeserializeOwned, Serialize};
use tokio::time::{Duration, Instant};

use crate::error::OperatorError;
use crate::record::Timestamp;
pub use crate::timer_key::TimerKey;
use crate::timer_queue::{Slot, TimerQueue};

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
    pub key: TimerKey,
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

impl Slot {
    /// The backend operation that stores (`put`) or deletes this timer.
    fn op(&self, domain: TimeDomain, put: bool) -> eddy_checkpoint::Result<WriteOp> {
        let mut k = PREFIX.to_vec();
        codec::encode_into(&(domain.tag(), self.time, &self.key[..]), &mut k)?;
        Ok(if put {
            WriteOp::Put(k, codec::encode(&())?)
        } else {
            WriteOp::Delete(k)
        })
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

/// The generation of a timer the backend holds (or will hold once the
/// pending flush's batch is written, before any later batch).
const WRITTEN: u64 = 0;

/// The shortest `added` list that is compacted (short in unit tests, so
/// the model test compacts too).
#[cfg(not(test))]
const COMPACT_MIN: usize = 1 << 16;
#[cfg(test)]
const COMPACT_MIN: usize = 8;

/// A timer and its clock, as the epochs' change lists hold them.
type Change = (TimeDomain, Slot);

/// The timers of one operator instance (see the [module docs](self)).
///
/// # Persistence
/// The two queues (one per clock, `TimerQueue`) are the truth; each timer
/// carries the generation (epoch) it was registered in, or `WRITTEN`. Registering appends the
/// timer to the epoch's `added` list; a timer leaving the set (fired or
/// deleted) is appended to `removed` only if the backend holds it. Both are
/// appends to a vector, where a hash map of changes (looked up at every
/// registration and every firing, in random order) was the largest cost of
/// a keyed operator with a timer per record.
///
/// At a marker the lists are taken in O(1) and encoded in steps: every
/// removal is a delete, and an added timer is written if it is still
/// registered with the closed generation (a timer registered and fired
/// within one epoch is never written); the deletes go first in the batch,
/// so a timer removed and registered again in one epoch ends up stored. A
/// timer of the closed generation that leaves the set before the step
/// reaches it is encoded as it leaves (copy on write: the marker's state
/// still holds it) and deleted with the next epoch.
pub struct TimerService {
    event: TimerQueue,
    processing: TimerQueue,
    backend: Box<dyn StateBackend>,
    /// The current generation (starts at 1; [`WRITTEN`] is 0).
    gen: u64,
    /// Timers registered this generation, some of which may have left the
    /// set since (or left and come back, listed twice). When the list is
    /// four times as long as there are timers (markers far apart, or none
    /// without checkpointing) it is rebuilt from the sets, so it stays
    /// within a few times the live timers instead of growing by one per
    /// registration.
    added: Vec<Change>,
    /// Timers that left the set this generation while the backend (or the
    /// pending batch) held them.
    removed: Vec<Change>,
    /// Reused to encode the keys of registered and deleted timers.
    scratch: Vec<u8>,
    flushing: Option<Flush>,
    /// The lists of the last written flush, emptied, for the next epoch
    /// (tens of MB each with a timer per record, reused rather than
    /// allocated and faulted in afresh at every marker).
    spare: (Vec<Change>, Vec<Change>),
    /// Whether a timer was ever registered or restored (the instance then
    /// has state to snapshot).
    used: bool,
}

/// The changes of a closed epoch, being encoded.
struct Flush {
    /// The closed generation.
    gen: u64,
    removed: Vec<Change>,
    added: Vec<Change>,
    /// Changes before this index (removals first, then additions) are
    /// encoded.
    pos: usize,
    deletes: Vec<WriteOp>,
    puts: Vec<WriteOp>,
}

impl TimerService {
    /// The timers stored in `backend` (none for a fresh one).
    ///
    /// # Errors
    /// Backend and decoding errors.
    pub fn open(backend: Box<dyn StateBackend>) -> Result<Self, OperatorError> {
        let mut event = TimerQueue::default();
        let mut processing = TimerQueue::default();
        backend.scan_prefix(PREFIX, &mut |k, _| {
            let (domain, time, key): TimerRow = codec::decode_body(&k[PREFIX.len()..])?;
            if domain == 0 {
                event.insert_new(&Slot::new(time, &key), WRITTEN);
            } else {
                processing.insert_new(&Slot::new(time, &key), WRITTEN);
            }
            Ok(())
        })?;
        Ok(Self {
            used: !event.is_empty() || !processing.is_empty(),
            event,
            processing,
            backend,
            gen: 1,
            added: Vec::new(),
            removed: Vec::new(),
            scratch: Vec::new(),
            flushing: None,
            spare: (Vec::new(), Vec::new()),
        })
    }

    /// A service over a fresh in-memory backend (operator unit tests).
    pub fn in_memory() -> Self {
        Self::open(Box::new(eddy_checkpoint::MemoryBackend::new()))
            .expect("an empty memory backend opens")
    }

    fn set(&mut self, domain: TimeDomain) -> &mut TimerQueue {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// A timer of generation `gen` left the set.
    fn left(&mut self, domain: TimeDomain, slot: Slot, gen: u64) -> Result<(), OperatorError> {
        if gen == self.gen {
            // Registered this epoch: not in the backend; the flush step
            // that reaches its `added` entry finds it gone.
            return Ok(());
        }
        if gen != WRITTEN {
            // Registered in the closed epoch and not yet encoded: the
            // marker's state holds it, so the pending batch must.
            debug_assert!(self.flushing.as_ref().is_some_and(|f| f.gen == gen));
            if let Some(f) = self.flushing.as_mut() {
                f.puts.push(slot.op(domain, true)?);
            }
        }
        self.removed.push((domain, slot));
        Ok(())
    }

    /// Rebuilds `added` from the sets: the timers of the current
    /// generation, in time order, each once.
    /// Called when the list is four times as long as there are timers, so
    /// the scan of the sets costs at most a third of a visit per
    /// registration since the last compaction (and happens only when
    /// markers are far apart, or never come).
    fn compact_added(&mut self) {
        let gen = self.gen;
        self.added.clear();
        for (domain, set) in [
            (TimeDomain::EventTime, &mut self.event),
            (TimeDomain::ProcessingTime, &mut self.processing),
        ] {
            let added = &mut self.added;
            set.for_each_where(|g| g == gen, |slot| added.push((domain, slot)));
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
        let set = match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        };
        let slot = Slot::new(time, key);
        if set.insert_new(&slot, self.gen) {
            self.added.push((domain, slot));
            if self.added.len() >= COMPACT_MIN && self.added.len() >= 4 * self.len() {
                self.compact_added();
            }
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
    /// Encoding errors of the pending flush.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
    ) -> Result<(), OperatorError> {
        let slot = Slot::new(time, key);
        if let Some(gen) = self.set(domain).remove(&slot) {
            self.left(domain, slot, gen)?;
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
    /// Encoding errors of the pending flush.
    pub fn pop_due(
        &mut self,
        domain: TimeDomain,
        upto: Timestamp,
    ) -> Result<Option<Timer>, OperatorError> {
        let set = self.set(domain);
        match set.first_time() {
            Some(first) if first <= upto => {}
            _ => return Ok(None),
        }
        let (slot, gen) = set.pop_first().expect("checked above");
        let timer = Timer {
            domain,
            time: slot.time,
            key: slot.key.clone(),
        };
        self.left(domain, slot, gen)?;
        Ok(Some(timer))
    }

    /// The first `n` timers of `domain` due at `upto`, in firing order,
    /// cloned into `out` (emptied first) without removing them.
    pub fn peek_due(&self, domain: TimeDomain, upto: Timestamp, n: usize, out: &mut Vec<Timer>) {
        out.clear();
        let set = match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        };
        set.peek(upto, n, |time, key| {
            out.push(Timer {
                domain,
                time,
                key: key.clone(),
            })
        });
    }

    /// The time of the earliest timer of `domain`.
    pub fn next_time(&self, domain: TimeDomain) -> Option<Timestamp> {
        match domain {
            TimeDomain::EventTime => self.event.first_time(),
            TimeDomain::ProcessingTime => self.processing.first_time(),
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
        if !self.added.is_empty() || !self.removed.is_empty() {
            // The next epoch's lists are the last flush's, emptied, at
            // least as large as this one's (not grown from empty).
            let (mut next_added, mut next_removed) = std::mem::take(&mut self.spare);
            next_added.reserve(self.added.len());
            next_removed.reserve(self.removed.len());
            let added = std::mem::replace(&mut self.added, next_added);

            let removed = std::mem::replace(&mut self.removed, next_removed);
            self.flushing = Some(Flush {
                gen: self.gen,
                deletes: Vec::with_capacity(removed.len()),
                puts: Vec::with_capacity(added.len()),
                removed,
                added,
                pos: 0,
            });
        }
        self.gen += 1;
        Ok(())
    }

    fn flush_step(&mut self, budget: usize) -> eddy_checkpoint::Result<bool> {
        let Some(f) = self.flushing.as_mut() else {
            return Ok(true);
        };
        let total = f.removed.len() + f.added.len();
        let end = total.min(f.pos.saturating_add(budget));
        while f.pos < end {
            if let Some((domain, slot)) = f.removed.get(f.pos) {
                f.deletes.push(slot.op(*domain, false)?);
            } else {
                let (domain, slot) = &f.added[f.pos - f.removed.len()];
                let set = match domain {
                    TimeDomain::EventTime => &mut self.event,
                    TimeDomain::ProcessingTime => &mut self.processing,
                };
                // Still registered with the closed generation: stored now
                // (and stamped, so a second entry of it is skipped).
                if let Some(gen) = set.get_mut(slot).filter(|g| **g == f.gen) {
                    f.puts.push(slot.op(*domain, true)?);
                    *gen = WRITTEN;
                }
            }
            f.pos += 1;
        }
        if end < total {
            return Ok(false);
        }
        let mut f = self.flushing.take().expect("checked above");
        let mut ops = f.deletes;
        ops.append(&mut f.puts);
        f.added.clear();
        f.removed.clear();
        self.spare = (f.added, f.removed);
        if !ops.is_empty() {
            self.backend.write_batch(ops)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
