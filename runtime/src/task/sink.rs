//! The sink task: writes records, pre-commits at markers, commits when the
//! coordinator says the epoch is durable, and measures latency.

use std::collections::VecDeque;
use std::sync::Arc;

use eddy_checkpoint::TaskSnapshot;
use tokio::sync::mpsc;

use super::{TaskFailure, TaskResult};
use crate::commit_latency::PendingLatency;
use crate::control::{CheckpointLink, SinkCommand};
use crate::edge::{InputEvent, Inputs};
use crate::metrics::InstanceMetrics;
use crate::record::{now_ns, Data};
use crate::sink::{Sink, SinkContext};

/// Everything a sink task runs with.
pub struct SinkTask<T, S> {
    /// The sink instance.
    pub sink: S,
    /// Its context.
    pub ctx: SinkContext,
    /// Its inputs.
    pub inputs: Inputs<T>,
    /// Its metrics.
    pub metrics: Arc<InstanceMetrics>,
    /// Its link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// Commits from the coordinator, when checkpointing.
    pub commands: Option<mpsc::UnboundedReceiver<SinkCommand>>,
    /// When checkpointing: the restored epoch and the sink's pre-commit
    /// information for it (`None`: no checkpoint to restore).
    pub restore: Option<Option<(u64, Vec<u8>)>>,
    /// Whether output becomes visible at commit (micro-batches, or an
    /// exactly-once sink): latency is then measured at commit.
    pub latency_at_commit: bool,
}

/// Creation times of records whose output is not visible yet, summarised
/// in bounded memory ([`PendingLatency`]): the current epoch's, and those
/// of epochs pre-committed but not yet committed.
#[derive(Default)]
struct PendingEpochs {
    current: PendingLatency,
    staged: VecDeque<(u64, PendingLatency)>,
}

/// Pre-committed epochs whose latency summaries are kept apart. Commits
/// normally follow markers closely (a few epochs in flight at most); when
/// they stop coming (checkpoints failing), the oldest summaries are merged
/// into the next instead of piling up, one per epoch, for as long as the
/// query runs.
const MAX_STAGED_EPOCHS: usize = 16;

impl PendingEpochs {
    /// The current epoch ends at its marker.
    fn stage(&mut self, epoch: u64) {
        let summary = std::mem::take(&mut self.current);
        self.staged.push_back((epoch, summary));
        while self.staged.len() > MAX_STAGED_EPOCHS {
            let (_, oldest) = self.staged.pop_front().expect("over the limit");
            if let Some((_, next)) = self.staged.front_mut() {
                next.absorb(oldest);
            }
        }
    }
}

impl<T: Data, S: Sink<T>> SinkTask<T, S> {
    fn on_command(
        &mut self,
        cmd: SinkCommand,
        committed: &mut u64,
        pending: &mut PendingEpochs,
    ) -> Result<bool, TaskFailure> {
        match cmd {
            SinkCommand::Commit(e) => {
                if e > *committed {
                    self.sink.commit(e)?;
                    *committed = e;
                }
                let now = now_ns();
                while pending.staged.front().is_some_and(|(epoch, _)| *epoch <= e) {
                    let (_, summary) = pending.staged.pop_front().expect("checked above");
                    self.metrics.record_committed(now, &summary);
                }
                Ok(true)
            }
            SinkCommand::Abandon => Ok(false),
        }
    }

    /// Runs the sink until every input ended (and, when checkpointing, its
    /// last epoch is committed).
    pub async fn run(mut self) -> TaskResult {
        self.sink.open(&self.ctx)?;
        let mut committed = 0;
        let mut pre_committed = 0;
        let mut pending = PendingEpochs::default();
        if let Some(restore) = self.restore.take() {
            committed = restore.as_ref().map_or(0, |(e, _)| *e);
            self.sink
                .restore(restore.as_ref().map(|(e, meta)| (*e, meta.as_slice())))?;
        }
        loop {
            while let Some(cmd) = self.commands.as_mut().and_then(|c| c.try_recv().ok()) {
                if !self.on_command(cmd, &mut committed, &mut pending)? {
                    return Ok(());
                }
            }
            let ev = match self.inputs.try_next() {
                Some(ev) => ev,
                None => match self.commands.as_mut() {
                    None => self.inputs.next().await,
                    Some(cmds) => {
                        tokio::select! {
                            biased;
                            cmd = cmds.recv() => {
                                if let Some(cmd) = cmd {
                                    if !self.on_command(cmd, &mut committed, &mut pending)? {
                                        return Ok(());
                                    }
                                }
                                continue;
                            }
                            ev = self.inputs.next() => ev,
                        }
                    }
                },
            };
            match ev {
                InputEvent::Records(batch) => {
                    self.metrics.add_in(batch.len());
                    if self.latency_at_commit {
                        pending
                            .current
                            .record_all(batch.iter().map(|r| r.created_ns));
                    } else {
                        self.metrics
                            .record_latencies(now_ns(), batch.iter().map(|r| r.created_ns));
                    }
                    self.sink.write(batch)?;
                }
                InputEvent::Watermark(w) => self.metrics.set_watermark(w.time),
                InputEvent::Idle => {}
                InputEvent::Marker(m) => {
                    self.metrics.record_alignment(self.inputs.last_alignment());
                    let meta = self.sink.on_marker(m.epoch)?;
                    pre_committed = m.epoch;
                    if self.latency_at_commit {
                        pending.stage(m.epoch);
                    }
                    if let Some(link) = &self.ckpt {
                        link.ack(m.epoch, TaskSnapshot { state: None, meta });
                    }
                }
                InputEvent::End => break,
                InputEvent::Disconnected => return Err(TaskFailure::Disconnected),
            }
        }
        // With checkpointing, the output is complete once the last
        // pre-committed epoch is committed.
        if let Some(mut cmds) = self.commands.take() {
            while committed < pre_committed {
                let Some(cmd) = cmds.recv().await else { break };
                if !self.on_command(cmd, &mut committed, &mut pending)? {
                    break;
                }
            }
        }
        self.sink.close()?;
        Ok(())
    }
}
