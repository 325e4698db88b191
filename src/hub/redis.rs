//! The hub across instances: a change anywhere wakes this instance's
//! waiters of that ticket, over Redis pub/sub.
//!
//! Each instance holds ONE subscription (`crate::redis::Subscription`), to
//! one channel (`P:changes`), whose messages are ticket ids. A message wakes
//! only that ticket's local waiters (usually none: an instance hears every
//! change but acts on its own sockets); the waiters then re-read the store,
//! which is the truth.
//!
//! Pub/sub is at-most-once, so two things make up for lost messages:
//! - While the subscription is down, the watched tickets are re-read about
//!   once a second, and once it is back they are re-read once more (the
//!   catch-up): a change made meanwhile still reaches its browser. These
//!   reads are batched (`MGET`, on a connection of their own) and wake only
//!   the waiters whose ticket changed since the previous read. Before, every
//!   waiter re-read its own ticket each second: with 10,000 sockets per
//!   instance that was 10,000 reads a second added to the retry storm of a
//!   failover, on the connection the requests needed.
//! - A publish that fails (this instance's connection broke, or timed out,
//!   while the other instances' subscriptions were fine) is retried in the
//!   background until it goes through: otherwise the other instances would
//!   never hear of that change and its browser would wait until its ticket
//!   expired (the late pushes after a Redis restart in docs/redis.md).
//!
//! `live()` says whether the subscription is up right now: `/readyz`
//! answers 200 only then, so an instance that reports ready also hears
//! other instances' pushes.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tokio::sync::{Notify, watch};

use super::{Hub, Waiter, Waiters};
use crate::redis::subscription::State;
use crate::redis::{Lane, Redis, Subscription, ticket_key};
use crate::throttle::Throttle;
use crate::ticket::TicketId;

/// How often watched tickets are re-read while the subscription is down.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Keys per `MGET`.
const SWEEP_BATCH: usize = 500;
/// Failed publishes kept for retrying; past this (an outage of this size
/// leaves the other instances deaf too, and their catch-up covers it)
/// further ones are dropped.
const MAX_UNSENT: usize = 100_000;
const REPUBLISH_MIN_BACKOFF: Duration = Duration::from_millis(50);
const REPUBLISH_MAX_BACKOFF: Duration = Duration::from_millis(500);

pub struct RedisHub {
    waiters: Arc<Waiters>,
    redis: Redis,
    channel: String,
    subscription: Subscription,
    unsent: Arc<Unsent>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl RedisHub {
    /// Start the subscription (in the background: it retries until Redis
    /// answers) and return the hub.
    pub fn start(redis: Redis, prefix: &str) -> Self {
        let waiters = Arc::new(Waiters::default());
        let channel = format!("{prefix}:changes");
        let heard = waiters.clone();
        let subscription = Subscription::start(redis.clone(), channel.clone(), move |payload| {
            let id = std::str::from_utf8(payload)
                .ok()
                .and_then(|p| p.parse::<TicketId>().ok());
            if let Some(id) = id {
                heard.wake(&id);
            }
        });
        let sweeper = Sweeper {
            redis: redis.clone(),
            prefix: prefix.to_owned(),
            waiters: waiters.clone(),
            seen: HashMap::new(),
        };
        let sweeps = tokio::spawn(sweeper.run(subscription.state()));
        let unsent = Arc::new(Unsent::default());
        let republish = tokio::spawn(republish(redis.clone(), channel.clone(), unsent.clone()));
        Self {
            waiters,
            redis,
            channel,
            subscription,
            unsent,
            tasks: [sweeps.abort_handle(), republish.abort_handle()],
        }
    }
}

impl Drop for RedisHub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Hub for RedisHub {
    fn watch(&self, id: &TicketId) -> Waiter {
        self.waiters.watch(id)
    }

    async fn publish(&self, id: &TicketId) {
        // Local waiters need not wait for the round trip.
        self.waiters.wake(id);
        if let Err(e) = self.redis.publish(&self.channel, id.as_str()).await {
            static LOGGED: Throttle = Throttle::new(Duration::from_secs(1));
            if let Some(held_back) = LOGGED.pass() {
                tracing::warn!(error = %e, ticket = id.short(), held_back, "publish failed; retrying");
            }
            self.unsent.add(id);
        }
    }

