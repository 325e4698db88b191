//! Store operations in progress, bounded per instance: past the bound an
//! operation is refused at once (503 `over_capacity`, `Retry-After`) before
//! it reaches the store, and new tickets are refused first.
//!
//! Why: an instance that falls behind (a CPU it does not get, a Redis that
//! slows) has more operations in progress, each waiting longer for Redis
//! and for its turn; the 503s it then answers late come back as retries,
//! and the 20,000-browser soaks collapsed that way, losing logins already
//! under way (docs/redis.md). So:
//! - from a quarter of the bound on, creating a ticket is refused: a
//!   browser that already shows a QR code is a person part-way through a
//!   login, one that has none yet shows its code a second later;
//! - from the bound on, every other operation is too.
//!
//! Counted here, in the domain, rather than as HTTP requests at the edge:
//! a request whose client trickles its body is no load on the store, and
//! counting it would let anyone holding slow connections refuse everyone's
//! new tickets.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What an operation is, for the two thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A new ticket: refused first.
    Creation,
    /// Everything for a ticket that exists (reads, changes, shared values).
    Other,
}

pub struct InProgress {
    now: AtomicUsize,
    max: usize,
    max_creations: usize,
}

/// One operation counted; uncounted when dropped (done, failed, or
/// cancelled with its request).
pub struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InProgress {
    /// `max` 0: no bound.
    pub fn new(max: usize) -> Self {
        Self {
            now: AtomicUsize::new(0),
            max: if max == 0 { usize::MAX } else { max },
            max_creations: if max == 0 {
                usize::MAX
            } else {
                (max / 4).max(1)
            },
        }
    }

    /// Count one operation, or `None`: refuse it.
    pub fn enter(&self, class: Class) -> Option<Held<'_>> {
        let cap = match class {
            Class::Creation => self.max_creations,
            Class::Other => self.max,
        };
        let before = self.now.fetch_add(1, Ordering::Relaxed);
        let held = Held(&self.now);
        (before < cap).then_some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_are_refused_first_and_every_place_is_given_back() {
        let counts = InProgress::new(8);
        let held: Vec<_> = (0..2)
            .map(|_| counts.enter(Class::Creation).unwrap())
            .collect();
        assert!(
            counts.enter(Class::Creation).is_none(),
            "a quarter of 8 are creations"
        );
        let more: Vec<_> = (0..6)
            .map(|_| counts.enter(Class::Other).unwrap())
            .collect();
        assert!(counts.enter(Class::Other).is_none(), "8 in progress");
        drop(held);
        drop(more);
        assert_eq!(
            counts.now.load(Ordering::Relaxed),
            0,
            "refusals count nothing"
        );
        assert!(counts.enter(Class::Creation).is_some());
    }

    #[test]
    fn zero_is_no_bound() {
        let counts = InProgress::new(0);
        let held: Vec<_> = (0..10_000)
            .map(|_| counts.enter(Class::Creation).unwrap())
            .collect();
        assert_eq!(held.len(), 10_000);
    }
}
