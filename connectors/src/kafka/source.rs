//! The Kafka source (see the [module docs](super)).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use eddy_runtime::record::NO_TIMESTAMP;
use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

use super::message::{KafkaMessage, KafkaRecord};
use super::offsets::{self, Positions, StartFrom, TopicPartition};
use super::start::{list_partitions, resolve_start};
use super::watermarks::{PartitionWatermarks, WatermarkConfig, WatermarkHandle};
use crate::dead_letter::{DeadLetter, DeadLetters, Origin};

/// How long the source waits for the broker's answer to a metadata or
/// offset request (at open and at its first poll).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

type Deserialize<T> = Arc<dyn Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync>;

/// What every instance of a source shares.
#[derive(Debug, Clone)]
struct Config {
    brokers: String,
    topics: Vec<String>,
    pattern: Option<String>,
    group_id: Option<String>,
    start: StartFrom,
    bounded: bool,
    process: (usize, usize),
    properties: Vec<(String, String)>,
    watermarks: Option<(WatermarkConfig, WatermarkHandle)>,
}

/// A consumed message, decoded, not yet emitted (micro-batch mode: it lies
/// past the current batch's end).
struct Decoded<T> {
    tp: TopicPartition,
    offset: i64,
    outcome: Result<Record<T>, DeadLetter>,
}

/// A source instance's client and read state.
struct Open<T> {
    consumer: BaseConsumer,
    ready: Arc<Notify>,
    name: String,
    instance: usize,
    /// The partitions this instance reads.
    partitions: Vec<TopicPartition>,
    /// Next offset to read per partition (known once assigned).
    positions: Positions,
    assigned: bool,
    /// Bounded mode: the end offset per partition, and the partitions done.
    end: BTreeMap<TopicPartition, i64>,
    done: Vec<TopicPartition>,
    /// Positions of the previous marker, committed to the group at the next
    /// one (monitoring only).
    last_marker: Mutex<Option<Positions>>,
    /// Micro-batch mode: the end offset of the current batch per partition.
    batch_end: Option<BTreeMap<TopicPartition, i64>>,
    /// Micro-batch mode: messages consumed past the batch end, in order;
    /// their partitions are paused until the next batch.
    stash: VecDeque<Decoded<T>>,
    paused: Vec<TopicPartition>,
    /// Per-partition watermarks, when configured, and the last published.
    watermarks: Option<PartitionWatermarks>,
    published: Option<i64>,
}

/// Reads Kafka topics into records of `T` (see the [module docs](super)).
pub struct KafkaSource<T> {
    config: Config,
    deserialize: Deserialize<T>,
    dead_letters: DeadLetters,
    restored: Option<Positions>,
    open: Option<Open<T>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            deserialize: self.deserialize.clone(),
            dead_letters: self.dead_letters.clone(),
            restored: None,
            open: None,
        }
    }
}

pub(crate) fn kafka_err(what: &str, e: KafkaError) -> OperatorError {
    OperatorError::new(format!("kafka source: {what}: {e}"))
}

impl KafkaSource<KafkaRecord> {
    /// A source emitting every message of `topics` as an owned
    /// [`KafkaRecord`] (never a dead letter).
    pub fn records(brokers: &str, topics: &[&str]) -> Self {
        Self::new(brokers, topics, |m| Ok(m.to_record()))
    }
}

impl<T: 'static> KafkaSource<Result<T, DeadLetter>> {
    /// A source whose dead letters travel in the stream, as typed values:
    /// a message `deserialize` refuses becomes `Err(DeadLetter)` (with its
    /// topic, partition and offset) in place of `Ok(T)`, so the pipeline can
    /// route it to a sink of its own, where it is exactly-once like any
    /// output. Such dead letters are not counted by the source's
    /// [`DeadLetters`] handle: count them where they are consumed.
    pub fn results(
        brokers: &str,
        topics: &[&str],
        deserialize: impl Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self::new(brokers, topics, move |m| {
            Ok(deserialize(m).map_err(|error| {
                let origin = Origin::Kafka {
                    topic: m.topic.to_string(),
                    partition: m.partition,
                    offset: m.offset,
                };
                DeadLetter::new(origin, error, m.value.unwrap_or_default())
            }))
        })
    }
}

