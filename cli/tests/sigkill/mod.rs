//! The kill loop of the crash tests: start the child, let it run a random
//! while, SIGKILL it, again and again; then one last run to the end.

use std::ops::Range;
use std::process::{Child, Output};
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// The seed from `EDDY_CRASH_SEED`, or a random one; printed with `what`
/// so that a failing run can be replayed.
pub fn seed(what: &str) -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("EDDY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{what}: seed {seed} (EDDY_CRASH_SEED={seed} replays it)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Starts `spawn()` `kills` times, SIGKILLs each run after 100-600 ms
/// (panicking if one ended by itself before its kill), then runs it once
/// more to the end and returns that run's output.
#[allow(dead_code)] // not every crash test uses both kill loops
pub fn kill_then_finish(kills: usize, rng: &mut impl Rng, spawn: impl FnMut() -> Child) -> Output {
    kill_then_finish_after(kills, 100..600, rng, spawn)
}

/// [`kill_then_finish`], each run killed after a random number of ms in
/// `after` (a child whose first checkpoint takes longer needs a later
/// range, or no run would leave one to restore).
pub fn kill_then_finish_after(
    kills: usize,
    after: Range<u64>,
    rng: &mut impl Rng,
    mut spawn: impl FnMut() -> Child,
) -> Output {
    for i in 0..kills {
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(rng.random_range(after.clone())));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
            }
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "run {i} ended by itself before its kill ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let out = spawn().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restored from Some("),
        "the final run restored a checkpoint"
    );
    out
}
