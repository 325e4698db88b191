//! The hub wakes local waiters when their ticket changes; it carries no
//! state of its own. Waiters re-read the store after every wake-up, so a lost
//! or duplicated wake-up costs at most one extra read, never a lost push.
//!
//! Sockets always stay in the process that accepted them (`Waiters`); an
//! engine only decides how a change made anywhere reaches the right process:
//! directly in memory, over pub/sub with Redis.

pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

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
}

/// This process's waiters, keyed by ticket. One `watch` channel per watched
/// ticket: a wake-up is a version bump every receiver sees once.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<TicketId, watch::Sender<u64>>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<TicketId, watch::Sender<u64>>> {
        // A poisoned map is still a valid map: every critical section is a
        // single insert, lookup or remove.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(self: &Arc<Self>, id: &TicketId) -> Waiter {
        let rx = self
            .lock()
            .entry(id.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Waiter {
            rx,
            id: id.clone(),
            waiters: self.clone(),
        }
    }

    pub fn wake(&self, id: &TicketId) {
        if let Some(tx) = self.lock().get(id) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wake everyone: after a pub/sub reconnect, anything may have changed.
    pub fn wake_all(&self) {
        for tx in self.lock().values() {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    pub fn count(&self, id: &TicketId) -> usize {
        self.lock().get(id).map_or(0, |tx| tx.receiver_count())
    }

    /// Tickets with at least one local waiter.
    pub fn watched(&self) -> Vec<TicketId> {
        self.lock().keys().cloned().collect()
    }
}

/// One waiter's registration; dropping it unregisters (the last one out
/// removes the ticket's channel, so the map never outgrows live waiters).
pub struct Waiter {
    rx: watch::Receiver<u64>,
    id: TicketId,
    waiters: Arc<Waiters>,
}

impl Waiter {
    /// Resolves at the next wake-up after the last one seen.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender is only dropped with the map entry, which we keep
            // alive; never resolve rather than spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.id);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn publish_wakes_every_waiter_of_that_ticket_only() {
        let hub = MemoryHub::default();
        let (a, b) = (TicketId::generate(), TicketId::generate());
        let (mut w1, mut w2, mut other) = (hub.watch(&a), hub.watch(&a), hub.watch(&b));
        hub.publish(&a).await;
        tokio::time::timeout(Duration::from_secs(1), w1.changed())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), w2.changed())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.changed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let hub = MemoryHub::default();
        let id = TicketId::generate();
        let mut w = hub.watch(&id);
        hub.publish(&id).await;
        tokio::time::timeout(Duration::from_secs(1), w.changed())
            .await
            .unwrap();
    }

    #[test]
    fn the_last_waiter_out_removes_the_ticket() {
        let hub = MemoryHub::default();
        let id = TicketId::generate();
        let (w1, w2) = (hub.watch(&id), hub.watch(&id));
        assert_eq!(hub.waiters_of(&id), 2);
        drop(w1);
        assert_eq!(hub.waiters_of(&id), 1);
        drop(w2);
        assert_eq!(hub.waiters_of(&id), 0);
        assert!(hub.waiters.watched().is_empty());
    }
}
