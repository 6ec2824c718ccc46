//! The operator trait: one required method, default hooks.
//!
//! The runtime owns everything around an operator: reading and aligning
//! inputs, batching and routing outputs, markers, watermarks and the end of
//! stream. An operator only reacts to one record at a time in
//! [`Operator::process`], and optionally to the hooks.

use eddy_checkpoint::{ManagedState, SharedBackend, StateBackend};
use serde::Serialize;

use crate::error::OperatorError;
use crate::record::{Record, Timestamp, NO_TIMESTAMP};
use crate::timers::{ProcessingClock, TimeDomain, Timer, TimerService};

/// What an operator instance emitted since the runtime last took it: the
/// main output, the side output and counters. The runtime owns it.
pub struct Output<O, S = ()> {
    /// Records for the main output.
    pub main: Vec<Record<O>>,
    /// Records for the side output (dropped when nothing reads it).
    pub side: Vec<Record<S>>,
    /// Late records the operator counted.
    pub late: u64,
    /// Records the operator dropped on purpose (duplicates), counted.
    pub dropped: u64,
}

impl<O, S> Default for Output<O, S> {
    fn default() -> Self {
        Self {
            main: Vec::new(),
            side: Vec::new(),
            late: 0,
            dropped: 0,
        }
    }
}

/// An operator's view of the runtime in every hook that may emit: the
/// outputs (main and side), the timer service, the input watermark and the
/// processing clock. Emitted values inherit the event time and creation
/// stamp of what is being handled (the input record; for a timer or a
/// watermark, the record whose arrival let the watermark advance).
pub struct Collector<'a, O, S = ()> {
    output: &'a mut Output<O, S>,
    timers: &'a mut TimerService,
    clock: &'a ProcessingClock,
    watermark: Timestamp,
    timestamp: Timestamp,
    created_ns: u64,
}

impl<'a, O, S> Collector<'a, O, S> {
    /// A collector over `output` and `timers`, handling something with
    /// event time `timestamp` and creation stamp `created_ns`, at input
    /// watermark `watermark`.
    pub fn new(
        output: &'a mut Output<O, S>,
        timers: &'a mut TimerService,
        clock: &'a ProcessingClock,
        watermark: Timestamp,
    ) -> Self {
        Self {
            output,
            timers,
            clock,
            watermark,
            timestamp: NO_TIMESTAMP,
            created_ns: 0,
        }
    }

    /// Sets the metadata of what is handled next.
    #[inline]
    pub fn set_input(&mut self, timestamp: Timestamp, created_ns: u64) {
        self.timestamp = timestamp;
        self.created_ns = created_ns;
    }

    /// Emits `value` with the current input's metadata.
    #[inline]
    pub fn emit(&mut self, value: O) {
        self.output.main.push(Record {
            value,
            timestamp: self.timestamp,
            created_ns: self.created_ns,
        });
    }

    /// Emits `value` with event time `timestamp`.
    #[inline]
    pub fn emit_at(&mut self, value: O, timestamp: Timestamp) {
        self.output.main.push(Record {
            value,
            timestamp,
            created_ns: self.created_ns,
        });
    }

    /// Emits a record as is.
    #[inline]
    pub fn emit_record(&mut self, record: Record<O>) {
        self.output.main.push(record);
    }

    /// Emits `value` on the side output (late records, dead letters), with
    /// the current input's metadata.
    #[inline]
    pub fn emit_side(&mut self, value: S) {
        self.output.side.push(Record {
            value,
            timestamp: self.timestamp,
            created_ns: self.created_ns,
        });
    }

    /// Counts `n` late records (reported per instance in the progress).
    #[inline]
    pub fn count_late(&mut self, n: u64) {
        self.output.late += n;
    }

    /// Counts `n` records dropped on purpose, such as duplicates (reported
    /// per instance in the progress, like late records).
    #[inline]
    pub fn count_dropped(&mut self, n: u64) {
        self.output.dropped += n;
    }

    /// The event time of what is being handled.
    #[inline]
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The creation stamp of what is being handled.
    #[inline]
    pub fn created_ns(&self) -> u64 {
        self.created_ns
    }

