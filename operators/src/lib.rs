//! # eddy-operators
//!
//! The operators of Eddy's typed API, as extension traits on the runtime's
//! streams (bring them in with `use eddy::prelude::*`):
//!
//! - [`map`]: [`StreamOps`] — `map`, `filter`, `flat_map`, `inspect`:
//!   stateless, one record at a time.
//! - [`aggregate`]: [`KeyedAggregations`] — running keyed aggregations
//!   (`count`, `sum`, `min`, `max`, `avg`, `reduce`, and the general
//!   `aggregate` with an [`Aggregator`]). Each emits the key's updated result
//!   for every input record (update mode); state lives in a
//!   [`KeyedTable`](eddy_checkpoint::KeyedTable), flushed at every epoch marker.
//! - [`join`]: [`Joins`] — stream-stream interval joins (inner and outer),
//!   the latest-value join against a changelog stream; [`LookupJoins`]
//!   against a static table; [`WithBroadcast`] for broadcast state.
//! - [`window`]: [`Windowing`] — event-time tumbling, sliding and session
//!   windows with allowed lateness, late records on a side output, append
//!   and update output modes.
//! - [`process`]: [`KeyedProcessing`] — arbitrary keyed state with timers,
//!   timeouts and TTL (`process`, `update_state_by_key`), and
//!   deduplication within a watermark bound (`dedup`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod join;
pub mod map;
pub mod process;
mod state;
pub mod window;

pub use aggregate::{Aggregator, KeyedAggregate, KeyedAggregations};
pub use join::{JoinKind, Joins, LookupJoins, StaticTable, WithBroadcast};
pub use map::StreamOps;
pub use process::{
    DedupBy, FiredTimer, KeyedProcessFunction, KeyedProcessing, ListState, MapState,
    ProcessContext, ValueState,
};
pub use window::{OutputMode, Window, WindowResult, Windowing, Windows};
