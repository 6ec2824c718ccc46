//! Fixed-point decimal text for the demo's output lines.
//!
//! The window-aggregate sink writes three floats per window, and `format!`
//! with a precision (`{:.3}`) takes core's exact-rounding path (Grisu, then
//! Dragon on its fallback): about 6 % of the demo's CPU at 300 k readings/s,
//! spent in the burst of 3,000 windows every watermark closes. Scaling to an
//! integer and writing its digits avoids that path. The text
//! is the same as `{:.N}`'s except at exact ties of the scaled value, where
//! the product's own rounding decides, and for a negative value that
//! rounds to zero, written without its sign; every run writes the same
//! text for the same value.

use std::fmt::Write;

/// Appends `v` with `decimals` digits after the point (at most 9).
pub fn push_fixed(out: &mut String, v: f64, decimals: u32) {
    let decimals = decimals.min(9);
    let scale = 10f64.powi(decimals as i32);
    let scaled = (v * scale).round();
    // Beyond 2^53 the integer is not exact; NaN and infinities have no
    // digits: both take the formatter.
    if !scaled.is_finite() || scaled.abs() >= 9.0e15 {
        let _ = write!(out, "{v:.prec$}", prec = decimals as usize);
        return;
    }
    let n = scaled as i64;
    if n < 0 {
        out.push('-');
    }
    let n = n.unsigned_abs();
    let unit = 10u64.pow(decimals);
    let _ = write!(out, "{}", n / unit);
    if decimals > 0 {
        let _ = write!(out, ".{:0width$}", n % unit, width = decimals as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn fixed(v: f64, d: u32) -> String {
        let mut s = String::new();
        push_fixed(&mut s, v, d);
        s
    }

    #[test]
    fn small_cases() {
        assert_eq!(fixed(1.0, 3), "1.000");
        assert_eq!(fixed(-2.5, 2), "-2.50");
        assert_eq!(fixed(0.0004, 3), "0.000");
        assert_eq!(fixed(-0.0006, 3), "-0.001");
        assert_eq!(fixed(123.4567, 0), "123");
        assert_eq!(fixed(f64::NAN, 3), "NaN");
        assert_eq!(fixed(1e300, 1), format!("{:.1}", 1e300));
    }

    /// Equal to `{:.N}` on random values, except exactly at ties of the
    /// scaled value (where the text may differ in its last digit).
    #[test]
    fn matches_the_formatter_away_from_ties() {
        let seed = 0x5eed_d3c1;
        println!("seed {seed:#x}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200_000 {
            let v: f64 = rng.random_range(-2_000.0..2_000.0);
            let d = rng.random_range(0..=4u32);
            let scaled = v * 10f64.powi(d as i32);
            if (scaled.fract().abs() - 0.5).abs() < 1e-6 {
                continue;
            }
            let want = format!("{v:.prec$}", prec = d as usize);
            let want = if want
                .trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                want.trim_start_matches('-').to_string()
            } else {
                want
            };
            assert_eq!(fixed(v, d), want, "{v} at {d} decimals");
        }
    }
}
