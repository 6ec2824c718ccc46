//! Epoch checkpoints in one process: alignment through a shuffle and a union,
//! recovery from the newest valid checkpoint, failed checkpoints that do not
//! stop processing, and plans the store refuses.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::BuildError;

mod common;
use common::runtime;

fn config(dir: &Path, interval_ms: u64) -> PipelineConfig {
    PipelineConfig {
        batch_size: 16,
        channel_capacity: 4,
        checkpoint: Some(CheckpointConfig::new(dir.join("checkpoints"))),
        trigger: Trigger::continuous(Duration::from_millis(interval_ms)),
        ..Default::default()
    }
}

/// Two sources (one at parallelism 2) unioned, shuffled by key into a count
/// at parallelism 2, into an exactly-once file sink: every task with several
/// inputs aligns markers.
#[test]
fn union_and_shuffle_align_markers_and_commit_the_exact_answer() {
    let dir = tempfile::tempdir().unwrap();
    let words: Vec<String> = (0..20_000)
        .map(|i| format!("w{}", (i * 7919) % 97))
        .collect();
    let more: Vec<String> = (0..5_000).map(|i| format!("w{}", i % 13)).collect();
    let stats = runtime().block_on(async {
        let p = Pipeline::with_config(config(dir.path(), 5));
        p.source("words", VecSource::new(words.clone()))
            .set_parallelism(2)
            .union(p.source("more", VecSource::new(more.clone())))
            .key_by(|w: &String| w.clone())
            .count()
            .set_parallelism(2)
            .sink(
                "files",
                FileSink::new(
                    dir.path().join("out"),
                    Delivery::ExactlyOnce,
                    |r: &(String, u64)| format!("{},{}", r.0, r.1),
                ),
            )
            .set_parallelism(2);
        let mut q = p.start().unwrap();
        q.await_termination().await.unwrap();
        (q.checkpoint_stats().unwrap(), q.progress())
    });
    let (ckpt, progress) = stats;
    assert!(ckpt.completed >= 1, "{ckpt:?}");
    assert_eq!(ckpt.failed, 0, "{ckpt:?}");
    assert!(progress.instances.iter().any(|i| i.operator == "count"));
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for w in words.iter().chain(&more) {
        *expected.entry(w.clone()).or_default() += 1;
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        let (w, n) = line.split_once(',').unwrap();
        got.entry(w.to_string())
            .or_default()
            .push(n.parse().unwrap());
    }
    assert_eq!(got.len(), expected.len());
    for (w, n) in &expected {
        let updates = &got[w];
        assert_eq!(updates, &(1..=*n).collect::<Vec<_>>(), "word {w}");
    }
}

fn keyed_count_pipeline<S: Sink<(u64, u64)> + Clone>(
    dir: &Path,
    parallelism: usize,
    limit: u64,
    out: S,
) -> Pipeline {
    let p = Pipeline::with_config(config(dir, 10));
    p.source(
        "gen",
        GeneratorSource::new(GeneratorConfig {
            key_space: 10,
            limit: Some(limit),
            rate_per_sec: Some(200_000),
            ..Default::default()
        }),
    )
    .set_parallelism(parallelism)
    .key_by(|e: &GenEvent| e.key)
    .count()
    .set_parallelism(parallelism)
    .sink("out", out)
    .set_parallelism(parallelism);
    p
}

/// generator -> key_by -> count -> exactly-once file sink under `dir/out`.
fn keyed_count_into_files(dir: &Path, limit: u64) -> Pipeline {
    let files = FileSink::new(dir.join("out"), Delivery::ExactlyOnce, |r: &(u64, u64)| {
        format!("{},{}", r.0, r.1)
    });
    keyed_count_pipeline(dir, 2, limit, files)
}

