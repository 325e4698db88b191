//! The command connections of one instance to its Redis deployment.
//!
//! Multiplexed connections (`Lane`s): one for requests (ticket reads,
//! creations, publishes, readiness), one for the hub's safety-net reads
//! while its subscription is down, so that those never queue the requests,
//! and, when ticket changes wait for replicas, one for those changes and
//! their `WAIT`s (see `replicate`).
//!
//! Why the care about overload: a multiplexed connection is one queue, and
//! a command that gives up (timeout) after it was sent is still executed by
//! Redis. Under a retry storm (every browser retrying at once after a
//! failover) the queue grew faster than Redis drained it, every command
//! waited past its timeout, was retried, and the instance answered nothing
//! but timeouts for about 100 s after the failover itself was over (the
//! Sentinel soak in docs/redis.md). So:
//! - each lane has a bounded number of commands in flight, and a command
//!   waits at most `SLOT_WAIT` for a slot before failing (503): a command
//!   that gives up while waiting was never sent and costs Redis nothing;
//! - a timeout is not a lost connection (it is not sent again);
//! - a connection attempt runs on a task of its own, so the request that
//!   started it giving up does not cancel it (see `connect`);
//! - after a failed connection attempt, commands fail at once for
//!   `CONNECT_PAUSE` instead of each making (and waiting for) an attempt of
//!   its own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};
use tokio::sync::Semaphore;

use super::{Target, TlsFiles};
use crate::ticket::now_ms;

/// Longest any single Redis operation may take before it counts as down:
/// a request should fail fast with 503 rather than hang.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Commands the request lane may have in flight. Far above what a healthy
/// Redis needs (commands in flight are the rate times each one's latency;
/// the sizing is in docs/performance.md), low enough that Redis's queue
/// stays short when it slows down.
const REQUEST_SLOTS: usize = 256;
/// Commands the sweep lane may have in flight (each a batch of keys).
const SWEEP_SLOTS: usize = 4;
/// Longest a command waits for a slot before it fails.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// After a failed connection attempt, commands fail at once this long.
const CONNECT_PAUSE: Duration = Duration::from_millis(250);

/// After a `WAIT` that came back with too few replicas, transitions skip
/// the wait for this long. `WAIT` blocks the whole connection it runs on:
/// with no replica left (a failover just promoted the only one) a wait
/// after every transition would queue every change behind a full timeout.
/// Paused, at most one timeout per second stalls the connection; the
/// transitions skipped are counted like the short waits (no replica would
/// have acknowledged them anyway).
const WAIT_PAUSE: Duration = Duration::from_secs(1);

/// Count one failed Redis operation (`qrlogin_redis_errors_total{op}`).
pub fn count_error(op: &'static str) {
    metrics::counter!("qrlogin_redis_errors_total", "op" => op).increment(1);
}

/// A Redis operation that failed (Redis down, slow or busy): which one and
/// why, for logs only. The store reports it as `StoreError::Unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis {op}: {cause}")]
pub struct Failed {
    op: &'static str,
    cause: String,
}

/// Count and describe a failed Redis operation.
pub fn failed(op: &'static str, cause: impl std::fmt::Display) -> Failed {
    count_error(op);
    Failed {
        op,
        cause: cause.to_string(),
    }
}

/// Whether `e` means the connection broke (worth one immediate retry). A
/// timeout is not: the command may still be queued in Redis, and sending
/// it again is what turns a slow Redis into an overloaded one.
fn lost_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() && !e.is_timeout()
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

/// Which connection a command goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Requests, publishes, readiness.
    Requests,
    /// The hub's batched re-reads while its subscription is down.
    Sweeps,
    /// Ticket changes, when they wait for replicas: `WAIT` blocks the
    /// connection it runs on and covers only the writes made on it, so the
    /// changes and their waits share a connection of their own and no read
    /// or creation ever queues behind a wait.
    Writes,
}

/// One command connection and what bounds it.
struct Line {
    /// The connection once made, with its number. With Sentinel it is
    /// dropped when the master it leads to fails or turns replica, so the
    /// next command asks the sentinels again.
    conn: std::sync::Mutex<Option<(u64, Conn)>>,
    /// Connections made so far (numbers the next one).
    made: AtomicU64,
    /// One connection attempt at a time (held by the attempt's task).
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// Commands in flight.
    slots: Semaphore,
    /// No new connection attempt before this (ms, `now_ms`): the last one
    /// failed.
    retry_at: AtomicU64,
}

