//! The dead-letter output of sources that decode external data.
//!
//! A record a source cannot decode (a Kafka message its deserializer
//! refuses, a malformed CSV or JSON row) never fails the query and is never
//! dropped silently: it becomes a [`DeadLetter`] naming where it came from
//! ([`Origin`]) and why it was refused, and goes to the source's
//! [`DeadLetters`] handle, which
//! - counts it ([`DeadLetters::count`] and the metrics counter
//!   `eddy_dead_letters_total`, labelled by source and instance),
//! - keeps the last [`DEAD_LETTERS_KEPT`] in memory
//!   ([`DeadLetters::recent`]),
//! - and, when given a file ([`DeadLetters::to_file`]), appends each one to
//!   it as a JSON line, flushed at once (dead letters are rare; a process
//!   that dies right after refusing a record still leaves it on disk).
//!
//! Clones share one handle: keep a clone to read it while and after the
//! query runs.
//!
//! # Delivery
//! Dead letters are at-least-once: after a crash, the source replays from its
//! checkpointed offset and refuses the same records again, so the file may
//! hold a dead letter twice (the [`Origin`] identifies duplicates). The
//! runtime has no typed side output from sources yet; when it has one, a
//! source can route its dead letters there and they become exactly-once
//! like any other output (see `docs/kafka.md`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Dead letters kept in memory by [`DeadLetters::recent`].
pub const DEAD_LETTERS_KEPT: usize = 64;

/// Bytes of a refused payload kept in a [`DeadLetter`].
pub const DEAD_LETTER_PAYLOAD_BYTES: usize = 1024;

/// Where a refused record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A Kafka message.
    Kafka {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
    },
    /// A row of a file.
    File {
        /// The file's path.
        path: String,
        /// Byte offset of the row's first byte.
        offset: u64,
    },
}

/// A record a source could not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from.
    pub origin: Origin,
    /// Why it was refused.
    pub error: String,
    /// The first [`DEAD_LETTER_PAYLOAD_BYTES`] of the refused bytes, as
    /// UTF-8 (invalid sequences replaced).
    pub payload: String,
}

impl DeadLetter {
    /// A dead letter for `payload` from `origin`.
    pub fn new(origin: Origin, error: impl Into<String>, payload: &[u8]) -> Self {
        let cut = payload.len().min(DEAD_LETTER_PAYLOAD_BYTES);
        Self {
            origin,
            error: error.into(),
            payload: String::from_utf8_lossy(&payload[..cut]).into_owned(),
        }
    }
}

struct Inner {
    count: AtomicU64,
    recent: Mutex<VecDeque<DeadLetter>>,
    file: Option<(PathBuf, Mutex<Option<File>>)>,
    file_errors: AtomicU64,
}

/// Where a source's dead letters go (see the module docs). Clones share it.
#[derive(Clone)]
pub struct DeadLetters {
    inner: Arc<Inner>,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("count", &self.count())
            .field("file", &self.inner.file.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl DeadLetters {
    /// A handle that counts and keeps recent dead letters in memory.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A handle that also appends every dead letter to `path` as a JSON
    /// line (the file is created on the first dead letter).
    pub fn to_file(path: impl Into<PathBuf>) -> Self {
        Self::build(Some(path.into()))
    }

    fn build(file: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                count: AtomicU64::new(0),
                recent: Mutex::new(VecDeque::new()),
                file: file.map(|p| (p, Mutex::new(None))),
                file_errors: AtomicU64::new(0),
            }),
        }
    }

    /// Records a dead letter refused by instance `instance` of source
    /// `source`.
    pub fn push(&self, source: &str, instance: usize, letter: DeadLetter) {
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "eddy_dead_letters_total",
            "source" => source.to_string(),
            "instance" => instance.to_string()
        )
        .increment(1);
        if let Some((path, file)) = &self.inner.file {
            if append_line(path, file, &letter).is_err() {
                // The letter is still counted and kept in memory; a broken
                // dead-letter file must not fail the query either.
                self.inner.file_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == DEAD_LETTERS_KEPT {
            recent.pop_front();
        }
        recent.push_back(letter);
    }

    /// Dead letters recorded so far (by every clone).
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// The last [`DEAD_LETTERS_KEPT`] dead letters, oldest first.
    pub fn recent(&self) -> Vec<DeadLetter> {
        let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// Dead letters that could not be appended to the file.
    pub fn file_errors(&self) -> u64 {
        self.inner.file_errors.load(Ordering::Relaxed)
    }

    /// Reads a dead-letter file written by [`to_file`](Self::to_file); a
    /// missing file holds none.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not a dead letter.
    pub fn read_file(path: &Path) -> std::io::Result<Vec<DeadLetter>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
            .collect()
    }
}

fn append_line(
    path: &Path,
    file: &Mutex<Option<File>>,
    letter: &DeadLetter,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
    if file.is_none() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        *file = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    let f = file.as_mut().expect("opened above");
    f.write_all(&line)?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keeps_and_writes_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl").join("dead.jsonl");
        let dl = DeadLetters::to_file(&path);
        let other = dl.clone();
        for i in 0..(DEAD_LETTERS_KEPT as i64 + 3) {
            let origin = Origin::Kafka {
                topic: "t".into(),
                partition: 1,
                offset: i,
            };
            other.push("src", 0, DeadLetter::new(origin, "bad", b"\xffx"));
        }
        assert_eq!(dl.count(), DEAD_LETTERS_KEPT as u64 + 3);
        let recent = dl.recent();
        assert_eq!(recent.len(), DEAD_LETTERS_KEPT);
        assert_eq!(
            recent[0].origin,
            Origin::Kafka {
                topic: "t".into(),
                partition: 1,
                offset: 3
            }
        );
        assert_eq!(recent[0].payload, "\u{fffd}x");
        let read = DeadLetters::read_file(&path).unwrap();
        assert_eq!(read.len(), DEAD_LETTERS_KEPT + 3);
        assert_eq!(dl.file_errors(), 0);
        assert!(DeadLetters::read_file(&dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}
