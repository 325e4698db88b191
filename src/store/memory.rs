//! The embedded engine: tickets in a moka cache with per-entry expiry.
//!
//! moka evicts lazily, so reads also check `expires_at` themselves (the
//! stored time is the truth, not the cache's clock). A cache entry never
//! changes after its insert: it holds a cell whose lock makes each
//! transition an exact compare-and-set. (moka's own `and_compute_with` is
//! exact too, but its per-key lock and waiter tables cost 15 µs of a
//! confirm's ~110 µs.) A final transition may push `expires_at` out by the
//! grace of `Ticket::apply`, so entries are kept that much longer than the
//! ticket's first expiry; reads go by the cell's current one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{StoreError, TicketStore};
use crate::ticket::{Change, FINAL_STATE_GRACE_MS, Status, Ticket, TicketId, now_ms};

/// One ticket's place in the cache: its current version, swapped under the
/// lock by transitions, and that version's `expires_at` for lock-free reads.
struct Cell {
    expires_at: AtomicU64,
    ticket: Mutex<Arc<Ticket>>,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Arc<Ticket>> {
        // Every critical section is one read or one swap: a poisoned cell
        // still holds a whole ticket.
        self.ticket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lives until its ticket's `expires_at`.
struct UntilExpiry;

impl Expiry<TicketId, Arc<Cell>> for UntilExpiry {
    fn expire_after_create(&self, _: &TicketId, c: &Arc<Cell>, _: Instant) -> Option<Duration> {
        // The latest a final transition can move the expiry to.
        let last = c.expires_at.load(Ordering::Relaxed) + FINAL_STATE_GRACE_MS;
        Some(Duration::from_millis(last.saturating_sub(now_ms())))
    }
}

#[derive(Clone)]
struct Value {
    text: Arc<str>,
    expires_at: u64,
}

struct ValueExpiry;

impl Expiry<String, Value> for ValueExpiry {
    fn expire_after_create(&self, _: &String, v: &Value, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(v.expires_at.saturating_sub(now_ms())))
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Value,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_millis(v.expires_at.saturating_sub(now_ms())))
    }
}

pub struct MemoryStore {
    tickets: Cache<TicketId, Arc<Cell>>,
    /// Inserted minus evicted: moka's own count only moves during its
    /// maintenance, too late for the live-ticket cap.
    live: Arc<AtomicU64>,
    values: Cache<String, Value>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let live = Arc::new(AtomicU64::new(0));
        let evicted = live.clone();
        let tickets = Cache::builder()
            .expire_after(UntilExpiry)
            .eviction_listener(move |_id, cell: Arc<Cell>, cause| {
                if cause != RemovalCause::Replaced {
                    evicted.fetch_sub(1, Ordering::Relaxed);
                }
                let ticket = cell.lock().clone();
                if cause == RemovalCause::Expired && !ticket.status.is_terminal() {
                    metrics::counter!("qrlogin_tickets_finished_total",
                        "provider" => ticket.provider.as_str(), "status" => Status::Expired.as_str())
                    .increment(1);
                }
            })
            .build();
        let values = Cache::builder()
            .expire_after(ValueExpiry)
            .max_capacity(1_000_000)
            .build();
        Self {
            tickets,
            live,
            values,
        }
    }

    /// The ticket's cell while it lives.
    fn cell(&self, id: &TicketId) -> Option<Arc<Cell>> {
        self.tickets
            .get(id)
            .filter(|c| now_ms() < c.expires_at.load(Ordering::Acquire))
    }
}

#[async_trait]
impl TicketStore for MemoryStore {
    async fn insert(&self, ticket: &Ticket) -> Result<(), StoreError> {
        self.live.fetch_add(1, Ordering::Relaxed);
        let cell = Cell {
            expires_at: AtomicU64::new(ticket.expires_at),
            ticket: Mutex::new(Arc::new(ticket.clone())),
        };
        self.tickets.insert(ticket.id.clone(), Arc::new(cell));
        Ok(())
    }

    async fn get(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        Ok(self.cell(id).map(|c| Ticket::clone(&c.lock())))
    }

    async fn transition(&self, id: &TicketId, change: Change) -> Result<Ticket, StoreError> {
        let cell = self.cell(id).ok_or(StoreError::NotFound)?;
        let mut current = cell.lock();
        let next = current.apply(change, now_ms())?;
        cell.expires_at.store(next.expires_at, Ordering::Release);
        *current = Arc::new(next.clone());
        Ok(next)
    }

    async fn live_count(&self) -> Result<u64, StoreError> {
        Ok(self.live.load(Ordering::Relaxed))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let fresh = Value {
            text: value.into(),
            expires_at: now_ms() + ttl.as_millis() as u64,
        };
        let now = now_ms();
        let mut inserted = false;
        self.values
            .entry_by_ref(key)
            .and_compute_with(|entry| match entry {
                Some(e) if e.value().expires_at > now => Op::Nop,
                _ => {
                    inserted = true;
                    Op::Put(fresh)
                }
            });
        Ok(inserted)
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let v = Value {
            text: value.into(),
            expires_at: now_ms() + ttl.as_millis() as u64,
        };
        self.values.insert(key.to_owned(), v);
        Ok(())
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .values
            .get(key)
            .filter(|v| v.expires_at > now_ms())
            .map(|v| v.text.to_string()))
    }

    async fn remove_value(&self, key: &str) -> Result<(), StoreError> {
        self.values.invalidate(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    crate::store::conformance::suite!(super::MemoryStore::new());
}
