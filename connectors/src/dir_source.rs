//! A source reading rows from the files of a directory, picking up new files
//! (and rows appended to known ones) as they appear: Spark's file stream
//! source for CSV and JSON lines, typed through serde.
//!
//! # Files, rows and positions
//! Every regular file of the directory whose name does not start with `.` or
//! `_` (hidden, in-progress) is read, in name order, one row per line. A row
//! counts only once its line ends with `\n`: a line still being written is
//! left for a later poll, so writers may append, or move complete files in.
//! The source's position is the byte offset reached in each file, by name;
//! it is the source's checkpoint offset, so after a restart every file is
//! read on from where the restored checkpoint was: nothing twice, nothing
//! skipped. Files are dealt to instances by a hash of their name (CRC32
//! modulo the parallelism).
//!
//! # Polling
//! The source lists the directory at most once per
//! [`DirSource::poll_interval`] (100 ms by default): new files and appended
//! rows are seen within that time; rows found by a listing are read on
//! without listing again.
//!
//! # Bad rows
//! A row that does not decode (or is longer than
//! [`DirSource::max_line_bytes`]) becomes a [`DeadLetter`] naming the file
//! and the row's byte offset, counted, and the source goes on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

use crate::dead_letter::{DeadLetter, DeadLetters, Origin};

/// Default longest row, in bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

type Parse<T> = Arc<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// Reads rows of `T` from the files of a directory (see the module docs).
pub struct DirSource<T> {
    dir: PathBuf,
    parse: Parse<T>,
    skip_header: bool,
    bounded: bool,
    poll_interval: Duration,
    max_line_bytes: usize,
    dead_letters: DeadLetters,
    name: String,
    instance: usize,
    parallelism: usize,
    /// Bytes consumed per file name.
    positions: BTreeMap<String, u64>,
    /// Files with unread bytes at the last listing, in name order.
    due: Vec<(String, u64)>,
    next_listing: Option<Instant>,
    /// Bounded: the files and sizes found at the first listing.
    end: Option<BTreeMap<String, u64>>,
}

impl<T> Clone for DirSource<T> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            parse: self.parse.clone(),
            skip_header: self.skip_header,
            bounded: self.bounded,
            poll_interval: self.poll_interval,
            max_line_bytes: self.max_line_bytes,
            dead_letters: self.dead_letters.clone(),
            name: self.name.clone(),
            instance: 0,
            parallelism: 1,
            positions: BTreeMap::new(),
            due: Vec::new(),
            next_listing: None,
            end: None,
        }
    }
}

impl<T: DeserializeOwned + 'static> DirSource<T> {
    /// Rows as JSON objects, one per line.
    pub fn json_lines(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, |line| {
            serde_json::from_str(line).map_err(|e| e.to_string())
        })
    }

    /// Rows as CSV records, fields by position (see
    /// [`skip_header`](Self::skip_header) for files with a header row).
    pub fn csv(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, |line| {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes());
            match reader.deserialize::<T>().next() {
                Some(row) => row.map_err(|e| e.to_string()),
                None => Err("empty row".to_string()),
            }
        })
    }
}

