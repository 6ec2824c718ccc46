//! The Kafka sink (see the [module docs](super)).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use eddy_runtime::{OperatorError, Record, Sink, SinkContext};

use super::message::ProducerRecord;
use super::staging::{self, StagedEpoch, Staging};
use crate::file::Delivery;

/// Bound on each blocking producer call (flush, transaction begin, commit,
/// fencing) and on reading the committed epoch.
pub const PRODUCER_TIMEOUT: Duration = Duration::from_secs(30);

/// Test-only fault point: when this environment variable holds `n`, the
/// process aborts at its `n`-th transaction commit (counted over every
/// exactly-once Kafka sink instance of the process), after the epoch's
/// records and its epoch marker were sent in the transaction and before
/// the transaction commits: the checkpoint of that epoch is durable, its
/// output is not visible. The crash tests use it.
pub const FAULT_AT_COMMIT_ENV: &str = "EDDY_KAFKA_FAULT_AT_COMMIT";

static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);

type Serialize<T> = Arc<dyn Fn(&T) -> ProducerRecord + Send + Sync>;

#[derive(Debug, Clone)]
struct Config {
    brokers: String,
    topic: String,
    delivery: Delivery,
    staging: Option<PathBuf>,
    transactional_prefix: String,
    properties: Vec<(String, String)>,
}

/// Records the first failed delivery, reported at the next flush.
#[derive(Default, Clone)]
struct Deliveries {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

impl Deliveries {
    fn check(&self) -> Result<(), OperatorError> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        match failed {
            Some(e) => Err(OperatorError::new(format!(
                "kafka sink: delivery failed: {e}"
            ))),
            None => Ok(()),
        }
    }
}

type KafkaProducer = ThreadedProducer<Deliveries>;

/// The transactional part of an exactly-once instance.
struct Txn {
    /// Reads the epoch group and supplies its metadata to transactions.
    epochs: BaseConsumer,
    staging: Staging,
    /// Staged epochs not yet committed, ascending.
    pending: Vec<StagedEpoch>,
}

struct Open {
    producer: KafkaProducer,
    deliveries: Deliveries,
    txn: Option<Txn>,
    initialized: bool,
}

/// Writes records to a Kafka topic, exactly-once or at-least-once (see
/// the [module docs](super)).
pub struct KafkaSink<T> {
    config: Config,
    serialize: Serialize<T>,
    open: Option<Open>,
}

impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            serialize: self.serialize.clone(),
            open: None,
        }
    }
}

fn kafka_err(what: &str, e: KafkaError) -> OperatorError {
    OperatorError::new(format!("kafka sink: {what}: {e}"))
}

/// The transactional id of an instance: stable across restarts, so a
/// restarted instance fences its predecessor.
fn transactional_id(prefix: &str, ctx: &SinkContext) -> String {
    format!("{prefix}-{}-{}", ctx.name, ctx.instance)
}

/// The consumer group whose committed offset records the last epoch an
/// instance's transactions committed.
fn epoch_group(transactional_id: &str) -> String {
    format!("{transactional_id}.epochs")
}

impl<T> KafkaSink<T> {
    /// An exactly-once sink: each epoch's records are staged in
    /// `staging_dir` at the epoch's marker and produced in one Kafka
    /// transaction when the epoch's checkpoint is durable.
    pub fn exactly_once(
        brokers: &str,
        topic: &str,
        staging_dir: impl Into<PathBuf>,
        serialize: impl Fn(&T) -> ProducerRecord + Send + Sync + 'static,
    ) -> Self {
        Self::build(
            brokers,
            topic,
            Delivery::ExactlyOnce,
            Some(staging_dir.into()),
            serialize,
        )
    }

    /// An at-least-once sink: an idempotent producer, records sent as they
    /// arrive, flushed at every marker; a crash replays (duplicates) the
    /// records since the last checkpoint.
    pub fn at_least_once(
        brokers: &str,
        topic: &str,
        serialize: impl Fn(&T) -> ProducerRecord + Send + Sync + 'static,
    ) -> Self {
        Self::build(brokers, topic, Delivery::AtLeastOnce, None, serialize)
    }

