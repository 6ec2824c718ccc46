//! The encoded key of a timer, stored inline when it is short.
//!
//! A keyed operator registers a timer per record or per window, and most
//! keys encode to a few bytes (a `u64` and a tag, a sensor id and a window
//! start). Holding each in its own heap allocation (`Arc<[u8]>`) cost a
//! `malloc` and a `free` per timer, about a tenth of a keyed process
//! operator's time with a timer per record; keys of up to [`INLINE`] bytes
//! now live in the timer itself, longer ones are shared.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest key stored inline (the type is then 24 bytes, as large as
/// the shared form).
pub const INLINE: usize = 22;

/// A timer's encoded key (compares, hashes and dereferences as its bytes).
#[derive(Clone)]
pub struct TimerKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl TimerKey {
    /// The key `bytes`, copied.
    pub fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut inline = [0u8; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Self(Repr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            })
        } else {
            Self(Repr::Shared(Arc::from(bytes)))
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(b) => b,
        }
    }
}

impl Deref for TimerKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for TimerKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TimerKey {}

impl PartialOrd for TimerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for TimerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for TimerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimerKey").field(&self.as_bytes()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_keys_behave_as_their_bytes() {
        let short = TimerKey::new(&[1, 2, 3]);
        let edge = TimerKey::new(&[7; INLINE]);
        let long = TimerKey::new(&[7; INLINE + 1]);
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert!(matches!(edge.0, Repr::Inline { .. }));
        assert!(matches!(long.0, Repr::Shared(_)));
        assert_eq!(&*short, &[1, 2, 3]);
        assert_eq!(edge.len(), INLINE);
        assert_eq!(long.len(), INLINE + 1);
        // Order is the bytes' order, whatever the representation.
        assert!(edge < long);
        assert!(TimerKey::new(&[]) < short);
        assert_eq!(long.clone(), TimerKey::new(&[7; INLINE + 1]));
        assert_ne!(edge, long);
        assert_eq!(std::mem::size_of::<TimerKey>(), 24);
    }
}
