//! A source reading newline-separated events from a TCP server.
//!
//! [`TcpLineSource`] connects as a client to `host:port` (or
//! `tcp://host:port`) and reads lines `created_us,seq,key`: the creation time
//! in microseconds since the Unix epoch, a sequence number and a key, all
//! unsigned decimal integers. Each line becomes a [`TcpEvent`] whose record is
//! stamped with `created_ns = created_us * 1000`, so the latency the sinks
//! measure starts when the sender created the line and includes ingestion.
//!
//! # Protocol
//! - Lines end with `\n`; a `\r` before it is dropped (CRLF). Blank lines are
//!   skipped. At end of stream a last line without a newline still counts.
//! - A line that does not parse (or is longer than
//!   [`max_line_bytes`](TcpLineSource::with_max_line_bytes)) never fails the
//!   query and is never dropped silently: it is counted in
//!   [`malformed_count`](TcpLineSource::malformed_count) and in the metrics
//!   counter `eddy_tcp_malformed_lines_total` (labelled by operator and
//!   instance), and the last [`MALFORMED_KEPT`] of them are kept for
//!   [`recent_malformed`](TcpLineSource::recent_malformed).
//! - When the server closes the connection the source emits what is left and
//!   finishes, which ends the stream downstream.
//! - A refused, timed-out or broken connection fails the query with an error
//!   naming the address. The source does not reconnect and cannot replay
//!   (it is not [`replayable`](Source::replayable), so a checkpointed query
//!   refuses it).
//!
//! # Connections and parallelism
//! The connection is opened lazily by the source task, through tokio, on its
//! first wait: no worker thread blocks on connect or read. Instances are
//! cloned from one value before they open, and a clone never shares a
//! socket: with parallelism `p` each instance opens its own connection, so
//! the server sees `p` clients and decides which lines each gets. Order is
//! preserved per connection. Clones do share the malformed-line log, so keep
//! one clone to read it while and after the query runs.
//!
//! # Buffering
//! The source reads whatever the socket holds, up to [`READ_CHUNK`] bytes per
//! read, and parses complete lines from it. Its buffer holds at most one
//! partial line (bounded by `max_line_bytes`) plus one read; backpressure
//! reaches the sender through TCP flow control when the source stops reading.
//!
//! # Busy polling
//! By default the source waits for readiness whenever the socket runs dry,
//! and its worker thread may park until the next line wakes it.
//! [`with_busy_poll`](TcpLineSource::with_busy_poll) keeps it polling for
//! a window after the last data instead, so that, on a runtime with one
//! worker, a steady sender's lines are read without a thread wake-up each,
//! for a core kept busy while they come.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use eddy_runtime::source::DEFAULT_MAX_RECORDS_PER_BATCH;
use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

/// Bytes requested from the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Malformed lines kept for [`TcpLineSource::recent_malformed`].
pub const MALFORMED_KEPT: usize = 16;

/// Longest line accepted by default, in bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Default bound on connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads per poll before the source yields to other tasks: a flood of
/// malformed lines cannot monopolise the thread.
const MAX_READS_PER_POLL: usize = 16;

/// Bytes of a malformed line kept for inspection.
const MALFORMED_PREFIX_BYTES: usize = 256;

/// One line read from the socket: `created_us,seq,key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpEvent {
    /// Creation time at the sender, microseconds since the Unix epoch.
    pub created_us: u64,
    /// Sequence number.
    pub seq: u64,
    /// Key.
    pub key: u64,
}

/// The line format: `created_us,seq,key` (without the newline).
impl fmt::Display for TcpEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.created_us, self.seq, self.key)
    }
}

/// Why a line is not a [`TcpEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLineError {
    /// The line is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The line does not have exactly three comma-separated fields.
    #[error("expected 3 comma-separated fields (created_us,seq,key), found {0}")]
    FieldCount(usize),
    /// A field is not an unsigned decimal integer.
    #[error("field `{field}` is not an unsigned integer: `{value}`")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// `created_us * 1000` does not fit in 64 bits of nanoseconds.
    #[error("created_us {0} is out of range")]
    TimestampOutOfRange(u64),
    /// The line exceeds the source's limit.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
}

impl FromStr for TcpEvent {
    type Err = ParseLineError;

