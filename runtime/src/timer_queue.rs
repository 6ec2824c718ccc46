//! One clock's pending timers, in firing order: by time, then by a stable
//! hash of the key, then by the key.
//!
//! # Why buckets by time
//! A keyed operator with a timer per record registers timers a fixed delay
//! after each record's time, so nearly every registration lands within a
//! few milliseconds of the latest one, a few dozen per millisecond and
//! instance. One ordered map over `(time, hash, key)` (the first form of
//! this service) walked six levels of nodes holding 40-byte keys for every
//! registration and shifted leaves on every insert: a third of the keyed
//! process benchmark. Here an ordered map over the time alone (a few
//! thousand distinct milliseconds, 8-byte keys) leads to the bucket of that
//! time, and a small bucket is a vector kept sorted (binary search, a
//! short shift). A bucket that grows past [`SMALL`] timers (a window's end,
//! which every key of the window registers) becomes an ordered map of its
//! own, so registering there stays logarithmic.
//!
//! Every timer carries a `u64` the owner uses (the generation it was
//! registered in).

use std::collections::btree_map::{BTreeMap, Entry};
use std::hash::Hasher;

use crate::record::Timestamp;
use crate::timer_key::TimerKey;

/// A timer in a queue: its time, a stable hash of its encoded key, the
/// key. Comparing two timers of one time almost never reaches the key
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) time: Timestamp,
    pub(crate) hash: u64,
    pub(crate) key: TimerKey,
}

impl Slot {
    /// The timer at `time` for the encoded `key`.
    pub(crate) fn new(time: Timestamp, key: &[u8]) -> Self {
        let mut h = crate::keys::StableHasher::default();
        h.write(key);
        h.write_usize(key.len());
        Self {
            time,
            hash: h.finish(),
            key: TimerKey::new(key),
        }
    }

    /// Its order among the timers of its time.
    fn rank(&self) -> (u64, &[u8]) {
        (self.hash, &self.key)
    }
}

/// The most timers a bucket keeps in a sorted vector.
const SMALL: usize = 64;

/// A timer of a bucket and its owner's value.
struct Queued {
    hash: u64,
    key: TimerKey,
    value: u64,
}

impl Queued {
    fn rank(&self) -> (u64, &[u8]) {
        (self.hash, &self.key)
    }
}

/// The timers of one time.
enum Bucket {
    /// Sorted by `(hash, key)` *descending*, so the next to fire is last
    /// and pops without a shift.
    Small(Vec<Queued>),
    /// Past [`SMALL`] timers.
    Large(BTreeMap<(u64, TimerKey), u64>),
}

impl Bucket {
    fn len(&self) -> usize {
        match self {
            Bucket::Small(v) => v.len(),
            Bucket::Large(m) => m.len(),
        }
    }

    /// Where `slot` is, or would be, in a small bucket.
    fn search(v: &[Queued], slot: &Slot) -> Result<usize, usize> {
        // Descending: an entry ranked above the probe comes before it.
        v.binary_search_by(|q| slot.rank().cmp(&q.rank()))
    }

    fn get_mut(&mut self, slot: &Slot) -> Option<&mut u64> {
        match self {
            Bucket::Small(v) => match Self::search(v, slot) {
                Ok(i) => Some(&mut v[i].value),
                Err(_) => None,
            },
            Bucket::Large(m) => m.get_mut(&(slot.hash, slot.key.clone())),
        }
    }
}

/// One clock's timers (see the [module docs](self)).
#[derive(Default)]
pub(crate) struct TimerQueue {
    by_time: BTreeMap<Timestamp, Bucket>,
    len: usize,
}

