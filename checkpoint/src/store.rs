//! The checkpoint store: manifests and snapshot files in a local directory,
//! retention, garbage collection and recovery.
//!
//! # Layout
//! ```text
//! <root>/manifests/chk-<epoch:020>.manifest   one framed Manifest per completed checkpoint
//! <root>/manifests/skipped/                   manifests a restart fell back past (set aside)
//! <root>/state/<task dir>/<file>              every snapshot file of one task
//! ```
//! File names inside a task directory are chosen by the backends so that a
//! name is never reused for different contents (RocksDB SST files carry the
//! DB incarnation; per-epoch files carry the epoch).
//!
//! # Invariants
//! - Every file is written atomically (temp, fsync, rename, fsync dir;
//!   [`crate::durable`]); manifests are framed with length + CRC32 and every
//!   snapshot file's size and CRC32 is recorded in its [`StateHandle`](crate::StateHandle).
//! - A manifest is written only after every file it references is durable.
//! - [`CheckpointStore::write_manifest`] then applies retention: the newest
//!   `retain` valid manifests stay, older (and unreadable superseded) ones are
//!   deleted, and so is every file under `state/` that no retained manifest
//!   references and no in-flight snapshot has *reserved*. When none of the
//!   retained older manifests is independent of the newest (shares no state
//!   file with it: incremental checkpoints share RocksDB SSTs), the newest
//!   older manifest that is independent is retained too (unless `retain`
//!   is 1: no fallback asked for), so one damaged
//!   shared file never leaves recovery without a checkpoint. Backends make
//!   such checkpoints by storing a full snapshot now and then
//!   ([`RocksConfig::full_snapshot_every`](crate::RocksConfig::full_snapshot_every)).
//! - Reservations: a snapshot job reserves each file it writes or reuses for
//!   epoch `e` before touching it (under the same lock garbage collection
//!   holds); the reservation lasts until a manifest of an epoch `>= e` is
//!   written. By then epoch `e` either completed (its manifest references the
//!   files) or was aborted (the files are garbage). So a file an in-flight
//!   checkpoint relies on is never collected under it.
//! - [`CheckpointStore::recover`] uses the newest manifest that verifies and
//!   whose every snapshot file exists with its recorded size and CRC32; each
//!   one it skips is reported with the path at fault.
//! - Epochs increase over the life of a store: writing a manifest whose epoch
//!   does not exceed an existing valid one is refused
//!   ([`Error::EpochNotIncreasing`]). After a recovery, number new epochs from
//!   [`Recovery::next_epoch`].
//!
//! One process writes a store at a time; within it, one coordinator writes
//! manifests while any number of snapshot jobs write state files.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec;
use crate::durable::{self, DirSync};
use crate::error::{Error, Result};
use crate::frame;
use crate::manifest::{Manifest, TaskId};
use crate::snapshot::StoredFile;

const MANIFEST_DIR: &str = "manifests";
const STATE_DIR: &str = "state";
const MANIFEST_PREFIX: &str = "chk-";
const MANIFEST_SUFFIX: &str = ".manifest";
const SKIPPED_DIR: &str = "skipped";

/// Settings of a [`CheckpointStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many completed checkpoints to keep (at least 1).
    pub retain: usize,
    /// Whether [`CheckpointStore::recover`] reads every snapshot file to check
    /// its CRC32 (otherwise only existence and size are checked, and the CRC
    /// is checked while restoring).
    pub verify_checksums: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retain: 3,
            verify_checksums: true,
        }
    }
}

/// A checkpoint that [`CheckpointStore::recover`] skipped, and why.
#[derive(Debug)]
pub struct RecoveryWarning {
    /// The skipped checkpoint's epoch.
    pub epoch: u64,
    /// Its manifest file.
    pub manifest: PathBuf,
    /// What did not verify; names the file at fault (the manifest itself or
    /// one of its snapshot files).
    pub error: Error,
}

