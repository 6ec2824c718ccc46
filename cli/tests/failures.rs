//! Failures, graceful stop and teardown.

use std::time::Duration;

use eddy::prelude::*;
use eddy::runtime::QueryError;

mod common;
use common::runtime;

fn unbounded() -> GeneratorConfig {
    GeneratorConfig {
        key_space: 100,
        ..Default::default()
    }
}

#[test]
fn a_panicking_map_fails_the_query_naming_the_operator() {
    runtime().block_on(async {
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::new(unbounded()))
            .map(|e: GenEvent| {
                if e.seq == 1000 {
                    panic!("bad record {}", e.seq);
                }
                e.key
            })
            .name("explode")
            .set_parallelism(2)
            .key_by(|k: &u64| *k)
            .count()
            .sink("out", DiscardSink);
        let mut q = p.start().unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), q.await_termination())
            .await
            .expect("a failed query terminates")
            .unwrap_err();
        match err {
            QueryError::OperatorPanicked {
                operator, message, ..
            } => {
                assert_eq!(operator, "explode");
                assert!(message.contains("bad record 1000"), "{message}");
            }
            other => panic!("expected a panic of `explode`, got {other:?}"),
        }
    });
}

#[derive(Clone)]
struct FailAt(u64);

impl Operator<GenEvent, u64> for FailAt {
    fn process(
        &mut self,
        r: Record<GenEvent>,
        out: &mut Collector<'_, u64>,
    ) -> Result<(), OperatorError> {
        if r.value.seq == self.0 {
            return Err(OperatorError::new(format!(
                "cannot parse record {}",
                r.value.seq
            )));
        }
        out.emit(r.value.seq);
        Ok(())
    }
}

#[test]
fn an_operator_error_fails_the_query_naming_operator_and_instance() {
    runtime().block_on(async {
        let p = Pipeline::new();
        p.source("gen", GeneratorSource::new(unbounded()))
            .transform("parse", FailAt(77))
            .sink("out", DiscardSink);
        let err = p.start().unwrap().await_termination().await.unwrap_err();
        assert_eq!(
            err,
            QueryError::OperatorFailed {
                operator: "parse".into(),
                instance: 0,
                message: "cannot parse record 77".into()
            }
        );
    });
}

#[test]
fn stop_drains_everything_in_flight() {
    runtime().block_on(async {
        let p = Pipeline::new();
        eddy_cli::jobs::keyed_count(&p, unbounded(), 2, DiscardSink);
        let mut q = p.start().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(Duration::from_secs(30), q.stop())
            .await
            .expect("stop returns")
            .unwrap();
        let progress = q.progress();
        assert!(progress.input_rows > 0);
        let total = |op: &str, f: fn(&eddy::runtime::query::InstanceProgress) -> u64| -> u64 {
            progress
                .instances
                .iter()
                .filter(|i| i.operator == op)
                .map(f)
                .sum()
        };
        // Nothing was lost between stages: every record a stage emitted was
        // read by the next one.
        assert_eq!(
            total("generator", |i| i.records_out),
            total("map", |i| i.records_in)
        );
        assert_eq!(
            total("map", |i| i.records_out),
            total("count", |i| i.records_in)
        );
        assert_eq!(
            total("count", |i| i.records_out),
            total("sink", |i| i.records_in)
        );
        assert_eq!(progress.input_rows, progress.output_rows);
        assert_eq!(progress.queued_records, 0);
    });
}

#[test]
fn dropping_the_handle_leaves_no_task_behind() {
    let rt = runtime();
    rt.block_on(async {
        let p = Pipeline::new();
        eddy_cli::jobs::keyed_count(&p, unbounded(), 2, DiscardSink);
        let q = p.start().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let metrics = tokio::runtime::Handle::current().metrics();
        assert!(
            metrics.num_alive_tasks() >= 8,
            "2 x (source, map, count, sink) run"
        );
        drop(q);
        let mut alive = usize::MAX;
        for _ in 0..1000 {
            alive = metrics.num_alive_tasks();
            if alive == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(alive, 0, "tasks still alive after the handle was dropped");
    });
}
