//! Typed per-key state: [`ValueState`], [`ListState`] and [`MapState`].
//!
//! They are plain serde types. A keyed process function's per-key state
//! (its `State` type) is either one of them or a struct with them as
//! fields, so one key can hold a value, a list and a map at once:
//!
//! ```
//! use eddy_operators::process::{ListState, MapState, ValueState};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Alerts {
//!     last_reading: ValueState<f64>,
//!     recent: ListState<f64>,
//!     per_sensor: MapState<String, u64>,
//! }
//!
//! let mut s = Alerts::default();
//! s.last_reading.set(21.5);
//! s.recent.add(21.5);
//! *s.per_sensor.entry("t1".into()).or_default() += 1;
//! assert_eq!(s.last_reading.get(), Some(&21.5));
//! assert_eq!(s.per_sensor.get(&"t1".into()), Some(&1));
//! ```
//!
//! A key's whole state is stored as one entry of the operator's state
//! table and written back when the key's record (or timer) changed it, so
//! keep it small: a list or map of thousands of elements per key is
//! rewritten on every change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One value per key (Flink's `ValueState`, Spark's `GroupState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueState<V>(Option<V>);

impl<V> Default for ValueState<V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<V> ValueState<V> {
    /// The value, if set.
    pub fn get(&self) -> Option<&V> {
        self.0.as_ref()
    }

    /// The value to change in place, if set.
    pub fn get_mut(&mut self) -> Option<&mut V> {
        self.0.as_mut()
    }

    /// Whether a value is set.
    pub fn exists(&self) -> bool {
        self.0.is_some()
    }

    /// Sets the value.
    pub fn set(&mut self, value: V) {
        self.0 = Some(value);
    }

    /// Clears the value and returns it.
    pub fn take(&mut self) -> Option<V> {
        self.0.take()
    }

    /// Clears the value.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The value, set to `init()` first when absent.
    pub fn get_or_insert_with(&mut self, init: impl FnOnce() -> V) -> &mut V {
        self.0.get_or_insert_with(init)
    }
}

/// A list of values per key, in insertion order (Flink's `ListState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListState<V>(Vec<V>);

impl<V> Default for ListState<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> ListState<V> {
    /// Appends a value.
    pub fn add(&mut self, value: V) {
        self.0.push(value);
    }

    /// Appends every value of `values`.
    pub fn add_all(&mut self, values: impl IntoIterator<Item = V>) {
        self.0.extend(values);
    }

    /// The values, oldest first.
    pub fn get(&self) -> &[V] {
        &self.0
    }

    /// The values, to change, sort or remove from in place.
    pub fn values_mut(&mut self) -> &mut Vec<V> {
        &mut self.0
    }

    /// Replaces the values.
    pub fn update(&mut self, values: Vec<V>) {
        self.0 = values;
    }

    /// Iterates the values, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, V> {
        self.0.iter()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A map per key, ordered by its keys (Flink's `MapState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "MK: Serialize, MV: Serialize",
    deserialize = "MK: Ord + Deserialize<'de>, MV: Deserialize<'de>"
))]
pub struct MapState<MK, MV>(BTreeMap<MK, MV>);

impl<MK, MV> Default for MapState<MK, MV> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<MK: Ord, MV> MapState<MK, MV> {
    /// The value under `key`.
    pub fn get(&self, key: &MK) -> Option<&MV> {
        self.0.get(key)
    }

    /// The value under `key`, to change in place.
    pub fn get_mut(&mut self, key: &MK) -> Option<&mut MV> {
        self.0.get_mut(key)
    }

    /// Sets the value under `key`; returns the one it replaced.
    pub fn put(&mut self, key: MK, value: MV) -> Option<MV> {
        self.0.insert(key, value)
    }

    /// The entry of `key`, for in-place updates.
    pub fn entry(&mut self, key: MK) -> std::collections::btree_map::Entry<'_, MK, MV> {
        self.0.entry(key)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &MK) -> Option<MV> {
        self.0.remove(key)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &MK) -> bool {
        self.0.contains_key(key)
    }

    /// Iterates the entries in key order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, MK, MV> {
        self.0.iter()
    }

    /// Keeps only the entries for which `f` returns true.
    pub fn retain(&mut self, f: impl FnMut(&MK, &mut MV) -> bool) {
        self.0.retain(f);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct All {
        v: ValueState<u64>,
        l: ListState<String>,
        m: MapState<u32, i64>,
    }

    #[test]
    fn state_types_round_trip_through_the_codec() {
        let mut s = All::default();
        s.v.set(7);
        s.l.add("a".into());
        s.l.add("b".into());
        s.m.put(3, -1);
        s.m.put(1, 5);
        let bytes = eddy_checkpoint::codec::encode(&s).unwrap();
        let back: All = eddy_checkpoint::codec::decode(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.m.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let empty: All = eddy_checkpoint::codec::decode(
            &eddy_checkpoint::codec::encode(&All::default()).unwrap(),
        )
        .unwrap();
        assert!(!empty.v.exists() && empty.l.is_empty() && empty.m.is_empty());
    }
}
