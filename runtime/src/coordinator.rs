//! The coordinator task: starts epochs, collects acks, writes manifests and
//! tells sinks to commit. See [`checkpointing`](crate::checkpointing) for the
//! checkpoint protocol and [`trigger`](crate::trigger) for when epochs start.
//!
//! The bookkeeping is the pure [`CheckpointTracker`]; this task only does the
//! I/O around it (markers out, acks in, the manifest on a blocking thread).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_checkpoint::{
    AckOutcome, CheckpointStore, CheckpointTracker, CompletedCheckpoint, OperatorShape,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use serde::Serialize;

use crate::control::{SinkCommand, SourceCommand, TaskEvent};
use crate::message::{EpochMarker, MarkerKind};
use crate::recovery::RecoveryReport;
use crate::task::{TaskFailure, TaskResult};
use crate::trigger::{BatchProgress, Trigger};

/// Completed micro-batches kept in the stats.
const RECENT_BATCHES: usize = 1000;

/// Checkpoint counters, reported in [`QueryProgress`](crate::QueryProgress).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CheckpointStats {
    /// Epochs started.
    pub started: u64,
    /// Checkpoints completed (manifest durable).
    pub completed: u64,
    /// Checkpoints that failed: declined, timed out, or manifest not written.
    pub failed: u64,
    /// The newest completed epoch.
    pub last_completed_epoch: Option<u64>,
    /// Start to manifest durable, of the newest completed checkpoint.
    pub last_duration_ms: Option<u64>,
    /// Bytes the newest completed checkpoint wrote.
    pub last_bytes_written: Option<u64>,
    /// Bytes of state the newest completed checkpoint references.
    pub last_state_bytes: Option<u64>,
    /// The epoch restored at start, if any.
    pub restored_epoch: Option<u64>,
    /// The newest failure, for operators of the query.
    pub last_failure: Option<String>,
    /// Micro-batch mode: ticks so far (a tick without new data runs no batch).
    pub ticks: u64,
    /// Micro-batch mode: batches completed.
    pub batches_completed: u64,
    /// Micro-batch mode: the newest completed batch.
    pub last_batch: Option<BatchProgress>,
    /// Micro-batch mode: the most recent completed batches, oldest first.
    pub recent_batches: Vec<BatchProgress>,
    /// What the start did about the checkpoints it skipped and the sinks
    /// that had committed more than the restored checkpoint (`None`: the
    /// query has no checkpoint store).
    pub recovery: Option<RecoveryReport>,
}

/// The coordinator task's inputs.
pub(crate) struct Coordinator {
    pub tracker: CheckpointTracker,
    pub store: Option<CheckpointStore>,
    pub shape: Vec<OperatorShape>,
    pub trigger: Trigger,
    pub sources: Vec<mpsc::UnboundedSender<SourceCommand>>,
    pub sinks: Vec<mpsc::UnboundedSender<SinkCommand>>,
    pub events: mpsc::UnboundedReceiver<TaskEvent>,
    pub stats: Arc<Mutex<CheckpointStats>>,
}

fn unix_ms() -> u64 {
    crate::record::now_ns() / 1_000_000
}

/// When the batch after one due at `tick` starts: at the next tick of the
/// grid `origin + k * interval`, or at once (`now`) when the batch overran
/// it. Missed ticks are skipped, not caught up, and a batch that started off
/// the grid after an overrun is followed on the grid again, as in Spark's
/// `ProcessingTimeExecutor`. `interval: None` (AvailableNow): at once.
pub(crate) fn next_tick(
    origin: Instant,
    tick: Instant,
    interval: Option<Duration>,
    now: Instant,
) -> Instant {
    match interval {
        Some(i) if !i.is_zero() => {
            let since = tick.saturating_duration_since(origin).as_nanos();
            let step = i.as_nanos();
            let k = since / step + 1;
            let next = u64::try_from(k * step).map_or(now, |ns| origin + Duration::from_nanos(ns));
            next.max(now)
        }
        _ => now,
    }
}

/// What became of an epoch the coordinator waited for.
enum EpochEnd {
    Committed,
    Failed,
}