impl TimerQueue {
    /// Adds `slot` with `value`, unless it is queued (then nothing
    /// changes). Whether it was added.
    pub(crate) fn insert_new(&mut self, slot: &Slot, value: u64) -> bool {
        let bucket = self
            .by_time
            .entry(slot.time)
            .or_insert_with(|| Bucket::Small(Vec::new()));
        let added = match bucket {
            Bucket::Small(v) => match Bucket::search(v, slot) {
                Ok(_) => false,
                Err(i) if v.len() < SMALL => {
                    v.insert(
                        i,
                        Queued {
                            hash: slot.hash,
                            key: slot.key.clone(),
                            value,
                        },
                    );
                    true
                }
                Err(_) => {
                    let mut m: BTreeMap<(u64, TimerKey), u64> = std::mem::take(v)
                        .into_iter()
                        .rev()
                        .map(|q| ((q.hash, q.key), q.value))
                        .collect();
                    m.insert((slot.hash, slot.key.clone()), value);
                    *bucket = Bucket::Large(m);
                    true
                }
            },
            Bucket::Large(m) => match m.entry((slot.hash, slot.key.clone())) {
                Entry::Occupied(_) => false,
                Entry::Vacant(e) => {
                    e.insert(value);
                    true
                }
            },
        };
        self.len += usize::from(added);
        added
    }

    /// Removes `slot`; its value, if it was queued.
    pub(crate) fn remove(&mut self, slot: &Slot) -> Option<u64> {
        let Entry::Occupied(mut e) = self.by_time.entry(slot.time) else {
            return None;
        };
        let value = match e.get_mut() {
            Bucket::Small(v) => {
                let i = Bucket::search(v, slot).ok()?;
                v.remove(i).value
            }
            Bucket::Large(m) => m.remove(&(slot.hash, slot.key.clone()))?,
        };
        if e.get().len() == 0 {
            e.remove();
        }
        self.len -= 1;
        Some(value)
    }

    /// The value of `slot`, if queued.
    pub(crate) fn get_mut(&mut self, slot: &Slot) -> Option<&mut u64> {
        self.by_time.get_mut(&slot.time)?.get_mut(slot)
    }

    /// The time of the next timer to fire.
    pub(crate) fn first_time(&self) -> Option<Timestamp> {
        self.by_time.first_key_value().map(|(t, _)| *t)
    }

    /// Removes the next timer to fire, with its value.
    pub(crate) fn pop_first(&mut self) -> Option<(Slot, u64)> {
        let mut e = self.by_time.first_entry()?;
        let time = *e.key();
        let (hash, key, value) = match e.get_mut() {
            Bucket::Small(v) => {
                let q = v.pop().expect("no empty bucket is kept");
                (q.hash, q.key, q.value)
            }
            Bucket::Large(m) => {
                let ((hash, key), value) = m.pop_first().expect("no empty bucket is kept");
                (hash, key, value)
            }
        };
        if e.get().len() == 0 {
            e.remove();
        }
        self.len -= 1;
        Some((Slot { time, hash, key }, value))
    }

    /// The first `n` timers due at `upto`, in firing order, shown to `f`
    /// without removing them.
    pub(crate) fn peek(&self, upto: Timestamp, n: usize, mut f: impl FnMut(Timestamp, &TimerKey)) {
        let mut left = n;
        for (&time, bucket) in self.by_time.range(..=upto) {
            if left == 0 {
                return;
            }
            match bucket {
                Bucket::Small(v) => v.iter().rev().take(left).for_each(|q| f(time, &q.key)),
                Bucket::Large(m) => m.keys().take(left).for_each(|(_, k)| f(time, k)),
            }
            left = left.saturating_sub(bucket.len());
        }
    }

    /// Every timer whose value satisfies `keep`, in time order (within a
    /// time in no fixed order).
    pub(crate) fn for_each_where(&self, keep: impl Fn(u64) -> bool, mut f: impl FnMut(Slot)) {
        for (&time, bucket) in &self.by_time {
            let slot = |hash, key: &TimerKey| Slot {
                time,
                hash,
                key: key.clone(),
            };
            match bucket {
                Bucket::Small(v) => v
                    .iter()
                    .filter(|q| keep(q.value))
                    .for_each(|q| f(slot(q.hash, &q.key))),
                Bucket::Large(m) => m
                    .iter()
                    .filter(|(_, v)| keep(**v))
                    .for_each(|((h, k), _)| f(slot(*h, k))),
            }
        }
    }

