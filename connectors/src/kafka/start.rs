//! Where a Kafka source instance starts: the partitions of its topics, and
//! a concrete start offset for each partition no checkpoint covers
//! ([`StartFrom`]). Both ask the broker (blocking round trips, bounded by
//! [`METADATA_TIMEOUT`]); the source calls them when it opens and at its
//! first poll.

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use eddy_runtime::OperatorError;

use super::offsets::{Positions, StartFrom, TopicPartition};
use super::source::{kafka_err, METADATA_TIMEOUT};

/// Every partition of `topics`, sorted.
pub(crate) fn list_partitions(
    consumer: &BaseConsumer,
    topics: &[String],
) -> Result<Vec<TopicPartition>, OperatorError> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| kafka_err(&format!("metadata of topic {topic}"), e))?;
        for t in md.topics() {
            if let Some(err) = t.error() {
                return Err(OperatorError::new(format!(
                    "kafka source: topic {topic}: {:?}",
                    RDKafkaErrorCode::from(err)
                )));
            }
            if t.partitions().is_empty() {
                return Err(OperatorError::new(format!(
                    "kafka source: topic {topic} has no partitions (does it exist?)"
                )));
            }
            out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
        }
    }
    out.sort();
    Ok(out)
}

/// A concrete start offset for each of `partitions`, as `start` says.
pub(crate) fn resolve_start(
    consumer: &BaseConsumer,
    start: StartFrom,
    partitions: &[TopicPartition],
) -> Result<Positions, OperatorError> {
    let mut out = Positions::new();
    let mut low_high = BTreeMap::new();
    for tp in partitions {
        let wm = consumer
            .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
            .map_err(|e| kafka_err(&format!("offsets of {}/{}", tp.0, tp.1), e))?;
        low_high.insert(tp.clone(), wm);
    }
    let lookup = |tpl: TopicPartitionList| -> Positions {
        let mut found = Positions::new();
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                found.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        found
    };
    let found = match start {
        StartFrom::Earliest | StartFrom::Latest => Positions::new(),
        StartFrom::Committed => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition(t, *p);
            }
            let got = consumer
                .committed_offsets(tpl, METADATA_TIMEOUT)
                .map_err(|e| kafka_err("committed group offsets", e))?;
            lookup(got)
        }
        StartFrom::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition_offset(t, *p, Offset::Offset(ms))
                    .map_err(|e| kafka_err("offsets for a timestamp", e))?;
            }
            let got = consumer
                .offsets_for_times(tpl, METADATA_TIMEOUT)
                .map_err(|e| kafka_err("offsets for a timestamp", e))?;
            lookup(got)
        }
    };
    for (tp, (low, high)) in low_high {
        let offset = match (start, found.get(&tp)) {
            (StartFrom::Latest, _) => high,
            (_, Some(&o)) => o.clamp(low, high),
            (StartFrom::Timestamp(_), None) => high,
            _ => low,
        };
        out.insert(tp, offset);
    }
    Ok(out)
}
