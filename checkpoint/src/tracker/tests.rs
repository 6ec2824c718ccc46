//! Exhaustive tests of the checkpoint state machine. Each test reads as a
//! script of events and the decisions expected.

use super::*;
use crate::snapshot::{BackendKind, StateHandle};

fn task(name: &str) -> TaskId {
    TaskId::new(name, 0)
}

fn tasks(names: &[&str]) -> BTreeSet<TaskId> {
    names.iter().map(|n| task(n)).collect()
}

fn snap(tag: u8) -> TaskSnapshot {
    TaskSnapshot {
        state: None,
        meta: vec![tag],
    }
}

fn tracker(names: &[&str], max_in_flight: usize) -> CheckpointTracker {
    CheckpointTracker::new(tasks(names), max_in_flight, 1_000)
}

fn completed(outcome: AckOutcome) -> CompletedCheckpoint {
    match outcome {
        AckOutcome::Complete(c) => c,
        other => panic!("expected Complete, got {other:?}"),
    }
}

/// `started == completed + aborted + subsumed + in_flight`.
fn assert_accounting(t: &CheckpointTracker) {
    let s = t.stats();
    assert_eq!(
        s.started,
        s.completed + s.aborted + s.subsumed + t.in_flight() as u64,
        "{s:?}"
    );
}

#[test]
fn one_epoch_completes_when_every_task_acked_in_any_order() {
    let mut t = tracker(&["a", "b", "c"], 1);
    assert_eq!(t.try_start(10), Some(1));
    assert_eq!(
        t.ack(1, &task("c"), snap(3), 11),
        AckOutcome::Pending { remaining: 2 }
    );
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 12),
        AckOutcome::Pending { remaining: 1 }
    );
    let c = completed(t.ack(1, &task("b"), snap(2), 15));
    assert_eq!(c.epoch, 1);
    assert_eq!(c.started_ms, 10);
    assert_eq!(c.duration_ms(), 5);
    assert!(c.subsumed.is_empty());
    let metas: Vec<_> = c
        .tasks
        .iter()
        .map(|(k, v)| (k.operator.clone(), v.meta[0]))
        .collect();
    assert_eq!(
        metas,
        vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
    );
    assert_eq!(t.last_completed(), Some(1));
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.stats().completed, 1);
    assert_accounting(&t);
}

#[test]
fn max_in_flight_refuses_new_epochs_until_one_finishes() {
    let mut t = tracker(&["a"], 2);
    assert_eq!(t.try_start(0), Some(1));
    assert_eq!(t.try_start(0), Some(2));
    assert_eq!(t.try_start(0), None);
    assert_eq!(t.next_epoch(), 3, "a refused start consumes no epoch");
    let _ = completed(t.ack(1, &task("a"), snap(1), 1));
    assert_eq!(t.try_start(2), Some(3));
    assert_eq!(t.pending_epochs(), vec![2, 3]);
    assert_accounting(&t);
}

#[test]
fn max_in_flight_zero_means_one() {
    let mut t = tracker(&["a"], 0);
    assert_eq!(t.try_start(0), Some(1));
    assert_eq!(t.try_start(0), None);
}

#[test]
fn duplicate_ack_is_ignored_and_keeps_the_first_snapshot() {
    let mut t = tracker(&["a", "b"], 1);
    t.try_start(0);
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 1),
        AckOutcome::Pending { remaining: 1 }
    );
    assert_eq!(
        t.ack(1, &task("a"), snap(99), 2),
        AckOutcome::Ignored(IgnoreReason::Duplicate)
    );
    let c = completed(t.ack(1, &task("b"), snap(2), 3));
    assert_eq!(c.tasks[&task("a")].meta, vec![1]);
    assert_eq!(t.stats().ignored_acks, 1);
    // An ack after completion is stale.
    assert_eq!(
        t.ack(1, &task("b"), snap(2), 4),
        AckOutcome::Ignored(IgnoreReason::NotPending)
    );
}

#[test]
fn acks_from_unknown_tasks_and_for_unknown_epochs_are_ignored() {
    let mut t = tracker(&["a", "b"], 1);
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 0),
        AckOutcome::Ignored(IgnoreReason::UnknownEpoch),
        "epoch not started yet"
    );
    t.try_start(0);
    assert_eq!(
        t.ack(1, &task("zz"), snap(1), 1),
        AckOutcome::Ignored(IgnoreReason::UnknownTask)
    );
    assert_eq!(
        t.ack(7, &task("a"), snap(1), 1),
        AckOutcome::Ignored(IgnoreReason::UnknownEpoch)
    );
    assert_eq!(
        t.ack(0, &task("a"), snap(1), 1),
        AckOutcome::Ignored(IgnoreReason::NotPending)
    );
    assert_eq!(t.missing_acks(1), Some(vec![task("a"), task("b")]));
    assert_eq!(t.stats().ignored_acks, 4);
    assert_accounting(&t);
}

