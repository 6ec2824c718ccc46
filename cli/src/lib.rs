//! # The `eddy` command
//!
//! What the `eddy` binary runs, kept out of the `eddy` library so an
//! embedder does not compile it: the IoT anomaly-detection demo
//! ([`demo`]), the latency and checkpoint benchmark harness ([`bench`](mod@bench),
//! [`checkpoint_bench`], [`report`], [`latency_command`]), the external load generator
//! ([`loadgen`], [`send_lateness`]), the dashboard and Prometheus endpoints ([`dashboard`],
//! [`http`]), the CPUs a process runs on ([`cpu_list`]), and the jobs the crash and recovery tests run as real
//! processes ([`jobs`], [`join_job`], [`dir_job`], [`kafka_job`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod checkpoint_bench;
pub mod cpu_list;
pub mod dashboard;
pub mod demo;
pub mod dir_job;
pub mod http;
pub mod jobs;
pub mod join_job;
pub mod kafka_bench;
pub mod kafka_job;
pub mod latency_command;
pub mod loadgen;
pub mod report;
pub mod send_lateness;
pub mod snapshot_bytes;
