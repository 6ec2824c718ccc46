//! The operator task: runs one operator instance and owns every protocol
//! around it.
//!
//! - Records: the operator's `process`, one at a time, with a collector
//!   that reaches the main and side outputs and the timer service.
//! - Watermarks: the event-time timers they make due fire in time order,
//!   then `on_watermark`, then the watermark goes downstream. Watermarks
//!   never wait for a pending state flush: timers and tables read and
//!   write through it (copy on write).
//! - Processing-time timers fire when the clock passes them; the task wakes
//!   for the next one even when no input arrives.
//! - Markers: `on_marker`, then the flush of every table the operator
//!   declares ([`Operator::tables`]) and of the timers begins in O(1) and
//!   the marker goes on at once. The flush advances in steps between input
//!   batches; when it is written, the backend is frozen and a snapshot
//!   thread persists it while records keep flowing. The input watermark at
//!   the marker is stored with the snapshot and restored on recovery.

use std::sync::Arc;

use eddy_checkpoint::{ManagedState, SharedBackend, TaskSnapshot};
use serde::{Deserialize, Serialize};

use super::{TaskFailure, TaskResult};
use crate::control::CheckpointLink;
use crate::edge::{Disconnected, InputEvent, Inputs, Router};
use crate::error::OperatorError;
use crate::message::{EpochMarker, Message, Watermark};
use crate::metrics::InstanceMetrics;
use crate::operator::{Collector, Operator, OperatorContext, Output};
use crate::record::{Data, Timestamp, NO_TIMESTAMP};
use crate::timers::{ProcessingClock, TimeDomain, Timer, TimerService};

/// What an operator instance stores in a checkpoint besides its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorMeta {
    /// The input watermark at the marker.
    pub watermark: Timestamp,
}

/// Everything an operator task runs with.
pub struct OperatorTask<I, O, S, Op> {
    /// The operator instance.
    pub op: Op,
    /// Its context.
    pub ctx: OperatorContext,
    /// Its inputs.
    pub inputs: Inputs<I>,
    /// Its main output.
    pub router: Router<O>,
    /// Its side output, when something reads it.
    pub side: Option<Router<S>>,
    /// Its metrics.
    pub metrics: Arc<InstanceMetrics>,
    /// Its link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// Its state backend, shared by the operator's tables and the timers.
    pub state: SharedBackend,
    /// Keyed operators are always snapshotted; others once they take
    /// state or use timers.
    pub keyed: bool,
    /// Recovery: the encoded [`OperatorMeta`] of the restored checkpoint.
    pub restore_meta: Option<Vec<u8>>,
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

/// Timers fired (or records they emitted) between sending what they
/// emitted and yielding: when one watermark fires many timers, or one
/// timer closes many keys (every key's window of a tumbling window ends at
/// once), the first results go on while the rest are computed, and the
/// task does not hold its worker thread for the whole burst, so the
/// operators downstream, and another instance firing the same watermark
/// on the same worker, make progress meanwhile.
const FIRE_CHUNK: usize = 512;

/// Records shown to [`Operator::prefetch`] (and timers to
/// [`Operator::prefetch_timers`]) at a time, before they are processed:
/// enough for their state lookups to overlap, few enough that what they
/// bring into the CPU's cache is still there when they are processed.
const PREFETCH: usize = 64;

/// A flush begun at a marker and not yet written.
#[derive(Clone, Copy)]
struct Flushing {
    marker: EpochMarker,
    /// The input watermark at the marker.
    watermark: Timestamp,
    /// Whether the backend is snapshotted for it.
    snapshot: bool,
}

/// A collector over a running task's fields (a macro, so the borrows stay
/// disjoint from the operator's).
macro_rules! collector {
    ($s:ident) => {
        Collector::new(
            &mut $s.output,
            &mut $s.timers,
            &$s.clock,
            $s.task.inputs.current_watermark(),
        )
    };
}

struct Running<I, O, S, Op> {
    task: OperatorTask<I, O, S, Op>,
    timers: TimerService,
    clock: ProcessingClock,
    output: Output<O, S>,
    flushing: Option<Flushing>,
    /// Reused for the timers shown to [`Operator::prefetch_timers`].
    upcoming: Vec<Timer>,
}

impl<I: Data, O: Data, S: Data, Op: Operator<I, O, S>> OperatorTask<I, O, S, Op> {
    /// Runs the operator until every input ended.
    pub async fn run(mut self) -> TaskResult {
        if let Some(bytes) = self.restore_meta.take() {
            let meta: OperatorMeta = eddy_checkpoint::codec::decode(&bytes)
                .map_err(|e| OperatorError::new(format!("operator checkpoint meta: {e}")))?;
            self.inputs.restore_watermark(meta.watermark);
        }
        let timers = TimerService::open(Box::new(self.state.clone()))?;
        self.op.open(&mut self.ctx)?;
        Running {
            task: self,
            timers,
            clock: ProcessingClock::new(),
            output: Output::default(),
            flushing: None,
            upcoming: Vec::new(),
        }
        .run()
        .await
    }
}

impl<I: Data, O: Data, S: Data, Op: Operator<I, O, S>> Running<I, O, S, Op> {
    /// Sends what the operator emitted.
    async fn emit(&mut self) -> Result<(), Disconnected> {
        let t = &mut self.task;
        if !self.output.main.is_empty() {
            t.metrics.add_out(self.output.main.len());
            t.router.push(&mut self.output.main).await?;
        }
        if !self.output.side.is_empty() {
            match t.side.as_mut() {
                Some(side) => side.push(&mut self.output.side).await?,
                None => self.output.side.clear(),
            }
        }
        if self.output.late > 0 {
            t.metrics.add_late(self.output.late);
            self.output.late = 0;
        }
        if self.output.dropped > 0 {
            t.metrics.add_dropped(self.output.dropped);
            self.output.dropped = 0;
        }
        Ok(())
    }

