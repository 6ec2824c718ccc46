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
//! is and how late the second's lines left ([`SendLateness`]), so a tail
//! can be split between the sender and the engine.

use std::io::{self, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy::connectors::generator::mix;

use crate::send_lateness::SendLateness;

/// How the generator runs (the arguments of `eddy loadgen`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenConfig {
    /// Address to listen on (port 0: a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub addr: String,
    /// Lines per second per connection (0: as fast as the client reads).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Distinct keys (`0..keys`, spread by a hash of the sequence number).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Lines per connection (default: until the client disconnects).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Exit after serving this many connections (default: never).
    #[arg(long)]
    pub connections: Option<u64>,
    /// How to wait between lines: `hybrid` (sleep through long gaps, yield
    /// the rest; every line on time), `sleep` (write what is due at each
    /// wake-up) or `yield` (on time, holding a core).
    #[arg(long, default_value = "hybrid")]
    pub pacing: Pacing,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

/// How the generator waits for the next line's scheduled time. Whatever
/// the pacing, a wake-up writes every line due by then in one write and
/// flushes it, each line stamped with its own scheduled time, so the
/// generator's lateness counts against the engine, never for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Sleep through the part of a gap that is longer than the sleep's own
    /// lateness (measured as it runs), then yield the thread until the line
    /// is due. Lines leave on time, like
    /// [`Pacing::Yield`], but between lines far apart (10 k lines/s: 100 us)
    /// the generator sleeps instead of holding a core the engine needs
    /// (docs/benchmarks.md, issue 13: on 2 cores, a yielding generator made
    /// the engine's woken threads wait up to a scheduler tick for a CPU).
    #[default]
    Hybrid,
    /// Sleep until the next line is due. A wake-up comes late by the
    /// timer's granularity (about 50 us here), and the lines that became
    /// due meanwhile go out together.
    Sleep,
    /// Yield the thread until the next line is due: lines leave on time,
    /// but the generator is always runnable and
    /// takes a core's share from the engine.
    Yield,
}

impl Pacing {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pacing::Hybrid => "hybrid",
            Pacing::Sleep => "sleep",
            Pacing::Yield => "yield",
        }
    }
}

impl std::str::FromStr for Pacing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Pacing::Hybrid, Pacing::Sleep, Pacing::Yield]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown pacing `{s}` (hybrid, sleep, yield)"))
    }
}

/// How late a sleep wakes up, learnt from the sleeps taken: a sleep is cut
/// short by this much, and the rest of the wait is yielded.
#[derive(Debug)]
struct SleepLateness {
    /// Current estimate.
    margin: Duration,
}

impl SleepLateness {
    const MIN: Duration = Duration::from_micros(20);
    const MAX: Duration = Duration::from_millis(2);

    fn new() -> Self {
        Self {
            margin: Duration::from_micros(100),
        }
    }

    /// Learns from a sleep asked for `asked` that took `took`: later
    /// wake-ups raise the margin quickly, earlier ones lower it slowly; a
    /// single outlier (a preempted wake-up) moves it by an eighth.
    fn observe(&mut self, asked: Duration, took: Duration) {
        let late = took.saturating_sub(asked);
        self.margin = if late > self.margin {
            self.margin + (late - self.margin) / 8
        } else {
            (self.margin * 63 + late) / 64
        }
        .clamp(Self::MIN, Self::MAX);
    }

    /// A wait too short to sleep through: the margin decays, so one high
    /// estimate cannot stop the generator from sleeping for good.
    fn decay(&mut self) {
        self.margin = ((self.margin * 63 + Self::MIN) / 64).max(Self::MIN);
    }
}

/// Lines written at most per wake-up before the generator reports and
/// flushes (bounds a burst after a long stall).
const MAX_LINES_PER_WRITE: u64 = 4096;

/// Where a connection's sending stands: what its reports need.
struct Progress {
    /// Lines sent so far (the next line's sequence number).
    seq: u64,
    /// When the next once-a-second report is due, after the start.
    next_report: Duration,
    /// The lateness of the lines sent since the last report.
    sent: SendLateness,
}

