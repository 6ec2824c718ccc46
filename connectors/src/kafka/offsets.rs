//! Where a Kafka source starts, and its per-partition read positions as
//! stored in a checkpoint.
//!
//! The checkpoint form is a version byte, then a little-endian `u32` count of
//! entries, each `u16` topic length, topic bytes, `i32` partition and `i64`
//! next offset to read. The manifest around it is CRC-framed, so damage is
//! caught there; this decoder refuses anything that does not parse exactly.

use std::collections::BTreeMap;

use eddy_runtime::OperatorError;

/// Where a source instance starts reading a partition the checkpoint does
/// not cover (a fresh start, or a partition added since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// The end: only messages produced after the source started.
    Latest,
    /// The first message whose timestamp is at or after this instant
    /// (milliseconds since the Unix epoch); the end if there is none.
    Timestamp(i64),
    /// The offsets last committed by the source's consumer group; the
    /// earliest message where the group has none.
    Committed,
}

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The next offset to read, per partition.
pub type Positions = BTreeMap<TopicPartition, i64>;

const VERSION: u8 = 1;

/// Encodes `positions` for a checkpoint.
pub fn encode(positions: &Positions) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + positions.len() * 24);
    out.push(VERSION);
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    for ((topic, partition), offset) in positions {
        let t = topic.as_bytes();
        let len = u16::try_from(t.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&t[..len as usize]);
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], OperatorError> {
    if bytes.len() < n {
        return Err(OperatorError::new(
            "kafka source: the checkpointed offsets are truncated",
        ));
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

/// Decodes what [`encode`] wrote.
///
/// # Errors
/// Another version, truncated or trailing bytes, a topic that is not UTF-8.
pub fn decode(mut bytes: &[u8]) -> Result<Positions, OperatorError> {
    let version = take(&mut bytes, 1)?[0];
    if version != VERSION {
        return Err(OperatorError::new(format!(
            "kafka source: checkpointed offsets of unknown version {version}"
        )));
    }
    let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
    let mut out = Positions::new();
    for _ in 0..count {
        let len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().expect("2 bytes"));
        let topic = std::str::from_utf8(take(&mut bytes, len as usize)?)
            .map_err(|_| OperatorError::new("kafka source: a checkpointed topic is not UTF-8"))?
            .to_string();
        let partition = i32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
        let offset = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().expect("8 bytes"));
        out.insert((topic, partition), offset);
    }
    if !bytes.is_empty() {
        return Err(OperatorError::new(format!(
            "kafka source: {} unexpected bytes after the checkpointed offsets",
            bytes.len()
        )));
    }
    Ok(out)
}

/// Whether instance `index` of `count` reads the `nth` of the sorted
/// partitions: partitions are dealt round-robin, so partition `n` of a
/// single topic goes to instance `n % count`.
pub fn owns(nth: usize, index: usize, count: usize) -> bool {
    count > 0 && nth % count == index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut p = Positions::new();
        p.insert(("in".into(), 0), 17);
        p.insert(("in".into(), 3), 0);
        p.insert(("other".into(), 1), i64::MAX);
        let bytes = encode(&p);
        assert_eq!(decode(&bytes).unwrap(), p);
        assert!(decode(&encode(&Positions::new())).unwrap().is_empty());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert!(decode(&v2).is_err());
    }

    #[test]
    fn partitions_are_dealt_round_robin() {
        let mine: Vec<usize> = (0..8).filter(|&n| owns(n, 1, 3)).collect();
        assert_eq!(mine, vec![1, 4, 7]);
        assert!(!owns(0, 0, 0));
    }
}
