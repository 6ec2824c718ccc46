//! A file sink with exactly-once or at-least-once delivery.
//!
//! # Exactly-once: two-phase commit over atomic renames
//! Each instance writes the lines of the current epoch to
//! `staging/<instance>/current`. At `Marker(e)` it flushes and fsyncs that
//! file and renames it to `staging/<instance>/epoch-<e>` (pre-commit). When
//! the coordinator says `Commit(e)` — after the manifest of `e` is durable —
//! every staged epoch `<= e` is renamed to `part-<instance>-<epoch>.txt` in
//! the output directory, which is the only place readers look. A rename is
//! atomic, so a part file is either absent or complete; committing an epoch
//! twice finds nothing left to rename (idempotent). On restart from epoch `c`
//! the sink commits staged epochs `<= c` (their commit may have been cut off
//! by the crash) and deletes staged epochs `> c` and the partial `current`
//! file: that input is replayed by the sources. Output becomes visible once
//! per checkpoint: latency is bounded below by the checkpoint interval.
//!
//! # At-least-once
//! Lines are appended to `part-<instance>-live-<start>.txt` and flushed after
//! every batch: visible within microseconds, but a restart replays the input
//! since the last checkpoint, so lines after it appear twice.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy_runtime::{OperatorError, Record, Sink, SinkContext};

/// Delivery guarantee of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Output visible at epoch commit; never duplicated or lost.
    ExactlyOnce,
    /// Output visible immediately; duplicated after a crash.
    AtLeastOnce,
}

type Format<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Writes one line per record into a directory (see the module docs).
pub struct FileSink<T> {
    dir: PathBuf,
    delivery: Delivery,
    format: Format<T>,
    instance: usize,
    current: Option<BufWriter<File>>,
}

