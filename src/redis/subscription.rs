//! One pub/sub subscription to one channel, kept up for as long as it is
//! held: connected on start, checked with a `PING` every few seconds (so a
//! silent network failure is noticed too), and reconnected with capped
//! exponential backoff after any failure (`qrlogin_redis_reconnects_total`,
//! `qrlogin_redis_errors_total{op="subscribe"}`).
//!
//! Pub/sub is at-most-once: while the subscription is down, messages are
//! lost. `Subscription::state` says whether it is up and counts the
//! (re)subscriptions, so its user can make up for what it may have missed.
//!
//! Where it goes: with Sentinel to the master the sentinels name at each
//! (re)connection (a failover breaks it, the next attempt finds the new
//! master; a publish on a master reaches subscribers on its replicas too);
//! otherwise to the configured nodes in turn (in a cluster, classic pub/sub
//! is broadcast to every node, so any node hears every publish).

use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};
use std::time::Duration;
use tokio::sync::watch;

use super::{Redis, count_error};

/// How often an idle subscription proves it is alive.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Longest a connect, subscribe or ping may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Low enough that readiness (and pushes) come back within about a second
/// of Redis; a retry costs one connection attempt.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The subscription's state, as its user sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Subscribed right now.
    pub live: bool,
    /// Successful (re)subscriptions so far: a change means messages may
    /// have been lost before it.
    pub epoch: u64,
}

/// A subscription kept up in the background; dropping it unsubscribes.
pub struct Subscription {
    state: watch::Receiver<State>,
    task: tokio::task::AbortHandle,
}

impl Subscription {
    /// Subscribe to `channel` (in the background: it retries until Redis
    /// answers); every message's payload goes to `on_message`.
    pub fn start(
        redis: Redis,
        channel: String,
        on_message: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> Self {
        let (tx, state) = watch::channel(State::default());
        let task = tokio::spawn(keep_up(redis, channel, tx, on_message));
        Self {
            state,
            task: task.abort_handle(),
        }
    }

    /// Whether it is up, and how many times it came up (`State`); the
    /// receiver is told of every change.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    pub fn live(&self) -> bool {
        self.state.borrow().live
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribe, deliver, and on any failure reconnect with backoff — forever
/// (until the subscription is dropped).
async fn keep_up(
    redis: Redis,
    channel: String,
    state: watch::Sender<State>,
    on_message: impl Fn(&[u8]) + Send + Sync + 'static,
) {
    let mut backoff = MIN_BACKOFF;
    let mut node = 0usize;
    loop {
        let attempt = match redis.pubsub_client(node).await {
            Ok(client) => subscribe(&client, &channel).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok((sink, stream)) => {
                let mut epoch = 0;
                state.send_modify(|s| {
                    s.live = true;
                    s.epoch += 1;
                    epoch = s.epoch;
                });
                if epoch > 1 {
                    metrics::counter!("qrlogin_redis_reconnects_total").increment(1);
                    tracing::info!("redis subscription restored");
                }
                backoff = MIN_BACKOFF;
                let cause = deliver(sink, stream, &on_message).await;
                state.send_modify(|s| s.live = false);
                count_error("subscribe");
                tracing::warn!(%cause, "redis subscription lost; reconnecting");
            }
            Err(cause) => {
                count_error("subscribe");
                tracing::warn!(%cause, "redis subscription failed; retrying");
                node = node.wrapping_add(1);
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

/// Hand every message to `on_message` until the subscription breaks;
/// returns why.
async fn deliver(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    on_message: &impl Fn(&[u8]),
) -> String {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed".into() };
                on_message(msg.get_payload_bytes());
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
