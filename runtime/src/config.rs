//! Pipeline configuration.

use crate::checkpoint_config::CheckpointConfig;
use crate::keys::DEFAULT_MAX_KEY_GROUPS;
use crate::trigger::Trigger;

/// Settings of a pipeline, fixed when it is built.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Parallelism of operators that do not set their own.
    pub default_parallelism: usize,
    /// Capacity of each edge, in messages (batches).
    pub channel_capacity: usize,
    /// Most records in one batch. Batches are sent when full or when the
    /// sending task is about to wait, never on a timer.
    pub batch_size: usize,
    /// Number of key groups (upper bound of keyed parallelism).
    pub max_key_groups: u32,
    /// Entries each keyed state table keeps in memory.
    pub state_cache_capacity: usize,
    /// Epoch checkpoints (exactly-once recovery); `None`: no checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// When epochs start: continuous processing or micro-batches.
    pub trigger: Trigger,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            default_parallelism: 1,
            channel_capacity: 8,
            batch_size: 512,
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            state_cache_capacity: eddy_checkpoint::table::DEFAULT_CACHE_CAPACITY,
            checkpoint: None,
            trigger: Trigger::default(),
        }
    }
}

impl PipelineConfig {
    /// Records one edge can hold: its capacity in batches times the batch size.
    pub fn edge_capacity_records(&self) -> usize {
        self.channel_capacity * self.batch_size
    }
}