impl fmt::Display for RecoveryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint {} ({}) skipped: {}",
            self.epoch,
            self.manifest.display(),
            self.error
        )
    }
}

/// The outcome of [`CheckpointStore::recover`].
#[derive(Debug, Default)]
pub struct Recovery {
    /// The newest checkpoint that verified, if any.
    pub manifest: Option<Manifest>,
    /// Every newer checkpoint that was skipped, newest first.
    pub warnings: Vec<RecoveryWarning>,
    /// The highest epoch of any manifest file found, valid or not.
    pub highest_epoch_seen: Option<u64>,
}

impl Recovery {
    /// The first epoch a restarted dataflow may use: above every manifest on
    /// disk, valid or not.
    pub fn next_epoch(&self) -> u64 {
        self.highest_epoch_seen.map_or(1, |e| e + 1)
    }
}

/// What garbage collection did after a manifest was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Epochs of the manifests retained, newest first.
    pub retained: Vec<u64>,
    /// Manifest files deleted.
    pub manifests_deleted: usize,
    /// State files deleted.
    pub files_deleted: usize,
    /// Bytes of the state files deleted.
    pub bytes_deleted: u64,
    /// Deletions that failed (the checkpoint itself is complete; the files
    /// are retried at the next collection).
    pub errors: Vec<String>,
}

struct Inner {
    root: PathBuf,
    options: StoreOptions,
    /// epoch -> store paths reserved by snapshot jobs of that epoch.
    reserved: Mutex<BTreeMap<u64, HashSet<String>>>,
}

