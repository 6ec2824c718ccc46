//! The external load generator (`eddy loadgen`) as a real child process,
//! read by a query through `TcpLineSource`: every line arrives, in order,
//! each stamped with its scheduled time (line `seq` at `seq / rate` after the
//! first, on the wall clock), whatever the delays of writing and reading.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use eddy::connectors::tcp::{TcpEvent, TcpLineSource};
use eddy::prelude::*;

mod common;
use common::runtime;

#[test]
fn lines_arrive_in_order_stamped_with_their_scheduled_time() {
    const RATE: u64 = 20_000;
    const LINES: u64 = 5_000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "loadgen",
            "--addr",
            "127.0.0.1:0",
            "--rate",
            &RATE.to_string(),
            "--keys",
            "100",
            "--limit",
            &LINES.to_string(),
            "--connections",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eddy loadgen");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();

    let out = CollectSink::new();
    runtime().block_on(async {
        let p = Pipeline::new();
        p.source("tcp", TcpLineSource::new(addr.clone()))
            .sink("out", out.clone());
        p.start().unwrap().await_termination().await.unwrap();
    });
    assert!(child.wait().unwrap().success());

    let events: Vec<TcpEvent> = out.values();
    assert_eq!(events.len() as u64, LINES);
    // Stamps are the schedule on the wall clock: `created_us` minus line
    // i's offset is the same for every line, except where the generator
    // re-anchored its schedule to the wall clock: by a few microseconds
    // when the clock is slewed against the monotonic one (NTP), or by a
    // step (seen here about once in 20 s, so at most a couple in this run).
    // Stamps taken when lines are written would move it by the tens of
    // microseconds each line leaves late, line after line.
    let mut origins: Vec<i64> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let i = i as u64;
        assert_eq!(e.seq, i, "in order, none missing");
        assert!(e.key < 100);
        let origin = e.created_us as i64 - (i * 1_000_000 / RATE) as i64;
        if origins.last() != Some(&origin) {
            origins.push(origin);
        }
    }
    let steps = origins
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() > 5)
        .count();
    assert!(
        steps <= 2 && origins.len() <= 1 + LINES as usize / 100,
        "lines carry their scheduled time: origins {origins:?}"
    );
}

/// `eddy bench latency --input loadgen` starts a generator process per cell
/// at the cell's rate and measures through the socket.
#[test]
fn the_latency_harness_measures_through_its_own_generator_process() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("latency.json");
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "bench",
            "latency",
            "--input",
            "loadgen",
            "--workloads",
            "w1",
            "--modes",
            "continuous",
            "--rates",
            "5000",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--no-ceiling",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["rate"], 5000);
    // Records flowed through the socket and were measured.
    assert!(r["achieved_rate"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["p50_us"].as_f64().unwrap() > 0.0, "{r}");
    // The generator's reports of the measured seconds were read back: the
    // lines it sent in them (at least the full second that ended one
    // second before the cell did, at most the two seconds' worth) and how
    // late, each threshold's count within the one below it.
    let sender = &r["sender"];
    let lines = sender["lines"].as_u64().unwrap_or_else(|| panic!("{r}"));
    assert!((4_900..=10_100).contains(&lines), "{r}");
    let late: Vec<u64> = sender["late_over"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(late.len(), 5);
    assert!(
        late[0] <= lines && late.windows(2).all(|w| w[1] <= w[0]),
        "{r}"
    );
}