/// Writes one connection's lines on schedule, then (throttled) reports the
/// last, partial second's lines with `(ended)`: a client that goes away
/// mid-second, as the latency harness does at the end of a cell, still
/// learns how its last lines left.
fn write_lines(stream: TcpStream, config: &LoadgenConfig, id: usize) -> io::Result<()> {
    let start = Instant::now();
    let mut progress = Progress {
        seq: 0,
        next_report: Duration::from_secs(1),
        sent: SendLateness::default(),
    };
    let result = send_lines(stream, config, id, start, &mut progress);
    if config.rate > 0 {
        eprintln!(
            "loadgen: connection {id}: {} s (ended), seq {}, {}",
            progress.next_report.as_secs(),
            progress.seq,
            progress.sent.report()
        );
    }
    result
}

/// The sending loop of [`write_lines`].
fn send_lines(
    stream: TcpStream,
    config: &LoadgenConfig,
    id: usize,
    start: Instant,
    progress: &mut Progress,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let mut wall = WallClock::anchored(start);
    let keys = config.keys.max(1);
    let limit = config.limit.unwrap_or(u64::MAX);
    let mut line = Vec::with_capacity(64);
    let mut lateness = SleepLateness::new();
    let Progress {
        seq,
        next_report,
        sent,
    } = progress;
    while *seq < limit {
        let mut now = start.elapsed();
        let mut due = Duration::from_micros(scheduled_us(*seq, config.rate));
        if due > now {
            wait_until(start, due, config.pacing, &mut lateness);
            now = start.elapsed();
        }
        if now >= *next_report {
            report(
                id,
                *next_report,
                *seq,
                now.saturating_sub(due),
                config.rate,
                sent,
            );
            *sent = SendLateness::default();
            *next_report += Duration::from_secs(1);
            // The report's own time is the sender's too.
            now = start.elapsed();
        }
        // Every line due by now, each stamped with its scheduled time, in
        // one write: one line when the wait woke on time, more when writing
        // takes longer than the gap between lines (500 k lines/s) or after
        // a stall. Flushed at once: a line never waits in the buffer for
        // the lines after it (a generator running behind that flushed only
        // full 64 KiB buffers could hold a line 3.6 ms at 500 k lines/s).
        // A line's lateness is counted when this write begins, so it
        // includes any wait behind the previous write (which a reader that
        // stops reading can block: `max_write_us` tells).
        let burst_end = (*seq + MAX_LINES_PER_WRITE).min(limit);
        let pair = ClockPair::read(start, 1);
        if pair.tight() {
            wall.follow(pair.wall_ns, pair.elapsed_ns);
        }
        while *seq < burst_end && due <= now {
            // Unthrottled: stamped when written (a write can block).
            let created = wall.at(if config.rate == 0 {
                start.elapsed().as_micros() as u64
            } else {
                sent.record_line(now - due);
                due.as_micros() as u64
            });
            line.clear();
            writeln!(line, "{created},{seq},{}", mix(*seq) % keys)?;
            out.write_all(&line)?;
            *seq += 1;
            due = Duration::from_micros(scheduled_us(*seq, config.rate));
        }
        out.flush()?;
        // Formatting the lines and writing them (a burst over the buffer's
        // 64 KiB is partly written above).
        sent.record_write(start.elapsed().saturating_sub(now));
    }
    Ok(())
}

/// Converts the generator's schedule (time since its start, on the
/// monotonic clock) to the wall clock the engine's sinks read. The two
/// clocks tick at the same rate, but the wall clock can be stepped (seen on
/// these VMs: 88 us back at once); a schedule anchored to the wall clock
/// only at the start would then be off by the step for the rest of the run,
/// making every later latency look that much shorter (or longer). So the
/// anchor follows the wall clock: a reading that differs from it by more
/// than [`STEP_NS`](Self::STEP_NS) is a step, and is taken. Smaller
/// differences are the jitter of reading two clocks ([`ClockPair`]), and
/// are not, so stamps between steps stay exactly on schedule.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    /// The wall clock (ns since the Unix epoch) at the schedule's zero.
    origin_ns: i64,
}

impl WallClock {
    /// Twice the most a [`ClockPair`] reading can be off.
    const STEP_NS: i64 = 2 * ClockPair::TIGHT_NS as i64;

