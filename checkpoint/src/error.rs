//! Errors of the state and checkpoint layer.

use std::path::PathBuf;

/// Errors raised by state backends, the codec and the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Encoding a key or value failed.
    #[error("encode error: {0}")]
    Encode(String),
    /// Bytes could not be decoded (corrupt, truncated, or of another type).
    #[error("decode error: {0}")]
    Decode(String),
    /// A frame carries a format version this build does not understand.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build writes and reads.
        supported: u8,
    },
    /// A table was asked to write (flush, scan) while the flush begun at a
    /// marker is not finished: the write would put post-marker values into
    /// the marker's snapshot. Finish it with `flush_step` first.
    #[error("a state table flush begun at a marker is still in progress")]
    FlushInProgress,
    /// The storage engine reported an error.
    #[error("state backend error: {0}")]
    Backend(String),
    /// A file's contents fail verification (bad magic, CRC mismatch, bytes
    /// that do not decode). The file must not be used.
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not verify.
        reason: String,
    },
    /// A file is shorter (or longer) than its header or its handle says: a
    /// torn write or a truncated copy.
    #[error("truncated file {path}: expected {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The length the header or handle records.
        expected: u64,
        /// The length found.
        found: u64,
    },
    /// A file a checkpoint references does not exist.
    #[error("missing file {path}")]
    Missing {
        /// The file that should exist.
        path: PathBuf,
    },
    /// A framed file carries a frame version this build does not understand.
    #[error("unsupported frame version {found} in {path} (this build reads version {supported})")]
    UnsupportedFrameVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u8,
        /// The version this build writes and reads.
        supported: u8,
    },
    /// A snapshot handle was given to a backend that cannot restore it (for
    /// example a RocksDB handle to the in-memory factory), or a restore was
    /// asked for without a checkpoint store to read from.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// A manifest was written whose epoch does not exceed a valid manifest
    /// already in the store: epochs must increase over the life of a store.
    #[error("epoch {epoch} is not above the existing valid checkpoint {existing}")]
    EpochNotIncreasing {
        /// The epoch of the manifest being written.
        epoch: u64,
        /// The newer (or equal) valid checkpoint already stored.
        existing: u64,
    },
}

impl Error {
    /// Whether this error says a file is damaged (corrupt, truncated,
    /// missing, undecodable, of an unknown format version), as opposed to
    /// the store being unreadable right now (other I/O errors). Recovery
    /// falls back past a damaged checkpoint, but refuses to start on an
    /// I/O error: the checkpoint may be fine, and falling back past it
    /// would retract output it covers.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::Truncated { .. }
                | Error::Missing { .. }
                | Error::Decode(_)
                | Error::UnsupportedVersion { .. }
                | Error::UnsupportedFrameVersion { .. }
        )
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Backend(e.into_string())
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
