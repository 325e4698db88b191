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
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Script, ScriptInvocation, Value,
};

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
    /// One server (`redis://…` or `rediss://…`).
    Single(String),
    /// Cluster seed nodes, each as a `redis://` or `rediss://` URL.
    Cluster(Vec<String>),
    /// A master found through Sentinel.
    Sentinel(SentinelTarget),
}

/// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>[/db]`: the
/// sentinels to ask, the master's name, and how to talk to the data nodes
/// (the URL's credentials are theirs, as with a replicated Redis the
/// sentinels usually run without a password).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `rediss+sentinel://`: TLS to the sentinels and the data nodes.
    pub tls: bool,
}

/// Never shows the password, even in a test's failure message.
impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Percent-decoding of a URL's user or password (`%40` for `@`).
fn decode(part: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "the credentials are not UTF-8".to_owned())
}

/// `host:port` (IPv6 in brackets), with `default` when the port is left out.
fn host_port(node: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = match node.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{node:?}: the port is not a number"))?;
            (h, port)
        }
        _ => (node, default),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{node:?} names no host"));
    }
    Ok((host.to_owned(), port))
}

impl SentinelTarget {
    fn parse(rest: &str, tls: bool) -> Result<Self, String> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(auth) => {
                let (user, pass) = match auth.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (auth, None),
                };
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                let pass = pass.filter(|p| !p.is_empty()).map(decode).transpose()?;
                (user, pass)
            }
        };
        let mut parts = rest.split('/');
        let hosts = parts.next().unwrap_or_default();
        let master = parts.next().unwrap_or_default().to_owned();
        let db = match parts.next().filter(|d| !d.is_empty()) {
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| format!("database {d:?} is not a number"))?,
            None => 0,
        };
        if parts.any(|p| !p.is_empty()) {
            return Err("redis+sentinel:// takes /<master-name>[/db] after the hosts".into());
        }
        if master.is_empty() {
            return Err("redis+sentinel:// names no master (…/<master-name>)".into());
        }
        let sentinels = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| host_port(h, 26379))
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err("redis+sentinel:// names no sentinel".into());
        }
        Ok(Self {
            sentinels,
            master,
            db,
            username,
            password,
            tls,
        })
    }
}

impl Target {
    /// `redis://[user:pass@]host:port[/db]` is one server;
    /// `redis+cluster://[user:pass@]host1:port1,host2:port2,…` or a comma list
    /// `redis://host1:port1,redis://host2:port2` is a cluster given by seed
    /// nodes (any reachable node is enough; the rest are discovered);
    /// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>[/db]` a
    /// master that sentinels name. Each has a TLS form (`rediss…`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return SentinelTarget::parse(rest, tls).map(Target::Sentinel);
            }
        }
        for (scheme, node_scheme) in [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| h.trim().trim_end_matches('/'))
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}{auth}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(format!("{scheme} names no node"));
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
                return Err(format!(
                    "cluster node {:?} is not a redis:// URL",
                    redact(bad)
                ));
            }
            return Ok(Target::Cluster(nodes));
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(
                "must start with redis://, rediss://, redis+cluster://, rediss+cluster:// \
                 or redis+sentinel://"
                    .into(),
            );
        }
        Ok(Target::Single(url.to_owned()))
    }

    /// Whether every connection is TLS.
    pub fn tls(&self) -> bool {
        match self {
            Target::Single(url) => url.starts_with("rediss://"),
            Target::Cluster(nodes) => nodes.iter().all(|n| n.starts_with("rediss://")),
            Target::Sentinel(s) => s.tls,
        }
    }

    /// What the logs may say about the deployment.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Single(_) => "single",
            Target::Cluster(_) => "cluster",
            Target::Sentinel(_) => "sentinel",
        }
    }
}

