//! The RocksDB state backend: one DB per task, WAL off, incremental
//! checkpoints of immutable SST files.
//!
//! # Local layout
//! ```text
//! <local_dir>/<task dir>/<incarnation>/db        the live DB
//! <local_dir>/<task dir>/<incarnation>/snap-<n>  a frozen snapshot awaiting persist
//! ```
//! The local directory is scratch space: opening a task's backend wipes
//! everything under `<local_dir>/<task dir>` (a previous run's DB, stale
//! snapshots). Durability comes only from the checkpoint store.
//!
//! # Snapshot protocol
//! - Writes go to RocksDB with the WAL disabled: between checkpoints the DB
//!   holds data only in memtables and SSTs, and a crash loses the local DB —
//!   which recovery replaces from the store anyway.
//! - [`StateBackend::snapshot`] (synchronous) creates a RocksDB checkpoint in
//!   `snap-<n>`: memtables are flushed, SST files are hard-linked, MANIFEST,
//!   CURRENT and OPTIONS are copied. Its cost is bounded by the memtable
//!   size (the flush), not by the state size (tens of ms measured for 1M and
//!   10M keys).
//! - [`SnapshotJob::persist`] (asynchronous) copies into the store only what
//!   it does not hold yet:
//!   - SST files are immutable and their names are unique within a DB
//!     *incarnation* (one open of the backend; RocksDB never reuses a file
//!     number). A new SST is stored as `<incarnation>-<name>`, where the
//!     incarnation is a fresh random id: two incarnations of a task (for
//!     instance before and after a restore) never store different contents
//!     under one name. An SST this incarnation already stored — or restored
//!     from the store — is referenced, not copied (incremental checkpoint),
//!     provided the store still holds it (checked under a GC reservation).
//!   - every other file is small and mutable; it is stored per epoch as
//!     `e<epoch>-<incarnation>-<name>`.
//! - Restoring copies the handle's files, verifying size and CRC32, into a
//!   fresh incarnation directory and opens the DB there; the restored SSTs
//!   keep their stored names, so the next checkpoint references them.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, LogLevel, Options, WriteOptions, DB};

use crate::backend::{BackendReader, StateBackend, WriteOp};
use crate::error::{Error, Result};
use crate::manifest::TaskId;
use crate::snapshot::{
    restore_source, BackendFactory, BackendKind, SnapshotJob, StateHandle, StoredFile,
};
use crate::store::CheckpointStore;

/// Tuning of the RocksDB instances a [`RocksBackendFactory`] opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocksConfig {
    /// Memtable size per DB, bytes.
    pub write_buffer_size: usize,
    /// Block cache shared by every DB of the factory, bytes.
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key (0 disables it). Makes reads of absent keys
    /// — every first touch of a new key through a table — cheap.
    pub bloom_bits_per_key: f64,
    /// Background flush and compaction threads per DB.
    pub max_background_jobs: i32,
    /// Turns background compaction off. Only for tests and benches that need
    /// the exact files of an incremental checkpoint (a compaction running
    /// between two checkpoints rewrites SSTs, so the second one stores the
    /// rewritten files); never in production, where L0 would grow unbounded.
    pub disable_auto_compactions: bool,
    /// Every this many epochs a snapshot stores fresh copies of all its SST
    /// files instead of referencing the copies earlier checkpoints stored
    /// (0: never, beyond the first snapshot of a fresh open, which stores
    /// everything anyway). The first snapshot after a restore is full too
    /// (the restored chain's age is not known), so queries that restart
    /// often still get independent checkpoints. Incremental
    /// checkpoints share SSTs, so one damaged shared file would make every
    /// checkpoint of its chain unusable; a full snapshot starts a new chain,
    /// and the store keeps one checkpoint of the previous chain
    /// ([`CheckpointStore`] retention), so a fallback always exists.
    pub full_snapshot_every: u32,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self {
            write_buffer_size: 32 << 20,
            block_cache_bytes: 64 << 20,
            bloom_bits_per_key: 10.0,
            max_background_jobs: 2,
            disable_auto_compactions: false,
            full_snapshot_every: 8,
        }
    }
}

/// Opens [`RocksBackend`]s under a local scratch directory.
pub struct RocksBackendFactory {
    local_dir: PathBuf,
    config: RocksConfig,
    cache: Cache,
}

impl std::fmt::Debug for RocksBackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackendFactory")
            .field("local_dir", &self.local_dir)
            .field("config", &self.config)
            .finish()
    }
}

impl RocksBackendFactory {
    /// A factory keeping its DBs under `local_dir`, with default tuning.
    pub fn new(local_dir: impl Into<PathBuf>) -> Self {
        Self::with_config(local_dir, RocksConfig::default())
    }

    /// A factory keeping its DBs under `local_dir`.
    pub fn with_config(local_dir: impl Into<PathBuf>, config: RocksConfig) -> Self {
        Self {
            local_dir: local_dir.into(),
            cache: Cache::new_lru_cache(config.block_cache_bytes),
            config,
        }
    }

