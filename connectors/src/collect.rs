//! In-memory sinks.

use std::sync::{Arc, Mutex};

use eddy_runtime::{OperatorError, Record, Sink};

/// Keeps every value it receives, in arrival order (per instance; instances
/// interleave). Clones share the same buffer, so keep one clone to read the
/// output while and after the query runs.
///
/// Its memory grows with every record it receives, for as long as the query
/// runs: it is meant for tests and bounded inputs. A long-running query that
/// wants its latest results in memory uses [`TableSink`](crate::TableSink),
/// which keeps one value per key.
pub struct CollectSink<T> {
    values: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
        }
    }
}

impl<T> Default for CollectSink<T> {
    fn default() -> Self {
        Self {
            values: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectSink<T> {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn values(&self) -> Vec<T> {
        self.values.lock().expect("collect sink lock").clone()
    }

    /// Number of values received so far.
    pub fn len(&self) -> usize {
        self.values.lock().expect("collect sink lock").len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn write(&mut self, records: Vec<Record<T>>) -> Result<(), OperatorError> {
        let mut v = self.values.lock().expect("collect sink lock");
        v.extend(records.into_iter().map(|r| r.value));
        Ok(())
    }
}

/// Drops every record. The runtime still counts them and records their
/// end-to-end latency, which is what benchmarks need.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

impl<T: Send + 'static> Sink<T> for DiscardSink {
    fn write(&mut self, _records: Vec<Record<T>>) -> Result<(), OperatorError> {
        Ok(())
    }
}