    /// Parses `created_us,seq,key`; spaces around fields are allowed.
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut fields = line.split(',').map(str::trim);
        let (Some(created_us), Some(seq), Some(key), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseLineError::FieldCount(line.split(',').count()));
        };
        let num = |field: &'static str, value: &str| {
            value.parse::<u64>().map_err(|_| ParseLineError::BadField {
                field,
                value: value.to_string(),
            })
        };
        let ev = TcpEvent {
            created_us: num("created_us", created_us)?,
            seq: num("seq", seq)?,
            key: num("key", key)?,
        };
        ev.created_ns()
            .ok_or(ParseLineError::TimestampOutOfRange(ev.created_us))?;
        Ok(ev)
    }
}

impl TcpEvent {
    /// Creation time in nanoseconds (`None` if it overflows).
    pub fn created_ns(&self) -> Option<u64> {
        self.created_us.checked_mul(1000)
    }
}

/// A line that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine {
    /// Its first bytes (at most 256, lossily decoded), without the newline.
    pub line: String,
    /// Why it was refused.
    pub error: ParseLineError,
}

fn malformed(line: &[u8], error: ParseLineError) -> MalformedLine {
    let end = line.len().min(MALFORMED_PREFIX_BYTES);
    MalformedLine {
        line: String::from_utf8_lossy(&line[..end]).into_owned(),
        error,
    }
}

fn parse_line(line: &[u8]) -> Result<TcpEvent, MalformedLine> {
    let text = std::str::from_utf8(line).map_err(|_| malformed(line, ParseLineError::NotUtf8))?;
    text.parse().map_err(|e| malformed(line, e))
}

/// Splits a byte stream into lines and parses them: the I/O-free core of the
/// source. Holds at most one partial line (up to `max_line` bytes) plus the
/// bytes of the last read.
#[derive(Debug)]
struct LineDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// Bytes after `start` known to hold no newline.
    scanned: usize,
    /// Skipping the rest of an overlong line (already reported).
    discarding: bool,
    /// The stream ended: a trailing partial line is a line.
    eof: bool,
    max_line: usize,
}