    /// The local scratch directory.
    pub fn local_dir(&self) -> &Path {
        &self.local_dir
    }

    fn options(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_write_buffer_size(self.config.write_buffer_size);
        opts.set_max_background_jobs(self.config.max_background_jobs);
        // Keep MANIFEST small: it is copied at every checkpoint.
        opts.set_max_manifest_file_size(4 << 20);
        opts.set_keep_log_file_num(2);
        opts.set_log_level(LogLevel::Warn);
        opts.set_disable_auto_compactions(self.config.disable_auto_compactions);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        if self.config.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(self.config.bloom_bits_per_key, false);
        }
        opts.set_block_based_table_factory(&table);
        opts
    }
}

impl BackendFactory for RocksBackendFactory {
    fn open(
        &self,
        task: &TaskId,
        restore: Option<&StateHandle>,
        store: Option<&CheckpointStore>,
    ) -> Result<Box<dyn StateBackend>> {
        let task_dir = self.local_dir.join(task.dir_name());
        if task_dir.exists() {
            fs::remove_dir_all(&task_dir).map_err(|e| Error::io(&task_dir, e))?;
        }
        let incarnation = new_incarnation();
        let home = task_dir.join(&incarnation);
        let db_dir = home.join("db");
        fs::create_dir_all(&db_dir).map_err(|e| Error::io(&db_dir, e))?;
        let mut known = HashMap::new();
        if let Some(handle) = restore {
            let store = restore_source(BackendKind::RocksDb, handle, store)?;
            for file in &handle.files {
                if !is_plain_name(&file.local_name) {
                    return Err(Error::Restore(format!(
                        "snapshot file {} has an invalid local name {:?}",
                        file.path, file.local_name
                    )));
                }
                store.fetch_file(file, &db_dir.join(&file.local_name))?;
                if is_sst(&file.local_name) {
                    known.insert(file.local_name.clone(), file.clone());
                }
            }
        }
        let db = DB::open(&self.options(), &db_dir)
            .map_err(|e| Error::Backend(format!("opening {}: {e}", db_dir.display())))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(Box::new(RocksBackend {
            db: Arc::new(db),
            write_options,
            home: home.clone(),
            incarnation,
            next_snapshot: 0,
            known: Arc::new(Mutex::new(known)),
            chain: Arc::new(Mutex::new(ChainState {
                every: u64::from(self.config.full_snapshot_every),
                started_at: None,
                restored: restore.is_some(),
            })),
            _cleanup: RemoveOnDrop(home),
        }))
    }
}

/// Removes a backend's local directory when the backend is dropped (after
/// the DB, which is declared before it, has closed).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Snapshot directories of jobs still running stay; they remove
        // themselves, and the next open of the task wipes the rest.
        let _ = fs::remove_dir_all(self.0.join("db"));
        let _ = fs::remove_dir(&self.0);
    }
}

/// SST files of this incarnation already in the store, by local name.
type KnownFiles = Arc<Mutex<HashMap<String, StoredFile>>>;

/// When this backend's current chain of incremental snapshots began.
type Chain = Arc<Mutex<ChainState>>;

struct ChainState {
    /// Full snapshot every this many epochs (0: only the first).
    every: u64,
    /// The epoch of the newest full snapshot persisted by this open, or of
    /// its first snapshot when it continued a restored chain.
    started_at: Option<u64>,
    /// Whether this open restored a snapshot. With full snapshots off, its
    /// first snapshot continues the restored chain (referencing the
    /// restored files).
    restored: bool,
}

impl ChainState {
    /// Whether the snapshot of `epoch` must store every file afresh.
    fn full_at(&self, epoch: u64) -> bool {
        match self.started_at {
            // The age of a restored chain is not known: a restored backend
            // starts a new chain at once (unless full snapshots are off).
            None => !self.restored || self.every > 0,
            Some(start) => self.every > 0 && epoch >= start.saturating_add(self.every),
        }
    }

    /// Records that the snapshot of `epoch` was persisted.
    fn persisted(&mut self, epoch: u64, full: bool) {
        if full || self.started_at.is_none() {
            self.started_at = Some(epoch);
        }
    }
}

/// The state of one task in RocksDB. Open it with [`RocksBackendFactory`].
pub struct RocksBackend {
    db: Arc<DB>,
    write_options: WriteOptions,
    home: PathBuf,
    incarnation: String,
    next_snapshot: u64,
    known: KnownFiles,
    chain: Chain,
    _cleanup: RemoveOnDrop,
}

impl RocksBackend {
    /// The random id of this open of the DB (prefix of the SST names it stores).
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    fn backend_err(&self, what: &str, e: rocksdb::Error) -> Error {
        Error::Backend(format!("{what} in {}: {e}", self.home.display()))
    }
}

/// Reads the live DB while the backend writes or snapshots it (RocksDB's
/// reads and writes are thread-safe; a write batch is seen whole or not at
/// all).
struct RocksReader {
    db: Arc<DB>,
    home: PathBuf,
}