    fn build(
        brokers: &str,
        topic: &str,
        delivery: Delivery,
        staging: Option<PathBuf>,
        serialize: impl Fn(&T) -> ProducerRecord + Send + Sync + 'static,
    ) -> Self {
        Self {
            config: Config {
                brokers: brokers.to_string(),
                topic: topic.to_string(),
                delivery,
                staging,
                transactional_prefix: "eddy".to_string(),
                properties: Vec::new(),
            },
            serialize: Arc::new(serialize),
            open: None,
        }
    }

    /// The prefix of the transactional ids, `<prefix>-<sink name>-<instance>`
    /// (default `eddy`). Processes that share an output topic through
    /// scale-out each need their own prefix.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.config.transactional_prefix = prefix.to_string();
        self
    }

    /// Sets a librdkafka property of the producer (for example
    /// `linger.ms`). The sink's own settings (idempotence, transactional id)
    /// take precedence.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.config
            .properties
            .push((key.to_string(), value.to_string()));
        self
    }

    fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("linger.ms", "0");
        for (k, v) in &self.config.properties {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all");
        cc
    }

    fn producer(
        &self,
        transactional_id: Option<&str>,
    ) -> Result<(KafkaProducer, Deliveries), OperatorError> {
        let mut cc = self.client_config();
        if let Some(id) = transactional_id {
            cc.set("transactional.id", id);
        }
        let deliveries = Deliveries::default();
        let producer = cc
            .create_with_context(deliveries.clone())
            .map_err(|e| kafka_err("creating the producer", e))?;
        Ok((producer, deliveries))
    }

    fn epoch_consumer(&self, transactional_id: &str) -> Result<BaseConsumer, OperatorError> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", epoch_group(transactional_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| kafka_err("creating the epoch-group consumer", e))
    }

    /// The epoch group's committed offset for this instance: the last epoch
    /// whose transaction committed.
    fn read_committed_epoch(&self, consumer: &BaseConsumer) -> Result<Option<u64>, OperatorError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, 0);
        let got = consumer
            .committed_offsets(tpl, PRODUCER_TIMEOUT)
            .map_err(|e| kafka_err("reading the committed epoch", e))?;
        Ok(got.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => u64::try_from(o).ok(),
            _ => None,
        }))
    }

    fn open_mut(&mut self) -> Result<&mut Open, OperatorError> {
        self.open
            .as_mut()
            .ok_or_else(|| OperatorError::new("kafka sink: used before open"))
    }

    /// Exactly-once: initialises transactions once per producer, which
    /// fences any earlier producer with the same transactional id and
    /// aborts (or completes) its unfinished transaction.
    fn ensure_initialized(&mut self) -> Result<(), OperatorError> {
        let open = self.open_mut()?;
        if open.txn.is_some() && !open.initialized {
            open.producer
                .init_transactions(PRODUCER_TIMEOUT)
                .map_err(|e| kafka_err("initialising transactions", e))?;
            open.initialized = true;
        }
        Ok(())
    }

    /// Produces `records` in one transaction that also records `epoch` in
    /// the epoch group, and commits it.
    fn produce_transaction(
        &mut self,
        records: &[ProducerRecord],
        epoch: Option<u64>,
    ) -> Result<(), OperatorError> {
        self.ensure_initialized()?;
        let topic = self.config.topic.clone();
        let open = self.open_mut()?;
        let txn = open
            .txn
            .as_ref()
            .expect("exactly-once sinks have a transaction part");
        let producer = &open.producer;
        producer
            .begin_transaction()
            .map_err(|e| kafka_err("beginning a transaction", e))?;
        let result = (|| {
            for r in records {
                send(producer, &topic, r)?;
            }
            if let Some(epoch) = epoch {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, 0, Offset::Offset(epoch as i64))
                    .map_err(|e| kafka_err("recording the epoch", e))?;
                let meta = txn.epochs.group_metadata().ok_or_else(|| {
                    OperatorError::new("kafka sink: the epoch group has no metadata")
                })?;
                producer
                    .send_offsets_to_transaction(&tpl, &meta, PRODUCER_TIMEOUT)
                    .map_err(|e| kafka_err("recording the epoch in the transaction", e))?;
            }
            fault_point();
            producer
                .commit_transaction(PRODUCER_TIMEOUT)
                .map_err(|e| kafka_err("committing the transaction", e))?;
            open.deliveries.check()
        })();
        if result.is_err() {
            let _ = producer.abort_transaction(PRODUCER_TIMEOUT);
        }
        result
    }

    /// Produces every staged epoch `<= epoch` not yet committed, each in its
    /// own transaction, and removes its file.
    fn commit_staged_through(
        &mut self,
        epoch: u64,
        already: Option<u64>,
    ) -> Result<(), OperatorError> {
        let open = self.open_mut()?;
        let txn = open.txn.as_mut().expect("exactly-once");
        let due: Vec<u64> = txn
            .staging
            .epochs()?
            .into_iter()
            .filter(|&e| e <= epoch)
            .collect();
        for e in due {
            let open = self.open_mut()?;
            let txn = open.txn.as_mut().expect("exactly-once");
            if already.is_none_or(|c| e > c) {
                let records = txn.staging.read(e)?;
                self.produce_transaction(&records, Some(e))?;
            }
            let open = self.open_mut()?;
            let txn = open.txn.as_mut().expect("exactly-once");
            txn.staging.remove(e)?;
            txn.pending.retain(|s| s.epoch != e);
        }
        let open = self.open_mut()?;
        let txn = open.txn.as_mut().expect("exactly-once");
        txn.pending.retain(|s| s.epoch > epoch);
        Ok(())
    }
}

