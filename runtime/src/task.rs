//! The task loops: one long-running tokio task per source, operator and sink
//! instance.
//!
//! Every loop reads without waiting while it can, and flushes its output
//! buffers only when it is about to wait: records travel alone under light load
//! and in full batches under heavy load. User code runs synchronously, one
//! record at a time; an error or a panic ends the task and the query monitor
//! fails the query naming the operator and instance. Markers are handled here,
//! once, for every operator (see [`checkpointing`](crate::checkpointing)).

use std::collections::VecDeque;
use std::sync::Arc;

use eddy_checkpoint::{SharedBackend, TaskSnapshot};
use tokio::sync::mpsc;

use crate::checkpointing::{CheckpointLink, SinkCommand, TaskEvent};
use crate::commit_latency::PendingLatency;
use crate::edge::{Disconnected, InputEvent, Inputs, Router};
use crate::error::OperatorError;
use crate::message::{EpochMarker, Message};
use crate::metrics::InstanceMetrics;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::record::{now_ns, Data, Record, NO_TIMESTAMP};
use crate::sink::{Sink, SinkContext};
use crate::source::{Source, SourceContext, SourcePoll};

/// Why a task ended early.
#[derive(Debug)]
pub enum TaskFailure {
    /// User code returned an error.
    User(OperatorError),
    /// A neighbour went away (it failed, or the query is being torn down).
    Disconnected,
}

impl From<OperatorError> for TaskFailure {
    fn from(e: OperatorError) -> Self {
        TaskFailure::User(e)
    }
}

impl From<Disconnected> for TaskFailure {
    fn from(_: Disconnected) -> Self {
        TaskFailure::Disconnected
    }
}

/// What a task's future returns.
pub type TaskResult = Result<(), TaskFailure>;

/// Commands the query sends to a source task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCommand {
    /// Inject this marker between two records.
    Marker(EpochMarker),
    /// Inject this marker, then end the stream (sent once every source ran
    /// dry or was stopped).
    FinalMarker(EpochMarker),
    /// Stop reading.
    Stop,
    /// Micro-batch mode: fix the end of the next batch at what is available
    /// now and report whether anything is.
    Probe,
    /// Micro-batch mode: emit records up to the fixed end, then this marker.
    Batch(EpochMarker),
}

/// Batches a source emits before it yields to other tasks on its thread.
const SOURCE_BATCHES_PER_YIELD: u32 = 16;

/// Everything a source task runs with.
pub struct SourceTask<T, S> {
    /// The source instance.
    pub source: S,
    /// Its context.
    pub ctx: SourceContext,
    /// Its outputs.
    pub router: Router<T>,
    /// Commands from the query.
    pub control: mpsc::UnboundedReceiver<SourceCommand>,
    /// Its metrics.
    pub metrics: Arc<InstanceMetrics>,
    /// Most records per poll.
    pub batch_size: usize,
    /// Its link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// The offset to seek to after opening (recovery).
    pub restore_offset: Option<Vec<u8>>,
    /// Whether the query runs micro-batches (the source waits for batches).
    pub micro_batch: bool,
}

enum Flow {
    Continue,
    Stop,
    End,
}

impl<T: Data, S: Source<T>> SourceTask<T, S> {
    async fn inject(&mut self, m: EpochMarker) -> Result<(), TaskFailure> {
        if let Some(link) = &self.ckpt {
            link.ack(
                m.epoch,
                TaskSnapshot {
                    state: None,
                    meta: self.source.offset(),
                },
            );
        }
        self.router.broadcast(Message::Marker(m)).await?;
        Ok(())
    }

    async fn on_command(&mut self, cmd: Option<SourceCommand>) -> Result<Flow, TaskFailure> {
        match cmd {
            Some(SourceCommand::Marker(m)) => {
                self.inject(m).await?;
                Ok(Flow::Continue)
            }
            Some(SourceCommand::FinalMarker(m)) => {
                self.inject(m).await?;
                Ok(Flow::End)
            }
            Some(SourceCommand::Stop) => Ok(Flow::Stop),
            // Micro-batch commands do not reach a continuous source.
            Some(SourceCommand::Probe) | Some(SourceCommand::Batch(_)) => Ok(Flow::Continue),
            // The query handle is gone: end without a final checkpoint.
            None => Ok(Flow::End),
        }
    }

