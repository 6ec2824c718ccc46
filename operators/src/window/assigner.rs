//! Windows and how records are assigned to them.

use std::time::Duration;

use eddy_runtime::record::Timestamp;
use serde::{Deserialize, Serialize};

/// A window of event time: `[start, end)` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond in the window.
    pub start: Timestamp,
    /// First millisecond after it.
    pub end: Timestamp,
}

impl Window {
    /// The last millisecond in the window (the event time of its result).
    pub fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }

    /// Whether `ts` falls in the window.
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && ts < self.end
    }
}

/// What a window operator emits: one result per key and window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult<K, V> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// The aggregate of the window's records.
    pub value: V,
}

/// Which windows a keyed stream is cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed-size, non-overlapping windows aligned to the epoch.
    Tumbling {
        /// Length in ms.
        size: i64,
    },
    /// Fixed-size windows starting every `slide` (a record belongs to
    /// `size / slide` of them).
    Sliding {
        /// Length in ms.
        size: i64,
        /// Distance between starts in ms.
        slide: i64,
    },
    /// Per key, records closer than `gap` to each other form one session.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
}

/// Constructors of [`WindowSpec`].
pub struct Windows;

fn ms(d: Duration) -> i64 {
    (d.as_millis() as i64).max(1)
}

impl Windows {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> WindowSpec {
        WindowSpec::Tumbling { size: ms(size) }
    }

    /// Sliding (hopping) windows of `size`, one starting every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> WindowSpec {
        WindowSpec::Sliding {
            size: ms(size),
            slide: ms(slide),
        }
    }

    /// Session windows closed by `gap` of inactivity per key.
    pub fn session(gap: Duration) -> WindowSpec {
        WindowSpec::Session { gap: ms(gap) }
    }
}

impl WindowSpec {
    /// The fixed windows containing `ts`, latest first (not for sessions:
    /// their window is `[ts, ts + gap)` before merging).
    pub fn assign(&self, ts: Timestamp, out: &mut Vec<Window>) {
        out.clear();
        match *self {
            WindowSpec::Tumbling { size } => {
                let start = ts - ts.rem_euclid(size);
                out.push(Window {
                    start,
                    end: start.saturating_add(size),
                });
            }
            WindowSpec::Sliding { size, slide } => {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts.saturating_sub(size) {
                    out.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start -= slide;
                }
            }
            WindowSpec::Session { gap } => out.push(Window {
                start: ts,
                end: ts.saturating_add(gap),
            }),
        }
    }

    /// The window of fixed size starting at `start`.
    pub fn window_at(&self, start: Timestamp) -> Window {
        let size = match *self {
            WindowSpec::Tumbling { size } | WindowSpec::Sliding { size, .. } => size,
            WindowSpec::Session { gap } => gap,
        };
        Window {
            start,
            end: start.saturating_add(size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(spec: WindowSpec, ts: i64) -> Vec<i64> {
        let mut v = Vec::new();
        spec.assign(ts, &mut v);
        v.iter().map(|w| w.start).collect()
    }

    #[test]
    fn tumbling_and_sliding_assignment() {
        let t = Windows::tumbling(Duration::from_millis(10));
        assert_eq!(starts(t, 0), vec![0]);
        assert_eq!(starts(t, 19), vec![10]);
        assert_eq!(starts(t, -1), vec![-10]);
        let s = Windows::sliding(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(starts(s, 12), vec![10, 5]);
        assert_eq!(starts(s, 10), vec![10, 5]);
        assert_eq!(starts(s, 9), vec![5, 0]);
        let mut v = Vec::new();
        s.assign(12, &mut v);
        assert!(v.iter().all(|w| w.contains(12)));
    }
}
