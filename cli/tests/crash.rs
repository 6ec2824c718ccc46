//! Exactly-once under real crashes: a child process runs generator ->
//! key_by -> running count and sum -> exactly-once file sink, checkpointing
//! every 100 ms; the test kills it with SIGKILL at random moments, restarts
//! it each time, lets the last run finish, and compares the committed output
//! with the batch answer: no record lost, none counted twice.
//!
//! `EDDY_CRASH_SEED` replays a run; `EDDY_CRASH_KILLS` sets the number of
//! kills (the ignored soak test uses hundreds).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy::prelude::*;
use rand::{Rng, SeedableRng};

/// 10 s of input at 20k records/s: more than the kills leave time for.
const LIMIT: u64 = 200_000;
const KEYS: u64 = 50;

fn spawn(dir: &Path, rocksdb: bool, trigger_ms: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["--threads", "2", "totals", "--dir"])
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
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if rocksdb {
        cmd.arg("--rocksdb");
    }
    if let Some(ms) = trigger_ms {
        cmd.args(["--trigger-ms", &ms.to_string()]);
    }
    cmd.spawn().expect("spawn the eddy binary")
}

fn expected() -> BTreeMap<u64, (u64, u64)> {
    let mut m: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for seq in 0..LIMIT {
        let e = GenEvent::generate(seq, KEYS, 0);
        let t = m.entry(e.key).or_default();
        t.0 += 1;
        t.1 += e.value;
    }
    m
}

/// Checks the committed lines: per key, the counts are exactly 1, 2, ..., n
/// in commit order (nothing lost, nothing twice) and the last line holds the
/// batch totals.
fn check_output(dir: &Path) {
    let lines = FileSink::<()>::read_committed(&dir.join("out")).unwrap();
    let mut per_key: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for l in &lines {
        let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        per_key.entry(f[0]).or_default().push((f[1], f[2]));
    }
    let expected = expected();
    assert_eq!(per_key.len(), expected.len(), "keys in the output");
    for (k, updates) in &per_key {
        for (i, (count, _)) in updates.iter().enumerate() {
            assert_eq!(
                *count,
                i as u64 + 1,
                "key {k}: update {i} has count {count}"
            );
        }
        assert_eq!(
            updates.last().copied(),
            expected.get(k).copied(),
            "key {k} totals"
        );
    }
    assert_eq!(lines.len() as u64, LIMIT, "one committed update per record");
}

fn run_with_kills(kills: usize, rocksdb: bool, trigger_ms: Option<u64>) {
    let seed: u64 = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (EDDY_CRASH_SEED={seed} replays it), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut killed = 0;
    for i in 0..kills {
        let mut child = spawn(dir.path(), rocksdb, trigger_ms);
        let delay = Duration::from_millis(rng.random_range(100..600));
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
            Some(status) => {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("run {i} ended by itself before its kill ({status}): {err}");
            }
        }
    }
    assert_eq!(
        killed, kills,
        "every run was killed before the input ran out"
    );
    let child = spawn(dir.path(), rocksdb, trigger_ms);
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = child.wait_with_output().unwrap();
    assert!(Instant::now() < deadline, "the final run did not finish");
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("restored from Some("),
        "the final run restored a checkpoint: {stdout}"
    );
    check_output(dir.path());
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills = std::env::var("EDDY_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    run_with_kills(kills, false, None);
}

#[test]
fn sigkill_with_rocksdb_state() {
    run_with_kills(20, true, None);
}

#[test]
#[ignore = "soak: hundreds of kills, minutes"]
fn soak_hundreds_of_kills() {
    run_with_kills(300, true, None);
}

#[test]
fn sigkill_with_a_micro_batch_trigger() {
    run_with_kills(20, true, Some(50));
}
