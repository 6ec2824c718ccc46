//! `eddy bench latency`: its options, and the loop that runs its cells
//! (with `--input loadgen`, a generator process per cell), the ceiling
//! search and the reports. The measuring itself is in [`bench`](crate::bench).

use std::time::Duration;

use anyhow::Context;
use eddy::prelude::*;

use crate::bench::{run_latency, LatencyRun, Workload};
use crate::cpu_list::CpuList;

/// The options of `eddy bench latency`.
#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Workloads: w1 (passthrough), w2 (keyed count), w3 (1 s tumbling
    /// event-time window count), w4 (interval join of two half-rate
    /// streams).
    #[arg(long, value_delimiter = ',', default_value = "w1,w2")]
    workloads: Vec<String>,
    /// Distinct keys of w2, w3 and w4.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Modes: continuous, mbN (micro-batches every N ms).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "continuous,mb10,mb100,mb1000"
    )]
    modes: Vec<String>,
    /// Input rates in records per second.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    rates: Vec<u64>,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Warm-up seconds per cell.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Parallelism of every operator.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Rates tried, in ascending order, to find each mode's ceiling: the
    /// highest rate it sustains (output at 95% of the input rate or more);
    /// the walk stops at the first rate not sustained, then bisects (see
    /// --ceiling-bisect-steps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8000000,16000000,32000000,64000000"
    )]
    ceiling_rates: Vec<u64>,
    /// Geometric bisection steps between the last ceiling rate sustained and
    /// the first not sustained (each one more 2 s cell; 2 steps narrow a
    /// factor-2 bracket to about 1.19x). If the first ceiling rate is not
    /// sustained, the lower end is the highest of --rates below it that the
    /// mode sustained (none: the ceiling is 0, no bisection).
    #[arg(long, default_value_t = crate::bench::DEFAULT_BISECT_STEPS)]
    ceiling_bisect_steps: u32,
    /// Skip the ceiling search.
    #[arg(long)]
    no_ceiling: bool,
    /// Micro-batch modes: the most records the generator puts in one batch.
    /// Default: uncapped (each batch is everything that became due since
    /// the last, as Spark's rate source), so that a mode's ceiling is the
    /// engine's and not the cap's; the unthrottled generator keeps Eddy's
    /// default cap of 1,000,000.
    #[arg(long)]
    max_records_per_batch: Option<u64>,
    /// With `--input loadgen`: how the generator paces its lines (`hybrid`,
    /// `sleep`, `yield`; see `eddy loadgen --help`).
    #[arg(long, default_value = "hybrid")]
    loadgen_pacing: crate::loadgen::Pacing,
    /// With `--input loadgen`: run the generator on these CPUs only
    /// (`taskset -c` syntax; without it, the generator inherits the CPUs of
    /// `eddy --cpus`, or runs anywhere). With the engine's own `--cpus` on the
    /// same CPU, `--loadgen-pacing yield` and `--busy-poll-us 0`, generator
    /// and engine share one core and hand each line over by a wake-up on
    /// its run queue, and the kernel's housekeeping takes the other cores
    /// (docs/benchmarks-latency-tail.md, session 18).
    #[arg(long)]
    loadgen_cpus: Option<CpuList>,
    /// With `--input`: the TCP source keeps polling its socket for this
    /// many microseconds after data last arrived before it waits for
    /// readiness (0: it waits at once, the library's default). With one
    /// worker (`--threads 1`, or a feed on this host on 2 cores), while lines
    /// keep coming within the window no thread is woken per line, for a
    /// core kept busy (see `TcpLineSource::with_busy_poll`). On by default
    /// here, as Eddy's low-latency setting (docs/benchmarks-latency-tail.md).
    #[arg(long, default_value_t = 1000)]
    busy_poll_us: u64,
    /// Run without checkpoints (by default: RocksDB state, checkpoints every
    /// second in continuous mode and at every micro-batch).
    #[arg(long)]
    no_checkpoints: bool,
    /// Read records from an external load generator instead
    /// (tcp://127.0.0.1:PORT; lines `create_us,seq,key`), or `loadgen`: start
    /// `eddy loadgen` as a child process for every cell, at the cell's rate
    /// (one connection per source instance), and read through the socket.
    #[arg(long)]
    input: Option<String>,
    /// Write the results as a JSON array here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the ceilings and each mode's ratio to continuous as a JSON
    /// object here.
    #[arg(long)]
    ceilings_json: Option<std::path::PathBuf>,
    /// Write a markdown table here (with the ceiling tables, if searched).
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Write an SVG plot of latency percentiles per mode here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

