//! The sink trait.
//!
//! # Two-phase commit and recovery
//! A sink whose output becomes visible only at commit
//! ([`visible_at_commit`](Sink::visible_at_commit)) stages each epoch's output
//! at [`on_marker`](Sink::on_marker) and makes it visible at
//! [`commit`](Sink::commit), once the epoch's checkpoint is durable. After a
//! crash the query restarts from the newest checkpoint that verifies. When
//! that checkpoint is older than an epoch the sink has already made visible
//! (the newer checkpoints were damaged or deleted), replaying would make the
//! epochs in between visible twice. Before anything starts, the runtime asks
//! every sink instance for its [`committed_epoch`](Sink::committed_epoch); a
//! sink ahead of the restored checkpoint either takes its later epochs back
//! ([`retract_after`](Sink::retract_after), when it
//! [`can_retract`](Sink::can_retract)) or the start is refused with
//! [`BuildError::RecoveryWouldDuplicate`](crate::BuildError::RecoveryWouldDuplicate),
//! unless the user accepted duplicates for such a recovery
//! (`CheckpointConfig::accept_duplicates_on_fallback`).

use serde::Serialize;

use crate::error::OperatorError;
use crate::record::Record;

/// What a sink instance learns when it opens.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name.
    pub name: String,
    /// This instance's index.
    pub instance: usize,
    /// The sink's parallelism.
    pub parallelism: usize,
}

/// A sink of records of type `T`. Instances are cloned from one value and
/// then opened with their [`SinkContext`].
pub trait Sink<T>: Send + 'static {
    /// Writes one batch of records (in arrival order).
    ///
    /// # Errors
    /// An error fails the query, naming this sink and instance.
    fn write(&mut self, records: Vec<Record<T>>) -> Result<(), OperatorError>;

    /// Called once before the first write.
    fn open(&mut self, _ctx: &SinkContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Epoch `epoch` ends here: everything written since the previous marker
    /// belongs to it. Stage it durably (pre-commit) and return what the sink
    /// needs to commit it later.
    fn on_marker(&mut self, _epoch: u64) -> Result<Vec<u8>, OperatorError> {
        Ok(Vec::new())
    }

    /// Every epoch up to and including `epoch` is in a durable checkpoint:
    /// make its output visible. Must be idempotent (a restarted query may
    /// commit the restored epoch again).
    fn commit(&mut self, _epoch: u64) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Called after `open` when the query checkpoints: `restored` is the
    /// epoch the query restarts from and this sink's pre-commit information
    /// for it (`None`: no checkpoint, a fresh start). An exactly-once sink
    /// commits that epoch if it had not, and discards staged output of later
    /// epochs.
    fn restore(&mut self, _restored: Option<(u64, &[u8])>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The highest epoch whose output this instance has made visible, read
    /// from where readers see it (the file sink: its committed part files).
    /// `None`: nothing committed, or the sink does not commit by epoch.
    /// Called on a fresh clone, before [`open`](Self::open), when the query
    /// checkpoints.
    ///
    /// # Errors
    /// The visible output cannot be read; the start is refused.
    fn committed_epoch(&self, _ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
        Ok(None)
    }

    /// Whether [`retract_after`](Self::retract_after) can take committed
    /// epochs back.
    fn can_retract(&self) -> bool {
        false
    }

    /// Takes back the visible output of every epoch after `epoch`, never
    /// deleting it silently (the file sink moves it to a quarantine
    /// directory), and says what it moved. Called on a fresh clone, before
    /// [`open`](Self::open), only when [`can_retract`](Self::can_retract).
    ///
    /// # Errors
    /// The output could not be moved; the start is refused.
    fn retract_after(
        &mut self,
        _ctx: &SinkContext,
        epoch: u64,
    ) -> Result<Retracted, OperatorError> {
        Err(OperatorError::new(format!(
            "this sink cannot retract the epochs after {epoch}"
        )))
    }

    /// Whether output becomes visible only at commit (exactly-once sinks):
    /// end-to-end latency is then measured at commit.
    fn visible_at_commit(&self) -> bool {
        false
    }

    /// Every input ended. Without checkpointing, everything written must be
    /// visible when this returns.
    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// What [`Sink::retract_after`] took back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retracted {
    /// The epochs taken back, ascending.
    pub epochs: Vec<u64>,
    /// What was moved (for the file sink: the part files, as they were named).
    pub items: Vec<String>,
    /// Where it went (for the file sink: the quarantine directory).
    pub moved_to: String,
}