impl Coordinator {
    fn stats(&self) -> std::sync::MutexGuard<'_, CheckpointStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, epoch: u64, reason: String) {
        tracing::warn!(epoch, %reason, "epoch failed");
        metrics::counter!("eddy_checkpoints_failed_total").increment(1);
        let mut s = self.stats();
        s.failed += 1;
        s.last_failure = Some(format!("epoch {epoch}: {reason}"));
    }

    /// The final epoch failed. Sources already ended their streams, so it
    /// cannot be retried: sinks stop waiting and the query fails, its last
    /// epoch's output staged but not committed (a restart recovers it).
    fn abandon(&self, epoch: u64) -> TaskResult {
        for s in &self.sinks {
            let _ = s.send(SinkCommand::Abandon);
        }
        Err(TaskFailure::User(crate::OperatorError::new(format!(
            "the final epoch {epoch} failed; its output was not committed"
        ))))
    }

    fn broadcast(&self, cmd: SourceCommand) {
        for s in &self.sources {
            let _ = s.send(cmd);
        }
    }

    /// Opens the next epoch and sends its marker to every source.
    fn start_epoch(&mut self, now_ms: u64, make: fn(EpochMarker) -> SourceCommand) -> Option<u64> {
        let epoch = self.tracker.try_start(now_ms)?;
        self.stats().started += 1;
        let kind = if self.trigger.is_micro_batch() {
            MarkerKind::BatchEnd
        } else {
            MarkerKind::Checkpoint
        };
        self.broadcast(make(EpochMarker { epoch, kind }));
        Some(epoch)
    }

    /// Makes a completed epoch durable (manifest, when checkpointing) and
    /// tells the sinks to commit it. Returns whether it committed.
    async fn complete(&mut self, done: CompletedCheckpoint, now_ms: u64) -> bool {
        let epoch = done.epoch;
        let started = done.started_ms;
        let manifest = done.into_manifest(self.shape.clone(), unix_ms());
        let written = manifest.bytes_written();
        let total = manifest.total_state_bytes();
        if let Some(store) = self.store.clone() {
            match tokio::task::spawn_blocking(move || store.write_manifest(&manifest)).await {
                Ok(Ok(_gc)) => {}
                Ok(Err(e)) => {
                    self.fail(epoch, format!("writing the manifest: {e}"));
                    return false;
                }
                Err(e) => {
                    self.fail(epoch, format!("manifest writer: {e}"));
                    return false;
                }
            }
        }
        let dur = now_ms.saturating_sub(started);
        metrics::counter!("eddy_checkpoints_completed_total").increment(1);
        metrics::histogram!("eddy_checkpoint_duration_ms").record(dur as f64);
        metrics::gauge!("eddy_checkpoint_bytes_written").set(written as f64);
        {
            let mut s = self.stats();
            s.completed += 1;
            s.last_completed_epoch = Some(epoch);
            s.last_duration_ms = Some(dur);
            s.last_bytes_written = Some(written);
            s.last_state_bytes = Some(total);
        }
        for s in &self.sinks {
            let _ = s.send(SinkCommand::Commit(epoch));
        }
        true
    }

    /// Runs until the final epoch is committed (or every task is gone).
    pub async fn run(self) -> TaskResult {
        match self.trigger.clone() {
            Trigger::Continuous {
                checkpoint_interval,
            } => self.run_continuous(checkpoint_interval).await,
            Trigger::ProcessingTime(interval) => self.run_micro_batch(Some(interval)).await,
            Trigger::AvailableNow => self.run_micro_batch(None).await,
        }
    }

    async fn run_continuous(mut self, interval: Duration) -> TaskResult {
        let origin = Instant::now();
        let now_ms = |o: Instant| o.elapsed().as_millis() as u64;
        let mut ticker = tokio::time::interval_at(origin + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finished_sources = 0;
        let mut final_epoch: Option<u64> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    for a in self.tracker.tick(now_ms(origin)) {
                        self.fail(a.epoch, format!("{:?}", a.reason));
                        if Some(a.epoch) == final_epoch {
                            return self.abandon(a.epoch);
                        }
                    }
                    if finished_sources == self.sources.len() {
                        if final_epoch.is_none() {
                            final_epoch = self.start_epoch(now_ms(origin), SourceCommand::FinalMarker);
                        }
                    } else {
                        self.start_epoch(now_ms(origin), SourceCommand::Marker);
                    }
                }
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    match ev {
                        TaskEvent::SourceFinished => {
                            finished_sources += 1;
                            if finished_sources == self.sources.len() && final_epoch.is_none() {
                                final_epoch = self.start_epoch(now_ms(origin), SourceCommand::FinalMarker);
                            }
                        }
                        TaskEvent::Decline { epoch, task, reason } => {
                            if let Some(a) = self.tracker.decline(epoch, &task, reason) {
                                self.fail(a.epoch, format!("{:?}", a.reason));
                                if Some(a.epoch) == final_epoch {
                                    return self.abandon(a.epoch);
                                }
                            }
                        }
                        TaskEvent::Ack { epoch, task, snapshot } => {
                            if let AckOutcome::Complete(done) =
                                self.tracker.ack(epoch, &task, snapshot, now_ms(origin))
                            {
                                let epoch = done.epoch;
                                let committed = self.complete(done, now_ms(origin)).await;
                                if final_epoch.is_some_and(|f| epoch >= f) {
                                    return if committed { Ok(()) } else { self.abandon(epoch) };
                                }
                            }
                        }
                        TaskEvent::Probed { .. } | TaskEvent::SourceRows { .. } => {}
                    }
                }
            }
        }
    }

    /// Waits for the outcome of `epoch`, counting the rows sources report.
    async fn await_epoch(
        &mut self,
        epoch: u64,
        origin: Instant,
        rows: &mut u64,
    ) -> Option<EpochEnd> {
        let now_ms = |o: Instant| o.elapsed().as_millis() as u64;
        let mut timeouts = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = timeouts.tick() => {
                    for a in self.tracker.tick(now_ms(origin)) {
                        self.fail(a.epoch, format!("{:?}", a.reason));
                        if a.epoch == epoch {
                            return Some(EpochEnd::Failed);
                        }
                    }
                }
                ev = self.events.recv() => match ev? {
                    TaskEvent::SourceRows { epoch: e, rows: n } if e == epoch => *rows += n,
                    TaskEvent::Decline { epoch: e, task, reason } => {
                        if let Some(a) = self.tracker.decline(e, &task, reason) {
                            self.fail(a.epoch, format!("{:?}", a.reason));
                            if a.epoch == epoch {
                                return Some(EpochEnd::Failed);
                            }
                        }
                    }
                    TaskEvent::Ack { epoch: e, task, snapshot } => {
                        if let AckOutcome::Complete(done) = self.tracker.ack(e, &task, snapshot, now_ms(origin)) {
                            let committed = self.complete(done, now_ms(origin)).await;
                            return Some(if committed { EpochEnd::Committed } else { EpochEnd::Failed });
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    /// Asks every source whether it has data; returns (any has data, all finished).
    async fn probe(&mut self) -> Option<(bool, bool)> {
        self.broadcast(SourceCommand::Probe);
        let (mut replies, mut any, mut all_finished) = (0, false, true);
        while replies < self.sources.len() {
            if let TaskEvent::Probed { has_data, finished } = self.events.recv().await? {
                replies += 1;
                any |= has_data;
                all_finished &= finished;
            }
        }
        Some((any, all_finished))
    }

    async fn run_micro_batch(mut self, interval: Option<Duration>) -> TaskResult {
        let origin = Instant::now();
        let now_ms = |o: Instant| o.elapsed().as_millis() as u64;
        let mut tick = origin;
        loop {
            tokio::time::sleep_until(tick).await;
            self.stats().ticks += 1;
            let Some((has_data, all_finished)) = self.probe().await else {
                return Ok(());
            };
            if !has_data && (all_finished || interval.is_none()) {
                // Drained: one last (empty) epoch ends every stream and lets
                // the sinks commit and finish.
                let Some(epoch) = self.start_epoch(now_ms(origin), SourceCommand::FinalMarker)
                else {
                    return self.abandon(0);
                };
                let mut rows = 0;
                return match self.await_epoch(epoch, origin, &mut rows).await {
                    Some(EpochEnd::Committed) | None => Ok(()),
                    Some(EpochEnd::Failed) => self.abandon(epoch),
                };
            }
            if has_data {
                let started = Instant::now();
                let Some(epoch) = self.start_epoch(now_ms(origin), SourceCommand::Batch) else {
                    // Refused (too many epochs pending): try at the next
                    // tick rather than probing again at once.
                    tick = next_tick(origin, tick, interval, Instant::now());
                    continue;
                };
                let mut rows = 0;
                match self.await_epoch(epoch, origin, &mut rows).await {
                    None => return Ok(()),
                    Some(EpochEnd::Failed) => {}
                    Some(EpochEnd::Committed) => {
                        let done = Instant::now();
                        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                        let batch = BatchProgress {
                            batch_id: epoch,
                            trigger_at_ms: ms(tick - origin),
                            input_rows: rows,
                            scheduling_delay_ms: ms(started - tick),
                            processing_time_ms: ms(done - started),
                            total_delay_ms: ms(done - tick),
                        };
                        metrics::histogram!("eddy_batch_processing_ms")
                            .record(batch.processing_time_ms);
                        metrics::histogram!("eddy_batch_scheduling_delay_ms")
                            .record(batch.scheduling_delay_ms);
                        metrics::counter!("eddy_batch_input_rows_total").increment(rows);
                        let mut s = self.stats();
                        s.batches_completed += 1;
                        if s.recent_batches.len() >= RECENT_BATCHES {
                            s.recent_batches.remove(0);
                        }
                        s.recent_batches.push(batch.clone());
                        s.last_batch = Some(batch);
                    }
                }
            }
            // The next tick, or at once when the batch overran it.
            tick = next_tick(origin, tick, interval, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_batch_waits_for_the_tick_or_starts_at_once_after_an_overrun() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Finished early: the next tick.
        assert_eq!(next_tick(t0, t0, Some(ms(100)), t0 + ms(30)), t0 + ms(100));
        // Finished exactly on the tick.
        assert_eq!(next_tick(t0, t0, Some(ms(100)), t0 + ms(100)), t0 + ms(100));
        // Overran: at once, skipping the missed ticks.
        assert_eq!(next_tick(t0, t0, Some(ms(100)), t0 + ms(250)), t0 + ms(250));
        // The batch that started at once, off the grid: back on the grid.
        assert_eq!(
            next_tick(t0, t0 + ms(250), Some(ms(100)), t0 + ms(270)),
            t0 + ms(300)
        );
        // AvailableNow: back to back.
        assert_eq!(next_tick(t0, t0, None, t0 + ms(7)), t0 + ms(7));
    }
}
