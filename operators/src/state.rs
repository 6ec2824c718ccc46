//! How operators open and declare their keyed state tables: one table over
//! the instance's state backend, declared to the runtime, which flushes it
//! at markers.

use std::hash::Hash;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::{OperatorContext, OperatorError};
use serde::{de::DeserializeOwned, Serialize};

/// Takes the instance's state backend and builds the table `name` over it,
/// with the configured cache capacity.
pub(crate) fn open_table<K, V>(
    ctx: &mut OperatorContext,
    name: &str,
) -> Result<KeyedTable<K, V>, OperatorError>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    let backend = ctx
        .take_state_backend()
        .ok_or_else(|| OperatorError::new("no state backend"))?;
    Ok(KeyedTable::new(backend, name).with_cache_capacity(ctx.state_cache_capacity))
}

/// The table, once opened, as the list `Operator::tables` returns.
pub(crate) fn declared<T: ManagedState>(table: &mut Option<T>) -> Vec<&mut dyn ManagedState> {
    table
        .as_mut()
        .map(|t| t as &mut dyn ManagedState)
        .into_iter()
        .collect()
}