/// `url` with any password replaced by `***`, for logs and error messages:
/// every form of `QRLOGIN_REDIS_URL` (one URL, a comma list, the
/// `+cluster` and `+sentinel` forms) keeps its hosts and loses its secret.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let (scheme, rest) = match part.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, part),
            };
            let redacted = match rest.rsplit_once('@') {
                Some((auth, hosts)) => match auth.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{auth}@{hosts}"),
                },
                None => rest.to_owned(),
            };
            match scheme {
                Some(s) => format!("{s}://{redacted}"),
                None => redacted,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The TLS material from `QRLOGIN_REDIS_CA_FILE` and
/// `QRLOGIN_REDIS_CLIENT_CERT_FILE`/`…_KEY_FILE` (PEM bytes). Empty means
/// the system's roots and no client certificate.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    /// A client for one node URL: with our CA and client certificate when
    /// the URL is TLS and any was given, else as the URL says (a
    /// `rediss://` URL then verifies against the system's roots).
    fn client(&self, url: &str) -> RedisResult<redis::Client> {
        if url.starts_with("rediss://") && !self.is_empty() {
            redis::Client::build_with_tls(url, self.certificates())
        } else {
            redis::Client::open(url)
        }
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
    /// Asks the sentinels for the master on every (re)connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

struct Inner {
    clients: Clients,
    /// One plain client per node, for the hub's pub/sub connection (none
    /// with Sentinel: the subscription follows the master).
    nodes: Vec<redis::Client>,
    /// The command connection once made. With Sentinel it is dropped when
    /// the master it leads to fails or turns replica, so the next command
    /// asks the sentinels again.
    conn: std::sync::Mutex<Option<Conn>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Replicas to wait for after each ticket change (0: no wait).
    wait_replicas: u32,
    wait_timeout: Duration,
    /// Until when transitions skip the wait, after one that came back short.
    waits_paused_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// After a `WAIT` that came back with too few replicas, transitions skip
/// the wait for this long. `WAIT` blocks the whole connection it runs on,
/// and every request of the instance shares that connection: with no
/// replica left (a failover just promoted the only one) a wait after every
/// transition would queue each request behind a full timeout, and under
/// load the instance would answer nothing but timeouts (the Sentinel soak
/// showed 15 s of them after a promotion). Paused, at most one timeout per
/// second stalls the connection; the transitions skipped are counted like
/// the short waits (no replica would have acknowledged them anyway).
const WAIT_PAUSE: Duration = Duration::from_secs(1);

/// How many replicas must acknowledge each ticket change (`WAIT n ms`)
/// before it is answered, and how long to wait for them: a master killed
/// right after answering 200 then loses nothing a replica had acknowledged.
/// Best effort: when the wait ends short (no replica left after a
/// failover) the change still succeeds; the trade is up to `timeout` more
/// latency per change while too few replicas answer (docs/redis.md).
#[derive(Clone, Copy, Debug)]
pub struct ReplicaWait {
    /// `None`: 1 with Sentinel (a deployment that exists to survive a
    /// failover), 0 otherwise. Never used with Cluster (the settings refuse
    /// it: a cluster connection cannot send `WAIT` on the connection that
    /// made the write).
    pub replicas: Option<u32>,
    pub timeout: Duration,
}

impl Default for ReplicaWait {
    fn default() -> Self {
        Self {
            replicas: None,
            timeout: Duration::from_millis(100),
        }
    }
}

/// The Redis deployment of this instance: the command connection (made on
/// first use and kept; it reconnects by itself) and what pub/sub needs.
#[derive(Clone)]
pub struct Redis(Arc<Inner>);

impl Redis {
    /// Parse the URL and prepare clients; connects on first use, so this
    /// fails only on a malformed URL or unusable TLS material. Errors never
    /// contain the password.
    pub fn open(url: &str, tls: &TlsFiles) -> Result<Self, String> {
        Self::open_with(url, tls, ReplicaWait::default())
    }

    /// `open`, waiting for replicas after each ticket change as `wait` says.
    pub fn open_with(url: &str, tls: &TlsFiles, wait: ReplicaWait) -> Result<Self, String> {
        let target = Target::parse(url).map_err(|e| format!("QRLOGIN_REDIS_URL: {e}"))?;
        if !tls.is_empty() && !target.tls() {
            return Err(
                "QRLOGIN_REDIS_CA_FILE / QRLOGIN_REDIS_CLIENT_CERT_FILE are set but \
                 QRLOGIN_REDIS_URL is not a TLS (rediss…) URL"
                    .into(),
            );
        }
        let wait_replicas = match &target {
            Target::Cluster(_) => 0,
            Target::Sentinel(_) => wait.replicas.unwrap_or(1),
            Target::Single(_) => wait.replicas.unwrap_or(0),
        };
        let describe = |e: redis::RedisError| format!("QRLOGIN_REDIS_URL: {e}");
        let (clients, node_urls) = match target {
            Target::Single(url) => (
                Clients::Single(tls.client(&url).map_err(describe)?),
                vec![url],
            ),
            Target::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(OP_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if !tls.is_empty() {
                    builder = builder.certs(tls.certificates());
                }
                (Clients::Cluster(builder.build().map_err(describe)?), nodes)
            }
            Target::Sentinel(s) => {
                let mode = s.tls.then_some(redis::TlsMode::Secure);
                let addrs = s.sentinels.iter().map(|(host, port)| match mode {
                    Some(_) => redis::ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    },
                    None => redis::ConnectionAddr::Tcp(host.clone(), *port),
                });
                let mut builder =
                    SentinelClientBuilder::new(addrs, s.master.clone(), SentinelServerType::Master)
                        .map_err(describe)?
                        .set_client_to_redis_db(s.db);
                if let Some(mode) = mode {
                    builder = builder
                        .set_client_to_redis_tls_mode(mode)
                        .set_client_to_sentinel_tls_mode(mode);
                    if !tls.is_empty() {
                        builder = builder
                            .set_client_to_redis_certificates(tls.certificates())
                            .set_client_to_sentinel_certificates(tls.certificates());
                    }
                }
                if let Some(user) = s.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(pass) = s.password {
                    builder = builder.set_client_to_redis_password(pass);
                }
                let client = builder.build().map_err(describe)?;
                (
                    Clients::Sentinel(tokio::sync::Mutex::new(client)),
                    Vec::new(),
                )
            }
        };
        let nodes = node_urls
            .iter()
            .map(|u| tls.client(u))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(describe)?;
        Ok(Self(Arc::new(Inner {
            clients,
            nodes,
            conn: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            wait_replicas,
            wait_timeout: wait.timeout,
            waits_paused_until: std::sync::Mutex::new(None),
        })))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0.clients, Clients::Cluster(_))
    }

    fn is_sentinel(&self) -> bool {
        matches!(self.0.clients, Clients::Sentinel(_))
    }

    /// A client for the hub's subscription, attempt `n`: the configured
    /// nodes in turn, or with Sentinel the master the sentinels name now.
    pub async fn pubsub_client(&self, n: usize) -> Result<redis::Client, String> {
        match &self.0.clients {
            Clients::Sentinel(sentinel) => {
                let ask = async { sentinel.lock().await.async_get_client().await };
                match tokio::time::timeout(CONNECT_TIMEOUT * 2, ask).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(format!("sentinel: {e}")),
                    Err(_) => Err("sentinel: timed out".into()),
                }
            }
            _ => {
                let nodes = &self.0.nodes;
                nodes
                    .get(n % nodes.len().max(1))
                    .cloned()
                    .ok_or_else(|| "no node configured".to_owned())
            }
        }
    }

    fn cached(&self) -> Option<Conn> {
        self.0
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forget the command connection (Sentinel: its master failed or was
    /// demoted), so the next command asks the sentinels again.
    fn forget(&self) {
        *self.0.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The command connection, connecting now if this is the first use or
    /// every earlier attempt failed.
    async fn connect(&self) -> RedisResult<Conn> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _one = self.0.connecting.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(500);
        let conn = match &self.0.clients {
            Clients::Single(client) => {
                Conn::Single(ConnectionManager::new_with_config(client.clone(), config).await?)
            }
            Clients::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Clients::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                Conn::Single(ConnectionManager::new_with_config(master, config).await?)
            }
        };
        *self.0.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// `connect`, counting a failure as `qrlogin_redis_errors_total{op="connect"}`
    /// (besides the operation that needed the connection).
    async fn connect_counted(&self) -> RedisResult<Conn> {
        let conn = self.connect().await;
        if conn.is_err() {
            count_error("connect");
        }
        conn
    }

    /// Whether `e` means this connection is no good for writes any more:
    /// it broke, or (Sentinel) its server is no longer the master.
    fn stale(&self, e: &redis::RedisError) -> bool {
        lost_connection(e) || (self.is_sentinel() && e.kind() == redis::ErrorKind::ReadOnly)
    }

    /// Run `call` on the command connection. A call that finds the
    /// connection lost is retried once at once: the failure is what makes
    /// the connection manager reconnect (or, with Sentinel, what makes us
    /// ask the sentinels for the master again), so after an outage or a
    /// failover the first request succeeds instead of failing.
    async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        bounded(op, async {
            match call(self.connect_counted().await?).await {
                Err(e) if self.stale(&e) => {
                    if self.is_sentinel() {
                        self.forget();
                    }
                    call(self.connect_counted().await?).await
                }
                done => done,
            }
        })
        .await
    }

    /// Run `cmd`, retried once after a lost connection (see `run`).
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.run(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Run a Lua script, retried like `query`.
    async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(op, |mut conn| async move {
            script.invoke_async(&mut conn).await
        })
        .await
    }

    /// Wait (up to the configured timeout) until the configured number of
    /// replicas hold this connection's writes so far, so a failover right
    /// after does not lose them. Best effort: fewer acknowledgements (WAIT
    /// answering 0 when no replica is left) or a failure are counted, never
    /// an error.
    async fn replicate(&self) {
        let replicas = self.0.wait_replicas;
        if replicas == 0 {
            return;
        }
        let paused = || {
            self.0
                .waits_paused_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if paused().is_some_and(|until| std::time::Instant::now() < until) {
            metrics::counter!("qrlogin_redis_unreplicated_total").increment(1);
            return;
        }
        let Some(mut conn) = self.cached() else {
            return;
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(self.0.wait_timeout.as_millis() as u64);
        let acked = tokio::time::timeout(OP_TIMEOUT, wait.query_async::<i64>(&mut conn)).await;
        if !matches!(acked, Ok(Ok(n)) if n >= i64::from(replicas)) {
            *paused() = Some(std::time::Instant::now() + WAIT_PAUSE);
            metrics::counter!("qrlogin_redis_unreplicated_total").increment(1);
        }
    }

    /// `PUBLISH channel message`. In a cluster any node will do: classic
    /// pub/sub messages are broadcast to every node over the cluster bus;
    /// with Sentinel the master passes it on to its replicas.
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
                self.redis.replicate().await;
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
    fn tls_forms_keep_tls_on_every_node() {
        assert_eq!(
            Target::parse("rediss://u:p@h:6380/1"),
            Ok(Target::Single("rediss://u:p@h:6380/1".into()))
        );
        let cluster = Target::parse("rediss+cluster://:p@a:7000,b:7001").unwrap();
        assert_eq!(
            cluster,
            Target::Cluster(vec![
                "rediss://:p@a:7000".into(),
                "rediss://:p@b:7001".into()
            ])
        );
        assert!(cluster.tls());
        assert!(!Target::parse("redis://a:1, rediss://b:2").unwrap().tls());
        // TLS files with a plaintext URL are a mistake, not a quiet downgrade.
        let tls = TlsFiles {
            ca: Some(b"x".to_vec()),
            client: None,
        };
        let err = Redis::open("redis://127.0.0.1:6379", &tls).err().unwrap();
        assert!(err.contains("not a TLS"), "{err}");
        assert!(Redis::open("rediss://127.0.0.1:6380", &TlsFiles::default()).is_ok());
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_data_nodes_credentials() {
        let Ok(Target::Sentinel(s)) =
            Target::parse("redis+sentinel://app:p%40ss@h1:26379,[::1]:26380,h3/mymaster/2")
        else {
            panic!("a sentinel URL")
        };
        assert_eq!(
            s.sentinels,
            vec![
                ("h1".to_owned(), 26379),
                ("::1".to_owned(), 26380),
                ("h3".to_owned(), 26379)
            ]
        );
        assert_eq!((s.master.as_str(), s.db), ("mymaster", 2));
        assert_eq!(s.username.as_deref(), Some("app"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert!(!s.tls);
        assert!(!format!("{s:?}").contains("p@ss"));
        let Ok(Target::Sentinel(s)) = Target::parse("rediss+sentinel://:pw@h1/m") else {
            panic!("a TLS sentinel URL")
        };
        assert_eq!(
            (s.username, s.password.as_deref(), s.tls),
            (None, Some("pw"), true)
        );
        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel:///m",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1/m/zero",
            "redis+sentinel://h1/m/0/more",
            "http://h1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Redis::open("redis+sentinel://127.0.0.1:1/m", &TlsFiles::default()).is_ok());
    }

    #[test]
    fn redaction_hides_the_password_in_every_url_form() {
        for (url, shown) in [
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://app:s3cret@h:6380", "rediss://app:***@h:6380"),
            (
                "redis+cluster://app:s3cret@a:7000,b:7001",
                "redis+cluster://app:***@a:7000,b:7001",
            ),
            (
                "rediss+cluster://:s3cret@a:7000",
                "rediss+cluster://:***@a:7000",
            ),
            (
                "redis://:s3cret@a:7000,redis://:s3cret@b:7001",
                "redis://:***@a:7000,redis://:***@b:7001",
            ),
            (
                "redis+sentinel://app:s3cret@h1:26379,h2:26379/m/1",
                "redis+sentinel://app:***@h1:26379,h2:26379/m/1",
            ),
            ("redis://user-only@h:6379", "redis://user-only@h:6379"),
            ("redis://h:6379", "redis://h:6379"),
        ] {
            assert_eq!(redact(url), shown);
            assert!(!redact(url).contains("s3cret"));
        }
        // A malformed URL's error does not echo the password either.
        let err = Target::parse("redis://:s3cret@a:1,b:2").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

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
