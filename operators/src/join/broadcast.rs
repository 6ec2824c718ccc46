//! Broadcast state: a small, changing set of rules or thresholds (per-sensor
//! alert limits, say) sent to every instance of an operator, which reads
//! the latest rule set while it processes its share of the main stream
//! (Flink's broadcast state pattern).
//!
//! # Semantics
//! - Every instance receives every rule record (the second input is
//!   broadcast); a rule replaces the earlier rule with the same rule key.
//! - Each instance keeps the rules in state (a table, checkpointed with
//!   its markers, plus an in-memory map read on every record), so a
//!   recovered query sees exactly the rules of its checkpoint.
//! - A main record sees the rules that arrived before it at its instance:
//!   like the latest-value join, processing-time semantics across the two
//!   inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::two_input::TwoInputOperator;
use eddy_runtime::{Collector, Data, OperatorContext, OperatorError, Record, Stream};
use serde::{de::DeserializeOwned, Serialize};

use crate::aggregate::StateKey;
use crate::state::{declared, open_table};

/// What a main record becomes, given the current rules.
pub type RulesFn<T, RK, R, O> = Arc<dyn Fn(T, &BTreeMap<RK, R>) -> Option<O> + Send + Sync>;

/// The broadcast-state operator (see the module docs).
pub struct BroadcastProcess<T, RK, R, O> {
    rule_key: Arc<dyn Fn(&R) -> RK + Send + Sync>,
    f: RulesFn<T, RK, R, O>,
    rules: BTreeMap<RK, R>,
    table: Option<KeyedTable<RK, R>>,
}

impl<T, RK, R, O> Clone for BroadcastProcess<T, RK, R, O> {
    fn clone(&self) -> Self {
        Self {
            rule_key: self.rule_key.clone(),
            f: self.f.clone(),
            rules: BTreeMap::new(),
            table: None,
        }
    }
}

impl<T, RK, R, O> BroadcastProcess<T, RK, R, O> {
    /// Rules keyed by `rule_key`; each main record goes through `f`.
    pub fn new(rule_key: Arc<dyn Fn(&R) -> RK + Send + Sync>, f: RulesFn<T, RK, R, O>) -> Self {
        Self {
            rule_key,
            f,
            rules: BTreeMap::new(),
            table: None,
        }
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("broadcast operator used before open")
}

impl<T, RK, R, O> TwoInputOperator<T, R, O> for BroadcastProcess<T, RK, R, O>
where
    T: Send + 'static,
    RK: StateKey + Ord,
    R: Clone + Serialize + DeserializeOwned + Send + 'static,
    O: Send + 'static,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        let mut table: KeyedTable<RK, R> = open_table(ctx, "rules")?;
        let mut rules = BTreeMap::new();
        table.for_each(|k, v| {
            rules.insert(k, v);
            Ok(())
        })?;
        self.rules = rules;
        self.table = Some(table);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }

    #[inline]
    fn process_left(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        if let Some(o) = (self.f)(record.value, &self.rules) {
            out.emit(o);
        }
        Ok(())
    }

    fn process_right(
        &mut self,
        record: Record<R>,
        _out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        let key = (self.rule_key)(&record.value);
        let table = self.table.as_mut().ok_or_else(not_open)?;
        table.put(key.clone(), record.value.clone())?;
        self.rules.insert(key, record.value);
        Ok(())
    }
}

/// Broadcast state on streams.
pub trait WithBroadcast<T> {
    /// Every record of this stream goes through `f` with the latest rule
    /// per rule key received from `rules`, which every instance receives.
    fn with_broadcast<R, RK, O>(
        self,
        name: &str,
        rules: Stream<R>,
        rule_key: impl Fn(&R) -> RK + Send + Sync + 'static,
        f: impl Fn(T, &BTreeMap<RK, R>) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O>
    where
        R: Data + Serialize + DeserializeOwned,
        RK: StateKey + Ord,
        O: Data;
}

impl<T: Data> WithBroadcast<T> for Stream<T> {
    fn with_broadcast<R, RK, O>(
        self,
        name: &str,
        rules: Stream<R>,
        rule_key: impl Fn(&R) -> RK + Send + Sync + 'static,
        f: impl Fn(T, &BTreeMap<RK, R>) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O>
    where
        R: Data + Serialize + DeserializeOwned,
        RK: StateKey + Ord,
        O: Data,
    {
        let op = BroadcastProcess::new(Arc::new(rule_key), Arc::new(f));
        self.connect(rules.broadcast()).transform(name, op)
    }
}
