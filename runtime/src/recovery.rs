//! Recovery and what sinks have already made visible.
//!
//! # The problem
//! Recovery restores the newest checkpoint that verifies. When newer
//! checkpoints were damaged or deleted, that checkpoint is older than output
//! a two-phase-commit sink already made visible: the sources replay from the
//! older offsets, and without care every epoch between the two checkpoints
//! would be committed a second time. A silent fallback would turn
//! exactly-once into at-least-once.
//!
//! # The rule
//! Before anything is spawned, every sink instance reports the highest epoch
//! it has made visible ([`Sink::committed_epoch`]). For every instance ahead
//! of the restored epoch `r` (`0` when nothing is restored):
//! - if any such instance cannot retract and the user did not accept
//!   duplicates (`CheckpointConfig::accept_duplicates_on_fallback`), the
//!   start is refused with [`BuildError::RecoveryWouldDuplicate`], naming the
//!   sink, the epochs at risk, and the checkpoints skipped with the file at
//!   fault; nothing has been touched;
//! - otherwise every instance that can retract takes back its epochs `> r`
//!   ([`Sink::retract_after`]: the file sink moves them to a quarantine
//!   directory) and replay commits them once; instances that cannot are
//!   reported as committing those epochs again (at-least-once, accepted).
//!
//! New epochs are numbered above every epoch a sink reported, so replayed
//! output never takes the name of output already committed or quarantined.
//! The outcome is logged and kept in [`RecoveryReport`]
//! (`CheckpointStats::recovery`).
//!
//! # Order of the steps
//! `check` runs before the state backends are restored and changes
//! nothing, so a refused (or otherwise failed) start leaves the output as
//! it was. Only when everything else of the start succeeded does the
//! runtime set aside the manifests recovery skipped
//! (`CheckpointStore::set_aside`, so no later start can restore them and
//! lose what this one commits) and then `retract`. A crash between the
//! steps is safe: the next start makes the same decision again.

use std::marker::PhantomData;

use serde::Serialize;

use crate::error::{BuildError, OperatorError};
use crate::plan::LogicalNode;
use crate::record::Data;
use crate::sink::{Retracted, Sink, SinkContext};

/// One sink instance whose visible output was ahead of the restored
/// checkpoint, and what recovery did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkAhead {
    /// The sink.
    pub sink: String,
    /// The instance.
    pub instance: usize,
    /// The highest epoch it had made visible.
    pub committed_epoch: u64,
    /// What it took back; `None`: it cannot retract, and the epochs after
    /// the restored one will be committed again (duplicates accepted).
    pub retracted: Option<Retracted>,
}

/// How a start reconciled the restored checkpoint with the sinks' output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The restored epoch (`None`: no checkpoint).
    pub restored_epoch: Option<u64>,
    /// Newer checkpoints that did not verify, each with the file at fault.
    pub skipped: Vec<String>,
    /// Sink instances that had made later epochs visible.
    pub sinks_ahead: Vec<SinkAhead>,
    /// The highest epoch any sink had made visible.
    pub highest_committed_epoch: Option<u64>,
}

impl RecoveryReport {
    /// Whether this recovery lets some output be committed twice (a sink
    /// that cannot retract was ahead and duplicates were accepted).
    pub fn at_least_once(&self) -> bool {
        self.sinks_ahead.iter().any(|s| s.retracted.is_none())
    }
}

/// A sink of any record type, as recovery sees it: a fresh clone is asked
/// what it committed and told to retract.
pub(crate) trait SinkProbe: Send {
    fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError>;
    fn can_retract(&self) -> bool;
    fn retract_after(&self, ctx: &SinkContext, epoch: u64) -> Result<Retracted, OperatorError>;
}

/// The [`SinkProbe`] of a typed sink.
pub(crate) struct ProbeOf<T, S> {
    sink: S,
    _records: PhantomData<fn(T)>,
}

impl<T, S> ProbeOf<T, S> {
    pub(crate) fn new(sink: S) -> Self {
        Self {
            sink,
            _records: PhantomData,
        }
    }
}

impl<T: Data, S: Sink<T> + Clone> SinkProbe for ProbeOf<T, S> {
    fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
        self.sink.clone().committed_epoch(ctx)
    }

    fn can_retract(&self) -> bool {
        self.sink.can_retract()
    }

    fn retract_after(&self, ctx: &SinkContext, epoch: u64) -> Result<Retracted, OperatorError> {
        self.sink.clone().retract_after(ctx, epoch)
    }
}

