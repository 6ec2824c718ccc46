//! What a keyed process function sees for one key: [`ProcessContext`],
//! over the key's [`Slot`] (its state, its timeout and its TTL deadline,
//! stored as one table entry) and the runtime's collector.
//!
//! Timers of a key are registered with the runtime's timer service under
//! the timer key `(key, tag)`: the tag keeps the function's own timers,
//! the timeout and the TTL apart, so deleting one never touches another.

use std::time::Duration;

use eddy_runtime::record::Timestamp;
use eddy_runtime::{Collector, OperatorError, TimeDomain};
use serde::{Deserialize, Serialize};

/// Tag of the function's own timers.
pub(crate) const TAG_USER: u8 = 0;
/// Tag of the key's timeout.
pub(crate) const TAG_TIMEOUT: u8 = 1;
/// Tag of the key's state TTL.
pub(crate) const TAG_TTL: u8 = 2;

/// A time domain as stored in a slot.
fn domain_tag(domain: TimeDomain) -> u8 {
    match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

pub(crate) fn domain_of(tag: u8) -> TimeDomain {
    if tag == 0 {
        TimeDomain::EventTime
    } else {
        TimeDomain::ProcessingTime
    }
}

/// Everything the operator keeps for one key, as one state table entry.
/// A slot with neither state nor timeout is removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot<S> {
    /// The function's state, if any.
    pub(crate) state: Option<S>,
    /// The pending timeout: (domain tag, time).
    pub(crate) timeout: Option<(u8, Timestamp)>,
    /// With a state TTL: the processing time at which the state expires
    /// (a TTL timer is registered at it).
    pub(crate) ttl_deadline: Option<Timestamp>,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Self {
            state: None,
            timeout: None,
            ttl_deadline: None,
        }
    }
}

impl<S> Slot<S> {
    /// The key's state, if any.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    fn is_empty(&self) -> bool {
        self.state.is_none() && self.timeout.is_none()
    }
}

/// Why the function is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A record of the key.
    Record,
    /// One of the function's timers.
    Timer,
    /// The key's timeout.
    Timeout,
}

/// A timer of the function that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiredTimer {
    /// Its clock.
    pub domain: TimeDomain,
    /// Its time (ms).
    pub time: Timestamp,
}

/// The view of one key a keyed process function works with: the key, its
/// typed state, the clocks, the output and the key's timers.
pub struct ProcessContext<'a, 'c, K, S, O> {
    key: &'a K,
    slot: &'a mut Option<Slot<S>>,
    out: &'a mut Collector<'c, O>,
    ttl_ms: Option<i64>,
    call: Call,
    /// The state was written in this call (refreshes the TTL).
    wrote: bool,
    /// A timeout was set in this call.
    timeout_set: bool,
}

fn slot_mut<S>(slot: &mut Option<Slot<S>>) -> &mut Slot<S> {
    slot.get_or_insert_with(Slot::default)
}

impl<'a, 'c, K: Serialize, S: Default, O> ProcessContext<'a, 'c, K, S, O> {
    /// A context for `key` over its `slot`. A state whose TTL passed is
    /// dropped first (its timer may not have fired yet).
    pub(crate) fn open(
        key: &'a K,
        slot: &'a mut Option<Slot<S>>,
        out: &'a mut Collector<'c, O>,
        ttl_ms: Option<i64>,
        call: Call,
    ) -> Result<Self, OperatorError> {
        let mut ctx = Self {
            key,
            slot,
            out,
            ttl_ms,
            call,
            wrote: false,
            timeout_set: false,
        };
        if let Some(deadline) = ctx.slot.as_ref().and_then(|s| s.ttl_deadline) {
            if deadline <= ctx.out.processing_time() {
                ctx.expire()?;
            }
        }
        Ok(ctx)
    }

    /// Drops the state because its TTL passed.
    pub(crate) fn expire(&mut self) -> Result<(), OperatorError> {
        if let Some(s) = self.slot.as_mut() {
            s.state = None;
            if let Some(d) = s.ttl_deadline.take() {
                self.out
                    .delete_timer(TimeDomain::ProcessingTime, d, &(self.key, TAG_TTL))?;
            }
        }
        Ok(())
    }

    /// Ends the call: a record call without a new timeout clears the old
    /// one (Spark's rule), a written state gets a new TTL deadline, and an
    /// empty slot is removed.
    pub(crate) fn finish(self) -> Result<(), OperatorError> {
        if self.call == Call::Record && !self.timeout_set {
            clear_timeout(&mut *self.slot, &mut *self.out, self.key)?;
        }
        let Some(slot) = self.slot.as_mut() else {
            return Ok(());
        };
        match (self.ttl_ms, slot.state.is_some()) {
            (Some(ttl), true) if self.wrote => {
                let deadline = self.out.processing_time().saturating_add(ttl);
                if slot.ttl_deadline != Some(deadline) {
                    if let Some(old) = slot.ttl_deadline {
                        self.out.delete_timer(
                            TimeDomain::ProcessingTime,
                            old,
                            &(self.key, TAG_TTL),
                        )?;
                    }
                    self.out.register_timer(
                        TimeDomain::ProcessingTime,
                        deadline,
                        &(self.key, TAG_TTL),
                    )?;
                    slot.ttl_deadline = Some(deadline);
                }
            }
            (_, false) => {
                if let Some(old) = slot.ttl_deadline.take() {
                    self.out
                        .delete_timer(TimeDomain::ProcessingTime, old, &(self.key, TAG_TTL))?;
                }
            }
            _ => {}
        }
        if slot.is_empty() {
            *self.slot = None;
        }
        Ok(())
    }

