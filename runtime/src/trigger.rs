//! Triggers: one query, three ways to run it.
//!
//! The operators are the same code under every trigger; only the sources and
//! the coordinator behave differently.
//!
//! - [`Trigger::Continuous`]: sources run freely and records flow one at a
//!   time; when the query checkpoints, a marker is injected every
//!   `checkpoint_interval`.
//! - [`Trigger::ProcessingTime`]: micro-batches. At each tick the coordinator
//!   asks every source whether it has new data (the source fixes the end of
//!   its batch at what is available then). If none has, no batch runs.
//!   Otherwise it opens epoch `e`; each source emits records up to its fixed
//!   end, then `Marker(e)`, and pauses. The batch is done when every task
//!   acked `e` and (with a checkpoint directory) the manifest of `e` is
//!   durable and the sinks committed it. The next batch starts at the next
//!   tick, or at once if the batch overran its tick; ticks stay on the
//!   grid `start + k * interval` (missed ones are skipped), as in Spark.
//! - [`Trigger::AvailableNow`]: micro-batches back to back until every
//!   source is exhausted, then the query stops by itself.
//!
//! In micro-batch mode a sink's output counts as visible when its batch
//! commits, so end-to-end latency is measured at commit.

use std::time::Duration;

use serde::Serialize;

use crate::error::BuildError;

/// When epochs start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Record-at-a-time processing; markers every `checkpoint_interval` when
    /// the query checkpoints.
    Continuous {
        /// Time between two checkpoints.
        checkpoint_interval: Duration,
    },
    /// A micro-batch every `interval` (or at once after an overrun).
    ProcessingTime(Duration),
    /// Micro-batches until the sources are drained, then stop.
    AvailableNow,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger::Continuous {
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

impl Trigger {
    /// Continuous processing, checkpointing every `interval`.
    pub fn continuous(interval: Duration) -> Self {
        Trigger::Continuous {
            checkpoint_interval: interval,
        }
    }

    /// Whether the trigger runs micro-batches.
    pub fn is_micro_batch(&self) -> bool {
        !matches!(self, Trigger::Continuous { .. })
    }

    /// A short name: `continuous`, `microbatch-100ms`, `available-now`.
    pub fn name(&self) -> String {
        match self {
            Trigger::Continuous { .. } => "continuous".into(),
            Trigger::ProcessingTime(d) => format!("microbatch-{}ms", d.as_millis()),
            Trigger::AvailableNow => "available-now".into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        match self {
            Trigger::Continuous {
                checkpoint_interval: d,
            }
            | Trigger::ProcessingTime(d)
                if d.is_zero() =>
            {
                Err(BuildError::Config(
                    "trigger interval must be above zero".into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// One completed micro-batch, like Spark's streaming statistics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchProgress {
    /// The batch id (its epoch).
    pub batch_id: u64,
    /// When the batch was due (its tick), milliseconds since the query started.
    pub trigger_at_ms: f64,
    /// Records the sources emitted in the batch.
    pub input_rows: u64,
    /// From the tick the batch was due at to its start.
    pub scheduling_delay_ms: f64,
    /// From its start to its commit.
    pub processing_time_ms: f64,
    /// From the tick to the commit.
    pub total_delay_ms: f64,
}
