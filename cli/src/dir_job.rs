//! The directory job of the CLI and the directory-source crash test: JSON
//! lines `{"key": k, "seq": s}` from the files of a directory -> key_by(key)
//! -> running count -> `key,count` lines into an exactly-once file sink.
//! Rows that do not decode are dead letters.

use std::path::PathBuf;

use serde::Deserialize;

use eddy::connectors::{DeadLetters, DirSource};
use eddy::prelude::*;

/// One input row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct KeySeq {
    /// The key.
    pub key: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// Builds the job reading `input` and writing into `dir/out`; dead letters
/// go to `dir/dead-letters.jsonl`. Returns the dead-letter handle.
pub fn dir_count(
    pipeline: &Pipeline,
    input: PathBuf,
    dir: PathBuf,
    parallelism: usize,
    bounded: bool,
) -> DeadLetters {
    let dead = DeadLetters::to_file(dir.join("dead-letters.jsonl"));
    let mut source = DirSource::<KeySeq>::json_lines(input).dead_letters(dead.clone());
    if bounded {
        source = source.bounded();
    }
    pipeline
        .source("files-in", source)
        .set_parallelism(parallelism)
        .key_by(|r: &KeySeq| r.key)
        .count()
        .set_parallelism(parallelism)
        .sink(
            "files-out",
            FileSink::new(dir.join("out"), Delivery::ExactlyOnce, |r: &(u64, u64)| {
                format!("{},{}", r.0, r.1)
            }),
        )
        .set_parallelism(parallelism);
    dead
}