/// Sends one record, waiting for room in the producer's queue when it is
/// full (backpressure from the broker).
fn send(producer: &KafkaProducer, topic: &str, r: &ProducerRecord) -> Result<(), OperatorError> {
    let mut record = BaseRecord::to(topic).payload(&r.value);
    if let Some(k) = &r.key {
        record = record.key(k);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer
                    .flush(Duration::from_millis(100))
                    .or_else(|e| match e {
                        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Ok(()),
                        e => Err(e),
                    })
                    .map_err(|e| kafka_err("waiting for the queue", e))?;
            }
            Err((e, _)) => return Err(kafka_err("producing", e)),
        }
    }
}

fn fault_point() {
    let Some(at) = std::env::var(FAULT_AT_COMMIT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if TRANSACTIONS.fetch_add(1, Ordering::SeqCst) + 1 == at {
        eprintln!("{FAULT_AT_COMMIT_ENV}={at}: aborting before the transaction commits");
        std::process::abort();
    }
}

impl<T: Send + 'static> Sink<T> for KafkaSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), OperatorError> {
        let txn_id = transactional_id(&self.config.transactional_prefix, ctx);
        let (producer, deliveries, txn) = match self.config.delivery {
            Delivery::AtLeastOnce => {
                let (p, d) = self.producer(None)?;
                (p, d, None)
            }
            Delivery::ExactlyOnce => {
                let dir = self
                    .config
                    .staging
                    .as_ref()
                    .ok_or_else(|| {
                        OperatorError::new("kafka sink: exactly-once needs a staging directory")
                    })?
                    .join(&ctx.name)
                    .join(ctx.instance.to_string());
                let (p, d) = self.producer(Some(&txn_id))?;
                let txn = Txn {
                    epochs: self.epoch_consumer(&txn_id)?,
                    staging: Staging::open(dir)?,
                    pending: Vec::new(),
                };
                (p, d, Some(txn))
            }
        };
        self.open = Some(Open {
            producer,
            deliveries,
            txn,
            initialized: false,
        });
        Ok(())
    }

    fn write(&mut self, records: Vec<Record<T>>) -> Result<(), OperatorError> {
        let serialize = self.serialize.clone();
        let topic = self.config.topic.clone();
        let open = self.open_mut()?;
        match &mut open.txn {
            Some(txn) => {
                let out: Vec<ProducerRecord> =
                    records.iter().map(|r| serialize(&r.value)).collect();
                txn.staging.append(&out)
            }
            None => {
                for r in &records {
                    send(&open.producer, &topic, &serialize(&r.value))?;
                }
                open.deliveries.check()
            }
        }
    }

    fn on_marker(&mut self, epoch: u64) -> Result<Vec<u8>, OperatorError> {
        let open = self.open_mut()?;
        match &mut open.txn {
            Some(txn) => {
                if let Some(staged) = txn.staging.seal(epoch)? {
                    txn.pending.push(staged);
                }
                Ok(staging::encode(&txn.pending))
            }
            None => {
                open.producer
                    .flush(PRODUCER_TIMEOUT)
                    .map_err(|e| kafka_err("flushing", e))?;
                open.deliveries.check()?;
                Ok(Vec::new())
            }
        }
    }

    fn commit(&mut self, epoch: u64) -> Result<(), OperatorError> {
        if self.config.delivery == Delivery::ExactlyOnce {
            self.commit_staged_through(epoch, None)?;
        }
        Ok(())
    }

    fn restore(&mut self, restored: Option<(u64, &[u8])>) -> Result<(), OperatorError> {
        if self.config.delivery == Delivery::AtLeastOnce {
            return Ok(());
        }
        self.ensure_initialized()?;
        let open = self.open.as_ref().expect("initialised above");
        let txn = open.txn.as_ref().expect("exactly-once");
        let committed = self.read_committed_epoch(&txn.epochs)?;
        let open = self.open_mut()?;
        let txn = open.txn.as_mut().expect("exactly-once");
        txn.staging.discard_current()?;
        let restored_epoch = restored.map_or(0, |(e, _)| e);
        let meta = restored.map_or(&[][..], |(_, m)| m);
        let records = staging::decode(meta)?;
        let staged_now = txn.staging.epochs()?;
        // Staged epochs the restored checkpoint covers and no transaction
        // committed yet: verified against the checkpoint, then produced.
        for &e in staged_now
            .iter()
            .filter(|&&e| e <= restored_epoch && committed.is_none_or(|c| e > c))
        {
            let path = txn.staging.epoch_path(e);
            match records.iter().find(|r| r.epoch == e) {
                Some(r) => staging::verify(&path, r).map_err(|err| {
                    OperatorError::new(err.message.replace("file sink", "kafka sink"))
                })?,
                None => {
                    return Err(OperatorError::new(format!(
                        "kafka sink: staged output {} is not recorded in checkpoint \
                         {restored_epoch}: refusing to produce it",
                        path.display()
                    )))
                }
            }
        }
        for r in records.iter().filter(|r| r.epoch <= restored_epoch) {
            if !staged_now.contains(&r.epoch) && committed.is_none_or(|c| r.epoch > c) {
                return Err(OperatorError::new(format!(
                    "kafka sink: epoch {} is recorded in checkpoint {restored_epoch} but \
                     neither staged ({}) nor committed (the epoch group says {committed:?}): \
                     its output is lost",
                    r.epoch,
                    txn.staging.epoch_path(r.epoch).display()
                )));
            }
        }
        // Later epochs are replayed by the sources.
        for &e in staged_now.iter().filter(|&&e| e > restored_epoch) {
            txn.staging.remove(e)?;
        }
        txn.pending.clear();
        self.commit_staged_through(restored_epoch, committed)
    }

    fn committed_epoch(&self, ctx: &SinkContext) -> Result<Option<u64>, OperatorError> {
        if self.config.delivery == Delivery::AtLeastOnce {
            return Ok(None);
        }
        let txn_id = transactional_id(&self.config.transactional_prefix, ctx);
        // Fence first: a predecessor's transaction caught between prepare
        // and commit is completed (or an open one aborted), so the epoch
        // group's offset is stable when read.
        let (producer, _) = self.producer(Some(&txn_id))?;
        producer
            .init_transactions(PRODUCER_TIMEOUT)
            .map_err(|e| kafka_err("initialising transactions", e))?;
        let consumer = self.epoch_consumer(&txn_id)?;
        self.read_committed_epoch(&consumer)
    }

    fn visible_at_commit(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        if self.open.is_none() {
            return Ok(());
        }
        match self.config.delivery {
            Delivery::AtLeastOnce => {
                let open = self.open_mut()?;
                open.producer
                    .flush(PRODUCER_TIMEOUT)
                    .map_err(|e| kafka_err("flushing", e))?;
                open.deliveries.check()
            }
            Delivery::ExactlyOnce => {
                // Without checkpointing there is no commit protocol: the end
                // of input commits what is left, in one transaction.
                let open = self.open_mut()?;
                let txn = open.txn.as_mut().expect("exactly-once");
                if let Some(staged) = txn.staging.seal(u64::MAX)? {
                    let records = txn.staging.read(staged.epoch)?;
                    self.produce_transaction(&records, None)?;
                    let open = self.open_mut()?;
                    let txn = open.txn.as_mut().expect("exactly-once");
                    txn.staging.remove(staged.epoch)?;
                }
                Ok(())
            }
        }
    }
}