impl<T> Clone for FileSink<T> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            delivery: self.delivery,
            format: self.format.clone(),
            instance: self.instance,
            current: None,
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::new(format!("file sink: {what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), OperatorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))
}

impl<T> FileSink<T> {
    /// A sink writing `format(value)` lines into `dir`.
    pub fn new(
        dir: impl Into<PathBuf>,
        delivery: Delivery,
        format: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            dir: dir.into(),
            delivery,
            format: Arc::new(format),
            instance: 0,
            current: None,
        }
    }

    fn staging(&self) -> PathBuf {
        self.dir.join("staging").join(self.instance.to_string())
    }

    fn staged_path(&self, epoch: u64) -> PathBuf {
        self.staging().join(format!("epoch-{epoch:020}"))
    }

    fn part_path(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("part-{:04}-{epoch:020}.txt", self.instance))
    }

    /// Staged epochs of this instance, ascending.
    fn staged_epochs(&self) -> Result<Vec<u64>, OperatorError> {
        let dir = self.staging();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &dir, e))?;
            let name = entry.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_prefix("epoch-")) {
                if let Ok(e) = n.parse::<u64>() {
                    out.push(e);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn open_current(&mut self) -> Result<&mut BufWriter<File>, OperatorError> {
        if self.current.is_none() {
            let path = match self.delivery {
                Delivery::ExactlyOnce => self.staging().join("current"),
                Delivery::AtLeastOnce => self.dir.join(format!(
                    "part-{:04}-live-{}.txt",
                    self.instance,
                    eddy_runtime::record::now_ns()
                )),
            };
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err("opening", &path, e))?;
            self.current = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    /// Flushes and fsyncs the current file and closes it.
    fn seal_current(&mut self) -> Result<bool, OperatorError> {
        let Some(mut w) = self.current.take() else {
            return Ok(false);
        };
        let path = self.staging().join("current");
        w.flush().map_err(|e| io_err("flushing", &path, e))?;
        w.get_ref()
            .sync_data()
            .map_err(|e| io_err("syncing", &path, e))?;
        Ok(true)
    }

    /// Makes staged epochs `<= epoch` visible.
    fn commit_through(&mut self, epoch: u64) -> Result<(), OperatorError> {
        let mut any = false;
        for e in self.staged_epochs()? {
            if e > epoch {
                break;
            }
            let (from, to) = (self.staged_path(e), self.part_path(e));
            fs::rename(&from, &to).map_err(|err| io_err("committing", &from, err))?;
            any = true;
        }
        if any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Every committed line in `dir`, per instance in epoch order, instances
    /// one after the other.
    pub fn read_committed(dir: &Path) -> std::io::Result<Vec<String>> {
        let mut parts: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-") && n.ends_with(".txt"))
            })
            .collect();
        parts.sort();
        let mut lines = Vec::new();
        for p in parts {
            lines.extend(fs::read_to_string(&p)?.lines().map(String::from));
        }
        Ok(lines)
    }
}

impl<T: Send + 'static> Sink<T> for FileSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), OperatorError> {
        self.instance = ctx.instance;
        let staging = self.staging();
        fs::create_dir_all(&staging).map_err(|e| io_err("creating", &staging, e))?;
        Ok(())
    }

    fn write(&mut self, records: Vec<Record<T>>) -> Result<(), OperatorError> {
        let format = self.format.clone();
        let delivery = self.delivery;
        let w = self.open_current()?;
        for r in &records {
            let line = format(&r.value);
            w.write_all(line.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .map_err(|e| OperatorError::new(format!("file sink: writing: {e}")))?;
        }
        if delivery == Delivery::AtLeastOnce {
            w.flush()
                .map_err(|e| OperatorError::new(format!("file sink: flushing: {e}")))?;
        }
        Ok(())
    }

    fn on_marker(&mut self, epoch: u64) -> Result<Vec<u8>, OperatorError> {
        if self.delivery == Delivery::ExactlyOnce && self.seal_current()? {
            let (from, to) = (self.staging().join("current"), self.staged_path(epoch));
            fs::rename(&from, &to).map_err(|e| io_err("staging", &from, e))?;
            sync_dir(&self.staging())?;
        }
        Ok(Vec::new())
    }

    fn visible_at_commit(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce
    }

    fn commit(&mut self, epoch: u64) -> Result<(), OperatorError> {
        match self.delivery {
            Delivery::ExactlyOnce => self.commit_through(epoch),
            Delivery::AtLeastOnce => Ok(()),
        }
    }

    fn restore(&mut self, restored: Option<(u64, &[u8])>) -> Result<(), OperatorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(());
        }
        let current = self.staging().join("current");
        match fs::remove_file(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("discarding", &current, e)),
        }
        let committed = restored.map_or(0, |(e, _)| e);
        self.commit_through(committed)?;
        for e in self.staged_epochs()? {
            let p = self.staged_path(e);
            fs::remove_file(&p).map_err(|err| io_err("discarding", &p, err))?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        match self.delivery {
            Delivery::AtLeastOnce => {
                if let Some(mut w) = self.current.take() {
                    w.flush()
                        .and_then(|_| w.get_ref().sync_data())
                        .map_err(|e| OperatorError::new(format!("file sink: closing: {e}")))?;
                }
                Ok(())
            }
            Delivery::ExactlyOnce => {
                // Without checkpointing there is no commit protocol: the end
                // of input commits what is left.
                if self.seal_current()? {
                    let from = self.staging().join("current");
                    let to = self.dir.join(format!(
                        "part-{:04}-end-{}.txt",
                        self.instance,
                        eddy_runtime::record::now_ns()
                    ));
                    fs::rename(&from, &to).map_err(|e| io_err("committing", &from, e))?;
                    sync_dir(&self.dir)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SinkContext {
        SinkContext {
            name: "files".into(),
            instance: 0,
            parallelism: 1,
        }
    }

    fn recs(v: &[u32]) -> Vec<Record<u32>> {
        v.iter().map(|&x| Record::new(x)).collect()
    }

    #[test]
    fn exactly_once_commit_restore_and_discard() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.restore(None).unwrap();
        s.write(recs(&[1, 2])).unwrap();
        s.on_marker(1).unwrap();
        s.write(recs(&[3])).unwrap();
        s.on_marker(2).unwrap();
        s.write(recs(&[4])).unwrap(); // epoch 3, never pre-committed
        assert!(FileSink::<u32>::read_committed(dir.path())
            .unwrap()
            .is_empty());
        s.commit(1).unwrap();
        s.commit(1).unwrap(); // idempotent
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1", "2"]
        );
        drop(s); // crash: epoch 2 staged, commit lost; epoch 3 partial

        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.restore(Some((2, &[]))).unwrap();
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1", "2", "3"]
        );
        assert!(s.staged_epochs().unwrap().is_empty());
        assert!(!s.staging().join("current").exists());
    }

    #[test]
    fn restore_discards_epochs_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.write(recs(&[1])).unwrap();
        s.on_marker(5).unwrap();
        s.write(recs(&[2])).unwrap();
        s.on_marker(6).unwrap();
        drop(s);
        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.restore(Some((5, &[]))).unwrap();
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1"]
        );
        assert!(s.staged_epochs().unwrap().is_empty());
    }
}
