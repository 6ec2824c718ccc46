//! `eddy bench latency --input tcp://...` reading a socket that carries
//! malformed lines among good ones: the cell is measured on the good lines,
//! and the ones the source refused are counted and reported, not lost
//! silently.

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The malformed lines the server sends, each for a different reason.
const BAD: [&str; 4] = ["garbage", "12,not-a-seq,3", "1,2", "9,9,9,9"];

#[test]
fn refused_lines_are_counted_in_the_cell_report() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        // 100 lines every 10 ms until the harness closes the connection at
        // the cell's end (2 s), the malformed ones in the first 0.3 s.
        let mut seq = 0u64;
        for batch in 0.. {
            let now_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros();
            let mut text = String::new();
            for _ in 0..100 {
                text.push_str(&format!("{now_us},{seq},{}\n", seq % 10));
                seq += 1;
            }
            if let Some(bad) = [2, 10, 20, 30].iter().position(|&b| b == batch) {
                text.push_str(BAD[bad]);
                text.push('\n');
            }
            if client.write_all(text.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("latency.json");
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["--threads", "1", "bench", "latency", "--input"])
        .arg(format!("tcp://{addr}"))
        .args([
            "--workloads",
            "w1",
            "--modes",
            "continuous",
            "--rates",
            "1000",
        ])
        .args(["--seconds", "1", "--warmup", "1", "--no-ceiling", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.join().unwrap();
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &results[0];
    assert_eq!(r["malformed"]["lines"], 4, "{r}");
    let last = r["malformed"]["last"].as_str().unwrap();
    assert!(last.contains(BAD[3]), "{last}");
    assert!(
        stdout.contains("input: 4 malformed lines refused"),
        "{stdout}"
    );
}