    /// Anchored by the tightest of a few readings of both clocks, now.
    fn anchored(start: Instant) -> Self {
        let pair = ClockPair::read(start, 64);
        Self::new(pair.wall_ns, pair.elapsed_ns)
    }

    /// Anchored by a wall-clock reading `wall_ns` taken `elapsed_ns` after
    /// the schedule's zero.
    fn new(wall_ns: u64, elapsed_ns: u64) -> Self {
        Self {
            origin_ns: wall_ns as i64 - elapsed_ns as i64,
        }
    }

    /// Takes a new pair of readings; re-anchors if the wall clock stepped.
    fn follow(&mut self, wall_ns: u64, elapsed_ns: u64) {
        let origin = Self::new(wall_ns, elapsed_ns).origin_ns;
        if (origin - self.origin_ns).abs() > Self::STEP_NS {
            self.origin_ns = origin;
        }
    }

    /// The wall-clock time, in us, of schedule offset `offset_us`.
    fn at(&self, offset_us: u64) -> u64 {
        ((self.origin_ns + offset_us as i64 * 1000).max(0) / 1000) as u64
    }
}

/// A reading of the wall clock and, at the same moment, of the time since
/// the schedule's zero. The wall clock is read between two readings of the
/// monotonic one and paired with their midpoint, so a pair is off by at
/// most half the time between them (`window_ns`); a pair wider than
/// [`TIGHT_NS`](Self::TIGHT_NS) (a preemption between the reads, or a slow
/// clock source) is not followed. (Pairing it with the reading before,
/// and anchoring before the first write at "0 us", put stamps up to 20 us
/// ahead of the schedule: a p50 of 1-4 us through a loopback socket.)
#[derive(Debug, Clone, Copy)]
struct ClockPair {
    wall_ns: u64,
    elapsed_ns: u64,
    window_ns: u64,
}

impl ClockPair {
    const TIGHT_NS: u64 = 1_000;

    /// The tightest of `tries` pairs.
    fn read(start: Instant, tries: usize) -> Self {
        let mut best: Option<Self> = None;
        for _ in 0..tries.max(1) {
            let before = start.elapsed().as_nanos() as u64;
            let wall_ns = unix_ns();
            let after = start.elapsed().as_nanos() as u64;
            let window_ns = after.saturating_sub(before);
            if best.is_none_or(|b| window_ns < b.window_ns) {
                best = Some(Self {
                    wall_ns,
                    elapsed_ns: before + window_ns / 2,
                    window_ns,
                });
            }
        }
        best.expect("at least one try")
    }

    fn tight(self) -> bool {
        self.window_ns <= Self::TIGHT_NS
    }
}

/// Waits until `due` after `start`.
fn wait_until(start: Instant, due: Duration, pacing: Pacing, lateness: &mut SleepLateness) {
    let now = start.elapsed();
    if due <= now {
        return;
    }
    let margin = match pacing {
        Pacing::Sleep => {
            std::thread::sleep(due - now);
            return;
        }
        Pacing::Hybrid => lateness.margin,
        Pacing::Yield => Duration::from_micros(200),
    };
    if due - now > margin {
        let asked = due - now - margin;
        let before = Instant::now();
        std::thread::sleep(asked);
        lateness.observe(asked, before.elapsed());
    } else if pacing == Pacing::Hybrid {
        lateness.decay();
    }
    while start.elapsed() < due {
        std::thread::yield_now();
    }
}

/// The once-a-second progress line on stderr, with the lateness of the
/// lines sent since the last one.
fn report(id: usize, at: Duration, seq: u64, behind: Duration, rate: u64, sent: &SendLateness) {
    if rate > 0 {
        eprintln!(
            "loadgen: connection {id}: {} s, seq {seq}, behind schedule {:.3} ms, {}",
            at.as_secs(),
            behind.as_secs_f64() * 1000.0,
            sent.report()
        );
    } else {
        eprintln!(
            "loadgen: connection {id}: {} s, seq {seq} (unthrottled)",
            at.as_secs()
        );
    }
}

