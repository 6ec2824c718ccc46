//! The timer service's tests: firing order, deduplication, the two
//! clocks, and what each flush writes and a restore reads back.

use super::*;
use eddy_checkpoint::SharedBackend;

fn key(k: u32) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_into(&k, &mut out).unwrap();
    out
}

fn drain(s: &mut TimerService, domain: TimeDomain, upto: Timestamp) -> Vec<(Timestamp, u32)> {
    let mut fired = Vec::new();
    while let Some(t) = s.pop_due(domain, upto).unwrap() {
        fired.push((t.time, t.key::<u32>().unwrap()));
    }
    fired
}

#[test]
fn timers_fire_in_time_order_and_only_when_due() {
    let mut s = TimerService::in_memory();
    for (t, k) in [(30, 1), (10, 2), (20, 3), (10, 1)] {
        s.register(TimeDomain::EventTime, t, &key(k)).unwrap();
    }
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 5), vec![]);
    let mut due = drain(&mut s, TimeDomain::EventTime, 20);
    assert!(due.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
    due.sort();
    assert_eq!(due, vec![(10, 1), (10, 2), (20, 3)]);
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(30, 1)]);
    assert!(s.is_empty());
}

/// Timers of one time fire in an order fixed by their keys: the same
/// for two services registered in different orders, and after a
/// restore from the backend.
#[test]
fn timers_of_one_time_fire_in_the_same_order_in_every_run() {
    let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
    let mut a = TimerService::open(Box::new(shared.clone())).unwrap();
    let mut b = TimerService::in_memory();
    for k in 0..100u32 {
        a.register(TimeDomain::EventTime, 7, &key(k)).unwrap();
        b.register(TimeDomain::EventTime, 7, &key(99 - k)).unwrap();
    }
    a.begin_flush().unwrap();
    while !a.flush_step(usize::MAX).unwrap() {}
    let mut restored = TimerService::open(Box::new(shared)).unwrap();
    let order = drain(&mut a, TimeDomain::EventTime, 7);
    assert_eq!(order.len(), 100);
    assert_eq!(drain(&mut b, TimeDomain::EventTime, 7), order);
    assert_eq!(drain(&mut restored, TimeDomain::EventTime, 7), order);
}

#[test]
fn timers_are_deduplicated_and_deletable() {
    let mut s = TimerService::in_memory();
    s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
    s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
    s.register(TimeDomain::EventTime, 11, &key(1)).unwrap();
    assert_eq!(s.len(), 2);
    s.delete(TimeDomain::EventTime, 11, &key(1)).unwrap();
    s.delete(TimeDomain::EventTime, 99, &key(1)).unwrap();
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 100), vec![(10, 1)]);
}

/// Peeking shows the next due timers in firing order and removes
/// none.
#[test]
fn peek_shows_the_next_due_timers_without_removing_them() {
    let mut s = TimerService::in_memory();
    for (t, k) in [(30, 1), (10, 2), (20, 3), (10, 1), (5, 9)] {
        s.register(TimeDomain::EventTime, t, &key(k)).unwrap();
    }
    s.register(TimeDomain::ProcessingTime, 1, &key(7)).unwrap();
    let mut peeked = Vec::new();
    s.peek_due(TimeDomain::EventTime, 20, 3, &mut peeked);
    let peeked: Vec<(Timestamp, u32)> = peeked
        .iter()
        .map(|t| (t.time, t.key::<u32>().unwrap()))
        .collect();
    assert_eq!(s.len(), 6);
    let fired = drain(&mut s, TimeDomain::EventTime, 20);
    assert_eq!(fired.len(), 4);
    assert_eq!(peeked, fired[..3]);
}

#[test]
fn event_and_processing_time_are_separate_clocks() {
    let mut s = TimerService::in_memory();
    s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
    s.register(TimeDomain::ProcessingTime, 5, &key(2)).unwrap();
    assert_eq!(s.next_time(TimeDomain::ProcessingTime), Some(5));
    assert_eq!(drain(&mut s, TimeDomain::ProcessingTime, 100), vec![(5, 2)]);
    assert_eq!(s.next_time(TimeDomain::EventTime), Some(10));
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
}

#[test]
fn timers_pending_at_a_flush_are_restored_and_later_ones_are_not() {
    let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
    let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
    s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
    s.register(TimeDomain::ProcessingTime, 20, &key(2)).unwrap();
    s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
    // The marker: the flush captures these three, in steps.
    s.begin_flush().unwrap();
    // After the marker: one fires, one is added; the flush still
    // writes the marker-time set (copy on write).
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
    s.register(TimeDomain::EventTime, 40, &key(4)).unwrap();
    while !s.flush_step(1).unwrap() {}
    let mut r = TimerService::open(Box::new(shared.clone())).unwrap();
    assert_eq!(
        drain(&mut r, TimeDomain::EventTime, 100),
        vec![(10, 1), (30, 3)]
    );
    assert_eq!(
        drain(&mut r, TimeDomain::ProcessingTime, 100),
        vec![(20, 2)]
    );
}

