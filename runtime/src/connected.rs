//! Two streams connected into one two-input operator
//! ([`crate::two_input`]): `a.connect(b)`, `a.key_by(k).connect(b.key_by(k))`
//! (both sides partitioned by the same key, so an instance sees all of a
//! key's records from both), or `a.key_by(k).connect_broadcast(rules)`
//! (every instance sees every record of the second input).

use std::hash::Hash;

use crate::exchange::{take_inputs_two, Exchange};
use crate::plan::{NodeKind, MAIN_OUTPUT, SIDE_OUTPUT};
use crate::record::Data;
use crate::stream::{operator_factory, KeyedStream, Stream};
use crate::two_input::{TwoInput, TwoInputOperator};

/// Two streams feeding one two-input operator.
pub struct ConnectedStreams<L, R> {
    left: Stream<L>,
    right: Stream<R>,
    keyed: bool,
}

impl<L: Data> Stream<L> {
    /// Connects this stream (the first input) with `other` (the second)
    /// for a two-input operator. Each side keeps the partitioning set on it
    /// (`broadcast()` on `other` sends each of its records to every
    /// instance).
    pub fn connect<R: Data>(self, other: Stream<R>) -> ConnectedStreams<L, R> {
        ConnectedStreams {
            left: self,
            right: other,
            keyed: false,
        }
    }
}

impl<L: Data, K: Hash + Eq + Clone + Send + 'static> KeyedStream<L, K> {
    /// Connects two streams keyed by the same key type: records of both
    /// with one key reach the same instance, whose state is keyed.
    pub fn connect<R: Data>(self, other: KeyedStream<R, K>) -> ConnectedStreams<L, R> {
        ConnectedStreams {
            left: self.stream,
            right: other.stream,
            keyed: true,
        }
    }

    /// Connects this keyed stream with a broadcast input: every instance
    /// sees every record of `other` (rules, thresholds), next to its share
    /// of this stream's keys.
    pub fn connect_broadcast<R: Data>(self, other: Stream<R>) -> ConnectedStreams<L, R> {
        let mut right = other;
        right.exchange = Exchange::Broadcast;
        ConnectedStreams {
            left: self.stream,
            right,
            keyed: true,
        }
    }
}

impl<L: Data, R: Data> ConnectedStreams<L, R> {
    fn add<O: Data, S: Data, Op: TwoInputOperator<L, R, O, S> + Clone>(
        self,
        name: &str,
        op: Op,
    ) -> (crate::graph::Pipeline, crate::plan::NodeId) {
        let pipeline = self.left.pipeline.clone();
        let n_left = self.left.nodes.len();
        let factory = operator_factory::<_, O, S, _>(self.keyed, TwoInput(op), move |ins, m| {
            take_inputs_two::<L, R>(ins, n_left, m)
        });
        let id = pipeline.add_node(name, NodeKind::Operator, self.keyed, factory);
        // The left edges first: the factory reads the first `n_left`
        // incoming edges as the first input.
        pipeline.connect(&self.left.nodes, id, &self.left.exchange);
        pipeline.connect(&self.right.nodes, id, &self.right.exchange);
        (pipeline, id)
    }

    /// Adds the two-input operator `op` (each instance a clone).
    pub fn transform<O: Data, Op: TwoInputOperator<L, R, O> + Clone>(
        self,
        name: &str,
        op: Op,
    ) -> Stream<O> {
        let (pipeline, id) = self.add::<O, (), Op>(name, op);
        Stream::new(pipeline, vec![(id, MAIN_OUTPUT)])
    }

    /// Adds the two-input operator `op` with a side output: returns its
    /// main and its side output.
    pub fn transform_with_side<O: Data, S: Data, Op: TwoInputOperator<L, R, O, S> + Clone>(
        self,
        name: &str,
        op: Op,
    ) -> (Stream<O>, Stream<S>) {
        let (pipeline, id) = self.add::<O, S, Op>(name, op);
        (
            Stream::new(pipeline.clone(), vec![(id, MAIN_OUTPUT)]),
            Stream::new(pipeline, vec![(id, SIDE_OUTPUT)]),
        )
    }
}