impl<T> DirSource<T> {
    /// Rows parsed by `parse` from each line (without its newline).
    pub fn new(
        dir: impl Into<PathBuf>,
        parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            dir: dir.into(),
            parse: Arc::new(parse),
            skip_header: false,
            bounded: false,
            poll_interval: Duration::from_millis(100),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            dead_letters: DeadLetters::new(),
            name: String::new(),
            instance: 0,
            parallelism: 1,
            positions: BTreeMap::new(),
            due: Vec::new(),
            next_listing: None,
            end: None,
        }
    }

    /// The first line of every file is a header, not a row.
    pub fn skip_header(mut self) -> Self {
        self.skip_header = true;
        self
    }

    /// Read the files present at the first listing, to the sizes they had,
    /// then finish.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// How long to wait before listing the directory again when nothing is
    /// left to read.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The longest row accepted; longer ones are dead letters.
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Where refused rows go.
    pub fn dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    fn mine(&self, name: &str) -> bool {
        crc32fast::hash(name.as_bytes()) as usize % self.parallelism.max(1) == self.instance
    }

    /// Lists this instance's files with unread bytes (or, bounded, bytes
    /// below their first-listed size).
    fn list(&mut self) -> Result<(), OperatorError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            OperatorError::new(format!("dir source: listing {}: {e}", self.dir.display()))
        })?;
        let mut found = BTreeMap::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.starts_with('_') || !self.mine(&name) {
                continue;
            }
            match entry.metadata() {
                Ok(md) if md.is_file() => {
                    found.insert(name, md.len());
                }
                _ => {}
            }
        }
        if self.bounded && self.end.is_none() {
            self.end = Some(found.clone());
        }
        let limit = self.end.clone();
        self.due = found
            .into_iter()
            .filter_map(|(name, size)| {
                let size = match &limit {
                    Some(end) => size.min(*end.get(&name)?),
                    None => size,
                };
                let at = self.positions.get(&name).copied().unwrap_or(0);
                (size > at).then_some((name, size))
            })
            .collect();
        Ok(())
    }

    /// Reads complete rows of `name` from its position up to `size`,
    /// at most `max`; returns the rows read and whether the file has more
    /// complete rows below `size`.
    fn read_file(
        &mut self,
        name: &str,
        size: u64,
        out: &mut Vec<Record<T>>,
        max: usize,
    ) -> Result<bool, OperatorError> {
        let path = self.dir.join(name);
        let io = |e: std::io::Error| {
            OperatorError::new(format!("dir source: reading {}: {e}", path.display()))
        };
        let mut at = self.positions.get(name).copied().unwrap_or(0);
        let mut f = File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(at)).map_err(io)?;
        let mut reader = BufReader::with_capacity(64 * 1024, f.take(size - at));
        let mut line = Vec::new();
        let mut got = 0;
        while got < max {
            line.clear();
            let n = (&mut reader)
                .take(self.max_line_bytes as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io)?;
            if n == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            // A last row without its newline: still being written, unless
            // the read is bounded (the file is complete as listed).
            let unterminated = !complete && n <= self.max_line_bytes;
            if unterminated && !self.bounded {
                break;
            }
            let start = at;
            if !complete && !unterminated {
                // Too long: skip to the end of the row, dead-letter it.
                let mut rest = Vec::new();
                let skipped = reader.read_until(b'\n', &mut rest).map_err(io)?;
                if rest.last() != Some(&b'\n') {
                    break; // its end is not written yet: retry later
                }
                at += (n + skipped) as u64;
                self.reject(
                    &path,
                    start,
                    &line,
                    format!("row longer than {} bytes", self.max_line_bytes),
                );
                got += 1;
                continue;
            }
            at += n as u64;
            let text = if complete { &line[..n - 1] } else { &line[..] };
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if self.skip_header && start == 0 {
                continue;
            }
            if text.is_empty() {
                continue;
            }
            match std::str::from_utf8(text) {
                Ok(s) => match (self.parse)(s) {
                    Ok(v) => out.push(Record::new(v)),
                    Err(e) => self.reject(&path, start, text, e),
                },
                Err(e) => self.reject(&path, start, text, format!("not UTF-8: {e}")),
            }
            got += 1;
        }
        self.positions.insert(name.to_string(), at);
        Ok(got >= max)
    }

    fn reject(&self, path: &Path, offset: u64, row: &[u8], error: String) {
        let origin = Origin::File {
            path: path.display().to_string(),
            offset,
        };
        self.dead_letters.push(
            &self.name,
            self.instance,
            DeadLetter::new(origin, error, row),
        );
    }
}

