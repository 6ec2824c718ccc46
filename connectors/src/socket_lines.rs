//! A general socket text source: every line a TCP server sends becomes a
//! `String` record, as Spark's `socketTextStream` (the benchmark-schema
//! source is [`TcpLineSource`](crate::TcpLineSource)).
//!
//! # Protocol
//! - The source connects as a client to `host:port` (or `tcp://host:port`),
//!   lazily, through tokio, on its task's first wait: no worker thread
//!   blocks on connect or read. With parallelism `p` each instance opens its
//!   own connection.
//! - Lines end with `\n`; a `\r` before it is dropped. At end of stream a
//!   last line without a newline still counts, then the source finishes.
//! - A line that is not UTF-8 is decoded lossily (invalid sequences
//!   replaced); a line longer than [`SocketTextSource::max_line_bytes`] is
//!   cut there and the rest of it dropped, and such lines are counted in
//!   [`SocketTextSource::truncated_count`]. Neither fails the query.
//! - A refused, timed-out or broken connection fails the query naming the
//!   address. The source cannot replay (a socket has no offsets), so a
//!   checkpointed query refuses it.
//!
//! # Buffering
//! The source holds at most one partial line plus one read of
//! [`READ_CHUNK`] bytes; when it stops reading, TCP flow control holds the
//! sender back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

/// Bytes requested from the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Default longest line, in bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TcpStream, OperatorError>> + Send>>;

enum Conn {
    Idle,
    Connecting(ConnectFuture),
    Connected(TcpStream),
    Closed,
    Failed(OperatorError),
}

/// Reads lines of text from a TCP server (see the module docs).
pub struct SocketTextSource {
    addr: String,
    connect_timeout: Duration,
    max_line: usize,
    truncated: Arc<AtomicU64>,
    conn: Conn,
    buf: Vec<u8>,
    /// The current line was cut at `max_line`: drop bytes up to its end.
    skipping: bool,
}

impl Clone for SocketTextSource {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            connect_timeout: self.connect_timeout,
            max_line: self.max_line,
            truncated: self.truncated.clone(),
            conn: Conn::Idle,
            buf: Vec::new(),
            skipping: false,
        }
    }
}

impl std::fmt::Debug for SocketTextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTextSource")
            .field("addr", &self.addr)
            .field("truncated", &self.truncated_count())
            .finish_non_exhaustive()
    }
}

impl SocketTextSource {
    /// A source reading lines from `addr` (`host:port` or `tcp://host:port`).
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.strip_prefix("tcp://").unwrap_or(addr).to_string(),
            connect_timeout: Duration::from_secs(10),
            max_line: DEFAULT_MAX_LINE_BYTES,
            truncated: Arc::new(AtomicU64::new(0)),
            conn: Conn::Idle,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Bounds connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest line kept whole; longer ones are cut and counted.
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line = max.max(1);
        self
    }

    /// Lines cut at the length limit so far (by every clone).
    pub fn truncated_count(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    fn connect(&self) -> ConnectFuture {
        let addr = self.addr.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(OperatorError::new(format!(
                    "socket text source: cannot connect to {addr}: {e}"
                ))),
                Err(_) => Err(OperatorError::new(format!(
                    "socket text source: cannot connect to {addr}: no answer within {timeout:?}"
                ))),
            }
        })
    }

    fn push_line(&mut self, line: &[u8], out: &mut Vec<Record<String>>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.push(Record::new(String::from_utf8_lossy(line).into_owned()));
    }

    /// Moves complete lines of the buffer into `out`, at most `max`.
    fn drain(&mut self, out: &mut Vec<Record<String>>, max: usize, at_end: bool) -> usize {
        let mut n = 0;
        let mut start = 0;
        while n < max {
            let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let end = start + pos;
            if self.skipping {
                self.skipping = false;
            } else {
                let mut line = &self.buf[start..end];
                if line.len() > self.max_line {
                    line = &line[..self.max_line];
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
                let line = line.to_vec();
                self.push_line(&line, out);
                n += 1;
            }
            start = end + 1;
        }
        self.buf.drain(..start);
        if n < max && !self.skipping && self.buf.len() > self.max_line {
            let line: Vec<u8> = self.buf[..self.max_line].to_vec();
            self.push_line(&line, out);
            self.truncated.fetch_add(1, Ordering::Relaxed);
            self.buf.clear();
            self.skipping = true;
            n += 1;
        } else if self.skipping {
            self.buf.clear();
        }
        if at_end && n < max && !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.push_line(&line, out);
            n += 1;
        }
        n
    }
}

impl Source<String> for SocketTextSource {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        let valid = self
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if valid {
            Ok(())
        } else {
            Err(OperatorError::new(format!(
                "socket text source: invalid address `{}`: expected host:port",
                self.addr
            )))
        }
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<String>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        match &self.conn {
            Conn::Idle | Conn::Connecting(_) => return Ok(SourcePoll::Pending),
            Conn::Failed(e) => return Err(e.clone()),
            Conn::Connected(_) | Conn::Closed => {}
        }
        let mut emitted = 0;
        loop {
            let closed = matches!(self.conn, Conn::Closed);
            emitted += self.drain(out, max - emitted, closed);
            if emitted >= max {
                return Ok(SourcePoll::Ready);
            }
            let Conn::Connected(stream) = &self.conn else {
                return Ok(if emitted > 0 {
                    SourcePoll::Ready
                } else {
                    SourcePoll::Finished
                });
            };
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            match stream.try_read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.conn = Conn::Closed;
                }
                Ok(read) => self.buf.truncate(len + read),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf.truncate(len);
                    return Ok(if emitted > 0 {
                        SourcePoll::Ready
                    } else {
                        SourcePoll::Pending
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    let err = OperatorError::new(format!(
                        "socket text source: reading from {}: {e}",
                        self.addr
                    ));
                    self.conn = Conn::Failed(err.clone());
                    return Err(err);
                }
            }
        }
    }

    /// Connects on the first call, then waits until the socket is readable.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection attempt in progress is kept and resumed by
    /// the next call; waiting for readability consumes nothing.
    async fn wait(&mut self) {
        loop {
            match &mut self.conn {
                Conn::Idle => self.conn = Conn::Connecting(self.connect()),
                Conn::Connecting(connecting) => {
                    self.conn = match connecting.await {
                        Ok(stream) => Conn::Connected(stream),
                        Err(e) => Conn::Failed(e),
                    };
                    return;
                }
                Conn::Connected(stream) => {
                    let _ = stream.readable().await;
                    return;
                }
                Conn::Closed | Conn::Failed(_) => return,
            }
        }
    }
}
