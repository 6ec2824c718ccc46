//! `eddy --cpus LIST` pins the whole process, the runtime's workers and
//! every other thread, to the CPUs listed; the latency harness starts its
//! generator process the same way (`--loadgen-cpus`). Checked on real
//! processes through `/proc/PID/task/*/status`.

use std::path::Path;
use std::process::{Command, Stdio};

use eddy_cli::cpu_list::CpuList;
use eddy_cli::loadgen::{LoadgenProcess, Pacing};

/// The CPUs this test process may run on, as the kernel lists them.
fn allowed_here() -> CpuList {
    cpus_allowed(Path::new("/proc/self/status"))
}

fn cpus_allowed(status: &Path) -> CpuList {
    let text = std::fs::read_to_string(status).expect("read a status file");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line");
    line.trim().parse().expect("the kernel's list parses")
}

/// Every thread of process `pid` and the CPUs it may run on.
fn threads_of(pid: u32) -> Vec<(String, CpuList)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads") {
        let path = task.expect("a thread entry").path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        threads.push((name.trim().to_string(), cpus_allowed(&path.join("status"))));
    }
    threads
}

/// The last CPU this process may use: a pin to it is a visible change
/// wherever more than one is allowed.
fn last_allowed() -> CpuList {
    let last = *allowed_here().cpus().last().expect("at least one CPU");
    last.to_string().parse().unwrap()
}

#[test]
fn the_generator_the_harness_starts_runs_on_the_cpus_given() {
    let cpus = last_allowed();
    let generator = LoadgenProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_eddy")),
        1_000,
        10,
        1,
        Pacing::Hybrid,
        Some(&cpus),
    )
    .expect("start eddy loadgen");
    let threads = threads_of(generator.id());
    // The runtime's workers exist once it listens: more than the main thread.
    assert!(threads.len() > 1, "threads: {threads:?}");
    for (name, allowed) in &threads {
        assert_eq!(allowed, &cpus, "thread {name} may run elsewhere");
    }
}

#[test]
fn without_cpus_the_generator_keeps_the_cpus_it_inherits() {
    let generator = LoadgenProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_eddy")),
        1_000,
        10,
        1,
        Pacing::Hybrid,
        None,
    )
    .expect("start eddy loadgen");
    let here = allowed_here();
    for (name, allowed) in threads_of(generator.id()) {
        assert_eq!(allowed, here, "thread {name}");
    }
}

#[test]
fn a_cpu_the_process_may_not_use_is_refused_by_name() {
    let allowed = allowed_here();
    // The first CPU number past those allowed (which the kernel's set can
    // always name on the machines this runs on).
    let refused = allowed.cpus().last().unwrap() + 1;
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "--cpus",
            &refused.to_string(),
            "loadgen",
            "--addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run eddy");
    assert!(!out.status.success(), "eddy started on CPU {refused}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("CPU {refused} is not one this process may run on")),
        "stderr: {stderr}"
    );
}
