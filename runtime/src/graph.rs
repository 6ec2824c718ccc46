//! The typed dataflow builder and the logical plan it validates.
//!
//! A [`Pipeline`] collects nodes (sources, operators, sinks) and edges.
//! [`Stream<T>`] is a typed handle on the output of one or more nodes (more
//! than one after [`Stream::union`]); operators from `eddy-operators` extend it
//! through [`Stream::transform`]. Nothing runs until [`Pipeline::start`], which
//! validates the plan ([`LogicalGraph::validate`]), creates one bounded
//! channel per (upstream instance, downstream instance) pair and spawns one
//! task per instance.
//!
//! Types are checked when the pipeline is written; between the typed API and
//! the physical build, channels travel as `Box<dyn Any>` and are downcast to
//! the type the API recorded for that edge, so a downcast cannot fail.

use std::any::Any;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use eddy_checkpoint::{SharedBackend, StateBackend};

pub use crate::plan::{ExchangeKind, LogicalEdge, LogicalGraph, LogicalNode, NodeId, NodeKind};

use crate::checkpointing::{CheckpointLink, CheckpointSetup, SinkCommand};
use crate::config::PipelineConfig;
use crate::edge::{edge, HashFn, InEdge, Inputs, OutputGroup, Partitioning, Router};
use crate::error::BuildError;
use crate::keys::key_hash;
use crate::metrics::{InstanceMetrics, QueryMetrics};
use crate::operator::{Operator, OperatorContext};
use crate::query::{Query, QueryParts, TaskInfo};
use crate::record::Data;
use crate::recovery::{ProbeOf, SinkProbe};
use crate::sink::{Sink, SinkContext};
use crate::source::{Source, SourceContext};
use crate::task::{OperatorTask, SinkTask, SourceCommand, SourceTask, TaskResult};

/// A task future.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// What one instance is built from.
pub(crate) struct InstanceBuild {
    pub name: String,
    pub instance: usize,
    pub parallelism: usize,
    /// One `OutputGroup<O>` per outgoing edge.
    pub outputs: Vec<Box<dyn Any + Send>>,
    /// One `Vec<InEdge<I>>` per incoming edge.
    pub inputs: Vec<Box<dyn Any + Send>>,
    pub config: PipelineConfig,
    pub metrics: Arc<InstanceMetrics>,
    pub control: Option<tokio::sync::mpsc::UnboundedReceiver<SourceCommand>>,
    /// Link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// Sources: the offset to seek to (recovery).
    pub restore_offset: Option<Vec<u8>>,
    /// Keyed operators: the state backend (restored when recovering).
    pub state: Option<SharedBackend>,
    /// Sinks: commits from the coordinator.
    pub sink_commands: Option<tokio::sync::mpsc::UnboundedReceiver<SinkCommand>>,
    /// Sinks: what to restore (see [`SinkTask::restore`]).
    pub sink_restore: Option<Option<(u64, Vec<u8>)>>,
}

type NodeFactory = Box<dyn Fn(InstanceBuild) -> TaskFuture + Send>;

/// Creates the channels of one logical edge: per upstream instance an
/// `OutputGroup<T>`, per downstream instance a `Vec<InEdge<T>>`.
type EdgeFactory = Box<dyn Fn(usize, usize, &PipelineConfig) -> EdgeChannels + Send>;
type EdgeChannels = (Vec<Box<dyn Any + Send>>, Vec<Box<dyn Any + Send>>);

struct Node {
    logical: LogicalNode,
    factory: NodeFactory,
    /// Sources: whether they can replay from an offset.
    replayable: bool,
    /// Sinks: what recovery asks about their committed output.
    probe: Option<Box<dyn SinkProbe>>,
}

struct Edge {
    logical: LogicalEdge,
    factory: EdgeFactory,
}

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    config: PipelineConfig,
}

impl GraphBuilder {
    fn unique_name(&self, base: &str) -> String {
        let taken = |n: &str| self.nodes.iter().any(|x| x.logical.name == n);
        if !taken(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken(n))
            .expect("some suffix is free")
    }

    fn logical(&self) -> LogicalGraph {
        LogicalGraph {
            nodes: self.nodes.iter().map(|n| n.logical.clone()).collect(),
            edges: self.edges.iter().map(|e| e.logical).collect(),
        }
    }
}

