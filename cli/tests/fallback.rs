//! Recovery that falls back to an older checkpoint, with a sink that cannot
//! take committed output back (an append-only log, like a Kafka topic): the
//! start is refused with a typed error naming the damaged checkpoint and the
//! epochs at risk; with `accept_duplicates_on_fallback` it proceeds, and the
//! output is at-least-once (duplicates present, nothing lost).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::{BuildError, SinkContext};

mod common;
use common::runtime;

const LIMIT: u64 = 20_000;
const KEYS: u64 = 10;

/// Two-phase commit into an append-only log per instance: each epoch's
/// lines are staged in a file at the marker, and appended to `log-<i>.txt`
/// followed by a `#<epoch>` line at commit. Appended lines cannot be taken
/// back, so it cannot retract.
#[derive(Clone)]
struct AppendLogSink {
    dir: PathBuf,
    instance: usize,
    current: Vec<String>,
}

fn err(e: std::io::Error) -> OperatorError {
    OperatorError::new(e.to_string())
}

impl AppendLogSink {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            instance: 0,
            current: Vec::new(),
        }
    }

    fn log(&self, instance: usize) -> PathBuf {
        self.dir.join(format!("log-{instance}.txt"))
    }

    fn staged(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("staged-{}-{epoch:020}", self.instance))
    }

    fn staged_epochs(&self) -> Vec<u64> {
        let prefix = format!("staged-{}-", self.instance);
        let mut out: Vec<u64> = fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(&prefix)?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn last_committed(&self, instance: usize) -> Option<u64> {
        let text = fs::read_to_string(self.log(instance)).ok()?;
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix('#').and_then(|e| e.parse().ok()))
    }

    fn commit_through(&mut self, epoch: u64) -> Result<(), OperatorError> {
        let done = self.last_committed(self.instance).unwrap_or(0);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(self.instance))
            .map_err(err)?;
        for e in self.staged_epochs().into_iter().filter(|&e| e <= epoch) {
            if e > done {
                let lines = fs::read_to_string(self.staged(e)).map_err(err)?;
                writeln!(log, "{lines}#{e}").map_err(err)?;
                log.sync_data().map_err(err)?;
            }
            fs::remove_file(self.staged(e)).map_err(err)?;
        }
        Ok(())
    }

    /// Every committed line of every instance (without the epoch lines).
    fn read(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..2 {
            if let Ok(text) = fs::read_to_string(dir.join(format!("log-{i}.txt"))) {
                out.extend(
                    text.lines()
                        .filter(|l| !l.starts_with('#'))
                        .map(String::from),
                );
            }
        }
        out
    }
}

impl Sink<(u64, u64)> for AppendLogSink {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), OperatorError> {
        self.instance = ctx.instance;
        fs::create_dir_all(&self.dir).map_err(err)
    }

    fn write(&mut self, records: Vec<Record<(u64, u64)>>) -> Result<(), OperatorError> {
        self.current.extend(
            records
                .iter()
                .map(|r| format!("{},{}", r.value.0, r.value.1)),
        );
        Ok(())
    }

    fn on_marker(&mut self, epoch: u64) -> Result<Vec<u8>, OperatorError> {
        let mut text = String::new();
        for l in self.current.drain(..) {
            text.push_str(&l);
            text.push('\n');
        }
        let mut f = fs::File::create(self.staged(epoch)).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)?;
        Ok(Vec::new())
    }

    fn commit(&mut self, epoch: u64) -> Result<(), OperatorError> {
        self.commit_through(epoch)
    }

    fn restore(&mut self, restored: Option<(u64, &[u8])>) -> Result<(), OperatorError> {
        let r = restored.map_or(0, |(e, _)| e);
        self.commit_through(r)?;
        for e in self.staged_epochs() {
            fs::remove_file(self.staged(e)).map_err(err)?;
        }
        Ok(())
    }

    fn visible_at_commit(&self) -> bool {
        true
    }

    fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
        Ok(self.last_committed(ctx.instance))
    }
}

