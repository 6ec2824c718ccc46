//! `eddy demo iot --kafka`: the window aggregates and the alerts also go,
//! exactly once, to two Kafka topics on a real broker (noida-db on a
//! loopback port). A `read_committed` consumer of each topic sees exactly
//! the lines the exactly-once files committed: no record missing, none
//! twice, none from an aborted transaction.

use std::path::Path;
use std::time::Duration;

use eddy::connectors::kafka::admin::{self, Isolation};
use eddy::prelude::*;
use eddy_cli::demo::query::{Outputs, KAFKA_ALERTS_TOPIC, KAFKA_WINDOWS_TOPIC};
use eddy_cli::demo::IotArgs;

mod kafka_support;
use kafka_support::Broker;

fn sorted_committed(dir: &Path) -> Vec<String> {
    let mut lines = FileSink::<()>::read_committed(dir).unwrap();
    lines.sort();
    lines
}

fn sorted_topic(brokers: &str, topic: &str) -> Vec<String> {
    let mut lines: Vec<String> = admin::read_topic(
        brokers,
        topic,
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    )
    .unwrap()
    .iter()
    .map(|r| r.value_lossy().to_string())
    .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_the_topics_hold_exactly_the_committed_windows_and_alerts() {
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let args = IotArgs {
        seed: 5,
        sensors: 150,
        seconds: 40,
        // 60,000 readings over 3 s: epochs of 200 ms, so several
        // transactions per topic.
        rate: 20_000,
        dir: dir.path().to_path_buf(),
        parallelism: 2,
        interval_ms: 200,
        fault_share: 0.1,
        quiet: true,
        kafka: Some(brokers.clone()),
        ..Default::default()
    };
    let summary = eddy_cli::demo::run_iot(&args).await.unwrap();
    assert!(
        summary.checkpoints >= 2,
        "{} checkpoints",
        summary.checkpoints
    );

    let windows = sorted_committed(&Outputs::windows(dir.path()));
    let alerts = sorted_committed(&Outputs::alerts(dir.path()));
    assert!(!windows.is_empty() && !alerts.is_empty());
    let (b, w, a) = (brokers.clone(), KAFKA_WINDOWS_TOPIC, KAFKA_ALERTS_TOPIC);
    let (in_windows, in_alerts) =
        tokio::task::spawn_blocking(move || (sorted_topic(&b, w), sorted_topic(&b, a)))
            .await
            .unwrap();
    assert_eq!(in_windows, windows);
    assert_eq!(in_alerts, alerts);
}
