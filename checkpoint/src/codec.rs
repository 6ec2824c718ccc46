//! The one codec for state: serde + bincode 2, with a version byte in front of
//! every frame so that a later format swap is a change to this module only.
//! Data of an unknown version is refused with [`Error::UnsupportedVersion`],
//! never misread.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The format version this build writes (and the only one it reads).
pub const FORMAT_VERSION: u8 = 1;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes `value` as a versioned frame.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the bincode body of `value` (no version byte) to `out`.
/// Used for keys, whose byte order must not depend on a header.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a versioned frame produced by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| Error::Decode("empty frame".into()))?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    decode_body(body)
}

/// Decodes a bincode body written by [`encode_into`]; the whole input must be consumed.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (value, read) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| Error::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after value",
            body.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (42u64, "sensor-7".to_string(), vec![1.5f64, -2.0]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<f64>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut bytes = encode(&7u32).unwrap();
        bytes[0] = 9;
        match decode::<u32>(&bytes) {
            Err(Error::UnsupportedVersion {
                found: 9,
                supported,
            }) => {
                assert_eq!(supported, FORMAT_VERSION)
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let bytes = encode(&"a longer string".to_string()).unwrap();
        assert!(decode::<String>(&bytes[..bytes.len() - 3]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode::<String>(&extra).is_err());
        assert!(decode::<String>(&[]).is_err());
    }
}