    /// Sends a control message on both outputs.
    async fn broadcast(
        &mut self,
        msg: impl Fn() -> (Message<O>, Message<S>),
    ) -> Result<(), Disconnected> {
        let (main, side) = msg();
        self.task.router.broadcast(main).await?;
        if let Some(s) = self.task.side.as_mut() {
            s.broadcast(side).await?;
        }
        Ok(())
    }

    async fn flush_outputs(&mut self) -> Result<(), Disconnected> {
        self.task.router.flush().await?;
        if let Some(s) = self.task.side.as_mut() {
            s.flush().await?;
        }
        Ok(())
    }

    /// Fires the timers of `domain` due at `upto`, in time order, with the
    /// creation stamp `created_ns`, in chunks of [`FIRE_CHUNK`].
    async fn fire(
        &mut self,
        domain: TimeDomain,
        upto: Timestamp,
        created_ns: u64,
    ) -> Result<(), TaskFailure> {
        let mut fired = 0usize;
        let prefetch = self.task.op.prefetches();
        loop {
            if prefetch && fired % PREFETCH == 0 {
                self.timers
                    .peek_due(domain, upto, PREFETCH, &mut self.upcoming);
                self.task.op.prefetch_timers(&self.upcoming);
            }
            let Some(timer) = self.timers.pop_due(domain, upto)? else {
                break;
            };
            let watermark = self.task.inputs.current_watermark();
            let mut c = Collector::new(&mut self.output, &mut self.timers, &self.clock, watermark);
            c.set_input(timer.time, created_ns);
            self.task.op.on_timer(&timer, &mut c)?;
            fired += 1;
            // A chunk of timers, or of what they emitted (one timer may
            // close a whole window's keys, a slice at a time).
            if fired % FIRE_CHUNK == 0 || self.output.main.len() >= FIRE_CHUNK {
                self.emit().await?;
                self.flush_outputs().await?;
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// Fires the processing-time timers the clock passed.
    async fn fire_processing_timers(&mut self) -> Result<(), TaskFailure> {
        let Some(next) = self.timers.next_time(TimeDomain::ProcessingTime) else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        if next <= now {
            let created = crate::record::now_ns();
            self.fire(TimeDomain::ProcessingTime, now, created).await?;
            self.emit().await?;
        }
        Ok(())
    }

    fn stateful(&self) -> bool {
        self.task.keyed || self.task.ctx.took_state() || self.timers.used()
    }

    /// At an aligned marker: the operator's hook, then the flush of its
    /// tables and timers begins (O(1)) and the marker goes on at once.
    async fn on_marker(&mut self, m: EpochMarker) -> Result<(), TaskFailure> {
        self.finish_flush()?;
        let mut c = collector!(self);
        self.task.op.on_marker(m.epoch, &mut c)?;
        self.emit().await?;
        let snapshot = self.stateful()
            && self
                .task
                .ckpt
                .as_ref()
                .is_some_and(|link| link.store.is_some());
        if snapshot {
            // The flush's write batches are queued and applied on the
            // snapshot thread, with the snapshot.
            self.task.state.defer_writes();
        }
        for t in self.task.op.tables() {
            t.begin_flush().map_err(OperatorError::from)?;
        }
        self.timers.begin_flush().map_err(OperatorError::from)?;
        self.broadcast(|| (Message::Marker(m), Message::Marker(m)))
            .await?;
        self.flushing = Some(Flushing {
            marker: m,
            watermark: self.task.inputs.current_watermark(),
            snapshot,
        });
        self.flush_step(0)
    }

    /// Goes on with the flush in progress; once it is written, snapshots
    /// (or acks) its epoch.
    fn flush_step(&mut self, budget: usize) -> Result<(), TaskFailure> {
        let Some(f) = self.flushing else {
            return Ok(());
        };
        // The timers first: the task never reads their rows back from the
        // backend (it keeps every timer in memory), so their batch may sit
        // queued while the operator's tables go on flushing.
        if !self
            .timers
            .flush_step(budget)
            .map_err(OperatorError::from)?
        {
            return Ok(());
        }
        // Then the operator's tables, one step of one table per call: a
        // table whose batch is written (queued until the freeze below)
        // keeps those entries cached until the backend applies them, so a
        // cache miss never needs a queued write, and no table spills while
        // the backend queues (that would put post-marker values into this
        // marker's snapshot). An operator with one table per open window
        // steps through all of them without a stall.
        for t in self.task.op.tables() {
            if !t.flush_step(budget).map_err(OperatorError::from)? {
                return Ok(());
            }
        }
        self.flushing = None;
        let Some(link) = self.task.ckpt.clone() else {
            return Ok(());
        };
        let meta = eddy_checkpoint::codec::encode(&OperatorMeta {
            watermark: f.watermark,
        })
        .map_err(OperatorError::from)?;
        if !f.snapshot {
            link.ack(f.marker.epoch, TaskSnapshot { state: None, meta });
            return Ok(());
        }
        let frozen = self.task.state.freeze();
        let pool = link
            .snapshots
            .clone()
            .expect("a snapshot pool with a store");
        let epoch = f.marker.epoch;
        pool.spawn(move || {
            let store = link.store.as_ref().expect("snapshots only with a store");
            // A panic in the backend declines the epoch (and the dropped
            // point marks the backend failed) instead of leaving the epoch
            // to time out.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                frozen
                    .take()
                    .and_then(|job| job.persist(store, &link.task, epoch))
                    .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|p| Err(format!("panicked: {}", crate::error::panic_text(&*p))));
            match result {
                Ok(handle) => link.ack(
                    epoch,
                    TaskSnapshot {
                        state: Some(handle),
                        meta,
                    },
                ),
                Err(e) => link.decline(epoch, format!("snapshot: {e}")),
            }
        });
        Ok(())
    }

    /// Finishes the flush in progress, if any.
    fn finish_flush(&mut self) -> Result<(), TaskFailure> {
        self.flush_step(usize::MAX)
    }

    async fn on_watermark(&mut self, w: Watermark) -> Result<(), TaskFailure> {
        self.fire(TimeDomain::EventTime, w.time, w.created_ns)
            .await?;
        let mut c = collector!(self);
        c.set_input(w.time, w.created_ns);
        self.task.op.on_watermark(w.time, &mut c)?;
        self.emit().await?;
        self.task.metrics.set_watermark(w.time);
        self.broadcast(|| (Message::Watermark(w), Message::Watermark(w)))
            .await?;
        Ok(())
    }

    /// The next input event, waking for processing-time timers meanwhile.
    async fn next_event(&mut self) -> Result<Option<InputEvent<I>>, TaskFailure> {
        if let Some(ev) = self.task.inputs.try_next() {
            return Ok(Some(ev));
        }
        if self.flushing.is_some() {
            // No input: go on with the flush, a step at a time, so that
            // records arriving meanwhile wait one step at most.
            self.flush_step(FLUSH_STEP)?;
            self.flush_outputs().await?;
            tokio::task::yield_now().await;
            return Ok(None);
        }
        self.flush_outputs().await?;
        let Some(next) = self.timers.next_time(TimeDomain::ProcessingTime) else {
            return Ok(Some(self.task.inputs.next().await));
        };
        let at = self.clock.instant_at(next);
        tokio::select! {
            biased;
            ev = self.task.inputs.next() => Ok(Some(ev)),
            () = tokio::time::sleep_until(at) => {
                self.fire_processing_timers().await?;
                Ok(None)
            }
        }
    }

    async fn run(mut self) -> TaskResult {
        let mut since_step = 0;
        let prefetch = self.task.op.prefetches();
        loop {
            let Some(ev) = self.next_event().await? else {
                continue;
            };
            match ev {
                InputEvent::Records(batch) => {
                    let n = batch.len();
                    self.task.metrics.add_in(n);
                    {
                        let watermark = self.task.inputs.current_watermark();
                        let mut c = Collector::new(
                            &mut self.output,
                            &mut self.timers,
                            &self.clock,
                            watermark,
                        );
                        let mut records = batch.into_iter();
                        if prefetch {
                            while !records.as_slice().is_empty() {
                                let next = records.as_slice();
                                self.task.op.prefetch(&next[..next.len().min(PREFETCH)]);
                                for r in records.by_ref().take(PREFETCH) {
                                    c.set_input(r.timestamp, r.created_ns);
                                    self.task.op.process(r, &mut c)?;
                                }
                            }
                        }
                        for r in records {
                            c.set_input(r.timestamp, r.created_ns);
                            self.task.op.process(r, &mut c)?;
                        }
                    }
                    self.emit().await?;
                    if self.flushing.is_some() {
                        // Under sustained input the flush still advances:
                        // one step per FLUSH_STEP_EVERY records.
                        since_step += n;
                        if since_step >= FLUSH_STEP_EVERY {
                            since_step = 0;
                            self.flush_step(FLUSH_STEP)?;
                        }
                    }
                    self.fire_processing_timers().await?;
                }
                InputEvent::Watermark(w) => self.on_watermark(w).await?,
                InputEvent::Idle => {
                    self.broadcast(|| (Message::Idle, Message::Idle)).await?;
                }
                InputEvent::Marker(m) => {
                    self.task
                        .metrics
                        .record_alignment(self.task.inputs.last_alignment());
                    self.on_marker(m).await?;
                }
                InputEvent::End => {
                    self.finish_flush()?;
                    let mut c = collector!(self);
                    c.set_input(NO_TIMESTAMP, 0);
                    self.task.op.on_end(&mut c)?;
                    self.emit().await?;
                    self.broadcast(|| (Message::End, Message::End)).await?;
                    return Ok(());
                }
                InputEvent::Disconnected => return Err(TaskFailure::Disconnected),
            }
        }
    }
}
