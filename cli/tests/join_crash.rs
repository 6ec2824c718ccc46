//! An exactly-once interval join under real crashes: a child process runs
//! generator (event time, disorder within the bound) -> split into readings
//! and alerts -> key_by -> full outer interval join (RocksDB state, buffered
//! rows and their timers) -> exactly-once file sink, checkpointing every
//! 100 ms; the test SIGKILLs it at random moments, restarts it each time,
//! lets the last run finish and compares the committed output with the
//! batch join: every pair and every outer row exactly once, so no buffered
//! row was lost and no timer fired twice.
//!
//! `EDDY_CRASH_SEED` replays a run.

mod sigkill;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use eddy::prelude::*;
use eddy_cli::join_job::{join_is_alert, JOIN_EVENT_TIME, JOIN_LOWER_MS, JOIN_UPPER_MS};

/// 10 s of input at 20k records/s: more than the kills leave time for.
const LIMIT: u64 = 200_000;
const KEYS: u64 = 50;

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
            "join",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the eddy binary")
}

type Pair = (Option<u64>, Option<u64>);

/// The batch full outer join, as (reading seq, alert seq) rows.
fn expected() -> BTreeMap<Pair, usize> {
    let mut readings: BTreeMap<u64, Vec<(i64, u64)>> = BTreeMap::new();
    let mut alerts: BTreeMap<u64, Vec<(i64, u64)>> = BTreeMap::new();
    for seq in 0..LIMIT {
        let e = GenEvent::generate(seq, KEYS, 0);
        let row = (JOIN_EVENT_TIME.timestamp(seq), seq);
        if join_is_alert(seq) {
            alerts.entry(e.key).or_default().push(row);
        } else {
            readings.entry(e.key).or_default().push(row);
        }
    }
    let mut want = BTreeMap::new();
    let mut alert_matched = std::collections::BTreeSet::new();
    for (key, rs) in &readings {
        let empty = Vec::new();
        let as_ = alerts.get(key).unwrap_or(&empty);
        for &(tr, r) in rs {
            let mut matched = false;
            for &(ta, a) in as_ {
                if ta >= tr + JOIN_LOWER_MS && ta <= tr + JOIN_UPPER_MS {
                    *want.entry((Some(r), Some(a))).or_insert(0) += 1;
                    alert_matched.insert(a);
                    matched = true;
                }
            }
            if !matched {
                *want.entry((Some(r), None)).or_insert(0) += 1;
            }
        }
    }
    for a in alerts.values().flatten() {
        if !alert_matched.contains(&a.1) {
            *want.entry((None, Some(a.1))).or_insert(0) += 1;
        }
    }
    want
}

fn parse(line: &str) -> Pair {
    let side = |s: &str| (s != "-").then(|| s.parse::<u64>().expect("a sequence number"));
    let (r, a) = line.split_once(',').expect("reading,alert");
    (side(r), side(a))
}

#[test]
fn sigkill_never_loses_or_repeats_a_joined_row() {
    let kills = 20;
    let mut rng = sigkill::seed(&format!("join crash test, {kills} kills"));
    let dir = tempfile::tempdir().unwrap();
    sigkill::kill_then_finish(kills, &mut rng, || spawn(dir.path()));
    let mut got: BTreeMap<Pair, usize> = BTreeMap::new();
    for l in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        *got.entry(parse(&l)).or_insert(0) += 1;
    }
    let want = expected();
    let pairs = want
        .keys()
        .filter(|(r, a)| r.is_some() && a.is_some())
        .count();
    assert!(pairs > 10_000, "the input joins ({pairs} pairs)");
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows committed more than once: {twice:?}");
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "rows never committed: {missing:?}");
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "rows not in the batch join: {extra:?}");
    assert_eq!(got, want);
}
