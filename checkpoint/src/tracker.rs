//! The checkpoint coordinator's bookkeeping as a pure state machine: no I/O,
//! no clock, no async. The coordinator task feeds it events (a trigger, an
//! ack, a decline, the time) and carries out the decisions it returns (inject
//! markers, write the manifest, tell sinks to commit, report aborts).
//!
//! # Protocol
//! - [`CheckpointTracker::try_start`] opens the next epoch, unless
//!   `max_in_flight` epochs are already pending. Epochs are numbered
//!   consecutively, starting above the last completed one after a restore.
//! - Every expected task acks an epoch once, with its [`TaskSnapshot`]
//!   ([`CheckpointTracker::ack`]). The ack that completes the set completes
//!   the epoch: [`AckOutcome::Complete`] carries everything the manifest needs.
//! - A task that cannot snapshot declines ([`CheckpointTracker::decline`]); a
//!   pending epoch older than the timeout is aborted by
//!   [`CheckpointTracker::tick`]; a failover aborts all
//!   ([`CheckpointTracker::abort_all`]). Processing goes on in every case.
//!
//! # Ordering: Flink's subsumption
//! Epochs may complete out of order (a later epoch's acks can all arrive
//! while an earlier one still waits for a slow upload). When epoch `n`
//! completes, every pending epoch `< n` is *subsumed*: aborted with
//! [`AbortReason::Subsumed`], listed in [`CompletedCheckpoint::subsumed`].
//! Hence completions are delivered in strictly increasing epoch order, and
//! nothing `< n` can complete afterwards. `n`'s snapshot covers all input up
//! to marker `n`, so a subsumed checkpoint loses nothing: a sink told to
//! commit `n` commits its staged output of every epoch `<= n`.
//!
//! # Invariants
//! - An epoch is in exactly one of: pending, completed, aborted (incl.
//!   subsumed); it leaves *pending* once and never returns.
//! - At most `max_in_flight` epochs are pending.
//! - Acks for unknown tasks, unknown (never started) epochs, epochs no longer
//!   pending, and repeated acks are [`AckOutcome::Ignored`]; they never change
//!   the state (a duplicate does not replace the first snapshot).
//! - `started == completed + aborted + subsumed + in_flight` at all times.
//!
//! Time is passed in as `now_ms`, any monotonic milliseconds the caller
//! chooses; the tracker only subtracts it from start times.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{Manifest, OperatorShape, TaskId, TaskSnapshot};

/// Why an epoch was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// Not every task acked within the timeout.
    Timeout {
        /// How long the epoch had been pending.
        pending_ms: u64,
    },
    /// A task declined it (its snapshot failed).
    Declined {
        /// The task.
        task: TaskId,
        /// Its reason.
        reason: String,
    },
    /// A later epoch completed first (not a failure).
    Subsumed {
        /// The epoch that completed.
        by: u64,
    },
    /// The coordinator aborted every pending epoch (failover, shutdown).
    Cancelled(String),
}

/// An aborted epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted {
    /// The epoch.
    pub epoch: u64,
    /// Why.
    pub reason: AbortReason,
}

/// An epoch every task acked: what the coordinator needs for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    /// The epoch.
    pub epoch: u64,
    /// Every expected task's snapshot.
    pub tasks: BTreeMap<TaskId, TaskSnapshot>,
    /// When it started (`now_ms` of `try_start`).
    pub started_ms: u64,
    /// When the last ack arrived.
    pub completed_ms: u64,
    /// Earlier pending epochs this completion subsumed, ascending.
    pub subsumed: Vec<u64>,
}

impl CompletedCheckpoint {
    /// Time from start to the last ack.
    pub fn duration_ms(&self) -> u64 {
        self.completed_ms.saturating_sub(self.started_ms)
    }

    /// Bytes the tasks' snapshots newly wrote to the store.
    pub fn bytes_written(&self) -> u64 {
        self.tasks
            .values()
            .filter_map(|t| t.state.as_ref())
            .map(|h| h.bytes_written)
            .sum()
    }

    /// The manifest recording this checkpoint.
    pub fn into_manifest(self, shape: Vec<OperatorShape>, created_unix_ms: u64) -> Manifest {
        Manifest {
            epoch: self.epoch,
            shape,
            tasks: self.tasks,
            created_unix_ms,
        }
    }
}

/// Why an ack changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The task is not one of the expected tasks.
    UnknownTask,
    /// The epoch was never started.
    UnknownEpoch,
    /// The epoch already completed or was aborted.
    NotPending,
    /// The task already acked this epoch.
    Duplicate,
}

/// What an ack did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a completed checkpoint must be written as a manifest"]
pub enum AckOutcome {
    /// Recorded; the epoch still waits for `remaining` tasks.
    Pending {
        /// Tasks yet to ack.
        remaining: usize,
    },
    /// The last ack: the epoch is complete.
    Complete(CompletedCheckpoint),
    /// Nothing changed.
    Ignored(IgnoreReason),
}

/// Counters of a tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Epochs started.
    pub started: u64,
    /// Epochs completed.
    pub completed: u64,
    /// Epochs aborted by timeout, decline or cancellation.
    pub aborted: u64,
    /// Epochs subsumed by a later completion.
    pub subsumed: u64,
    /// Acks ignored.
    pub ignored_acks: u64,
}

struct Pending {
    started_ms: u64,
    acks: BTreeMap<TaskId, TaskSnapshot>,
}

/// The coordinator's checkpoint state machine (see the module doc).
pub struct CheckpointTracker {
    expected: BTreeSet<TaskId>,
    max_in_flight: usize,
    timeout_ms: u64,
    next_epoch: u64,
    last_completed: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    stats: TrackerStats,
}