    fn waiters_of(&self, id: &TicketId) -> usize {
        self.waiters.count(id)
    }

    fn wake_all(&self) {
        self.waiters.wake_all();
    }

    fn live(&self) -> bool {
        self.subscription.live()
    }
}

/// The safety net for lost messages (see the module's comment).
struct Sweeper {
    redis: Redis,
    prefix: String,
    waiters: Arc<Waiters>,
    /// A fingerprint of each watched ticket's stored value at the last
    /// read; emptied after each catch-up, so it only exists while the
    /// subscription is down.
    seen: HashMap<TicketId, u64>,
}

impl Sweeper {
    /// Follow the subscription's state until the hub is dropped.
    async fn run(mut self, mut state: watch::Receiver<State>) {
        let mut caught_up = 0;
        loop {
            let now = *state.borrow_and_update();
            if now.live {
                if now.epoch != caught_up {
                    // Anything may have changed before we were listening.
                    caught_up = now.epoch;
                    self.read(true).await;
                    self.seen = HashMap::new();
                    continue;
                }
                if state.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let pause = SWEEP_EVERY.mul_f64(rand::rng().random_range(0.8..1.2));
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(pause) => self.read(false).await,
            }
        }
    }

    /// Read every watched ticket, in batches, and wake the waiters of those
    /// whose value differs from the last read (all of them on the first
    /// read). A batch that fails wakes its waiters when `catch_up` (they
    /// read for themselves), and is tried again at the next sweep otherwise.
    async fn read(&mut self, catch_up: bool) {
        let ids = self.waiters.watched();
        let mut seen = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(SWEEP_BATCH) {
            let mut mget = redis::cmd("MGET");
            for id in batch {
                mget.arg(ticket_key(&self.prefix, id));
            }
            match self
                .redis
                .query_on::<Vec<Option<Vec<u8>>>>(Lane::Sweeps, "sweep", &mget)
                .await
            {
                Ok(values) if values.len() == batch.len() => {
                    for (id, value) in batch.iter().zip(values) {
                        let print = fingerprint(value.as_deref());
                        if self.seen.get(id) != Some(&print) {
                            match value {
                                None => self.waiters.wake_gone(id),
                                Some(_) => self.waiters.wake(id),
                            }
                        }
                        seen.insert(id.clone(), print);
                    }
                }
                _ if catch_up => batch.iter().for_each(|id| self.waiters.wake(id)),
                _ => {
                    for id in batch {
                        if let Some(print) = self.seen.get(id) {
                            seen.insert(id.clone(), *print);
                        }
                    }
                }
            }
        }
        self.seen = seen;
    }
}

fn fingerprint(value: Option<&[u8]>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Ticket ids whose publish failed, to be published again.
#[derive(Default)]
struct Unsent {
    ids: Mutex<HashSet<TicketId>>,
    added: Notify,
}

impl Unsent {
    fn add(&self, id: &TicketId) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() < MAX_UNSENT {
            ids.insert(id.clone());
        }
        drop(ids);
        self.added.notify_one();
    }

    fn take(&self) -> Vec<TicketId> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.drain().collect()
    }
}

/// Publish the failed publishes again, with backoff, until they go through.
async fn republish(redis: Redis, channel: String, unsent: Arc<Unsent>) {
    let mut backoff = REPUBLISH_MIN_BACKOFF;
    loop {
        let mut ids = unsent.take();
        if ids.is_empty() {
            unsent.added.notified().await;
            continue;
        }
        while let Some(id) = ids.pop() {
            if redis.publish(&channel, id.as_str()).await.is_err() {
                unsent.add(&id);
                ids.iter().for_each(|id| unsent.add(id));
                break;
            }
            metrics::counter!("qrlogin_redis_republished_total").increment(1);
        }
        if unsent
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            backoff = REPUBLISH_MIN_BACKOFF;
        } else {
            let jitter = rand::rng().random_range(0.8..1.2);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(REPUBLISH_MAX_BACKOFF);
        }
    }
}
