//! Key hashing and key groups.
//!
//! Keys are hashed with a fixed function (FxHash-style multiply, then the
//! murmur3 finaliser) so that routing is the same in every process and every
//! run: a restored query must send each key to the instance that holds its
//! state. A key's *key group* is `hash % max_key_groups`; instance `i` of `p`
//! owns a contiguous range of key groups, so state can later be redistributed
//! when the parallelism changes.

use std::hash::{Hash, Hasher};

/// The default number of key groups (the upper bound of a keyed operator's
/// parallelism).
pub const DEFAULT_MAX_KEY_GROUPS: u32 = 128;

/// A deterministic 64-bit hasher (not for untrusted adversarial keys).
#[derive(Default)]
pub struct StableHasher {
    h: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.h = (self.h.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    fn finish(&self) -> u64 {
        fmix64(self.h)
    }
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The stable hash of a key.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group of a hash.
pub fn key_group(hash: u64, max_key_groups: u32) -> u32 {
    (hash % max_key_groups as u64) as u32
}

/// The instance (of `parallelism`) that owns `key_group`.
pub fn instance_for_key_group(key_group: u32, max_key_groups: u32, parallelism: usize) -> usize {
    (key_group as u64 * parallelism as u64 / max_key_groups as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_stable_and_spreads() {
        assert_eq!(key_hash("sensor-1"), key_hash(&"sensor-1".to_string()));
        assert_ne!(key_hash(&1u64), key_hash(&2u64));
        let p = 4;
        let mut counts = [0usize; 4];
        for k in 0..10_000u64 {
            let kg = key_group(key_hash(&k), DEFAULT_MAX_KEY_GROUPS);
            counts[instance_for_key_group(kg, DEFAULT_MAX_KEY_GROUPS, p)] += 1;
        }
        for c in counts {
            assert!(c > 2_000 && c < 3_000, "uneven spread {counts:?}");
        }
    }

    #[test]
    fn key_groups_map_to_contiguous_ranges() {
        let mut last = 0;
        for kg in 0..DEFAULT_MAX_KEY_GROUPS {
            let i = instance_for_key_group(kg, DEFAULT_MAX_KEY_GROUPS, 3);
            assert!(i >= last && i < 3);
            last = i;
        }
        assert_eq!(last, 2);
    }
}