/// `eddy loadgen` running as a child process on a free loopback port;
/// killed when dropped. Its once-a-second reports are read as they come,
/// so the harness can ask how late the lines of the seconds it measured
/// were sent ([`sent_between`](Self::sent_between)).
pub struct LoadgenProcess {
    child: std::process::Child,
    addr: String,
    /// Every connection's reports, as they came.
    reports: std::sync::Arc<std::sync::Mutex<Vec<Report>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LoadgenProcess {
    /// Starts `exe loadgen` (the `eddy` binary) serving `connections`
    /// clients at `rate` lines per second each, on `cpus` if given, and
    /// waits until it listens.
    ///
    /// # Errors
    /// The process cannot start, or does not say where it listens.
    pub fn spawn(
        exe: &std::path::Path,
        rate: u64,
        keys: u64,
        connections: u64,
        pacing: Pacing,
        cpus: Option<&crate::cpu_list::CpuList>,
    ) -> io::Result<Self> {
        use std::io::BufRead;
        let mut command = std::process::Command::new(exe);
        if let Some(cpus) = cpus {
            command.args(["--cpus", &cpus.to_string()]);
        }
        let mut child = command
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
                "--pacing",
                pacing.name(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        io::BufReader::new(stdout).read_line(&mut first)?;
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            return Err(io::Error::other(format!("eddy loadgen said {first:?}")));
        };
        let addr = addr.to_string();
        let reports = std::sync::Arc::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = std::sync::Arc::clone(&reports);
        let reader = std::thread::spawn(move || read_reports(stderr, &sink));
        Ok(Self {
            child,
            addr,
            reports,
            reader: Some(reader),
        })
    }

    /// Where it listens (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generator's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How late the lines of a latency cell were sent (its seconds after
    /// `warmup`, over `connections`); also printed under the cell's row.
    pub fn sender_of_cell(&self, warmup: u64, seconds: u64, connections: usize) -> SendLateness {
        let (sent, n) = self.sent_between(
            warmup,
            warmup + seconds,
            connections,
            Duration::from_secs(2),
        );
        println!("{:<16} {} ({n} second reports)", "", sent.summary());
        sent
    }

    /// How late the lines of seconds `from + 1 ..= to` of every connection
    /// were sent (second `s` holds the lines sent in the second before the
    /// `s`-th report; seconds count from each connection's start), and how
    /// many reports that was. Waits, up to `wait`, until each of the first
    /// `connections` has reported second `to` or ended: the last second's
    /// report comes when the generator reaches it or the client leaves.
    pub fn sent_between(
        &self,
        from: u64,
        to: u64,
        connections: usize,
        wait: Duration,
    ) -> (SendLateness, usize) {
        let deadline = Instant::now() + wait;
        loop {
            let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            let done = (0..connections).all(|c| {
                reports
                    .iter()
                    .any(|r| r.connection == c && (r.second >= to || r.ended))
            });
            if done || Instant::now() >= deadline {
                let mut sum = SendLateness::default();
                let mut n = 0;
                for r in reports.iter().filter(|r| r.second > from && r.second <= to) {
                    sum.merge(&r.tally);
                    n += 1;
                }
                return (sum, n);
            }
            drop(reports);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One report line of the generator, read back.
#[derive(Debug, PartialEq)]
struct Report {
    connection: usize,
    second: u64,
    /// The connection's last, partial second.
    ended: bool,
    tally: SendLateness,
}

impl Report {
    /// `loadgen: connection 0: 3 s, seq .., sent ..` or `.. 3 s (ended), ..`.
    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("loadgen: connection ")?;
        let (connection, rest) = rest.split_once(": ")?;
        let (second, rest) = rest.split_once(" s")?;
        Some(Self {
            connection: connection.parse().ok()?,
            second: second.parse().ok()?,
            ended: rest.starts_with(" (ended),"),
            tally: SendLateness::parse(rest)?,
        })
    }
}

/// Collects the generator's report lines until its stderr closes. It keeps
/// draining whatever comes (a line it cannot read is skipped), so the
/// generator never blocks on, or dies of, a closed pipe.
fn read_reports(stderr: std::process::ChildStderr, reports: &std::sync::Mutex<Vec<Report>>) {
    use std::io::BufRead;
    let mut input = io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Some(r) = Report::parse(String::from_utf8_lossy(&line).trim_end()) {
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            }
        }
    }
}

impl Drop for LoadgenProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
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