impl BackendReader for RocksReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_pinned(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| Error::Backend(format!("get in {}: {e}", self.home.display())))
    }
}

impl StateBackend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_pinned(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.backend_err("get", e))
    }

    fn reader(&self) -> Option<Arc<dyn BackendReader>> {
        Some(Arc::new(RocksReader {
            db: self.db.clone(),
            home: self.home.clone(),
        }))
    }

    fn write_batch(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for op in ops {
            match op {
                WriteOp::Put(k, v) => batch.put(k, v),
                WriteOp::Delete(k) => batch.delete(k),
                // One range tombstone.
                WriteOp::DeletePrefix(prefix) => match crate::backend::prefix_end(&prefix) {
                    Some(end) => batch.delete_range(prefix, end),
                    // No end key (an empty or all-0xff prefix, which no
                    // table has): delete the keys one by one.
                    None => {
                        let mut it = self.db.raw_iterator();
                        it.seek(&prefix);
                        while let Some(k) = it.key().filter(|k| k.starts_with(&prefix)) {
                            batch.delete(k);
                            it.next();
                        }
                        it.status().map_err(|e| self.backend_err("scan", e))?;
                    }
                },
            }
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.backend_err("write batch", e))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut crate::backend::ScanVisitor<'_>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator();
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            visit(k, v)?;
            it.next();
        }
        it.status().map_err(|e| self.backend_err("scan", e))
    }

    fn snapshot(&mut self) -> Result<Box<dyn SnapshotJob>> {
        let dir = self.home.join(format!("snap-{}", self.next_snapshot));
        self.next_snapshot += 1;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let checkpoint =
            Checkpoint::new(&self.db).map_err(|e| self.backend_err("checkpoint", e))?;
        // Removes the directory if anything below fails.
        let guard = SnapshotDir(dir);
        checkpoint
            .create_checkpoint(&guard.0)
            .map_err(|e| self.backend_err("checkpoint", e))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&guard.0).map_err(|e| Error::io(&guard.0, e))? {
            let entry = entry.map_err(|e| Error::io(&guard.0, e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| Error::Corrupt {
                    path: guard.0.join(&n),
                    reason: "file name is not UTF-8".into(),
                })?;
            files.push(name);
        }
        files.sort();
        Ok(Box::new(RocksSnapshotJob {
            dir: guard,
            files,
            incarnation: self.incarnation.clone(),
            known: Arc::clone(&self.known),
            chain: Arc::clone(&self.chain),
        }))
    }
}

/// A frozen snapshot directory, removed when the job ends (persisted or not).
struct SnapshotDir(PathBuf);

impl Drop for SnapshotDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The asynchronous part of a RocksDB snapshot.
struct RocksSnapshotJob {
    dir: SnapshotDir,
    files: Vec<String>,
    incarnation: String,
    known: KnownFiles,
    chain: Chain,
}

impl RocksSnapshotJob {
    fn known(&self, name: &str) -> Option<StoredFile> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

impl SnapshotJob for RocksSnapshotJob {
    fn persist(
        self: Box<Self>,
        store: &CheckpointStore,
        task: &TaskId,
        epoch: u64,
    ) -> Result<StateHandle> {
        let mut handle = StateHandle {
            kind: BackendKind::RocksDb,
            files: Vec::with_capacity(self.files.len()),
            bytes_written: 0,
        };
        // Snapshots of one backend usually persist one at a time, in order;
        // should two overlap, the worst outcome is two full snapshots in a
        // row or a chain starting one epoch late (file reuse stays safe:
        // every reused file is reserved in the store).
        let full = self
            .chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .full_at(epoch);
        for name in &self.files {
            let src = self.dir.0.join(name);
            let file = if is_sst(name) {
                match self.known(name) {
                    Some(file) if !full && store.reuse(epoch, &file) => file,
                    _ => {
                        // A full snapshot's copies carry its epoch, so they
                        // never share a name with the previous chain's.
                        let stored_name = if full {
                            format!("{}-c{epoch:020}-{name}", self.incarnation)
                        } else {
                            format!("{}-{name}", self.incarnation)
                        };
                        let file = store.put_file(epoch, task, &stored_name, name, &src)?;
                        handle.bytes_written += file.size;
                        self.known
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone(), file.clone());
                        file
                    }
                }
            } else {
                let stored_name = format!("e{epoch:020}-{}-{name}", self.incarnation);
                let file = store.put_file(epoch, task, &stored_name, name, &src)?;
                handle.bytes_written += file.size;
                file
            };
            handle.files.push(file);
        }
        store.sync_task_dir(task)?;
        self.chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .persisted(epoch, full);
        Ok(handle)
    }
}

fn is_sst(name: &str) -> bool {
    name.ends_with(".sst")
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// A fresh random id (64 bits, hex). `RandomState` is seeded from the OS
/// per process and advanced per call; the clock and pid add distinctness
/// across processes.
fn new_incarnation() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
