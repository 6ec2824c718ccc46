//! Arbitrary keyed state with timers and timeouts, and deduplication.
//!
//! - [`KeyedProcessing::process`] runs a [`KeyedProcessFunction`] per key
//!   (Flink's `KeyedProcessFunction`, Spark's `flatMapGroupsWithState`):
//!   typed per-key state ([`ValueState`], [`ListState`], [`MapState`] or
//!   any serde type), event-time and processing-time timers, a per-key
//!   timeout (Spark's `setTimeoutDuration` / `setTimeoutTimestamp`,
//!   `hasTimedOut`) and an optional state TTL
//!   ([`KeyedProcessFunction::with_state_ttl`]).
//! - [`KeyedProcessing::update_state_by_key`] is DStreams'
//!   `updateStateByKey` on top of it.
//! - [`KeyedProcessing::dedup`] (and [`DedupBy::dedup_by`] on a stream
//!   not keyed yet) drops records whose key was seen within an event-time
//!   bound (Spark's `dropDuplicatesWithinWatermark`), with state bounded
//!   by the watermark.
//!
//! A sessioniser: a key's session ends when the key has been quiet for
//! `gap` of event time.
//!
//! ```
//! use std::time::Duration;
//! use eddy_connectors::{CollectSink, VecSource};
//! use eddy_operators::process::{FiredTimer, KeyedProcessFunction, KeyedProcessing, ProcessContext};
//! use eddy_runtime::{OperatorError, Pipeline, WatermarkStrategy};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone)]
//! struct Sessions { gap: i64 }
//!
//! #[derive(Clone, Copy, Default, Serialize, Deserialize)]
//! struct Open { start: i64, last: i64, count: u64 }
//!
//! impl KeyedProcessFunction<(&'static str, i64), String> for Sessions {
//!     type State = Open;
//!     type Out = (String, i64, i64, u64);
//!     fn process(
//!         &mut self,
//!         _click: (&'static str, i64),
//!         ctx: &mut ProcessContext<'_, '_, String, Open, Self::Out>,
//!     ) -> Result<(), OperatorError> {
//!         let ts = ctx.timestamp();
//!         if let Some(&Open { start, last, count }) = ctx.state() {
//!             ctx.delete_event_time_timer(last + self.gap)?;
//!             if ts >= last + self.gap {
//!                 // Quiet for the gap, but its timer has not fired yet
//!                 // (the watermark comes after this record's batch).
//!                 let key = ctx.key().clone();
//!                 ctx.emit((key, start, last, count));
//!                 ctx.clear_state();
//!             }
//!         }
//!         let fresh = !ctx.state_exists();
//!         let s = ctx.state_mut();
//!         if fresh { s.start = ts; s.last = ts; }
//!         s.last = s.last.max(ts);
//!         s.count += 1;
//!         let end = s.last + self.gap;
//!         ctx.register_event_time_timer(end)
//!     }
//!     fn on_timer(
//!         &mut self,
//!         _t: FiredTimer,
//!         ctx: &mut ProcessContext<'_, '_, String, Open, Self::Out>,
//!     ) -> Result<(), OperatorError> {
//!         if let Some(s) = ctx.clear_state() {
//!             let key = ctx.key().clone();
//!             ctx.emit((key, s.start, s.last, s.count));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let p = Pipeline::new();
//! let out = CollectSink::new();
//! let clicks = vec![("a", 1_000), ("a", 1_200), ("b", 1_100), ("a", 5_000)];
//! p.source("clicks", VecSource::new(clicks))
//!     .with_watermarks(
//!         WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
//!             .with_timestamps(|r: &(&str, i64)| r.1),
//!     )
//!     .key_by(|r: &(&str, i64)| r.0.to_string())
//!     .process("sessions", Sessions { gap: 1_000 })
//!     .sink("out", out.clone());
//! p.start().unwrap().await_termination().await.unwrap();
//! let mut rows = out.values();
//! rows.sort();
//! assert_eq!(rows, vec![
//!     ("a".into(), 1_000, 1_200, 2),
//!     ("a".into(), 5_000, 5_000, 1),
//!     ("b".into(), 1_100, 1_100, 1),
//! ]);
//! # }
//! ```

