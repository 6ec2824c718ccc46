//! The typed dataflow builder and the logical plan it validates.
//!
//! A [`Pipeline`] collects nodes (sources, operators, sinks) and edges.
//! [`Stream<T>`](crate::Stream) is a typed handle on the output of one or more nodes (more
//! than one after [`Stream::union`](crate::Stream::union)); operators from `eddy-operators` extend it
//! through [`Stream::transform`](crate::Stream::transform). Nothing runs until [`Pipeline::start`], which
//! validates the plan ([`LogicalGraph::validate`]), creates one bounded
//! channel per (upstream instance, downstream instance) pair and spawns one
//! task per instance.
//!
//! Types are checked when the pipeline is written; between the typed API and
//! the physical build, channels travel as `Box<dyn Any>` and are downcast to
//! the type the API recorded for that edge, so a downcast cannot fail.

use std::any::Any;
use std::sync::{Arc, Mutex};

use eddy_checkpoint::SharedBackend;

pub use crate::plan::{ExchangeKind, LogicalEdge, LogicalGraph, LogicalNode, NodeId, NodeKind};

use crate::checkpointing::CheckpointSetup;
use crate::config::PipelineConfig;
use crate::control::{CheckpointLink, SinkCommand, SourceCommand};
use crate::error::BuildError;
use crate::exchange::{edge_factory, EdgeFactory, Exchange};
use crate::metrics::{InstanceMetrics, QueryMetrics};
use crate::query::{Query, QueryParts, TaskInfo};
use crate::record::Data;
use crate::recovery::SinkProbe;
use crate::task::TaskFuture;

/// What one instance is built from.
pub(crate) struct InstanceBuild {
    pub name: String,
    pub instance: usize,
    pub parallelism: usize,
    /// One `OutputGroup<O>` per outgoing edge, with the output port it
    /// reads ([`MAIN_OUTPUT`] or [`SIDE_OUTPUT`](crate::plan::SIDE_OUTPUT)).
    pub outputs: Vec<(usize, Box<dyn Any + Send>)>,
    /// One `Vec<InEdge<I>>` per incoming edge.
    pub inputs: Vec<Box<dyn Any + Send>>,
    pub config: PipelineConfig,
    pub metrics: Arc<InstanceMetrics>,
    pub control: Option<tokio::sync::mpsc::UnboundedReceiver<SourceCommand>>,
    /// Link to the coordinator, when checkpointing.
    pub ckpt: Option<CheckpointLink>,
    /// Sources: the offset to seek to (recovery).
    pub restore_offset: Option<Vec<u8>>,
    /// Operators: the state backend (restored when recovering).
    pub state: Option<SharedBackend>,
    /// Operators: the encoded meta of the restored checkpoint.
    pub restore_meta: Option<Vec<u8>>,
    /// Sinks: commits from the coordinator.
    pub sink_commands: Option<tokio::sync::mpsc::UnboundedReceiver<SinkCommand>>,
    /// Sinks: what to restore (see [`SinkTask::restore`]).
    pub sink_restore: Option<Option<(u64, Vec<u8>)>>,
}

/// One outgoing channel group of an instance, with its output port.
type PortOutput = (usize, Box<dyn Any + Send>);

pub(crate) type NodeFactory = Box<dyn Fn(InstanceBuild) -> TaskFuture + Send>;

pub(crate) struct Node {
    pub(crate) logical: LogicalNode,
    factory: NodeFactory,
    /// Sources: whether they can replay from an offset.
    replayable: bool,
    /// Sinks: what recovery asks about their committed output.
    pub(crate) probe: Option<Box<dyn SinkProbe>>,
    /// Sources: the slot of their watermark strategy (an
    /// `Arc<Mutex<Option<WatermarkStrategy<T>>>>`).
    pub(crate) watermarks: Option<Box<dyn Any + Send>>,
}

struct Edge {
    logical: LogicalEdge,
    factory: EdgeFactory,
}

#[derive(Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<Node>,
    edges: Vec<Edge>,
    config: PipelineConfig,
    /// Misuses of the typed API, reported by `start`.
    pub(crate) errors: Vec<BuildError>,
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

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, GraphBuilder> {
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

    pub(crate) fn add_node(
        &self,
        name: &str,
        kind: NodeKind,
        keyed: bool,
        factory: NodeFactory,
    ) -> NodeId {
        self.add_node_with(name, kind, keyed, factory, true)
    }

    pub(crate) fn add_node_with(
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
            watermarks: None,
        });
        g.nodes.len() - 1
    }

    /// Connects the outputs `from` (node, port) to `to`.
    pub(crate) fn connect<T: Data>(
        &self,
        from: &[(NodeId, usize)],
        to: NodeId,
        exchange: &Exchange<T>,
    ) {
        let mut g = self.lock();
        for &(f, port) in from {
            let (kind, factory) = edge_factory::<T>(exchange.clone());
            g.edges.push(Edge {
                logical: LogicalEdge {
                    from: f,
                    to,
                    exchange: kind,
                    from_port: port,
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
        if let Some(e) = g.errors.first() {
            return Err(e.clone());
        }
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
        let mut outputs: Vec<Vec<Vec<PortOutput>>> = g
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
                outputs[e.logical.from][i].push((e.logical.from_port, o));
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
                    restore_meta: None,
                    sink_commands: None,
                    sink_restore: None,
                };
                match ckpt.as_mut() {
                    Some(setup) => {
                        let w = setup.wire(instance, ln)?;
                        build.ckpt = w.ckpt;
                        build.restore_offset = w.restore_offset;
                        build.state = w.state;
                        build.restore_meta = w.restore_meta;
                        build.sink_commands = w.sink_commands;
                        build.sink_restore = w.sink_restore;
                    }
                    None if ln.kind == NodeKind::Operator => {
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

/// The outputs of one port of an instance.
pub(crate) fn port(
    outputs: Vec<(usize, Box<dyn Any + Send>)>,
    port: usize,
) -> Vec<Box<dyn Any + Send>> {
    outputs
        .into_iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, o)| o)
        .collect()
}
