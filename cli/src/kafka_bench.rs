//! `eddy bench kafka`: Kafka -> map -> Kafka through the exactly-once and
//! the at-least-once sink, against a broker given by address.
//!
//! Latency: a load thread produces `seq,scheduled_us` records at a fixed
//! rate into a 4-partition input topic (stamped with their scheduled send
//! time, so a stalled producer does not hide delay); the query reads them,
//! maps each (a copy of the value) and writes it to an output topic; a
//! `read_committed` consumer of the output records, per record, the time
//! from its scheduled production to its arrival at the consumer. The first
//! second is warm-up. Throughput: a topic pre-filled with `--drain-records`
//! records is read to its end by a bounded query; records divided by the
//! query's wall time (for exactly-once: until the last transaction
//! committed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use eddy::connectors::kafka::admin::{self, Isolation, PlainProducer};
use eddy::connectors::{KafkaSink, KafkaSource, ProducerRecord};
use eddy::prelude::*;
use eddy::runtime::record::now_ns;

const T: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct KafkaBench {
    /// Bootstrap servers.
    pub brokers: String,
    /// Input records per second in the latency runs.
    pub rate: u64,
    /// Seconds of load per latency run.
    pub seconds: u64,
    /// Milliseconds between checkpoints.
    pub interval_ms: u64,
    /// Parallelism of every operator.
    pub parallelism: usize,
    /// Records in the throughput runs.
    pub drain_records: u64,
    /// The source consumer's `fetch.wait.max.ms` (librdkafka's default: 500).
    pub fetch_wait_ms: Option<u64>,
}

/// One delivery's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaBenchRow {
    /// `exactly-once` or `at-least-once`.
    pub delivery: String,
    /// Input rate of the latency run.
    pub rate: u64,
    /// Records the consumer saw in the latency run (after warm-up).
    pub measured: u64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Records per second read, mapped and made visible by the bounded run.
    pub throughput: f64,
}

fn pipeline(dir: &std::path::Path, interval_ms: u64) -> Pipeline {
    Pipeline::with_config(PipelineConfig {
        checkpoint: Some(CheckpointConfig::new(dir.join("checkpoints"))),
        trigger: Trigger::continuous(Duration::from_millis(interval_ms)),
        ..Default::default()
    })
}

fn build(
    p: &Pipeline,
    b: &KafkaBench,
    input: &str,
    output: &str,
    eo: bool,
    bounded: bool,
    dir: &std::path::Path,
) {
    let mut source = KafkaSource::new(&b.brokers, &[input], |m| {
        Ok(m.value.unwrap_or_default().to_vec())
    });
    if bounded {
        source = source.bounded();
    }
    if let Some(ms) = b.fetch_wait_ms {
        source = source.property("fetch.wait.max.ms", &ms.to_string());
    }
    let mapped = p
        .source("in", source)
        .set_parallelism(b.parallelism)
        .map(|v: Vec<u8>| v)
        .set_parallelism(b.parallelism);
    let serialize = |v: &Vec<u8>| ProducerRecord::unkeyed(v.clone());
    if eo {
        mapped
            .sink(
                "out",
                KafkaSink::exactly_once(&b.brokers, output, dir.join("staging"), serialize),
            )
            .set_parallelism(b.parallelism);
    } else {
        mapped
            .sink(
                "out",
                KafkaSink::at_least_once(&b.brokers, output, serialize),
            )
            .set_parallelism(b.parallelism);
    }
}

