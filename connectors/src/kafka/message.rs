//! What user code sees of a Kafka message, and what a sink writes.

use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::{Deserialize, Serialize};

/// A Kafka message as the source's deserializer sees it: borrowed from the
/// client's buffers, so decoding copies only what it keeps.
#[derive(Clone, Copy)]
pub struct KafkaMessage<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The message's offset in its partition.
    pub offset: i64,
    /// The message's timestamp (create or log-append time) in milliseconds
    /// since the Unix epoch, if it has one.
    pub timestamp: Option<i64>,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value (payload), if any (`None`: a tombstone).
    pub value: Option<&'a [u8]>,
    headers: Option<&'a rdkafka::message::BorrowedHeaders>,
}

impl std::fmt::Debug for KafkaMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaMessage")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("headers", &self.headers())
            .finish()
    }
}

impl<'a> KafkaMessage<'a> {
    pub(crate) fn from_borrowed(m: &'a BorrowedMessage<'a>) -> Self {
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key(),
            value: m.payload(),
            headers: m.headers(),
        }
    }

    /// The headers, in order (a header without a value has `None`).
    pub fn headers(&self) -> Vec<(&'a str, Option<&'a [u8]>)> {
        self.headers
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default()
    }

    /// The value as UTF-8 text.
    ///
    /// # Errors
    /// The message has no value, or it is not UTF-8.
    pub fn value_str(&self) -> Result<&'a str, String> {
        let v = self
            .value
            .ok_or_else(|| "the message has no value".to_string())?;
        std::str::from_utf8(v).map_err(|e| format!("value is not UTF-8: {e}"))
    }

    /// An owned copy of everything in the message.
    pub fn to_record(&self) -> KafkaRecord {
        KafkaRecord {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

/// An owned Kafka message: what [`KafkaSource::records`](super::KafkaSource::records)
/// emits, and what [`read_topic`](super::admin::read_topic) returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The message's offset in its partition.
    pub offset: i64,
    /// Timestamp in milliseconds since the Unix epoch, if any.
    pub timestamp: Option<i64>,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value, if any.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaRecord {
    /// The value as (lossy) UTF-8 text; empty without a value.
    pub fn value_lossy(&self) -> String {
        self.value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// The key as (lossy) UTF-8 text; empty without a key.
    pub fn key_lossy(&self) -> String {
        self.key
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

/// What a Kafka sink writes for one record: an optional key (which picks the
/// partition: equal keys land in one partition, in order) and a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerRecord {
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
}

impl ProducerRecord {
    /// A record with a key.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into()),
            value: value.into(),
        }
    }

    /// A record without a key (the producer spreads them over partitions).
    pub fn unkeyed(value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: None,
            value: value.into(),
        }
    }
}