    /// The input watermark ([`NO_TIMESTAMP`] before the first).
    #[inline]
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Processing time now (ms since the Unix epoch, on tokio's clock).
    pub fn processing_time(&self) -> Timestamp {
        self.clock.now_ms()
    }

    /// Registers a timer for `key` at `time` in `domain` (nothing if it
    /// exists). It fires through [`Operator::on_timer`].
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn register_timer<K: Serialize + ?Sized>(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &K,
    ) -> Result<(), OperatorError> {
        self.timers.register_key(domain, time, key)
    }

    /// Deletes the timer for `key` at `time` in `domain`, if any.
    ///
    /// # Errors
    /// Encoding and backend errors.
    pub fn delete_timer<K: Serialize + ?Sized>(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &K,
    ) -> Result<(), OperatorError> {
        self.timers.delete_key(domain, time, key)
    }
}

/// What an operator instance learns when it opens.
pub struct OperatorContext {
    /// The operator's name.
    pub name: String,
    /// This instance's index.
    pub instance: usize,
    /// The operator's parallelism.
    pub parallelism: usize,
    /// Entries each keyed state table keeps in memory.
    pub state_cache_capacity: usize,
    backend: SharedBackend,
    took: bool,
}

impl OperatorContext {
    pub(crate) fn new(
        name: &str,
        instance: usize,
        parallelism: usize,
        state_cache_capacity: usize,
        backend: SharedBackend,
    ) -> Self {
        Self {
            name: name.to_string(),
            instance,
            parallelism,
            state_cache_capacity,
            backend,
            took: false,
        }
    }

    /// A context for unit tests of operators, over an in-memory backend.
    pub fn for_test(name: &str) -> Self {
        Self::new(
            name,
            0,
            1,
            eddy_checkpoint::table::DEFAULT_CACHE_CAPACITY,
            SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new())),
        )
    }

    /// A context for unit tests of operators, over `backend` (to open an
    /// operator again over the state another instance left, as a restart
    /// does).
    pub fn for_test_over(name: &str, backend: SharedBackend) -> Self {
        Self::new(
            name,
            0,
            1,
            eddy_checkpoint::table::DEFAULT_CACHE_CAPACITY,
            backend,
        )
    }

    /// A handle on this instance's state backend (restored from the last
    /// checkpoint when the query recovers). A stateful operator builds each
    /// of its tables over one handle in `open` (tables share the backend,
    /// each under its own name) and declares them in
    /// [`Operator::tables`]. Returns `Some` on every call.
    pub fn take_state_backend(&mut self) -> Option<Box<dyn StateBackend>> {
        self.took = true;
        Some(Box::new(self.backend.clone()))
    }

    /// The instance's state backend as a handle that opens more handles
    /// later, for an operator that creates tables as it goes (one per
    /// open window); each table over it is declared in
    /// [`Operator::tables`] while it has state or writes pending.
    pub fn shared_state_backend(&mut self) -> SharedBackend {
        self.took = true;
        self.backend.clone()
    }

    /// Whether the operator took its state backend.
    pub(crate) fn took_state(&self) -> bool {
        self.took
    }
}

/// A record-at-a-time operator from `I` to `O`, with an optional side
/// output of `S`.
///
/// One method is required; the hooks have defaults. The runtime owns the
/// protocols around them: it aligns markers, flushes every table the
/// operator declares in [`tables`](Self::tables) (and its timers) at each
/// marker in steps that never stall the task, snapshots them, fires timers
/// as the watermark and the clock pass them, and forwards watermarks.
pub trait Operator<I, O, S = ()>: Send + 'static {
    /// Handles one record; outputs go to `out`.
    ///
    /// # Errors
    /// An error fails the query, naming this operator and instance.
    fn process(
        &mut self,
        record: Record<I>,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError>;

    /// Whether the runtime should show this operator what it is about to
    /// process ([`prefetch`](Self::prefetch),
    /// [`prefetch_timers`](Self::prefetch_timers)); `false` (the default)
    /// spares the others the cost.
    fn prefetches(&self) -> bool {
        false
    }

    /// Called with the next records of the input (up to 64 at a time)
    /// before they are handed to [`process`](Self::process) one at a time,
    /// when [`prefetches`](Self::prefetches) says so. A keyed operator
    /// looks up their keys here, all at once, so that the cache misses of
    /// its state overlap instead of stalling one record after another; it
    /// must not change state or emit.
    fn prefetch(&mut self, _records: &[Record<I>]) {}

    /// Like [`prefetch`](Self::prefetch), for the next timers about to
    /// fire, in the order they will (an [`on_timer`](Self::on_timer) may
    /// still delete one of them before it fires).
    fn prefetch_timers(&mut self, _timers: &[Timer]) {}

    /// Called once before the first record. A stateful operator takes its
    /// state backend here ([`OperatorContext::take_state_backend`]) and
    /// builds its tables over it.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The state tables the runtime flushes at markers: every table built
    /// over the backend taken in `open`.
    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        Vec::new()
    }

    /// A timer registered through the collector fired.
    fn on_timer(
        &mut self,
        _timer: &Timer,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The input watermark advanced to `watermark` (after the event-time
    /// timers it made due fired).
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Epoch `epoch` ends here (a checkpoint, or the end of a micro-batch):
    /// what is emitted now belongs to it. The runtime flushes the tables
    /// right after.
    fn on_marker(
        &mut self,
        _epoch: u64,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Every input ended; emit what is still due.
    fn on_end(&mut self, _out: &mut Collector<'_, O, S>) -> Result<(), OperatorError> {
        Ok(())
    }
}