    /// Emits `buf`, counting it.
    async fn emit(&mut self, buf: &mut Vec<Record<T>>) -> Result<u64, TaskFailure> {
        let n = buf.len() as u64;
        if n > 0 {
            self.metrics.add_out(buf.len());
            self.router.push(buf).await?;
        }
        Ok(n)
    }

    /// Micro-batch mode: the most records one batch takes from this
    /// instance ([`Source::max_records_per_batch`], at least 1).
    fn batch_cap(&self) -> u64 {
        self.source.max_records_per_batch().max(1)
    }

    /// Micro-batch mode: the source runs only between a `Batch` command and
    /// the marker that ends it. Between commands, a source whose last poll
    /// was `Pending` is awaited ([`Source::wait`]), so sources that do I/O
    /// (connect, wait for bytes) make progress between batches.
    async fn run_micro_batch(mut self) -> TaskResult {
        let link = self
            .ckpt
            .clone()
            .expect("micro-batch queries have a coordinator");
        let mut buf: Vec<Record<T>> = Vec::with_capacity(self.batch_size);
        let mut finished = false;
        // The last poll said `Pending`: the source needs `wait` to progress.
        let mut pending = true;
        loop {
            let cmd = if pending && !finished {
                tokio::select! {
                    biased;
                    cmd = self.control.recv() => cmd,
                    () = self.source.wait() => {
                        pending = false;
                        continue;
                    }
                }
            } else {
                self.control.recv().await
            };
            match cmd {
                None => break,
                Some(SourceCommand::Stop) => finished = true,
                Some(SourceCommand::Probe) => {
                    if !finished && buf.is_empty() && self.source.fix_batch_end() {
                        let first = self.batch_size.min(self.batch_cap() as usize);
                        match self.source.poll_next(&mut buf, first)? {
                            SourcePoll::Finished => finished = true,
                            SourcePoll::Pending => pending = true,
                            _ => {}
                        }
                    } else if !finished && buf.is_empty() {
                        // Nothing new; still learn whether the source is done.
                        match self.source.poll_next(&mut buf, 0)? {
                            SourcePoll::Finished => finished = true,
                            SourcePoll::Pending => pending = true,
                            _ => {}
                        }
                    }
                    let _ = link.events.send(TaskEvent::Probed {
                        has_data: !buf.is_empty(),
                        finished: finished && buf.is_empty(),
                    });
                }
                Some(SourceCommand::Batch(m)) | Some(SourceCommand::Marker(m)) => {
                    // At most the source's cap: what is left past it goes
                    // into the next batch (the next probe fixes a new end).
                    let cap = self.batch_cap();
                    let mut rows = self.emit(&mut buf).await?;
                    while !finished && rows < cap {
                        let max = (cap - rows).min(self.batch_size as u64) as usize;
                        let poll = self.source.poll_next(&mut buf, max)?;
                        let empty = buf.is_empty();
                        rows += self.emit(&mut buf).await?;
                        match poll {
                            SourcePoll::Ready if !empty => {}
                            SourcePoll::Finished => finished = true,
                            SourcePoll::Pending => {
                                pending = true;
                                break;
                            }
                            _ => break,
                        }
                    }
                    let _ = link.events.send(TaskEvent::SourceRows {
                        epoch: m.epoch,
                        rows,
                    });
                    self.inject(m).await?;
                }
                Some(SourceCommand::FinalMarker(m)) => {
                    self.inject(m).await?;
                    break;
                }
            }
        }
        self.router.broadcast(Message::End).await?;
        Ok(())
    }

