//! Backpressure: a fast source into a slow sink keeps the records in flight
//! within the edges' capacities, whatever the source could produce.

use std::time::Duration;

use eddy::prelude::*;

#[derive(Clone)]
struct SlowSink;

impl Sink<u64> for SlowSink {
    fn write(&mut self, records: Vec<Record<u64>>) -> Result<(), OperatorError> {
        std::thread::sleep(Duration::from_micros(20) * records.len() as u32);
        Ok(())
    }
}

#[test]
fn in_flight_records_stay_within_edge_capacities() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = PipelineConfig {
            batch_size: 64,
            channel_capacity: 4,
            ..Default::default()
        };
        let p = Pipeline::with_config(config.clone());
        p.source("gen", GeneratorSource::new(GeneratorConfig::default()))
            .map(|e: GenEvent| e.seq)
            .sink("slow", SlowSink);
        let mut q = p.start().unwrap();
        let bound = q.progress().max_in_flight_records;
        // Two edges (gen -> map -> slow), each its channel plus one batch at
        // either end.
        assert_eq!(bound, 2 * (4 + 2) * 64);
        let mut max_seen = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let pr = q.progress();
            let in_flight = pr.input_rows - pr.output_rows;
            max_seen = max_seen.max(in_flight);
            assert!(
                in_flight <= bound,
                "{in_flight} records in flight, bound {bound}"
            );
            assert!(pr.queued_records <= 2 * (4 + 1) * 64);
        }
        let pr = q.progress();
        assert!(pr.output_rows > 0, "the sink made progress");
        // The source was held back: it is not running ahead of the sink.
        assert!(pr.input_rows <= pr.output_rows + bound);
        assert!(max_seen > 0);
        q.stop().await.unwrap();
    });
}
