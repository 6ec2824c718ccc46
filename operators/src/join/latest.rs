//! The stream-table join against a changelog: a keyed stream enriched with
//! the latest value per key of a second keyed stream (the table's
//! changelog), kept in state. Flink's lookup of a changing table, or
//! Spark's stream-static join with a table that is refreshed.
//!
//! # Semantics
//! - A table record replaces its key's value (`R` may be an `Option` whose
//!   `None` the `build` function treats as a deletion).
//! - A stream record is joined with its key's value *as of its arrival* at
//!   the operator (processing time): a table update that arrives later
//!   does not revise results already emitted. Which value a record meets
//!   therefore depends on how the two inputs interleave; the join is
//!   exactly-once (state and inputs are checkpointed together at aligned
//!   markers, so a recovered query replays the same interleaving from the
//!   same state) but not a function of event time.
//! - Missing key: the inner join drops the record, the left join emits it
//!   with `None`.
//! - State: one value per table key, for as long as the query runs (a
//!   table is expected to be bounded by its key space).

use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::two_input::TwoInputOperator;
use eddy_runtime::{Collector, OperatorContext, OperatorError, Record};
use serde::{de::DeserializeOwned, Serialize};

use crate::aggregate::StateKey;
use crate::state::{declared, open_table};

/// Builds the output of a stream record and its key's table value.
pub type LatestFn<L, R, O> = Arc<dyn Fn(L, Option<R>) -> Option<O> + Send + Sync>;

/// The latest-value join operator (see the module docs).
pub struct LatestJoin<L, R, K, O> {
    left_key: Arc<dyn Fn(&L) -> K + Send + Sync>,
    right_key: Arc<dyn Fn(&R) -> K + Send + Sync>,
    build: LatestFn<L, R, O>,
    table: Option<KeyedTable<K, R>>,
}

impl<L, R, K, O> Clone for LatestJoin<L, R, K, O> {
    fn clone(&self) -> Self {
        Self {
            left_key: self.left_key.clone(),
            right_key: self.right_key.clone(),
            build: self.build.clone(),
            table: None,
        }
    }
}

impl<L, R, K, O> LatestJoin<L, R, K, O> {
    /// Joins stream records (key `left_key`) with the latest table record
    /// of their key (key `right_key`) through `build`.
    pub fn new(
        left_key: Arc<dyn Fn(&L) -> K + Send + Sync>,
        right_key: Arc<dyn Fn(&R) -> K + Send + Sync>,
        build: LatestFn<L, R, O>,
    ) -> Self {
        Self {
            left_key,
            right_key,
            build,
            table: None,
        }
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("latest join used before open")
}

impl<L, R, K, O> TwoInputOperator<L, R, O> for LatestJoin<L, R, K, O>
where
    L: Send + 'static,
    R: Clone + Serialize + DeserializeOwned + Send + 'static,
    K: StateKey,
    O: Send + 'static,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.table = Some(open_table(ctx, "table")?);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }

    fn process_left(
        &mut self,
        record: Record<L>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        let key = (self.left_key)(&record.value);
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let value = table.get(&key)?.cloned();
        if let Some(o) = (self.build)(record.value, value) {
            out.emit(o);
        }
        Ok(())
    }

    fn process_right(
        &mut self,
        record: Record<R>,
        _out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        let key = (self.right_key)(&record.value);
        let table = self.table.as_mut().ok_or_else(not_open)?;
        table.put(key, record.value)?;
        Ok(())
    }
}
