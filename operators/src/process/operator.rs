//! The keyed process operator: runs a [`KeyedProcessFunction`] per key.
//!
//! State: one [`Slot`] per key (the function's state, its timeout, its TTL
//! deadline) in a [`KeyedTable`] named `process`, flushed and snapshotted
//! by the runtime at markers. Timers live in the runtime's timer service
//! under `(key, tag)` and are checkpointed with the table in the same
//! snapshot, so state and timers are always restored consistently.

use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::{Collector, Operator, OperatorContext, OperatorError, Record, Timer};

use super::context::{Call, FiredTimer, ProcessContext, Slot, TAG_TIMEOUT, TAG_TTL, TAG_USER};
use super::function::KeyedProcessFunction;
use crate::aggregate::StateKey;
use crate::state::{declared, open_table};

/// The keyed process operator (see the [module docs](super)).
pub struct KeyedProcess<T, K, F: KeyedProcessFunction<T, K>> {
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    f: F,
    ttl_ms: Option<i64>,
    table: Option<KeyedTable<K, Slot<F::State>>>,
}

impl<T, K, F: KeyedProcessFunction<T, K>> Clone for KeyedProcess<T, K, F> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            f: self.f.clone(),
            ttl_ms: self.ttl_ms,
            table: None,
        }
    }
}

impl<T, K, F: KeyedProcessFunction<T, K>> KeyedProcess<T, K, F> {
    /// Runs `f` per `key`.
    pub fn new(key: Arc<dyn Fn(&T) -> K + Send + Sync>, f: F) -> Self {
        let ttl_ms = f
            .state_ttl()
            .map(|d| (d.as_millis().min(i64::MAX as u128) as i64).max(1));
        Self {
            key,
            f,
            ttl_ms,
            table: None,
        }
    }

    /// The state table (unit tests count its entries).
    pub fn table_mut(&mut self) -> Option<&mut KeyedTable<K, Slot<F::State>>> {
        self.table.as_mut()
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("keyed process operator used before open")
}

impl<T, K, F> Operator<T, F::Out> for KeyedProcess<T, K, F>
where
    T: Send + 'static,
    K: StateKey,
    F: KeyedProcessFunction<T, K>,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.table = Some(open_table(ctx, "process")?);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }

    fn prefetch(&mut self, records: &[Record<T>]) {
        if let Some(table) = self.table.as_ref() {
            for r in records {
                table.prefetch(&(self.key)(&r.value));
            }
        }
    }

    fn prefetches(&self) -> bool {
        true
    }

    fn prefetch_timers(&mut self, timers: &[Timer]) {
        if let Some(table) = self.table.as_ref() {
            for t in timers {
                if let Ok((key, _)) = t.key::<(K, u8)>() {
                    table.prefetch(&key);
                }
            }
        }
    }

    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, F::Out>,
    ) -> Result<(), OperatorError> {
        let key = (self.key)(&record.value);
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let f = &mut self.f;
        let ttl = self.ttl_ms;
        table.update(&key, |slot| {
            let mut ctx = ProcessContext::open(&key, slot, out, ttl, Call::Record)?;
            f.process(record.value, &mut ctx)?;
            ctx.finish()
        })?
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, F::Out>,
    ) -> Result<(), OperatorError> {
        let (key, tag): (K, u8) = timer.key()?;
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let f = &mut self.f;
        let ttl = self.ttl_ms;
        let fired = FiredTimer {
            domain: timer.domain,
            time: timer.time,
        };
        table.update(&key, |slot| match tag {
            TAG_USER => {
                let mut ctx = ProcessContext::open(&key, slot, out, ttl, Call::Timer)?;
                f.on_timer(fired, &mut ctx)?;
                ctx.finish()
            }
            TAG_TIMEOUT => {
                let due = slot.as_ref().and_then(|s| s.timeout);
                let ours = due.is_some_and(|(d, t)| {
                    super::context::domain_of(d) == fired.domain && t == fired.time
                });
                if !ours {
                    // Replaced or cleared after it was registered.
                    return Ok(());
                }
                if let Some(s) = slot.as_mut() {
                    s.timeout = None;
                }
                let mut ctx = ProcessContext::open(&key, slot, out, ttl, Call::Timeout)?;
                f.on_timeout(&mut ctx)?;
                ctx.finish()
            }
            TAG_TTL => {
                let ctx = ProcessContext::open(&key, slot, out, ttl, Call::Timer)?;
                ctx.finish()
            }
            other => Err(OperatorError::new(format!(
                "keyed process: a timer with unknown tag {other}"
            ))),
        })?
    }
}
