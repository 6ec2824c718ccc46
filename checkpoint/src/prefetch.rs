//! Cache prefetch of a table's entries, so that a batch of lookups waits
//! for memory once instead of once per key.
//!
//! A keyed operator's cache of 50 k or more entries per instance does not
//! fit the CPU's caches, and each lookup of a random key waits on memory
//! (three quarters of a keyed process operator's own time, measured). A
//! lookup that only *touches* the entry still waits, because the CPU
//! cannot retire the load before it arrives, which limits how many of a
//! batch's loads are in flight. A prefetch instruction retires at once, so
//! the loads of a whole batch are in flight together.
//!
//! [`Prefetch`] is a lookup key that matches nothing: the map calls its
//! [`Equivalent::equivalent`] with each candidate of the right hash tag
//! (almost always only the entry itself, if present), which issues a
//! prefetch of the candidate's memory instead of comparing it.

use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;

/// A lookup key that prefetches the entries it is compared with and
/// matches none of them.
pub(crate) struct Prefetch<'a, K, E> {
    key: &'a K,
    _entry: std::marker::PhantomData<fn() -> E>,
}

impl<'a, K, E> Prefetch<'a, K, E> {
    /// Prefetches the entries (of type `(K, E)`) a lookup of `key` meets.
    pub(crate) fn new(key: &'a K) -> Self {
        Self {
            key,
            _entry: std::marker::PhantomData,
        }
    }
}

impl<K: Hash, E> Hash for Prefetch<'_, K, E> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same hash as the key itself, so the lookup probes its group.
        self.key.hash(state)
    }
}

impl<K, E> Equivalent<K> for Prefetch<'_, K, E> {
    fn equivalent(&self, candidate: &K) -> bool {
        // The candidate key sits somewhere in a `(K, E)` bucket: prefetch
        // every cache line the bucket may span, from the lowest address it
        // can start at to the highest it can end at.
        let bucket = std::mem::size_of::<(K, E)>();
        let at = candidate as *const K as *const u8;
        let first = at.wrapping_sub(bucket - std::mem::size_of::<K>());
        let mut offset = 0;
        while offset < 2 * bucket {
            prefetch_line(first.wrapping_add(offset));
            offset += 64;
        }
        false
    }
}

/// Asks the CPU to bring the cache line holding `at` into its caches.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn prefetch_line(at: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: `_mm_prefetch` is unsafe only because it is declared with
    // `#[target_feature(enable = "sse")]`, and SSE is part of the x86_64
    // baseline, so the feature is always present. The instruction is a
    // hint: it never reads memory architecturally and never faults, on
    // any address, so no pointer validity is required.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at as *const i8) }
}

/// Elsewhere: no prefetch.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line(_at: *const u8) {}
