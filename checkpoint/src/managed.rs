//! [`ManagedState`]: state the runtime flushes at epoch markers.
//!
//! An operator declares its tables (`Operator::tables` in the runtime); at
//! every aligned marker the runtime begins the flush of each one in O(1)
//! and then advances them a step at a time between input batches, so no
//! operator drives the checkpoint protocol itself and no marker stalls the
//! task.

use std::hash::Hash;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;
use crate::table::KeyedTable;

/// State that is flushed to its backend at epoch markers, in steps.
pub trait ManagedState: Send {
    /// Closes the current epoch's changes in O(1); they are written by
    /// [`flush_step`](Self::flush_step) with their values as of now.
    fn begin_flush(&mut self) -> Result<()>;

    /// Encodes about `budget` entries of the pending flush and writes it
    /// when all are. Returns whether nothing is pending any more.
    fn flush_step(&mut self, budget: usize) -> Result<bool>;
}

impl<K, V> ManagedState for KeyedTable<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    V: Serialize + DeserializeOwned + Send,
{
    fn begin_flush(&mut self) -> Result<()> {
        KeyedTable::begin_flush(self)
    }

    fn flush_step(&mut self, budget: usize) -> Result<bool> {
        KeyedTable::flush_step(self, budget)
    }
}

impl<K, UK, V> ManagedState for crate::map::MapTable<K, UK, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    UK: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    V: Serialize + DeserializeOwned + Send,
{
    fn begin_flush(&mut self) -> Result<()> {
        self.table_mut().begin_flush()
    }

    fn flush_step(&mut self, budget: usize) -> Result<bool> {
        self.table_mut().flush_step(budget)
    }
}