#[test]
fn decline_aborts_the_epoch_and_later_acks_are_ignored() {
    let mut t = tracker(&["a", "b"], 2);
    t.try_start(0);
    t.try_start(0);
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 1),
        AckOutcome::Pending { remaining: 1 }
    );
    let aborted = t.decline(1, &task("b"), "disk full").unwrap();
    assert_eq!(
        aborted,
        Aborted {
            epoch: 1,
            reason: AbortReason::Declined {
                task: task("b"),
                reason: "disk full".into()
            }
        }
    );
    assert_eq!(
        t.ack(1, &task("b"), snap(2), 2),
        AckOutcome::Ignored(IgnoreReason::NotPending)
    );
    assert_eq!(t.decline(1, &task("a"), "again"), None, "already aborted");
    assert_eq!(t.decline(2, &task("zz"), "who?"), None, "unknown task");
    assert_eq!(t.decline(9, &task("a"), "never started"), None);
    // Epoch 2 is unaffected and completes.
    assert_eq!(
        t.ack(2, &task("a"), snap(1), 3),
        AckOutcome::Pending { remaining: 1 }
    );
    assert_eq!(completed(t.ack(2, &task("b"), snap(2), 3)).epoch, 2);
    assert_eq!(t.stats().aborted, 1);
    assert_eq!(t.last_completed(), Some(2));
    assert_accounting(&t);
}

#[test]
fn timeout_aborts_exactly_the_expired_epochs_oldest_first() {
    let mut t = CheckpointTracker::new(tasks(&["a"]), 3, 100);
    assert_eq!(t.try_start(0), Some(1));
    assert_eq!(t.try_start(50), Some(2));
    assert_eq!(t.try_start(60), Some(3));
    assert!(t.tick(99).is_empty());
    assert_eq!(
        t.tick(150),
        vec![
            Aborted {
                epoch: 1,
                reason: AbortReason::Timeout { pending_ms: 150 }
            },
            Aborted {
                epoch: 2,
                reason: AbortReason::Timeout { pending_ms: 100 }
            },
        ]
    );
    assert_eq!(t.pending_epochs(), vec![3]);
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 151),
        AckOutcome::Ignored(IgnoreReason::NotPending),
        "ack of a timed-out epoch"
    );
    assert_eq!(completed(t.ack(3, &task("a"), snap(1), 152)).epoch, 3);
    assert!(t.tick(10_000).is_empty());
    assert_eq!(t.stats().aborted, 2);
    assert_accounting(&t);
}

#[test]
fn a_clock_going_backwards_never_times_out() {
    let mut t = CheckpointTracker::new(tasks(&["a"]), 1, 100);
    t.try_start(1_000);
    assert!(t.tick(5).is_empty());
}

#[test]
fn later_completion_subsumes_earlier_pending_epochs() {
    let mut t = tracker(&["a", "b"], 4);
    for e in 1..=4 {
        assert_eq!(t.try_start(e), Some(e));
    }
    // Epoch 1 waits on b; epoch 3 gets both acks first.
    assert_eq!(
        t.ack(1, &task("a"), snap(1), 5),
        AckOutcome::Pending { remaining: 1 }
    );
    assert_eq!(
        t.ack(3, &task("b"), snap(3), 5),
        AckOutcome::Pending { remaining: 1 }
    );
    let c = completed(t.ack(3, &task("a"), snap(3), 6));
    assert_eq!(c.epoch, 3);
    assert_eq!(c.subsumed, vec![1, 2]);
    assert_eq!(t.pending_epochs(), vec![4], "later epochs stay pending");
    // Subsumed epochs can never complete afterwards.
    assert_eq!(
        t.ack(1, &task("b"), snap(1), 7),
        AckOutcome::Ignored(IgnoreReason::NotPending)
    );
    assert_eq!(t.stats().subsumed, 2);
    assert_eq!(t.stats().aborted, 0, "subsumption is not a failure");
    assert_eq!(t.last_completed(), Some(3));
    assert_accounting(&t);
}

