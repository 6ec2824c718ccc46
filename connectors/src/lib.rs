//! # eddy-connectors
//!
//! Sources and sinks of Eddy:
//!
//! - [`VecSource`]: replays an in-memory collection (replayable by index).
//! - [`GeneratorSource`]: emits [`GenEvent`]s at a fixed rate over a key space,
//!   each a pure function of its sequence number (so it can be replayed from
//!   an offset) and stamped with its creation time for latency measurement.
//! - [`TcpLineSource`]: reads `created_us,seq,key` lines ([`TcpEvent`]s) from
//!   a TCP server, stamped with the sender's creation time.
//! - [`SocketTextSource`]: every line a TCP server sends, as a `String`
//!   (Spark's `socketTextStream`).
//! - [`TableSink`]: keeps the latest value per key in memory (update mode),
//!   readable while the query runs: the memory sink of a long-running query.
//! - [`CollectSink`]: keeps everything it receives in memory, readable while
//!   and after the query runs (tests and bounded inputs: it grows with its
//!   input).
//! - [`FileSink`]: lines into files, exactly-once (two-phase commit over
//!   atomic renames) or at-least-once.
//! - [`ConsoleSink`]: prints records.
//! - [`DiscardSink`]: drops records (benchmarks: the runtime still counts them
//!   and measures their latency).
//! - [`kafka`]: [`KafkaSource`] (engine-assigned partitions, checkpointed
//!   offsets, read-committed, dead letters) and [`KafkaSink`] (exactly-once
//!   through transactions bound to epochs, or at-least-once).
//! - [`DirSource`]: rows (CSV or JSON lines, typed via serde) from the files
//!   of a directory, new files picked up as they appear, replayable by file
//!   name and byte offset.
//! - [`dead_letter`]: where sources put records they cannot decode
//!   ([`DeadLetters`]), counted and never failing the query.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod collect;
pub mod console;
pub mod dead_letter;
pub mod dir_source;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod socket_lines;
pub mod table;
pub mod tcp;
pub mod vec;

pub use collect::{CollectSink, DiscardSink};
pub use console::ConsoleSink;
pub use dead_letter::{DeadLetter, DeadLetters, Origin};
pub use dir_source::DirSource;
pub use file::{Delivery, FileSink};
pub use generator::{EventTimeConfig, GenEvent, GeneratorConfig, GeneratorSource};
pub use kafka::{KafkaMessage, KafkaRecord, KafkaSink, KafkaSource, ProducerRecord, StartFrom};
pub use socket_lines::SocketTextSource;
pub use table::TableSink;
pub use tcp::{MalformedLine, ParseLineError, TcpEvent, TcpLineSource};
pub use vec::VecSource;

/// Decodes an 8-byte little-endian offset.
pub(crate) fn decode_offset(offset: &[u8]) -> Result<u64, eddy_runtime::OperatorError> {
    let bytes: [u8; 8] = offset.try_into().map_err(|_| {
        eddy_runtime::OperatorError::new(format!("offset must be 8 bytes, got {}", offset.len()))
    })?;
    Ok(u64::from_le_bytes(bytes))
}
