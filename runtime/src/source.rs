//! The source trait.
//!
//! A source is polled by its task; between two polls the task handles control
//! commands (epoch markers, stop), so a marker lands between two records.
//! A source that can replay from an offset supports exactly-once recovery.
//! In micro-batch mode a source fixes the end of each batch at what is
//! available ([`Source::fix_batch_end`]), and no batch takes more than
//! [`Source::max_records_per_batch`] records from one instance.

use std::future::Future;

use tokio::time::Instant;

use crate::error::OperatorError;
use crate::record::{Record, Timestamp};

/// The default of [`Source::max_records_per_batch`]: about 60 ms of work at
/// the keyed-count ceiling measured on 2 cores (17 M records/s).
pub const DEFAULT_MAX_RECORDS_PER_BATCH: u64 = 1_000_000;

/// What a poll of a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records were appended (possibly none); poll again.
    Ready,
    /// Nothing is due before this instant (rate-limited sources).
    IdleUntil(Instant),
    /// Nothing is available; the task awaits [`Source::wait`].
    Pending,
    /// The source is exhausted; the task sends end of stream.
    Finished,
}

/// What a source instance learns when it opens.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's name.
    pub name: String,
    /// This instance's index.
    pub instance: usize,
    /// The source's parallelism.
    pub parallelism: usize,
}

/// A source of records of type `T`. Instances are cloned from one value and
/// then opened with their [`SourceContext`].
pub trait Source<T>: Send + 'static {
    /// Appends at most `max` records to `out`.
    ///
    /// # Errors
    /// An error fails the query, naming this source and instance.
    fn poll_next(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError>;

    /// The source's own event-time progress, for a source that reads
    /// several partitions (Kafka): the lowest of the newest event times
    /// its active partitions delivered,
    /// [`NO_TIMESTAMP`](crate::record::NO_TIMESTAMP) while an active
    /// partition has delivered nothing, `None` for no opinion (the
    /// default). The task asks after every poll; the watermark generator
    /// never lets its watermark pass this value less its bound, so a
    /// partition lagging behind the others does not make its own records
    /// late. Used with event time the source stamps (not with an
    /// extractor or ingestion time).
    fn watermark(&mut self) -> Option<Timestamp> {
        None
    }

    /// Called once before the first poll.
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Waits until records may be available (after [`SourcePoll::Pending`]).
    ///
    /// # Cancel safety
    /// Must be cancel safe: the task drops this future to handle a command.
    fn wait(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// The read position: replaying from it reproduces every later record.
    fn offset(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Moves the read position to `offset` (from [`offset`](Self::offset)).
    ///
    /// # Errors
    /// Sources that cannot replay refuse.
    fn seek(&mut self, _offset: &[u8]) -> Result<(), OperatorError> {
        Err(OperatorError::new(
            "this source cannot replay from an offset",
        ))
    }

    /// Micro-batch mode: fixes the end of the next batch at what is
    /// available now, and says whether anything is. Until the next call,
    /// [`poll_next`](Self::poll_next) must not emit past that end (it returns
    /// `IdleUntil`, `Pending` or `Finished` there). The default fixes nothing:
    /// the batch runs until the source stops being `Ready`.
    fn fix_batch_end(&mut self) -> bool {
        true
    }

    /// Micro-batch mode: the most records this instance puts in one batch,
    /// like Spark's `maxOffsetsPerTrigger` (but per instance). The task ends
    /// the batch there even if the end fixed by
    /// [`fix_batch_end`](Self::fix_batch_end) is further; the rest goes into
    /// the next batch. A backlog is then worked off in batches of bounded
    /// size, each committed (and its output made visible) in bounded time,
    /// instead of one batch holding everything that became due. Default:
    /// [`DEFAULT_MAX_RECORDS_PER_BATCH`]; `u64::MAX` removes the cap; `0`
    /// counts as 1.
    fn max_records_per_batch(&self) -> u64 {
        DEFAULT_MAX_RECORDS_PER_BATCH
    }

    /// Whether [`seek`](Self::seek) works (required for exactly-once).
    fn replayable(&self) -> bool {
        false
    }
}
