//! The hub across instances: a change anywhere wakes this instance's
//! waiters of that ticket, over Redis pub/sub.
//!
//! Each instance holds ONE subscription, to one channel (`P:changes`), whose
//! messages are ticket ids. A message wakes only that ticket's local waiters
//! (usually none: an instance hears every change but acts on its own
//! sockets); the waiters then re-read the store, which is the truth.
//!
//! Pub/sub is at-most-once: while the subscription is down, messages are
//! lost. So after every (re)subscription all locally watched tickets are
//! woken and re-read — a change made while it was down is still delivered.
//! The subscription is checked with a `PING` every few seconds, so a silent
//! network failure is noticed too, and it reconnects by itself with capped
//! exponential backoff (`qrlogin_redis_reconnects_total`,
//! `qrlogin_redis_errors_total{op="subscribe"}`).
//!
//! `live()` says whether the subscription is up right now: `/readyz`
//! answers 200 only then, so an instance that reports ready also hears
//! other instances' pushes. The backoff is capped low (`MAX_BACKOFF`) so
//! that, once Redis is back, readiness returns within about a second.
//!
//! Sentinel: the subscription goes to the master the sentinels name at
//! each (re)connection; a failover breaks it, and the next attempt finds
//! the new master. A publish on a master reaches subscribers on its
//! replicas too.
//!
//! Redis Cluster: classic `PUBLISH`/`SUBSCRIBE` is broadcast to every node
//! over the cluster bus, so a publish through any node reaches a subscriber
//! on any other; the subscription goes to the first configured node that
//! answers. One channel per deployment keeps that at one subscription per
//! instance (sharded pub/sub would need one per shard). Login traffic is
//! small enough that the broadcast costs nothing worth a shard-aware design.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};

use super::{Hub, Waiter, Waiters};
use crate::store::redis::{Redis, count_error};
use crate::ticket::TicketId;

/// How often an idle subscription proves it is alive.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Longest a connect, subscribe or ping may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often local waiters re-read the store while the subscription is down.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Low enough that readiness (and pushes) come back within about a second
/// of Redis; a retry costs one connection attempt.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

pub struct RedisHub {
    waiters: Arc<Waiters>,
    redis: Redis,
    channel: String,
    /// Whether the subscription is up (see `live`).
    subscribed: Arc<AtomicBool>,
    listener: tokio::task::AbortHandle,
}

impl RedisHub {
    /// Start the subscription (in the background: it retries until Redis
    /// answers) and return the hub.
    pub fn start(redis: Redis, prefix: &str) -> Self {
        let waiters = Arc::new(Waiters::default());
        let channel = format!("{prefix}:changes");
        let subscribed = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen(
            redis.clone(),
            channel.clone(),
            waiters.clone(),
            subscribed.clone(),
        ));
        Self {
            waiters,
            redis,
            channel,
            subscribed,
            listener: listener.abort_handle(),
        }
    }
}

impl Drop for RedisHub {
    fn drop(&mut self) {
        self.listener.abort();
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
            // Other instances re-read everything when their subscription
            // comes back; until then their sockets keep the last state.
            tracing::warn!(error = %e, ticket = id.short(), "publish failed");
        }
    }

    fn waiters_of(&self, id: &TicketId) -> usize {
        self.waiters.count(id)
    }

    fn live(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

/// Subscribe, deliver, and on any failure reconnect with backoff — forever
/// (until the hub is dropped).
async fn listen(redis: Redis, channel: String, waiters: Arc<Waiters>, subscribed: Arc<AtomicBool>) {
    let mut backoff = MIN_BACKOFF;
    let mut node = 0usize;
    let mut ever_subscribed = false;
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let attempt = match redis.pubsub_client(node).await {
            Ok(client) => subscribe(&client, &channel).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok((sink, stream)) => {
                if ever_subscribed {
                    metrics::counter!("qrlogin_redis_reconnects_total").increment(1);
                    tracing::info!("redis subscription restored");
                }
                ever_subscribed = true;
                backoff = MIN_BACKOFF;
                subscribed.store(true, Ordering::Release);
                // Anything may have changed while we were not listening.
                waiters.wake_all();
                let cause = deliver(sink, stream, &waiters).await;
                subscribed.store(false, Ordering::Release);
                count_error("subscribe");
                tracing::warn!(%cause, "redis subscription lost; reconnecting");
            }
            Err(cause) => {
                count_error("subscribe");
                tracing::warn!(%cause, "redis subscription failed; retrying");
                node = node.wrapping_add(1);
                // The safety net while deaf: local waiters re-read the
                // store about once a second, so a change another instance
                // made still arrives.
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    waiters.wake_all();
                    last_sweep = tokio::time::Instant::now();
                }
            }
        }
        let jitter = rand::rng().random_range(0.8..1.2);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<(PubSubSink, PubSubStream), String> {
    let steps = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match tokio::time::timeout(STEP_TIMEOUT, steps).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Wake waiters per message until the subscription breaks; returns why.
async fn deliver(mut sink: PubSubSink, mut stream: PubSubStream, waiters: &Waiters) -> String {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed".into() };
                let id = msg.get_payload::<String>().ok().and_then(|p| p.parse::<TicketId>().ok());
                if let Some(id) = id {
                    waiters.wake(&id);
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(STEP_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping: {e}"),
                    Err(_) => return "ping timed out".into(),
                }
            }
        }
    }
}
