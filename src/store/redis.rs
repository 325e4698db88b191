//! The shared engine: tickets in Redis, so any instance can serve any
//! request (several instances behind a load balancer, no sticky sessions).
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
//!
//! `Redis` is the connection both the store and the hub use: one server
//! (`redis://`, through a `ConnectionManager` that reconnects by itself) or a
//! cluster (`redis+cluster://` or a comma list of nodes). It connects lazily,
//! so the service starts while Redis is still coming up and reports not
//! ready until it answers. Every command is bounded by a timeout, and every
//! failure is counted (`qrlogin_redis_errors_total{op}`) and becomes
//! `StoreError::Unavailable`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Script, ScriptInvocation, Value,
};
use tokio::sync::OnceCell;

use super::{StoreError, TicketStore};
use crate::ticket::{Change, Ticket, TicketId, now_ms};

/// Longest any single Redis operation may take before it counts as down:
/// a request should fail fast with 503 rather than hang.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
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

/// Count one failed Redis operation (`qrlogin_redis_errors_total{op}`).
pub(crate) fn count_error(op: &'static str) {
    metrics::counter!("qrlogin_redis_errors_total", "op" => op).increment(1);
}

/// Count and describe a failed Redis operation.
fn failed(op: &'static str, cause: impl std::fmt::Display) -> StoreError {
    count_error(op);
    StoreError::Unavailable(format!("redis {op}: {cause}"))
}

/// Whether `e` means the connection broke (worth one immediate retry).
fn lost_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Run one Redis operation under `OP_TIMEOUT`.
async fn bounded<T>(
    op: &'static str,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(op, e)),
        Err(_) => Err(failed(op, "timed out")),
    }
}

/// Where Redis is, parsed from `QRLOGIN_REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (`redis://…`).
    Single(String),
    /// Cluster seed nodes, each as a `redis://` URL.
    Cluster(Vec<String>),
}

impl Target {
    /// `redis://[user:pass@]host:port[/db]` is one server;
    /// `redis+cluster://[user:pass@]host1:port1,host2:port2,…` or a comma list
    /// `redis://host1:port1,redis://host2:port2` is a cluster given by seed
    /// nodes (any reachable node is enough; the rest are discovered).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| h.trim().trim_end_matches('/'))
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err("redis+cluster:// names no node".into());
            }
            return Ok(Target::Cluster(nodes));
        }
        if url.contains(',') {
            let nodes: Vec<String> = url
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect();
            if let Some(bad) = nodes
                .iter()
                .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                return Err(format!("cluster node {bad:?} is not a redis:// URL"));
            }
            return Ok(Target::Cluster(nodes));
        }
        Ok(Target::Single(url.to_owned()))
    }
}

/// A live connection to either kind of deployment; cheap to clone (both are
/// multiplexed handles).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Clients {
    Single(redis::Client),
    Cluster(ClusterClient),
}

struct Inner {
    clients: Clients,
    /// One plain client per node, for the hub's pub/sub connection.
    nodes: Vec<redis::Client>,
    conn: OnceCell<Conn>,
}

/// The Redis deployment of this instance: the command connection (made on
/// first use and kept; it reconnects by itself) and what pub/sub needs.
#[derive(Clone)]
pub struct Redis(Arc<Inner>);