fn pipeline(dir: &Path, accept_duplicates: bool) -> Pipeline {
    let mut ckpt = CheckpointConfig::new(dir.join("checkpoints"));
    ckpt.accept_duplicates_on_fallback = accept_duplicates;
    // Keep every checkpoint, so the test can fall back to one in the middle
    // of the input.
    ckpt.retain = 1_000;
    let p = Pipeline::with_config(PipelineConfig {
        batch_size: 16,
        channel_capacity: 4,
        checkpoint: Some(ckpt),
        trigger: Trigger::continuous(Duration::from_millis(10)),
        ..Default::default()
    });
    p.source(
        "gen",
        GeneratorSource::new(GeneratorConfig {
            key_space: KEYS,
            limit: Some(LIMIT),
            rate_per_sec: Some(50_000),
            ..Default::default()
        }),
    )
    .set_parallelism(2)
    .key_by(|e: &GenEvent| e.key)
    .count()
    .set_parallelism(2)
    .sink("log", AppendLogSink::new(&dir.join("out")))
    .set_parallelism(2);
    p
}

/// Per key, every count the log holds, in order.
fn counts(dir: &Path) -> BTreeMap<u64, Vec<u64>> {
    let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in AppendLogSink::read(&dir.join("out")) {
        let (k, n) = line.split_once(',').unwrap();
        got.entry(k.parse().unwrap())
            .or_default()
            .push(n.parse().unwrap());
    }
    got
}

fn totals() -> BTreeMap<u64, u64> {
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for seq in 0..LIMIT {
        *expected
            .entry(GenEvent::generate(seq, KEYS, 0).key)
            .or_default() += 1;
    }
    expected
}

#[test]
fn a_sink_that_cannot_retract_refuses_the_fallback_unless_duplicates_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let first = rt.block_on(async {
        let mut q = pipeline(dir.path(), false).start().unwrap();
        q.await_termination().await.unwrap();
        q.checkpoint_stats().unwrap()
    });
    assert!(first.completed >= 2, "need two checkpoints: {first:?}");
    // The first run is exactly once.
    let expected = totals();
    let got = counts(dir.path());
    for (k, n) in &expected {
        assert_eq!(got[k], (1..=*n).collect::<Vec<_>>(), "key {k}");
    }

    // Damage every checkpoint after one in the middle of the input: their
    // epochs are committed in the log.
    let newest = first.last_completed_epoch.unwrap();
    let manifests = dir.path().join("checkpoints/manifests");
    let mut epochs: Vec<u64> = fs::read_dir(&manifests)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("chk-")?
                .strip_suffix(".manifest")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    assert!(epochs.len() >= 4, "{epochs:?}");
    let fallback = epochs[epochs.len() / 2];
    let manifest = manifests.join(format!("chk-{newest:020}.manifest"));
    for &e in epochs.iter().filter(|&&e| e > fallback) {
        let path = manifests.join(format!("chk-{e:020}.manifest"));
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    }

    // Refused, naming the damaged manifest and the epochs at risk; nothing
    // was touched.
    let refused = rt.block_on(async { pipeline(dir.path(), false).start().map(|_| ()) });
    match refused {
        Err(BuildError::RecoveryWouldDuplicate {
            sink,
            committed_epoch,
            restored_epoch,
            skipped,
            ..
        }) => {
            assert_eq!(sink, "log");
            assert_eq!(committed_epoch, newest);
            assert_eq!(restored_epoch, Some(fallback));
            let name = manifest.file_name().unwrap().to_string_lossy().to_string();
            assert!(skipped.iter().any(|s| s.contains(&name)), "{skipped:?}");
        }
        other => panic!("expected RecoveryWouldDuplicate, got {other:?}"),
    }
    assert_eq!(counts(dir.path()), got, "a refused start changes nothing");

    // Accepted: the start proceeds; the replay commits the epochs after the
    // fallback checkpoint a second time. Nothing is lost, and duplicates
    // are present: the output is at-least-once, as accepted.
    let second = rt.block_on(async {
        let mut q = pipeline(dir.path(), true).start().unwrap();
        q.await_termination().await.unwrap();
        q.checkpoint_stats().unwrap()
    });
    let report = second.recovery.expect("a recovery report");
    assert!(report.at_least_once(), "{report:?}");
    let got = counts(dir.path());
    let mut duplicates = 0;
    for (k, n) in &expected {
        let seen: BTreeSet<u64> = got[k].iter().copied().collect();
        assert_eq!(
            seen,
            (1..=*n).collect::<BTreeSet<_>>(),
            "key {k}: nothing lost"
        );
        assert_eq!(got[k].last(), Some(n), "key {k} ends at its total");
        duplicates += got[k].len() as u64 - n;
    }
    assert!(duplicates > 0, "the fallback replayed committed epochs");
}