    #[test]
    fn sleep_lateness_follows_wake_ups_within_bounds() {
        let mut l = SleepLateness::new();
        let us = Duration::from_micros;
        // 800 us late against a margin of 100 us: an eighth of the way up.
        l.observe(us(100), us(900));
        assert_eq!(l.margin, Duration::from_nanos(187_500));
        l.observe(us(100), us(100));
        assert!(l.margin < us(187) && l.margin > us(180), "{:?}", l.margin);
        for _ in 0..10_000 {
            l.observe(us(100), us(100));
        }
        assert_eq!(l.margin, SleepLateness::MIN);
        for _ in 0..100 {
            l.observe(us(1), Duration::from_secs(1));
        }
        assert_eq!(l.margin, SleepLateness::MAX);
        for _ in 0..10_000 {
            l.decay();
        }
        assert_eq!(
            l.margin,
            SleepLateness::MIN,
            "waits too short to sleep decay it"
        );
    }

    #[test]
    fn the_wall_anchor_takes_steps_and_ignores_jitter() {
        let us = |us: u64| us * 1000;
        let mut w = WallClock::new(us(1_000_000), 0);
        assert_eq!(w.at(500), 1_000_500);
        // Reading two clocks jitters by up to a microsecond: ignored.
        w.follow(us(1_010_000) + 900, us(10_000));
        w.follow(us(1_020_000) - 1_500, us(20_000));
        assert_eq!(w.at(30_000), 1_030_000, "stamps stay on schedule");
        // The wall clock stepped 88 us back: later stamps follow it.
        w.follow(us(1_029_912), us(30_000));
        assert_eq!(w.at(40_000), 1_039_912);
        // And 3 us forward: a step too, not jitter.
        w.follow(us(1_040_003), us(40_000));
        assert_eq!(w.at(40_000), 1_040_003);
    }

    #[test]
    fn a_clock_pair_matches_the_anchor_it_was_read_at() {
        let start = Instant::now();
        // Some time into the schedule, as when the first line is written
        // (an anchor taken as if at its zero would be this much ahead).
        std::thread::sleep(Duration::from_millis(2));
        let pair = ClockPair::read(start, 64);
        let anchor = WallClock::anchored(start);
        // Both put the schedule's zero at the same wall-clock time, within
        // the two readings' error (each at most half its window; a clock
        // step between them would fail this, and is rare).
        let origin = pair.wall_ns as i64 - pair.elapsed_ns as i64;
        let slack = pair.window_ns.max(ClockPair::TIGHT_NS) as i64;
        assert!(
            (anchor.origin_ns - origin).abs() <= slack,
            "{} against {origin} (window {} ns)",
            anchor.origin_ns,
            pair.window_ns
        );
        // A stamp is never ahead of the wall clock it is compared with.
        let due_us = start.elapsed().as_micros() as u64;
        let stamp = anchor.at(due_us);
        let wall_us = unix_ns() / 1000;
        assert!(
            stamp <= wall_us,
            "stamp {stamp} ahead of the clock {wall_us}"
        );
    }

    #[test]
    fn report_lines_read_back() {
        let mut sent = SendLateness::default();
        sent.record_line(Duration::from_micros(1_200));
        let line = format!(
            "loadgen: connection 2: 14 s, seq 1400000, behind schedule 0.004 ms, {}",
            sent.report()
        );
        let expected = Report {
            connection: 2,
            second: 14,
            ended: false,
            tally: sent.clone(),
        };
        assert_eq!(Report::parse(&line), Some(expected));
        let ended = format!(
            "loadgen: connection 0: 41 s (ended), seq 9, {}",
            sent.report()
        );
        let r = Report::parse(&ended).unwrap();
        assert!(r.ended && r.second == 41 && r.connection == 0);
        for other in [
            "loadgen: connection 0: 14 s, seq 5 (unthrottled)",
            "loadgen: connection 0: Broken pipe (os error 32)",
            "listening on 127.0.0.1:1",
        ] {
            assert_eq!(Report::parse(other), None, "{other}");
        }
    }

    #[test]
    fn pacing_names_parse_back() {
        for p in [Pacing::Hybrid, Pacing::Sleep, Pacing::Yield] {
            assert_eq!(p.name().parse::<Pacing>(), Ok(p));
        }
        assert!("spin".parse::<Pacing>().is_err());
    }
}
