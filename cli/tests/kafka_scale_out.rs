//! Scale-out by partitions: two `eddy kafka-count` processes share a
//! 4-partition input topic (`--process k --processes 2`, each with its own
//! checkpoint directory and transactional ids) and write one exactly-once
//! output topic. Each is SIGKILLed and restarted on its own while the other
//! keeps running; at the end a `read_committed` reader of the output sees
//! exactly the batch answer.
//!
//! `EDDY_CRASH_SEED` replays a run's timings.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eddy::connectors::kafka::admin::{self, Isolation};
use eddy::connectors::ProducerRecord;
use rand::{Rng, SeedableRng};

mod kafka_support;
use kafka_support::Broker;

const T: Duration = Duration::from_secs(30);
const RECORDS: u64 = 20_000;
const KEYS: u64 = 50;
const ROUNDS: usize = 8;

fn spawn(brokers: &str, dir: &Path, process: usize, bounded: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["--threads", "1", "kafka-count", "--brokers", brokers])
        .args(["--input", "in", "--output", "eo"])
        .arg("--dir")
        .arg(dir)
        .args(["--parallelism", "1", "--interval-ms", "100"])
        .args(["--process", &process.to_string(), "--processes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bounded {
        cmd.arg("--bounded");
    }
    cmd.spawn().expect("spawn the eddy binary")
}

fn kill(mut child: Child, what: &str) {
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what} ended by itself"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn two_processes_share_a_topic_and_recover_on_their_own() {
    let seed: u64 = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("scale-out test seed {seed} (EDDY_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let broker = Broker::start();
    let b = broker.bootstrap();
    admin::create_topic(&b, "in", 4, T).unwrap();
    admin::create_topic(&b, "eo", 4, T).unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];

    let producer = {
        let b = b.clone();
        std::thread::spawn(move || {
            let chunks = 2 * ROUNDS as u64;
            let per = RECORDS.div_ceil(chunks);
            for c in 0..chunks {
                let lines = (c * per..((c + 1) * per).min(RECORDS)).map(|seq| {
                    let key = (seq * 7919) % KEYS;
                    ProducerRecord::keyed(key.to_string(), format!("{key},{seq}"))
                });
                admin::produce(&b, "in", lines, T).unwrap();
                std::thread::sleep(Duration::from_millis(120));
            }
        })
    };
    let mut running = [
        spawn(&b, dirs[0].path(), 0, false),
        spawn(&b, dirs[1].path(), 1, false),
    ];
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..700)));
        let k = round % 2;
        let fresh = spawn(&b, dirs[k].path(), k, false);
        kill(
            std::mem::replace(&mut running[k], fresh),
            &format!("process {k}"),
        );
    }
    producer.join().unwrap();
    let [p0, p1] = running;
    kill(p0, "process 0");
    kill(p1, "process 1");

    let last = [
        spawn(&b, dirs[0].path(), 0, true),
        spawn(&b, dirs[1].path(), 1, true),
    ];
    for (k, child) in last.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("restored from Some("),
            "process {k}: {stdout}"
        );
    }

    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for seq in 0..RECORDS {
        *expected.entry((seq * 7919) % KEYS).or_default() += 1;
    }
    let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in admin::read_topic(&b, "eo", Isolation::ReadCommitted, T).unwrap() {
        let v = r.value_lossy();
        let (k, c) = v.split_once(',').unwrap();
        got.entry(k.parse().unwrap())
            .or_default()
            .push(c.parse().unwrap());
    }
    assert_eq!(got.len(), expected.len(), "keys in the output");
    for (k, n) in &expected {
        assert_eq!(
            got[k],
            (1..=*n).collect::<Vec<_>>(),
            "key {k} (seed {seed})"
        );
    }
}
