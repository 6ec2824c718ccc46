//! Running keyed aggregations.
//!
//! One operator, [`KeyedAggregate`], runs every aggregation: it keeps one
//! accumulator per key in a [`KeyedTable`] (a cache in front of the instance's
//! state backend), folds each record into its key's accumulator and emits
//! `(key, result)` — the key's updated result, once per input record (update
//! mode). At every epoch marker the table's dirty entries are flushed to the
//! backend as one batch, so the backend holds the state as of the marker.
//! `count`, `sum`, `min`, `max`, `avg` and `reduce` are [`Aggregator`]s.

use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::Add;
use std::sync::Arc;

use eddy_checkpoint::{KeyedTable, ManagedState};
use eddy_runtime::{
    Collector, Data, KeyedStream, Operator, OperatorContext, OperatorError, Record, Stream,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::state::{declared, open_table};

/// A fold of values of type `T` into an accumulator, per key.
pub trait Aggregator<T>: Clone + Send + Sync + 'static {
    /// The per-key accumulator (kept in state).
    type Acc: Serialize + DeserializeOwned + Send + 'static;
    /// What the aggregation emits.
    type Out: Data;
    /// The accumulator of a key not seen before.
    fn create(&self) -> Self::Acc;
    /// Folds one value in.
    fn add(&self, acc: &mut Self::Acc, value: &T);
    /// The current result.
    fn result(&self, acc: &Self::Acc) -> Self::Out;

    /// Merges `other` into `acc` (session windows merge when a record
    /// bridges two sessions). Returns `false` when this aggregator cannot
    /// merge; a session window then fails the query with a clear error.
    fn merge(&self, _acc: &mut Self::Acc, _other: Self::Acc) -> bool {
        false
    }
}

/// What a key must be to key state: hashable, comparable, serialisable.
pub trait StateKey: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static {}
impl<K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static> StateKey for K {}

/// The keyed aggregation operator.
pub struct KeyedAggregate<T, K, A: Aggregator<T>> {
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    agg: A,
    table: Option<KeyedTable<K, A::Acc>>,
}

impl<T, K, A: Aggregator<T>> Clone for KeyedAggregate<T, K, A> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            agg: self.agg.clone(),
            table: None,
        }
    }
}

impl<T, K, A: Aggregator<T>> KeyedAggregate<T, K, A> {
    /// An aggregation of `agg` per key `key`.
    pub fn new(key: Arc<dyn Fn(&T) -> K + Send + Sync>, agg: A) -> Self {
        Self {
            key,
            agg,
            table: None,
        }
    }
}

fn not_open() -> OperatorError {
    OperatorError::new("keyed aggregate used before open")
}

impl<T, K, A> Operator<T, (K, A::Out)> for KeyedAggregate<T, K, A>
where
    T: Send + 'static,
    K: StateKey,
    A: Aggregator<T>,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.table = Some(open_table(ctx, "agg")?);
        Ok(())
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, (K, A::Out)>,
    ) -> Result<(), OperatorError> {
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let key = (self.key)(&record.value);
        let agg = &self.agg;
        let result = table.update(&key, |acc| {
            let acc = acc.get_or_insert_with(|| agg.create());
            agg.add(acc, &record.value);
            agg.result(acc)
        })?;
        out.emit((key, result));
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        declared(&mut self.table)
    }
}

/// Counts records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<T> Aggregator<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &T) {
        *acc += 1;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, other: u64) -> bool {
        *acc += other;
        true
    }
}

/// Applies a field extractor before folding.
pub struct Field<F, N> {
    f: Arc<F>,
    _n: PhantomData<fn() -> N>,
}

impl<F, N> Clone for Field<F, N> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _n: PhantomData,
        }
    }
}

/// Sums a numeric field.
pub struct Sum<F, N>(pub(crate) Field<F, N>);
impl<F, N> Clone for Sum<F, N> {
    fn clone(&self) -> Self {
        Sum(self.0.clone())
    }
}

/// What `sum` accepts.
pub trait Summable:
    Add<Output = Self> + Copy + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<N> Summable for N where
    N: Add<Output = N> + Copy + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T, F, N> Aggregator<T> for Sum<F, N>