impl LineDecoder {
    fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            eof: false,
            max_line: max_line.max(1),
        }
    }

    /// The buffer to read into (append only): consumed bytes are dropped and
    /// room for one [`READ_CHUNK`] is reserved.
    fn read_buf(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Marks the end of the stream.
    fn finish(&mut self) {
        self.eof = true;
    }

    fn skip_rest(&mut self) {
        self.start = self.buf.len();
        self.scanned = 0;
    }

    /// The next complete line, parsed; `None` until more bytes arrive.
    fn next_line(&mut self) -> Option<Result<TcpEvent, MalformedLine>> {
        loop {
            let from = self.start + self.scanned;
            let line_end = match self.buf[from..].iter().position(|&b| b == b'\n') {
                Some(i) => from + i,
                None if self.eof && self.start < self.buf.len() && !self.discarding => {
                    self.buf.len()
                }
                None => {
                    self.scanned = self.buf.len() - self.start;
                    if self.discarding {
                        self.skip_rest();
                    } else if self.scanned > self.max_line {
                        let line = &self.buf[self.start..];
                        let bad = malformed(line, ParseLineError::TooLong(self.max_line));
                        self.discarding = true;
                        self.skip_rest();
                        return Some(Err(bad));
                    }
                    return None;
                }
            };
            let line_start = self.start;
            self.start = (line_end + 1).min(self.buf.len());
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let mut line = &self.buf[line_start..line_end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.len() > self.max_line {
                return Some(Err(malformed(line, ParseLineError::TooLong(self.max_line))));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(parse_line(line));
        }
    }
}

/// Malformed lines seen by all clones of a source.
#[derive(Debug, Default)]
struct MalformedLog {
    count: AtomicU64,
    recent: Mutex<VecDeque<MalformedLine>>,
}

impl MalformedLog {
    fn record(&self, bad: MalformedLine) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().expect("malformed log lock");
        if recent.len() == MALFORMED_KEPT {
            recent.pop_front();
        }
        recent.push_back(bad);
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TcpStream, OperatorError>> + Send>>;

/// The connection's lifecycle.
enum Conn {
    /// Not yet connecting (before the first wait).
    Idle,
    /// Connecting; kept across cancelled waits.
    Connecting(ConnectFuture),
    /// Reading.
    Connected(TcpStream),
    /// The server closed the stream.
    Closed,
    /// Connecting or reading failed.
    Failed(OperatorError),
}

impl Conn {
    fn state(&self) -> &'static str {
        match self {
            Conn::Idle => "idle",
            Conn::Connecting(_) => "connecting",
            Conn::Connected(_) => "connected",
            Conn::Closed => "closed",
            Conn::Failed(_) => "failed",
        }
    }
}

/// Reads `created_us,seq,key` lines from a TCP server. See the
/// [module docs](self).
///
/// ```no_run
/// use eddy_connectors::{CollectSink, TcpEvent, TcpLineSource};
/// use eddy_runtime::Pipeline;
///
/// let source = TcpLineSource::new("tcp://127.0.0.1:9000");
/// let pipeline = Pipeline::new();
/// pipeline
///     .source("tcp", source.clone())
///     .sink("out", CollectSink::<TcpEvent>::new());
/// // After the query: source.malformed_count(), source.recent_malformed().
/// ```
pub struct TcpLineSource {
    addr: String,
    connect_timeout: Duration,
    max_line: usize,
    max_records_per_batch: u64,
    malformed: Arc<MalformedLog>,
    malformed_counter: metrics::Counter,
    conn: Conn,
    decoder: LineDecoder,
    /// See [`with_busy_poll`](Self::with_busy_poll).
    busy_poll: Duration,
    /// When a read last returned data (kept only with a busy-poll window).
    last_data: Option<Instant>,
}

impl TcpLineSource {
    /// A source reading from `addr`: `host:port`, `tcp://host:port` or a
    /// [`SocketAddr`](std::net::SocketAddr). The address is checked when the
    /// source opens and resolved when it connects.
    pub fn new(addr: impl fmt::Display) -> Self {
        let addr = addr.to_string();
        let addr = addr.trim();
        let addr = addr.strip_prefix("tcp://").unwrap_or(addr);
        let addr = addr.strip_suffix('/').unwrap_or(addr);
        Self {
            addr: addr.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_line: DEFAULT_MAX_LINE_BYTES,
            max_records_per_batch: DEFAULT_MAX_RECORDS_PER_BATCH,
            malformed: Arc::default(),
            malformed_counter: metrics::Counter::noop(),
            conn: Conn::Idle,
            decoder: LineDecoder::new(DEFAULT_MAX_LINE_BYTES),
            busy_poll: Duration::ZERO,
            last_data: None,
        }
    }

    /// Bounds connecting (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longer lines are reported malformed and skipped (default
    /// [`DEFAULT_MAX_LINE_BYTES`]); this bounds the source's buffer.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line = max.max(1);
        self.decoder = LineDecoder::new(self.max_line);
        self
    }

    /// Micro-batch mode: the most lines one batch takes from this instance
    /// (default [`DEFAULT_MAX_RECORDS_PER_BATCH`]; see
    /// [`Source::max_records_per_batch`]). Without a cap, a sender faster
    /// than the pipeline would keep a batch open for as long as it sends.
    pub fn with_max_records_per_batch(mut self, max: u64) -> Self {
        self.max_records_per_batch = max.max(1);
        self
    }

    /// Keeps polling the socket for `window` after data last arrived before
    /// waiting for readiness (default: zero, wait at once). Each poll yields
    /// to the task's worker, which then checks the sockets without sleeping
    /// if it can take tokio's I/O driver: always on a runtime with one
    /// worker, where the worker never parks while lines keep coming within
    /// `window` of each other, and a line is read without a thread wake-up
    /// (which on a busy or preemption-less kernel can wait a scheduler
    /// tick). With several workers another, parked one may hold the driver,
    /// and the line still waits for that worker's wake-up. The cost is the
    /// worker's core while spinning; once the sender is quiet for `window`
    /// the source waits as before. Continuous mode only: in micro-batch mode
    /// the task waits for its next command and this changes nothing.
    /// Measured on 2 cores with one worker (`docs/benchmarks-latency-tail.md`):
    /// p50 and p99 halved at 10 k and 100 k lines/s, p99 and p99.9 lower at
    /// 500 k/s; on 16 cores with 15 workers it did not help at 100 k/s.
    pub fn with_busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window;
        self
    }

    /// Whether [`wait`](Source::wait) spins instead of waiting.
    fn busy_polling(&self) -> bool {
        self.last_data
            .is_some_and(|at| at.elapsed() < self.busy_poll)
    }

    /// The address connected to (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Malformed lines seen so far by every clone of this source.
    pub fn malformed_count(&self) -> u64 {
        self.malformed.count.load(Ordering::Relaxed)
    }

    /// The last [`MALFORMED_KEPT`] malformed lines, oldest first.
    pub fn recent_malformed(&self) -> Vec<MalformedLine> {
        let recent = self.malformed.recent.lock().expect("malformed log lock");
        recent.iter().cloned().collect()
    }

    fn check_addr(&self) -> Result<(), OperatorError> {
        let valid = self
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if valid {
            Ok(())
        } else {
            Err(OperatorError::new(format!(
                "tcp source: invalid address `{}`: expected host:port or tcp://host:port",
                self.addr
            )))
        }
    }

    fn connect(&self) -> ConnectFuture {
        let addr = self.addr.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(OperatorError::new(format!(
                    "tcp source: cannot connect to {addr}: {e} (is a server listening there?)"
                ))),
                Err(_) => Err(OperatorError::new(format!(
                    "tcp source: cannot connect to {addr}: no answer within {timeout:?}"
                ))),
            }
        })
    }

    /// Moves up to `max` parsed lines into `out`, logging malformed ones.
    fn drain(&mut self, out: &mut Vec<Record<TcpEvent>>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.decoder.next_line() {
                None => break,
                Some(Ok(ev)) => {
                    let created_ns = ev.created_ns().unwrap_or(0);
                    out.push(Record::created_at(ev, created_ns));
                    n += 1;
                }
                Some(Err(bad)) => {
                    self.malformed_counter.increment(1);
                    self.malformed.record(bad);
                }
            }
        }
        n
    }
}

