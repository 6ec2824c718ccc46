//! Reports of latency measurements: a markdown table and an SVG percentile
//! plot of [`LatencyResult`]s, and a markdown table of throughput
//! [`Ceiling`]s with each micro-batch mode's ratio to continuous.
//!
//! Results are grouped by workload (in order of first appearance), then by
//! target rate (ascending), one row or series per mode (in input order).
//! Latencies are shown in µs, ms or s, whichever reads best; a value that is
//! not a finite, non-negative number is shown as `–` and left out of plots.
//!
//! ```
//! use eddy_cli::bench::LatencyResult;
//! use eddy_cli::report::markdown_table;
//!
//! let cell = LatencyResult {
//!     workload: "w1-passthrough".into(),
//!     mode: "continuous".into(),
//!     rate: 100_000,
//!     p50_us: 12.0,
//!     p99_us: 48.0,
//!     p999_us: 950.0,
//!     max_us: 2_100.0,
//!     achieved_rate: 99_900.0,
//!     sustained: true,
//!     output_rate: 99_900.0,
//!     sender: None,
//!     malformed: None,
//! };
//! let table = markdown_table(&[cell]);
//! assert!(table.contains("| continuous | 100k/s | 12 µs | 48 µs | 950 µs | 2.10 ms | 99.9k/s | yes |"));
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::bench::{compare_ceilings, Ceiling, LatencyResult, CEILING_RATIO_TARGET};

/// The percentiles plotted, left to right.
const PERCENTILES: [&str; 4] = ["p50", "p99", "p99.9", "max"];

/// Smallest latency drawn on the log axis (a measured 0 µs sits there).
const FLOOR_US: f64 = 0.1;

/// One colour per mode (Tableau 10), reused in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Size of one panel of the plot, pixels.
const PANEL: (u32, u32) = (520, 380);

/// Height of the plot's title, pixels.
const TITLE_HEIGHT: u32 = 40;

/// Results of one workload, grouped by rate.
struct WorkloadGroup<'a> {
    workload: &'a str,
    /// Ascending rate; each with its results in input order.
    rates: Vec<(u64, Vec<&'a LatencyResult>)>,
}

fn group(results: &[LatencyResult]) -> Vec<WorkloadGroup<'_>> {
    let mut groups: Vec<WorkloadGroup<'_>> = Vec::new();
    for r in results {
        let g = match groups.iter().position(|g| g.workload == r.workload) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(WorkloadGroup {
                    workload: &r.workload,
                    rates: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        match g.rates.iter_mut().find(|(rate, _)| *rate == r.rate) {
            Some((_, cell)) => cell.push(r),
            None => g.rates.push((r.rate, vec![r])),
        }
    }
    for g in &mut groups {
        g.rates.sort_by_key(|(rate, _)| *rate);
    }
    groups
}

/// The four plotted latencies of a result, in [`PERCENTILES`] order.
fn latencies(r: &LatencyResult) -> [f64; 4] {
    [r.p50_us, r.p99_us, r.p999_us, r.max_us]
}

/// A latency in µs as `3.4 µs`, `12 µs`, `1.25 ms`, `34.2 ms`, `340 ms` or `1.50 s`.
pub fn format_latency(us: f64) -> String {
    if !us.is_finite() || us < 0.0 {
        return "–".to_string();
    }
    if us < 9.95 {
        format!("{us:.1} µs")
    } else if us < 999.5 {
        format!("{us:.0} µs")
    } else if us < 9_995.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 99_950.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us < 999_500.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A rate in records per second as `500/s`, `99.8k/s`, `1.5M/s`.
pub fn format_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "–".to_string();
    }
    let (v, suffix) = if per_sec >= 999_500.0 {
        (per_sec / 1e6, "M")
    } else if per_sec >= 999.5 {
        (per_sec / 1e3, "k")
    } else {
        (per_sec, "")
    };
    let mut s = if v >= 99.95 {
        format!("{v:.0}")
    } else if v >= 9.995 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    format!("{s}{suffix}/s")
}

