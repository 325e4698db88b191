//! The hub wakes local waiters when their ticket changes; it carries no
//! state of its own. Waiters re-read the store after every wake-up, so a lost
//! or duplicated wake-up costs at most one extra read, never a lost push.
//!
//! Sockets always stay in the process that accepted them (`Waiters`); an
//! engine only decides how a change made anywhere reaches the right process:
//! directly in memory, over pub/sub with Redis.

#[doc(hidden)]
pub mod conformance;
pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::ticket::TicketId;

#[async_trait]
pub trait Hub: Send + Sync + 'static {
    /// Register interest in `id`. Register *before* reading the store, so a
    /// change between the read and the wait still wakes you.
    fn watch(&self, id: &TicketId) -> Waiter;

    /// Announce that `id` changed (after the store committed it).
    async fn publish(&self, id: &TicketId);

    /// Local waiters per ticket (sockets and long-polls of this process).
    fn waiters_of(&self, id: &TicketId) -> usize;

    /// Wake every local waiter, whatever its ticket: the service is
    /// stopping, and each socket learns it from the wake-up it already
    /// waits for instead of from a shutdown future of its own (160 bytes of
    /// every idle socket's task; docs/performance.md).
    fn wake_all(&self);

    /// Whether this instance hears other instances' changes right now
    /// (`/readyz`). In one process there is nothing to hear: always true.
    fn live(&self) -> bool {
        true
    }
}

/// This process's waiters, keyed by ticket: one signal per watched ticket
/// and how many waiters hold it.
#[derive(Default)]
pub struct Waiters {
    /// SipHash, not `ticket::IdHasher`: a waiter is registered before its
    /// ticket is read, so any id a caller sends is in here for a moment.
    map: Mutex<HashMap<TicketId, (Arc<Signal>, usize)>>,
}

/// A watched ticket's wake-ups: a version every waiter compares with the
/// last one it saw, and the tasks parked until it moves. (tokio's `watch`
/// channel does the same with nine `Notify`s, several times the memory
/// per waiting browser; see docs/performance.md.)
#[derive(Default)]
struct Signal {
    version: AtomicU64,
    notify: Notify,
    /// The store was read and no longer holds the ticket (see `wake_gone`).
    gone: AtomicBool,
}

impl Signal {
    fn wake(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<TicketId, (Arc<Signal>, usize)>> {
        // A poisoned map is still a valid map: every critical section is a
        // single insert, lookup or remove.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(self: &Arc<Self>, id: &TicketId) -> Waiter {
        let signal = {
            let mut map = self.lock();
            let (signal, count) = map.entry(id.clone()).or_default();
            *count += 1;
            signal.clone()
        };
        Waiter {
            seen: signal.version.load(Ordering::Acquire),
            signal,
            id: id.clone(),
            waiters: self.clone(),
        }
    }

    pub fn wake(&self, id: &TicketId) {
        if let Some((signal, _)) = self.lock().get(id) {
            signal.wake();
        }
    }

    /// Wake the waiters of `id`, telling them the store was just read and
    /// no longer holds the ticket: what their own read would find, so they
    /// need not make it. After an outage the Redis hub's catch-up reads
    /// every watched ticket in batches; without this, every socket whose
    /// ticket expired meanwhile read it again by itself, all at once, and
    /// in the TLS soak some of those reads waited past the ticket's end
    /// plus 10 s (docs/redis.md).
    pub fn wake_gone(&self, id: &TicketId) {
        if let Some((signal, _)) = self.lock().get(id) {
            signal.gone.store(true, Ordering::Release);
            signal.wake();
        }
    }

    pub fn count(&self, id: &TicketId) -> usize {
        self.lock().get(id).map_or(0, |(_, count)| *count)
    }

    /// Every watched ticket's waiters (see [`Hub::wake_all`]).
    pub fn wake_all(&self) {
        for (signal, _) in self.lock().values() {
            signal.wake();
        }
    }

    /// Tickets with at least one local waiter.
    pub fn watched(&self) -> Vec<TicketId> {
        self.lock().keys().cloned().collect()
    }
}

/// One waiter's registration; dropping it unregisters (the last one out
/// removes the ticket's signal, so the map never outgrows live waiters).
pub struct Waiter {
    signal: Arc<Signal>,
    seen: u64,
    id: TicketId,
    waiters: Arc<Waiters>,
}

impl Waiter {
    /// The ticket waited for (the socket's task keeps no copy of its own).
    pub fn id(&self) -> &TicketId {
        &self.id
    }

    /// Whether the ticket was read as gone from the store (`wake_gone`).
    pub fn gone(&self) -> bool {
        self.signal.gone.load(Ordering::Acquire)
    }

    /// Resolves at the next wake-up after the last one seen. Cancel-safe:
    /// a wake-up missed while not waiting is seen by the next call.
    pub async fn changed(&mut self) {
        loop {
            let notified = self.signal.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Listen before looking, so a wake between the two is not lost.
            notified.as_mut().enable();
            let version = self.signal.version.load(Ordering::Acquire);
            if version != self.seen {
                self.seen = version;
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if let Some((_, count)) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// The single-process hub: a change wakes local waiters directly.
#[derive(Default)]
pub struct MemoryHub {
    waiters: Arc<Waiters>,
}

#[async_trait]
impl Hub for MemoryHub {
    fn watch(&self, id: &TicketId) -> Waiter {
        self.waiters.watch(id)
    }

    async fn publish(&self, id: &TicketId) {
        self.waiters.wake(id);
    }

    fn waiters_of(&self, id: &TicketId) -> usize {
        self.waiters.count(id)
    }

    fn wake_all(&self) {
        self.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::hub::conformance::suite!({
        let hub: Arc<dyn Hub> = Arc::new(MemoryHub::default());
        (hub.clone(), hub)
    });

    #[tokio::test]
    async fn a_wake_for_a_gone_ticket_says_so_to_every_waiter() {
        let waiters = Arc::new(Waiters::default());
        let (id, other) = (TicketId::generate(), TicketId::generate());
        let (mut w1, w2, w3) = (
            waiters.watch(&id),
            waiters.watch(&id),
            waiters.watch(&other),
        );
        waiters.wake(&id);
        w1.changed().await;
        assert!(!w1.gone(), "a plain wake is not a gone ticket");
        waiters.wake_gone(&id);
        w1.changed().await;
        assert!(w1.gone() && w2.gone());
        assert!(!w3.gone(), "only that ticket's waiters");
    }

    #[test]
    fn the_last_waiter_out_removes_the_ticket() {
        let hub = MemoryHub::default();
        let id = TicketId::generate();
        let (w1, w2) = (hub.watch(&id), hub.watch(&id));
        drop(w1);
        assert_eq!(hub.waiters.watched().len(), 1);
        drop(w2);
        assert!(hub.waiters.watched().is_empty());
    }
}