    /// Runs the source until it is exhausted or stopped.
    pub async fn run(mut self) -> TaskResult {
        self.source.open(&self.ctx)?;
        if let Some(offset) = self.restore_offset.take() {
            self.source.seek(&offset)?;
        }
        if self.micro_batch {
            return self.run_micro_batch().await;
        }
        let mut buf: Vec<Record<T>> = Vec::with_capacity(self.batch_size);
        let mut since_yield = 0;
        let flow = loop {
            match self.control.try_recv() {
                Ok(cmd) => match self.on_command(Some(cmd)).await? {
                    Flow::Continue => continue,
                    other => break other,
                },
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => break Flow::End,
            }
            match self.source.poll_next(&mut buf, self.batch_size)? {
                SourcePoll::Ready => {
                    if buf.is_empty() {
                        // Nothing to emit right now: the task is about to
                        // idle, so what it buffered goes out first.
                        self.router.flush().await?;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    self.metrics.add_out(buf.len());
                    self.router.push(&mut buf).await?;
                    since_yield += 1;
                    if since_yield >= SOURCE_BATCHES_PER_YIELD {
                        since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                }
                SourcePoll::IdleUntil(t) => {
                    self.router.flush().await?;
                    let cmd = tokio::select! {
                        biased;
                        cmd = self.control.recv() => Some(cmd),
                        _ = tokio::time::sleep_until(t) => None,
                    };
                    if let Some(cmd) = cmd {
                        match self.on_command(cmd).await? {
                            Flow::Continue => {}
                            other => break other,
                        }
                    }
                }
                SourcePoll::Pending => {
                    self.router.flush().await?;
                    let cmd = tokio::select! {
                        biased;
                        cmd = self.control.recv() => Some(cmd),
                        _ = self.source.wait() => None,
                    };
                    if let Some(cmd) = cmd {
                        match self.on_command(cmd).await? {
                            Flow::Continue => {}
                            other => break other,
                        }
                    }
                }
                SourcePoll::Finished => break Flow::Stop,
            }
        };
        self.router.flush().await?;
        if let (Flow::Stop, Some(link)) = (flow, self.ckpt.clone()) {
            // Wait for the final marker, forwarding periodic ones meanwhile,
            // so that the last records are covered by a checkpoint.
            let _ = link.events.send(TaskEvent::SourceFinished);
            loop {
                match self.control.recv().await {
                    Some(SourceCommand::Stop | SourceCommand::Probe | SourceCommand::Batch(_)) => {}
                    Some(SourceCommand::Marker(m)) => self.inject(m).await?,
                    Some(SourceCommand::FinalMarker(m)) => {
                        self.inject(m).await?;
                        break;
                    }
                    None => break,
                }
            }
        }
        self.router.broadcast(Message::End).await?;
        Ok(())
    }
}

/// Everything an operator task runs with.
pub struct OperatorTask<I, O, Op> {
    /// The operator instance.
    pub op: Op,
    /// Its context.
    pub ctx: OperatorContext,
    /// Its inputs.
    pub inputs: Inputs<I>,
    /// Its outputs.
    pub router: Router<O>,
    /// Its metrics.
    pub metrics: Arc<InstanceMetrics>,
    /// Its link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// Its state backend (keyed operators), shared with the operator.
    pub state: Option<SharedBackend>,
}

impl<I: Data, O: Data, Op: Operator<I, O>> OperatorTask<I, O, Op> {
    async fn emit(&mut self, out: &mut Vec<Record<O>>) -> Result<(), Disconnected> {
        if !out.is_empty() {
            self.metrics.add_out(out.len());
            self.router.push(out).await?;
        }
        Ok(())
    }

    /// At an aligned marker: the operator begins the flush of its tables
    /// (O(1)), and the marker goes on at once. The flush itself runs in
    /// steps between input batches ([`Self::flush_step`]); when it is
    /// written, the backend is frozen and a snapshot thread takes the
    /// snapshot and copies it into the store while records keep flowing.
    async fn on_marker(
        &mut self,
        m: EpochMarker,
        flushing: &mut Option<EpochMarker>,
    ) -> Result<(), TaskFailure> {
        self.finish_flush(flushing)?;
        if let (Some(link), Some(state)) = (&self.ckpt, &self.state) {
            if link.store.is_some() {
                // The flush's write batch is queued and applied on the
                // snapshot thread, with the snapshot.
                state.defer_writes();
            }
        }
        self.op.on_marker(m.epoch)?;
        self.router.broadcast(Message::Marker(m)).await?;
        *flushing = Some(m);
        self.flush_step(flushing, 0)
    }

    /// Goes on with the flush of the marker in `flushing`; once it is
    /// written, snapshots (or acks) that marker's epoch.
    fn flush_step(
        &mut self,
        flushing: &mut Option<EpochMarker>,
        budget: usize,
    ) -> Result<(), TaskFailure> {
        let Some(m) = *flushing else {
            return Ok(());
        };
        if !self.op.flush_step(budget)? {
            return Ok(());
        }
        *flushing = None;
        let Some(link) = self.ckpt.clone() else {
            return Ok(());
        };
        match &self.state {
            Some(state) if link.store.is_some() => {
                let frozen = state.freeze();
                let pool = link
                    .snapshots
                    .clone()
                    .expect("a snapshot pool with a store");
                pool.spawn(move || {
                    let store = link.store.as_ref().expect("snapshots only with a store");
                    // A panic in the backend declines the epoch (and the
                    // dropped point marks the backend failed) instead of
                    // leaving the epoch to time out.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        frozen
                            .take()
                            .and_then(|job| job.persist(store, &link.task, m.epoch))
                            .map_err(|e| e.to_string())
                    }))
                    .unwrap_or_else(|p| {
                        Err(format!("panicked: {}", crate::query::panic_text(&*p)))
                    });
                    match result {
                        Ok(handle) => link.ack(
                            m.epoch,
                            TaskSnapshot {
                                state: Some(handle),
                                meta: Vec::new(),
                            },
                        ),
                        Err(e) => link.decline(m.epoch, format!("snapshot: {e}")),
                    }
                });
            }
            _ => link.ack(m.epoch, TaskSnapshot::default()),
        }
        Ok(())
    }

    /// Finishes the flush in progress, if any.
    fn finish_flush(&mut self, flushing: &mut Option<EpochMarker>) -> Result<(), TaskFailure> {
        self.flush_step(flushing, usize::MAX)
    }

    /// Runs the operator until every input ended.
    pub async fn run(mut self) -> TaskResult {
        self.op.open(&mut self.ctx)?;
        let mut out: Vec<Record<O>> = Vec::new();
        // The marker whose state flush is in progress, and records
        // processed since its last step.
        let mut flushing: Option<EpochMarker> = None;
        let mut since_step = 0;
        loop {
            let ev = match self.inputs.try_next() {
                Some(ev) => ev,
                None if flushing.is_some() => {
                    // No input: go on with the flush, a step at a time, so
                    // that records arriving meanwhile wait one step at most
                    // (and all queued input is taken before the next step).
                    self.flush_step(&mut flushing, FLUSH_STEP)?;
                    self.router.flush().await?;
                    tokio::task::yield_now().await;
                    continue;
                }
                None => {
                    self.router.flush().await?;
                    self.inputs.next().await
                }
            };
            match ev {
                InputEvent::Records(batch) => {
                    let n = batch.len();
                    self.metrics.add_in(n);
                    for r in batch {
                        let mut c = Collector::new(&mut out, r.timestamp, r.created_ns);
                        self.op.process(r, &mut c)?;
                    }
                    self.emit(&mut out).await?;
                    if flushing.is_some() {
                        // Under sustained input the flush still advances:
                        // one step per FLUSH_STEP_EVERY records.
                        since_step += n;
                        if since_step >= FLUSH_STEP_EVERY {
                            since_step = 0;
                            self.flush_step(&mut flushing, FLUSH_STEP)?;
                        }
                    }
                }
                InputEvent::Watermark(w) => {
                    self.finish_flush(&mut flushing)?;
                    self.op
                        .on_watermark(w, &mut Collector::new(&mut out, w, 0))?;
                    self.emit(&mut out).await?;
                    self.router.broadcast(Message::Watermark(w)).await?;
                }
                InputEvent::Marker(m) => {
                    self.metrics.record_alignment(self.inputs.last_alignment());
                    self.on_marker(m, &mut flushing).await?;
                }
                InputEvent::End => {
                    self.finish_flush(&mut flushing)?;
                    self.op
                        .on_end(&mut Collector::new(&mut out, NO_TIMESTAMP, 0))?;
                    self.emit(&mut out).await?;
                    self.router.broadcast(Message::End).await?;
                    return Ok(());
                }
                InputEvent::Disconnected => return Err(TaskFailure::Disconnected),
            }
        }
    }
}

/// Entries of state one flush step encodes: about a quarter of a
/// millisecond of work (0.5 us per entry measured at 1 M keys), the most a
/// record arriving meanwhile waits for it.
const FLUSH_STEP: usize = 512;

/// Under input that never pauses, a flush step is taken once per this many
/// records (otherwise only when no input is queued). One entry per record
/// processed: an epoch's dirty entries are at most its records, so under
/// sustained load a flush is done before the next epoch's records are.
const FLUSH_STEP_EVERY: usize = FLUSH_STEP;

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
                InputEvent::Watermark(_) => {}
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
