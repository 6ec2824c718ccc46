//! Exactly-once keyed state with timers under real crashes: a child
//! process runs generator (event time with disorder and late records) ->
//! key_by -> keyed process sessioniser (list state, one event-time timer
//! per open session, `eddy_cli::jobs::Sessionizer`) -> exactly-once file sink,
//! RocksDB state, checkpointing every 100 ms; the test SIGKILLs it at
//! random moments, restarts it each time, lets the last run finish and
//! compares the committed sessions with the batch sessionisation: every
//! session committed exactly once with its exact count, sum and max, so no
//! record was lost or counted twice and no timer was lost or fired twice.
//!
//! `EDDY_CRASH_SEED` replays a run.

mod sigkill;
mod window_model;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use eddy::prelude::*;
use eddy_cli::jobs::{SESSION_GAP_MS, WINDOWED_BOUND_MS, WINDOWED_EVENT_TIME};
use window_model::{answer, Event, Spec};

/// 10 s of input at 20k records/s: more than the kills leave time for.
const LIMIT: u64 = 200_000;
/// Each key gets a record every 50 ms on average: with a 100 ms gap,
/// sessions of a few records, ending all the time.
const KEYS: u64 = 1_000;

fn spawn(dir: &Path) -> Child {
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
            "sessions",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the eddy binary")
}

type Session = (u64, i64, i64);

fn expected() -> BTreeMap<Session, (u64, u64, u64)> {
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
        0,
        Spec::Session(SESSION_GAP_MS),
    );
    assert!(!a.late.is_empty(), "the input has late records");
    a.rows
}

#[test]
fn sigkill_never_loses_or_repeats_a_session_or_a_timer() {
    let kills = 20;
    let mut rng = sigkill::seed(&format!("process crash test, {kills} kills"));
    let dir = tempfile::tempdir().unwrap();
    sigkill::kill_then_finish(kills, &mut rng, || spawn(dir.path()));
    let mut got: BTreeMap<Session, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for l in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        let f: Vec<i64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        got.entry((f[0] as u64, f[1], f[2])).or_default().push((
            f[3] as u64,
            f[4] as u64,
            f[5] as u64,
        ));
    }
    let want = expected();
    println!("{} sessions committed, {} expected", got.len(), want.len());
    let missing: Vec<_> = want
        .keys()
        .filter(|s| !got.contains_key(s))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|s| !want.contains_key(s))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "sessions committed: {} of {}; missing {missing:?}, unexpected {extra:?}",
        got.len(),
        want.len()
    );
    for (s, rows) in &got {
        assert_eq!(
            rows,
            &vec![want[s]],
            "session {s:?}: committed exactly once"
        );
    }
}
