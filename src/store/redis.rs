//! Tickets in Redis, so any instance can serve any request (several
//! instances behind a load balancer, no sticky sessions). The connection
//! itself (URL forms, TLS, Sentinel, bounds on commands) is `crate::redis`.
//!
//! Layout, every key under the deployment's prefix `P`:
//! - `P:t:{<id>}` — the ticket as JSON (the browser secret only as its
//!   SHA-256), with a Redis TTL ending at `expires_at`. The braces are a hash
//!   tag: everything about one ticket lives in one cluster slot.
//! - `P:live` — a sorted set of ticket ids scored by `expires_at`, trimmed
//!   with `ZREMRANGEBYSCORE` when counted: `live_count` costs O(log n) plus
//!   the expired entries it removes, never a scan.
//! - `P:v:<key>` — small shared values (WeChat event de-duplication, the
//!   shared access token) with their own TTL.
//!
//! A transition reads the ticket, runs the pure `Ticket::apply` in Rust, then
//! writes with a Lua compare-and-set on the exact old value (with the TTL of
//! the new value's `expires_at`); on a mismatch someone else won the race
//! and we start over from a fresh read. So racing instances have exactly one winner, and the state
//! machine lives in one place for every engine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{StoreError, TicketStore};
use crate::redis::{Failed, failed};
pub use crate::redis::{Redis, ReplicaWait, Target, TlsFiles, redact};
use crate::ticket::{Change, Ticket, TicketId, now_ms};

impl From<Failed> for StoreError {
    fn from(e: Failed) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Compare-and-set attempts before giving up; only reached under extreme
/// contention, since a ticket has at most three transitions.
const MAX_CAS_ATTEMPTS: usize = 64;

/// Write `ARGV[2]` with a TTL of `ARGV[3]` ms only if the key still holds
/// `ARGV[1]`. The TTL follows the new value's `expires_at`, which a final
/// state may extend (`Ticket::apply`).
const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Drop the expired members of the live set, then count it.
const COUNT_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

/// How long a count of live tickets is used again (plus this instance's
/// creations since). The cap on live tickets guards against floods; it is
/// not an exact figure, and counting is a Lua script with a range removal
/// that every creation paid for, a third of a creation's Redis commands.
const COUNT_REUSE_MS: u64 = 250;

/// The last count of live tickets and what this instance added since.
#[derive(Default)]
struct LiveCount {
    counted: u64,
    /// When the last count began (0: never).
    at_ms: u64,
    added: u64,
}

/// Tickets and shared values in Redis under one key prefix.
pub struct RedisStore {
    redis: Redis,
    prefix: String,
    live_key: String,
    cas: Script,
    count: Script,
    live: std::sync::Mutex<LiveCount>,
}

impl RedisStore {
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            live_key: format!("{prefix}:live"),
            cas: Script::new(CAS_SCRIPT),
            count: Script::new(COUNT_SCRIPT),
            live: std::sync::Mutex::default(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, LiveCount> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ticket_key(&self, id: &TicketId) -> String {
        crate::redis::ticket_key(&self.prefix, id)
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.prefix)
    }

    /// The stored JSON and the live ticket it holds, if any.
    async fn read(&self, id: &TicketId) -> Result<Option<(String, Ticket)>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.ticket_key(id));
        let Some(raw) = self.redis.query::<Option<String>>("get", &get).await? else {
            return Ok(None);
        };
        let ticket: Ticket =
            serde_json::from_str(&raw).map_err(|e| failed("decode", format!("ticket: {e}")))?;
        Ok((now_ms() < ticket.expires_at).then_some((raw, ticket)))
    }
}