/// What recovery knows before reconciling.
pub(crate) struct Restoring {
    /// The restored epoch (`None`: no checkpoint).
    pub restored_epoch: Option<u64>,
    /// Newer checkpoints skipped, with the file at fault.
    pub skipped: Vec<String>,
    /// Whether duplicates are accepted from sinks that cannot retract.
    pub accept_duplicates: bool,
}

fn probe_error(node: &LogicalNode, instance: usize, e: OperatorError) -> BuildError {
    BuildError::Checkpoint(format!(
        "recovery: sink `{}` instance {instance}: {}",
        node.name, e.message
    ))
}

/// Checks every instance of `sinks` against the restored epoch (the rule of
/// the module doc) without changing anything: the report lists the sinks
/// ahead, none retracted yet. Call [`retract`] once the rest of the start
/// succeeded.
///
/// # Errors
/// [`BuildError::RecoveryWouldDuplicate`], or [`BuildError::Checkpoint`]
/// when a sink's output cannot be read.
pub(crate) fn check(
    restoring: Restoring,
    sinks: &[(&LogicalNode, &dyn SinkProbe)],
) -> Result<RecoveryReport, BuildError> {
    let restored = restoring.restored_epoch.unwrap_or(0);
    let mut report = RecoveryReport {
        restored_epoch: restoring.restored_epoch,
        skipped: restoring.skipped,
        ..RecoveryReport::default()
    };
    for (node, probe) in sinks {
        for instance in 0..node.parallelism {
            let committed = probe
                .committed_epoch(&context(node, instance))
                .map_err(|e| probe_error(node, instance, e))?;
            let Some(c) = committed else { continue };
            report.highest_committed_epoch = report.highest_committed_epoch.max(Some(c));
            if c <= restored {
                continue;
            }
            if !probe.can_retract() && !restoring.accept_duplicates {
                return Err(BuildError::RecoveryWouldDuplicate {
                    sink: node.name.clone(),
                    instance,
                    committed_epoch: c,
                    restored_epoch: report.restored_epoch,
                    skipped: report.skipped.clone(),
                });
            }
            report.sinks_ahead.push(SinkAhead {
                sink: node.name.clone(),
                instance,
                committed_epoch: c,
                retracted: None,
            });
        }
    }
    Ok(report)
}

/// Has every sink instance ahead in `report` that can retract take back
/// its epochs after the restored one, and records what each moved; the
/// others are logged as committing those epochs again (accepted).
///
/// # Errors
/// [`BuildError::Checkpoint`] when a sink's output cannot be moved.
pub(crate) fn retract(
    report: &mut RecoveryReport,
    sinks: &[(&LogicalNode, &dyn SinkProbe)],
) -> Result<(), BuildError> {
    let restored = report.restored_epoch.unwrap_or(0);
    for ahead in &mut report.sinks_ahead {
        let Some((node, probe)) = sinks.iter().find(|(n, _)| n.name == ahead.sink) else {
            continue;
        };
        let ctx = context(node, ahead.instance);
        if probe.can_retract() {
            let r = probe
                .retract_after(&ctx, restored)
                .map_err(|e| probe_error(node, ctx.instance, e))?;
            tracing::warn!(
                sink = %node.name,
                instance = ctx.instance,
                restored,
                committed_epoch = ahead.committed_epoch,
                epochs = ?r.epochs,
                items = ?r.items,
                moved_to = %r.moved_to,
                "recovery restored an older checkpoint than this sink had committed: \
                 its later epochs were moved aside and will be committed once by the replay"
            );
            ahead.retracted = Some(r);
        } else {
            tracing::warn!(
                sink = %node.name,
                instance = ctx.instance,
                restored,
                committed_epoch = ahead.committed_epoch,
                "recovery restored an older checkpoint than this sink had committed and it \
                 cannot retract: epochs after the restored one will be committed again \
                 (accept_duplicates_on_fallback is set)"
            );
        }
    }
    Ok(())
}

fn context(node: &LogicalNode, instance: usize) -> SinkContext {
    SinkContext {
        name: node.name.clone(),
        instance,
        parallelism: node.parallelism,
    }
}

