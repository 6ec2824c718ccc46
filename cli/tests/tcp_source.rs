//! The TCP line source end to end: a loopback server thread writes lines and
//! closes; the query ends when the source reaches end of stream.

use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use eddy::connectors::{ParseLineError, TcpEvent, TcpLineSource};
use eddy::prelude::*;
use eddy::runtime::QueryError;

mod common;
use common::runtime;

/// Bounds every query; none needs more than a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

fn event(seq: u64) -> TcpEvent {
    TcpEvent {
        created_us: 1_700_000_000_000_000 + seq,
        seq,
        key: seq % 7,
    }
}

/// A loopback server that accepts `clients` connections and hands each, in
/// accept order, to `write`; every connection closes when `write` returns.
fn serve(
    clients: usize,
    write: impl Fn(usize, &mut BufWriter<TcpStream>) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let conns: Vec<TcpStream> = (0..clients).map(|_| listener.accept().unwrap().0).collect();
        for (i, conn) in conns.into_iter().enumerate() {
            let mut w = BufWriter::new(conn);
            write(i, &mut w);
            w.flush().unwrap();
        }
    });
    (addr, server)
}

async fn run_to_end(p: &Pipeline) -> Result<(), QueryError> {
    let mut q = p.start().unwrap();
    tokio::time::timeout(LIMIT, q.await_termination())
        .await
        .expect("the query ends at end of stream")
}

#[test]
fn every_good_line_arrives_in_order_and_the_malformed_one_is_counted() {
    const N: u64 = 20_000;
    let (addr, server) = serve(1, |_, w| {
        for seq in 0..N {
            if seq == N / 2 {
                w.write_all(b"12,not-a-number,3\n").unwrap();
            }
            // Some lines end with CRLF; the last one has no newline at all.
            let end = match seq {
                s if s == N - 1 => "",
                s if s % 3 == 0 => "\r\n",
                _ => "\n",
            };
            write!(w, "{}{end}", event(seq)).unwrap();
        }
    });
    runtime().block_on(async {
        let source = TcpLineSource::new(format!("tcp://{addr}"));
        let out = CollectSink::new();
        let p = Pipeline::new();
        p.source("tcp", source.clone())
            .map(|e: TcpEvent| e)
            .sink("out", out.clone());
        run_to_end(&p).await.unwrap();

        let got = out.values();
        assert_eq!(got.len() as u64, N);
        assert!(got.iter().copied().eq((0..N).map(event)));
        assert_eq!(source.malformed_count(), 1);
        let bad = source.recent_malformed();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, "12,not-a-number,3");
        assert_eq!(
            bad[0].error,
            ParseLineError::BadField {
                field: "seq",
                value: "not-a-number".into()
            }
        );
    });
    server.join().unwrap();
}

#[test]
fn with_parallelism_each_instance_reads_its_own_connection() {
    const PER_CONNECTION: u64 = 5_000;
    // Connection i carries the sequence numbers i * PER_CONNECTION + (0..PER_CONNECTION).
    let (addr, server) = serve(2, |i, w| {
        let first = i as u64 * PER_CONNECTION;
        for seq in first..first + PER_CONNECTION {
            writeln!(w, "{}", event(seq)).unwrap();
        }
    });
    runtime().block_on(async {
        let out = CollectSink::new();
        let p = Pipeline::new();
        p.source("tcp", TcpLineSource::new(addr))
            .set_parallelism(2)
            .map(|e: TcpEvent| e.seq)
            .set_parallelism(2)
            .sink("out", out.clone());
        run_to_end(&p).await.unwrap();

        let got = out.values();
        for c in 0..2 {
            let range = c * PER_CONNECTION..(c + 1) * PER_CONNECTION;
            let from_c: Vec<u64> = got.iter().copied().filter(|s| range.contains(s)).collect();
            assert!(
                from_c.iter().copied().eq(range),
                "connection {c} out of order or incomplete"
            );
        }
        assert_eq!(got.len() as u64, 2 * PER_CONNECTION);
    });
    server.join().unwrap();
}

/// Busy-polling changes when the source reads, not what: lines sent in
/// bursts, some closer together than the window (read while spinning) and
/// some further apart (the window runs out and the source waits for
/// readiness), all arrive once and in order, and the query still ends at
/// end of stream.
#[test]
fn busy_polling_reads_every_line_once_in_order() {
    const BURSTS: u64 = 6;
    const PER_BURST: u64 = 500;
    let (addr, server) = serve(1, |_, w| {
        for b in 0..BURSTS {
            for seq in b * PER_BURST..(b + 1) * PER_BURST {
                writeln!(w, "{}", event(seq)).unwrap();
                if seq % 50 == 0 {
                    w.flush().unwrap();
                }
            }
            w.flush().unwrap();
            // Odd bursts follow within the window, even ones after it.
            let gap = if b % 2 == 0 { 30 } else { 1 };
            std::thread::sleep(Duration::from_millis(gap));
        }
    });
    runtime().block_on(async {
        let out = CollectSink::new();
        let p = Pipeline::new();
        p.source(
            "tcp",
            TcpLineSource::new(addr).with_busy_poll(Duration::from_millis(10)),
        )
        .map(|e: TcpEvent| e.seq)
        .sink("out", out.clone());
        run_to_end(&p).await.unwrap();
        let got = out.values();
        assert!(
            got.iter().copied().eq(0..BURSTS * PER_BURST),
            "{} lines, out of order or incomplete",
            got.len()
        );
    });
    server.join().unwrap();
}

#[test]
fn a_refused_connection_fails_the_query_naming_the_address() {
    // A port nobody listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    runtime().block_on(async {
        let p = Pipeline::new();
        p.source("tcp", TcpLineSource::new(addr))
            .sink("out", CollectSink::<TcpEvent>::new());
        match run_to_end(&p).await {
            Err(QueryError::OperatorFailed {
                operator, message, ..
            }) => {
                assert_eq!(operator, "tcp");
                assert!(message.contains(&addr.to_string()), "{message}");
            }
            other => panic!("expected the source to fail, got {other:?}"),
        }
    });
}

/// Micro-batches read a source that does I/O: the source connects and
/// waits for bytes between batches, and each batch takes what has arrived.
#[test]
fn micro_batches_read_the_tcp_source() {
    const N: u64 = 5_000;
    let (addr, server) = serve(1, |_, w| {
        for seq in 0..N {
            writeln!(w, "{}", event(seq)).unwrap();
            if seq % 1_000 == 999 {
                // Let some batches see part of the stream.
                w.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    runtime().block_on(async {
        let out = CollectSink::new();
        let p = Pipeline::with_config(PipelineConfig {
            trigger: Trigger::ProcessingTime(Duration::from_millis(10)),
            ..Default::default()
        });
        p.source("tcp", TcpLineSource::new(format!("tcp://{addr}")))
            .map(|e: TcpEvent| e.seq)
            .sink("out", out.clone());
        let mut q = p.start().unwrap();
        tokio::time::timeout(LIMIT, q.await_termination())
            .await
            .expect("the query ends when the stream does")
            .unwrap();
        let mut got = out.values();
        got.sort_unstable();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
        let stats = q.progress().checkpoint.expect("micro-batch stats");
        assert!(stats.batches_completed >= 1, "{stats:?}");
    });
    server.join().unwrap();
}
