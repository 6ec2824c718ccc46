//! The batch answer of an event-time window query, computed from the
//! whole input in sequence order, for tests to compare the engine with.
//!
//! The semantics are Eddy's (docs/event-time.md): a source instance's
//! watermark after records `0..i` is `max ts - bound - 1`, and record `i`
//! is judged against exactly that; a fixed window closes when the watermark
//! reaches `end - 1 + lateness`; a record no open window takes is late; a
//! session overlaps another when `a.start < b.end && b.start < a.end`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub seq: u64,
    pub key: u64,
    pub value: u64,
    pub ts: i64,
}

/// The windows.
#[derive(Debug, Clone, Copy)]
pub enum Spec {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

/// Count, sum and largest value: every aggregation the tests check is a
/// projection of it.
pub type Acc = (u64, u64, u64);

fn add(acc: &mut Acc, v: u64) {
    acc.0 += 1;
    acc.1 += v;
    acc.2 = acc.2.max(v);
}

fn merge(acc: &mut Acc, o: Acc) {
    acc.0 += o.0;
    acc.1 += o.1;
    acc.2 = acc.2.max(o.2);
}

/// Per (key, window start, window end) the aggregate, and the late records.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub rows: BTreeMap<(u64, i64, i64), Acc>,
    pub late: BTreeSet<u64>,
}

fn fixed_windows(spec: Spec, ts: i64) -> Vec<(i64, i64)> {
    let (size, slide) = match spec {
        Spec::Tumbling(s) => (s, s),
        Spec::Sliding(s, sl) => (s, sl),
        Spec::Session(_) => unreachable!(),
    };
    // Every start that is a multiple of `slide` with start <= ts < start + size.
    let mut out = Vec::new();
    let mut start = ts.div_euclid(slide) * slide;
    while start + size > ts {
        out.push((start, start + size));
        start -= slide;
    }
    out
}

/// The answer for `events` (one source instance, in sequence order) with
/// out-of-orderness `bound` and allowed lateness `lateness`.
pub fn answer(events: &[Event], bound: i64, lateness: i64, spec: Spec) -> Answer {
    let mut a = Answer::default();
    let mut max = i64::MIN;
    // Sessions: per key, open sessions (start, end, acc).
    let mut open: BTreeMap<u64, Vec<(i64, i64, Acc)>> = BTreeMap::new();
    for e in events {
        let w = if max == i64::MIN {
            i64::MIN
        } else {
            max - bound - 1
        };
        match spec {
            Spec::Session(gap) => {
                let sessions = open.entry(e.key).or_default();
                // Close what the watermark passed.
                let (closed, still): (Vec<_>, Vec<_>) =
                    sessions.drain(..).partition(|s| s.1 - 1 + lateness <= w);
                for (s, en, acc) in closed {
                    a.rows.insert((e.key, s, en), acc);
                }
                *sessions = still;
                let (s0, e0) = (e.ts, e.ts + gap);
                let overlaps = |s: &(i64, i64, Acc)| s.0 < e0 && s0 < s.1;
                if !sessions.iter().any(overlaps) && e.ts + gap - 1 + lateness <= w {
                    a.late.insert(e.seq);
                } else {
                    let mut m = (s0, e0, (0, 0, 0));
                    add(&mut m.2, e.value);
                    let (hit, rest): (Vec<_>, Vec<_>) = sessions.drain(..).partition(overlaps);
                    for (s, en, acc) in hit {
                        m.0 = m.0.min(s);
                        m.1 = m.1.max(en);
                        merge(&mut m.2, acc);
                    }
                    *sessions = rest;
                    sessions.push(m);
                }
            }
            _ => {
                let mut placed = false;
                for (s, en) in fixed_windows(spec, e.ts) {
                    if en - 1 + lateness <= w {
                        continue;
                    }
                    placed = true;
                    add(a.rows.entry((e.key, s, en)).or_default(), e.value);
                }
                if !placed {
                    a.late.insert(e.seq);
                }
            }
        }
        max = max.max(e.ts);
    }
    for (key, sessions) in open {
        for (s, en, acc) in sessions {
            a.rows.insert((key, s, en), acc);
        }
    }
    a
}
