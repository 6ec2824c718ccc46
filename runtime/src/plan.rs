//! The logical plan: nodes, edges and exchanges without their code, and the
//! checks [`Pipeline::start`](crate::Pipeline::start) runs on it before
//! anything is spawned.

use std::collections::HashSet;

use crate::config::PipelineConfig;
use crate::error::BuildError;

/// Index of a node in a pipeline.
pub type NodeId = usize;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Produces records; has no inputs.
    Source,
    /// Transforms records.
    Operator,
    /// Consumes records; has no outputs.
    Sink,
}

/// How an edge spreads records, as declared in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Forward when both sides have the same parallelism, else rebalance.
    Default,
    /// By key (hash shuffle).
    Hash,
    /// Round-robin.
    Rebalance,
    /// To every instance.
    Broadcast,
}

/// A node of the logical plan.
#[derive(Debug, Clone)]
pub struct LogicalNode {
    /// Unique name (identifies state in checkpoints).
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
    /// Number of instances.
    pub parallelism: usize,
    /// Whether it holds keyed state (its parallelism is bounded by key groups).
    pub keyed: bool,
}

/// An edge of the logical plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalEdge {
    /// Upstream node.
    pub from: NodeId,
    /// Downstream node.
    pub to: NodeId,
    /// How records are spread.
    pub exchange: ExchangeKind,
    /// Which output of `from` it reads: [`MAIN_OUTPUT`] or [`SIDE_OUTPUT`].
    pub from_port: usize,
}

/// The main output of a node.
pub const MAIN_OUTPUT: usize = 0;
/// The side output of an operator (late records, dead letters).
pub const SIDE_OUTPUT: usize = 1;

/// The plan without its code: what validation and tools look at.
#[derive(Debug, Clone, Default)]
pub struct LogicalGraph {
    /// Nodes, indexed by [`NodeId`].
    pub nodes: Vec<LogicalNode>,
    /// Edges.
    pub edges: Vec<LogicalEdge>,
}

impl LogicalGraph {
    /// Refuses plans that cannot run correctly: no source, no sink, parallelism
    /// 0 or above the key groups of a keyed operator, duplicate names, an
    /// operator whose output nobody reads, or a cycle.
    pub fn validate(&self, config: &PipelineConfig) -> Result<(), BuildError> {
        if config.batch_size == 0 || config.channel_capacity == 0 {
            return Err(BuildError::Config(
                "batch_size and channel_capacity must be at least 1".into(),
            ));
        }
        if config.max_key_groups == 0 {
            return Err(BuildError::Config(
                "max_key_groups must be at least 1".into(),
            ));
        }
        if !self.nodes.iter().any(|n| n.kind == NodeKind::Source) {
            return Err(BuildError::NoSource);
        }
        if !self.nodes.iter().any(|n| n.kind == NodeKind::Sink) {
            return Err(BuildError::NoSink);
        }
        let mut names = HashSet::new();
        for n in &self.nodes {
            if n.parallelism == 0 {
                return Err(BuildError::ZeroParallelism {
                    operator: n.name.clone(),
                });
            }
            if n.keyed && n.parallelism > config.max_key_groups as usize {
                return Err(BuildError::ParallelismAboveKeyGroups {
                    operator: n.name.clone(),
                    parallelism: n.parallelism,
                    max_key_groups: config.max_key_groups,
                });
            }
            if !names.insert(n.name.as_str()) {
                return Err(BuildError::DuplicateName {
                    operator: n.name.clone(),
                });
            }
        }
        // Kahn's algorithm: nodes never freed sit on (or behind) a cycle.
        let mut indegree = vec![0usize; self.nodes.len()];
        for e in &self.edges {
            indegree[e.to] += 1;
        }
        let mut ready: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut freed = 0;
        while let Some(n) = ready.pop() {
            freed += 1;
            for e in self.edges.iter().filter(|e| e.from == n) {
                indegree[e.to] -= 1;
                if indegree[e.to] == 0 {
                    ready.push(e.to);
                }
            }
        }
        if freed < self.nodes.len() {
            let on_cycle = (0..self.nodes.len())
                .find(|&i| indegree[i] > 0)
                .expect("some node is not freed");
            return Err(BuildError::Cycle {
                operator: self.nodes[on_cycle].name.clone(),
            });
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kind != NodeKind::Sink && !self.edges.iter().any(|e| e.from == i) {
                return Err(BuildError::Dangling {
                    operator: n.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Upper bound of the records in flight between the sources and the
    /// sinks: per edge, the channel's capacity plus the batch held by the
    /// sender's buffer and the batch held by the receiver.
    pub fn in_flight_bound(&self, config: &PipelineConfig) -> u64 {
        let pairs: usize = self
            .edges
            .iter()
            .map(|e| {
                let (pf, pt) = (self.nodes[e.from].parallelism, self.nodes[e.to].parallelism);
                match e.exchange {
                    ExchangeKind::Default if pf == pt => pf,
                    _ => pf * pt,
                }
            })
            .sum();
        (pairs * (config.channel_capacity + 2) * config.batch_size) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeKind) -> LogicalNode {
        LogicalNode {
            name: name.into(),
            kind,
            parallelism: 1,
            keyed: false,
        }
    }

    fn e(from: NodeId, to: NodeId) -> LogicalEdge {
        LogicalEdge {
            from,
            to,
            exchange: ExchangeKind::Default,
            from_port: MAIN_OUTPUT,
        }
    }

    #[test]
    fn validation_refuses_bad_plans() {
        let cfg = PipelineConfig::default();
        let ok = LogicalGraph {
            nodes: vec![node("src", NodeKind::Source), node("out", NodeKind::Sink)],
            edges: vec![e(0, 1)],
        };
        assert_eq!(ok.validate(&cfg), Ok(()));

        let mut no_sink = ok.clone();
        no_sink.nodes[1].kind = NodeKind::Operator;
        assert_eq!(no_sink.validate(&cfg), Err(BuildError::NoSink));

        let mut zero = ok.clone();
        zero.nodes[1].parallelism = 0;
        assert!(matches!(
            zero.validate(&cfg),
            Err(BuildError::ZeroParallelism { .. })
        ));

        let cycle = LogicalGraph {
            nodes: vec![
                node("src", NodeKind::Source),
                node("a", NodeKind::Operator),
                node("b", NodeKind::Operator),
                node("out", NodeKind::Sink),
            ],
            edges: vec![e(0, 1), e(1, 2), e(2, 1), e(2, 3)],
        };
        assert!(matches!(
            cycle.validate(&cfg),
            Err(BuildError::Cycle { .. })
        ));

        let dangling = LogicalGraph {
            nodes: vec![
                node("src", NodeKind::Source),
                node("a", NodeKind::Operator),
                node("out", NodeKind::Sink),
            ],
            edges: vec![e(0, 2), e(0, 1)],
        };
        assert_eq!(
            dangling.validate(&cfg),
            Err(BuildError::Dangling {
                operator: "a".into()
            })
        );

        let mut dup = ok.clone();
        dup.nodes[1].name = "src".into();
        assert!(matches!(
            dup.validate(&cfg),
            Err(BuildError::DuplicateName { .. })
        ));
    }
}
