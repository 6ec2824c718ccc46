//! The messages that travel on an edge.
//!
//! Every edge is a bounded FIFO channel between one upstream instance and one
//! downstream instance. FIFO per edge is what makes epoch markers a consistent
//! cut (Chandy-Lamport): everything sent before `Marker(e)` on an edge belongs
//! to epoch `e`, everything after it to a later one.

use crate::record::{Record, Timestamp};

/// Why an epoch marker was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    /// A periodic checkpoint in continuous mode.
    Checkpoint,
    /// The end of a micro-batch.
    BatchEnd,
}

/// An epoch marker (barrier): the boundary between epoch `epoch` and the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochMarker {
    /// The epoch that ends at this marker.
    pub epoch: u64,
    /// Why it was injected.
    pub kind: MarkerKind,
}

/// Event-time progress: no record with event time at or below `time` will
/// follow on this edge (records that do are late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Event time in milliseconds.
    pub time: Timestamp,
    /// Creation time (ns since the Unix epoch) of the record whose arrival
    /// at the source let the watermark reach `time` (0: unknown). Results a
    /// watermark releases (window results, timers) carry it, so a sink
    /// measures "could be emitted -> visible" for them.
    pub created_ns: u64,
}

/// What an edge carries.
#[derive(Debug, Clone)]
pub enum Message<T> {
    /// One or more records, in order.
    Records(Vec<Record<T>>),
    /// Event-time progress on this edge.
    Watermark(Watermark),
    /// The sender has had no data for its idle timeout: until it sends
    /// records or a watermark again, the receiver does not wait for this
    /// edge's watermark.
    Idle,
    /// The end of an epoch on this edge.
    Marker(EpochMarker),
    /// The upstream instance finished; nothing follows.
    End,
}

impl<T> Message<T> {
    /// The same message with every record's value converted by `f`.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Message<U> {
        match self {
            Message::Records(batch) => Message::Records(
                batch
                    .into_iter()
                    .map(|r| Record {
                        value: f(r.value),
                        timestamp: r.timestamp,
                        created_ns: r.created_ns,
                    })
                    .collect(),
            ),
            Message::Watermark(w) => Message::Watermark(w),
            Message::Idle => Message::Idle,
            Message::Marker(m) => Message::Marker(m),
            Message::End => Message::End,
        }
    }
}
