//! A gate for log lines that an outage or an overload would otherwise
//! write thousands of times a second.
//!
//! While Redis is down or an instance is overloaded, every failed ticket
//! read of every waiting socket and every request answered 503 used to
//! write a WARN line of its own: in a soak on 2 cores (20,000 browsers,
//! one core for the whole soak), the two instances wrote about a million
//! lines in 150 s, each formatted and written to stderr by the worker
//! threads that should have been answering. The more an instance failed,
//! the more CPU it spent saying so. Through a `Throttle` at most one line
//! per interval is written, and it says how many were held back
//! (`qrlogin_redis_errors_total` still counts every failed command).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ticket::now_ms;

/// Lets at most one event through per interval and counts the others.
pub struct Throttle {
    every_ms: u64,
    /// No event passes before this (ms since the epoch).
    next_ms: AtomicU64,
    /// Events held back since the last one that passed.
    held: AtomicU64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this one, and say that `n` were held back since the
    /// last line. `None`: hold it back.
    pub fn pass(&self) -> Option<u64> {
        self.pass_at(now_ms())
    }

    fn pass_at(&self, now: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Acquire);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.every_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_passes_and_says_how_many_were_held_back() {
        let gate = Throttle::new(Duration::from_secs(1));
        assert_eq!(gate.pass_at(10_000), Some(0));
        for ms in 10_001..10_999 {
            assert_eq!(gate.pass_at(ms), None);
        }
        // 998 held back; the next second lets one through and says so.
        assert_eq!(gate.pass_at(11_000), Some(998));
        assert_eq!(gate.pass_at(11_001), None);
        // A quiet gap: the next event passes at once.
        assert_eq!(gate.pass_at(60_000), Some(1));
    }

    #[test]
    fn under_contention_exactly_one_event_of_a_burst_passes() {
        let gate = std::sync::Arc::new(Throttle::new(Duration::from_secs(3600)));
        let passed: usize = (0..8)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || (0..1000).filter(|_| gate.pass().is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(passed, 1);
        assert_eq!(gate.held.load(Ordering::Acquire), 7999);
    }
}
