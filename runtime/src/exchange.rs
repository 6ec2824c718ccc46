//! Exchanges: how the typed API's choice of partitioning becomes channels.
//!
//! The typed API records an [`Exchange`] per edge; when the pipeline starts,
//! [`edge_factory`] creates one bounded channel per (upstream instance,
//! downstream instance) pair and the [`Partitioning`] the upstream router
//! uses. Between the two, channels travel as `Box<dyn Any>` and are downcast
//! back to the type the API recorded for that edge ([`take_router`],
//! [`take_inputs`]), so a downcast cannot fail.

use std::any::Any;

use crate::config::PipelineConfig;
use crate::edge::{edge, HashFn, InEdge, Inputs, OutputGroup, Partitioning, Router};
use crate::metrics::InstanceMetrics;
use crate::plan::ExchangeKind;
use crate::record::Data;
use crate::two_input::Either;

/// Creates the channels of one logical edge: per upstream instance an
/// `OutputGroup<T>`, per downstream instance a `Vec<InEdge<T>>`.
pub(crate) type EdgeFactory = Box<dyn Fn(usize, usize, &PipelineConfig) -> EdgeChannels + Send>;
/// The channels of one logical edge, per upstream and per downstream instance.
pub(crate) type EdgeChannels = (Vec<Box<dyn Any + Send>>, Vec<Box<dyn Any + Send>>);

/// How the next consumer of a stream reads it.
pub(crate) enum Exchange<T> {
    /// Forward when both sides have the same parallelism, else rebalance.
    Default,
    /// Round-robin.
    Rebalance,
    /// To every instance.
    Broadcast,
    /// By key group of the key hash.
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

pub(crate) fn edge_factory<T: Data>(exchange: Exchange<T>) -> (ExchangeKind, EdgeFactory) {
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

/// The router over the channels of one output port of an instance.
pub(crate) fn take_router<O: Data>(
    outputs: Vec<Box<dyn Any + Send>>,
    batch_size: usize,
) -> Router<O> {
    let groups = outputs
        .into_iter()
        .map(|b| {
            *b.downcast::<OutputGroup<O>>()
                .expect("edge type recorded by the typed API")
        })
        .collect();
    Router::new(groups, batch_size)
}

/// The inputs over the channels of an instance's incoming edges.
pub(crate) fn take_inputs<I: Data>(
    inputs: Vec<Box<dyn Any + Send>>,
    metrics: &InstanceMetrics,
) -> Inputs<I> {
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

/// The inputs of a two-input operator: its first `n_left` incoming edges
/// carry `L`, the rest `R`; both are read as one [`Inputs`] of
/// [`Either<L, R>`], so markers align and the watermark is the minimum
/// across both.
pub(crate) fn take_inputs_two<L: Data, R: Data>(
    mut inputs: Vec<Box<dyn Any + Send>>,
    n_left: usize,
    metrics: &InstanceMetrics,
) -> Inputs<Either<L, R>> {
    let right = inputs.split_off(n_left.min(inputs.len()));
    let mut edges: Vec<InEdge<Either<L, R>>> = Vec::new();
    for b in inputs {
        let v = *b
            .downcast::<Vec<InEdge<L>>>()
            .expect("edge type recorded by the typed API");
        edges.extend(
            v.into_iter()
                .map(|e| e.map(Either::Left as fn(L) -> Either<L, R>)),
        );
    }
    for b in right {
        let v = *b
            .downcast::<Vec<InEdge<R>>>()
            .expect("edge type recorded by the typed API");
        edges.extend(
            v.into_iter()
                .map(|e| e.map(Either::Right as fn(R) -> Either<L, R>)),
        );
    }
    *metrics.input_queues.lock().expect("metrics lock") =
        edges.iter().map(|e| e.queued()).collect();
    Inputs::new(edges)
}
