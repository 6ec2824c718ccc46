//! The typed API: [`Stream<T>`], a typed handle on the output of one or
//! more nodes (more than one after [`Stream::union`]), [`KeyedStream`] and
//! [`SinkRef`]. Operators from `eddy-operators` extend it through
//! [`Stream::transform`] and [`Stream::transform_with_side`].

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::edge::{HashFn, Inputs};
use crate::error::BuildError;
use crate::exchange::{take_inputs, take_router, Exchange};
use crate::graph::port;
use crate::graph::{InstanceBuild, NodeFactory, Pipeline};
use crate::keys::key_hash;
use crate::metrics::InstanceMetrics;
use crate::operator::{Operator, OperatorContext};
use crate::plan::{NodeId, NodeKind, MAIN_OUTPUT, SIDE_OUTPUT};
use crate::record::Data;
use crate::recovery::ProbeOf;
use crate::sink::{Sink, SinkContext};
use crate::source::{Source, SourceContext};
use crate::task::{OperatorTask, SinkTask, SourceTask};
use crate::timers::ProcessingClock;
use crate::watermark::{WatermarkGenerator, WatermarkStrategy};

/// A typed stream: the output of one or more nodes.
pub struct Stream<T> {
    pub(crate) pipeline: Pipeline,
    /// The outputs it reads: (node, port).
    pub(crate) nodes: Vec<(NodeId, usize)>,
    pub(crate) exchange: Exchange<T>,
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
    pub(crate) fn new(pipeline: Pipeline, nodes: Vec<(NodeId, usize)>) -> Self {
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
            for &(n, _) in &self.nodes {
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
            for &(n, _) in &self.nodes {
                g.nodes[n].logical.name = name.to_string();
            }
        }
        self
    }

