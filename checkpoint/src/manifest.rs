//! What a completed checkpoint records: the [`Manifest`].
//!
//! # Invariants
//! - A manifest lists one [`TaskSnapshot`] per task of the dataflow that
//!   acked the epoch — all of them: the coordinator writes a manifest only
//!   when every expected task acked (see [`crate::tracker`]).
//! - Every file a manifest's state handles name lies in the checkpoint store
//!   and stays there as long as the manifest is retained (the store's garbage
//!   collector deletes only files no retained manifest references).
//! - On disk a manifest is a [`frame`](crate::frame) (length + CRC32) around
//!   a versioned [`codec`](crate::codec) encoding; a manifest that does not
//!   verify is never used.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::snapshot::StateHandle;

/// One operator instance: the unit that owns state and acks epochs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The operator's name in the dataflow.
    pub operator: String,
    /// The instance index, `0..parallelism`.
    pub instance: u32,
}

impl TaskId {
    /// The task `operator#instance`.
    pub fn new(operator: impl Into<String>, instance: u32) -> Self {
        Self {
            operator: operator.into(),
            instance,
        }
    }

    /// A name for this task safe to use as one path component: ASCII letters,
    /// digits, `-`, `_` and `.` are kept, every other byte becomes `%XX`, so two
    /// different tasks never share a directory.
    pub fn dir_name(&self) -> String {
        let mut out = String::with_capacity(self.operator.len() + 8);
        for b in self.operator.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !out.is_empty())
            {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out.push_str(&format!("%23{}", self.instance));
        out
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.operator, self.instance)
    }
}

/// An operator and its parallelism, as the dataflow had them when the
/// checkpoint was taken (so a restore can tell whether the shape changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorShape {
    /// The operator's name.
    pub name: String,
    /// Its number of instances.
    pub parallelism: u32,
}

/// What one task contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// The task's persisted state, if it has any.
    pub state: Option<StateHandle>,
    /// Opaque bytes the runtime encodes: source offsets, sink pre-commit
    /// information, timers.
    pub meta: Vec<u8>,
}

/// A completed checkpoint: everything needed to restart the dataflow as of
/// the end of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The epoch this checkpoint completes.
    pub epoch: u64,
    /// The operators and their parallelism.
    pub shape: Vec<OperatorShape>,
    /// Every task's snapshot.
    pub tasks: BTreeMap<TaskId, TaskSnapshot>,
    /// Wall-clock time the manifest was made, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

impl Manifest {
    /// Bytes this checkpoint wrote to the store (files it shares with earlier
    /// checkpoints not counted).
    pub fn bytes_written(&self) -> u64 {
        self.state_handles().map(|h| h.bytes_written).sum()
    }

    /// Bytes of state this checkpoint references in total.
    pub fn total_state_bytes(&self) -> u64 {
        self.state_handles().map(StateHandle::total_bytes).sum()
    }

    /// Every task's state handle.
    pub fn state_handles(&self) -> impl Iterator<Item = &StateHandle> {
        self.tasks.values().filter_map(|t| t.state.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_display_and_order() {
        let a = TaskId::new("agg", 1);
        let b = TaskId::new("agg", 10);
        let c = TaskId::new("map", 0);
        assert_eq!(a.to_string(), "agg#1");
        assert!(a < b && b < c);
    }

    #[test]
    fn dir_names_are_safe_and_distinct() {
        let names = [
            TaskId::new("agg", 1).dir_name(),
            TaskId::new("agg#1", 0).dir_name(),
            TaskId::new("a/b", 0).dir_name(),
            TaskId::new("..", 0).dir_name(),
            TaskId::new("", 0).dir_name(),
        ];
        for n in &names {
            assert!(
                !n.contains('/') && n != ".." && n != "." && !n.is_empty(),
                "{n}"
            );
        }
        let set: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert_eq!(TaskId::new("agg", 1).dir_name(), "agg%231");
    }
}
