//! # eddy-runtime
//!
//! The runtime of Eddy: it turns a typed dataflow description into long-running
//! tokio tasks joined by bounded channels, and watches them.
//!
//! - [`record`]: [`Record`] (a value plus event time and creation time) and the
//!   engine clock.
//! - [`message`]: the [`Message`] enum every edge carries: records, watermarks,
//!   epoch markers, end of stream.
//! - [`edge`]: bounded per-pair channels; [`edge::Router`] (output side:
//!   partitioning, per-edge buffers flushed when full or when the task is about
//!   to wait) and [`edge::Inputs`] (input side: fair reads, marker alignment,
//!   watermark minimum).
//! - [`operator`], [`source`], [`sink`]: the traits user code implements; each
//!   has one required method and default hooks.
//! - [`stream`]: the typed API ([`Stream`], [`KeyedStream`], sources, side
//!   outputs, watermarks); [`connected`] and [`two_input`]: operators with
//!   two typed inputs (joins, broadcast state); [`graph`]: the [`Pipeline`] that collects nodes and
//!   edges and, at [`Pipeline::start`], wires channels and spawns tasks;
//!   `exchange`: how a typed partitioning choice becomes channels.
//! - [`plan`]: the logical plan ([`plan::LogicalGraph`]) and its validation.
//! - [`task`]: the task loops: one per source, operator and sink instance.
//! - [`watermark`]: event time at the sources ([`WatermarkStrategy`]);
//!   [`timers`]: the timer service the runtime runs for every operator.
//! - [`query`]: [`Query`], the handle of a running pipeline: stop, await, progress.
//! - [`metrics`]: per-instance counters, edge occupancy, latency histograms;
//!   [`commit_latency`]: latency measured at commit, in bounded memory.
//! - [`checkpointing`], `coordinator`, [`trigger`]: epochs — the
//!   checkpoint protocol, the coordinator task, and when epochs start
//!   (continuous or micro-batch); [`checkpoint_config`]: its settings;
//!   [`recovery`]: what a restart does when sinks have committed more than
//!   the checkpoint it restores.
//! - [`control`]: every control-plane message (query, coordinator, tasks).
//!
//! Dependency direction: `checkpoint <- runtime <- {operators, connectors} <- eddy`.
//! Inside the runtime the modules form no import cycle.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checkpoint_config;
pub mod checkpointing;
pub mod commit_latency;
pub mod config;
pub mod connected;
pub mod control;
pub(crate) mod coordinator;
pub mod edge;
pub mod error;
pub(crate) mod exchange;
pub mod graph;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod monitor;
pub mod operator;
pub mod plan;
pub mod prometheus;
pub mod query;
pub mod record;
pub mod recovery;
pub mod sink;
mod snapshot_pool;
pub mod source;
pub mod stream;
pub mod task;
pub mod timer_key;
mod timer_queue;
pub mod timers;
pub mod trigger;
pub mod two_input;
pub mod watermark;

pub use config::PipelineConfig;
pub use connected::ConnectedStreams;
pub use error::{BuildError, OperatorError, QueryError};
pub use graph::Pipeline;
pub use message::{EpochMarker, Message, Watermark};
pub use monitor::QueryMonitor;
pub use operator::{Collector, Operator, OperatorContext, Output};
pub use query::{Query, QueryProgress};
pub use record::{Data, Record};
pub use recovery::{RecoveryReport, SinkAhead};
pub use sink::{Retracted, Sink, SinkContext};
pub use source::{Source, SourceContext, SourcePoll};
pub use stream::{KeyedStream, SinkRef, Stream};
pub use timers::{TimeDomain, Timer, TimerKey, TimerService};
pub use trigger::{BatchProgress, Trigger};
pub use two_input::{Either, TwoInput, TwoInputOperator};
pub use watermark::WatermarkStrategy;
