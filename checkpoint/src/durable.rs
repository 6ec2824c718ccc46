//! Durable, atomic file writes: the one way this crate puts a file on disk.
//!
//! # Protocol
//! A file `dir/name` is written as
//! 1. create `dir/name.tmp-<pid>-<n>` (a name no other writer uses),
//! 2. write the contents, `fsync` the file,
//! 3. `rename` it over `dir/name` (atomic on POSIX file systems),
//! 4. `fsync` `dir`, so the rename itself survives a crash.
//!
//! # Invariants
//! - A reader never sees a half-written `dir/name`: it sees the old file, the
//!   new one, or none. A crash can leave a temporary file behind; those are
//!   recognised by [`is_temp`] and collected by the checkpoint store.
//! - Step 4 may be deferred when many files go to one directory
//!   ([`DirSync::Deferred`]); the caller then calls [`sync_dir`] once before
//!   it reports the files durable.
//! - Every error names the path it concerns.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The marker in the name of a temporary file.
const TEMP_MARKER: &str = ".tmp-";

/// Size of the buffer used to copy files.
const COPY_BUF: usize = 1 << 20;

/// Whether [`write_atomic`] syncs the directory itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSync {
    /// Sync the directory before returning: the file is durable on return.
    Now,
    /// Leave it to the caller, who calls [`sync_dir`] after a group of files.
    Deferred,
}

/// Whether `name` (a file name) is a temporary file of [`write_atomic`].
pub fn is_temp(name: &str) -> bool {
    name.contains(TEMP_MARKER)
}

/// The final name a temporary file was written for (`None` if `name` is not
/// a temporary file).
pub fn temp_target(name: &str) -> Option<&str> {
    name.find(TEMP_MARKER).map(|i| &name[..i])
}

fn temp_path(path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Corrupt {
            path: path.to_path_buf(),
            reason: "not a file name this store writes".into(),
        })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!("{name}{TEMP_MARKER}{}-{n}", std::process::id())))
}

/// `fsync`s the directory `dir`, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `path` atomically and durably (see the module doc): `write` fills
/// the temporary file; on any error the temporary file is removed and `path`
/// is left as it was.
pub fn write_atomic<T>(
    path: &Path,
    dir_sync: DirSync,
    write: impl FnOnce(&mut File, &Path) -> Result<T>,
) -> Result<T> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = write(&mut file, &tmp)?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(out)
    })();
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if dir_sync == DirSync::Now {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    result
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_bytes(path: &Path, bytes: &[u8], dir_sync: DirSync) -> Result<()> {
    write_atomic(path, dir_sync, |file, tmp| {
        file.write_all(bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// What [`copy_with_crc`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes copied.
    pub size: u64,
    /// CRC32 of the bytes copied.
    pub crc32: u32,
}

/// Copies the file `src` to `dst`, computing the size and CRC32 of the bytes
/// on the way. The copy is plain (not atomic, not synced): callers wrap it in
/// [`write_atomic`] when the destination must be durable.
pub fn copy_with_crc(src: &Path, dst: &mut impl Write, dst_path: &Path) -> Result<Copied> {
    let mut input = File::open(src).map_err(|e| not_found_as_missing(src, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; COPY_BUF];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| Error::io(dst_path, e))?;
        size += n as u64;
    }
    Ok(Copied {
        size,
        crc32: hasher.finalize(),
    })
}

/// Size and CRC32 of the file at `path`.
pub fn checksum_file(path: &Path) -> Result<Copied> {
    copy_with_crc(path, &mut std::io::sink(), path)
}

/// Maps "not found" to [`Error::Missing`], anything else to [`Error::Io`].
pub fn not_found_as_missing(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Missing {
            path: path.to_path_buf(),
        }
    } else {
        Error::io(path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_bytes(&path, b"one", DirSync::Now).unwrap();
        write_bytes(&path, b"two", DirSync::Now).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["f".to_string()]);
    }

    #[test]
    fn failed_write_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_bytes(&path, b"old", DirSync::Now).unwrap();
        let r: Result<()> = write_atomic(&path, DirSync::Now, |f, tmp| {
            f.write_all(b"partial").map_err(|e| Error::io(tmp, e))?;
            Err(Error::Backend("injected".into()))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_are_recognised() {
        let tmp = temp_path(Path::new("/x/chk-1.manifest")).unwrap();
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(is_temp(name));
        assert_eq!(temp_target(name), Some("chk-1.manifest"));
        assert!(!is_temp("000012.sst"));
    }

    #[test]
    fn write_into_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/f");
        let err = write_bytes(&path, b"x", DirSync::Now).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
