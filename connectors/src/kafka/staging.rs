//! The exactly-once Kafka sink's write-ahead staging: one local file per
//! epoch, holding the epoch's records until their transaction commits.
//!
//! A file is a sequence of frames `[u32 key length or u32::MAX for no key]
//! [key] [u32 value length] [value]`, little-endian. The records of the
//! epoch being written go to `current`; at the epoch's marker the file is
//! flushed, fsynced and renamed to `epoch-<e>` (atomic), and its size and
//! CRC32 are recorded in the checkpoint (the file sink's
//! [`StagedEpoch`] record), so a restart verifies it before producing it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use eddy_runtime::OperatorError;

use super::message::ProducerRecord;
pub(crate) use crate::file::staged::{decode, encode, verify, StagedEpoch};

const NO_KEY: u32 = u32::MAX;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::new(format!("kafka sink: {what} {}: {e}", path.display()))
}

/// An instance's staging directory.
pub(crate) struct Staging {
    dir: PathBuf,
    current: Option<BufWriter<File>>,
    len: u64,
    crc: crc32fast::Hasher,
}

impl Staging {
    /// Staging in `dir` (created).
    pub fn open(dir: PathBuf) -> Result<Self, OperatorError> {
        fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(Self {
            dir,
            current: None,
            len: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// Where epoch `epoch` is staged.
    pub fn epoch_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:020}"))
    }

    /// Appends records to the current epoch's file.
    pub fn append(&mut self, records: &[ProducerRecord]) -> Result<(), OperatorError> {
        if self.current.is_none() {
            let p = self.current_path();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| io_err("opening", &p, e))?;
            self.current = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        let w = self.current.as_mut().expect("opened above");
        let mut frame = Vec::new();
        for r in records {
            frame.clear();
            match &r.key {
                Some(k) => {
                    frame.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    frame.extend_from_slice(k);
                }
                None => frame.extend_from_slice(&NO_KEY.to_le_bytes()),
            }
            frame.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
            frame.extend_from_slice(&r.value);
            w.write_all(&frame)
                .map_err(|e| OperatorError::new(format!("kafka sink: staging: {e}")))?;
            self.crc.update(&frame);
            self.len += frame.len() as u64;
        }
        Ok(())
    }

    /// Seals the current file as epoch `epoch` (flush, fsync, rename, fsync
    /// the directory) and returns its record; `None` when the epoch wrote
    /// nothing.
    pub fn seal(&mut self, epoch: u64) -> Result<Option<StagedEpoch>, OperatorError> {
        let Some(mut w) = self.current.take() else {
            return Ok(None);
        };
        let from = self.current_path();
        w.flush().map_err(|e| io_err("flushing", &from, e))?;
        w.get_ref()
            .sync_data()
            .map_err(|e| io_err("syncing", &from, e))?;
        let to = self.epoch_path(epoch);
        fs::rename(&from, &to).map_err(|e| io_err("staging", &from, e))?;
        self.sync_dir()?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
        Ok(Some(StagedEpoch {
            epoch,
            size: std::mem::take(&mut self.len),
            crc32: crc.finalize(),
        }))
    }

    fn sync_dir(&self) -> Result<(), OperatorError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("syncing", &self.dir, e))
    }

    /// Staged epochs, ascending.
    pub fn epochs(&self) -> Result<Vec<u64>, OperatorError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| io_err("listing", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &self.dir, e))?;
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

    /// Deletes epoch `epoch`'s file (its transaction committed, or it is
    /// replayed).
    pub fn remove(&self, epoch: u64) -> Result<(), OperatorError> {
        let p = self.epoch_path(epoch);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &p, e)),
        }
    }

    /// Discards the partial current epoch (after a crash: its input is
    /// replayed).
    pub fn discard_current(&mut self) -> Result<(), OperatorError> {
        self.current = None;
        self.len = 0;
        self.crc = crc32fast::Hasher::new();
        let p = self.current_path();
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("discarding", &p, e)),
        }
    }

    /// Reads epoch `epoch`'s records.
    pub fn read(&self, epoch: u64) -> Result<Vec<ProducerRecord>, OperatorError> {
        read_file(&self.epoch_path(epoch))
    }
}

/// Reads a staged file.
///
/// # Errors
/// The file cannot be read or does not end on a frame boundary.
pub(crate) fn read_file(path: &Path) -> Result<Vec<ProducerRecord>, OperatorError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_err("reading", path, e))?;
    let corrupt = || {
        OperatorError::new(format!(
            "kafka sink: staged file {} is corrupt",
            path.display()
        ))
    };
    let mut rest = &bytes[..];
    let mut take = |n: usize| -> Result<&[u8], OperatorError> {
        if rest.len() < n {
            return Err(corrupt());
        }
        let (h, t) = rest.split_at(n);
        rest = t;
        Ok(h)
    };
    let mut out = Vec::new();
    while let Ok(klen) = take(4) {
        let klen = u32::from_le_bytes(klen.try_into().expect("4 bytes"));
        let key = if klen == NO_KEY {
            None
        } else {
            Some(take(klen as usize)?.to_vec())
        };
        let vlen = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let value = take(vlen as usize)?.to_vec();
        out.push(ProducerRecord { key, value });
    }
    if !rest.is_empty() {
        return Err(corrupt());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_seal_read_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staging::open(dir.path().join("i0")).unwrap();
        assert_eq!(s.seal(1).unwrap(), None, "nothing written");
        let recs = vec![
            ProducerRecord::keyed("k", "v1"),
            ProducerRecord::unkeyed(""),
            ProducerRecord::keyed("", "v3"),
        ];
        s.append(&recs[..2]).unwrap();
        s.append(&recs[2..]).unwrap();
        let staged = s.seal(2).unwrap().unwrap();
        assert_eq!(s.epochs().unwrap(), vec![2]);
        assert_eq!(s.read(2).unwrap(), recs);
        verify(&s.epoch_path(2), &staged).unwrap();
        s.append(&recs).unwrap();
        s.discard_current().unwrap();
        assert_eq!(s.seal(3).unwrap(), None);
        // A truncated file is refused, not half-produced.
        let p = s.epoch_path(2);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 1).unwrap();
        assert!(s.read(2).is_err());
        assert!(verify(&p, &staged).is_err());
        s.remove(2).unwrap();
        s.remove(2).unwrap();
        assert!(s.epochs().unwrap().is_empty());
    }
}