impl CheckpointTracker {
    /// A tracker expecting an ack from each of `expected_tasks` per epoch,
    /// with at most `max_in_flight` (at least 1) epochs pending, each aborted
    /// after `timeout_ms`. The first epoch is 1.
    ///
    /// With no expected task an epoch can never complete; it times out.
    pub fn new(expected_tasks: BTreeSet<TaskId>, max_in_flight: usize, timeout_ms: u64) -> Self {
        Self {
            expected: expected_tasks,
            max_in_flight: max_in_flight.max(1),
            timeout_ms,
            next_epoch: 1,
            last_completed: None,
            pending: BTreeMap::new(),
            stats: TrackerStats::default(),
        }
    }

    /// Numbers epochs from `first_epoch` on (after a restore: above every
    /// manifest in the store, see
    /// [`Recovery::next_epoch`](crate::store::Recovery::next_epoch)).
    pub fn with_first_epoch(mut self, first_epoch: u64) -> Self {
        self.next_epoch = first_epoch.max(1);
        self
    }

    /// Opens the next epoch, or `None` when `max_in_flight` are pending.
    pub fn try_start(&mut self, now_ms: u64) -> Option<u64> {
        if self.pending.len() >= self.max_in_flight {
            return None;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.pending.insert(
            epoch,
            Pending {
                started_ms: now_ms,
                acks: BTreeMap::new(),
            },
        );
        self.stats.started += 1;
        Some(epoch)
    }

    /// Records `task`'s snapshot for `epoch`.
    pub fn ack(
        &mut self,
        epoch: u64,
        task: &TaskId,
        snapshot: TaskSnapshot,
        now_ms: u64,
    ) -> AckOutcome {
        let early = if !self.expected.contains(task) {
            Some(IgnoreReason::UnknownTask)
        } else if epoch >= self.next_epoch {
            Some(IgnoreReason::UnknownEpoch)
        } else {
            None
        };
        let slot = match (early, self.pending.entry(epoch)) {
            (None, Entry::Occupied(slot)) => Ok(slot),
            (Some(reason), _) => Err(reason),
            (None, Entry::Vacant(_)) => Err(IgnoreReason::NotPending),
        };
        let mut slot = match slot {
            Ok(slot) if !slot.get().acks.contains_key(task) => slot,
            Ok(_) => return self.ignore(IgnoreReason::Duplicate),
            Err(reason) => return self.ignore(reason),
        };
        slot.get_mut().acks.insert(task.clone(), snapshot);
        let remaining = self.expected.len() - slot.get().acks.len();
        if remaining > 0 {
            return AckOutcome::Pending { remaining };
        }
        let done = slot.remove();
        let later = self.pending.split_off(&epoch);
        let subsumed: Vec<u64> = std::mem::replace(&mut self.pending, later)
            .into_keys()
            .collect();
        self.stats.subsumed += subsumed.len() as u64;
        self.stats.completed += 1;
        self.last_completed = Some(epoch);
        AckOutcome::Complete(CompletedCheckpoint {
            epoch,
            tasks: done.acks,
            started_ms: done.started_ms,
            completed_ms: now_ms,
            subsumed,
        })
    }

    fn ignore(&mut self, reason: IgnoreReason) -> AckOutcome {
        self.stats.ignored_acks += 1;
        AckOutcome::Ignored(reason)
    }

    fn is_pending(&self, epoch: u64, task: &TaskId) -> bool {
        self.expected.contains(task) && self.pending.contains_key(&epoch)
    }

    /// `task` could not snapshot `epoch`: aborts it. `None` when the epoch is
    /// not pending or the task is unknown (nothing changed).
    pub fn decline(
        &mut self,
        epoch: u64,
        task: &TaskId,
        reason: impl Into<String>,
    ) -> Option<Aborted> {
        if !self.is_pending(epoch, task) {
            return None;
        }
        self.pending.remove(&epoch)?;
        self.stats.aborted += 1;
        Some(Aborted {
            epoch,
            reason: AbortReason::Declined {
                task: task.clone(),
                reason: reason.into(),
            },
        })
    }

    /// Aborts every epoch pending for `timeout_ms` or longer, oldest first.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Aborted> {
        let expired: Vec<(u64, u64)> = self
            .pending
            .iter()
            .map(|(&epoch, p)| (epoch, now_ms.saturating_sub(p.started_ms)))
            .filter(|&(_, age)| age >= self.timeout_ms)
            .collect();
        expired
            .into_iter()
            .map(|(epoch, pending_ms)| {
                self.pending.remove(&epoch);
                self.stats.aborted += 1;
                Aborted {
                    epoch,
                    reason: AbortReason::Timeout { pending_ms },
                }
            })
            .collect()
    }

    /// Aborts every pending epoch, oldest first (failover, shutdown).
    pub fn abort_all(&mut self, reason: impl Into<String>) -> Vec<Aborted> {
        let reason = reason.into();
        let pending = std::mem::take(&mut self.pending);
        self.stats.aborted += pending.len() as u64;
        pending
            .into_keys()
            .map(|epoch| Aborted {
                epoch,
                reason: AbortReason::Cancelled(reason.clone()),
            })
            .collect()
    }

    /// Epochs pending, ascending.
    pub fn pending_epochs(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Number of epochs pending.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Tasks that have not acked `epoch` yet (`None` if it is not pending).
    pub fn missing_acks(&self, epoch: u64) -> Option<Vec<TaskId>> {
        let p = self.pending.get(&epoch)?;
        Some(
            self.expected
                .iter()
                .filter(|t| !p.acks.contains_key(*t))
                .cloned()
                .collect(),
        )
    }

    /// The newest completed epoch.
    pub fn last_completed(&self) -> Option<u64> {
        self.last_completed
    }

    /// The epoch the next `try_start` opens.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    /// Counters.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
