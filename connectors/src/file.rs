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
//! Each pre-commit records every staged, uncommitted epoch with its file's
//! size and CRC32 (in the manifest, which is itself CRC-framed); a restart
//! verifies a staged file against that record before committing it.
//!
//! # Recovery from an older checkpoint
//! When the checkpoint a restart restores is older than epochs this sink
//! already committed (newer checkpoints were damaged or deleted), the
//! runtime asks it to take them back ([`Sink::retract_after`]): every part
//! file of a later epoch is moved to `_quarantine/<instance>/restored-<epoch>-<ms>/`
//! (never deleted; the moves are logged and reported in the query's
//! recovery report) and the replay commits those epochs once.
//! [`FileSink::read_committed`] reads only the output directory's own part
//! files, so readers see exactly-once output again.
//!
//! # At-least-once
//! Lines are appended to `part-<instance>-live-<start>.txt` and flushed after
//! every batch: visible within microseconds, but a restart replays the input
//! since the last checkpoint, so lines after it appear twice.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy_runtime::{OperatorError, Record, Retracted, Sink, SinkContext};

pub(crate) mod staged;
use staged::StagedEpoch;

/// Delivery guarantee of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Output visible at epoch commit; never duplicated or lost.
    ExactlyOnce,
    /// Output visible immediately; duplicated after a crash.
    AtLeastOnce,
}

type Format<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Where retracted part files go, inside the output directory. The leading
/// underscore marks it hidden for readers that list directories
/// recursively (the Hadoop and Spark convention).
const QUARANTINE_DIR: &str = "_quarantine";

/// Writes one line per record into a directory (see the module docs).
pub struct FileSink<T> {
    dir: PathBuf,
    delivery: Delivery,
    format: Format<T>,
    instance: usize,
    current: Option<BufWriter<File>>,
    /// Length and CRC32 of what `current` holds.
    current_len: u64,
    current_crc: crc32fast::Hasher,
    /// Epochs staged and not yet committed (recorded in every pre-commit).
    pending: Vec<StagedEpoch>,
}

