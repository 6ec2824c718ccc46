//! The sink trait.

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
