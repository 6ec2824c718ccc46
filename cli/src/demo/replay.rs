//! `eddy demo iot --replay FILE`: the demo's query over a recorded series
//! instead of the simulated fleet.
//!
//! The file is CSV: a time and a value per line (further columns are
//! ignored), the time in RFC 3339 (`2022-03-20T11:00:00+01:00`, `Z` or an
//! offset, optional fraction) or as integer milliseconds since the Unix
//! epoch; a first line that is not a reading is a header. Lines that do
//! not parse are skipped and counted. The series is one sensor (id
//! [`SERIES_SENSOR`], kind [`SensorKind::Series`]: no threshold row, no
//! noise floor); the query runs at the series' own scale — its median
//! reporting period ([`Scale`]) — so an hourly series gets 10 h windows,
//! a 5 h watermark bound, 20 h of silence and 100 h of deduplication.
//! The series has no labelled faults, so its alerts are listed, not
//! scored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::fleet::{Reading, SensorKind, SERIES_SENSOR};
use super::query::Scale;
use super::rules::{Alert, Rule};
use eddy::runtime::record::Timestamp;

/// A recorded series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its readings, in file order.
    pub readings: Vec<Reading>,
    /// Lines skipped: they did not parse.
    pub skipped: usize,
    /// The median gap between consecutive readings, ms (at least 1).
    pub period_ms: i64,
}

impl Series {
    /// The query's scale for this series.
    pub fn scale(&self) -> Scale {
        Scale {
            period_ms: self.period_ms,
        }
    }

    /// The end of its event time: its newest reading's time plus one.
    pub fn horizon(&self) -> Timestamp {
        self.readings
            .iter()
            .map(|r| r.ts)
            .max()
            .map_or(i64::MIN, |t| t.saturating_add(1))
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time
/// (`YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`, `T` or a space) or of an integer.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = first3.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    secs.checked_mul(1_000)?.checked_add(millis)
}

/// `ms` as a UTC time, `YYYY-MM-DDTHH:MMZ`.
pub fn format_time(ms: Timestamp) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, mi) = (rem / 3_600_000, rem / 60_000 % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}Z")
}

/// The reading of a `time,value[,...]` line.
fn parse_line(line: &str) -> Option<Reading> {
    let mut f = line.split(',');
    let ts = parse_time(f.next()?)?;
    let value: f64 = f.next()?.trim().parse().ok()?;
    value.is_finite().then_some(Reading {
        sensor: SERIES_SENSOR,
        ts,
        value,
    })
}

/// Parses a series from CSV text (see the module docs).
pub fn parse_series(text: &str) -> Series {
    let mut readings = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(r) => readings.push(r),
            None if i == 0 => {} // a header
            None => skipped += 1,
        }
    }
    let mut gaps: Vec<i64> = readings
        .windows(2)
        .map(|w| w[1].ts - w[0].ts)
        .filter(|&g| g > 0)
        .collect();
    gaps.sort_unstable();
    // The lower median: a few long gaps (outages) do not stretch it.
    let period_ms = gaps
        .get(gaps.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(1)
        .max(1);
    Series {
        readings,
        skipped,
        period_ms,
    }
}

/// Reads a series from `path`.
///
/// # Errors
/// The file cannot be read, or holds no reading.
pub fn read_series(path: &Path) -> anyhow::Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let series = parse_series(&text);
    anyhow::ensure!(
        !series.readings.is_empty(),
        "{}: no line of `time,value` readings",
        path.display()
    );
    Ok(series)
}

/// What a replay committed.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// The file.
    pub file: PathBuf,
    /// Readings replayed.
    pub readings: usize,
    /// Lines skipped.
    pub skipped: usize,
    /// The scale's period, ms.
    pub period_ms: i64,
    /// Window aggregates committed.
    pub windows: usize,
    /// Late readings committed from the side output.
    pub late_readings: usize,
    /// The alerts committed, in event-time order.
    pub alerts: Vec<Alert>,
}

impl ReplaySummary {
    /// Alerts of `rule`.
    pub fn count(&self, rule: Rule) -> usize {
        self.alerts.iter().filter(|a| a.rule == rule).count()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = Scale {
            period_ms: self.period_ms,
        };
        writeln!(
            f,
            "\nreplay of {}: {} readings ({} lines skipped), period {} s: windows of {} s",
            self.file.display(),
            self.readings,
            self.skipped,
            self.period_ms / 1000,
            scale.window_ms() / 1000
        )?;
        writeln!(
            f,
            "window aggregates committed: {}, late readings: {}",
            self.windows, self.late_readings
        )?;
        let per_rule: Vec<String> = Rule::ALL
            .iter()
            .map(|&r| format!("{} {}", r.name(), self.count(r)))
            .collect();
        writeln!(f, "alerts committed: {}", per_rule.join(", "))?;
        for a in &self.alerts {
            writeln!(
                f,
                "  {}  {:<9} {:>10.3}",
                format_time(a.ts),
                a.rule.name(),
                a.value
            )?;
        }
        write!(
            f,
            "(a recorded series has no labelled faults: alerts are listed, not scored; the \
             kind {} has no threshold row)",
            SensorKind::Series.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc_3339_or_milliseconds() {
        let t = parse_time("2022-03-20T11:00:00+01:00").unwrap();
        assert_eq!(t, 1_647_770_400_000);
        assert_eq!(parse_time("2022-03-20T10:00:00Z"), Some(t));
        assert_eq!(parse_time("2022-03-20 10:00:00.250Z"), Some(t + 250));
        assert_eq!(parse_time("1647770400000"), Some(t));
        assert_eq!(format_time(t), "2022-03-20T10:00Z");
        assert_eq!(format_time(0), "1970-01-01T00:00Z");
        for bad in [
            "",
            "Time",
            "2022-13-20T10:00:00Z",
            "2022-03-20T10:00:00",
            "2022-03-20T10:00:00+1",
            "2022-03-20T1x:00:00Z",
            "2022-03-20T10:00:00.Z",
            "é022-03-20T10:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_series_skips_its_header_and_bad_lines() {
        let s = parse_series(
            "Time,Water flow [l/s]\n2022-03-20T11:00:00+01:00,100.5\nnonsense\n\n\
             2022-03-20T12:00:00+01:00,101\n2022-03-20T13:00:00+01:00,NaN\n\
             2022-03-20T14:00:00+01:00,99.5,extra\n",
        );
        assert_eq!(s.readings.len(), 3);
        assert_eq!(s.skipped, 2);
        assert_eq!(s.period_ms, 3_600_000);
        assert_eq!(s.scale().window_ms(), 36_000_000);
        assert_eq!(s.horizon(), s.readings[2].ts + 1);
        assert!(s.readings.iter().all(|r| r.sensor == SERIES_SENSOR));
    }
}
