//! Stateless operators: `map`, `filter`, `flat_map`, `inspect`.

use std::sync::Arc;

use eddy_runtime::{Collector, Data, Operator, OperatorError, Record, Stream};

/// Applies a function to every value.
pub struct Map<F>(Arc<F>);

impl<F> Clone for Map<F> {
    fn clone(&self) -> Self {
        Map(self.0.clone())
    }
}

impl<I, O, F> Operator<I, O> for Map<F>
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(I) -> O + Send + Sync + 'static,
{
    #[inline]
    fn process(
        &mut self,
        record: Record<I>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        out.emit((self.0)(record.value));
        Ok(())
    }
}

/// Keeps the values a predicate accepts.
pub struct Filter<F>(Arc<F>);

impl<F> Clone for Filter<F> {
    fn clone(&self) -> Self {
        Filter(self.0.clone())
    }
}

impl<T, F> Operator<T, T> for Filter<F>
where
    T: Send + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    #[inline]
    fn process(
        &mut self,
        record: Record<T>,
        out: &mut Collector<'_, T>,
    ) -> Result<(), OperatorError> {
        if (self.0)(&record.value) {
            out.emit_record(record);
        }
        Ok(())
    }
}

/// Maps every value to zero or more values.
pub struct FlatMap<F>(Arc<F>);

impl<F> Clone for FlatMap<F> {
    fn clone(&self) -> Self {
        FlatMap(self.0.clone())
    }
}

impl<I, O, It, F> Operator<I, O> for FlatMap<F>
where
    I: Send + 'static,
    O: Send + 'static,
    It: IntoIterator<Item = O>,
    F: Fn(I) -> It + Send + Sync + 'static,
{
    #[inline]
    fn process(
        &mut self,
        record: Record<I>,
        out: &mut Collector<'_, O>,
    ) -> Result<(), OperatorError> {
        for v in (self.0)(record.value) {
            out.emit(v);
        }
        Ok(())
    }
}

/// Stateless transformations of a stream.
pub trait StreamOps<T: Data> {
    /// Applies `f` to every value.
    ///
    /// ```
    /// use eddy_connectors::{CollectSink, VecSource};
    /// use eddy_operators::StreamOps;
    /// use eddy_runtime::Pipeline;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let p = Pipeline::new();
    /// let out = CollectSink::new();
    /// p.source("nums", VecSource::new(vec![1, 2, 3])).map(|x: i32| x * 10).sink("out", out.clone());
    /// p.start().unwrap().await_termination().await.unwrap();
    /// assert_eq!(out.values(), vec![10, 20, 30]);
    /// # }
    /// ```
    fn map<O: Data, F: Fn(T) -> O + Send + Sync + 'static>(self, f: F) -> Stream<O>;

    /// Keeps the values for which `f` is true.
    ///
    /// ```
    /// use eddy_connectors::{CollectSink, VecSource};
    /// use eddy_operators::StreamOps;
    /// use eddy_runtime::Pipeline;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let p = Pipeline::new();
    /// let out = CollectSink::new();
    /// p.source("nums", VecSource::new(1..=6)).filter(|x: &i32| x % 2 == 0).sink("out", out.clone());
    /// p.start().unwrap().await_termination().await.unwrap();
    /// assert_eq!(out.values(), vec![2, 4, 6]);
    /// # }
    /// ```
    fn filter<F: Fn(&T) -> bool + Send + Sync + 'static>(self, f: F) -> Stream<T>;

    /// Maps every value to zero or more values.
    ///
    /// ```
    /// use eddy_connectors::{CollectSink, VecSource};
    /// use eddy_operators::StreamOps;
    /// use eddy_runtime::Pipeline;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let p = Pipeline::new();
    /// let out = CollectSink::new();
    /// p.source("lines", VecSource::new(vec!["a b", "c"]))
    ///     .flat_map(|l: &str| l.split(' ').map(str::to_string).collect::<Vec<_>>())
    ///     .sink("out", out.clone());
    /// p.start().unwrap().await_termination().await.unwrap();
    /// assert_eq!(out.values(), vec!["a", "b", "c"]);
    /// # }
    /// ```
    fn flat_map<O, It, F>(self, f: F) -> Stream<O>
    where
        O: Data,
        It: IntoIterator<Item = O>,
        F: Fn(T) -> It + Send + Sync + 'static;

    /// Calls `f` on every value and passes it on unchanged.
    fn inspect<F: Fn(&T) + Send + Sync + 'static>(self, f: F) -> Stream<T>;
}

impl<T: Data> StreamOps<T> for Stream<T> {
    fn map<O: Data, F: Fn(T) -> O + Send + Sync + 'static>(self, f: F) -> Stream<O> {
        self.transform("map", Map(Arc::new(f)))
    }

    fn filter<F: Fn(&T) -> bool + Send + Sync + 'static>(self, f: F) -> Stream<T> {
        self.transform("filter", Filter(Arc::new(f)))
    }

    fn flat_map<O, It, F>(self, f: F) -> Stream<O>
    where
        O: Data,
        It: IntoIterator<Item = O>,
        F: Fn(T) -> It + Send + Sync + 'static,
    {
        self.transform("flat_map", FlatMap(Arc::new(f)))
    }

    fn inspect<F: Fn(&T) + Send + Sync + 'static>(self, f: F) -> Stream<T> {
        self.transform(
            "inspect",
            Map(Arc::new(move |v: T| {
                f(&v);
                v
            })),
        )
    }
}
