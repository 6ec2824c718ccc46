//! Kafka: a source with engine-assigned partitions and checkpointed offsets,
//! and a sink that is exactly-once through transactions bound to epochs (or
//! at-least-once through an idempotent producer). The client is `rdkafka`
//! (librdkafka built statically from its vendored sources).
//!
//! # The source
//! [`KafkaSource`] reads a list of topics, or every topic matching a glob
//! ([`KafkaSource::topic_pattern`]). Partitions are assigned by the
//! engine, not by consumer-group rebalancing: the sorted partitions of all
//! topics are dealt round-robin over the instances (instance `i` of `p`
//! reads partition `n` of a single topic when `n % p == i`; with
//! [`KafkaSource::process`] the deal spans several processes). Each
//! instance's next offset per partition is its checkpointed offset, so a
//! restart resumes exactly where the restored checkpoint was. Without a
//! checkpoint a partition starts where [`StartFrom`] says (earliest,
//! latest, a timestamp, or the group's committed offsets), resolved to a
//! concrete offset before the first record, so even a checkpoint taken
//! before a partition delivered anything records where it starts.
//!
//! Isolation is `read_committed`: records of open or aborted transactions
//! are never read. Each record's event time ([`Record::timestamp`]) is the
//! Kafka timestamp, and its creation time (for end-to-end latency) the same
//! instant, so latency is measured from produce time. A message the user's
//! deserializer refuses becomes a [`DeadLetter`] with its topic, partition,
//! offset and the error, goes to the source's [`DeadLetters`] and is
//! counted; the query goes on.
//!
//! Offsets are committed back to the consumer group (`eddy-<source>` by
//! default) for monitoring only: the source has no checkpoint-completion
//! hook, so at each marker it commits the offsets of the previous marker.
//! The group lags the checkpoint by one interval; restarts never read it
//! (except [`StartFrom::Committed`] on a start without a checkpoint).
//!
//! Micro-batch mode: [`Source::fix_batch_end`](eddy_runtime::Source::fix_batch_end)
//! fixes each partition's end at its high watermark (one metadata round
//! trip per partition per batch); a message consumed past it is held back
//! and its partition paused until the next batch, so a batch never reads
//! past the end fixed when it was planned.
//!
//! Per-partition watermarks: with [`KafkaSource::watermarks`] each instance
//! tracks its partitions' watermarks ([`PartitionWatermarks`]: minimum over
//! active partitions, idle ones excluded, never backwards) and publishes
//! them through a [`WatermarkHandle`] and a gauge. The runtime cannot take
//! watermarks from sources yet; `docs/kafka.md` describes the hook.
//!
//! # The sink
//! [`KafkaSink::exactly_once`] is a two-phase commit over a write-ahead
//! staging file per epoch:
//! 1. records of epoch `e` are appended to a local staging file;
//! 2. at `Marker(e)` (pre-commit) the file is fsynced and renamed to
//!    `epoch-<e>`, and its size and CRC32 go into the checkpoint;
//! 3. at `Commit(e)` (the manifest of `e` is durable) the instance begins a
//!    transaction, produces the file's records, records `e` as the offset
//!    of its own consumer group `<transactional id>.epochs` inside the same
//!    transaction (`send_offsets_to_transaction`), commits, and deletes the
//!    file.
//!
//! The transactional id is `<prefix>-<sink name>-<instance>`, stable across
//! restarts: a restarted instance's `init_transactions` fences its
//! predecessor and aborts its open transaction. A crash after the manifest
//! of `e` is durable but before `e`'s transaction committed (librdkafka
//! cannot resume a prepared transaction) is recovered at restore: the
//! epoch group's committed offset says which epoch committed last, so a
//! staged epoch at or below the restored one and above it is produced again
//! in a new transaction, and one already committed is only deleted. The
//! same offset is [`Sink::committed_epoch`](eddy_runtime::Sink::committed_epoch).
//! Output becomes visible at commit: latency is the checkpoint interval
//! plus the time to produce the epoch's records and commit.
//!
//! [`KafkaSink::at_least_once`] sends records as they arrive through an
//! idempotent producer and flushes at every marker; a crash replays the
//! records since the last checkpoint, so they appear twice.
//!
//! Blocking: the sink's transactional calls and the source's first
//! assignment (metadata and offset look-ups) block the task's worker
//! thread for a broker round trip or more, like the file sink's fsyncs.
//!
//! [`Record::timestamp`]: eddy_runtime::Record::timestamp
//! [`DeadLetter`]: crate::DeadLetter
//! [`DeadLetters`]: crate::DeadLetters

pub mod admin;
mod message;
pub mod offsets;
mod pattern;
mod sink;
mod source;
mod staging;
mod start;
pub mod watermarks;

pub use message::{KafkaMessage, KafkaRecord, ProducerRecord};
pub use offsets::StartFrom;
pub use sink::{KafkaSink, FAULT_AT_COMMIT_ENV, PRODUCER_TIMEOUT};
pub use source::{KafkaSource, METADATA_TIMEOUT};
pub use watermarks::{PartitionWatermarks, WatermarkConfig, WatermarkHandle};