/// A TTL Redis accepts (`PX 0` is an error).
fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn insert(&self, ticket: &Ticket) -> Result<(), StoreError> {
        let ttl = ticket.expires_at.saturating_sub(now_ms());
        if ttl == 0 {
            return Ok(()); // already past its time: nothing to keep
        }
        let json = serde_json::to_string(ticket).map_err(|e| failed("encode", e))?;
        let mut set = redis::cmd("SET");
        set.arg(self.ticket_key(&ticket.id))
            .arg(json)
            .arg("PX")
            .arg(ttl);
        // A separate key (and, in a cluster, slot): not atomic with the SET,
        // which only makes the count approximate for a moment.
        let mut add = redis::cmd("ZADD");
        add.arg(&self.live_key)
            .arg(ticket.expires_at)
            .arg(ticket.id.as_str());
        tokio::try_join!(
            self.redis.query::<()>("insert", &set),
            self.redis.query::<()>("insert", &add)
        )?;
        self.live().added += 1;
        Ok(())
    }

    async fn get(&self, id: &TicketId) -> Result<Option<Arc<Ticket>>, StoreError> {
        Ok(self.read(id).await?.map(|(_, t)| Arc::new(t)))
    }

    async fn transition(&self, id: &TicketId, change: Change) -> Result<Arc<Ticket>, StoreError> {
        let key = self.ticket_key(id);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((raw, current)) = self.read(id).await? else {
                return Err(StoreError::NotFound);
            };
            let next = current.apply(change.clone(), now_ms())?;
            let json = serde_json::to_string(&next).map_err(|e| failed("encode", e))?;
            let ttl = Duration::from_millis(next.expires_at.saturating_sub(now_ms()));
            let mut cas = self.cas.key(&key);
            cas.arg(raw).arg(json).arg(px(ttl));
            let (won, written) = self.redis.change::<i64>("transition", &cas).await?;
            if won == 1 {
                self.redis.replicate(written).await;
                return Ok(Arc::new(next));
            }
            metrics::counter!("qrlogin_redis_cas_retries_total").increment(1);
        }
        Err(failed("transition", "too much contention on one ticket").into())
    }

    async fn live_count(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        {
            let mut live = self.live();
            if live.at_ms > 0 && now.saturating_sub(live.at_ms) < COUNT_REUSE_MS {
                return Ok(live.counted + live.added);
            }
            // This caller counts; the others use the last count meanwhile.
            // Marked by its start time, not a flag, so a count that fails or
            // is cancelled with its request leaves nothing to undo: the next
            // caller after `COUNT_REUSE_MS` counts again.
            live.at_ms = now;
        }
        let mut count = self.count.key(&self.live_key);
        count.arg(now);
        let counted = self.redis.invoke("live_count", &count).await?;
        *self.live() = LiveCount {
            counted,
            at_ms: now,
            added: 0,
        };
        Ok(counted)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = redis::cmd("PING");
        self.redis.query::<String>("ping", &ping).await?;
        Ok(())
    }

    async fn put_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.value_key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(px(ttl));
        let done: Option<String> = self.redis.query("put_new", &set).await?;
        Ok(done.is_some())
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.value_key(key))
            .arg(value)
            .arg("PX")
            .arg(px(ttl));
        Ok(self.redis.query("put", &set).await?)
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.value_key(key));
        Ok(self.redis.query("get_value", &get).await?)
    }

    async fn remove_value(&self, key: &str) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.value_key(key));
        Ok(self.redis.query("remove_value", &del).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_key_carries_its_hash_tag() {
        let store = RedisStore::new(
            Redis::open("redis://127.0.0.1:1", &TlsFiles::default()).unwrap(),
            "p",
        );
        let id: TicketId = "abc".parse().unwrap();
        assert_eq!(store.ticket_key(&id), "p:t:{abc}");
        assert_eq!(store.value_key("wx:evt:1"), "p:v:wx:evt:1");
    }

    #[test]
    fn a_tiny_ttl_is_still_a_ttl() {
        assert_eq!(px(Duration::ZERO), 1);
        assert_eq!(px(Duration::from_secs(2)), 2000);
    }
}
