//! `eddy loadgen`: an external load generator for latency benchmarks.
//!
//! A separate process that listens on a loopback port and, to every client
//! that connects, writes `created_us,seq,key` lines (the protocol of
//! [`TcpLineSource`](eddy::connectors::TcpLineSource)) at a fixed rate, or
//! as fast as the client reads. Each connection is served by its own thread
//! with its own sequence, starting at 0.
//!
//! # No coordinated omission
//! Line `seq` is *scheduled* at `start + seq / rate`, and `created_us` is
//! that scheduled time, not the moment the line was written. When the
//! generator (or the reader, through TCP flow control) falls behind, the
//! lines written late carry their earlier scheduled time, so the stall
//! shows as latency at the sinks instead of silently thinning the load.
//! Every second the generator reports on stderr how far behind schedule it
//! is.

use std::io::{self, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy::connectors::generator::mix;

/// How the generator runs.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: String,
    /// Lines per second per connection; 0: as fast as the client reads.
    pub rate: u64,
    /// Keys are `0..keys`, spread by a hash of the sequence number.
    pub keys: u64,
    /// Lines per connection; `None`: until the client disconnects.
    pub limit: Option<u64>,
    /// Serve this many connections, then exit; `None`: forever.
    pub connections: Option<u64>,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Offset of line `seq` from the start, in microseconds (0 when unthrottled).
fn scheduled_us(seq: u64, rate: u64) -> u64 {
    if rate == 0 {
        0
    } else {
        (u128::from(seq) * 1_000_000 / u128::from(rate)) as u64
    }
}

/// Listens on `config.addr`, prints `listening on <addr>` on stdout (so a
/// parent process can learn the port), and serves clients until
/// `config.connections` have been served.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(config: &LoadgenConfig) -> io::Result<()> {
    let listener = TcpListener::bind(&config.addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut threads = Vec::new();
    for (id, stream) in listener.incoming().enumerate() {
        let stream = stream?;
        let this = config.clone();
        threads.push(std::thread::spawn(move || {
            if let Err(e) = serve_one(stream, &this, id) {
                eprintln!("loadgen: connection {id}: {e}");
            }
        }));
        if config.connections.is_some_and(|n| id as u64 + 1 >= n) {
            break;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Whether `e` says the client went away: the connection is then done.
fn disconnected(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// Serves one connection until its limit or until the client goes away.
fn serve_one(stream: TcpStream, config: &LoadgenConfig, id: usize) -> io::Result<()> {
    match write_lines(stream, config, id) {
        Err(e) if disconnected(&e) => Ok(()),
        other => other,
    }
}

/// Writes one connection's lines on schedule.
fn write_lines(stream: TcpStream, config: &LoadgenConfig, id: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let start = Instant::now();
    let start_us = unix_us();
    let keys = config.keys.max(1);
    let mut next_report = Duration::from_secs(1);
    let mut line = Vec::with_capacity(64);
    let mut seq = 0u64;
    while config.limit.is_none_or(|l| seq < l) {
        let due = Duration::from_micros(scheduled_us(seq, config.rate));
        let now = start.elapsed();
        if due > now {
            // Caught up: make what is written visible, then wait.
            out.flush()?;
            let wait = due - now;
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait - Duration::from_micros(100));
            }
            // Below the sleep granularity: yield rather than spin, so the
            // engine's threads can use this core (measured in
            // docs/benchmarks.md: spinning doubled the p99.9 on 2 cores).
            while start.elapsed() < due {
                std::thread::yield_now();
            }
        }
        if now >= next_report {
            if config.rate > 0 {
                let behind = now.saturating_sub(due);
                eprintln!(
                    "loadgen: connection {id}: {} s, seq {seq}, behind schedule {:.3} ms",
                    next_report.as_secs(),
                    behind.as_secs_f64() * 1000.0
                );
            } else {
                eprintln!(
                    "loadgen: connection {id}: {} s, seq {seq} (unthrottled)",
                    next_report.as_secs()
                );
            }
            next_report += Duration::from_secs(1);
        }
        line.clear();
        let created = start_us
            + if config.rate == 0 {
                now.as_micros() as u64
            } else {
                due.as_micros() as u64
            };
        writeln!(line, "{created},{seq},{}", mix(seq) % keys)?;
        out.write_all(&line)?;
        seq += 1;
    }
    out.flush()
}

/// `eddy loadgen` running as a child process on a free loopback port;
/// killed when dropped.
pub struct LoadgenProcess {
    child: std::process::Child,
    addr: String,
}

impl LoadgenProcess {
    /// Starts `exe loadgen` (the `eddy` binary) serving `connections`
    /// clients at `rate` lines per second each, and waits until it listens.
    ///
    /// # Errors
    /// The process cannot start, or does not say where it listens.
    pub fn spawn(
        exe: &std::path::Path,
        rate: u64,
        keys: u64,
        connections: u64,
    ) -> io::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(exe)
            .args([
                "loadgen",
                "--addr",
                "127.0.0.1:0",
                "--rate",
                &rate.to_string(),
            ])
            .args([
                "--keys",
                &keys.to_string(),
                "--connections",
                &connections.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut first = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        io::BufReader::new(stdout).read_line(&mut first)?;
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            return Err(io::Error::other(format!("eddy loadgen said {first:?}")));
        };
        let addr = addr.to_string();
        Ok(Self { child, addr })
    }

    /// Where it listens (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for LoadgenProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_exact_per_rate() {
        assert_eq!(scheduled_us(0, 1000), 0);
        assert_eq!(scheduled_us(1, 1000), 1000);
        assert_eq!(scheduled_us(3, 3), 1_000_000);
        assert_eq!(scheduled_us(100_000, 100_000), 1_000_000);
        assert_eq!(scheduled_us(7, 0), 0);
    }
}