    /// The key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The event time of what is handled: the record's, or the timer's
    /// time.
    pub fn timestamp(&self) -> Timestamp {
        self.out.timestamp()
    }

    /// The input watermark (`i64::MIN` before the first): no record at or
    /// behind it follows.
    pub fn watermark(&self) -> Timestamp {
        self.out.watermark()
    }

    /// Processing time now, ms since the Unix epoch (tokio's clock).
    pub fn processing_time(&self) -> Timestamp {
        self.out.processing_time()
    }

    /// The key's state, if it has one.
    pub fn state(&self) -> Option<&S> {
        self.slot.as_ref().and_then(|s| s.state.as_ref())
    }

    /// Whether the key has state.
    pub fn state_exists(&self) -> bool {
        self.state().is_some()
    }

    /// The key's state to change, created with `S::default()` when absent.
    /// Counts as a write (it refreshes the TTL).
    pub fn state_mut(&mut self) -> &mut S {
        self.wrote = true;
        slot_mut(&mut *self.slot)
            .state
            .get_or_insert_with(S::default)
    }

    /// Replaces the key's state (a write: refreshes the TTL).
    pub fn set_state(&mut self, state: S) {
        self.wrote = true;
        slot_mut(&mut *self.slot).state = Some(state);
    }

    /// Removes the key's state and returns it. Its timers and timeout stay.
    pub fn clear_state(&mut self) -> Option<S> {
        self.slot.as_mut().and_then(|s| s.state.take())
    }

    /// Emits `value` with the event time of what is handled.
    pub fn emit(&mut self, value: O) {
        self.out.emit(value);
    }

    /// Emits `value` with event time `timestamp`.
    pub fn emit_at(&mut self, value: O, timestamp: Timestamp) {
        self.out.emit_at(value, timestamp);
    }

    /// Counts `n` late records (reported in the progress).
    pub fn count_late(&mut self, n: u64) {
        self.out.count_late(n);
    }

    /// Counts `n` records dropped on purpose (reported in the progress).
    pub fn count_dropped(&mut self, n: u64) {
        self.out.count_dropped(n);
    }

    /// Registers a timer of this key: `on_timer` is called when the clock
    /// of `domain` reaches `time` (once per key, domain and time however
    /// often it is registered).
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn register_timer(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
    ) -> Result<(), OperatorError> {
        self.out.register_timer(domain, time, &(self.key, TAG_USER))
    }

    /// Registers an event-time timer: it fires when the watermark reaches
    /// `time`.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn register_event_time_timer(&mut self, time: Timestamp) -> Result<(), OperatorError> {
        self.register_timer(TimeDomain::EventTime, time)
    }

    /// Registers a processing-time timer: it fires when the clock reaches
    /// `time`, even when no input arrives.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn register_processing_time_timer(&mut self, time: Timestamp) -> Result<(), OperatorError> {
        self.register_timer(TimeDomain::ProcessingTime, time)
    }

    /// Deletes a timer of this key, if registered.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn delete_timer(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
    ) -> Result<(), OperatorError> {
        self.out.delete_timer(domain, time, &(self.key, TAG_USER))
    }

    /// Deletes an event-time timer of this key.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) -> Result<(), OperatorError> {
        self.delete_timer(TimeDomain::EventTime, time)
    }

    /// Deletes a processing-time timer of this key.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) -> Result<(), OperatorError> {
        self.delete_timer(TimeDomain::ProcessingTime, time)
    }

    /// Sets the key's timeout to `d` of processing time from now (Spark's
    /// `setTimeoutDuration`), replacing any other.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn set_timeout_duration(&mut self, d: Duration) -> Result<(), OperatorError> {
        let at = self
            .processing_time()
            .saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
        self.set_timeout(TimeDomain::ProcessingTime, at)
    }

    /// Sets the key's timeout to event time `t`: it times out when the
    /// watermark reaches `t` (Spark's `setTimeoutTimestamp`), replacing any
    /// other.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn set_timeout_timestamp(&mut self, t: Timestamp) -> Result<(), OperatorError> {
        self.set_timeout(TimeDomain::EventTime, t)
    }

    fn set_timeout(&mut self, domain: TimeDomain, time: Timestamp) -> Result<(), OperatorError> {
        self.timeout_set = true;
        let new = (domain_tag(domain), time);
        if self.slot.as_ref().and_then(|s| s.timeout) == Some(new) {
            return Ok(());
        }
        clear_timeout(&mut *self.slot, &mut *self.out, self.key)?;
        self.out
            .register_timer(domain, time, &(self.key, TAG_TIMEOUT))?;
        slot_mut(&mut *self.slot).timeout = Some(new);
        Ok(())
    }

    /// Removes the key's timeout, if any.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn clear_timeout(&mut self) -> Result<(), OperatorError> {
        self.timeout_set = true;
        clear_timeout(&mut *self.slot, &mut *self.out, self.key)
    }

    /// The key's pending timeout: its clock and time.
    pub fn timeout(&self) -> Option<(TimeDomain, Timestamp)> {
        self.slot
            .as_ref()
            .and_then(|s| s.timeout)
            .map(|(d, t)| (domain_of(d), t))
    }

    /// Whether this call is the key's timeout (Spark's `hasTimedOut`).
    pub fn has_timed_out(&self) -> bool {
        self.call == Call::Timeout
    }
}

fn clear_timeout<K: Serialize, S, O>(
    slot: &mut Option<Slot<S>>,
    out: &mut Collector<'_, O>,
    key: &K,
) -> Result<(), OperatorError> {
    if let Some((d, t)) = slot.as_mut().and_then(|s| s.timeout.take()) {
        out.delete_timer(domain_of(d), t, &(key, TAG_TIMEOUT))?;
    }
    Ok(())
}
