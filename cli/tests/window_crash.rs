//! Exactly-once event-time windows under real crashes: a child process runs
//! generator (event time with disorder and late records) -> key_by ->
//! 200 ms tumbling window count and sum -> exactly-once file sink,
//! checkpointing every 100 ms; the test SIGKILLs it at random moments,
//! restarts it each time, lets the last run finish and compares the
//! committed output with the batch answer. Append mode: every window result
//! committed exactly once. Update mode: the last committed row of every
//! window is its result.
//!
//! `EDDY_CRASH_SEED` replays a run.

mod sigkill;
mod window_model;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use eddy::prelude::*;
use eddy_cli::jobs::{
    WINDOWED_BOUND_MS, WINDOWED_EVENT_TIME, WINDOWED_LATENESS_MS, WINDOWED_SIZE_MS,
};
use window_model::{answer, Event, Spec};

/// 10 s of input at 20k records/s: more than the kills leave time for.
const LIMIT: u64 = 200_000;
const KEYS: u64 = 20;

fn spawn(dir: &Path, shape: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["--threads", "2", "totals", "--dir"])
        .arg(dir)
        .args([
            "--limit",
            &LIMIT.to_string(),
            "--rate",
            "20000",
            "--keys",
            &KEYS.to_string(),
            "--parallelism",
            "2",
            "--interval-ms",
            "100",
            "--rocksdb",
            "--shape",
            shape,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the eddy binary")
}

fn expected() -> BTreeMap<(u64, i64), (u64, u64)> {
    let events: Vec<Event> = (0..LIMIT)
        .map(|seq| {
            let e = GenEvent::generate(seq, KEYS, 0);
            Event {
                seq,
                key: e.key,
                value: e.value,
                ts: WINDOWED_EVENT_TIME.timestamp(seq),
            }
        })
        .collect();
    let a = answer(
        &events,
        WINDOWED_BOUND_MS as i64,
        WINDOWED_LATENESS_MS as i64,
        Spec::Tumbling(WINDOWED_SIZE_MS as i64),
    );
    assert!(!a.late.is_empty(), "the input has late records");
    a.rows
        .into_iter()
        .map(|((k, s, _), acc)| ((k, s), (acc.0, acc.1)))
        .collect()
}

fn run_with_kills(kills: usize, shape: &str) {
    let mut rng = sigkill::seed(&format!("window crash test, {kills} kills, {shape}"));
    let dir = tempfile::tempdir().unwrap();
    sigkill::kill_then_finish(kills, &mut rng, || spawn(dir.path(), shape));
    let mut got: BTreeMap<(u64, i64), Vec<(u64, u64)>> = BTreeMap::new();
    for l in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        let f: Vec<i64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        got.entry((f[0] as u64, f[1]))
            .or_default()
            .push((f[2] as u64, f[3] as u64));
    }
    let want = expected();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the windows committed"
    );
    for (w, rows) in &got {
        if shape == "windows-append" {
            assert_eq!(rows, &vec![want[w]], "window {w:?}: committed exactly once");
        } else {
            assert_eq!(rows.last(), Some(&want[w]), "window {w:?}: final value");
        }
    }
}

#[test]
fn sigkill_never_loses_or_repeats_a_window_result() {
    run_with_kills(20, "windows-append");
}

#[test]
fn sigkill_in_update_mode_ends_with_the_right_value_per_window() {
    run_with_kills(20, "windows-update");
}
