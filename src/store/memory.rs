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
//!
//! moka processes expiry only during its maintenance, which only cache
//! traffic triggers: an idle cache kept expired tickets (and, when the
//! count followed evictions, a full live-ticket cap) indefinitely. So the
//! live count is kept by expiry time of its own, exact at any moment, and
//! `maintain` runs the maintenance on time, without traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
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

/// Live tickets by the millisecond they expire: a ticket leaves the count
/// at its `expires_at` exactly, whether or not moka has evicted it yet.
#[derive(Default)]
struct Expiries {
    at: BTreeMap<u64, u32>,
    live: u64,
}

impl Expiries {
    fn add(&mut self, expires_at: u64, now: u64) {
        if expires_at > now {
            *self.at.entry(expires_at).or_default() += 1;
            self.live += 1;
        }
    }

    /// Forget one ticket expiring at `expires_at`, if still counted.
    fn remove(&mut self, expires_at: u64) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.at.entry(expires_at) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
            self.live -= 1;
        }
    }

    /// Tickets alive at `now`.
    fn count(&mut self, now: u64) -> u64 {
        while let Some(first) = self.at.first_entry() {
            if *first.key() > now {
                break;
            }
            self.live -= u64::from(first.remove());
        }
        self.live
    }
}

pub struct MemoryStore {
    tickets: Cache<TicketId, Arc<Cell>>,
    /// The live count, which moka's own count cannot give: it moves only
    /// during maintenance, and entries outlive their tickets by the grace.
    expiries: Arc<Mutex<Expiries>>,
    values: Cache<String, Value>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// How often `maintain` runs the caches' maintenance.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

fn lock_expiries(expiries: &Mutex<Expiries>) -> MutexGuard<'_, Expiries> {
    // Every critical section leaves the map and count in step.
    expiries.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        let expiries = Arc::new(Mutex::new(Expiries::default()));
        let replaced = expiries.clone();
        let tickets = Cache::builder()
            .expire_after(UntilExpiry)
            .eviction_listener(move |_id, cell: Arc<Cell>, cause| {
                if cause == RemovalCause::Replaced {
                    lock_expiries(&replaced).remove(cell.expires_at.load(Ordering::Acquire));
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
            expiries,
            values,
        }
    }

    /// Run the caches' pending maintenance every `MAINTENANCE_INTERVAL`
    /// until the store is dropped: expired tickets are evicted (and their
    /// `expired` outcome counted) on time, with no traffic to trigger it.
    /// A pass evicts a few hundred entries, so a pass repeats while it
    /// still finds some.
    pub fn maintain(store: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.run_pending_tasks();
            }
        })
    }

    /// One round of maintenance: repeated while it evicts, at most 64 times
    /// (~25,000 entries) a round.
    pub fn run_pending_tasks(&self) {
        for _ in 0..64 {
            let before = self.tickets.entry_count();
            self.tickets.run_pending_tasks();
            if self.tickets.entry_count() >= before {
                break;
            }
        }
        self.values.run_pending_tasks();
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
        lock_expiries(&self.expiries).add(ticket.expires_at, now_ms());
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
        if next.expires_at != current.expires_at {
            let mut expiries = lock_expiries(&self.expiries);
            expiries.remove(current.expires_at);
            expiries.add(next.expires_at, now_ms());
        }
        cell.expires_at.store(next.expires_at, Ordering::Release);
        *current = Arc::new(next.clone());
        Ok(next)
    }

    async fn live_count(&self) -> Result<u64, StoreError> {
        Ok(lock_expiries(&self.expiries).count(now_ms()))
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

    fn in_process(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::ticket;
    use crate::ticket::{Change, IssuedToken};

    crate::store::conformance::suite!(super::MemoryStore::new());

    #[tokio::test]
    async fn live_count_follows_expiry_without_maintenance() {
        // No maintenance task: the count must not depend on evictions.
        let store = MemoryStore::new();
        let (short, confirmed, long) = (ticket(100), ticket(100), ticket(60_000));
        for t in [&short, &confirmed, &long] {
            store.insert(t).await.unwrap();
        }
        assert_eq!(store.live_count().await.unwrap(), 3);
        // A final state stays readable for the grace: counted as long.
        let token = IssuedToken {
            token: "jwt".into(),
            expires_in: 60,
        };
        let change = Change::Confirm {
            by: None,
            user: None,
            token,
        };
        store.transition(&confirmed.id, change).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.get(&short.id).await.unwrap(), None);
        assert!(store.get(&confirmed.id).await.unwrap().is_some());
        assert_eq!(store.live_count().await.unwrap(), 2);
        // Inserting the same ticket again replaces it, not adds one.
        store.insert(&long).await.unwrap();
        store.tickets.run_pending_tasks();
        assert_eq!(store.live_count().await.unwrap(), 2);
    }
}
