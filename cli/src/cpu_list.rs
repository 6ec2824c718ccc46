//! Which CPUs a process runs on: `eddy --cpus LIST` pins the `eddy`
//! process (the engine's workers, or `eddy loadgen`'s sender) to chosen
//! CPUs, and leaves the others to the rest of the machine.
//!
//! On a small machine this is what keeps the latency tail short: the
//! threads a record crosses stay on cores the kernel's housekeeping threads
//! (memory reclaim, workqueues, RCU) are not placed on, as those go to the
//! idle cores, and a record handed from one pinned thread to another is a
//! wake-up on the same run queue. On the project's 2-core VM, whose kernel
//! does not preempt kernel code, a housekeeping thread held a core for up
//! to 15 ms, and a thread it displaced waited a 4 ms balancing tick for the
//! other core (docs/benchmarks-latency-tail.md, session 18).

use std::fmt;
use std::io;
use std::str::FromStr;

use rustix::thread::CpuSet;

/// A set of CPUs, written as `taskset -c` takes it: `1`, `0,2`, `2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The CPUs, ascending, each once.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// Pins the calling thread, and so every thread it starts afterwards,
    /// to these CPUs: call it before the runtime starts its workers.
    ///
    /// # Errors
    /// A CPU listed is not one the process may run on (offline, absent, or
    /// outside the set it was started with), or the kernel refuses the set.
    pub fn pin_current_thread(&self) -> io::Result<()> {
        let allowed = rustix::thread::sched_getaffinity(None)?;
        if let Some(&cpu) = self.0.iter().find(|&&c| !allowed.is_set(c)) {
            let usable: Vec<String> = (0..CpuSet::MAX_CPU)
                .filter(|&c| allowed.is_set(c))
                .map(|c| c.to_string())
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "CPU {cpu} is not one this process may run on (those are {})",
                    usable.join(",")
                ),
            ));
        }
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            set.set(cpu);
        }
        rustix::thread::sched_setaffinity(None, &set).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pinning to CPUs {self}: {e}"),
            )
        })
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let cpu = |t: &str| -> Result<usize, String> {
            let n: usize = t
                .trim()
                .parse()
                .map_err(|_| format!("`{t}` is not a CPU number in `{s}`"))?;
            if n >= CpuSet::MAX_CPU {
                return Err(format!(
                    "CPU {n} is past the last one ({})",
                    CpuSet::MAX_CPU - 1
                ));
            }
            Ok(n)
        };
        let mut cpus = Vec::new();
        for part in s.split(',') {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (cpu(lo)?, cpu(hi)?);
                    if lo > hi {
                        return Err(format!("the range `{part}` runs backwards"));
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(cpu(part)?),
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cpu) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_taskset_takes() {
        let l: CpuList = "3,0-1,1".parse().unwrap();
        assert_eq!(l.cpus(), &[0, 1, 3]);
        assert_eq!(l.to_string(), "0,1,3");
        assert_eq!(l.to_string().parse::<CpuList>().unwrap(), l, "round trip");
    }

    #[test]
    fn refuses_what_is_not_a_cpu_list() {
        for bad in ["", "a", "1,", "2-1", "-1", "1-", "100000"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn pins_a_thread_to_one_of_its_cpus() {
        // On a thread of its own, so the test harness's threads keep theirs.
        let allowed = rustix::thread::sched_getaffinity(None).unwrap();
        let first = (0..CpuSet::MAX_CPU).find(|&c| allowed.is_set(c)).unwrap();
        let list: CpuList = first.to_string().parse().unwrap();
        std::thread::spawn(move || {
            list.pin_current_thread().unwrap();
            let now = rustix::thread::sched_getaffinity(None).unwrap();
            assert_eq!(now.count(), 1);
            assert!(now.is_set(first));
            // A thread started afterwards inherits the set.
            std::thread::spawn(move || {
                let child = rustix::thread::sched_getaffinity(None).unwrap();
                assert_eq!(child.count(), 1);
                assert!(child.is_set(first));
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_offline_cpu_is_a_clear_error() {
        let allowed = rustix::thread::sched_getaffinity(None).unwrap();
        let Some(off) = (0..CpuSet::MAX_CPU).rev().find(|&c| !allowed.is_set(c)) else {
            return; // every CPU the set can name is usable: nothing to refuse
        };
        let list: CpuList = off.to_string().parse().unwrap();
        let err = std::thread::spawn(move || list.pin_current_thread())
            .join()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains(&off.to_string()), "{err}");
    }
}
