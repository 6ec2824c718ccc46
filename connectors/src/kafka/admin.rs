//! Small administrative helpers around a Kafka cluster: create a topic,
//! produce records, read a topic to its end. Tests, examples and the
//! benchmark use them; they are blocking calls (run them off async worker
//! threads, or before a query starts).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::message::{KafkaMessage, KafkaRecord, ProducerRecord};

/// Why an administrative call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The client or the broker refused the call.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        source: KafkaError,
    },
    /// The call did not finish in time.
    #[error("kafka: {0} timed out")]
    Timeout(String),
}

fn err(what: &str) -> impl FnOnce(KafkaError) -> AdminError + '_ {
    move |source| AdminError::Kafka {
        what: what.to_string(),
        source,
    }
}

/// Whether a consumer reads only committed transactional records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Every record, including those of open and aborted transactions.
    ReadUncommitted,
}

/// Creates `topic` with `partitions` partitions (replication factor 1); a
/// topic that already exists is not an error.
///
/// # Errors
/// The broker refused, or did not answer within `timeout`.
pub fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(err("creating the admin client"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = block_on(admin.create_topics([&new], &opts)).map_err(err("creating a topic"))?;
    for r in results {
        if let Err((name, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(AdminError::Kafka {
                    what: format!("creating topic {name}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    wait_until_listed(brokers, topic, partitions, timeout)
}

/// Waits until a listing of all the cluster's topics shows `topic` with
/// `partitions` partitions. A broker acknowledges a creation before every
/// metadata answer shows it; a pattern source that lists the topics then
/// could miss it (seen with noida-db under load: one of two source
/// instances dealt partitions from a listing without the new topic).
fn wait_until_listed(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), AdminError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-admin-listing")
        .create()
        .map_err(err("creating a consumer"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let md = consumer
            .fetch_metadata(None, timeout)
            .map_err(err("listing topics"))?;
        let listed = md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == partitions.max(0) as usize
        });
        if listed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(AdminError::Timeout(format!("topic {topic} to be listed")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drives a future to completion on this thread (the admin client's
/// futures complete from librdkafka's own thread).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(f)
}

/// Produces `records` to `topic` (idempotent producer, not transactional)
/// and waits until every one is acknowledged.
///
/// # Errors
/// A record could not be produced, or the flush timed out.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = ProducerRecord>,
    timeout: Duration,
) -> Result<(), AdminError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(err("creating a producer"))?;
    for r in records {
        let mut rec = BaseRecord::to(topic).payload(&r.value);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(err("producing")(e)),
            }
        }
    }
    producer.flush(timeout).map_err(err("flushing"))
}

/// Reads every record of `topic` from the beginning to its end at the time
/// of the call (for a read-committed reader: to its last stable offset).
///
/// # Errors
/// The topic cannot be listed, a fetch failed, or the end was not reached
/// within `timeout`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
) -> Result<Vec<KafkaRecord>, AdminError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-read-topic")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .map_err(err("creating a consumer"))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(err("listing partitions"))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(err("assigning"))?;
            open.insert(p.id());
        }
    }
    consumer.assign(&tpl).map_err(err("assigning"))?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(AdminError::Timeout(format!("reading topic {topic}")));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push(KafkaMessage::from_borrowed(&m).to_record()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(err("reading")(e)),
        }
    }
    Ok(out)
}

/// A plain (idempotent, not transactional) producer for load generators.
pub struct PlainProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl PlainProducer {
    /// A producer writing to `topic`.
    ///
    /// # Errors
    /// The client cannot be created.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, AdminError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()
            .map_err(err("creating a producer"))?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues one record, waiting while the client's queue is full.
    ///
    /// # Errors
    /// The client refused the record.
    pub fn send(&self, r: &ProducerRecord) -> Result<(), AdminError> {
        let mut rec = BaseRecord::to(&self.topic).payload(&r.value);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(err("producing")(e)),
            }
        }
    }

    /// Waits until every queued record is acknowledged.
    ///
    /// # Errors
    /// Not all were acknowledged within `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), AdminError> {
        self.producer.flush(timeout).map_err(err("flushing"))
    }
}

/// Reads `topic` from the beginning, calling `each` for every record as it
/// arrives, until `stop` returns true (checked between polls, at least
/// every 100 ms).
///
/// # Errors
/// The topic cannot be listed or a fetch failed.
pub fn tail_topic(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
    mut each: impl FnMut(&KafkaMessage<'_>),
    stop: impl Fn() -> bool,
) -> Result<(), AdminError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-tail-topic")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .map_err(err("creating a consumer"))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(err("listing partitions"))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(err("assigning"))?;
        }
    }
    consumer.assign(&tpl).map_err(err("assigning"))?;
    while !stop() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => each(&KafkaMessage::from_borrowed(&m)),
            Some(Err(e)) => return Err(err("reading")(e)),
        }
    }
    Ok(())
}