impl Redis {
    /// Parse the URL and prepare clients; connects on first use, so this
    /// fails only on a malformed URL.
    pub fn open(url: &str) -> Result<Self, String> {
        let target = Target::parse(url)?;
        let describe = |e: redis::RedisError| format!("QRLOGIN_REDIS_URL: {e}");
        let (clients, node_urls) = match target {
            Target::Single(url) => (
                Clients::Single(redis::Client::open(url.as_str()).map_err(describe)?),
                vec![url],
            ),
            Target::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(OP_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()
                    .map_err(describe)?;
                (Clients::Cluster(client), nodes)
            }
        };
        let nodes = node_urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(describe)?;
        Ok(Self(Arc::new(Inner {
            clients,
            nodes,
            conn: OnceCell::new(),
        })))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0.clients, Clients::Cluster(_))
    }

    /// One client per configured node; pub/sub connects to the first that
    /// answers.
    pub fn nodes(&self) -> &[redis::Client] {
        &self.0.nodes
    }

    /// The command connection, connecting now if this is the first use or
    /// every earlier attempt failed.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        let conn = self
            .0
            .conn
            .get_or_try_init(|| async {
                let connect = async {
                    match &self.0.clients {
                        Clients::Single(client) => {
                            let config = ConnectionManagerConfig::new()
                                .set_connection_timeout(CONNECT_TIMEOUT)
                                .set_response_timeout(OP_TIMEOUT)
                                .set_number_of_retries(1)
                                .set_factor(50)
                                .set_max_delay(500);
                            ConnectionManager::new_with_config(client.clone(), config)
                                .await
                                .map(Conn::Single)
                        }
                        Clients::Cluster(client) => {
                            client.get_async_connection().await.map(Conn::Cluster)
                        }
                    }
                };
                bounded("connect", connect).await
            })
            .await?;
        Ok(conn.clone())
    }

    /// Run `cmd`. A command that finds the connection lost is retried once
    /// at once: the failure is what makes the connection manager reconnect,
    /// so after an outage the first request succeeds instead of failing.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        bounded(op, async move {
            match cmd.query_async(&mut conn).await {
                Err(e) if lost_connection(&e) => cmd.query_async(&mut conn).await,
                done => done,
            }
        })
        .await
    }

    /// Run a Lua script, retried like `query`.
    async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        bounded(op, async move {
            match script.invoke_async(&mut conn).await {
                Err(e) if lost_connection(&e) => script.invoke_async(&mut conn).await,
                done => done,
            }
        })
        .await
    }

    /// `PUBLISH channel message`. In a cluster any node will do: classic
    /// pub/sub messages are broadcast to every node over the cluster bus.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.query::<i64>("publish", &cmd).await.map(|_| ())
    }
}

/// Tickets and shared values in Redis under one key prefix.
pub struct RedisStore {
    redis: Redis,
    prefix: String,
    live_key: String,
    cas: Script,
    count: Script,
}

impl RedisStore {
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            live_key: format!("{prefix}:live"),
            cas: Script::new(CAS_SCRIPT),
            count: Script::new(COUNT_SCRIPT),
        }
    }

    fn ticket_key(&self, id: &TicketId) -> String {
        format!("{}:t:{{{}}}", self.prefix, id.as_str())
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
        Ok(())
    }

    async fn get(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        Ok(self.read(id).await?.map(|(_, t)| t))
    }

    async fn transition(&self, id: &TicketId, change: Change) -> Result<Ticket, StoreError> {
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
            if self.redis.invoke::<i64>("transition", &cas).await? == 1 {
                return Ok(next);
            }
            metrics::counter!("qrlogin_redis_cas_retries_total").increment(1);
        }
        Err(failed("transition", "too much contention on one ticket"))
    }

    async fn live_count(&self) -> Result<u64, StoreError> {
        let mut count = self.count.key(&self.live_key);
        count.arg(now_ms());
        self.redis.invoke("live_count", &count).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = redis::cmd("PING");
        self.redis.query::<String>("ping", &ping).await.map(|_| ())
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
        self.redis.query("put", &set).await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.value_key(key));
        self.redis.query("get_value", &get).await
    }

    async fn remove_value(&self, key: &str) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.value_key(key));
        self.redis.query("remove_value", &del).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_url() {
        assert_eq!(
            Target::parse("redis://:pw@10.0.0.1:6380/2"),
            Ok(Target::Single("redis://:pw@10.0.0.1:6380/2".into()))
        );
    }

    #[test]
    fn cluster_urls_name_every_seed_with_the_credentials() {
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:7000,b:7001/"),
            Ok(Target::Cluster(vec![
                "redis://u:p@a:7000".into(),
                "redis://u:p@b:7001".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis://a:7000, redis://b:7001"),
            Ok(Target::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis://a:7000,b:7001").is_err());
    }

    #[test]
    fn tls_urls_are_refused_at_start_in_this_build() {
        let err = Redis::open("rediss://127.0.0.1:6380").err().unwrap();
        assert!(err.starts_with("QRLOGIN_REDIS_URL"), "{err}");
    }

    #[test]
    fn a_ticket_key_carries_its_hash_tag() {
        let store = RedisStore::new(Redis::open("redis://127.0.0.1:1").unwrap(), "p");
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