/// Escapes text for a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A markdown section per workload (`### <workload>`), each a table with one
/// row per mode, rows grouped by ascending rate. Columns: mode, rate, p50,
/// p99, p99.9, max, achieved rate, sustained.
pub fn markdown_table(results: &[LatencyResult]) -> String {
    if results.is_empty() {
        return "*no latency results*\n".to_string();
    }
    let mut out = String::new();
    for (i, g) in group(results).iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "### {}\n", g.workload);
        out.push_str("| mode | rate | p50 | p99 | p99.9 | max | achieved rate | sustained |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |\n");
        for (rate, cells) in &g.rates {
            for r in cells {
                let [p50, p99, p999, max] = latencies(r).map(format_latency);
                let _ = writeln!(
                    out,
                    "| {} | {} | {p50} | {p99} | {p999} | {max} | {} | {} |",
                    cell(&r.mode),
                    format_rate(*rate as f64),
                    format_rate(r.achieved_rate),
                    if r.sustained { "yes" } else { "no" },
                );
            }
        }
    }
    out
}

/// A ratio as `1.41x`.
fn format_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "–".to_string()
    }
}

/// A `### Throughput ceilings` section with a table per workload (in order
/// of first appearance): each mode's ceiling (highest rate sustained), the
/// lowest rate above it not sustained, and for every mode but continuous
/// the ratio of the continuous ceiling to this one, the range of ratios the
/// two brackets allow, and whether it is within 1.5x (`yes`, `no`, or
/// `open` when a mode held the top of the grid and that leaves it open).
///
/// ```
/// use eddy_cli::bench::Ceiling;
/// use eddy_cli::report::ceiling_tables;
///
/// let c = |mode: &str, ceiling: u64, first_unsustained: Option<u64>| Ceiling {
///     workload: "w2-keyed-count".into(),
///     mode: mode.into(),
///     ceiling,
///     first_unsustained,
/// };
/// let md = ceiling_tables(&[
///     c("continuous", 19_000_000, Some(22_600_000)),
///     c("microbatch-10ms", 13_500_000, Some(16_000_000)),
/// ]);
/// assert!(md.contains("| microbatch-10ms | 13.5M/s | 16M/s | 1.41x | 1.19x–1.67x | yes |"), "{md}");
/// ```
pub fn ceiling_tables(ceilings: &[Ceiling]) -> String {
    let mut out = String::from("### Throughput ceilings\n\n");
    if ceilings.is_empty() {
        out.push_str("*no ceiling results*\n");
        return out;
    }
    out.push_str(
        "Ceiling: the highest rate sustained (output at 95% of the input rate or more); \
         the true ceiling lies below the first rate not sustained. \
         Ratio: the continuous ceiling over this mode's; range: the ratios the two brackets allow.\n",
    );
    let comparisons = compare_ceilings(ceilings);
    let mut workloads: Vec<&str> = Vec::new();
    for c in ceilings {
        if !workloads.contains(&c.workload.as_str()) {
            workloads.push(&c.workload);
        }
    }
    for w in workloads {
        let _ = writeln!(out, "\n#### {}\n", cell(w));
        let _ = writeln!(
            out,
            "| mode | ceiling | first not sustained | continuous / mode | range | within {CEILING_RATIO_TARGET}x |"
        );
        out.push_str("| --- | ---: | ---: | ---: | :---: | :---: |\n");
        for c in ceilings.iter().filter(|c| c.workload == w) {
            let first = c
                .first_unsustained
                .map_or("none (top of grid)".to_string(), |r| format_rate(r as f64));
            let cmp = comparisons
                .iter()
                .find(|k| k.workload == c.workload && k.mode == c.mode);
            let (ratio, range, within) = match cmp {
                None => ("–".to_string(), "–".to_string(), "–"),
                Some(k) => (
                    k.ratio.map_or("–".to_string(), format_ratio),
                    match (k.ratio_min > 0.0, k.ratio_max) {
                        (true, Some(max)) => {
                            format!("{}–{}", format_ratio(k.ratio_min), format_ratio(max))
                        }
                        (true, None) => format!("≥ {}", format_ratio(k.ratio_min)),
                        (false, Some(max)) => format!("≤ {}", format_ratio(max)),
                        (false, None) => "–".to_string(),
                    },
                    match k.within_target {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "open",
                    },
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {first} | {ratio} | {range} | {within} |",
                cell(&c.mode),
                format_rate(c.ceiling as f64),
            );
        }
    }
    out
}

/// The latency axis: whole decades around every plottable value.
fn latency_range(results: &[LatencyResult]) -> (f64, f64) {
    let values = results
        .iter()
        .flat_map(latencies)
        .filter_map(plottable)
        .collect::<Vec<_>>();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        return (1.0, 1_000.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// Where a latency sits on the log axis, if it can be drawn.
fn plottable(us: f64) -> Option<f64> {
    (us.is_finite() && us >= 0.0).then(|| us.max(FLOOR_US))
}

/// Writes an SVG percentile plot to `path`: a grid with a row per workload
/// and a panel per target rate; in each panel latency (log scale) at p50,
/// p99, p99.9 and max, one line per mode, with a legend. Modes keep their
/// colour across panels; a mode that did not hold its rate says so in the
/// legend. Empty input gives a plot that says there is nothing to show.
///
/// # Errors
/// Creating the parent directory or writing the file failed.
pub fn write_svg(results: &[LatencyResult], path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw(results, path).with_context(|| format!("writing latency plot {}", path.display()))
}

fn draw(results: &[LatencyResult], path: &Path) -> anyhow::Result<()> {
    let groups = group(results);
    let rows = groups.len().max(1);
    let cols = groups.iter().map(|g| g.rates.len()).max().unwrap_or(1);
    let size = (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + TITLE_HEIGHT);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let title = if results.is_empty() {
        "no latency results"
    } else {
        "End-to-end latency by percentile (log scale)"
    };
    let body = root.titled(title, ("sans-serif", 24))?;

    let mut modes: Vec<&str> = Vec::new();
    for r in results {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let color = |mode: &str| {
        let i = modes.iter().position(|m| *m == mode).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let (lo, hi) = latency_range(results);

    let panels = body.split_evenly((rows, cols));
    for (row, g) in groups.iter().enumerate() {
        for (col, (rate, cells)) in g.rates.iter().enumerate() {
            let area = &panels[row * cols + col];
            let caption = format!("{} at {}", g.workload, format_rate(*rate as f64));
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(
                    (0..PERCENTILES.len() as i32 - 1).into_segmented(),
                    (lo..hi).log_scale(),
                )?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(PERCENTILES.len())
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => PERCENTILES
                        .get(*i as usize)
                        .copied()
                        .unwrap_or("")
                        .to_string(),
                    SegmentValue::Last => String::new(),
                })
                .y_label_formatter(&|us| format_latency(*us))
                .x_desc("percentile")
                .y_desc("latency")
                .draw()?;
            for r in cells {
                let c = color(&r.mode);
                let points: Vec<(SegmentValue<i32>, f64)> = latencies(r)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, us)| {
                        plottable(us).map(|y| (SegmentValue::CenterOf(i as i32), y))
                    })
                    .collect();
                let label = if r.sustained {
                    r.mode.clone()
                } else {
                    format!(
                        "{} (not sustained: {})",
                        r.mode,
                        format_rate(r.achieved_rate)
                    )
                };
                chart
                    .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 14))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        workload: &str,
        mode: &str,
        rate: u64,
        p50_us: f64,
        sustained: bool,
    ) -> LatencyResult {
        LatencyResult {
            workload: workload.to_string(),
            mode: mode.to_string(),
            rate,
            p50_us,
            p99_us: p50_us * 4.0,
            p999_us: p50_us * 40.0,
            max_us: p50_us * 400.0,
            achieved_rate: if sustained {
                rate as f64 * 0.999
            } else {
                rate as f64 * 0.5
            },
            sustained,
            output_rate: 0.0,
            sender: None,
            malformed: None,
        }
    }

    fn sample() -> Vec<LatencyResult> {
        vec![
            result("w2-keyed-count", "continuous", 1_000_000, 45.0, true),
            result("w1-passthrough", "continuous", 1_000_000, 8.26, true),
            result("w1-passthrough", "micro-batch", 1_000_000, 2_500.0, false),
            result("w1-passthrough", "continuous", 100_000, 6.0, true),
            result("w1-passthrough", "micro-batch", 100_000, 260.0, true),
        ]
    }

    #[test]
    fn markdown_groups_by_workload_then_rate() {
        let expected = "\
### w2-keyed-count

| mode | rate | p50 | p99 | p99.9 | max | achieved rate | sustained |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |
| continuous | 1M/s | 45 µs | 180 µs | 1.80 ms | 18.0 ms | 999k/s | yes |

### w1-passthrough

| mode | rate | p50 | p99 | p99.9 | max | achieved rate | sustained |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |
| continuous | 100k/s | 6.0 µs | 24 µs | 240 µs | 2.40 ms | 99.9k/s | yes |
| micro-batch | 100k/s | 260 µs | 1.04 ms | 10.4 ms | 104 ms | 99.9k/s | yes |
| continuous | 1M/s | 8.3 µs | 33 µs | 330 µs | 3.30 ms | 999k/s | yes |
| micro-batch | 1M/s | 2.50 ms | 10.0 ms | 100 ms | 1.00 s | 500k/s | no |
";
        assert_eq!(markdown_table(&sample()), expected);
    }

    #[test]
    fn markdown_handles_empty_and_odd_values() {
        assert_eq!(markdown_table(&[]), "*no latency results*\n");
        let mut r = result("w|1", "a|b", 500, f64::NAN, false);
        r.max_us = -1.0;
        r.achieved_rate = f64::INFINITY;
        let table = markdown_table(&[r]);
        assert!(
            table.contains("| a\\|b | 500/s | – | – | – | – | – | no |"),
            "{table}"
        );
    }

    #[test]
    fn formats_latencies_and_rates() {
        let lat = [0.0, 3.24, 9.96, 999.4, 999.6, 12_345.0, 999_960.0, 2.5e6];
        assert_eq!(
            lat.map(format_latency),
            ["0.0 µs", "3.2 µs", "10 µs", "999 µs", "1.00 ms", "12.3 ms", "1.00 s", "2.50 s"]
        );
        let rates = [
            0.0, 500.0, 1_000.0, 1_500.0, 99_812.0, 250_000.0, 1.5e6, 12e6,
        ];
        assert_eq!(
            rates.map(format_rate),
            ["0/s", "500/s", "1k/s", "1.5k/s", "99.8k/s", "250k/s", "1.5M/s", "12M/s"]
        );
    }

    fn ceiling(workload: &str, mode: &str, ceiling: u64, hi: Option<u64>) -> Ceiling {
        Ceiling {
            workload: workload.to_string(),
            mode: mode.to_string(),
            ceiling,
            first_unsustained: hi,
        }
    }

    #[test]
    fn ceiling_tables_per_workload() {
        let cs = [
            ceiling("w1-passthrough", "continuous", 32_000_000, None),
            ceiling(
                "w1-passthrough",
                "microbatch-10ms",
                16_000_000,
                Some(19_000_000),
            ),
            ceiling("w1-passthrough", "microbatch-100ms", 32_000_000, None),
            ceiling(
                "w1-passthrough",
                "microbatch-1000ms",
                26_900_000,
                Some(32_000_000),
            ),
            ceiling("w2-keyed-count", "continuous", 19_000_000, Some(22_600_000)),
            ceiling("w2-keyed-count", "microbatch-10ms", 0, Some(2_000_000)),
        ];
        let expected = "\
### Throughput ceilings

Ceiling: the highest rate sustained (output at 95% of the input rate or more); the true ceiling lies below the first rate not sustained. Ratio: the continuous ceiling over this mode's; range: the ratios the two brackets allow.

#### w1-passthrough

| mode | ceiling | first not sustained | continuous / mode | range | within 1.5x |
| --- | ---: | ---: | ---: | :---: | :---: |
| continuous | 32M/s | none (top of grid) | – | – | – |
| microbatch-10ms | 16M/s | 19M/s | 2.00x | ≥ 1.68x | no |
| microbatch-100ms | 32M/s | none (top of grid) | 1.00x | – | open |
| microbatch-1000ms | 26.9M/s | 32M/s | 1.19x | ≥ 1.00x | open |

#### w2-keyed-count

| mode | ceiling | first not sustained | continuous / mode | range | within 1.5x |
| --- | ---: | ---: | ---: | :---: | :---: |
| continuous | 19M/s | 22.6M/s | – | – | – |
| microbatch-10ms | 0/s | 2M/s | – | ≥ 9.50x | no |
";
        assert_eq!(ceiling_tables(&cs), expected);
        assert_eq!(
            ceiling_tables(&[]),
            "### Throughput ceilings\n\n*no ceiling results*\n"
        );
    }

    #[test]
    fn writes_an_svg_naming_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plots").join("latency.svg");
        write_svg(&sample(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        for name in [
            "continuous",
            "micro-batch",
            "w1-passthrough",
            "w2-keyed-count",
            "p99.9",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn svg_survives_empty_single_and_degenerate_input() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.svg");
        write_svg(&[], &empty).unwrap();
        assert!(std::fs::read_to_string(&empty)
            .unwrap()
            .contains("no latency results"));

        let mut r = result("w1", "only", 10, 0.0, true);
        r.p99_us = f64::NAN;
        r.max_us = f64::INFINITY;
        let single = dir.path().join("single.svg");
        write_svg(&[r], &single).unwrap();
        let svg = std::fs::read_to_string(&single).unwrap();
        assert!(svg.contains("only") && !svg.contains("NaN"));
    }
}
