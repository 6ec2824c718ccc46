//! # Eddy
//!
//! A continuous-processing dataflow engine: long-running operator tasks joined
//! by bounded channels process records one at a time, for sub-millisecond
//! latency. This crate is what an embedder depends on: it re-exports the
//! engine's crates and the typed API ([`prelude`]). The `eddy` command (the
//! IoT demo, the benchmark harness, the load generator) lives in the
//! `eddy-cli` package, so depending on `eddy` compiles none of it.
//!
//! | crate | what it holds |
//! | --- | --- |
//! | [`checkpoint`] (`eddy-checkpoint`) | state backends, keyed state tables, codec, checkpoint store |
//! | [`runtime`] (`eddy-runtime`) | graph builder, tasks, bounded edges, query handle, metrics |
//! | [`operators`] (`eddy-operators`) | map / filter / flat_map, keyed aggregations, windows, keyed process functions, dedup |
//! | [`connectors`] (`eddy-connectors`) | vector and generator sources, memory table, collect, console, file and discard sinks |
//!
//! Dependencies point one way: `checkpoint <- runtime <- {operators, connectors} <- eddy`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use eddy_checkpoint as checkpoint;
pub use eddy_connectors as connectors;
pub use eddy_operators as operators;
pub use eddy_runtime as runtime;

/// Everything needed to write and run a pipeline.
pub mod prelude {
    pub use eddy_connectors::{
        CollectSink, ConsoleSink, Delivery, DiscardSink, EventTimeConfig, FileSink, GenEvent,
        GeneratorConfig, GeneratorSource, TableSink, VecSource,
    };
    pub use eddy_operators::{
        Aggregator, DedupBy, FiredTimer, JoinKind, Joins, KeyedAggregations, KeyedProcessFunction,
        KeyedProcessing, ListState, LookupJoins, MapState, OutputMode, ProcessContext, StaticTable,
        StreamOps, ValueState, Window, WindowResult, Windowing, Windows, WithBroadcast,
    };
    pub use eddy_runtime::checkpointing::CheckpointConfig;
    pub use eddy_runtime::{
        BuildError, Collector, Data, KeyedStream, Operator, OperatorContext, OperatorError,
        Pipeline, PipelineConfig, Query, QueryError, QueryProgress, Record, Sink, Source, Stream,
        TimeDomain, Timer, Trigger, TwoInputOperator, WatermarkStrategy,
    };
    pub use eddy_runtime::{ConnectedStreams, Either};
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