where
    F: Fn(&T) -> N + Send + Sync + 'static,
    N: Summable,
{
    type Acc = N;
    type Out = N;
    fn create(&self) -> N {
        N::default()
    }
    fn add(&self, acc: &mut N, v: &T) {
        *acc = *acc + (self.0.f)(v);
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
    fn merge(&self, acc: &mut N, other: N) -> bool {
        *acc = *acc + other;
        true
    }
}

/// Keeps the smallest (`MAX == false`) or largest (`MAX == true`) field value.
pub struct Extreme<F, N, const MAX: bool>(pub(crate) Field<F, N>);
impl<F, N, const MAX: bool> Clone for Extreme<F, N, MAX> {
    fn clone(&self) -> Self {
        Extreme(self.0.clone())
    }
}

/// What `min` and `max` accept.
pub trait Ordered:
    PartialOrd + Copy + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<N> Ordered for N where
    N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T, F, N, const MAX: bool> Aggregator<T> for Extreme<F, N, MAX>
where
    F: Fn(&T) -> N + Send + Sync + 'static,
    N: Ordered,
{
    type Acc = Option<N>;
    type Out = N;
    fn create(&self) -> Option<N> {
        None
    }
    fn add(&self, acc: &mut Option<N>, v: &T) {
        let x = (self.0.f)(v);
        let replace = match acc {
            None => true,
            Some(cur) => (MAX && x > *cur) || (!MAX && x < *cur),
        };
        if replace {
            *acc = Some(x);
        }
    }
    fn result(&self, acc: &Option<N>) -> N {
        acc.unwrap_or_default()
    }
    fn merge(&self, acc: &mut Option<N>, other: Option<N>) -> bool {
        let replace = match (acc.as_ref(), other.as_ref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(cur), Some(x)) => (MAX && x > cur) || (!MAX && x < cur),
        };
        if replace {
            *acc = other;
        }
        true
    }
}

/// Averages a field.
pub struct Avg<F>(pub(crate) Arc<F>);
impl<F> Clone for Avg<F> {
    fn clone(&self) -> Self {
        Avg(self.0.clone())
    }
}

impl<T, F: Fn(&T) -> f64 + Send + Sync + 'static> Aggregator<T> for Avg<F> {
    type Acc = (f64, u64);
    type Out = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), v: &T) {
        acc.0 += (self.0)(v);
        acc.1 += 1;
    }
    fn result(&self, acc: &(f64, u64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0 / acc.1 as f64
        }
    }
    fn merge(&self, acc: &mut (f64, u64), other: (f64, u64)) -> bool {
        acc.0 += other.0;
        acc.1 += other.1;
        true
    }
}

/// Combines values pairwise.
pub struct Reduce<F>(pub(crate) Arc<F>);
impl<F> Clone for Reduce<F> {
    fn clone(&self) -> Self {
        Reduce(self.0.clone())
    }
}

impl<T, F> Aggregator<T> for Reduce<F>
where
    T: Data + Serialize + DeserializeOwned,
    F: Fn(&T, &T) -> T + Send + Sync + 'static,
{
    type Acc = Option<T>;
    type Out = T;
    fn create(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, v: &T) {
        *acc = Some(match acc.take() {
            None => v.clone(),
            Some(a) => (self.0)(&a, v),
        });
    }
    fn result(&self, acc: &Option<T>) -> T {
        acc.clone().expect("result is read after add")
    }
    fn merge(&self, acc: &mut Option<T>, other: Option<T>) -> bool {
        if let Some(o) = other {
            *acc = Some(match acc.take() {
                None => o,
                Some(a) => (self.0)(&a, &o),
            });
        }
        true
    }
}

/// Running aggregations on a keyed stream. Each emits `(key, result)` for every
/// input record.
pub trait KeyedAggregations<T: Data, K: StateKey> {
    /// Folds each key's values with `agg`.
    fn aggregate<A: Aggregator<T>>(self, name: &str, agg: A) -> Stream<(K, A::Out)>
    where
        (K, A::Out): Data;

    /// Counts records per key.
    ///
    /// ```
    /// use eddy_connectors::{CollectSink, VecSource};
    /// use eddy_operators::KeyedAggregations;
    /// use eddy_runtime::Pipeline;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let p = Pipeline::new();
    /// let out = CollectSink::new();
    /// p.source("words", VecSource::new(vec!["a", "b", "a"]))
    ///     .key_by(|w: &&str| w.to_string())
    ///     .count()
    ///     .sink("out", out.clone());
    /// p.start().unwrap().await_termination().await.unwrap();
    /// assert_eq!(out.values(), vec![("a".to_string(), 1), ("b".to_string(), 1), ("a".to_string(), 2)]);
    /// # }
    /// ```
    fn count(self) -> Stream<(K, u64)>;

