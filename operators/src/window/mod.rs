//! Event-time windows on keyed streams: tumbling, sliding and session
//! windows with incremental aggregation, allowed lateness, late records on
//! a side output, and Spark's append and update output modes.
//!
//! ```
//! use std::time::Duration;
//! use eddy_connectors::{CollectSink, VecSource};
//! use eddy_operators::window::{Windowing, Windows};
//! use eddy_runtime::{Pipeline, WatermarkStrategy};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let p = Pipeline::new();
//! let out = CollectSink::new();
//! // (sensor, event time in ms)
//! let readings = vec![("a", 1_000), ("a", 1_500), ("b", 1_200), ("a", 2_100)];
//! p.source("readings", VecSource::new(readings))
//!     .with_watermarks(
//!         WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(500))
//!             .with_timestamps(|r: &(&str, i64)| r.1),
//!     )
//!     .key_by(|r: &(&str, i64)| r.0.to_string())
//!     .window(Windows::tumbling(Duration::from_secs(1)))
//!     .count()
//!     .sink("counts", out.clone());
//! p.start().unwrap().await_termination().await.unwrap();
//! let mut rows: Vec<_> = out.values().into_iter().map(|r| (r.key, r.window.start, r.value)).collect();
//! rows.sort();
//! assert_eq!(rows, vec![("a".into(), 1_000, 2), ("a".into(), 2_000, 1), ("b".into(), 1_000, 1)]);
//! # }
//! ```
//!
//! Processing-time windows are windows over ingestion time: give the source
//! [`WatermarkStrategy::ingestion_time`](eddy_runtime::WatermarkStrategy::ingestion_time).
//! Spark Streaming's `window(length, slide)`, `reduceByKeyAndWindow` and
//! `countByWindow` are `window(Windows::sliding(length, slide))` followed by
//! `reduce` or `count` (on `key_by(|_| ())` for a global count).

use std::sync::Arc;
use std::time::Duration;

use eddy_runtime::{Data, KeyedStream, Stream};
use serde::{de::DeserializeOwned, Serialize};

mod assigner;
pub mod fixed;
pub mod session;

pub use assigner::{Window, WindowResult, WindowSpec, Windows};
pub use fixed::FixedWindowAggregate;
pub use session::SessionWindowAggregate;

use crate::aggregate::{
    field, Aggregator, Avg, Count, Extreme, Ordered, Reduce, StateKey, Sum, Summable,
};

/// When a window operator emits, as Spark users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// One final row per window, when the watermark passes its end plus
    /// the allowed lateness. The lowest volume; the latency is the
    /// out-of-orderness bound plus the lateness.
    #[default]
    Append,
    /// A row every time a window's result changes, keyed by (key, window)
    /// so a sink can upsert; the latest row per window is its result.
    /// Results are visible at once; state is kept until the watermark
    /// passes the end plus the lateness.
    Update,
}

/// A keyed stream cut into windows, waiting for its aggregation.
pub struct WindowedStream<T, K> {
    keyed: KeyedStream<T, K>,
    spec: WindowSpec,
    lateness_ms: i64,
    mode: OutputMode,
    name: String,
}

/// Windows on keyed streams.
pub trait Windowing<T, K> {
    /// Cuts each key's records into windows of `spec`.
    fn window(self, spec: WindowSpec) -> WindowedStream<T, K>;
}

impl<T: Data, K: StateKey> Windowing<T, K> for KeyedStream<T, K> {
    fn window(self, spec: WindowSpec) -> WindowedStream<T, K> {
        WindowedStream {
            keyed: self,
            spec,
            lateness_ms: 0,
            mode: OutputMode::Append,
            name: "window".into(),
        }
    }
}

/// A collected window: all its records (for [`WindowedStream::apply`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CollectAll;

impl<T: Data + Serialize + DeserializeOwned> Aggregator<T> for CollectAll {
    type Acc = Vec<T>;
    type Out = Vec<T>;
    fn create(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, v: &T) {
        acc.push(v.clone());
    }
    fn result(&self, acc: &Vec<T>) -> Vec<T> {
        acc.clone()
    }
    fn merge(&self, acc: &mut Vec<T>, other: Vec<T>) -> bool {
        acc.extend(other);
        true
    }
}

impl<T: Data, K: StateKey> WindowedStream<T, K> {
    /// Records up to `lateness` behind the watermark still update their
    /// window (which is kept that much longer); later ones are late.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness_ms = lateness.as_millis() as i64;
        self
    }

    /// Append (default) or update.
    pub fn output_mode(mut self, mode: OutputMode) -> Self {
        self.mode = mode;
        self
    }

    /// Names the window operator (its state is identified by the name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Folds each window with `agg`; returns the results and the late
    /// records (a side output: read it or leave it, late records are
    /// counted either way).
    pub fn aggregate_with_late<A>(self, agg: A) -> (Stream<WindowResult<K, A::Out>>, Stream<T>)
    where
        A: Aggregator<T>,
        A::Acc: Clone,
        WindowResult<K, A::Out>: Data,
    {
        let key = self.keyed.key_fn();
        match self.spec {
            WindowSpec::Session { gap } => {
                let op = SessionWindowAggregate::new(key, agg, gap, self.lateness_ms, self.mode);
                self.keyed.transform_with_side(&self.name, op)
            }
            spec => {
                let op = FixedWindowAggregate::new(key, agg, spec, self.lateness_ms, self.mode);
                self.keyed.transform_with_side(&self.name, op)
            }
        }
    }

    /// Folds each window with `agg` (late records are counted and dropped).
    pub fn aggregate<A>(self, agg: A) -> Stream<WindowResult<K, A::Out>>
    where
        A: Aggregator<T>,
        A::Acc: Clone,
        WindowResult<K, A::Out>: Data,
    {
        self.aggregate_with_late(agg).0
    }

    /// Records per window.
    pub fn count(self) -> Stream<WindowResult<K, u64>> {
        self.aggregate(Count)
    }

    /// Sum of `f` per window.
    pub fn sum<N: Summable, F: Fn(&T) -> N + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, N>> {
        self.aggregate(Sum(field(f)))
    }

    /// Smallest `f` per window.
    pub fn min<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, N>> {
        self.aggregate(Extreme::<F, N, false>(field(f)))
    }

    /// Largest `f` per window.
    pub fn max<N: Ordered, F: Fn(&T) -> N + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, N>> {
        self.aggregate(Extreme::<F, N, true>(field(f)))
    }

    /// Mean of `f` per window.
    pub fn avg<F: Fn(&T) -> f64 + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, f64>> {
        self.aggregate(Avg(Arc::new(f)))
    }

    /// Combines each window's records with `f`.
    pub fn reduce<F: Fn(&T, &T) -> T + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, T>>
    where
        T: Serialize + DeserializeOwned,
    {
        self.aggregate(Reduce(Arc::new(f)))
    }

    /// A full-window function: `f` sees all records of a window when it
    /// closes (append mode) or changes (update mode). Keeps every record in
    /// state; prefer an [`Aggregator`] when one fits.
    pub fn apply<O: Data, F>(self, f: F) -> Stream<O>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&K, &Window, &[T]) -> O + Send + Sync + 'static,
    {
        use crate::map::StreamOps;
        self.aggregate(CollectAll)
            .map(move |r: WindowResult<K, Vec<T>>| f(&r.key, &r.window, &r.value))
    }
}