/// [`check`], then [`retract`] at once (tests).
#[cfg(test)]
fn reconcile_sinks(
    restoring: Restoring,
    sinks: &[(&LogicalNode, &dyn SinkProbe)],
) -> Result<RecoveryReport, BuildError> {
    let mut report = check(restoring, sinks)?;
    retract(&mut report, sinks)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::plan::NodeKind;
    use crate::record::Record;

    /// A sink whose instances report fixed committed epochs and record
    /// retractions.
    #[derive(Clone)]
    struct Fake {
        committed: Vec<Option<u64>>,
        retractable: bool,
        retracted: Arc<Mutex<Vec<(usize, u64)>>>,
    }

    impl Sink<u32> for Fake {
        fn write(&mut self, _: Vec<Record<u32>>) -> Result<(), OperatorError> {
            Ok(())
        }
        fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
            Ok(self.committed[ctx.instance])
        }
        fn can_retract(&self) -> bool {
            self.retractable
        }
        fn retract_after(
            &mut self,
            ctx: &SinkContext,
            epoch: u64,
        ) -> Result<Retracted, OperatorError> {
            self.retracted.lock().unwrap().push((ctx.instance, epoch));
            let c = self.committed[ctx.instance].unwrap_or(0);
            Ok(Retracted {
                epochs: (epoch + 1..=c).collect(),
                items: vec![],
                moved_to: "q".into(),
            })
        }
    }

    fn node(name: &str, parallelism: usize) -> LogicalNode {
        LogicalNode {
            name: name.into(),
            kind: NodeKind::Sink,
            parallelism,
            keyed: false,
        }
    }

    fn fake(committed: Vec<Option<u64>>, retractable: bool) -> Fake {
        Fake {
            committed,
            retractable,
            retracted: Arc::default(),
        }
    }

    fn restoring(epoch: Option<u64>, accept: bool) -> Restoring {
        Restoring {
            restored_epoch: epoch,
            skipped: vec!["checkpoint 9 skipped: corrupt file x".into()],
            accept_duplicates: accept,
        }
    }

    #[test]
    fn sinks_at_or_behind_the_checkpoint_need_nothing() {
        let f = fake(vec![Some(7), None], false);
        let probe = ProbeOf::new(f.clone());
        let n = node("out", 2);
        let report = reconcile_sinks(restoring(Some(7), false), &[(&n, &probe)]).unwrap();
        assert!(report.sinks_ahead.is_empty());
        assert_eq!(report.highest_committed_epoch, Some(7));
        assert!(!report.at_least_once());
    }

    #[test]
    fn a_retractable_sink_ahead_retracts_the_later_epochs() {
        let f = fake(vec![Some(9), Some(8)], true);
        let probe = ProbeOf::new(f.clone());
        let n = node("out", 2);
        let report = reconcile_sinks(restoring(Some(7), false), &[(&n, &probe)]).unwrap();
        assert_eq!(*f.retracted.lock().unwrap(), vec![(0, 7), (1, 7)]);
        assert_eq!(report.sinks_ahead.len(), 2);
        assert_eq!(
            report.sinks_ahead[0].retracted.as_ref().unwrap().epochs,
            vec![8, 9]
        );
        assert_eq!(report.highest_committed_epoch, Some(9));
        assert!(!report.at_least_once());
    }

    #[test]
    fn a_sink_that_cannot_retract_refuses_before_anything_is_retracted() {
        let good = fake(vec![Some(9)], true);
        let bad = fake(vec![Some(8)], false);
        let (pg, pb) = (ProbeOf::new(good.clone()), ProbeOf::new(bad));
        let (ng, nb) = (node("files", 1), node("log", 1));
        let err =
            reconcile_sinks(restoring(Some(7), false), &[(&ng, &pg), (&nb, &pb)]).unwrap_err();
        assert_eq!(
            err,
            BuildError::RecoveryWouldDuplicate {
                sink: "log".into(),
                instance: 0,
                committed_epoch: 8,
                restored_epoch: Some(7),
                skipped: vec!["checkpoint 9 skipped: corrupt file x".into()],
            }
        );
        assert!(err.to_string().contains("epochs 8..=8"), "{err}");
        assert!(good.retracted.lock().unwrap().is_empty());
    }

    #[test]
    fn accepted_duplicates_proceed_and_are_reported() {
        let bad = fake(vec![Some(8)], false);
        let probe = ProbeOf::new(bad);
        let n = node("log", 1);
        let report = reconcile_sinks(restoring(None, true), &[(&n, &probe)]).unwrap();
        assert!(report.at_least_once());
        assert_eq!(report.sinks_ahead[0].committed_epoch, 8);
    }
}