/// How the next consumer of a stream reads it.
enum Exchange<T> {
    Default,
    Rebalance,
    Broadcast,
    Hash(HashFn<T>),
}

impl<T> Clone for Exchange<T> {
    fn clone(&self) -> Self {
        match self {
            Exchange::Default => Exchange::Default,
            Exchange::Rebalance => Exchange::Rebalance,
            Exchange::Broadcast => Exchange::Broadcast,
            Exchange::Hash(f) => Exchange::Hash(f.clone()),
        }
    }
}

fn edge_factory<T: Data>(exchange: Exchange<T>) -> (ExchangeKind, EdgeFactory) {
    let kind = match &exchange {
        Exchange::Default => ExchangeKind::Default,
        Exchange::Rebalance => ExchangeKind::Rebalance,
        Exchange::Broadcast => ExchangeKind::Broadcast,
        Exchange::Hash(_) => ExchangeKind::Hash,
    };
    let factory: EdgeFactory = Box::new(move |pf: usize, pt: usize, cfg: &PipelineConfig| {
        let partitioning = match &exchange {
            Exchange::Default if pf == pt => Partitioning::Forward,
            Exchange::Default | Exchange::Rebalance => Partitioning::Rebalance,
            Exchange::Broadcast => Partitioning::Broadcast,
            Exchange::Hash(f) => Partitioning::Hash(f.clone()),
        };
        let mut outs: Vec<Box<dyn Any + Send>> = Vec::with_capacity(pf);
        let mut ins: Vec<Vec<InEdge<T>>> = (0..pt).map(|_| Vec::new()).collect();
        for from in 0..pf {
            let targets: Vec<usize> = match partitioning {
                Partitioning::Forward => vec![from],
                _ => (0..pt).collect(),
            };
            let mut edges = Vec::with_capacity(targets.len());
            for to in targets {
                let (o, i) = edge::<T>(cfg.channel_capacity, cfg.batch_size);
                edges.push(o);
                ins[to].push(i);
            }
            outs.push(Box::new(OutputGroup::new(
                edges,
                partitioning.clone(),
                cfg.max_key_groups,
            )));
        }
        let ins = ins
            .into_iter()
            .map(|v| Box::new(v) as Box<dyn Any + Send>)
            .collect();
        (outs, ins)
    });
    (kind, factory)
}

fn take_router<O: Data>(outputs: Vec<Box<dyn Any + Send>>, batch_size: usize) -> Router<O> {
    let groups = outputs
        .into_iter()
        .map(|b| {
            *b.downcast::<OutputGroup<O>>()
                .expect("edge type recorded by the typed API")
        })
        .collect();
    Router::new(groups, batch_size)
}

fn take_inputs<I: Data>(inputs: Vec<Box<dyn Any + Send>>, metrics: &InstanceMetrics) -> Inputs<I> {
    let edges: Vec<InEdge<I>> = inputs
        .into_iter()
        .flat_map(|b| {
            *b.downcast::<Vec<InEdge<I>>>()
                .expect("edge type recorded by the typed API")
        })
        .collect();
    *metrics.input_queues.lock().expect("metrics lock") =
        edges.iter().map(|e| e.queued()).collect();
    Inputs::new(edges)
}

/// A dataflow under construction. Cloning gives another handle on the same
/// pipeline.
#[derive(Clone, Default)]
pub struct Pipeline {
    inner: Arc<Mutex<GraphBuilder>>,
}