impl<T> Clone for FileSink<T> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            delivery: self.delivery,
            format: self.format.clone(),
            instance: self.instance,
            current: None,
            current_len: 0,
            current_crc: crc32fast::Hasher::new(),
            pending: Vec::new(),
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
            current_len: 0,
            current_crc: crc32fast::Hasher::new(),
            pending: Vec::new(),
        }
    }

    fn staging(&self) -> PathBuf {
        self.dir.join("staging").join(self.instance.to_string())
    }

    #[cfg(test)]
    fn staged_path_for(&self, instance: usize, epoch: u64) -> PathBuf {
        let mut this = self.clone();
        this.instance = instance;
        this.staged_path(epoch)
    }

    fn staged_path(&self, epoch: u64) -> PathBuf {
        self.staging().join(format!("epoch-{epoch:020}"))
    }

    fn part_path(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("part-{:04}-{epoch:020}.txt", self.instance))
    }

    /// Committed epochs of this instance (its `part-<instance>-<epoch>.txt`
    /// files), ascending.
    fn committed_epochs(&self) -> Result<Vec<(u64, PathBuf)>, OperatorError> {
        let prefix = format!("part-{:04}-", self.instance);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("listing", &self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &self.dir, e))?;
            let name = entry.file_name();
            let epoch = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".txt"))
                .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(e) = epoch {
                out.push((e, entry.path()));
            }
        }
        out.sort_unstable();
        Ok(out)
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
        self.pending.retain(|s| s.epoch > epoch);
        if any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The committed part files in `dir`, in reading order: per instance in
    /// epoch order, instances one after the other (for readers that stream
    /// large outputs instead of [`read_committed`](Self::read_committed)).
    pub fn committed_parts(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut parts: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-") && n.ends_with(".txt"))
            })
            .collect();
        parts.sort();
        Ok(parts)
    }

    /// Every committed line in `dir`, per instance in epoch order, instances
    /// one after the other.
    pub fn read_committed(dir: &Path) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        for p in Self::committed_parts(dir)? {
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
        let mut written = 0;
        let mut crc = crc32fast::Hasher::new();
        for r in &records {
            let line = format(&r.value);
            w.write_all(line.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .map_err(|e| OperatorError::new(format!("file sink: writing: {e}")))?;
            crc.update(line.as_bytes());
            crc.update(b"\n");
            written += line.len() as u64 + 1;
        }
        if delivery == Delivery::AtLeastOnce {
            w.flush()
                .map_err(|e| OperatorError::new(format!("file sink: flushing: {e}")))?;
        }
        self.current_len += written;
        self.current_crc.combine(&crc);
        Ok(())
    }

    fn on_marker(&mut self, epoch: u64) -> Result<Vec<u8>, OperatorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(Vec::new());
        }
        if self.seal_current()? {
            let (from, to) = (self.staging().join("current"), self.staged_path(epoch));
            fs::rename(&from, &to).map_err(|e| io_err("staging", &from, e))?;
            sync_dir(&self.staging())?;
            let crc = std::mem::replace(&mut self.current_crc, crc32fast::Hasher::new());
            self.pending.push(StagedEpoch {
                epoch,
                size: std::mem::take(&mut self.current_len),
                crc32: crc.finalize(),
            });
        }
        Ok(staged::encode(&self.pending))
    }

    fn visible_at_commit(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce
    }

    fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(None);
        }
        let mut this = self.clone();
        this.instance = ctx.instance;
        Ok(this.committed_epochs()?.last().map(|(e, _)| *e))
    }

    fn can_retract(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce
    }

    fn retract_after(&mut self, ctx: &SinkContext, epoch: u64) -> Result<Retracted, OperatorError> {
        self.instance = ctx.instance;
        let later: Vec<(u64, PathBuf)> = self
            .committed_epochs()?
            .into_iter()
            .filter(|(e, _)| *e > epoch)
            .collect();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let quarantine = self
            .dir
            .join(QUARANTINE_DIR)
            .join(self.instance.to_string())
            .join(format!("restored-{epoch:020}-{ms}"));
        let mut retracted = Retracted {
            moved_to: quarantine.display().to_string(),
            ..Retracted::default()
        };
        if later.is_empty() {
            return Ok(retracted);
        }
        fs::create_dir_all(&quarantine).map_err(|e| io_err("creating", &quarantine, e))?;
        for (e, from) in later {
            let name = from.file_name().expect("a listed file has a name");
            fs::rename(&from, quarantine.join(name))
                .map_err(|err| io_err("quarantining", &from, err))?;
            retracted.epochs.push(e);
            retracted.items.push(name.to_string_lossy().into_owned());
        }
        sync_dir(&quarantine)?;
        let mut dir = quarantine.as_path();
        while let Some(parent) = dir.parent() {
            sync_dir(parent)?;
            if parent == self.dir {
                break;
            }
            dir = parent;
        }
        Ok(retracted)
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
        // Staged epochs up to the restored one are committed now: each must
        // match the checkpoint's record of it, and every recorded epoch must
        // be staged or already committed. Empty information comes from a
        // checkpoint written before the sink recorded its staged epochs:
        // nothing to verify against.
        let meta = restored.map_or(&[][..], |(_, meta)| meta);
        if !meta.is_empty() {
            let records = staged::decode(meta)?;
            let staged_now = self.staged_epochs()?;
            for e in staged_now.iter().copied().filter(|&e| e <= committed) {
                let path = self.staged_path(e);
                match records.iter().find(|r| r.epoch == e) {
                    Some(r) => staged::verify(&path, r)?,
                    None => {
                        return Err(OperatorError::new(format!(
                            "file sink: staged output {} is not recorded in checkpoint \
                             {committed}: refusing to commit it",
                            path.display()
                        )))
                    }
                }
            }
            for r in records.iter().filter(|r| r.epoch <= committed) {
                if !staged_now.contains(&r.epoch) && !self.part_path(r.epoch).exists() {
                    return Err(OperatorError::new(format!(
                        "file sink: epoch {} is recorded in checkpoint {committed} but neither \
                         staged ({}) nor committed ({}): its output is lost",
                        r.epoch,
                        self.staged_path(r.epoch).display(),
                        self.part_path(r.epoch).display()
                    )));
                }
            }
        }
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
        let meta2 = s.on_marker(2).unwrap();
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
        s.restore(Some((2, &meta2))).unwrap();
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1", "2", "3"]
        );
        assert!(s.staged_epochs().unwrap().is_empty());
        assert!(!s.staging().join("current").exists());
    }

    #[test]
    fn a_damaged_staged_epoch_is_refused_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let new = || FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        let mut s = new();
        s.open(&ctx()).unwrap();
        s.restore(None).unwrap();
        s.write(recs(&[1, 2])).unwrap();
        let meta1 = s.on_marker(1).unwrap();
        s.write(recs(&[3])).unwrap();
        let meta2 = s.on_marker(2).unwrap();
        drop(s); // crash before either commit
        let staged1 = new().staged_path_for(0, 1);
        std::fs::write(&staged1, b"1\n9\n").unwrap();

        // Checkpoint 2 records both staged epochs; epoch 1 no longer matches.
        let mut s = new();
        s.open(&ctx()).unwrap();
        let err = s.restore(Some((2, &meta2))).unwrap_err();
        assert!(
            err.message.contains(&staged1.display().to_string()),
            "{err}"
        );
        assert!(FileSink::<u32>::read_committed(dir.path())
            .unwrap()
            .is_empty());
        // Epoch 1's own record says the same.
        assert!(new().restore(Some((1, &meta1))).is_err());
        // A recorded epoch whose staged file is gone and was never committed
        // is lost output: refused, named.
        std::fs::remove_file(&staged1).unwrap();
        let err = new().restore(Some((1, &meta1))).unwrap_err();
        assert!(err.message.contains("neither staged"), "{err}");
        // A checkpoint from before staged epochs were recorded (empty
        // information) commits what is staged without verification.
        std::fs::write(&staged1, b"1\n2\n").unwrap();
        new().restore(Some((1, &[]))).unwrap();
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1", "2"]
        );
    }

    #[test]
    fn restore_discards_epochs_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.write(recs(&[1])).unwrap();
        let meta5 = s.on_marker(5).unwrap();
        s.write(recs(&[2])).unwrap();
        s.on_marker(6).unwrap();
        drop(s);
        let mut s = FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        s.open(&ctx()).unwrap();
        s.restore(Some((5, &meta5))).unwrap();
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["1"]
        );
        assert!(s.staged_epochs().unwrap().is_empty());
    }

    #[test]
    fn committed_epochs_are_reported_and_later_ones_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = || FileSink::new(dir.path(), Delivery::ExactlyOnce, |x: &u32| x.to_string());
        assert_eq!(fresh().committed_epoch(&ctx()).unwrap(), None);
        let mut s = fresh();
        s.open(&ctx()).unwrap();
        s.restore(None).unwrap();
        for (epoch, v) in [(1, 10), (2, 20), (3, 30)] {
            s.write(recs(&[v])).unwrap();
            s.on_marker(epoch).unwrap();
        }
        s.commit(3).unwrap();
        drop(s);
        assert_eq!(fresh().committed_epoch(&ctx()).unwrap(), Some(3));
        let other = SinkContext {
            instance: 1,
            parallelism: 2,
            ..ctx()
        };
        assert_eq!(fresh().committed_epoch(&other).unwrap(), None);

        // Recovery restores epoch 1: epochs 2 and 3 go to the quarantine.
        let r = fresh().retract_after(&ctx(), 1).unwrap();
        assert_eq!(r.epochs, vec![2, 3]);
        assert_eq!(r.items.len(), 2);
        assert_eq!(
            FileSink::<u32>::read_committed(dir.path()).unwrap(),
            vec!["10"]
        );
        let moved: Vec<_> = fs::read_dir(&r.moved_to).unwrap().collect();
        assert_eq!(moved.len(), 2, "moved, not deleted");
        assert_eq!(fresh().committed_epoch(&ctx()).unwrap(), Some(1));
        // Nothing later: nothing moved.
        assert!(fresh().retract_after(&ctx(), 1).unwrap().epochs.is_empty());
        // At-least-once output is not epoch-committed: nothing to report.
        let alo = FileSink::new(dir.path(), Delivery::AtLeastOnce, |x: &u32| x.to_string());
        assert_eq!(alo.committed_epoch(&ctx()).unwrap(), None);
        assert!(!alo.can_retract());
    }
}
