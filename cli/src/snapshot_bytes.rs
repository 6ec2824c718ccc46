//! `eddy bench snapshot-bytes`: what the full-snapshot policy costs in bytes
//! written.
//!
//! One RocksDB state of `keys` keys is checkpointed `epochs` times, each
//! epoch rewriting `changed_per_epoch` random keys (seeded), once with a
//! full snapshot every `full_every` epochs and once incremental only
//! (`full_snapshot_every = 0`), in the same run and with the same updates.
//! Every checkpoint completes through the store (manifest written, retention
//! and garbage collection applied), as in a running query. Bytes written do
//! not depend on the build profile, so this runs in any build.

use std::collections::BTreeMap;
use std::path::Path;

use eddy::checkpoint::{
    BackendFactory, CheckpointStore, Manifest, RocksBackendFactory, RocksConfig, TaskId,
    TaskSnapshot, WriteOp,
};
use serde::Serialize;

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct SnapshotBytesBench {
    /// Keys in the state.
    pub keys: u64,
    /// Keys rewritten between two checkpoints.
    pub changed_per_epoch: u64,
    /// Checkpoints taken per policy.
    pub epochs: u64,
    /// The policy measured: a full snapshot every this many epochs.
    pub full_every: u32,
    /// Seed of the updates.
    pub seed: u64,
}

/// One policy's checkpoints.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyBytes {
    /// `full_snapshot_every` of this policy (0: incremental only).
    pub full_snapshot_every: u32,
    /// Bytes each checkpoint wrote, in epoch order.
    pub bytes_written: Vec<u64>,
    /// Bytes of state each checkpoint referenced.
    pub state_bytes: Vec<u64>,
    /// Bytes the store held after the last checkpoint (retained checkpoints
    /// and the independent fallback).
    pub store_bytes: u64,
}

impl PolicyBytes {
    /// Mean bytes written per checkpoint, the first (always full) excluded.
    pub fn mean_after_first(&self) -> f64 {
        let rest = &self.bytes_written[1.min(self.bytes_written.len())..];
        rest.iter().sum::<u64>() as f64 / rest.len().max(1) as f64
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotBytesResult {
    /// The seed of the updates.
    pub seed: u64,
    /// With full snapshots every `full_every` epochs.
    pub with_full: PolicyBytes,
    /// Incremental only.
    pub incremental_only: PolicyBytes,
    /// Median bytes of the policy's full snapshots (the first excluded).
    pub full_median: u64,
    /// Median bytes of the incremental checkpoints of the same run.
    pub incremental_median: u64,
    /// Mean bytes per checkpoint with the policy / without it.
    pub mean_ratio: f64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:010}").into_bytes()
}

fn value(k: u64, epoch: u64) -> Vec<u8> {
    format!(
        "value-of-{k}-at-epoch-{epoch}-{:032}",
        k.wrapping_mul(epoch + 1)
    )
    .into_bytes()
}

fn run_policy(dir: &Path, b: &SnapshotBytesBench, full_every: u32) -> anyhow::Result<PolicyBytes> {
    let store = CheckpointStore::open(dir.join("store"))?;
    let factory = RocksBackendFactory::with_config(
        dir.join("local"),
        RocksConfig {
            full_snapshot_every: full_every,
            ..RocksConfig::default()
        },
    );
    let task = TaskId::new("state", 0);
    let mut backend = factory.open(&task, None, Some(&store))?;
    let ops: Vec<WriteOp> = (0..b.keys)
        .map(|k| WriteOp::Put(key(k), value(k, 0)))
        .collect();
    for chunk in ops.chunks(50_000) {
        backend.write_batch(chunk.to_vec())?;
    }
    // The keys to rewrite: a seeded, well-mixed sequence.
    let mut draw = b.seed;
    let mut out = PolicyBytes {
        full_snapshot_every: full_every,
        bytes_written: Vec::new(),
        state_bytes: Vec::new(),
        store_bytes: 0,
    };
    for epoch in 1..=b.epochs {
        if epoch > 1 {
            let ops = (0..b.changed_per_epoch)
                .map(|_| {
                    let k = eddy::connectors::generator::mix(draw) % b.keys.max(1);
                    draw = draw.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    WriteOp::Put(key(k), value(k, epoch))
                })
                .collect();
            backend.write_batch(ops)?;
        }
        let handle = backend.snapshot()?.persist(&store, &task, epoch)?;
        out.bytes_written.push(handle.bytes_written);
        out.state_bytes.push(handle.total_bytes());
        let mut tasks = BTreeMap::new();
        tasks.insert(
            task.clone(),
            TaskSnapshot {
                state: Some(handle),
                meta: Vec::new(),
            },
        );
        store.write_manifest(&Manifest {
            epoch,
            shape: Vec::new(),
            tasks,
            created_unix_ms: 0,
        })?;
    }
    out.store_bytes = dir_bytes(&dir.join("store"));
    Ok(out)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs both policies in scratch directories under `scratch`.
///
/// # Errors
/// Any error of the state backend or the store.
pub fn run(b: &SnapshotBytesBench, scratch: &Path) -> anyhow::Result<SnapshotBytesResult> {
    let with_full = run_policy(&scratch.join("with-full"), b, b.full_every)?;
    let incremental_only = run_policy(&scratch.join("incremental"), b, 0)?;
    let every = u64::from(b.full_every.max(1));
    // Epoch 1 is full under both policies; then every `full_every` epochs.
    let (full, incr): (Vec<_>, Vec<_>) = with_full
        .bytes_written
        .iter()
        .enumerate()
        .skip(1)
        .partition(|(i, _)| b.full_every > 0 && (*i as u64) % every == 0);
    Ok(SnapshotBytesResult {
        seed: b.seed,
        full_median: median(full.into_iter().map(|(_, &x)| x).collect()),
        incremental_median: median(incr.into_iter().map(|(_, &x)| x).collect()),
        mean_ratio: with_full.mean_after_first() / incremental_only.mean_after_first().max(1.0),
        with_full,
        incremental_only,
    })
}

/// The result as a markdown table.
pub fn markdown(b: &SnapshotBytesBench, r: &SnapshotBytesResult) -> String {
    let mb = |x: f64| x / 1e6;
    format!(
        "| policy | mean bytes written per checkpoint (after the first) | store size at the end |\n\
         | --- | ---: | ---: |\n\
         | full every {} epochs | {:.2} MB | {:.1} MB |\n\
         | incremental only | {:.2} MB | {:.1} MB |\n\n\
         {} keys, {} rewritten per epoch, {} epochs, seed {}. Within the policy's run: a full \
         snapshot writes {:.2} MB (median), an incremental one {:.2} MB (median), ratio {:.1}x; \
         mean bytes per checkpoint with the policy / without: {:.2}x.\n",
        b.full_every,
        mb(r.with_full.mean_after_first()),
        mb(r.with_full.store_bytes as f64),
        mb(r.incremental_only.mean_after_first()),
        mb(r.incremental_only.store_bytes as f64),
        b.keys,
        b.changed_per_epoch,
        b.epochs,
        r.seed,
        mb(r.full_median as f64),
        mb(r.incremental_median as f64),
        r.full_median as f64 / (r.incremental_median as f64).max(1.0),
        r.mean_ratio,
    )
}