use std::time::Duration;

use eddy_runtime::{Data, KeyedStream, Stream};
use serde::{de::DeserializeOwned, Serialize};

mod context;
pub mod dedup;
mod function;
mod handles;
pub mod operator;
mod update;

pub use context::{FiredTimer, ProcessContext, Slot};
pub use dedup::Dedup;
pub use function::{KeyedProcessFunction, WithStateTtl};
pub use handles::{ListState, MapState, ValueState};
pub use operator::KeyedProcess;
pub use update::UpdateStateByKey;

use crate::aggregate::StateKey;

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Keyed process functions and deduplication on keyed streams.
pub trait KeyedProcessing<T, K> {
    /// Runs `f` for every record with its key's state, timers and timeout
    /// (see [`KeyedProcessFunction`]). `name` identifies the state in
    /// checkpoints.
    fn process<F: KeyedProcessFunction<T, K>>(self, name: &str, f: F) -> Stream<F::Out>;

    /// DStreams' `updateStateByKey`: `f(key, value, &mut state)` for every
    /// record; emits `(key, state)` whenever a state is left (`None`
    /// removes it).
    fn update_state_by_key<S, F>(self, name: &str, f: F) -> Stream<(K, S)>
    where
        K: Data,
        S: Data + Serialize + DeserializeOwned,
        F: Fn(&K, T, &mut Option<S>) + Send + Sync + 'static;

    /// Drops every record whose key was kept within `bound` of event time
    /// before or after it (Spark's `dropDuplicatesWithinWatermark`); see
    /// [`dedup`](mod@dedup). Duplicates are counted (`dropped_records` in
    /// the progress); late records are counted as late and dropped.
    fn dedup(self, name: &str, bound: Duration) -> Stream<T>;

    /// [`dedup`](Self::dedup), with the duplicates as a second stream.
    fn dedup_with_duplicates(self, name: &str, bound: Duration) -> (Stream<T>, Stream<T>);
}

/// Deduplication on a stream not keyed yet: `stream.dedup_by(name, key,
/// bound)` is `stream.key_by(key).dedup(name, bound)`.
pub trait DedupBy<T> {
    /// Drops every record whose `key` was kept within `bound` of event
    /// time (see [`KeyedProcessing::dedup`]).
    fn dedup_by<K, F>(self, name: &str, key: F, bound: Duration) -> Stream<T>
    where
        K: StateKey,
        F: Fn(&T) -> K + Send + Sync + 'static;
}

impl<T: Data> DedupBy<T> for Stream<T> {
    fn dedup_by<K, F>(self, name: &str, key: F, bound: Duration) -> Stream<T>
    where
        K: StateKey,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.key_by(key).dedup(name, bound)
    }
}

impl<T: Data, K: StateKey> KeyedProcessing<T, K> for KeyedStream<T, K> {
    fn process<F: KeyedProcessFunction<T, K>>(self, name: &str, f: F) -> Stream<F::Out> {
        let op = KeyedProcess::new(self.key_fn(), f);
        self.transform(name, op)
    }

    fn update_state_by_key<S, F>(self, name: &str, f: F) -> Stream<(K, S)>
    where
        K: Data,
        S: Data + Serialize + DeserializeOwned,
        F: Fn(&K, T, &mut Option<S>) + Send + Sync + 'static,
    {
        self.process(name, UpdateStateByKey::new(f))
    }

    fn dedup(self, name: &str, bound: Duration) -> Stream<T> {
        self.dedup_with_duplicates(name, bound).0
    }

    fn dedup_with_duplicates(self, name: &str, bound: Duration) -> (Stream<T>, Stream<T>) {
        let op = Dedup::new(self.key_fn(), millis(bound));
        self.transform_with_side(name, op)
    }
}

#[cfg(test)]
mod tests;