impl Line {
    fn new(slots: usize) -> Self {
        Self {
            conn: std::sync::Mutex::new(None),
            made: AtomicU64::new(0),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            slots: Semaphore::new(slots),
            retry_at: AtomicU64::new(0),
        }
    }

    fn cached(&self) -> Option<(u64, Conn)> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget connection `number` (Sentinel: its master failed or was
    /// demoted), so the next command asks the sentinels again — unless it
    /// was already replaced: the commands that were in flight on a dead
    /// master all fail, and each must not throw away the new connection
    /// the first of them made.
    fn forget(&self, number: u64) {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn.as_ref().is_some_and(|(n, _)| *n == number) {
            *conn = None;
        }
    }

    fn paused(&self) -> bool {
        now_ms() < self.retry_at.load(Ordering::Acquire)
    }
}

struct Inner {
    clients: Clients,
    /// One plain client per node, for the hub's pub/sub connection (none
    /// with Sentinel: the subscription follows the master).
    nodes: Vec<redis::Client>,
    requests: Line,
    sweeps: Line,
    writes: Line,
    /// Replicas to wait for after each ticket change (0: no wait).
    wait_replicas: u32,
    wait_timeout: Duration,
    /// Until when transitions skip the wait, after one that came back short.
    waits_paused_until: std::sync::Mutex<Option<std::time::Instant>>,
    waits: GroupWait,
}

/// One `WAIT` for many changes (a group commit). `WAIT` covers every write
/// its connection made before it, so a change needs only some `WAIT` begun
/// after its write was answered; changes that finish while one wait is out
/// all share the next. One `WAIT` per change instead, on one connection,
/// runs them one replica round trip after another: under a 20,000-browser
/// Sentinel soak that capped the instance's changes at a few hundred a
/// second, every slot filled, and the instance answered 503s
/// (docs/redis.md).
#[derive(Default)]
struct GroupWait {
    /// Held by the one change sending a `WAIT`.
    sending: tokio::sync::Mutex<()>,
    /// `WAIT`s begun so far (numbers them).
    begun: AtomicU64,
    /// The last `WAIT` that finished: its number, the connection it ran on,
    /// and whether enough replicas acknowledged.
    done: std::sync::Mutex<(u64, u64, bool)>,
}

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

/// A ticket change made on the connection numbered here (see `replicate`).
#[derive(Clone, Copy, Debug)]
pub struct Written(u64);

/// Why a command did not run to an answer.
enum Failure {
    /// Every slot of the lane stayed taken for `SLOT_WAIT`.
    Busy,
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Redis(e)
    }
}

