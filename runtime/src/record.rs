//! Records and the engine clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// What a value must be to travel on an edge: owned, sendable, clonable
/// (fan-out to several consumers clones it).
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// Event time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The event time of a record that has none.
pub const NO_TIMESTAMP: Timestamp = i64::MIN;

/// A value in flight, with the metadata the runtime carries for it.
///
/// Outputs inherit the metadata of the input record that produced them, so
/// the creation time stamped at a source reaches the sink through any chain
/// of operators and end-to-end latency can be measured without user code.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The user's value.
    pub value: T,
    /// Event time, or [`NO_TIMESTAMP`].
    pub timestamp: Timestamp,
    /// Creation time at the source in nanoseconds since the Unix epoch
    /// (0: unknown, not measured).
    pub created_ns: u64,
}

impl<T> Record<T> {
    /// A record without event time or creation time.
    pub fn new(value: T) -> Self {
        Self {
            value,
            timestamp: NO_TIMESTAMP,
            created_ns: 0,
        }
    }

    /// A record stamped with a creation time (for latency measurement).
    pub fn created_at(value: T, created_ns: u64) -> Self {
        Self {
            value,
            timestamp: NO_TIMESTAMP,
            created_ns,
        }
    }

    /// The same metadata around another value.
    pub fn with_value<U>(&self, value: U) -> Record<U> {
        Record {
            value,
            timestamp: self.timestamp,
            created_ns: self.created_ns,
        }
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch: the clock of creation
/// stamps, comparable across processes on one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
