//! The threads that take and persist snapshots.
//!
//! A snapshot's work (applying the marker's write batch, the RocksDB flush
//! and checkpoint, copying files into the store) needs CPU the records need
//! too. On a machine with no spare core, run beside the operator tasks at
//! the same priority, it holds a core for a scheduler time slice at a time
//! while records queue behind it. So snapshots run on their own threads at
//! a lower priority (`CheckpointConfig::snapshot_niceness`): they use idle
//! CPU at once, and yield to the tasks when those need it.
//!
//! The tasks never wait for these threads at a marker
//! ([`SharedBackend::freeze`](eddy_checkpoint::SharedBackend::freeze) does
//! not block), so a low priority cannot stall them; only a cache spill or a
//! cache miss during a snapshot waits for its writes to be applied.

use std::io;

use thread_priority::{ThreadPriority, ThreadPriorityValue};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of snapshot threads. They end when every clone of the pool
/// is dropped and the queued jobs are done.
#[derive(Clone)]
pub(crate) struct SnapshotPool {
    jobs: async_channel::Sender<Job>,
}

impl SnapshotPool {
    /// Starts `threads` threads (at least one) at `niceness` (0: as the
    /// process; up to 19, the lowest).
    pub(crate) fn new(threads: usize, niceness: u8) -> io::Result<Self> {
        let (tx, rx) = async_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("eddy-snapshot-{i}"))
                .spawn(move || {
                    if niceness > 0 {
                        set_niceness(niceness);
                    }
                    while let Ok(job) = rx.recv_blocking() {
                        // A job that panics must not take its thread (and,
                        // with the last thread, the pool) with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs: tx })
    }

    /// Runs `job` on a snapshot thread.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // The receivers live as long as their threads, which end only once
        // every sender is gone, and this one is not: the send succeeds.
        let _ = self.jobs.try_send(Box::new(job));
    }
}

/// The `thread_priority` value that sets `niceness` under Linux's normal
/// policy: it maps 0..=99 linearly onto nice 19..=-20.
fn priority_for(niceness: u8) -> ThreadPriority {
    let target = i32::from(niceness.min(19));
    let p = (0u8..=99)
        .find(|&p| {
            let ratio = 1f32 - (f32::from(p) / 99.0);
            ((39.0 * ratio) as i32 - 20) <= target
        })
        .unwrap_or(0);
    ThreadPriority::Crossplatform(
        ThreadPriorityValue::try_from(p).unwrap_or(ThreadPriorityValue::MIN),
    )
}

/// Sets the calling thread's niceness. Failing to is harmless: snapshots
/// then run at the normal priority.
fn set_niceness(niceness: u8) {
    if let Err(e) = thread_priority::set_current_thread_priority(priority_for(niceness)) {
        tracing::debug!(?e, "could not lower the snapshot threads' priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_leaves_the_pool_running() {
        let pool = SnapshotPool::new(1, 0).unwrap();
        pool.spawn(|| panic!("a snapshot job panicked"));
        let (tx, rx) = std::sync::mpsc::channel();
        pool.spawn(move || tx.send(()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the job after a panic ran");
    }

    #[test]
    fn runs_every_job_at_the_niceness_asked() {
        let pool = SnapshotPool::new(2, 10).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            pool.spawn(move || {
                // Field 19 of /proc/thread-self/stat is the nice value.
                let stat = std::fs::read_to_string("/proc/thread-self/stat").ok();
                let nice = stat.and_then(|s| {
                    let after = s.rsplit_once(") ")?.1;
                    after.split(' ').nth(16)?.parse::<i32>().ok()
                });
                tx.send((i, nice)).unwrap();
            });
        }
        drop(tx);
        let mut got: Vec<(i32, Option<i32>)> = rx.iter().collect();
        got.sort();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        if cfg!(target_os = "linux") {
            assert!(got.iter().all(|g| g.1 == Some(10)), "{got:?}");
        }
    }
}