async fn run_latency_cell(run: LatencyRun) -> anyhow::Result<crate::bench::LatencyResult> {
    let r = run_latency(&run).await?;
    eprint!("\r");
    println!(
        "{:<16} {:<18} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} {} out {}",
        r.workload,
        r.mode,
        if r.rate == 0 {
            "max".to_string()
        } else {
            r.rate.to_string()
        },
        crate::report::format_latency(r.p50_us),
        crate::report::format_latency(r.p99_us),
        crate::report::format_latency(r.p999_us),
        crate::report::format_latency(r.max_us),
        crate::report::format_rate(r.achieved_rate),
        r.sustained,
        crate::report::format_rate(r.output_rate),
    );
    if let Some(m) = &r.malformed {
        println!(
            "{:<16} input: {} malformed lines refused (not measured), the last {}",
            "", m.lines, m.last
        );
    }
    Ok(r)
}

/// Measured seconds of a ceiling-search cell.
const CEILING_CELL_SECONDS: u64 = 2;

impl LatencyArgs {
    /// Whether the harness starts `eddy loadgen` itself (`--input loadgen`).
    pub fn spawns_loadgen(&self) -> bool {
        self.input.as_deref() == Some("loadgen")
    }

    /// Whether the records come from a process on this host: the
    /// generator the harness starts, or a socket input at a loopback
    /// address (`tcp://127.0.0.1:PORT`, `tcp://[::1]:PORT`,
    /// `tcp://localhost:PORT`). That process needs a core of its own.
    pub fn feed_on_this_host(&self) -> bool {
        self.spawns_loadgen() || self.input.as_deref().is_some_and(is_loopback_tcp)
    }
}

