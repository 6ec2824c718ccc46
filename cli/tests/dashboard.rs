//! The demo's operational surfaces, from outside the process, as a user
//! reaches them:
//!
//! - `--metrics-addr`: the Prometheus text is scraped over HTTP and parsed;
//!   every family the engine and the demo export is there with plausible
//!   values (records flowing, checkpoints completing, watermarks, latency
//!   quantiles, late records, alerts).
//! - `--ui-addr`: the dashboard is opened in headless Chromium (installed by
//!   `.ci/setup`; `EDDY_CHROMIUM` names another binary), and the rendered
//!   page shows the query graph, live numbers that change between two
//!   loads, the alert feed and the machine map; a screenshot is taken.
//!
//! The demo runs as a child process on an unbounded seeded fleet and is
//! killed at the end. Waits are bounded by deadlines, never asserted on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy_cli::http;

/// A running `eddy demo iot` child, killed on drop.
struct Demo {
    child: Child,
    ui: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(dir: &Path, flags: &[&str]) -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["demo", "iot", "--seconds", "0", "--rate", "20000"])
        .args([
            "--sensors",
            "300",
            "--fault-share",
            "0.2",
            "--late-share",
            "0.01",
        ])
        .args(["--interval-ms", "200", "--quiet", "--dir"])
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn eddy demo iot");
    let stdout = child.stdout.take().expect("stdout");
    let mut demo = Demo {
        child,
        ui: None,
        metrics: None,
    };
    let want_ui = flags.contains(&"--ui-addr");
    let want_metrics = flags.contains(&"--metrics-addr");
    let mut lines = BufReader::new(stdout).lines();
    while (want_ui && demo.ui.is_none()) || (want_metrics && demo.metrics.is_none()) {
        let line = lines
            .next()
            .expect("the demo ended before printing its addresses")
            .expect("read stdout");
        let addr = |prefix: &str| {
            line.strip_prefix(prefix).map(|rest| {
                rest.trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            })
        };
        demo.ui = demo.ui.or(addr("dashboard: "));
        demo.metrics = demo.metrics.or(addr("Prometheus metrics: "));
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    demo
}

/// One parsed exposition: family -> type, and every sample.
#[derive(Default, Debug)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                s.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in `{line}`")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("labels end with }");
                    let labels = rest
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            let family = ["_sum", "_count"]
                .iter()
                .find_map(|sfx| name.strip_suffix(sfx).filter(|f| s.types.contains_key(*f)))
                .unwrap_or(&name)
                .to_string();
            assert!(
                s.types.contains_key(&family),
                "sample `{name}` has no # TYPE line before it"
            );
            s.samples.push((name, labels, value));
        }
        s
    }

    fn values(&self, name: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .collect()
    }

    fn sum(&self, name: &str) -> f64 {
        self.values(name).iter().sum()
    }

    fn with_label(&self, name: &str, key: &str, value: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.get(key).map(String::as_str) == Some(value))
            .map(|(_, _, v)| *v)
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = runtime()
        .block_on(http::get(addr, "/metrics"))
        .expect("scrape /metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

/// Scrapes until `ready` holds, for at most two minutes.
fn scrape_until(addr: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = scrape(addr);
        if ready(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_prometheus_endpoint_serves_every_family_with_plausible_values() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let addr = demo.metrics.unwrap();
    let s = scrape_until(addr, |s| {
        s.sum("eddy_checkpoints_completed_total") >= 2.0
            && s.sum("eddy_demo_alerts_total") > 0.0
            && s.sum("eddy_late_records_total") > 0.0
            && s.values("eddy_latency_seconds_count")
                .iter()
                .any(|&c| c > 0.0)
    });
    for (family, kind) in [
        ("eddy_records_in_total", "counter"),
        ("eddy_records_out_total", "counter"),
        ("eddy_queued_records", "gauge"),
        ("eddy_late_records_total", "counter"),
        ("eddy_dropped_records_total", "counter"),
        ("eddy_watermark_milliseconds", "gauge"),
        ("eddy_event_time_max_milliseconds", "gauge"),
        ("eddy_watermark_lag_seconds", "gauge"),
        ("eddy_alignment_max_seconds", "gauge"),
        ("eddy_input_records_total", "counter"),
        ("eddy_output_records_total", "counter"),
        ("eddy_latency_seconds", "summary"),
        ("eddy_checkpoints_started_total", "counter"),
        ("eddy_checkpoints_completed_total", "counter"),
        ("eddy_checkpoints_failed_total", "counter"),
        ("eddy_checkpoint_duration_seconds", "gauge"),
        ("eddy_checkpoint_written_bytes", "gauge"),
        ("eddy_state_bytes", "gauge"),
        ("eddy_demo_alerts_total", "counter"),
    ] {
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some(kind),
            "family {family}"
        );
    }
    // Records flow through every operator of the plan.
    let source_out = s.with_label("eddy_records_out_total", "operator", "fleet");
    assert!(!source_out.is_empty() && source_out.iter().sum::<f64>() > 0.0);
    assert!(
        s.with_label("eddy_records_in_total", "operator", "windows")
            .iter()
            .sum::<f64>()
            > 0.0
    );
    assert!(s.sum("eddy_input_records_total") > 0.0);
    assert!(s.values("eddy_queued_records").iter().all(|&q| q >= 0.0));
    // Checkpoints complete, take time, write bytes, none failed.
    assert!(s.sum("eddy_checkpoints_completed_total") >= 2.0);
    assert!(s.sum("eddy_checkpoints_started_total") >= s.sum("eddy_checkpoints_completed_total"));
    assert_eq!(s.sum("eddy_checkpoints_failed_total"), 0.0);
    let duration = s.sum("eddy_checkpoint_duration_seconds");
    assert!(
        (0.0..60.0).contains(&duration),
        "checkpoint duration {duration} s"
    );
    assert!(s.sum("eddy_checkpoint_written_bytes") > 0.0);
    assert!(s.sum("eddy_state_bytes") > 0.0);
    // Event time: the windows' watermark is behind the source's newest
    // event time by about the watermark bound, never ahead.
    let newest = s.values("eddy_event_time_max_milliseconds");
    let windows = s.with_label("eddy_watermark_milliseconds", "operator", "windows");
    assert!(!newest.is_empty() && !windows.is_empty());
    let newest = newest.iter().cloned().fold(f64::MIN, f64::max);
    assert!(windows
        .iter()
        .all(|&w| w <= newest && w > newest - 3_600_000.0));
    let lag = s.with_label("eddy_watermark_lag_seconds", "operator", "windows");
    assert!(
        lag.iter().all(|&l| (0.0..3600.0).contains(&l)),
        "lag {lag:?}"
    );
    // Late readings are counted at the window operator.
    assert!(
        s.with_label("eddy_late_records_total", "operator", "windows")
            .iter()
            .sum::<f64>()
            > 0.0
    );
    // Latency quantiles are ordered and positive.
    let q = |p: &str| s.with_label("eddy_latency_seconds", "quantile", p)[0];
    assert!(q("0.5") > 0.0 && q("0.5") <= q("0.99") && q("0.99") <= q("0.999"));
    assert!(s.sum("eddy_latency_seconds_sum") > 0.0);
    // The demo's alerts, per rule.
    assert_eq!(s.values("eddy_demo_alerts_total").len(), 4);
    assert!(s.sum("eddy_demo_alerts_total") > 0.0);
    // Counters only go up.
    let later = scrape(addr);
    assert!(later.sum("eddy_input_records_total") >= s.sum("eddy_input_records_total"));
}

fn chromium() -> String {
    if let Ok(bin) = std::env::var("EDDY_CHROMIUM") {
        return bin;
    }
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return bin.to_string();
        }
    }
    panic!("no Chromium found: `bash .ci/setup` installs Debian's chromium (or set EDDY_CHROMIUM)");
}