    /// Assigns event time and generates watermarks at the source(s) of this
    /// stream ([`crate::watermark`]). Watermarks are generated where the
    /// records enter, so this applies to a stream a source returned (or a
    /// union of them); on any other stream `start` refuses the plan.
    pub fn with_watermarks(self, strategy: WatermarkStrategy<T>) -> Self {
        {
            let mut g = self.pipeline.lock();
            for &(n, _) in &self.nodes {
                let node = &mut g.nodes[n];
                let slot = node.watermarks.as_ref().and_then(|s| {
                    s.downcast_ref::<Arc<Mutex<Option<WatermarkStrategy<T>>>>>()
                        .cloned()
                });
                match slot {
                    Some(slot) => *slot.lock().expect("watermark slot") = Some(strategy.clone()),
                    None => {
                        let name = node.logical.name.clone();
                        g.errors.push(BuildError::Config(format!(
                            "with_watermarks on the output of `{name}`: watermarks are generated \
                             at sources; call it on the stream the source returned"
                        )));
                    }
                }
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

    fn add_operator<O: Data, S: Data, Op: Operator<T, O, S> + Clone>(
        self,
        name: &str,
        keyed: bool,
        op: Op,
    ) -> NodeId {
        let factory = operator_factory::<T, O, S, Op>(keyed, op, |inputs, metrics| {
            take_inputs::<T>(inputs, metrics)
        });
        let id = self
            .pipeline
            .add_node(name, NodeKind::Operator, keyed, factory);
        self.pipeline.connect(&self.nodes, id, &self.exchange);
        id
    }

    /// Adds an operator reading this stream. Each instance is a clone of `op`.
    pub fn transform<O: Data, Op: Operator<T, O> + Clone>(self, name: &str, op: Op) -> Stream<O> {
        let pipeline = self.pipeline.clone();
        let id = self.add_operator::<O, (), Op>(name, false, op);
        Stream::new(pipeline, vec![(id, MAIN_OUTPUT)])
    }

    /// Adds an operator with a side output (late records, dead letters):
    /// returns its main and its side output.
    pub fn transform_with_side<O: Data, S: Data, Op: Operator<T, O, S> + Clone>(
        self,
        name: &str,
        op: Op,
    ) -> (Stream<O>, Stream<S>) {
        let pipeline = self.pipeline.clone();
        let id = self.add_operator::<O, S, Op>(name, false, op);
        (
            Stream::new(pipeline.clone(), vec![(id, MAIN_OUTPUT)]),
            Stream::new(pipeline, vec![(id, SIDE_OUTPUT)]),
        )
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
    pub(crate) stream: Stream<T>,
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
        let pipeline = self.stream.pipeline.clone();
        let id = self.stream.add_operator::<O, (), Op>(name, true, op);
        Stream::new(pipeline, vec![(id, MAIN_OUTPUT)])
    }

    /// Adds a keyed operator with a side output: returns its main and its
    /// side output.
    pub fn transform_with_side<O: Data, S: Data, Op: Operator<T, O, S> + Clone>(
        self,
        name: &str,
        op: Op,
    ) -> (Stream<O>, Stream<S>) {
        let pipeline = self.stream.pipeline.clone();
        let id = self.stream.add_operator::<O, S, Op>(name, true, op);
        (
            Stream::new(pipeline.clone(), vec![(id, MAIN_OUTPUT)]),
            Stream::new(pipeline, vec![(id, SIDE_OUTPUT)]),
        )
    }
}

impl Pipeline {
    /// Adds a source. Each instance is a clone of `source`, opened with its
    /// instance index.
    pub fn source<T: Data, S: Source<T> + Clone>(&self, name: &str, source: S) -> Stream<T> {
        let replayable = source.replayable();
        let slot: Arc<Mutex<Option<WatermarkStrategy<T>>>> = Arc::new(Mutex::new(None));
        let strategy = slot.clone();
        let factory: NodeFactory = Box::new(move |b: InstanceBuild| {
            let watermarks = strategy
                .lock()
                .expect("watermark slot")
                .clone()
                .map(WatermarkGenerator::new);
            let task = SourceTask {
                source: source.clone(),
                ctx: SourceContext {
                    name: b.name.clone(),
                    instance: b.instance,
                    parallelism: b.parallelism,
                },
                router: take_router::<T>(port(b.outputs, MAIN_OUTPUT), b.config.batch_size),
                control: b.control.expect("sources get a control channel"),
                metrics: b.metrics,
                batch_size: b.config.batch_size,
                micro_batch: b.config.trigger.is_micro_batch(),
                ckpt: b.ckpt,
                restore_offset: b.restore_offset,
                watermarks,
                clock: ProcessingClock::new(),
                last_data: tokio::time::Instant::now(),
                idle: false,
                splits: Vec::new(),
            };
            Box::pin(task.run())
        });
        let id = self.add_node_with(name, NodeKind::Source, false, factory, replayable);
        self.lock().nodes[id].watermarks = Some(Box::new(slot));
        Stream::new(self.clone(), vec![(id, MAIN_OUTPUT)])
    }
}

/// The factory of an operator node: each instance runs a clone of `op`
/// over the inputs `take` builds from the instance's incoming channels.
pub(crate) fn operator_factory<I: Data, O: Data, S: Data, Op: Operator<I, O, S> + Clone>(
    keyed: bool,
    op: Op,
    take: impl Fn(Vec<Box<dyn std::any::Any + Send>>, &InstanceMetrics) -> Inputs<I> + Send + 'static,
) -> NodeFactory {
    Box::new(move |b: InstanceBuild| {
        let metrics = b.metrics;
        let inputs = take(b.inputs, &metrics);
        let state = b.state.expect("operators get a state backend");
        let (main_outputs, side_outputs): (Vec<_>, Vec<_>) =
            b.outputs.into_iter().partition(|(p, _)| *p == MAIN_OUTPUT);
        let outputs = main_outputs.into_iter().map(|(_, o)| o).collect();
        let side_outputs: Vec<_> = side_outputs.into_iter().map(|(_, o)| o).collect();
        let side =
            (!side_outputs.is_empty()).then(|| take_router::<S>(side_outputs, b.config.batch_size));
        let task = OperatorTask {
            op: op.clone(),
            ctx: OperatorContext::new(
                &b.name,
                b.instance,
                b.parallelism,
                b.config.state_cache_capacity,
                state.clone(),
            ),
            inputs,
            router: take_router::<O>(outputs, b.config.batch_size),
            side,
            metrics,
            ckpt: b.ckpt,
            state,
            keyed,
            restore_meta: b.restore_meta,
        };
        Box::pin(task.run())
    })
}