/// Whether `input` is a `tcp://HOST:PORT` address whose host is loopback.
fn is_loopback_tcp(input: &str) -> bool {
    let Some((host, _port)) = input
        .strip_prefix("tcp://")
        .and_then(|a| a.rsplit_once(':'))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Runs `eddy bench latency`: every cell, then the ceiling search, then
/// the reports asked for.
///
/// # Errors
/// A cell fails (the generator cannot start, the pipeline fails), or a
/// report cannot be written.
pub async fn bench_latency(args: LatencyArgs) -> anyhow::Result<()> {
    use crate::bench::{parse_mode, Ceiling, CeilingSearch, Input};
    let started = std::time::Instant::now();
    let workloads = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modes = args
        .modes
        .iter()
        .map(|m| parse_mode(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spawn_loadgen = args.input.as_deref() == Some("loadgen");
    let input = match &args.input {
        Some(_) if spawn_loadgen => Input::Generator,
        Some(a) => Input::Tcp(a.clone()),
        None => Input::Generator,
    };
    let mut cells: Vec<(Workload, Trigger, Option<u64>)> = Vec::new();
    for &w in &workloads {
        for m in &modes {
            if matches!(input, Input::Generator) {
                for &r in &args.rates {
                    cells.push((w, m.clone(), Some(r)));
                }
            } else {
                cells.push((w, m.clone(), None));
            }
        }
    }
    println!(
        "{:<16} {:<18} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11} sustained",
        "workload", "mode", "rate", "p50", "p99", "p99.9", "max", "achieved"
    );
    let exe = std::env::current_exe()?;
    let run_cell = |workload: Workload, trigger: Trigger, rate: Option<u64>, seconds: u64| {
        // With `--input loadgen`, a generator process per cell, at the
        // cell's rate split over the source instances; killed after it.
        let loadgen = match (spawn_loadgen, rate) {
            (true, Some(r)) => {
                let p = args.parallelism.max(1) as u64;
                Some(crate::loadgen::LoadgenProcess::spawn(
                    &exe,
                    r.div_ceil(p),
                    10_000,
                    p,
                    args.loadgen_pacing,
                    args.loadgen_cpus.as_ref(),
                ))
            }
            _ => None,
        };
        let cell_input = match &loadgen {
            Some(Ok(g)) => Input::Tcp(format!("tcp://{}", g.addr())),
            _ => input.clone(),
        };
        async move {
            if let Some(Err(e)) = &loadgen {
                anyhow::bail!("starting eddy loadgen: {e}");
            }
            let mut result = run_latency_cell(LatencyRun {
                workload,
                trigger,
                rate,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(args.warmup),
                parallelism: args.parallelism,
                keys: args.keys,
                input: cell_input,
                checkpoints: !args.no_checkpoints,
                max_records_per_batch: args.max_records_per_batch,
                busy_poll: Duration::from_micros(args.busy_poll_us),
            })
            .await;
            // The sender's share of the tail: how late the generator sent
            // the lines of the measured seconds.
            if let (Ok(r), Some(Ok(g))) = (&mut result, &loadgen) {
                r.sender = Some(g.sender_of_cell(args.warmup, seconds, args.parallelism.max(1)));
            }
            drop(loadgen);
            result
        }
    };
    let mut results = Vec::new();
    let total = cells.len();
    for (i, (workload, trigger, rate)) in cells.into_iter().enumerate() {
        eprint!(
            "\r[{}/{}] {} {} {} ...          ",
            i + 1,
            total,
            workload.name(),
            trigger.name(),
            rate.map_or("unthrottled".to_string(), |r| r.to_string())
        );
        results.push(run_cell(workload, trigger, rate, args.seconds).await?);
    }
    let mut ceilings = Vec::new();
    let searched = !args.no_ceiling && !spawn_loadgen && matches!(input, Input::Generator);
    if searched {
        let first_grid = args.ceiling_rates.iter().copied().min().unwrap_or(0);
        for &w in &workloads {
            for m in &modes {
                // The highest fixed rate below the grid this mode sustained:
                // the bracket's lower end if the grid's first rate is not.
                let floor = results
                    .iter()
                    .filter(|r| r.workload == w.name() && r.mode == m.name() && r.sustained)
                    .map(|r| r.rate)
                    .filter(|&r| r > 0 && r < first_grid)
                    .max()
                    .unwrap_or(0);
                let mut search =
                    CeilingSearch::new(&args.ceiling_rates, floor, args.ceiling_bisect_steps);
                while let Some(r) = search.next_rate() {
                    eprint!("\r[ceiling] {} {} {} ...          ", w.name(), m.name(), r);
                    let res = run_cell(w, m.clone(), Some(r), CEILING_CELL_SECONDS).await?;
                    search.record(r, res.sustained);
                    results.push(res);
                }
                let (ceiling, first_unsustained) = search.bracket();
                ceilings.push(Ceiling {
                    workload: w.name().to_string(),
                    mode: m.name(),
                    ceiling,
                    first_unsustained,
                });
            }
        }
        println!(
            "\nceiling search: {:?}, then {} bisection step(s)\n\n{}",
            args.ceiling_rates,
            args.ceiling_bisect_steps,
            crate::report::ceiling_tables(&ceilings)
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.ceilings_json {
        let report = serde_json::json!({
            "grid": args.ceiling_rates,
            "bisect_steps": args.ceiling_bisect_steps,
            "cell_seconds": CEILING_CELL_SECONDS,
            "warmup_seconds": args.warmup,
            "ratio_target": crate::bench::CEILING_RATIO_TARGET,
            "searched": searched,
            "ceilings": ceilings,
            "comparisons": crate::bench::compare_ceilings(&ceilings),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let mut md = crate::report::markdown_table(&results);
        if searched {
            md.push('\n');
            md.push_str(&crate::report::ceiling_tables(&ceilings));
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        crate::report::write_svg(&results, path)?;
    }
    println!("harness time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `LatencyArgs` as the command line gives them.
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        latency: LatencyArgs,
    }

    fn args(input: Option<&str>) -> LatencyArgs {
        let mut line = vec!["bench"];
        if let Some(i) = input {
            line.extend(["--input", i]);
        }
        Args::parse_from(line).latency
    }

    #[test]
    fn a_feed_on_this_host_is_the_generator_or_a_loopback_socket() {
        for local in [
            "loadgen",
            "tcp://127.0.0.1:9999",
            "tcp://127.3.2.1:1",
            "tcp://[::1]:9999",
            "tcp://localhost:9999",
            "tcp://LOCALHOST:9999",
        ] {
            assert!(args(Some(local)).feed_on_this_host(), "{local}");
        }
        for remote in [
            "tcp://10.0.0.7:9999",
            "tcp://[2001:db8::1]:9999",
            "tcp://broker.example:9999",
            "127.0.0.1:9999",
            "tcp://127.0.0.1",
        ] {
            assert!(!args(Some(remote)).feed_on_this_host(), "{remote}");
        }
        assert!(!args(None).feed_on_this_host(), "the in-process generator");
    }
}
