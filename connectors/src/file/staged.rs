//! What the exactly-once file sink records, in each checkpoint, about its
//! staged epochs: every epoch staged and not yet committed, with the size
//! and CRC32 of its file. The record travels in the sink's pre-commit
//! information, inside the CRC-framed manifest; at restore, every staged
//! file the sink is about to commit is checked against it, so damaged
//! staged output is refused by name instead of committed.

use std::path::Path;

use eddy_runtime::OperatorError;

/// One staged epoch's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StagedEpoch {
    /// The epoch.
    pub epoch: u64,
    /// The file's length in bytes.
    pub size: u64,
    /// CRC32 (crc32fast) of the whole file.
    pub crc32: u32,
}

const RECORD: usize = 8 + 8 + 4;
const VERSION: u8 = 1;

/// Encodes `staged` (version byte, then fixed-size little-endian records).
pub(crate) fn encode(staged: &[StagedEpoch]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + staged.len() * RECORD);
    out.push(VERSION);
    for s in staged {
        out.extend_from_slice(&s.epoch.to_le_bytes());
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.crc32.to_le_bytes());
    }
    out
}

/// Decodes what [`encode`] wrote. Empty bytes: nothing staged (a
/// checkpoint taken before the sink recorded its staged epochs).
///
/// # Errors
/// Bytes of another version or length.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<StagedEpoch>, OperatorError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Ok(Vec::new());
    };
    if version != VERSION || body.len() % RECORD != 0 {
        return Err(OperatorError::new(format!(
            "file sink: the checkpoint's record of staged epochs does not decode \
             (version {version}, {} bytes)",
            body.len()
        )));
    }
    Ok(body
        .chunks_exact(RECORD)
        .map(|c| StagedEpoch {
            epoch: u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
            size: u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")),
            crc32: u32::from_le_bytes(c[16..20].try_into().expect("4 bytes")),
        })
        .collect())
}

/// Checks the staged file at `path` against its record.
///
/// # Errors
/// The file is unreadable, or its size or CRC32 differ: the error names it.
pub(crate) fn verify(path: &Path, record: &StagedEpoch) -> Result<(), OperatorError> {
    let sum = eddy_checkpoint::durable::checksum_file(path)
        .map_err(|e| OperatorError::new(format!("file sink: {e}")))?;
    let (size, crc) = (sum.size, sum.crc32);
    if size != record.size || crc != record.crc32 {
        return Err(OperatorError::new(format!(
            "file sink: staged output {} does not match the checkpoint's record \
             (expected {} bytes, CRC32 {:08x}; found {} bytes, CRC32 {crc:08x}): \
             refusing to commit it",
            path.display(),
            record.size,
            record.crc32,
            size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let staged = vec![
            StagedEpoch {
                epoch: 3,
                size: 10,
                crc32: 0xdead_beef,
            },
            StagedEpoch {
                epoch: 4,
                size: 0,
                crc32: 0,
            },
        ];
        assert_eq!(decode(&encode(&staged)).unwrap(), staged);
        assert!(decode(&[]).unwrap().is_empty());
        let mut bad = encode(&staged);
        bad.pop();
        assert!(decode(&bad).is_err());
        bad = encode(&staged);
        bad[0] = 9;
        assert!(decode(&bad).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epoch");
        std::fs::write(&p, b"1\n2\n").unwrap();
        let ok = StagedEpoch {
            epoch: 1,
            size: 4,
            crc32: crc32fast::hash(b"1\n2\n"),
        };
        verify(&p, &ok).unwrap();
        std::fs::write(&p, b"1\n3\n").unwrap();
        let e = verify(&p, &ok).unwrap_err();
        assert!(e.message.contains("epoch"), "{e}");
    }
}
