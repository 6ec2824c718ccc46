//! Exactly-once end to end through Kafka under real crashes: a child `eddy
//! kafka-count` reads a 4-partition topic at parallelism 2, counts per key
//! and writes every update to an exactly-once topic and to an at-least-once
//! topic, checkpointing every 100 ms. While the test produces the input,
//! the child is SIGKILLed at random moments, and some runs abort at the
//! sink's test-only fault point, between "manifest durable" and
//! "transaction committed". A last run reads to the end. A `read_committed`
//! consumer of the exactly-once topic must see exactly the batch answer;
//! the at-least-once topic must hold every update, and some twice (so the
//! test can tell the two apart). Malformed input lines are dead letters.
//!
//! `EDDY_CRASH_SEED` replays a run's kill timings; `EDDY_KAFKA_KILLS` sets
//! the number of SIGKILLs (default 20).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::connectors::kafka::admin::{self, Isolation};
use eddy::connectors::kafka::FAULT_AT_COMMIT_ENV;
use eddy::connectors::{DeadLetters, Origin, ProducerRecord};
use rand::{Rng, SeedableRng};

mod kafka_support;
use kafka_support::Broker;

const T: Duration = Duration::from_secs(30);
/// Input lines per chunk; a chunk every `CHUNK_EVERY` until the kill
/// phase ends (so every run, fault runs included, sees input arrive).
const CHUNK: u64 = 500;
const CHUNK_EVERY: Duration = Duration::from_millis(100);
/// Bound on the input, whatever the kill phase's length.
const MAX_RECORDS: u64 = 200_000;
const KEYS: u64 = 64;
/// Every this many input lines, one is malformed.
const BAD_EVERY: u64 = 1_000;
/// Runs that end at the fault point instead of a SIGKILL.
const FAULT_RUNS: usize = 4;

fn line(seq: u64) -> ProducerRecord {
    let key = (seq * 7919) % KEYS;
    if seq % BAD_EVERY == BAD_EVERY - 1 {
        ProducerRecord::keyed(key.to_string(), format!("malformed {seq}"))
    } else {
        ProducerRecord::keyed(key.to_string(), format!("{key},{seq}"))
    }
}

fn expected(records: u64) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for seq in (0..records).filter(|s| s % BAD_EVERY != BAD_EVERY - 1) {
        *m.entry((seq * 7919) % KEYS).or_default() += 1;
    }
    m
}

fn spawn(brokers: &str, dir: &Path, bounded: bool, fault_at: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["--threads", "2", "kafka-count", "--brokers", brokers])
        .args([
            "--input",
            "in",
            "--output",
            "eo",
            "--at-least-once-output",
            "alo",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--parallelism", "2", "--interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bounded {
        cmd.arg("--bounded");
    }
    match fault_at {
        Some(n) => cmd.env(FAULT_AT_COMMIT_ENV, n.to_string()),
        None => cmd.env_remove(FAULT_AT_COMMIT_ENV),
    };
    cmd.spawn().expect("spawn the eddy binary")
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    err
}

/// Per key, the count updates in output order.
fn updates(brokers: &str, topic: &str) -> BTreeMap<u64, Vec<u64>> {
    let mut m: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in admin::read_topic(brokers, topic, Isolation::ReadCommitted, T).unwrap() {
        let v = r.value_lossy();
        let (k, c) = v.split_once(',').expect("key,count");
        m.entry(k.parse().unwrap())
            .or_default()
            .push(c.parse().unwrap());
    }
    m
}

#[test]
fn sigkill_at_random_moments_and_between_manifest_and_commit() {
    let kills: usize = std::env::var("EDDY_KAFKA_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("kafka crash test seed {seed} (EDDY_CRASH_SEED={seed} replays it), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let broker = Broker::start();
    let b = broker.bootstrap();
    admin::create_topic(&b, "in", 4, T).unwrap();
    admin::create_topic(&b, "eo", 4, T).unwrap();
    admin::create_topic(&b, "alo", 4, T).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The input arrives while the query is being killed: a chunk of lines
    // every CHUNK_EVERY until the kill phase ends.
    let runs = kills + FAULT_RUNS;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let prod = admin::PlainProducer::new(&b, "in").unwrap();
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) && next < MAX_RECORDS {
                for seq in next..next + CHUNK {
                    prod.send(&line(seq)).unwrap();
                }
                prod.flush(T).unwrap();
                next += CHUNK;
                std::thread::sleep(CHUNK_EVERY);
            }
            next
        })
    };

    // Runs that end at the fault point are spread among the SIGKILLed ones.
    let fault_runs: BTreeSet<usize> = (0..FAULT_RUNS)
        .map(|i| 2 + i * (runs / FAULT_RUNS))
        .collect();
    let (mut killed, mut faulted) = (0, 0);
    for i in 0..runs {
        if fault_runs.contains(&i) {
            let n = rng.random_range(1..=4);
            let mut child = spawn(&b, dir.path(), false, Some(n));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let err = stderr_of(&mut child);
                    assert!(
                        err.contains(FAULT_AT_COMMIT_ENV),
                        "run {i} ended other than at the fault point ({status}): {err}"
                    );
                    faulted += 1;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "run {i} never reached commit {n}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let mut child = spawn(&b, dir.path(), false, None);
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
            Some(status) => {
                panic!(
                    "run {i} ended by itself ({status}): {}",
                    stderr_of(&mut child)
                )
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let records = producer.join().unwrap();
    println!("{records} input lines");
    assert_eq!((killed, faulted), (kills, FAULT_RUNS));

    let child = spawn(&b, dir.path(), true, None);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("restored from Some("), "{stdout}");

    // Exactly once: per key, the updates are 1, 2, ..., n.
    let expected = expected(records);
    let eo = updates(&b, "eo");
    assert_eq!(eo.len(), expected.len(), "keys in the exactly-once output");
    for (k, n) in &expected {
        assert_eq!(eo[k], (1..=*n).collect::<Vec<_>>(), "key {k} (seed {seed})");
    }

    // At least once: every update is there, and the crashes duplicated some.
    let alo = updates(&b, "alo");
    let mut duplicates = 0;
    for (k, n) in &expected {
        let seen: BTreeSet<u64> = alo[k].iter().copied().collect();
        assert_eq!(seen, (1..=*n).collect(), "key {k}: an update is missing");
        duplicates += alo[k].len() - seen.len();
    }
    println!("at-least-once output: {duplicates} duplicate updates");
    assert!(duplicates > 0, "the at-least-once topic shows no duplicate");

    // Dead letters: every malformed line, with its origin (replays may
    // refuse a line again: at-least-once, identified by origin).
    let letters = DeadLetters::read_file(&dir.path().join("dead-letters.jsonl")).unwrap();
    let origins: BTreeSet<(i32, i64)> = letters
        .iter()
        .map(|l| match &l.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } if topic == "in" => (*partition, *offset),
            other => panic!("unexpected origin {other:?}"),
        })
        .collect();
    assert_eq!(
        origins.len() as u64,
        records / BAD_EVERY,
        "distinct dead letters"
    );
    assert!(letters.iter().all(|l| l.payload.starts_with("malformed")));
    assert!(stdout.contains("dead letters"), "{stdout}");
}
