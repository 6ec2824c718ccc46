//! The directory source under real crashes: a child `eddy dir-count` reads
//! JSON lines from a directory where the test keeps adding files (written
//! in pieces, rows split across writes), counts per key into an
//! exactly-once file sink, and is SIGKILLed at random moments; a last run
//! reads to the end. Every key's committed updates must be exactly
//! 1, 2, ..., n: no row read twice or skipped. Malformed rows are dead
//! letters with their file and offset.
//!
//! `EDDY_CRASH_SEED` replays a run's timings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eddy::connectors::{DeadLetters, Origin};
use eddy::prelude::*;
use rand::{Rng, SeedableRng};

const FILES: u64 = 30;
const ROWS_PER_FILE: u64 = 400;
const KEYS: u64 = 37;
const BAD_EVERY: u64 = 499;
const KILLS: usize = 12;

fn row(seq: u64) -> String {
    if seq % BAD_EVERY == BAD_EVERY - 1 {
        format!("{{\"key\": \"oops\", \"seq\": {seq}}}\n")
    } else {
        format!("{{\"key\":{},\"seq\":{seq}}}\n", (seq * 31) % KEYS)
    }
}

fn spawn(input: &Path, dir: &Path, bounded: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["--threads", "2", "dir-count", "--input"])
        .arg(input)
        .arg("--dir")
        .arg(dir)
        .args(["--parallelism", "2", "--interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bounded {
        cmd.arg("--bounded");
    }
    cmd.spawn().expect("spawn the eddy binary")
}

#[test]
fn files_added_while_running_are_read_once_across_sigkills() {
    let seed: u64 = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("dir source crash test seed {seed} (EDDY_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let input = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Files appear while the query runs, each written in three pieces cut
    // at arbitrary bytes (so rows are split across writes).
    let writer = {
        let input = input.path().to_path_buf();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
        std::thread::spawn(move || {
            for f in 0..FILES {
                let text: String = (f * ROWS_PER_FILE..(f + 1) * ROWS_PER_FILE)
                    .map(row)
                    .collect();
                let bytes = text.as_bytes();
                let a = rng.random_range(1..bytes.len() / 2);
                let b = rng.random_range(a..bytes.len());
                let mut file =
                    std::fs::File::create(input.join(format!("rows-{f:04}.json"))).unwrap();
                for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    file.write_all(piece).unwrap();
                    file.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        })
    };
    for i in 0..KILLS {
        let mut child = spawn(input.path(), dir.path(), false);
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "run {i} ended by itself"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    writer.join().unwrap();

    let out = spawn(input.path(), dir.path(), true)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("restored from Some("), "{stdout}");

    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    let mut bad = 0;
    for seq in 0..FILES * ROWS_PER_FILE {
        if seq % BAD_EVERY == BAD_EVERY - 1 {
            bad += 1;
        } else {
            *expected.entry((seq * 31) % KEYS).or_default() += 1;
        }
    }
    let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for l in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        let (k, c) = l.split_once(',').unwrap();
        got.entry(k.parse().unwrap())
            .or_default()
            .push(c.parse().unwrap());
    }
    assert_eq!(got.len(), expected.len());
    for (k, n) in &expected {
        assert_eq!(
            got[k],
            (1..=*n).collect::<Vec<_>>(),
            "key {k} (seed {seed})"
        );
    }

    let letters = DeadLetters::read_file(&dir.path().join("dead-letters.jsonl")).unwrap();
    let origins: BTreeSet<(String, u64)> = letters
        .iter()
        .map(|l| match &l.origin {
            Origin::File { path, offset } => (path.clone(), *offset),
            other => panic!("unexpected origin {other:?}"),
        })
        .collect();
    assert_eq!(origins.len(), bad, "distinct dead letters");
    assert!(letters.iter().all(|l| l.payload.contains("oops")));
}