/// Only each epoch's net change reaches the backend: a timer registered
/// and fired within an epoch is never written; one that was written,
/// fired, registered again and fired again is deleted.
#[test]
fn only_the_net_change_of_an_epoch_is_written() {
    let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
    let rows = |b: &SharedBackend| {
        let mut n = 0;
        b.scan_prefix(PREFIX, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        n
    };
    let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
    s.register(TimeDomain::EventTime, 10, &key(1)).unwrap();
    s.register(TimeDomain::EventTime, 20, &key(2)).unwrap();
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 10), vec![(10, 1)]);
    s.begin_flush().unwrap();
    while !s.flush_step(usize::MAX).unwrap() {}
    assert_eq!(rows(&shared), 1, "only (20, 2) was written");
    // (20, 2) fires, comes back, fires again: deleted.
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
    s.register(TimeDomain::EventTime, 20, &key(2)).unwrap();
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 20), vec![(20, 2)]);
    s.begin_flush().unwrap();
    while !s.flush_step(1).unwrap() {}
    assert_eq!(rows(&shared), 0);
    // Fired and registered again within an epoch: still there.
    s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
    s.begin_flush().unwrap();
    while !s.flush_step(1).unwrap() {}
    assert_eq!(drain(&mut s, TimeDomain::EventTime, 30), vec![(30, 3)]);
    s.register(TimeDomain::EventTime, 30, &key(3)).unwrap();
    s.begin_flush().unwrap();
    while !s.flush_step(1).unwrap() {}
    let mut r = TimerService::open(Box::new(shared.clone())).unwrap();
    assert_eq!(drain(&mut r, TimeDomain::EventTime, 100), vec![(30, 3)]);
}

/// Without markers the epoch's list of registered timers stays within
/// a bound of the live timers, however many are registered and fired.
#[test]
fn without_markers_the_change_list_stays_bounded() {
    let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
    let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
    for t in 0..1_000_000i64 {
        s.register(TimeDomain::EventTime, t, &key((t % 1000) as u32))
            .unwrap();
        // Re-registering a live timer adds nothing.
        s.register(TimeDomain::EventTime, t, &key((t % 1000) as u32))
            .unwrap();
        if t % 100 == 0 {
            drain(&mut s, TimeDomain::EventTime, t - 50);
        }
    }
    assert!(s.len() <= 150);
    assert!(
        s.added.len() <= 4 * 150,
        "the list holds {} entries for {} live timers",
        s.added.len(),
        s.len()
    );
    // A flush after all that still writes every live timer.
    s.begin_flush().unwrap();
    while !s.flush_step(1000).unwrap() {}
    let mut restored = TimerService::open(Box::new(shared)).unwrap();
    assert_eq!(
        drain(&mut restored, TimeDomain::EventTime, i64::MAX),
        drain(&mut s, TimeDomain::EventTime, i64::MAX)
    );
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Register(bool, Timestamp, u32),
        Delete(bool, Timestamp, u32),
        Pop(bool, Timestamp),
        Marker,
        Step(usize),
    }

    fn domain(processing: bool) -> TimeDomain {
        if processing {
            TimeDomain::ProcessingTime
        } else {
            TimeDomain::EventTime
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (any::<bool>(), 0..20i64, 0..6u32).prop_map(|(d, t, k)| Op::Register(d, t, k)),
            1 => (any::<bool>(), 0..20i64, 0..6u32).prop_map(|(d, t, k)| Op::Delete(d, t, k)),
            2 => (any::<bool>(), 0..25i64).prop_map(|(d, t)| Op::Pop(d, t)),
            1 => Just(Op::Marker),
            2 => (1..6usize).prop_map(Op::Step),
        ]
    }

    type Row = (u8, Timestamp, u32);

    fn stored(b: &SharedBackend) -> BTreeSet<Row> {
        let mut rows = BTreeSet::new();
        b.scan_prefix(PREFIX, &mut |k, _| {
            let (d, t, key): TimerRow = codec::decode_body(&k[PREFIX.len()..])?;
            rows.insert((d, t, codec::decode_body(&key)?));
            Ok(())
        })
        .unwrap();
        rows
    }

    proptest! {
        /// Whatever the interleaving of registrations, deletions,
        /// firings, markers and flush steps: timers fire in time order,
        /// and each completed flush leaves the backend holding exactly
        /// the timers registered at its marker.
        #[test]
        fn completed_flushes_hold_the_timers_of_their_marker(
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let shared = SharedBackend::new(Box::new(eddy_checkpoint::MemoryBackend::new()));
            let mut s = TimerService::open(Box::new(shared.clone())).unwrap();
            let mut live: BTreeSet<Row> = BTreeSet::new();
            let mut at_marker: Option<BTreeSet<Row>> = None;
            for op in ops {
                match op {
                    Op::Register(d, t, k) => {
                        s.register(domain(d), t, &key(k)).unwrap();
                        live.insert((d as u8, t, k));
                    }
                    Op::Delete(d, t, k) => {
                        s.delete(domain(d), t, &key(k)).unwrap();
                        live.remove(&(d as u8, t, k));
                    }
                    Op::Pop(d, upto) => {
                        let fired = s.pop_due(domain(d), upto).unwrap();
                        let first = live.iter().find(|r| r.0 == d as u8).copied();
                        match fired {
                            Some(timer) => {
                                let k: u32 = timer.key().unwrap();
                                prop_assert_eq!(Some(timer.time), first.map(|r| r.1));
                                prop_assert!(timer.time <= upto);
                                prop_assert!(live.remove(&(d as u8, timer.time, k)));
                            }
                            None => prop_assert!(first.is_none_or(|r| r.1 > upto)),
                        }
                    }
                    Op::Marker => {
                        if let Some(expected) = at_marker.take() {
                            s.flush_step(usize::MAX).unwrap();
                            prop_assert_eq!(&stored(&shared), &expected);
                        }
                        s.begin_flush().unwrap();
                        at_marker = Some(live.clone());
                    }
                    Op::Step(budget) => {
                        if s.flush_step(budget).unwrap() {
                            if let Some(expected) = at_marker.take() {
                                prop_assert_eq!(&stored(&shared), &expected);
                            }
                        }
                    }
                }
                prop_assert_eq!(s.len(), live.len());
            }
            s.flush_step(usize::MAX).unwrap();
            s.begin_flush().unwrap();
            s.flush_step(usize::MAX).unwrap();
            prop_assert_eq!(&stored(&shared), &live);
        }
    }
}