/// The newest checkpoint's epochs were already committed by the file sink;
/// a flipped byte in its manifest makes recovery fall back to an older
/// checkpoint. The sink moves the later epochs aside and the replay commits
/// them once: the committed output is exactly the batch answer.
#[test]
fn a_corrupt_newest_manifest_falls_back_and_the_output_stays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    const LIMIT: u64 = 20_000;
    let first = rt.block_on(async {
        let mut q = keyed_count_into_files(dir.path(), LIMIT).start().unwrap();
        q.await_termination().await.unwrap();
        q.checkpoint_stats().unwrap()
    });
    assert!(first.completed >= 2, "need two checkpoints: {first:?}");
    // The newest epoch that committed output (the last epochs may have
    // none: a periodic marker can follow the last records before the final
    // one). Damage every manifest from there on, so recovery must fall back
    // behind output the sink already made visible.
    let newest = FileSink::<()>::committed_parts(&dir.path().join("out"))
        .unwrap()
        .iter()
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?;
            name.rsplit('-').next()?.parse::<u64>().ok()
        })
        .max()
        .expect("committed output");
    // An epoch's manifest may not exist: an epoch still in flight when a
    // later one completes is never written (its output commits with the
    // later one), so the damaged ones are those found.
    let mut damaged = Vec::new();
    for epoch in newest..=first.last_completed_epoch.unwrap() {
        let manifest = dir
            .path()
            .join("checkpoints/manifests")
            .join(format!("chk-{epoch:020}.manifest"));
        if let Ok(mut bytes) = std::fs::read(&manifest) {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&manifest, bytes).unwrap();
            damaged.push(epoch);
        }
    }
    assert!(!damaged.is_empty(), "no manifest from epoch {newest} on");

    let second = rt.block_on(async {
        let mut q = keyed_count_into_files(dir.path(), LIMIT).start().unwrap();
        q.await_termination().await.unwrap();
        q.checkpoint_stats().unwrap()
    });
    let restored = second.restored_epoch.expect("restored a checkpoint");
    assert!(
        restored < newest,
        "restored {restored}, corrupt newest {newest}"
    );
    let report = second.recovery.expect("a recovery report");
    assert_eq!(report.restored_epoch, Some(restored));
    for epoch in &damaged {
        assert!(
            dir.path()
                .join("checkpoints/manifests/skipped")
                .join(format!("chk-{epoch:020}.manifest"))
                .exists(),
            "the damaged manifest {epoch} is set aside, so no later start restores it"
        );
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s.contains(&format!("chk-{epoch:020}.manifest"))),
            "the damaged manifest {epoch} is named: {report:?}"
        );
    }
    assert!(!report.at_least_once(), "{report:?}");
    let moved: Vec<u64> = report
        .sinks_ahead
        .iter()
        .flat_map(|s| s.retracted.as_ref().unwrap().epochs.clone())
        .collect();
    assert!(
        !moved.is_empty() && moved.iter().all(|&e| e > restored && e <= newest),
        "retracted epochs {moved:?} between {restored} and {newest}"
    );

    // Exactly once: per key the counts 1, 2, ..., n, ending at the batch total.
    let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in FileSink::<()>::read_committed(&dir.path().join("out")).unwrap() {
        let (k, n) = line.split_once(',').unwrap();
        got.entry(k.parse().unwrap())
            .or_default()
            .push(n.parse().unwrap());
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for seq in 0..LIMIT {
        *expected
            .entry(GenEvent::generate(seq, 10, 0).key)
            .or_default() += 1;
    }
    assert_eq!(got.len(), expected.len());
    for (k, n) in &expected {
        assert_eq!(got[k], (1..=*n).collect::<Vec<_>>(), "key {k}");
    }
}

#[test]
fn a_changed_parallelism_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut q = keyed_count_pipeline(dir.path(), 2, 5_000, CollectSink::new())
            .start()
            .unwrap();
        q.await_termination().await.unwrap();
    });
    let _guard = rt.enter();
    match keyed_count_pipeline(dir.path(), 1, 5_000, CollectSink::new()).start() {
        Err(BuildError::IncompatibleCheckpoint(msg)) => assert!(msg.contains("count"), "{msg}"),
        Err(other) => panic!("expected IncompatibleCheckpoint, got {other:?}"),
        Ok(_) => panic!("expected IncompatibleCheckpoint, got a running query"),
    }
}

#[derive(Clone)]
struct Once(bool);

impl Source<u64> for Once {
    fn poll_next(
        &mut self,
        out: &mut Vec<Record<u64>>,
        _max: usize,
    ) -> Result<eddy::runtime::SourcePoll, OperatorError> {
        if self.0 {
            return Ok(eddy::runtime::SourcePoll::Finished);
        }
        self.0 = true;
        out.push(Record::new(1));
        Ok(eddy::runtime::SourcePoll::Ready)
    }
}

#[test]
fn a_source_that_cannot_replay_is_refused_for_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let _guard = rt.enter();
    let p = Pipeline::with_config(config(dir.path(), 10));
    p.source("socket", Once(false)).sink("out", DiscardSink);
    assert!(matches!(
        p.start(),
        Err(BuildError::NotReplayable { source_name }) if source_name == "socket"
    ));
}

/// A checkpoint store that stops accepting writes makes checkpoints fail and
/// be counted, while records keep flowing; when it recovers, checkpoints
/// complete again. (Tests run as root, where permissions do not stop writes,
/// so the manifest directory is replaced by a regular file.)
#[test]
fn an_unwritable_store_fails_checkpoints_but_not_the_query() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let p = Pipeline::with_config(config(dir.path(), 20));
        p.source(
            "gen",
            GeneratorSource::new(GeneratorConfig {
                rate_per_sec: Some(50_000),
                ..Default::default()
            }),
        )
        .key_by(|e: &GenEvent| e.key)
        .count()
        .sink("out", DiscardSink);
        let mut q = p.start().unwrap();
        let wait_for = |pred: &dyn Fn(&eddy::runtime::checkpointing::CheckpointStats) -> bool,
                        q: &Query| {
            let s = q.checkpoint_stats().unwrap();
            pred(&s)
        };
        for _ in 0..500 {
            if wait_for(&|s| s.completed >= 1, &q) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(q.checkpoint_stats().unwrap().completed >= 1);

        let manifests = dir.path().join("checkpoints/manifests");
        let aside = dir.path().join("manifests-aside");
        std::fs::rename(&manifests, &aside).unwrap();
        std::fs::write(&manifests, b"not a directory").unwrap();
        let before = q.progress().input_rows;
        for _ in 0..500 {
            if wait_for(&|s| s.failed >= 2, &q) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = q.checkpoint_stats().unwrap();
        assert!(s.failed >= 2, "{s:?}");
        assert!(
            s.last_failure.as_deref().unwrap_or("").contains("manifest"),
            "{s:?}"
        );
        assert!(q.progress().input_rows > before, "records kept flowing");
        assert!(!q.is_finished());

        std::fs::remove_file(&manifests).unwrap();
        std::fs::rename(&aside, &manifests).unwrap();
        let completed = s.completed;
        for _ in 0..500 {
            if wait_for(&|s| s.completed > completed, &q) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            q.checkpoint_stats().unwrap().completed > completed,
            "checkpoints resume"
        );
        q.stop().await.unwrap();
    });
}
