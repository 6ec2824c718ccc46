//! The source task: polls its source, injects markers between records,
//! stamps event time and sends watermarks ([`crate::watermark`]).

use std::sync::Arc;

use eddy_checkpoint::TaskSnapshot;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{SourceCommand, TaskFailure, TaskResult};
use crate::control::{CheckpointLink, TaskEvent};
use crate::edge::Router;
use crate::error::OperatorError;
use crate::message::{EpochMarker, Message, Watermark};
use crate::metrics::InstanceMetrics;
use crate::record::{Data, Record};
use crate::source::{Source, SourceContext, SourcePoll};
use crate::timers::ProcessingClock;
use crate::watermark::{GeneratorState, Split, WatermarkGenerator};

/// What a source instance stores in a checkpoint: its read position, and
/// its watermark generator's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMeta {
    /// [`Source::offset`].
    pub offset: Vec<u8>,
    /// The watermark generator, when the source has a watermark strategy.
    pub watermark: Option<GeneratorState>,
}

impl SourceMeta {
    /// Encodes for a task snapshot.
    pub fn encode(&self) -> Vec<u8> {
        eddy_checkpoint::codec::encode(self).expect("source meta encodes")
    }

    /// Decodes a task snapshot's meta.
    ///
    /// # Errors
    /// When the bytes are not a source meta of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self, OperatorError> {
        eddy_checkpoint::codec::decode(bytes)
            .map_err(|e| OperatorError::new(format!("source checkpoint meta: {e}")))
    }
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
    /// What to restore after opening (recovery): encoded [`SourceMeta`].
    pub restore_offset: Option<Vec<u8>>,
    /// Whether the query runs micro-batches (the source waits for batches).
    pub micro_batch: bool,
    /// Event time and watermarks, when the stream has a strategy.
    pub watermarks: Option<WatermarkGenerator<T>>,
    /// The processing clock (ingestion time).
    pub clock: ProcessingClock,
    /// When the source last emitted a record (idleness).
    pub last_data: Instant,
    /// Whether this instance declared itself idle and has not emitted since.
    pub idle: bool,
    /// Where watermarks go inside the current batch (reused).
    pub splits: Vec<Split>,
}

enum Flow {
    Continue,
    Stop,
    End,
}

