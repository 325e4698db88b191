//! The embedded engine: tickets in a map of our own with per-entry expiry,
//! small shared values in a moka cache.
//!
//! A ticket's entry never changes after its insert: it holds a cell whose
//! lock makes each transition an exact compare-and-set. Reads check the
//! cell's `expires_at` themselves (the stored time is the truth), and a
//! final transition may push `expires_at` out by the grace of
//! `Ticket::apply`, so entries are kept that much longer than the ticket's
//! first expiry.
//!
//! Why not moka for tickets (it was): tickets need no eviction policy,
//! only expiry, and moka keeps its order and expiry queues by running its
//! maintenance inline, in whichever read or write finds its buffers full,
//! so a request now and then paid for the upkeep of thousands of tickets.
//! A sharded map and a queue by eviction time, drained by `maintain` in
//! bounded slices that yield to requests between them, cost fewer
//! instructions and less memory per ticket (docs/performance.md).
//!
//! The live count is kept by expiry time of its own, exact at any moment
//! (entries outlive their tickets by the grace).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{StoreError, TicketStore};
use crate::ticket::{
    Change, FINAL_STATE_GRACE_MS, IdHasher, IdMap, Status, Ticket, TicketId, now_ms,
};

/// One ticket's place in the map: its current version, swapped under the
/// lock by transitions, that version's `expires_at` for lock-free reads,
/// and when the entry goes (its first expiry plus the grace).
struct Cell {
    expires_at: AtomicU64,
    evict_at: u64,
    ticket: Mutex<Arc<Ticket>>,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Arc<Ticket>> {
        // Every critical section is one read or one swap: a poisoned cell
        // still holds a whole ticket.
        self.ticket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every critical section below is one map or queue operation: a poisoned
/// lock still guards whole entries.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many locks the tickets are spread over.
const SHARDS: usize = 16;
/// The most entries one slice of `maintain` evicts before it lets
/// requests run.
const EVICT_SLICE: usize = 512;

/// One lock's share of the tickets.
type Shard = Mutex<IdMap<Arc<Cell>>>;

/// Tickets by id, over `SHARDS` locks, and the order they go in.
struct Tickets {
    /// Picks the shard; seeded apart from the shards' own maps, so that the
    /// ids of one shard do not all share the low bits its map indexes by.
    hasher: IdHasher,
    shards: Box<[Shard]>,
    /// Every entry by its `evict_at`; an entry replaced by a later insert
    /// of the same id leaves a stale element, skipped when it comes due.
    queue: Mutex<BTreeSet<(u64, TicketId)>>,
}

impl Tickets {
    fn new() -> Self {
        Self {
            hasher: IdHasher::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            queue: Mutex::default(),
        }
    }

    fn shard(&self, id: &TicketId) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    fn get(&self, id: &TicketId) -> Option<Arc<Cell>> {
        lock(self.shard(id)).get(id).cloned()
    }

    /// Insert `cell`, returning the one it replaced.
    fn insert(&self, id: TicketId, cell: Arc<Cell>) -> Option<Arc<Cell>> {
        lock(&self.queue).insert((cell.evict_at, id.clone()));
        lock(self.shard(&id)).insert(id, cell)
    }

    /// Take up to `max` queue elements due by `now`; the cells of those
    /// still current, removed from the map.
    fn evict_due(&self, now: u64, max: usize) -> (usize, Vec<Arc<Cell>>) {
        let mut due = Vec::new();
        {
            let mut queue = lock(&self.queue);
            while due.len() < max {
                match queue.first() {
                    Some((at, _)) if *at <= now => due.extend(queue.pop_first()),
                    _ => break,
                }
            }
        }
        let taken = due.len();
        let gone = due
            .into_iter()
            .filter_map(|(at, id)| match lock(self.shard(&id)).entry(id) {
                Entry::Occupied(e) if e.get().evict_at == at => Some(e.remove()),
                _ => None, // replaced since: its own element comes later
            })
            .collect();
        (taken, gone)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
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
    tickets: Tickets,
    expiries: Mutex<Expiries>,
    values: Cache<String, Value>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// How often `maintain` evicts what is due.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

impl MemoryStore {
    pub fn new() -> Self {
        let values = Cache::builder()
            .expire_after(ValueExpiry)
            .max_capacity(1_000_000)
            .build();
        Self {
            tickets: Tickets::new(),
            expiries: Mutex::default(),
            values,
        }
    }

    /// Evict what is due every `MAINTENANCE_INTERVAL` until the store is
    /// dropped: expired tickets go (and their `expired` outcome is counted)
    /// on time, with no traffic to trigger it, in slices of `EVICT_SLICE`
    /// with requests let in between.
    pub fn maintain(store: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                loop {
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    if store.evict_slice() < EVICT_SLICE {
                        store.values.run_pending_tasks();
                        break;
                    }
                    drop(store);
                    tokio::task::yield_now().await;
                }
            }
        })
    }

    /// Evict up to `EVICT_SLICE` entries that are due; how many queue
    /// elements that took (a full slice: there may be more).
    fn evict_slice(&self) -> usize {
        let (taken, gone) = self.tickets.evict_due(now_ms(), EVICT_SLICE);
        for cell in &gone {
            let ticket = cell.lock();
            if !ticket.status.is_terminal() {
                metrics::counter!("qrlogin_tickets_finished_total",
                    "provider" => ticket.provider.as_str(), "status" => Status::Expired.as_str())
                .increment(1);
            }
        }
        taken
    }

    /// Everything due now, and the values' pending upkeep (tests).
    pub fn run_pending_tasks(&self) {
        while self.evict_slice() == EVICT_SLICE {}
        self.values.run_pending_tasks();
    }

    /// Entries held, expired or not, until evicted.
    #[cfg(test)]
    fn entry_count(&self) -> usize {
        self.tickets.len()
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
        lock(&self.expiries).add(ticket.expires_at, now_ms());
        let cell = Cell {
            expires_at: AtomicU64::new(ticket.expires_at),
            // The latest a final transition can move the expiry to.
            evict_at: ticket.expires_at + FINAL_STATE_GRACE_MS,
            ticket: Mutex::new(Arc::new(ticket.clone())),
        };
        if let Some(old) = self.tickets.insert(ticket.id.clone(), Arc::new(cell)) {
            lock(&self.expiries).remove(old.expires_at.load(Ordering::Acquire));
        }
        Ok(())
    }

    async fn get(&self, id: &TicketId) -> Result<Option<Arc<Ticket>>, StoreError> {
        Ok(self.cell(id).map(|c| Arc::clone(&c.lock())))
    }

    async fn transition(&self, id: &TicketId, change: Change) -> Result<Arc<Ticket>, StoreError> {
        let cell = self.cell(id).ok_or(StoreError::NotFound)?;
        let mut current = cell.lock();
        let next = current.apply(change, now_ms())?;
        if next.expires_at != current.expires_at {
            let mut expiries = lock(&self.expiries);
            expiries.remove(current.expires_at);
            expiries.add(next.expires_at, now_ms());
        }
        cell.expires_at.store(next.expires_at, Ordering::Release);
        let next = Arc::new(next);
        *current = Arc::clone(&next);
        Ok(next)
    }

    async fn live_count(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.expiries).count(now_ms()))
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
        store.run_pending_tasks();
        assert_eq!(store.live_count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn entries_go_after_the_grace_in_bounded_slices_and_a_replaced_one_stays() {
        let store = MemoryStore::new();
        let now = now_ms();
        // Due for eviction already: first expiry plus the grace in the past.
        let mut old = Vec::new();
        for _ in 0..EVICT_SLICE + 10 {
            let mut t = ticket(60_000);
            t.expires_at = now - FINAL_STATE_GRACE_MS - 1;
            store.insert(&t).await.unwrap();
            old.push(t);
        }
        // The same id inserted again, alive: its earlier entry's turn in
        // the queue must not take the new one.
        let mut again = old[0].clone();
        again.expires_at = now + 60_000;
        store.insert(&again).await.unwrap();
        let alive = ticket(60_000);
        store.insert(&alive).await.unwrap();
        assert_eq!(store.entry_count(), EVICT_SLICE + 11);
        assert_eq!(store.evict_slice(), EVICT_SLICE, "one slice at most");
        assert_eq!(store.evict_slice(), 10);
        assert_eq!(store.evict_slice(), 0);
        assert_eq!(store.entry_count(), 2);
        assert!(store.get(&again.id).await.unwrap().is_some());
        assert!(store.get(&alive.id).await.unwrap().is_some());
        assert_eq!(store.live_count().await.unwrap(), 2);
    }
}