    /// Sums `f` of the values per key.
    fn sum<N: Summable, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)>;

    /// Smallest `f` of the values per key.
    fn min<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)>;

    /// Largest `f` of the values per key.
    fn max<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)>;

    /// Mean of `f` of the values per key.
    fn avg<F: Fn(&T) -> f64 + Send + Sync + 'static>(self, f: F) -> Stream<(K, f64)>;

    /// Combines the values of each key with `f`.
    fn reduce<F: Fn(&T, &T) -> T + Send + Sync + 'static>(self, f: F) -> Stream<(K, T)>
    where
        T: Serialize + DeserializeOwned;
}

pub(crate) fn field<F, N>(f: F) -> Field<F, N> {
    Field {
        f: Arc::new(f),
        _n: PhantomData,
    }
}

impl<T: Data, K: StateKey> KeyedAggregations<T, K> for KeyedStream<T, K> {
    fn aggregate<A: Aggregator<T>>(self, name: &str, agg: A) -> Stream<(K, A::Out)>
    where
        (K, A::Out): Data,
    {
        let op = KeyedAggregate::new(self.key_fn(), agg);
        self.transform(name, op)
    }

    fn count(self) -> Stream<(K, u64)> {
        self.aggregate("count", Count)
    }

    fn sum<N: Summable, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)> {
        self.aggregate("sum", Sum(field(f)))
    }

    fn min<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)> {
        self.aggregate("min", Extreme::<F, N, false>(field(f)))
    }

    fn max<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(self, f: F) -> Stream<(K, N)> {
        self.aggregate("max", Extreme::<F, N, true>(field(f)))
    }

    fn avg<F: Fn(&T) -> f64 + Send + Sync + 'static>(self, f: F) -> Stream<(K, f64)> {
        self.aggregate("avg", Avg(Arc::new(f)))
    }

    fn reduce<F: Fn(&T, &T) -> T + Send + Sync + 'static>(self, f: F) -> Stream<(K, T)>
    where
        T: Serialize + DeserializeOwned,
    {
        self.aggregate("reduce", Reduce(Arc::new(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_runtime::Record;

    fn run<A: Aggregator<(String, i64)>>(agg: A, input: &[(&str, i64)]) -> Vec<(String, A::Out)> {
        let mut op = KeyedAggregate::new(Arc::new(|v: &(String, i64)| v.0.clone()), agg);
        let mut ctx = OperatorContext::for_test("t");
        Operator::<_, (String, A::Out)>::open(&mut op, &mut ctx).unwrap();
        let mut out = eddy_runtime::Output::default();
        let mut timers = eddy_runtime::TimerService::in_memory();
        let clock = eddy_runtime::timers::ProcessingClock::new();
        for (k, v) in input {
            let mut c = Collector::new(&mut out, &mut timers, &clock, 0);
            op.process(Record::new((k.to_string(), *v)), &mut c)
                .unwrap();
        }
        out.main.into_iter().map(|r| r.value).collect()
    }

    const INPUT: &[(&str, i64)] = &[("a", 3), ("b", -1), ("a", 5), ("a", 1), ("b", 7)];

    #[test]
    fn builtin_aggregators() {
        let last = |v: Vec<(String, i64)>| v.into_iter().rev().take(2).collect::<Vec<_>>();
        assert_eq!(
            last(run(Sum(field(|v: &(String, i64)| v.1)), INPUT)),
            vec![("b".into(), 6), ("a".into(), 9)]
        );
        assert_eq!(
            last(run(
                Extreme::<_, i64, false>(field(|v: &(String, i64)| v.1)),
                INPUT
            )),
            vec![("b".into(), -1), ("a".into(), 1)]
        );
        assert_eq!(
            last(run(
                Extreme::<_, i64, true>(field(|v: &(String, i64)| v.1)),
                INPUT
            )),
            vec![("b".into(), 7), ("a".into(), 5)]
        );
        let counts: Vec<(String, u64)> = run(Count, INPUT);
        assert_eq!(counts.last(), Some(&("b".to_string(), 2)));
        let avgs = run(Avg(Arc::new(|v: &(String, i64)| v.1 as f64)), INPUT);
        assert_eq!(avgs[3], ("a".to_string(), 3.0));
    }
}