/// A fresh, unconnected source sharing the malformed-line log.
impl Clone for TcpLineSource {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            connect_timeout: self.connect_timeout,
            max_line: self.max_line,
            max_records_per_batch: self.max_records_per_batch,
            malformed: self.malformed.clone(),
            malformed_counter: self.malformed_counter.clone(),
            conn: Conn::Idle,
            decoder: LineDecoder::new(self.max_line),
            busy_poll: self.busy_poll,
            last_data: None,
        }
    }
}

impl fmt::Debug for TcpLineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpLineSource")
            .field("addr", &self.addr)
            .field("state", &self.conn.state())
            .field("malformed", &self.malformed_count())
            .finish_non_exhaustive()
    }
}

impl Source<TcpEvent> for TcpLineSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.check_addr()?;
        self.malformed_counter = metrics::counter!(
            "eddy_tcp_malformed_lines_total",
            "operator" => ctx.name.clone(),
            "instance" => ctx.instance.to_string()
        );
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<TcpEvent>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        match &self.conn {
            Conn::Idle | Conn::Connecting(_) => return Ok(SourcePoll::Pending),
            Conn::Failed(e) => return Err(e.clone()),
            Conn::Connected(_) | Conn::Closed => {}
        }
        let mut emitted = 0;
        let mut reads = 0;
        loop {
            emitted += self.drain(out, max - emitted);
            if emitted >= max {
                return Ok(SourcePoll::Ready);
            }
            let Conn::Connected(stream) = &self.conn else {
                // Closed, and every buffered line is out.
                return Ok(if emitted > 0 {
                    SourcePoll::Ready
                } else {
                    SourcePoll::Finished
                });
            };
            if reads == MAX_READS_PER_POLL {
                return Ok(SourcePoll::Ready);
            }
            match stream.try_read_buf(self.decoder.read_buf()) {
                Ok(0) => {
                    self.decoder.finish();
                    self.conn = Conn::Closed;
                }
                Ok(_) => {
                    reads += 1;
                    if !self.busy_poll.is_zero() {
                        self.last_data = Some(Instant::now());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(if emitted > 0 {
                        SourcePoll::Ready
                    } else {
                        SourcePoll::Pending
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let err =
                        OperatorError::new(format!("tcp source: reading from {}: {e}", self.addr));
                    self.conn = Conn::Failed(err.clone());
                    return Err(err);
                }
            }
        }
    }

    fn max_records_per_batch(&self) -> u64 {
        self.max_records_per_batch
    }

    /// Connects on the first call, then waits until the socket is readable
    /// (or, busy-polling, only yields: see
    /// [`with_busy_poll`](TcpLineSource::with_busy_poll)).
    ///
    /// # Cancel safety
    /// Cancel safe: a connection attempt in progress is kept and resumed by
    /// the next call; waiting for readability consumes nothing.
    async fn wait(&mut self) {
        loop {
            let spin = self.busy_polling();
            match &mut self.conn {
                Conn::Idle => self.conn = Conn::Connecting(self.connect()),
                Conn::Connecting(connecting) => {
                    self.conn = match connecting.await {
                        Ok(stream) => Conn::Connected(stream),
                        Err(e) => Conn::Failed(e),
                    };
                    return;
                }
                Conn::Connected(_) if spin => {
                    // The worker polls its sockets (if it can take the I/O
                    // driver) before running this task again: the next
                    // read sees what arrived.
                    tokio::task::yield_now().await;
                    return;
                }
                Conn::Connected(stream) => {
                    // An error here resurfaces from the next read.
                    let _ = stream.readable().await;
                    return;
                }
                Conn::Closed | Conn::Failed(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