/// A checkpoint store over a local directory. Cheap to clone; clones share
/// the reservations of in-flight snapshots.
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("root", &self.inner.root)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl CheckpointStore {
    /// Opens (creating if needed) the store at `root` with default options.
    ///
    /// # Errors
    /// [`Error::Io`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, StoreOptions::default())
    }

    /// Opens (creating if needed) the store at `root`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directories cannot be created.
    pub fn open_with(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Self> {
        let root = root.into();
        for dir in [root.join(MANIFEST_DIR), root.join(STATE_DIR)] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                options: StoreOptions {
                    retain: options.retain.max(1),
                    ..options
                },
                reserved: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The store's options.
    pub fn options(&self) -> StoreOptions {
        self.inner.options
    }

    /// The absolute path of a stored file.
    pub fn path_of(&self, file: &StoredFile) -> PathBuf {
        self.inner.root.join(&file.path)
    }

    /// The path of the manifest of `epoch`.
    pub fn manifest_path(&self, epoch: u64) -> PathBuf {
        self.inner
            .root
            .join(MANIFEST_DIR)
            .join(format!("{MANIFEST_PREFIX}{epoch:020}{MANIFEST_SUFFIX}"))
    }

    fn task_dir(&self, task: &TaskId) -> PathBuf {
        self.inner.root.join(STATE_DIR).join(task.dir_name())
    }

    /// The store path (relative to the root) of file `name` of `task`.
    pub fn task_file(task: &TaskId, name: &str) -> String {
        format!("{STATE_DIR}/{}/{name}", task.dir_name())
    }

    fn reserved(&self) -> MutexGuard<'_, BTreeMap<u64, HashSet<String>>> {
        // A panic while holding the lock leaves the map consistent (every
        // operation on it is a single insert or retain), so poisoning is ignored.
        self.inner
            .reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves `path` for a snapshot of `epoch`: garbage collection keeps it
    /// until a manifest of an epoch `>= epoch` is written.
    pub fn reserve(&self, epoch: u64, path: &str) {
        self.reserved()
            .entry(epoch)
            .or_default()
            .insert(path.to_string());
    }

    /// Reserves `file` for `epoch` and tells whether the store holds it with
    /// its recorded size (an incremental snapshot then references it instead
    /// of writing it again).
    pub fn reuse(&self, epoch: u64, file: &StoredFile) -> bool {
        let mut reserved = self.reserved();
        reserved.entry(epoch).or_default().insert(file.path.clone());
        fs::metadata(self.path_of(file)).is_ok_and(|m| m.is_file() && m.len() == file.size)
    }

    fn prepare_task_file(
        &self,
        epoch: u64,
        task: &TaskId,
        name: &str,
    ) -> Result<(String, PathBuf)> {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(Error::Backend(format!(
                "invalid snapshot file name {name:?}"
            )));
        }
        let rel = Self::task_file(task, name);
        self.reserve(epoch, &rel);
        let dir = self.task_dir(task);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = self.inner.root.join(&rel);
        Ok((rel, path))
    }

    /// Copies the local file `src` into the store as file `name` of `task`,
    /// for a snapshot of `epoch`. The file is synced, but its directory is not:
    /// call [`sync_task_dir`](Self::sync_task_dir) once the snapshot's files
    /// are all written.
    ///
    /// # Errors
    /// I/O errors naming the file (source or destination).
    pub fn put_file(
        &self,
        epoch: u64,
        task: &TaskId,
        name: &str,
        local_name: &str,
        src: &Path,
    ) -> Result<StoredFile> {
        let (rel, path) = self.prepare_task_file(epoch, task, name)?;
        let copied = durable::write_atomic(&path, DirSync::Deferred, |file, tmp| {
            let mut out = std::io::BufWriter::new(file);
            let copied = durable::copy_with_crc(src, &mut out, tmp)?;
            out.flush().map_err(|e| Error::io(tmp, e))?;
            Ok(copied)
        })?;
        Ok(StoredFile {
            path: rel,
            local_name: local_name.to_string(),
            size: copied.size,
            crc32: copied.crc32,
        })
    }

    /// Writes `payload` framed (length + CRC32) into the store as file `name`
    /// of `task`, for a snapshot of `epoch`. Directory sync as in
    /// [`put_file`](Self::put_file).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn put_frame(
        &self,
        epoch: u64,
        task: &TaskId,
        name: &str,
        local_name: &str,
        payload: &[u8],
    ) -> Result<StoredFile> {
        let (rel, path) = self.prepare_task_file(epoch, task, name)?;
        let bytes = frame::encode_frame(payload);
        durable::write_bytes(&path, &bytes, DirSync::Deferred)?;
        Ok(StoredFile {
            path: rel,
            local_name: local_name.to_string(),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        })
    }

    /// Makes the files written for `task` durable (syncs its directory).
    ///
    /// # Errors
    /// I/O errors naming the directory.
    pub fn sync_task_dir(&self, task: &TaskId) -> Result<()> {
        let dir = self.task_dir(task);
        if dir.exists() {
            durable::sync_dir(&dir)?;
        }
        durable::sync_dir(&self.inner.root.join(STATE_DIR))
    }

    /// Checks that `file` exists with its recorded size and, if `checksum`,
    /// its recorded CRC32.
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Truncated`] or [`Error::Corrupt`], naming
    /// the file.
    pub fn verify_file(&self, file: &StoredFile, checksum: bool) -> Result<()> {
        let path = self.path_of(file);
        let meta = fs::metadata(&path).map_err(|e| durable::not_found_as_missing(&path, e))?;
        check_size(&path, file, meta.len())?;
        if checksum {
            let sum = durable::checksum_file(&path)?;
            check_size(&path, file, sum.size)?;
            check_crc(&path, file, sum.crc32)?;
        }
        Ok(())
    }

    /// Copies `file` out of the store to `dst`, verifying its size and CRC32.
    ///
    /// # Errors
    /// As [`verify_file`](Self::verify_file), plus I/O errors on `dst`.
    pub fn fetch_file(&self, file: &StoredFile, dst: &Path) -> Result<()> {
        let path = self.path_of(file);
        let out = File::create(dst).map_err(|e| Error::io(dst, e))?;
        let mut out = std::io::BufWriter::new(out);
        let copied = durable::copy_with_crc(&path, &mut out, dst)?;
        out.flush().map_err(|e| Error::io(dst, e))?;
        check_size(&path, file, copied.size)?;
        check_crc(&path, file, copied.crc32)
    }

    /// Reads a framed file written by [`put_frame`](Self::put_frame) and
    /// returns its payload, verifying the handle's size and CRC32 and the frame.
    ///
    /// # Errors
    /// As [`verify_file`](Self::verify_file), plus frame errors naming the file.
    pub fn read_framed(&self, file: &StoredFile) -> Result<Vec<u8>> {
        let path = self.path_of(file);
        let bytes = fs::read(&path).map_err(|e| durable::not_found_as_missing(&path, e))?;
        check_size(&path, file, bytes.len() as u64)?;
        check_crc(&path, file, crc32fast::hash(&bytes))?;
        Ok(frame::decode_frame(&path, &bytes)?.to_vec())
    }

    /// Epochs of every manifest file in the store, ascending (whether or not
    /// they verify).
    ///
    /// # Errors
    /// I/O errors listing the manifest directory.
    pub fn manifest_epochs(&self) -> Result<Vec<u64>> {
        let dir = self.inner.root.join(MANIFEST_DIR);
        let mut epochs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            if let Some(epoch) = entry.file_name().to_str().and_then(parse_manifest_name) {
                epochs.push(epoch);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Reads and verifies the manifest of `epoch` (the frame only, not the
    /// snapshot files it references).
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Truncated`], [`Error::Corrupt`] or
    /// [`Error::UnsupportedFrameVersion`] naming the manifest file.
    pub fn read_manifest(&self, epoch: u64) -> Result<Manifest> {
        let path = self.manifest_path(epoch);
        let payload = frame::read_frame(&path)?;
        let manifest: Manifest = codec::decode(&payload).map_err(|e| Error::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if manifest.epoch != epoch {
            return Err(Error::Corrupt {
                path,
                reason: format!("holds epoch {}", manifest.epoch),
            });
        }
        Ok(manifest)
    }

    /// Writes `manifest` atomically and durably, completing its checkpoint,
    /// then applies retention and garbage collection (see the module doc).
    ///
    /// Call it only once every snapshot file the manifest references is
    /// durable (every task's `persist` returned).
    ///
    /// # Errors
    /// [`Error::EpochNotIncreasing`] when a valid manifest of this or a later
    /// epoch exists; I/O errors (read-only or full directory) when the
    /// manifest could not be written — the checkpoint then did not complete.
    /// Failed deletions during collection are not errors: the checkpoint is
    /// complete, they are listed in [`GcReport::errors`].
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<GcReport> {
        for epoch in self.manifest_epochs()?.into_iter().rev() {
            if epoch < manifest.epoch {
                break;
            }
            if self.read_manifest(epoch).is_ok() {
                return Err(Error::EpochNotIncreasing {
                    epoch: manifest.epoch,
                    existing: epoch,
                });
            }
        }
        let payload = codec::encode(manifest)?;
        frame::write_frame(&self.manifest_path(manifest.epoch), &payload, DirSync::Now)?;
        self.collect(manifest.epoch)
    }

    /// Runs garbage collection as if the newest valid manifest had just been
    /// written (for instance at start-up, to clear what a crash left).
    /// Does nothing when no manifest verifies.
    ///
    /// # Errors
    /// I/O errors listing the store.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        for epoch in self.manifest_epochs()?.into_iter().rev() {
            if self.read_manifest(epoch).is_ok() {
                return self.collect(epoch);
            }
        }
        Ok(GcReport::default())
    }

    fn collect(&self, newest: u64) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut reserved = self.reserved();
        reserved.retain(|&epoch, _| epoch > newest);

        // Retention: the newest `retain` valid manifests up to `newest`, plus
        // the newest older one that shares no file with the newest if none of
        // those does (the independent fallback); every other manifest file
        // (older, unreadable, or left above `newest` by a run whose later
        // checkpoints did not verify) goes.
        let mut keep: HashSet<String> = reserved.values().flatten().cloned().collect();
        let mut valid: Vec<(u64, HashSet<String>, Manifest)> = Vec::new();
        let mut doomed: Vec<u64> = Vec::new();
        for epoch in self.manifest_epochs()?.into_iter().rev() {
            match (epoch <= newest).then(|| self.read_manifest(epoch)) {
                Some(Ok(m)) => valid.push((epoch, state_files(&m), m)),
                _ => doomed.push(epoch),
            }
        }
        let retain = self.inner.options.retain.max(1);
        let mut kept: Vec<usize> = (0..valid.len().min(retain)).collect();
        // `retain == 1` asks for no fallback at all. A fallback counts only
        // if its files are all there with their recorded sizes (a cheap
        // check; recovery verifies checksums).
        if let Some((_, newest_files, _)) = valid.first().filter(|_| retain > 1) {
            let independent = |i: &usize| {
                valid[*i].1.is_disjoint(newest_files) && self.files_present(&valid[*i].2)
            };
            if !kept.iter().skip(1).any(independent) {
                kept.extend((retain..valid.len()).find(independent));
            }
        }
        for (i, (epoch, files, _)) in valid.iter().enumerate() {
            if kept.contains(&i) {
                report.retained.push(*epoch);
                keep.extend(files.iter().cloned());
            } else {
                doomed.push(*epoch);
            }
        }
        for epoch in doomed {
            let path = self.manifest_path(epoch);
            match fs::remove_file(&path) {
                Ok(()) => report.manifests_deleted += 1,
                Err(e) => report.errors.push(format!("{}: {e}", path.display())),
            }
        }

        // Leftover temporary manifests (one coordinator writes manifests, and
        // it is here, so none is in flight).
        let manifest_dir = self.inner.root.join(MANIFEST_DIR);
        for (path, name, _) in list_files(&manifest_dir)? {
            if durable::is_temp(&name) {
                remove(&path, 0, &mut report);
            }
        }

        let state_dir = self.inner.root.join(STATE_DIR);
        for entry in fs::read_dir(&state_dir).map_err(|e| Error::io(&state_dir, e))? {
            let entry = entry.map_err(|e| Error::io(&state_dir, e))?;
            let Some(dir_name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let task_dir = entry.path();
            if !task_dir.is_dir() {
                continue;
            }
            for (path, name, size) in list_files(&task_dir)? {
                let target = durable::temp_target(&name).unwrap_or(&name);
                let rel = format!("{STATE_DIR}/{dir_name}/{target}");
                if !keep.contains(&rel) {
                    remove(&path, size, &mut report);
                }
            }
        }
        Ok(report)
    }

    /// Finds the newest checkpoint that verifies (see the module doc).
    ///
    /// # Errors
    /// I/O errors listing the manifest directory, or reading a checkpoint
    /// in a way that is not damage ([`Error::is_damage`]): a checkpoint that
    /// is damaged is a [`RecoveryWarning`], one that cannot be read right now
    /// (permissions, too many open files) stops recovery, since falling back
    /// past a sound checkpoint would give up output it covers.
    pub fn recover(&self) -> Result<Recovery> {
        let epochs = self.manifest_epochs()?;
        let mut recovery = Recovery {
            highest_epoch_seen: epochs.last().copied(),
            ..Recovery::default()
        };
        for epoch in epochs.into_iter().rev() {
            match self.verify_checkpoint(epoch) {
                Ok(manifest) => {
                    recovery.manifest = Some(manifest);
                    break;
                }
                Err(error) if !error.is_damage() => return Err(error),
                Err(error) => {
                    tracing::warn!(epoch, %error, "checkpoint does not verify, trying the previous one");
                    recovery.warnings.push(RecoveryWarning {
                        epoch,
                        manifest: self.manifest_path(epoch),
                        error,
                    });
                }
            }
        }
        Ok(recovery)
    }

    /// Whether every state file of `manifest` exists with its recorded size.
    fn files_present(&self, manifest: &Manifest) -> bool {
        manifest
            .state_handles()
            .flat_map(|h| h.files.iter())
            .all(|f| fs::metadata(self.path_of(f)).is_ok_and(|m| m.len() == f.size))
    }

    /// Moves the manifests of `epochs` (checkpoints recovery skipped as
    /// damaged) to `manifests/skipped/`, durably, so that no later start can
    /// restore them: once a restart has fallen back past a checkpoint and
    /// replayed (or retracted output), restoring that checkpoint later would
    /// lose the output committed in between. They are kept for inspection,
    /// never read again. Returns the new paths; epochs without a manifest
    /// file are skipped.
    ///
    /// # Errors
    /// I/O errors moving the files or syncing the directories.
    pub fn set_aside(&self, epochs: &[u64]) -> Result<Vec<PathBuf>> {
        let dir = self.inner.root.join(MANIFEST_DIR).join(SKIPPED_DIR);
        let mut moved = Vec::new();
        for &epoch in epochs {
            let from = self.manifest_path(epoch);
            if !from.exists() {
                continue;
            }
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let name = from.file_name().expect("a manifest path has a name");
            let mut to = dir.join(name);
            let mut n = 1;
            while to.exists() {
                to = dir.join(format!("{}.{n}", name.to_string_lossy()));
                n += 1;
            }
            fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
            moved.push(to);
        }
        if !moved.is_empty() {
            durable::sync_dir(&dir)?;
            durable::sync_dir(&self.inner.root.join(MANIFEST_DIR))?;
        }
        Ok(moved)
    }

    /// The newest checkpoint that verifies, with the newer ones skipped.
    /// Same as [`recover`](Self::recover), with the warnings dropped when no
    /// checkpoint verifies.
    ///
    /// # Errors
    /// As [`recover`](Self::recover).
    pub fn latest_valid(&self) -> Result<Option<(Manifest, Vec<RecoveryWarning>)>> {
        let recovery = self.recover()?;
        Ok(recovery.manifest.map(|m| (m, recovery.warnings)))
    }

    /// Reads the manifest of `epoch` and verifies every file it references.
    ///
    /// # Errors
    /// The first verification failure, naming the file at fault.
    pub fn verify_checkpoint(&self, epoch: u64) -> Result<Manifest> {
        let manifest = self.read_manifest(epoch)?;
        for handle in manifest.state_handles() {
            for file in &handle.files {
                self.verify_file(file, self.inner.options.verify_checksums)?;
            }
        }
        Ok(manifest)
    }
}

