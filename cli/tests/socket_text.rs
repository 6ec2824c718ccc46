//! The socket text source against a real TCP server on loopback: lines as
//! strings, CRLF and a missing final newline handled, a non-UTF-8 line
//! decoded lossily, an over-long line cut and counted, the end of the
//! stream ending the query.

use std::io::Write;
use std::net::TcpListener;

use eddy::connectors::SocketTextSource;
use eddy::prelude::*;

mod common;

#[test]
fn lines_from_a_tcp_server_become_strings() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        for i in 0..1000 {
            bytes.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        bytes.extend_from_slice(b"crlf\r\n\nbad \xff byte\n");
        bytes.extend_from_slice(&[b'x'; 100]);
        bytes.extend_from_slice(b"\nlast");
        // In small writes, so lines are split across reads.
        for chunk in bytes.chunks(7) {
            conn.write_all(chunk).unwrap();
        }
    });
    let source = SocketTextSource::new(&format!("tcp://{addr}")).max_line_bytes(64);
    let lines = CollectSink::new();
    common::runtime().block_on(async {
        let p = Pipeline::new();
        p.source("text", source.clone())
            .sink("lines", lines.clone());
        p.start().unwrap().await_termination().await.unwrap();
    });
    server.join().unwrap();
    let got: Vec<String> = lines.values();
    let mut expected: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    expected.extend(["crlf", "", "bad \u{fffd} byte", &"x".repeat(64), "last"].map(String::from));
    assert_eq!(got, expected);
    assert_eq!(source.truncated_count(), 1);
}