impl<T> KafkaSource<T> {
    /// A source reading `topics` from the cluster at `brokers`
    /// (`host:port[,host:port...]`), decoding each message with
    /// `deserialize`; a message it refuses becomes a dead letter.
    ///
    /// Defaults: start from the earliest offsets when no checkpoint exists,
    /// unbounded, one process, consumer group `eddy-<source name>` (used
    /// only to report progress).
    pub fn new(
        brokers: &str,
        topics: &[&str],
        deserialize: impl Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            config: Config {
                brokers: brokers.to_string(),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                pattern: None,
                group_id: None,
                start: StartFrom::Earliest,
                bounded: false,
                process: (0, 1),
                properties: Vec::new(),
                watermarks: None,
            },
            deserialize: Arc::new(deserialize),
            dead_letters: DeadLetters::new(),
            restored: None,
            open: None,
        }
    }

    /// Read every topic whose name matches the glob `pattern` (`*`, `?`)
    /// as well as the listed ones, resolved when the source opens (topics
    /// whose names start with `__`, the broker's own, are left out). Every
    /// instance resolves it at once, so all see the same topics unless one
    /// is created meanwhile; topics created later are read after a restart.
    pub fn topic_pattern(mut self, pattern: &str) -> Self {
        self.config.pattern = Some(pattern.to_string());
        self
    }

    /// Where to start when no checkpoint covers a partition.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.config.start = start;
        self
    }

    /// The consumer group offsets are reported to (and read from, with
    /// [`StartFrom::Committed`]). Default: `eddy-<source name>`.
    pub fn group_id(mut self, group: &str) -> Self {
        self.config.group_id = Some(group.to_string());
        self
    }

    /// Stop at the end offsets found when the source first assigns its
    /// partitions (a batch read of what the topics hold, like Spark's
    /// `endingOffsets = latest`): messages past those offsets are not
    /// emitted (their partition stops being fetched), and once every
    /// partition is done the source finishes, which ends the query once
    /// every source has. A partition also counts as done when
    /// the consumer reports reaching its end (needed for transactional
    /// topics, whose last offset is a commit marker no message occupies);
    /// that report names the partition number only, so with several
    /// topics it ends that number in each of them.
    pub fn bounded(mut self) -> Self {
        self.config.bounded = true;
        self
    }

    /// Scale-out over processes: this process is `index` of `count`
    /// processes reading the same topics, each with its own checkpoints.
    /// Partitions are dealt over the `count * parallelism` instances of all
    /// processes, so they read disjoint sets (every process must run the
    /// source at the same parallelism).
    pub fn process(mut self, index: usize, count: usize) -> Self {
        self.config.process = (index, count.max(1));
        self
    }

    /// Sets a librdkafka property of the consumer (for example
    /// `fetch.wait.max.ms`). The source's own settings (group, isolation,
    /// auto commit) take precedence.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.config
            .properties
            .push((key.to_string(), value.to_string()));
        self
    }

    /// Track per-partition watermarks (see [`PartitionWatermarks`]) and
    /// publish each instance's through `handle` and a gauge, ready for the
    /// runtime's in-band watermarks.
    pub fn watermarks(mut self, config: WatermarkConfig, handle: WatermarkHandle) -> Self {
        self.config.watermarks = Some((config, handle));
        self
    }

    /// Where refused messages go (default: counted and kept in memory).
    pub fn dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// The dead-letter handle (shared by every clone).
    pub fn dead_letter_handle(&self) -> DeadLetters {
        self.dead_letters.clone()
    }

    fn open_mut(&mut self) -> Result<&mut Open<T>, OperatorError> {
        self.open
            .as_mut()
            .ok_or_else(|| OperatorError::new("kafka source: polled before open"))
    }
}

