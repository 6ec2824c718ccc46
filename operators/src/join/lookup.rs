//! The stream-table join against a static table: every record looks its
//! key up in a table loaded when the pipeline is built (from a `Vec`, or
//! from a file with `eddy_connectors::table_file`), shared read-only by all
//! instances. Spark's stream-static join; the table is not state (it is
//! rebuilt from its source on restart), so the join is stateless and adds
//! no checkpoint cost.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use eddy_runtime::{Collector, Data, Operator, OperatorError, Record, Stream};

/// A read-only table from key to value.
pub struct StaticTable<K, V> {
    rows: Arc<HashMap<K, V>>,
}

impl<K, V> Clone for StaticTable<K, V> {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.clone(),
        }
    }
}

impl<K: Hash + Eq, V> StaticTable<K, V> {
    /// The table of `rows`, keyed by `key` (a later row replaces an
    /// earlier one with the same key).
    pub fn new(rows: impl IntoIterator<Item = V>, key: impl Fn(&V) -> K) -> Self {
        let rows = rows.into_iter().map(|v| (key(&v), v)).collect();
        Self {
            rows: Arc::new(rows),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.rows.get(key)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Builds the output of a record and its key's value (`None` emits
/// nothing).
pub type LookupFn<T, V, O> = Arc<dyn Fn(T, Option<&V>) -> Option<O> + Send + Sync>;

/// The lookup operator: `build(record, value)` for each record.
pub struct LookupJoin<T, K, V, O> {
    table: StaticTable<K, V>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    build: LookupFn<T, V, O>,
}

impl<T, K, V, O> Clone for LookupJoin<T, K, V, O> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            key: self.key.clone(),
            build: self.build.clone(),
        }
    }
}

impl<T, K, V, O> Operator<T, O> for LookupJoin<T, K, V, O>
where
    T: Send + 'static,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    O: Send + 'static,
{
    #[inline]
    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        let key = (self.key)(&record.value);
        let value = self.table.get(&key);
        if let Some(o) = (self.build)(record.value, value) {
            out.emit(o);
        }
        Ok(())
    }
}

/// Joins a stream with a static table.
pub trait LookupJoins<T> {
    /// Each record with the value of its key in `table`, or `None`.
    fn lookup_left<K, V>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Stream<(T, Option<V>)>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Data + Sync;

    /// Each record whose key is in `table`, with its value; the others are
    /// dropped.
    fn lookup_inner<K, V>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Stream<(T, V)>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Data + Sync;

    /// Each record joined with the value of its key in `table` (or `None`)
    /// by `join`, which emits what it returns: a lookup and the function
    /// applied to its result in one operator, so the pair is never built
    /// and sent on (Flink's join function, Spark's map after a
    /// stream-static join).
    fn lookup_with<K, V, O>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        join: impl Fn(T, Option<&V>) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        O: Data;
}

impl<T: Data> LookupJoins<T> for Stream<T> {
    fn lookup_with<K, V, O>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        join: impl Fn(T, Option<&V>) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        O: Data,
    {
        let op = LookupJoin {
            table,
            key: Arc::new(key),
            build: Arc::new(join),
        };
        self.transform("lookup_join", op)
    }

    fn lookup_left<K, V>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Stream<(T, Option<V>)>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Data + Sync,
    {
        let op = LookupJoin {
            table,
            key: Arc::new(key),
            build: Arc::new(|t, v: Option<&V>| Some((t, v.cloned()))),
        };
        self.transform("lookup_join", op)
    }

    fn lookup_inner<K, V>(
        self,
        table: StaticTable<K, V>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Stream<(T, V)>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Data + Sync,
    {
        let op = LookupJoin {
            table,
            key: Arc::new(key),
            build: Arc::new(|t, v: Option<&V>| Some((t, v?.clone()))),
        };
        self.transform("lookup_join", op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_runtime::timers::{ProcessingClock, TimerService};
    use eddy_runtime::Output;

    #[test]
    fn left_keeps_misses_and_inner_drops_them() {
        let table = StaticTable::new(vec![(1u32, "pump"), (2, "valve")], |r| r.0);
        let mut left = LookupJoin::<u32, u32, (u32, &str), (u32, Option<(u32, &str)>)> {
            table: table.clone(),
            key: Arc::new(|t: &u32| *t),
            build: Arc::new(|t, v: Option<&(u32, &str)>| Some((t, v.cloned()))),
        };
        let mut inner = LookupJoin::<u32, u32, (u32, &str), (u32, (u32, &str))> {
            table,
            key: Arc::new(|t: &u32| *t),
            build: Arc::new(|t, v: Option<&(u32, &str)>| Some((t, *v?))),
        };
        let clock = ProcessingClock::new();
        let mut timers = TimerService::in_memory();
        let mut lo = Output::default();
        let mut io = Output::default();
        for k in [1u32, 3, 2] {
            let mut c = Collector::new(&mut lo, &mut timers, &clock, i64::MIN);
            left.process(Record::new(k), &mut c).unwrap();
            let mut c = Collector::new(&mut io, &mut timers, &clock, i64::MIN);
            inner.process(Record::new(k), &mut c).unwrap();
        }
        let l: Vec<_> = lo.main.into_iter().map(|r| r.value).collect();
        let i: Vec<_> = io.main.into_iter().map(|r| r.value).collect();
        assert_eq!(
            l,
            vec![(1, Some((1, "pump"))), (3, None), (2, Some((2, "valve")))]
        );
        assert_eq!(i, vec![(1, (1, "pump")), (2, (2, "valve"))]);
    }
}
