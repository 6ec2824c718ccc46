//! The operator trait: one required method, default hooks.
//!
//! The runtime owns everything around an operator: reading and aligning
//! inputs, batching and routing outputs, markers, watermarks and the end of
//! stream. An operator only reacts to one record at a time in
//! [`Operator::process`], and optionally to the hooks.

use eddy_checkpoint::StateBackend;

use crate::error::OperatorError;
use crate::record::{Record, Timestamp};

/// Collects an operator's outputs. Emitted values inherit the event time and
/// creation stamp of the input record being processed.
pub struct Collector<'a, O> {
    out: &'a mut Vec<Record<O>>,
    timestamp: Timestamp,
    created_ns: u64,
}

impl<'a, O> Collector<'a, O> {
    /// A collector appending to `out` with the metadata of the current input.
    pub fn new(out: &'a mut Vec<Record<O>>, timestamp: Timestamp, created_ns: u64) -> Self {
        Self {
            out,
            timestamp,
            created_ns,
        }
    }

    /// Emits `value` with the current input's metadata.
    #[inline]
    pub fn emit(&mut self, value: O) {
        self.out.push(Record {
            value,
            timestamp: self.timestamp,
            created_ns: self.created_ns,
        });
    }

    /// Emits `value` with event time `timestamp`.
    #[inline]
    pub fn emit_at(&mut self, value: O, timestamp: Timestamp) {
        self.out.push(Record {
            value,
            timestamp,
            created_ns: self.created_ns,
        });
    }

    /// Emits a record as is.
    #[inline]
    pub fn emit_record(&mut self, record: Record<O>) {
        self.out.push(record);
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
    backend: Option<Box<dyn StateBackend>>,
}

impl OperatorContext {
    pub(crate) fn new(
        name: &str,
        instance: usize,
        parallelism: usize,
        state_cache_capacity: usize,
        backend: Box<dyn StateBackend>,
    ) -> Self {
        Self {
            name: name.to_string(),
            instance,
            parallelism,
            state_cache_capacity,
            backend: Some(backend),
        }
    }

    /// A context for unit tests of operators, over an in-memory backend.
    pub fn for_test(name: &str) -> Self {
        Self::new(
            name,
            0,
            1,
            eddy_checkpoint::table::DEFAULT_CACHE_CAPACITY,
            Box::new(eddy_checkpoint::MemoryBackend::new()),
        )
    }

    /// Takes this instance's state backend (restored from the last checkpoint
    /// when the query recovers). A stateful operator takes it once in `open`.
    pub fn take_state_backend(&mut self) -> Option<Box<dyn StateBackend>> {
        self.backend.take()
    }
}

/// A record-at-a-time operator from `I` to `O`.
pub trait Operator<I, O>: Send + 'static {
    /// Handles one record; outputs go to `out`.
    ///
    /// # Errors
    /// An error fails the query, naming this operator and instance.
    fn process(
        &mut self,
        record: Record<I>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError>;

    /// Called once before the first record.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The input watermark advanced to `watermark`.
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Epoch `epoch` ends here: capture the state as of now for the
    /// backend. Runs between two records and must be O(1): begin the flush
    /// of state tables ([`KeyedTable::begin_flush`]) and do the encoding in
    /// [`flush_step`](Self::flush_step).
    ///
    /// [`KeyedTable::begin_flush`]: eddy_checkpoint::KeyedTable::begin_flush
    fn on_marker(&mut self, _epoch: u64) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Goes on with the flush begun by [`on_marker`](Self::on_marker):
    /// encode about `budget` entries, and write the batch when all are.
    /// Returns `true` when the flush is written.
    ///
    /// The runtime calls it between input batches until it returns `true`,
    /// and before the next watermark, marker or end of input; the marker's
    /// snapshot is taken then. Records are processed meanwhile.
    fn flush_step(&mut self, _budget: usize) -> Result<bool, OperatorError> {
        Ok(true)
    }

    /// Every input ended; emit what is still due.
    fn on_end(&mut self, _out: &mut Collector<'_, O>) -> Result<(), OperatorError> {
        Ok(())
    }
}
