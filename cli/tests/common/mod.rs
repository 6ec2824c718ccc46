//! Helpers shared by the integration tests.

/// A tokio runtime like a production embedding's on this machine: two
/// worker threads, time and I/O enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
