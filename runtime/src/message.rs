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

/// What an edge carries.
#[derive(Debug, Clone)]
pub enum Message<T> {
    /// One or more records, in order.
    Records(Vec<Record<T>>),
    /// No record with event time at or below this will follow on this edge.
    Watermark(Timestamp),
    /// The end of an epoch on this edge.
    Marker(EpochMarker),
    /// The upstream instance finished; nothing follows.
    End,
}