    /// Timers queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether none is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    fn slot(time: Timestamp, k: u32) -> Slot {
        Slot::new(time, &k.to_le_bytes())
    }

    /// Order of the model: time, hash, key (the queue's firing order).
    type ModelKey = (Timestamp, u64, Vec<u8>);

    fn model_key(s: &Slot) -> ModelKey {
        (s.time, s.hash, s.key.to_vec())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Timestamp, u32, u64),
        Remove(Timestamp, u32),
        Set(Timestamp, u32, u64),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few times and many keys, so buckets grow past SMALL and shrink.
        prop_oneof![
            6 => (0..4i64, 0..200u32, any::<u64>()).prop_map(|(t, k, v)| Op::Insert(t, k, v)),
            2 => (0..4i64, 0..200u32).prop_map(|(t, k)| Op::Remove(t, k)),
            1 => (0..4i64, 0..200u32, any::<u64>()).prop_map(|(t, k, v)| Op::Set(t, k, v)),
            2 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// The queue behaves as an ordered map over (time, hash, key):
        /// the same membership, values and firing order, across small and
        /// large buckets.
        #[test]
        fn the_queue_is_an_ordered_map(ops in proptest::collection::vec(op(), 1..2000)) {
            let mut q = TimerQueue::default();
            let mut m: Model<ModelKey, u64> = Model::new();
            for op in ops {
                match op {
                    Op::Insert(t, k, v) => {
                        let s = slot(t, k);
                        let fresh = !m.contains_key(&model_key(&s));
                        if fresh {
                            m.insert(model_key(&s), v);
                        }
                        prop_assert_eq!(q.insert_new(&s, v), fresh);
                    }
                    Op::Remove(t, k) => {
                        let s = slot(t, k);
                        prop_assert_eq!(q.remove(&s), m.remove(&model_key(&s)));
                    }
                    Op::Set(t, k, v) => {
                        let s = slot(t, k);
                        match (q.get_mut(&s), m.get_mut(&model_key(&s))) {
                            (Some(a), Some(b)) => {
                                *a = v;
                                *b = v;
                            }
                            (None, None) => {}
                            (a, b) => prop_assert!(false, "queue {a:?}, model {b:?}"),
                        }
                    }
                    Op::Pop => {
                        let mut peeked = Vec::new();
                        q.peek(2, 3, |t, k| peeked.push((t, k.to_vec())));
                        let expected: Vec<_> =
                            m.keys().filter(|k| k.0 <= 2).take(3).map(|k| (k.0, k.2.clone())).collect();
                        prop_assert_eq!(peeked, expected);
                        let popped = q.pop_first().map(|(s, v)| (model_key(&s), v));
                        prop_assert_eq!(popped, m.pop_first());
                    }
                }
                prop_assert_eq!(q.len(), m.len());
                prop_assert_eq!(q.first_time(), m.keys().next().map(|k| k.0));
            }
            let mut seen = Vec::new();
            q.for_each_where(|v| v % 2 == 0, |s| seen.push(model_key(&s)));
            seen.sort();
            let expected: Vec<ModelKey> =
                m.iter().filter(|(_, v)| **v % 2 == 0).map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn a_bucket_past_small_keeps_order_and_membership() {
        let mut q = TimerQueue::default();
        for k in 0..(3 * SMALL as u32) {
            assert!(q.insert_new(&slot(7, k), k as u64));
            assert!(!q.insert_new(&slot(7, k), 0), "a duplicate is not added");
        }
        assert!(q.insert_new(&slot(3, 0), 99));
        assert_eq!(q.len(), 3 * SMALL + 1);
        assert_eq!(q.pop_first().map(|(s, v)| (s.time, v)), Some((3, 99)));
        let mut last = None;
        while let Some((s, _)) = q.pop_first() {
            let rank = (s.hash, s.key.to_vec());
            assert!(
                last.as_ref().is_none_or(|l| *l < rank),
                "in (hash, key) order"
            );
            last = Some(rank);
        }
        assert!(q.is_empty());
    }
}
