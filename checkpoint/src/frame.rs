//! Length + CRC32 framing of files written outside RocksDB (manifests,
//! in-memory snapshots, and whatever the runtime stores beside them).
//!
//! # Format
//! ```text
//! offset  size  field
//! 0       4     magic  b"EDDY"
//! 4       1     frame version (FRAME_VERSION)
//! 5       8     payload length, u64 little-endian
//! 13      4     CRC32 (crc32fast) of the payload, u32 little-endian
//! 17      len   payload
//! ```
//!
//! # Invariants
//! - A frame is written with [`write_frame`], i.e. atomically and durably
//!   (temp file, fsync, rename, fsync directory; see [`crate::durable`]).
//! - [`read_frame`] returns the payload only if the magic, version, length
//!   and CRC all verify; otherwise it returns an error naming the file:
//!   [`Error::Truncated`] (torn or cut file, extra bytes), [`Error::Corrupt`]
//!   (bad magic or CRC), [`Error::UnsupportedFrameVersion`] (a frame this
//!   build cannot read — never misread).
//! - The payload itself is usually a versioned [`codec`](crate::codec) frame,
//!   so both the container and its contents carry a format version.

use std::fs;
use std::path::Path;

use crate::durable::{self, DirSync};
use crate::error::{Error, Result};

/// The four bytes every frame starts with.
pub const FRAME_MAGIC: [u8; 4] = *b"EDDY";

/// The frame version this build writes (and the only one it reads).
pub const FRAME_VERSION: u8 = 1;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 17;

/// The frame of `payload`: header followed by the payload.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&FRAME_MAGIC);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies the frame `bytes` read from `path` and returns its payload.
pub fn decode_frame<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        if !bytes.is_empty() && !FRAME_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(corrupt("bad magic".into()));
        }
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if header[..4] != FRAME_MAGIC {
        return Err(corrupt(format!("bad magic {:02x?}", &header[..4])));
    }
    if header[4] != FRAME_VERSION {
        return Err(Error::UnsupportedFrameVersion {
            path: path.to_path_buf(),
            found: header[4],
            supported: FRAME_VERSION,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[5..13]);
    let len = u64::from_le_bytes(len);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&header[13..17]);
    let crc = u32::from_le_bytes(crc);
    if payload.len() as u64 != len {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64 + len,
            found: bytes.len() as u64,
        });
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(corrupt(format!(
            "CRC32 mismatch: header says {crc:08x}, payload has {actual:08x}"
        )));
    }
    Ok(payload)
}

/// Writes `payload` framed to `path`, atomically and durably. Returns the
/// number of bytes the file has.
pub fn write_frame(path: &Path, payload: &[u8], dir_sync: DirSync) -> Result<u64> {
    let bytes = encode_frame(payload);
    durable::write_bytes(path, &bytes, dir_sync)?;
    Ok(bytes.len() as u64)
}

/// Reads and verifies the framed file at `path`; returns its payload.
pub fn read_frame(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = fs::read(path).map_err(|e| durable::not_found_as_missing(path, e))?;
    let payload_len = decode_frame(path, &bytes)?.len();
    bytes.drain(..HEADER_LEN);
    debug_assert_eq!(bytes.len(), payload_len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(payload: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.frame");
        write_frame(&path, payload, DirSync::Now).unwrap();
        (dir, path)
    }

    #[test]
    fn round_trip() {
        let (_d, path) = written(b"hello frames");
        assert_eq!(read_frame(&path).unwrap(), b"hello frames");
        let (_d, path) = written(b"");
        assert_eq!(read_frame(&path).unwrap(), b"");
    }

    #[test]
    fn every_single_flipped_byte_is_detected() {
        let payload: Vec<u8> = (0..40u8).collect();
        let good = encode_frame(&payload);
        let path = Path::new("/store/x.frame");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            let err = decode_frame(path, &bad).unwrap_err();
            assert!(
                err.to_string().contains("/store/x.frame"),
                "byte {i}: {err}"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = encode_frame(b"some payload bytes");
        let path = Path::new("/store/x.frame");
        for cut in 0..good.len() {
            match decode_frame(path, &good[..cut]) {
                Err(Error::Truncated { path: p, .. }) => assert_eq!(p, path),
                other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
            }
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_frame(path, &long),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_frame_version_is_refused() {
        let mut bytes = encode_frame(b"x");
        bytes[4] = FRAME_VERSION + 1;
        match decode_frame(Path::new("f"), &bytes) {
            Err(Error::UnsupportedFrameVersion { found, .. }) => {
                assert_eq!(found, FRAME_VERSION + 1)
            }
            other => panic!("expected UnsupportedFrameVersion, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert!(matches!(read_frame(&path), Err(Error::Missing { .. })));
    }
}