/// The Redis deployment of this instance: the command connections (made on
/// first use and kept; they reconnect by themselves) and what pub/sub needs.
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
            requests: Line::new(REQUEST_SLOTS),
            sweeps: Line::new(SWEEP_SLOTS),
            writes: Line::new(REQUEST_SLOTS),
            wait_replicas,
            wait_timeout: wait.timeout,
            waits_paused_until: std::sync::Mutex::new(None),
            waits: GroupWait::default(),
        })))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0.clients, Clients::Cluster(_))
    }

    fn is_sentinel(&self) -> bool {
        matches!(self.0.clients, Clients::Sentinel(_))
    }

    fn line(&self, lane: Lane) -> &Line {
        match lane {
            Lane::Requests => &self.0.requests,
            Lane::Sweeps => &self.0.sweeps,
            Lane::Writes => &self.0.writes,
        }
    }

    /// The lane ticket changes go over: their own when they wait for
    /// replicas, else the request lane.
    fn changes(&self) -> Lane {
        if self.0.wait_replicas > 0 {
            Lane::Writes
        } else {
            Lane::Requests
        }
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

    /// A new command connection.
    async fn open_conn(&self) -> RedisResult<Conn> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(500);
        Ok(match &self.0.clients {
            Clients::Single(client) => {
                Conn::Single(ConnectionManager::new_with_config(client.clone(), config).await?)
            }
            Clients::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Clients::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                Conn::Single(ConnectionManager::new_with_config(master, config).await?)
            }
        })
    }

    /// The lane's connection, connecting now if this is the first use or
    /// every earlier attempt failed; failing at once while the last attempt
    /// is recent (`CONNECT_PAUSE`). A failure is counted as
    /// `qrlogin_redis_errors_total{op="connect"}` (besides the operation
    /// that needed the connection).
    ///
    /// The attempt runs on a task of its own, holding the lock, and is
    /// bounded by its own timeout: the request that started it may give up
    /// (its `OP_TIMEOUT`) without cancelling it. Cancelled with its request,
    /// an attempt made under a storm of requests — each with little of its
    /// time left after queueing for the lock — would rarely finish, and no
    /// request would get a connection for as long as the storm lasted: the
    /// Sentinel soak's timeouts after a failover.
    async fn connect(&self, lane: Lane) -> RedisResult<(u64, Conn)> {
        let line = self.line(lane);
        if let Some(conn) = line.cached() {
            return Ok(conn);
        }
        let not_yet = || {
            count_error("connect");
            Err(redis::RedisError::from((
                redis::ErrorKind::ClientError,
                "not connected",
                "the last connection attempt failed moments ago".to_owned(),
            )))
        };
        if line.paused() {
            return not_yet();
        }
        let one = line.connecting.clone().lock_owned().await;
        if let Some(conn) = line.cached() {
            return Ok(conn);
        }
        if line.paused() {
            return not_yet();
        }
        let this = self.clone();
        let attempt = tokio::spawn(async move {
            let _one = one;
            let line = this.line(lane);
            let made = match tokio::time::timeout(OP_TIMEOUT, this.open_conn()).await {
                Ok(made) => made,
                Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection attempt timed out",
                ))),
            };
            match made {
                Ok(conn) => {
                    let number = line.made.fetch_add(1, Ordering::AcqRel) + 1;
                    *line.conn.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((number, conn.clone()));
                    Ok((number, conn))
                }
                Err(e) => {
                    line.retry_at.store(
                        now_ms() + CONNECT_PAUSE.as_millis() as u64,
                        Ordering::Release,
                    );
                    count_error("connect");
                    Err(e)
                }
            }
        });
        match attempt.await {
            Ok(made) => made,
            Err(_) => not_yet(),
        }
    }

    /// Whether `e` means this connection is no good for writes any more:
    /// it broke, or (Sentinel) its server is no longer the master.
    fn stale(&self, e: &redis::RedisError) -> bool {
        lost_connection(e) || (self.is_sentinel() && e.kind() == redis::ErrorKind::ReadOnly)
    }

    /// Run `call` on the lane's connection, within a slot and `OP_TIMEOUT`.
    /// A call that finds the connection lost is retried once at once: the
    /// failure is what makes the connection manager reconnect (or, with
    /// Sentinel, what makes us ask the sentinels for the master again), so
    /// after an outage or a failover the first request succeeds instead of
    /// failing.
    async fn run<T, F, Fut>(&self, lane: Lane, op: &'static str, call: F) -> Result<T, Failed>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        Ok(self.run_numbered(lane, op, call).await?.1)
    }

    /// `run`, with the number of the connection that answered.
    async fn run_numbered<T, F, Fut>(
        &self,
        lane: Lane,
        op: &'static str,
        call: F,
    ) -> Result<(u64, T), Failed>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let line = self.line(lane);
        let attempt = async {
            // Waiting here costs Redis nothing: a command that gives up
            // before it has a slot was never sent.
            let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, line.slots.acquire()).await else {
                return Err(Failure::Busy);
            };
            let (number, conn) = self.connect(lane).await?;
            match call(conn).await {
                Err(e) if self.stale(&e) => {
                    if self.is_sentinel() {
                        line.forget(number);
                    }
                    let (number, conn) = self.connect(lane).await?;
                    Ok((number, call(conn).await?))
                }
                done => Ok((number, done?)),
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Failure::Busy)) => {
                metrics::counter!("qrlogin_redis_busy_total").increment(1);
                Err(failed(op, "busy (too many commands in flight)"))
            }
            Ok(Err(Failure::Redis(e))) if !e.is_timeout() => Err(failed(op, e)),
            Ok(Err(Failure::Redis(_))) | Err(_) => Err(failed(op, "timed out")),
        }
    }

    /// Run `cmd` on the request lane, retried once after a lost connection
    /// (see `run`).
    pub async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T, Failed> {
        self.query_on(Lane::Requests, op, cmd).await
    }

    /// `query` on the given lane.
    pub async fn query_on<T: FromRedisValue>(
        &self,
        lane: Lane,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, Failed> {
        self.run(lane, op, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Run a Lua script on the request lane, retried like `query`.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Failed> {
        self.run(Lane::Requests, op, |mut conn| async move {
            script.invoke_async(&mut conn).await
        })
        .await
    }

    /// Run a ticket change's Lua script on the lane of changes; what it
    /// answers, and a `Written` to pass to `replicate` once the change is
    /// known to have been made.
    pub async fn change<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<(T, Written), Failed> {
        let (number, answer) = self
            .run_numbered(self.changes(), op, |mut conn| async move {
                script.invoke_async(&mut conn).await
            })
            .await?;
        Ok((answer, Written(number)))
    }

    /// Wait (up to the configured timeout) until the configured number of
    /// replicas hold the change `written`, so a failover right after does
    /// not lose it. Best effort: fewer acknowledgements (WAIT answering 0
    /// when no replica is left) or a failure are counted, never an error.
    ///
    /// Changes that finish while a `WAIT` is out share the next one
    /// (`GroupWait`): one replica round trip covers them all.
    pub async fn replicate(&self, written: Written) {
        let replicas = self.0.wait_replicas;
        if replicas == 0 {
            return;
        }
        let unreplicated = || metrics::counter!("qrlogin_redis_unreplicated_total").increment(1);
        let count_unless = |replicated: bool| {
            if !replicated {
                unreplicated();
            }
        };
        let paused = || {
            self.0
                .waits_paused_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if paused().is_some_and(|until| std::time::Instant::now() < until) {
            return unreplicated();
        }
        let waits = &self.0.waits;
        let done = || *waits.done.lock().unwrap_or_else(|e| e.into_inner());
        // Any WAIT begun after this point was sent after our write was
        // answered, on the same connection, so it covers the write.
        let need = waits.begun.load(Ordering::SeqCst) + 1;
        let covered = |(number, conn, acked): (u64, u64, bool)| {
            (number >= need).then_some(acked && conn == written.0)
        };
        let sending = match covered(done()) {
            Some(replicated) => return count_unless(replicated),
            None => waits.sending.lock().await,
        };
        if let Some(replicated) = covered(done()) {
            return count_unless(replicated);
        }
        let number = waits.begun.fetch_add(1, Ordering::SeqCst) + 1;
        // With replicas to wait for, changes go over the writes lane.
        let (conn_number, acked) = match self.0.writes.cached() {
            Some((conn_number, mut conn)) => {
                let mut wait = redis::cmd("WAIT");
                wait.arg(replicas)
                    .arg(self.0.wait_timeout.as_millis() as u64);
                let acked =
                    tokio::time::timeout(OP_TIMEOUT, wait.query_async::<i64>(&mut conn)).await;
                (
                    conn_number,
                    matches!(acked, Ok(Ok(n)) if n >= i64::from(replicas)),
                )
            }
            _ => (0, false),
        };
        if !acked {
            *paused() = Some(std::time::Instant::now() + WAIT_PAUSE);
        }
        *waits.done.lock().unwrap_or_else(|e| e.into_inner()) = (number, conn_number, acked);
        drop(sending);
        count_unless(acked && conn_number == written.0);
    }

    /// `PUBLISH channel message`. In a cluster any node will do: classic
    /// pub/sub messages are broadcast to every node over the cluster bus;
    /// with Sentinel the master passes it on to its replicas.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), Failed> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.query::<i64>("publish", &cmd).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_a_failed_connection_attempt_commands_fail_at_once() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis =
            Redis::open(&format!("redis://127.0.0.1:{port}"), &TlsFiles::default()).unwrap();
        let ping = redis::cmd("PING");
        assert!(redis.query::<String>("ping", &ping).await.is_err());
        let started = std::time::Instant::now();
        let err = redis.query::<String>("ping", &ping).await.unwrap_err();
        assert!(err.to_string().contains("moments ago"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(100));
        // And a new attempt once the pause is over.
        tokio::time::sleep(CONNECT_PAUSE).await;
        let err = redis.query::<String>("ping", &ping).await.unwrap_err();
        assert!(!err.to_string().contains("moments ago"), "{err}");
    }
}
