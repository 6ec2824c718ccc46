//! What the property tests (windows, joins, keyed process, dedup) share:
//! a printed, replayable seed and the three triggers every grid runs under.

use std::time::Duration;

use eddy::prelude::Trigger;
use rand::Rng;

/// The seed in the environment variable `var`, or a random one; printed,
/// so that `var=<seed>` replays a failure.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("{var}={seed}");
    seed
}

/// Continuous, micro-batches and available-now, with 5 ms intervals.
pub fn triggers() -> [Trigger; 3] {
    [
        Trigger::continuous(Duration::from_millis(5)),
        Trigger::ProcessingTime(Duration::from_millis(5)),
        Trigger::AvailableNow,
    ]
}