impl<T> Open<T> {
    /// Resolves a concrete start offset for every partition without one
    /// and assigns the partitions (never group rebalancing).
    fn assign(&mut self, config: &Config) -> Result<(), OperatorError> {
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|tp| !self.positions.contains_key(*tp))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let resolved = resolve_start(&self.consumer, config.start, &missing)?;
            self.positions.extend(resolved);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| kafka_err("assignment", e))?;
        }
        if config.bounded {
            for tp in &self.partitions {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
                    .map_err(|e| kafka_err(&format!("end offset of {}/{}", tp.0, tp.1), e))?;
                self.end.insert(tp.clone(), high);
            }
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_err("assignment", e))?;
        if let Some(w) = &mut self.watermarks {
            let now = std::time::Instant::now();
            for tp in &self.partitions {
                w.assign(tp.clone(), now);
            }
        }
        self.assigned = true;
        Ok(())
    }

    /// Whether `offset` of `tp` may be emitted in the current batch
    /// (always, outside micro-batch mode).
    fn within_batch(&self, tp: &TopicPartition, offset: i64) -> bool {
        match &self.batch_end {
            None => true,
            Some(end) => end.get(tp).is_none_or(|e| offset < *e),
        }
    }

    /// Bounded mode: whether `offset` lies at or past the partition's end.
    fn past_bound(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.end
            .iter()
            .any(|((t, p), end)| t == topic && *p == partition && offset >= *end)
    }

    /// Bounded mode: the partition is read to its end; stop fetching it.
    fn stop_partition(&mut self, tp: TopicPartition) -> Result<(), OperatorError> {
        if !self.done.contains(&tp) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            self.consumer
                .pause(&tpl)
                .map_err(|e| kafka_err("pausing a partition", e))?;
            self.paused.retain(|p| *p != tp);
            self.done.push(tp);
        }
        Ok(())
    }

    /// Emits a decoded message: its record, or its dead letter; either way
    /// its partition's position moves past it.
    fn emit(&mut self, item: Decoded<T>, out: &mut Vec<Record<T>>, dead_letters: &DeadLetters) {
        match item.outcome {
            Ok(record) => {
                if let Some(w) = &mut self.watermarks {
                    if record.timestamp != NO_TIMESTAMP {
                        w.observe(&item.tp, record.timestamp, std::time::Instant::now());
                    }
                }
                self.positions.insert(item.tp, item.offset + 1);
                out.push(record)
            }
            Err(letter) => {
                self.positions.insert(item.tp, item.offset + 1);
                dead_letters.push(&self.name, self.instance, letter)
            }
        }
    }

    /// Publishes the instance's watermark when it advanced.
    fn publish_watermark(&mut self, handle: &WatermarkHandle) {
        let Some(w) = &mut self.watermarks else {
            return;
        };
        if let Some(now) = w.current(std::time::Instant::now()) {
            if self.published != Some(now) {
                self.published = Some(now);
                handle.publish(&self.name, self.instance, now);
            }
        }
    }

    /// Holds back a message past the batch end and pauses its partition
    /// until the next batch.
    fn hold(&mut self, item: Decoded<T>) -> Result<(), OperatorError> {
        if !self.paused.contains(&item.tp) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&item.tp.0, item.tp.1);
            self.consumer
                .pause(&tpl)
                .map_err(|e| kafka_err("pausing a partition", e))?;
            self.paused.push(item.tp.clone());
        }
        self.stash.push_back(item);
        Ok(())
    }

    /// Micro-batch mode: the next batch ends at each partition's end offset
    /// now; paused partitions resume. Says whether anything is available.
    fn fix_batch_end(&mut self) -> bool {
        let mut ends = BTreeMap::new();
        for tp in &self.partitions {
            let at = self.positions.get(tp).copied().unwrap_or(0);
            // A failed look-up fixes the end where the partition is: nothing
            // new from it in this batch, the next probe asks again.
            let end = self
                .consumer
                .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
                .map_or(at, |(_, high)| high);
            ends.insert(tp.clone(), end);
        }
        if !self.paused.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in self.paused.drain(..) {
                tpl.add_partition(&t, p);
            }
            // A failed resume shows as a partition that stops delivering;
            // librdkafka logs it.
            let _ = self.consumer.resume(&tpl);
        }
        let available = ends
            .iter()
            .any(|(tp, end)| self.positions.get(tp).is_some_and(|at| at < end));
        self.batch_end = Some(ends);
        available
    }

    fn finished(&self) -> bool {
        self.end.iter().all(|(tp, end)| {
            self.done.contains(tp) || self.positions.get(tp).is_some_and(|p| p >= end)
        })
    }
}