fn headless(extra: &[&str], url: &str) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1300",
            // Virtual time runs the page's one-second poll several times;
            // it waits while a fetch is in flight, so each poll reads the
            // live process.
            "--virtual-time-budget=6000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// The value of `attr="…"` on the body.
fn body_attr(dom: &str, attr: &str) -> Option<u64> {
    let at = dom.find(&format!("{attr}=\""))? + attr.len() + 2;
    dom[at..].split('"').next()?.parse().ok()
}

#[test]
fn the_dashboard_renders_live_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path(), &["--ui-addr", "127.0.0.1:0"]);
    let url = format!("http://{}/", demo.ui.unwrap());
    // Wait until the query has produced alerts, so the feed has rows.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rt = runtime();
    loop {
        let (_, app) = rt
            .block_on(http::get(demo.ui.unwrap(), "/api/app"))
            .unwrap();
        if app.contains("\"recent\":[{") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let load = || {
        let out = headless(&["--dump-dom"], &url);
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = load();
    // The page polled the process more than once (it updates itself).
    let polls = body_attr(&first, "data-polls").expect("the page never completed a poll");
    assert!(polls >= 2, "polls {polls}");
    // The query graph: a node per operator of the plan, with rates.
    for op in [
        "fleet",
        "windows",
        "dedup",
        "alerts",
        "window-aggregates",
        "late-readings",
    ] {
        assert!(
            first.contains(&format!("data-name=\"{op}\"")),
            "graph node {op} missing"
        );
    }
    // The source's box shows its live output rate (the fleet emits 20,000
    // readings/s).
    let fleet = &first[first.find("data-name=\"fleet\"").unwrap()..];
    let rate = fleet
        .split("class=\"rate\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the source's rate");
    assert!(
        rate.ends_with(" k/s") || rate.ends_with(" M/s"),
        "fleet rate {rate}"
    );
    // Live numbers, the latency chart, checkpoints, watermarks.
    assert!(first.contains("data-k=\"input\""));
    assert!(first.contains("<polyline"), "no latency line drawn");
    assert!(first.contains("<td>windows</td>"));
    // The demo's panel: the alert feed and the machine map (300 sensors
    // on 100 machines).
    assert!(first.contains("<th>rule</th>"));
    assert!(
        ["threshold", "zscore", "stuck", "silence"]
            .iter()
            .any(|r| first.contains(&format!("<td>{r}</td>"))),
        "no alert rendered"
    );
    assert_eq!(first.matches("class=\"machine").count(), 100);

    std::thread::sleep(Duration::from_secs(2));
    let second = load();
    let (a, b) = (
        body_attr(&first, "data-input-rows").unwrap(),
        body_attr(&second, "data-input-rows").unwrap(),
    );
    assert!(
        b > a,
        "the numbers did not move between two loads: {a} then {b}"
    );

    let shot = dir.path().join("dashboard.png");
    let out = headless(&[&format!("--screenshot={}", shot.display())], &url);
    assert!(out.status.success());
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}