/// The store paths of every state file `manifest` references.
fn state_files(manifest: &Manifest) -> HashSet<String> {
    manifest
        .state_handles()
        .flat_map(|h| h.files.iter().map(|f| f.path.clone()))
        .collect()
}

fn check_size(path: &Path, file: &StoredFile, found: u64) -> Result<()> {
    if found != file.size {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected: file.size,
            found,
        });
    }
    Ok(())
}

fn check_crc(path: &Path, file: &StoredFile, found: u32) -> Result<()> {
    if found != file.crc32 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "CRC32 mismatch: handle says {:08x}, file has {found:08x}",
                file.crc32
            ),
        });
    }
    Ok(())
}

fn parse_manifest_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(MANIFEST_PREFIX)?
        .strip_suffix(MANIFEST_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Regular files of `dir`: (path, name, size). Names that are not UTF-8 are
/// skipped (this store never writes them).
fn list_files(dir: &Path) -> Result<Vec<(PathBuf, String, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        match entry.metadata() {
            Ok(meta) if meta.is_file() => out.push((entry.path(), name, meta.len())),
            _ => {}
        }
    }
    Ok(out)
}

fn remove(path: &Path, size: u64, report: &mut GcReport) {
    match fs::remove_file(path) {
        Ok(()) => {
            report.files_deleted += 1;
            report.bytes_deleted += size;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests;