/// Decodes a consumed message into its record or its dead letter.
fn decode<T>(
    m: &KafkaMessage<'_>,
    deserialize: &(dyn Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync),
) -> Decoded<T> {
    let outcome = match deserialize(m) {
        Ok(value) => Ok(Record {
            value,
            timestamp: m.timestamp.unwrap_or(NO_TIMESTAMP),
            created_ns: m
                .timestamp
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(0, |ms| ms.saturating_mul(1_000_000)),
        }),
        Err(error) => {
            let origin = Origin::Kafka {
                topic: m.topic.to_string(),
                partition: m.partition,
                offset: m.offset,
            };
            Err(DeadLetter::new(origin, error, m.value.unwrap_or_default()))
        }
    };
    Decoded {
        tp: (m.topic.to_string(), m.partition),
        offset: m.offset,
        outcome,
    }
}

/// Consumer errors that librdkafka recovers from by itself (it retries);
/// anything else fails the query.
fn transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::Resolve
        )
    )
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        let group = self
            .config
            .group_id
            .clone()
            .unwrap_or_else(|| format!("eddy-{}", ctx.name));
        let mut cc = ClientConfig::new();
        for (k, v) in &self.config.properties {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &self.config.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set(
                "enable.partition.eof",
                if self.config.bounded { "true" } else { "false" },
            );
        let mut consumer: BaseConsumer = cc
            .create()
            .map_err(|e| kafka_err("creating the consumer", e))?;
        let ready = Arc::new(Notify::new());
        let notify = ready.clone();
        consumer.set_nonempty_callback(move || notify.notify_one());
        let mut topics = self.config.topics.clone();
        if let Some(pattern) = &self.config.pattern {
            let md = consumer
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(|e| kafka_err("listing topics", e))?;
            for t in md.topics() {
                let name = t.name();
                if !name.starts_with("__")
                    && super::pattern::matches(pattern, name)
                    && !topics.iter().any(|x| x == name)
                {
                    topics.push(name.to_string());
                }
            }
        }
        if topics.is_empty() {
            return Err(OperatorError::new(format!(
                "kafka source: no topic to read (pattern {:?} matches none)",
                self.config.pattern
            )));
        }
        let all = list_partitions(&consumer, &topics)?;
        let (process, processes) = self.config.process;
        let (index, count) = (
            process * ctx.parallelism + ctx.instance,
            processes * ctx.parallelism,
        );
        let partitions = all
            .into_iter()
            .enumerate()
            .filter(|(n, _)| offsets::owns(*n, index, count))
            .map(|(_, tp)| tp)
            .collect();
        self.open = Some(Open {
            consumer,
            ready,
            name: ctx.name.clone(),
            instance: ctx.instance,
            partitions,
            positions: Positions::new(),
            assigned: false,
            end: BTreeMap::new(),
            done: Vec::new(),
            last_marker: Mutex::new(None),
            batch_end: None,
            stash: VecDeque::new(),
            paused: Vec::new(),
            watermarks: self
                .config
                .watermarks
                .as_ref()
                .map(|(c, _)| PartitionWatermarks::new(*c)),
            published: None,
        });
        if let Some(restored) = self.restored.take() {
            self.seek_positions(restored)?;
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let deserialize = self.deserialize.clone();
        let dead_letters = self.dead_letters.clone();
        let config = self.config.clone();
        let open = self.open_mut()?;
        if !open.assigned {
            open.assign(&config)?;
        }
        let mut got = 0;
        // Micro-batch mode: what was stashed past the previous end first.
        if !open.stash.is_empty() {
            let mut keep = VecDeque::new();
            for item in std::mem::take(&mut open.stash) {
                if got < max && open.within_batch(&item.tp, item.offset) {
                    open.emit(item, out, &dead_letters);
                    got += 1;
                } else {
                    keep.push_back(item);
                }
            }
            open.stash = keep;
        }
        // Messages consumed but held back count against a cap, so one poll
        // stays bounded.
        let mut held = 0;
        while got < max && held < max {
            let Some(polled) = open.consumer.poll(Duration::ZERO) else {
                break;
            };
            let msg = match polled {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    for tp in open.partitions.iter().filter(|tp| tp.1 == p) {
                        if !open.done.contains(tp) {
                            open.done.push(tp.clone());
                        }
                    }
                    continue;
                }
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(kafka_err("consuming", e)),
            };
            let m = KafkaMessage::from_borrowed(&msg);
            if open.past_bound(m.topic, m.partition, m.offset) {
                // Bounded: past the end, never emitted by this run (its
                // position stays, so a later run reads it).
                open.stop_partition((m.topic.to_string(), m.partition))?;
                continue;
            }
            let item = decode(&m, deserialize.as_ref());
            if open.within_batch(&item.tp, item.offset) {
                open.emit(item, out, &dead_letters);
                got += 1;
            } else {
                open.hold(item)?;
                held += 1;
            }
        }
        if let Some((_, handle)) = &config.watermarks {
            open.publish_watermark(handle);
        }
        if got > 0 {
            Ok(SourcePoll::Ready)
        } else if config.bounded && open.finished() {
            Ok(SourcePoll::Finished)
        } else {
            Ok(SourcePoll::Pending)
        }
    }

    /// With [`KafkaSource::watermarks`], the slowest active partition's
    /// newest timestamp: the runtime's watermark never passes it less the
    /// strategy's bound, so a lagging partition's records are not late.
    fn watermark(&mut self) -> Option<i64> {
        let open = self.open.as_ref()?;
        let w = open.watermarks.as_ref()?;
        if !open.assigned {
            // The partitions are assigned at the first poll: until then
            // none has delivered, so nothing may pass.
            return Some(eddy_runtime::record::NO_TIMESTAMP);
        }
        w.newest_minimum(std::time::Instant::now())
    }

    async fn wait(&mut self) {
        match &self.open {
            Some(open) => open.ready.notified().await,
            None => std::future::pending().await,
        }
    }

    fn offset(&self) -> Vec<u8> {
        let Some(open) = &self.open else {
            return offsets::encode(&Positions::new());
        };
        // Report the previous marker's offsets to the group (monitoring:
        // its checkpoint has most likely completed by now; the source has
        // no completion hook). Asynchronous, failures ignored: the
        // checkpoint, not the group, is where the source restarts from.
        let mut last = open.last_marker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = last.take() {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in &prev {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            }
            if tpl.count() > 0 {
                let _ = open.consumer.commit(&tpl, CommitMode::Async);
            }
        }
        *last = Some(open.positions.clone());
        offsets::encode(&open.positions)
    }

    fn seek(&mut self, offset: &[u8]) -> Result<(), OperatorError> {
        let positions = offsets::decode(offset)?;
        if self.open.is_some() {
            self.seek_positions(positions)
        } else {
            self.restored = Some(positions);
            Ok(())
        }
    }

    fn fix_batch_end(&mut self) -> bool {
        let config = self.config.clone();
        let Ok(open) = self.open_mut() else {
            return false;
        };
        if !open.assigned && open.assign(&config).is_err() {
            // The first poll reports the error.
            return true;
        }
        open.fix_batch_end()
    }

    fn replayable(&self) -> bool {
        true
    }
}

impl<T> KafkaSource<T> {
    /// Takes the checkpointed positions of this instance's partitions (a
    /// checkpoint of another partition split keeps only what applies).
    fn seek_positions(&mut self, positions: Positions) -> Result<(), OperatorError> {
        let open = self.open_mut()?;
        if open.assigned {
            return Err(OperatorError::new(
                "kafka source: seek after the partitions were assigned",
            ));
        }
        open.positions = positions
            .into_iter()
            .filter(|(tp, _)| open.partitions.contains(tp))
            .collect();
        Ok(())
    }
}