impl Pipeline {
    /// An empty pipeline with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pipeline with `config`.
    pub fn with_config(config: PipelineConfig) -> Self {
        let p = Self::default();
        p.lock().config = config;
        p
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GraphBuilder> {
        self.inner.lock().expect("pipeline lock poisoned")
    }

    /// The configuration.
    pub fn config(&self) -> PipelineConfig {
        self.lock().config.clone()
    }

    /// The logical plan as built so far.
    pub fn logical(&self) -> LogicalGraph {
        self.lock().logical()
    }

    fn add_node(&self, name: &str, kind: NodeKind, keyed: bool, factory: NodeFactory) -> NodeId {
        self.add_node_with(name, kind, keyed, factory, true)
    }

    fn add_node_with(
        &self,
        name: &str,
        kind: NodeKind,
        keyed: bool,
        factory: NodeFactory,
        replayable: bool,
    ) -> NodeId {
        let mut g = self.lock();
        let name = g.unique_name(name);
        let parallelism = g.config.default_parallelism;
        g.nodes.push(Node {
            logical: LogicalNode {
                name,
                kind,
                parallelism,
                keyed,
            },
            factory,
            replayable,
            probe: None,
        });
        g.nodes.len() - 1
    }

    /// Adds a source. Each instance is a clone of `source`, opened with its
    /// instance index.
    pub fn source<T: Data, S: Source<T> + Clone>(&self, name: &str, source: S) -> Stream<T> {
        let replayable = source.replayable();
        let factory: NodeFactory = Box::new(move |b: InstanceBuild| {
            let task = SourceTask {
                source: source.clone(),
                ctx: SourceContext {
                    name: b.name.clone(),
                    instance: b.instance,
                    parallelism: b.parallelism,
                },
                router: take_router::<T>(b.outputs, b.config.batch_size),
                control: b.control.expect("sources get a control channel"),
                metrics: b.metrics,
                batch_size: b.config.batch_size,
                micro_batch: b.config.trigger.is_micro_batch(),
                ckpt: b.ckpt,
                restore_offset: b.restore_offset,
            };
            Box::pin(task.run())
        });
        let id = self.add_node_with(name, NodeKind::Source, false, factory, replayable);
        Stream::new(self.clone(), vec![id])
    }

    fn connect<T: Data>(&self, from: &[NodeId], to: NodeId, exchange: &Exchange<T>) {
        let mut g = self.lock();
        for &f in from {
            let (kind, factory) = edge_factory::<T>(exchange.clone());
            g.edges.push(Edge {
                logical: LogicalEdge {
                    from: f,
                    to,
                    exchange: kind,
                },
                factory,
            });
        }
    }

    /// Validates the plan, creates the channels and spawns one task per
    /// instance on the current tokio runtime.
    ///
    /// # Errors
    /// A [`BuildError`] when the plan is invalid; nothing is spawned then.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(&self) -> Result<Query, BuildError> {
        let g = self.lock();
        let logical = g.logical();
        logical.validate(&g.config)?;
        let config = g.config.clone();
        config.trigger.validate()?;
        if config.checkpoint.is_some() {
            if let Some(n) = g
                .nodes
                .iter()
                .find(|n| n.logical.kind == NodeKind::Source && !n.replayable)
            {
                return Err(BuildError::NotReplayable {
                    source_name: n.logical.name.clone(),
                });
            }
        }
        // A coordinator runs when the query checkpoints or runs micro-batches.
        let mut ckpt = if config.checkpoint.is_some() || config.trigger.is_micro_batch() {
            Some(CheckpointSetup::prepare(
                config.checkpoint.as_ref(),
                &config.trigger,
                &logical,
            )?)
        } else {
            None
        };
        let sinks: Vec<_> = g
            .nodes
            .iter()
            .filter_map(|n| n.probe.as_deref().map(|p| (&n.logical, p)))
            .collect();
        if let Some(setup) = ckpt.as_mut() {
            setup.check_sinks(&sinks)?;
        }
        let n = g.nodes.len();
        let mut outputs: Vec<Vec<Vec<Box<dyn Any + Send>>>> = g
            .nodes
            .iter()
            .map(|node| (0..node.logical.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut inputs: Vec<Vec<Vec<Box<dyn Any + Send>>>> = outputs
            .iter()
            .map(|v| v.iter().map(|_| Vec::new()).collect())
            .collect();
        for e in &g.edges {
            let pf = g.nodes[e.logical.from].logical.parallelism;
            let pt = g.nodes[e.logical.to].logical.parallelism;
            let (outs, ins) = (e.factory)(pf, pt, &config);
            for (i, o) in outs.into_iter().enumerate() {
                outputs[e.logical.from][i].push(o);
            }
            for (i, inp) in ins.into_iter().enumerate() {
                inputs[e.logical.to][i].push(inp);
            }
        }
        let metrics = Arc::new(QueryMetrics::default());
        let mut tasks = Vec::new();
        let mut controls = Vec::new();
        for (id, node) in g.nodes.iter().enumerate().take(n) {
            let ln = &node.logical;
            let outs = std::mem::take(&mut outputs[id]);
            let ins = std::mem::take(&mut inputs[id]);
            for (instance, (o, i)) in outs.into_iter().zip(ins).enumerate() {
                let control = (ln.kind == NodeKind::Source).then(|| {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    controls.push(tx);
                    rx
                });
                let m = metrics.register(InstanceMetrics::new(
                    &ln.name,
                    instance,
                    ln.kind == NodeKind::Sink,
                ));
                let mut build = InstanceBuild {
                    name: ln.name.clone(),
                    instance,
                    parallelism: ln.parallelism,
                    outputs: o,
                    inputs: i,
                    config: config.clone(),
                    metrics: m,
                    control,
                    ckpt: None,
                    restore_offset: None,
                    state: None,
                    sink_commands: None,
                    sink_restore: None,
                };
                match ckpt.as_mut() {
                    Some(setup) => setup.wire(&mut build, ln)?,
                    None if ln.keyed => {
                        build.state = Some(SharedBackend::new(Box::new(
                            eddy_checkpoint::MemoryBackend::new(),
                        )))
                    }
                    None => {}
                }
                let fut = (node.factory)(build);
                tasks.push((
                    TaskInfo {
                        operator: ln.name.clone(),
                        instance,
                    },
                    fut,
                ));
            }
        }
        // Everything is restored: only now may recovery change what sinks
        // made visible.
        if let Some(setup) = ckpt.as_mut() {
            setup.apply_recovery(&sinks)?;
        }
        drop(sinks);
        let bound = logical.in_flight_bound(&config);
        let mut checkpoint_stats = None;
        if let Some(setup) = ckpt {
            let (coordinator, stats) = setup.into_coordinator(controls.clone());
            checkpoint_stats = Some(stats);
            tasks.push((
                TaskInfo {
                    operator: "checkpoint-coordinator".into(),
                    instance: 0,
                },
                Box::pin(coordinator.run()),
            ));
        }
        Ok(Query::spawn(QueryParts {
            tasks,
            controls,
            metrics,
            logical,
            in_flight_bound: bound,
            checkpoint_stats,
        }))
    }
}

/// A typed stream: the output of one or more nodes.
pub struct Stream<T> {
    pipeline: Pipeline,
    nodes: Vec<NodeId>,
    exchange: Exchange<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Self {
            pipeline: self.pipeline.clone(),
            nodes: self.nodes.clone(),
            exchange: self.exchange.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Data> Stream<T> {
    fn new(pipeline: Pipeline, nodes: Vec<NodeId>) -> Self {
        Self {
            pipeline,
            nodes,
            exchange: Exchange::Default,
            _t: PhantomData,
        }
    }

    /// The pipeline this stream belongs to.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Sets the parallelism of the operator(s) producing this stream.
    pub fn set_parallelism(self, parallelism: usize) -> Self {
        {
            let mut g = self.pipeline.lock();
            for &n in &self.nodes {
                g.nodes[n].logical.parallelism = parallelism;
            }
        }
        self
    }

    /// Renames the operator producing this stream (names identify state in
    /// checkpoints; give stable names to stateful operators).
    pub fn name(self, name: &str) -> Self {
        {
            let mut g = self.pipeline.lock();
            for &n in &self.nodes {
                g.nodes[n].logical.name = name.to_string();
            }
        }
        self
    }

    /// The records of `self` and `other`, interleaved.
    pub fn union(mut self, other: Stream<T>) -> Stream<T> {
        self.nodes.extend(other.nodes);
        self.exchange = Exchange::Default;
        self
    }

    /// Spreads records round-robin over the next operator's instances.
    pub fn rebalance(mut self) -> Self {
        self.exchange = Exchange::Rebalance;
        self
    }

    /// Sends every record to every instance of the next operator.
    pub fn broadcast(mut self) -> Self {
        self.exchange = Exchange::Broadcast;
        self
    }

    /// Partitions by key (hash shuffle): all records with one key reach the
    /// same instance of the next operator.
    pub fn key_by<K, F>(self, key: F) -> KeyedStream<T, K>
    where
        K: Hash + Eq + Clone + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);
        let k = key.clone();
        let hash: HashFn<T> = Arc::new(move |v: &T| key_hash(&k(v)));
        KeyedStream {
            stream: Stream {
                pipeline: self.pipeline,
                nodes: self.nodes,
                exchange: Exchange::Hash(hash),
                _t: PhantomData,
            },
            key,
        }
    }

    fn add_operator<O: Data, Op: Operator<T, O> + Clone>(
        self,
        name: &str,
        keyed: bool,
        op: Op,
    ) -> Stream<O> {
        let factory: NodeFactory = Box::new(move |b: InstanceBuild| {
            let metrics = b.metrics;
            let inputs = take_inputs::<T>(b.inputs, &metrics);
            let backend: Box<dyn StateBackend> = match &b.state {
                Some(shared) => Box::new(shared.clone()),
                None => Box::new(eddy_checkpoint::MemoryBackend::new()),
            };
            let task = OperatorTask {
                op: op.clone(),
                ctx: OperatorContext::new(
                    &b.name,
                    b.instance,
                    b.parallelism,
                    b.config.state_cache_capacity,
                    backend,
                ),
                inputs,
                router: take_router::<O>(b.outputs, b.config.batch_size),
                metrics,
                ckpt: b.ckpt,
                state: b.state,
            };
            Box::pin(task.run())
        });
        let id = self
            .pipeline
            .add_node(name, NodeKind::Operator, keyed, factory);
        self.pipeline.connect(&self.nodes, id, &self.exchange);
        Stream::new(self.pipeline, vec![id])
    }

    /// Adds an operator reading this stream. Each instance is a clone of `op`.
    pub fn transform<O: Data, Op: Operator<T, O> + Clone>(self, name: &str, op: Op) -> Stream<O> {
        self.add_operator(name, false, op)
    }

    /// Adds a sink reading this stream. Each instance is a clone of `sink`.
    pub fn sink<S: Sink<T> + Clone>(self, name: &str, sink: S) -> SinkRef {
        let probe = sink.clone();
        let factory: NodeFactory = Box::new(move |b: InstanceBuild| {
            let metrics = b.metrics;
            let inputs = take_inputs::<T>(b.inputs, &metrics);
            let sink = sink.clone();
            let latency_at_commit =
                b.ckpt.is_some() && (b.config.trigger.is_micro_batch() || sink.visible_at_commit());
            let task = SinkTask {
                latency_at_commit,
                sink,
                ctx: SinkContext {
                    name: b.name.clone(),
                    instance: b.instance,
                    parallelism: b.parallelism,
                },
                inputs,
                metrics,
                ckpt: b.ckpt,
                commands: b.sink_commands,
                restore: b.sink_restore,
            };
            Box::pin(task.run())
        });
        let id = self.pipeline.add_node(name, NodeKind::Sink, false, factory);
        self.pipeline.lock().nodes[id].probe = Some(Box::new(ProbeOf::<T, S>::new(probe)));
        self.pipeline.connect(&self.nodes, id, &self.exchange);
        SinkRef {
            pipeline: self.pipeline,
            node: id,
        }
    }
}

/// A handle on a sink node, to set its parallelism or name.
pub struct SinkRef {
    pipeline: Pipeline,
    node: NodeId,
}

impl SinkRef {
    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: usize) -> Self {
        self.pipeline.lock().nodes[self.node].logical.parallelism = parallelism;
        self
    }

    /// Renames the sink.
    pub fn name(self, name: &str) -> Self {
        self.pipeline.lock().nodes[self.node].logical.name = name.to_string();
        self
    }
}

/// A stream partitioned by key: the next operator sees all records of a key
/// in one instance, and can keep state per key.
pub struct KeyedStream<T, K> {
    stream: Stream<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<T: Data, K: Hash + Eq + Clone + Send + 'static> KeyedStream<T, K> {
    /// The key extractor.
    pub fn key_fn(&self) -> Arc<dyn Fn(&T) -> K + Send + Sync> {
        self.key.clone()
    }

    /// The partitioned records as a plain stream: the next operator (or sink)
    /// reads them through the hash shuffle, so each of its instances sees
    /// whole keys.
    pub fn partitioned(self) -> Stream<T> {
        self.stream
    }

    /// Adds a keyed operator: it runs after the hash shuffle, and its
    /// parallelism is bounded by the number of key groups.
    pub fn transform<O: Data, Op: Operator<T, O> + Clone>(self, name: &str, op: Op) -> Stream<O> {
        self.stream.add_operator(name, true, op)
    }
}
