//! The Kafka job of the CLI and the Kafka crash tests: a topic of
//! `key,seq` lines -> key_by(key) -> running count -> `key,count` records
//! into an exactly-once output topic and, optionally, the same updates into
//! an at-least-once topic. Lines that do not parse are dead letters.

use std::path::PathBuf;

use eddy::connectors::{DeadLetters, KafkaMessage, KafkaSink, KafkaSource, ProducerRecord};
use eddy::prelude::*;

/// What [`kafka_count`] reads and writes.
#[derive(Debug, Clone)]
pub struct KafkaCountJob {
    /// Bootstrap servers.
    pub brokers: String,
    /// The input topic.
    pub input: String,
    /// The exactly-once output topic.
    pub output: String,
    /// An at-least-once output topic for the same updates, if any.
    pub at_least_once_output: Option<String>,
    /// Where the exactly-once sink stages epochs and dead letters go
    /// (`dead-letters.jsonl`).
    pub dir: PathBuf,
    /// Parallelism of every operator.
    pub parallelism: usize,
    /// Stop at the input's end offsets found at start.
    pub bounded: bool,
    /// Scale-out: this process's index and the number of processes.
    pub process: (usize, usize),
}

/// Parses a `key,seq` input line into its key.
///
/// # Errors
/// The value is missing, not UTF-8, or not two unsigned integers.
pub fn parse_input(m: &KafkaMessage<'_>) -> Result<u64, String> {
    let line = m.value_str()?;
    let (key, seq) = line
        .split_once(',')
        .ok_or_else(|| format!("expected key,seq: {line:?}"))?;
    seq.parse::<u64>()
        .map_err(|e| format!("seq {seq:?}: {e}"))?;
    key.parse::<u64>().map_err(|e| format!("key {key:?}: {e}"))
}

/// The output record of one count update: key `key`, value `key,count`.
pub fn output_record(r: &(u64, u64)) -> ProducerRecord {
    ProducerRecord::keyed(r.0.to_string(), format!("{},{}", r.0, r.1))
}

/// Builds the job into `pipeline`; returns its dead-letter handle.
pub fn kafka_count(pipeline: &Pipeline, job: &KafkaCountJob) -> DeadLetters {
    let dead = DeadLetters::to_file(job.dir.join("dead-letters.jsonl"));
    let mut source = KafkaSource::new(&job.brokers, &[job.input.as_str()], parse_input)
        .dead_letters(dead.clone())
        .process(job.process.0, job.process.1);
    if job.bounded {
        source = source.bounded();
    }
    let counts = pipeline
        .source("kafka-in", source)
        .set_parallelism(job.parallelism)
        .key_by(|k: &u64| *k)
        .count()
        .set_parallelism(job.parallelism);
    let prefix = format!("eddy-p{}", job.process.0);
    if let Some(topic) = &job.at_least_once_output {
        counts
            .clone()
            .sink(
                "kafka-alo",
                KafkaSink::at_least_once(&job.brokers, topic, output_record),
            )
            .set_parallelism(job.parallelism);
    }
    counts
        .sink(
            "kafka-eo",
            KafkaSink::exactly_once(
                &job.brokers,
                &job.output,
                job.dir.join("staging"),
                output_record,
            )
            .transactional_id_prefix(&prefix),
        )
        .set_parallelism(job.parallelism);
    dead
}
