//! Errors of building and running a pipeline.

/// A mistake in the pipeline, refused when it is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The pipeline has no sink, so nothing would ever be output.
    #[error("the pipeline has no sink")]
    NoSink,
    /// The pipeline has no source.
    #[error("the pipeline has no source")]
    NoSource,
    /// An operator was given parallelism 0.
    #[error("operator `{operator}` has parallelism 0")]
    ZeroParallelism {
        /// The operator.
        operator: String,
    },
    /// A keyed operator's parallelism exceeds the number of key groups.
    #[error("operator `{operator}` has parallelism {parallelism}, above max_key_groups {max_key_groups}")]
    ParallelismAboveKeyGroups {
        /// The operator.
        operator: String,
        /// Its parallelism.
        parallelism: usize,
        /// The configured number of key groups.
        max_key_groups: u32,
    },
    /// The graph has a cycle through these operators.
    #[error("the dataflow graph has a cycle through `{operator}`")]
    Cycle {
        /// An operator on the cycle.
        operator: String,
    },
    /// An operator's output is consumed by nobody.
    #[error("the output of `{operator}` is not consumed by any operator or sink")]
    Dangling {
        /// The operator.
        operator: String,
    },
    /// Two operators share a name (names identify state in checkpoints).
    #[error("two operators are named `{operator}`")]
    DuplicateName {
        /// The name.
        operator: String,
    },
    /// Checkpointing needs every source to replay from an offset.
    #[error("source `{source_name}` cannot replay from an offset, so the query cannot checkpoint (exactly-once)")]
    NotReplayable {
        /// The source.
        source_name: String,
    },
    /// The checkpoint directory cannot be used.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The newest checkpoint was taken by a pipeline of another shape.
    #[error("incompatible checkpoint: {0}")]
    IncompatibleCheckpoint(String),
    /// The checkpoint recovery would restore is older than output a sink
    /// that cannot take output back has already made visible: replaying
    /// from it would make epochs `restored_epoch + 1 ..= committed_epoch`
    /// visible twice. Repair or restore the newer checkpoint, or accept
    /// duplicates for this recovery
    /// (`CheckpointConfig::accept_duplicates_on_fallback`).
    #[error(
        "exactly-once recovery refused: sink `{sink}` instance {instance} has committed epochs \
         up to {committed_epoch}, but the newest checkpoint that verifies is {restored}; \
         replaying from it would commit epochs {first_at_risk}..={committed_epoch} again. \
         Checkpoints skipped: [{skipped}]. Repair the checkpoint directory, or set \
         CheckpointConfig::accept_duplicates_on_fallback to accept duplicates for this recovery",
        restored = restored_epoch.map_or_else(|| "none".to_string(), |e| e.to_string()),
        first_at_risk = restored_epoch.map_or(1, |e| e + 1),
        skipped = skipped.join("; ")
    )]
    RecoveryWouldDuplicate {
        /// The sink.
        sink: String,
        /// The instance ahead of the checkpoint.
        instance: usize,
        /// The highest epoch it has made visible.
        committed_epoch: u64,
        /// The checkpoint recovery would restore (`None`: none at all).
        restored_epoch: Option<u64>,
        /// The newer checkpoints that did not verify, each with the file at
        /// fault (empty when the newer manifests are simply gone).
        skipped: Vec<String>,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// An error raised by user code inside an operator, source or sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    /// What went wrong.
    pub message: String,
}

impl OperatorError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<eddy_checkpoint::Error> for OperatorError {
    fn from(e: eddy_checkpoint::Error) -> Self {
        OperatorError::new(format!("state: {e}"))
    }
}

/// Why a running query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// User code returned an error.
    #[error("operator `{operator}` instance {instance} failed: {message}")]
    OperatorFailed {
        /// The operator's name.
        operator: String,
        /// The failing instance.
        instance: usize,
        /// The error.
        message: String,
    },
    /// User code panicked.
    #[error("operator `{operator}` instance {instance} panicked: {message}")]
    OperatorPanicked {
        /// The operator's name.
        operator: String,
        /// The failing instance.
        instance: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The query was torn down (handle dropped or runtime shut down) before it finished.
    #[error("the query was cancelled")]
    Cancelled,
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
