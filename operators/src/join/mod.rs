//! Joins: stream-stream interval joins ([`interval`]), stream-table joins
//! against a static table ([`lookup`]) or the latest value per key of a
//! changelog stream ([`latest`]), and broadcast state ([`broadcast`]).
//!
//! ```
//! use std::time::Duration;
//! use eddy_connectors::{CollectSink, VecSource};
//! use eddy_operators::join::Joins;
//! use eddy_runtime::{Pipeline, WatermarkStrategy};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let p = Pipeline::new();
//! let ts = |r: &(u32, i64)| r.1;
//! let wm = || WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10));
//! // (sensor, event time in ms): readings and alerts
//! let readings = p
//!     .source("readings", VecSource::new(vec![(1u32, 100i64), (2, 150), (1, 400)]))
//!     .with_watermarks(wm().with_timestamps(ts))
//!     .key_by(|r: &(u32, i64)| r.0);
//! let alerts = p
//!     .source("alerts", VecSource::new(vec![(1u32, 120i64), (2, 900)]))
//!     .with_watermarks(wm().with_timestamps(ts))
//!     .key_by(|r: &(u32, i64)| r.0);
//! // an alert within [-50 ms, +50 ms] of a reading of the same sensor
//! let out = CollectSink::new();
//! readings
//!     .interval_join(alerts)
//!     .between(-50, 50)
//!     .left_outer()
//!     .sink("joined", out.clone());
//! p.start().unwrap().await_termination().await.unwrap();
//! let mut rows = out.values();
//! rows.sort();
//! assert_eq!(
//!     rows,
//!     vec![((1, 100), Some((1, 120))), ((1, 400), None), ((2, 150), None)]
//! );
//! # }
//! ```

use std::sync::Arc;

use eddy_runtime::two_input::Either;
use eddy_runtime::{Data, KeyedStream, Stream};
use serde::{de::DeserializeOwned, Serialize};

pub mod broadcast;
pub mod interval;
pub mod latest;
pub mod lookup;

pub use broadcast::{BroadcastProcess, WithBroadcast};
pub use interval::{IntervalJoin, JoinFn, JoinKind};
pub use latest::LatestJoin;
pub use lookup::{LookupJoin, LookupJoins, StaticTable};

use crate::aggregate::StateKey;

/// Joins on keyed streams.
pub trait Joins<L, K> {
    /// An interval join with `other` on the key: give the interval with
    /// [`IntervalJoinBuilder::between`], then the join type.
    fn interval_join<R: Data>(self, other: KeyedStream<R, K>) -> IntervalJoinBuilder<L, R, K>;

    /// Enriches each record with the latest value of its key in the
    /// changelog `table` (keyed by the same key): see [`latest`].
    fn latest_join<R: Data>(self, table: KeyedStream<R, K>) -> LatestJoinBuilder<L, R, K>;
}

impl<L, K> Joins<L, K> for KeyedStream<L, K>
where
    L: Data + Serialize + DeserializeOwned,
    K: StateKey,
{
    fn interval_join<R: Data>(self, other: KeyedStream<R, K>) -> IntervalJoinBuilder<L, R, K> {
        IntervalJoinBuilder {
            left: self,
            right: other,
            lower: 0,
            upper: 0,
            name: "interval_join".to_string(),
        }
    }

    fn latest_join<R: Data>(self, table: KeyedStream<R, K>) -> LatestJoinBuilder<L, R, K> {
        LatestJoinBuilder {
            left: self,
            right: table,
            name: "latest_join".to_string(),
        }
    }
}

/// An interval join being set up.
pub struct IntervalJoinBuilder<L, R, K> {
    left: KeyedStream<L, K>,
    right: KeyedStream<R, K>,
    lower: i64,
    upper: i64,
    name: String,
}

impl<L, R, K> IntervalJoinBuilder<L, R, K>
where
    L: Data + Serialize + DeserializeOwned,
    R: Data + Serialize + DeserializeOwned,
    K: StateKey,
{
    /// Right rows at `left.ts + lower ..= left.ts + upper` (milliseconds,
    /// either may be negative) join the left row.
    pub fn between(mut self, lower_ms: i64, upper_ms: i64) -> Self {
        self.lower = lower_ms;
        self.upper = upper_ms;
        self
    }

    /// Names the join operator (names identify state in checkpoints).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The general form: `kind` decides which unmatched rows are emitted,
    /// `build` makes the output (`None` emits nothing). Returns the joined
    /// stream and the late rows of both sides.
    pub fn join_with<O: Data>(
        self,
        kind: JoinKind,
        build: impl Fn(Option<L>, Option<R>) -> Option<O> + Send + Sync + 'static,
    ) -> (Stream<O>, Stream<Either<L, R>>) {
        let op = IntervalJoin::new(
            self.left.key_fn(),
            self.right.key_fn(),
            self.lower,
            self.upper,
            kind,
            Arc::new(build),
        );
        let name = self.name;
        self.left.connect(self.right).transform_with_side(&name, op)
    }

    /// Matched pairs.
    pub fn inner(self) -> Stream<(L, R)> {
        self.join_with(JoinKind::Inner, |l, r| Some((l?, r?))).0
    }

    /// Matched pairs, and every left row that matched nothing (with `None`).
    pub fn left_outer(self) -> Stream<(L, Option<R>)> {
        self.join_with(JoinKind::LeftOuter, |l, r| Some((l?, r))).0
    }

    /// Matched pairs, and every right row that matched nothing.
    pub fn right_outer(self) -> Stream<(Option<L>, R)> {
        self.join_with(JoinKind::RightOuter, |l, r| Some((l, r?))).0
    }

    /// Matched pairs, and every row of either side that matched nothing.
    pub fn full_outer(self) -> Stream<(Option<L>, Option<R>)> {
        self.join_with(JoinKind::FullOuter, |l, r| Some((l, r))).0
    }
}

/// A latest-value join being set up.
pub struct LatestJoinBuilder<L, R, K> {
    left: KeyedStream<L, K>,
    right: KeyedStream<R, K>,
    name: String,
}

impl<L, R, K> LatestJoinBuilder<L, R, K>
where
    L: Data + Serialize + DeserializeOwned,
    R: Data + Serialize + DeserializeOwned,
    K: StateKey,
{
    /// Names the join operator (names identify state in checkpoints).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Each record with its key's latest table value; records whose key
    /// has none are dropped.
    pub fn inner(self) -> Stream<(L, R)> {
        let op = LatestJoin::new(
            self.left.key_fn(),
            self.right.key_fn(),
            Arc::new(|l, r: Option<R>| Some((l, r?))),
        );
        let name = self.name;
        self.left.connect(self.right).transform(&name, op)
    }

    /// Each record with its key's latest table value, `None` when the key
    /// has none yet.
    pub fn left(self) -> Stream<(L, Option<R>)> {
        let op = LatestJoin::new(
            self.left.key_fn(),
            self.right.key_fn(),
            Arc::new(|l, r| Some((l, r))),
        );
        let name = self.name;
        self.left.connect(self.right).transform(&name, op)
    }
}
