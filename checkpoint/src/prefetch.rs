//! Cache prefetch of a table's entries, so that the entries of a batch of
//! lookups come from memory together instead of one after another.
//!
//! A keyed operator's cache of 50 k or more entries per instance does not
//! fit the CPU's caches, and each lookup of a random key waits on memory
//! (three quarters of a keyed process operator's own time, measured). A
//! lookup that only *touches* the entry still waits, because the CPU
//! cannot retire the load before it arrives, which limits how many of a
//! batch's loads are in flight. A prefetch instruction retires at once.
//!
//! [`Prefetch`] is a lookup key that matches nothing: the map calls its
//! [`Equivalent::equivalent`] with each candidate of the right hash tag
//! (almost always only the entry itself, if present), which issues a
//! prefetch of the candidate's memory instead of comparing it. The probe
//! still reads the map's control bytes (a sixty-fourth of its size, which
//! mostly stays cached); only the entry's own load becomes a hint.

use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;

/// A cache line's size on the CPUs Eddy runs on (x86_64).
const LINE: usize = 64;

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
        // The candidate is field 0 of a `(K, E)` bucket: prefetch every
        // cache line the bucket spans.
        let size = std::mem::size_of::<(K, E)>();
        let at = candidate as *const K as *const u8;
        let start = at.wrapping_sub(std::mem::offset_of!((K, E), 0));
        let misalign = start as usize % LINE;
        let mut line = start.wrapping_sub(misalign);
        let mut left = size + misalign;
        loop {
            prefetch_line(line);
            if left <= LINE {
                break;
            }
            line = line.wrapping_add(LINE);
            left -= LINE;
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
    // SAFETY: `_mm_prefetch` is declared with
    // `#[target_feature(enable = "sse")]`, and SSE is part of the x86_64
    // baseline, so the feature is always present. It takes a raw pointer,
    // but the instruction is a hint: it never reads memory
    // architecturally and never faults, on any address, so no pointer
    // validity is required (the pointer here points into the map anyway).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at as *const i8) }
}

/// Elsewhere: no prefetch.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line(_at: *const u8) {}