impl<T: Data, S: Source<T>> SourceTask<T, S> {
    async fn inject(&mut self, m: EpochMarker) -> Result<(), TaskFailure> {
        if let Some(link) = &self.ckpt {
            let meta = SourceMeta {
                offset: self.source.offset(),
                watermark: self.watermarks.as_ref().map(|g| g.state()),
            };
            link.ack(
                m.epoch,
                TaskSnapshot {
                    state: None,
                    meta: meta.encode(),
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

    /// Emits `buf`, counting it; with a watermark strategy, stamps event
    /// time and sends the watermarks due (before records behind them, and
    /// after the batch when it advanced).
    async fn emit(&mut self, buf: &mut Vec<Record<T>>) -> Result<u64, TaskFailure> {
        let n = buf.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        self.metrics.add_out(buf.len());
        let Some(gen) = self.watermarks.as_mut() else {
            self.router.push(buf).await?;
            return Ok(n);
        };
        self.last_data = Instant::now();
        self.idle = false;
        self.splits.clear();
        gen.assign(buf, self.clock.now_ms(), &mut self.splits);
        self.metrics.set_max_event_time(gen.state().max_timestamp);
        // The source's own progress after this poll (a partitioned source:
        // its slowest active partition) caps the watermark from now on;
        // the records above were judged against the previous poll's cap.
        gen.set_cap(self.source.watermark());
        let advanced = gen.advance();
        if self.splits.is_empty() {
            self.router.push(buf).await?;
        } else {
            let splits = std::mem::take(&mut self.splits);
            let mut rest = std::mem::take(buf);
            let mut done = 0;
            for s in &splits {
                let tail = rest.split_off(s.at - done);
                done = s.at;
                self.router.push(&mut rest).await?;
                self.send_watermark(s.watermark, s.created_ns).await?;
                rest = tail;
            }
            self.router.push(&mut rest).await?;
            *buf = rest;
            self.splits = splits;
        }
        if let Some((w, created_ns)) = advanced {
            self.send_watermark(w, created_ns).await?;
        }
        Ok(n)
    }

    async fn send_watermark(&mut self, time: i64, created_ns: u64) -> Result<(), TaskFailure> {
        self.metrics.set_watermark(time);
        self.router
            .broadcast(Message::Watermark(Watermark { time, created_ns }))
            .await?;
        Ok(())
    }

    /// The source is exhausted: every window may fire.
    async fn finish_watermark(&mut self) -> Result<(), TaskFailure> {
        if let Some(w) = self.watermarks.as_mut().and_then(|g| g.finish()) {
            self.send_watermark(w, 0).await?;
        }
        Ok(())
    }

    /// When this instance becomes idle, if it has an idle timeout and is
    /// not idle yet.
    fn idle_deadline(&self) -> Option<Instant> {
        if self.idle {
            return None;
        }
        let timeout = self.watermarks.as_ref()?.idle_timeout()?;
        Some(self.last_data + timeout)
    }

    /// Declares the instance idle once its timeout passed without data.
    async fn check_idle(&mut self) -> Result<(), TaskFailure> {
        if self.idle_deadline().is_some_and(|d| Instant::now() >= d) {
            self.idle = true;
            self.router.broadcast(Message::Idle).await?;
        }
        Ok(())
    }

    fn restore(&mut self) -> Result<(), OperatorError> {
        if let Some(bytes) = self.restore_offset.take() {
            let meta = SourceMeta::decode(&bytes)?;
            self.source.seek(&meta.offset)?;
            if let (Some(g), Some(state)) = (self.watermarks.as_mut(), meta.watermark) {
                g.restore(state);
            }
        }
        Ok(())
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
        // The source said `Finished` (not only stopped): the end-of-time
        // watermark follows its last records.
        let mut exhausted = false;
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
                            SourcePoll::Finished => {
                                finished = true;
                                exhausted = true;
                            }
                            SourcePoll::Pending => pending = true,
                            _ => {}
                        }
                    } else if !finished && buf.is_empty() {
                        // Nothing new; still learn whether the source is done.
                        match self.source.poll_next(&mut buf, 0)? {
                            SourcePoll::Finished => {
                                finished = true;
                                exhausted = true;
                            }
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
                            SourcePoll::Finished => {
                                finished = true;
                                exhausted = true;
                            }
                            SourcePoll::Pending => {
                                pending = true;
                                break;
                            }
                            _ => break,
                        }
                    }
                    if exhausted {
                        self.finish_watermark().await?;
                    } else if rows == 0 {
                        self.check_idle().await?;
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
        self.restore()?;
        if let Some(g) = self.watermarks.as_mut() {
            g.set_cap(self.source.watermark());
        }
        self.last_data = Instant::now();
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
                        self.check_idle().await?;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    self.emit(&mut buf).await?;
                    since_yield += 1;
                    if since_yield >= SOURCE_BATCHES_PER_YIELD {
                        since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                }
                SourcePoll::IdleUntil(t) => {
                    self.router.flush().await?;
                    self.check_idle().await?;
                    let wake = self.idle_deadline().map_or(t, |d| d.min(t));
                    let cmd = tokio::select! {
                        biased;
                        cmd = self.control.recv() => Some(cmd),
                        _ = tokio::time::sleep_until(wake) => None,
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
                    self.check_idle().await?;
                    let idle_at = self.idle_deadline();
                    let cmd = tokio::select! {
                        biased;
                        cmd = self.control.recv() => Some(cmd),
                        _ = self.source.wait() => None,
                        _ = sleep_until_some(idle_at) => None,
                    };
                    if let Some(cmd) = cmd {
                        match self.on_command(cmd).await? {
                            Flow::Continue => {}
                            other => break other,
                        }
                    }
                }
                SourcePoll::Finished => {
                    self.finish_watermark().await?;
                    break Flow::Stop;
                }
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

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