fn scratch(tag: &str, what: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("eddy-kafka-bench-{tag}-{what}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    tokio::task::spawn_blocking(f).await?
}

/// Runs both deliveries.
///
/// # Errors
/// The broker refused a call, or a query failed.
pub async fn run(b: &KafkaBench) -> anyhow::Result<Vec<KafkaBenchRow>> {
    let mut rows = Vec::new();
    for (eo, name) in [(true, "exactly-once"), (false, "at-least-once")] {
        let tag = format!("{}-{}", if eo { "eo" } else { "alo" }, now_ns());
        let (input, output) = (format!("lat-in-{tag}"), format!("lat-out-{tag}"));
        let (di, dout) = (format!("drain-in-{tag}"), format!("drain-out-{tag}"));
        {
            let (br, topics) = (
                b.brokers.clone(),
                [input.clone(), output.clone(), di.clone(), dout.clone()],
            );
            blocking(move || {
                for t in &topics {
                    admin::create_topic(&br, t, 4, T)?;
                }
                Ok(())
            })
            .await?;
        }
        let dir = scratch(&tag, "latency")?;

        // Latency at a fixed rate.
        let p = pipeline(&dir, b.interval_ms);
        build(&p, b, &input, &output, eo, false, &dir);
        let mut q = p.start()?;
        let total = b.rate * b.seconds;
        let warm = b.rate;
        let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let seen = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let tail = {
            let (br, out, hist, seen, done) = (
                b.brokers.clone(),
                output.clone(),
                hist.clone(),
                seen.clone(),
                done.clone(),
            );
            let deadline = Instant::now() + Duration::from_secs(b.seconds + 30);
            tokio::task::spawn_blocking(move || {
                admin::tail_topic(
                    &br,
                    &out,
                    Isolation::ReadCommitted,
                    |m| {
                        let now_us = now_ns() / 1000;
                        let v = String::from_utf8_lossy(m.value.unwrap_or_default()).into_owned();
                        if let Some((seq, at)) = v.split_once(',') {
                            if let (Ok(seq), Ok(at)) = (seq.parse::<u64>(), at.parse::<u64>()) {
                                if seq >= warm {
                                    let mut h = hist.lock().unwrap_or_else(|e| e.into_inner());
                                    let _ = h.record(now_us.saturating_sub(at).max(1));
                                }
                            }
                        }
                        seen.fetch_add(1, Ordering::Relaxed);
                    },
                    || done.load(Ordering::Relaxed) || Instant::now() > deadline,
                )
            })
        };
        {
            let (br, rate) = (b.brokers.clone(), b.rate);
            let input = input.clone();
            blocking(move || {
                let prod = PlainProducer::new(&br, &input)?;
                let start_us = now_ns() / 1000;
                for seq in 0..total {
                    let due = start_us + seq * 1_000_000 / rate;
                    loop {
                        let now = now_ns() / 1000;
                        if now >= due {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros((due - now).min(1000)));
                    }
                    prod.send(&ProducerRecord::unkeyed(format!("{seq},{due}")))?;
                }
                prod.flush(T)?;
                Ok(())
            })
            .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done.store(true, Ordering::Relaxed);
        tail.await??;
        q.stop().await?;
        let h = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ms = |us: u64| us as f64 / 1000.0;

        // Throughput of a bounded read of a pre-filled topic.
        {
            let (br, di, n) = (b.brokers.clone(), di.clone(), b.drain_records);
            blocking(move || {
                let prod = PlainProducer::new(&br, &di)?;
                for seq in 0..n {
                    prod.send(&ProducerRecord::unkeyed(format!("{seq},0")))?;
                }
                prod.flush(T)?;
                Ok(())
            })
            .await?;
        }
        let dir2 = scratch(&tag, "drain")?;
        let p = pipeline(&dir2, b.interval_ms);
        build(&p, b, &di, &dout, eo, true, &dir2);
        let started = Instant::now();
        let mut q = p.start()?;
        q.await_termination().await?;
        let throughput = b.drain_records as f64 / started.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);

        rows.push(KafkaBenchRow {
            delivery: name.to_string(),
            rate: b.rate,
            measured: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            throughput,
        });
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn markdown(rows: &[KafkaBenchRow]) -> String {
    let mut s = String::from(
        "| delivery | rate (rec/s) | measured | p50 (ms) | p99 (ms) | max (ms) | throughput (rec/s) |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
            r.delivery, r.rate, r.measured, r.p50_ms, r.p99_ms, r.max_ms, r.throughput
        ));
    }
    s
}