#[test]
fn completions_are_delivered_in_increasing_epoch_order() {
    // Concurrent epochs with acks interleaved in a fixed scrambled order.
    let mut t = tracker(&["a", "b", "c"], 3);
    for e in 1..=3 {
        t.try_start(0);
        let _ = e;
    }
    let script: [(u64, &str); 9] = [
        (2, "a"),
        (1, "c"),
        (3, "b"),
        (2, "c"),
        (1, "a"),
        (3, "a"),
        (3, "c"),
        (2, "b"),
        (1, "b"),
    ];
    let mut done = Vec::new();
    for (i, (epoch, name)) in script.into_iter().enumerate() {
        if let AckOutcome::Complete(c) = t.ack(epoch, &task(name), snap(0), i as u64) {
            done.push((c.epoch, c.subsumed));
        }
    }
    assert_eq!(done, vec![(3, vec![1, 2])]);
    assert_accounting(&t);
}

#[test]
fn abort_all_cancels_every_pending_epoch() {
    let mut t = tracker(&["a"], 3);
    t.try_start(0);
    t.try_start(0);
    let aborted = t.abort_all("task b failed");
    assert_eq!(
        aborted.iter().map(|a| a.epoch).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(aborted
        .iter()
        .all(|a| a.reason == AbortReason::Cancelled("task b failed".into())));
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.try_start(1), Some(3), "epoch numbers are never reused");
    assert_accounting(&t);
}

#[test]
fn first_epoch_follows_a_restore() {
    let mut t = tracker(&["a"], 1).with_first_epoch(42);
    assert_eq!(t.try_start(0), Some(42));
    assert_eq!(
        t.ack(41, &task("a"), snap(0), 0),
        AckOutcome::Ignored(IgnoreReason::NotPending)
    );
}

#[test]
fn with_no_tasks_an_epoch_only_times_out() {
    let mut t = CheckpointTracker::new(BTreeSet::new(), 1, 10);
    assert_eq!(t.try_start(0), Some(1));
    assert_eq!(t.tick(10).len(), 1);
}

#[test]
fn completed_checkpoint_becomes_a_manifest() {
    let mut t = tracker(&["a"], 1);
    t.try_start(0);
    let handle = StateHandle {
        kind: BackendKind::Memory,
        files: vec![],
        bytes_written: 123,
    };
    let c = completed(t.ack(
        1,
        &task("a"),
        TaskSnapshot {
            state: Some(handle),
            meta: vec![],
        },
        1,
    ));
    assert_eq!(c.bytes_written(), 123);
    let shape = vec![OperatorShape {
        name: "a".into(),
        parallelism: 1,
    }];
    let m = c.into_manifest(shape.clone(), 1_700_000_000_000);
    assert_eq!(m.epoch, 1);
    assert_eq!(m.shape, shape);
    assert_eq!(m.bytes_written(), 123);
    assert_eq!(m.tasks.len(), 1);
}

/// A seeded random walk over every event, checking the invariants after
/// each step.
#[test]
fn random_event_sequences_keep_the_invariants() {
    let seed: u64 = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    println!("seed = {seed} (set EDDY_TEST_SEED to replay)");
    let mut rng = seed;
    let mut next = move |n: u64| {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let names = ["a", "b", "c"];
    let mut t = CheckpointTracker::new(tasks(&names), 3, 50);
    let mut now = 0u64;
    let mut last_done = 0u64;
    for step in 0..5_000 {
        now += next(10);
        match next(10) {
            0 | 1 => {
                let _ = t.try_start(now);
            }
            2 => {
                for a in t.tick(now) {
                    assert!(a.epoch > last_done, "step {step}");
                }
            }
            3 => {
                let e = next(t.next_epoch() + 1);
                let _ = t.decline(e, &task(names[next(3) as usize]), "x");
            }
            _ => {
                let e = next(t.next_epoch() + 1);
                let outcome = t.ack(e, &task(names[next(3) as usize]), snap(0), now);
                if let AckOutcome::Complete(c) = outcome {
                    assert!(c.epoch > last_done, "step {step}: order");
                    assert!(c.subsumed.iter().all(|&s| s > last_done && s < c.epoch));
                    assert_eq!(c.tasks.len(), names.len());
                    last_done = c.epoch;
                }
            }
        }
        assert!(t.in_flight() <= 3);
        assert!(t.pending_epochs().iter().all(|&e| e > last_done));
        assert_accounting(&t);
    }
    assert!(
        t.stats().completed > 0,
        "the walk should complete some epochs"
    );
}