impl<T: Send + 'static> Source<T> for DirSource<T> {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.name = ctx.name.clone();
        self.instance = ctx.instance;
        self.parallelism = ctx.parallelism;
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            OperatorError::new(format!("dir source: creating {}: {e}", self.dir.display()))
        })?;
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        if self.due.is_empty() {
            if let Some(end) = &self.end {
                let done = end
                    .iter()
                    .all(|(name, size)| self.positions.get(name).is_some_and(|at| at >= size));
                if done {
                    return Ok(SourcePoll::Finished);
                }
            }
            let now = Instant::now();
            if self.next_listing.is_some_and(|t| now < t) {
                return Ok(SourcePoll::IdleUntil(self.next_listing.expect("checked")));
            }
            // Listings are at most one per interval: a file whose last row
            // is still being written is not re-read in a busy loop.
            self.list()?;
            let next = now + self.poll_interval;
            self.next_listing = Some(next);
            if self.due.is_empty() {
                if self.bounded {
                    return Ok(SourcePoll::Finished);
                }
                return Ok(SourcePoll::IdleUntil(next));
            }
        }
        let before = out.len();
        while out.len() - before < max {
            let Some((name, size)) = self.due.first().cloned() else {
                break;
            };
            let room = max - (out.len() - before);
            let more = self.read_file(&name, size, out, room)?;
            if !more {
                self.due.remove(0);
            }
        }
        match self.next_listing {
            // Only unfinished rows were found: wait for the next listing.
            Some(next) if out.len() == before && self.due.is_empty() => {
                Ok(SourcePoll::IdleUntil(next))
            }
            _ => Ok(SourcePoll::Ready),
        }
    }

    fn offset(&self) -> Vec<u8> {
        serde_json::to_vec(&self.positions).unwrap_or_default()
    }

    fn seek(&mut self, offset: &[u8]) -> Result<(), OperatorError> {
        self.positions = serde_json::from_slice(offset).map_err(|e| {
            OperatorError::new(format!(
                "dir source: the checkpointed positions do not decode: {e}"
            ))
        })?;
        self.due.clear();
        Ok(())
    }

    fn replayable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct Row {
        key: u64,
        name: String,
    }

    fn ctx() -> SourceContext {
        SourceContext {
            name: "files".into(),
            instance: 0,
            parallelism: 1,
        }
    }

    fn drain<T: Send + 'static>(s: &mut DirSource<T>) -> Vec<T> {
        let mut out = Vec::new();
        while let SourcePoll::Ready = s.poll_next(&mut out, 3).unwrap() {}
        out.into_iter().map(|r| r.value).collect()
    }

    #[test]
    fn json_lines_new_files_partial_rows_dead_letters_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new();
        let mut s = DirSource::<Row>::json_lines(dir.path())
            .poll_interval(Duration::ZERO)
            .dead_letters(dl.clone());
        s.open(&ctx()).unwrap();
        assert!(drain(&mut s).is_empty());
        std::fs::write(
            dir.path().join("a.json"),
            "{\"key\":1,\"name\":\"x\"}\nnot json\n\n{\"key\":2,\"name\":\"y\"}\n{\"key\":3,",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden"), "{\"key\":9,\"name\":\"h\"}\n").unwrap();
        let got = drain(&mut s);
        assert_eq!(got.iter().map(|r| r.key).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(dl.count(), 1);
        let letter = &dl.recent()[0];
        assert_eq!(
            letter.origin,
            Origin::File {
                path: dir.path().join("a.json").display().to_string(),
                offset: 21
            }
        );
        let checkpoint = s.offset();
        // The partial row completes; a new file appears.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("a.json"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"\"name\":\"z\"}\n").unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"key\":4,\"name\":\"w\"}\n").unwrap();
        assert_eq!(
            drain(&mut s).iter().map(|r| r.key).collect::<Vec<_>>(),
            vec![3, 4]
        );
        // A restart from the checkpoint reads exactly what came after it.
        let mut r = DirSource::<Row>::json_lines(dir.path()).poll_interval(Duration::ZERO);
        r.open(&ctx()).unwrap();
        r.seek(&checkpoint).unwrap();
        assert_eq!(
            drain(&mut r).iter().map(|r| r.key).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(r.seek(b"garbage").is_err());
    }

    #[test]
    fn csv_with_header_bounded_and_split_over_instances() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            std::fs::write(
                dir.path().join(format!("part-{i}.csv")),
                format!("key,name\n{i},\"a, b\"\nnot-a-key,x\n{},c", i + 10),
            )
            .unwrap();
        }
        let mut all = Vec::new();
        let dl = DeadLetters::new();
        for instance in 0..2 {
            let mut s = DirSource::<Row>::csv(dir.path())
                .skip_header()
                .bounded()
                .dead_letters(dl.clone());
            s.open(&SourceContext {
                instance,
                parallelism: 2,
                ..ctx()
            })
            .unwrap();
            all.extend(drain(&mut s));
            let mut out = Vec::new();
            assert_eq!(s.poll_next(&mut out, 10).unwrap(), SourcePoll::Finished);
        }
        all.sort_by_key(|r| r.key);
        assert_eq!(
            all.iter().map(|r| r.key).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
        );
        assert_eq!(all[0].name, "a, b");
        // One malformed row per file: a dead letter naming file and offset.
        assert_eq!(dl.count(), 6);
        for l in dl.recent() {
            let Origin::File { path, offset } = &l.origin else {
                panic!("{l:?}")
            };
            assert!(path.ends_with(".csv") && *offset > 0, "{l:?}");
            assert_eq!(l.payload, "not-a-key,x");
        }
    }
}
