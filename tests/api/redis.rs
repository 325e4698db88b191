//! Several instances over one Redis: any instance takes any request, a
//! change made on one is pushed to sockets held by another, and Redis
//! faults (restart, a killed subscription) cost a moment, never a push.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::helpers::*;
use crate::redis_server::{RedisCluster, RedisSentinels, RedisServer, TestCerts};

/// An instance on `url` with key prefix `prefix`.
pub(crate) async fn instance(url: &str, prefix: &str) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_app_with(move |s| {
        s.redis_url = Some(url);
        s.redis_prefix = prefix;
    })
    .await
}

pub(crate) async fn instances(url: &str, n: usize) -> Vec<TestApp> {
    let prefix = format!("it{}", rand::random::<u32>());
    let mut apps = Vec::new();
    for _ in 0..n {
        apps.push(instance(url, &prefix).await);
    }
    apps
}

/// Two instances on `url` sharing a prefix, both ready.
async fn two_ready(url: &str) -> (TestApp, TestApp) {
    let mut apps = instances(url, 2).await;
    let (b, a) = (apps.pop().unwrap(), apps.pop().unwrap());
    wait_ready(&a, 200, 10).await;
    wait_ready(&b, 200, 10).await;
    (a, b)
}

/// One login across instances: the socket on `b`, the confirm on `a`. The
/// time from sending the confirm to the `confirmed` frame.
async fn push_across(a: &TestApp, b: &TestApp) -> Duration {
    let t = a.create_ticket().await;
    let mut ws = b.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let started = std::time::Instant::now();
    assert_eq!(a.confirm(&t.id, "u1").await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
    started.elapsed()
}

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wait (up to `secs`) until `/readyz` answers `want`.
async fn wait_ready(app: &TestApp, want: u16, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while readyz(app).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nothing arrives on the socket for `ms`: it stays open and quiet.
async fn stays_open(ws: &mut Socket, ms: u64) {
    let quiet = tokio::time::timeout(Duration::from_millis(ms), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_ping() || m.is_pong() => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "the socket should stay open, got {quiet:?}");
}

#[tokio::test]
async fn created_on_a_watched_on_b_confirmed_on_c_is_pushed() {
    let Some(redis) = RedisServer::start("created_on_a_watched_on_b_confirmed_on_c") else {
        return;
    };
    let apps = instances(&redis.url(), 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let t = a.create_ticket().await;
    let mut ws = b.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let r = c
        .trusted(
            "scan",
            &t.id,
            json!({ "sub": "u1", "user": { "nickname": "Ann" } }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let scanned = next_frame(&mut ws).await;
    assert_eq!(
        (
            scanned["status"].as_str(),
            scanned["user"]["nickname"].as_str()
        ),
        (Some("scanned"), Some("Ann"))
    );
    assert_eq!(a.confirm(&t.id, "u1").await.status(), 200);
    let confirmed = next_frame(&mut ws).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["token"].as_str().unwrap().split('.').count(), 3);
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn what_redis_holds_is_prefixed_and_never_the_secret() {
    let Some(redis) = RedisServer::start("what_redis_holds") else {
        return;
    };
    let app = instance(&redis.url(), "deploy1").await;
    let t = app.create_ticket().await;
    let key = format!("deploy1:t:{{{}}}", t.id);
    let raw = redis.cli(&["GET", &key]);
    assert!(
        raw.contains(&t.id),
        "the ticket is stored under {key}: {raw}"
    );
    assert!(!raw.contains(&t.secret), "the secret is stored hashed");
    let ttl: i64 = redis.cli(&["PTTL", &key]).trim().parse().unwrap();
    assert!(
        (100_000..=120_000).contains(&ttl),
        "TTL ends at expires_at: {ttl}"
    );
    let keys = redis.cli(&["--scan"]);
    assert!(
        keys.lines().all(|k| k.starts_with("deploy1:")),
        "every key is under the prefix: {keys}"
    );
}

#[tokio::test]
async fn deployments_with_other_prefixes_do_not_see_each_other() {
    let Some(redis) = RedisServer::start("deployments_with_other_prefixes") else {
        return;
    };
    let one = instance(&redis.url(), "one").await;
    let two = instance(&redis.url(), "two").await;
    let t = one.create_ticket().await;
    let r = two.confirm(&t.id, "u1").await;
    assert_eq!(error_of(r).await, (404, "ticket_not_found".into()));
    let refused = two
        .ws_with(&t.id, &format!("qrlogin.v1, secret.{}", t.secret))
        .await;
    assert!(refused.is_err(), "no socket on another deployment's ticket");
    assert_eq!(one.confirm(&t.id, "u1").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirms_across_instances_have_one_winner() {
    let Some(redis) = RedisServer::start("concurrent_confirms_across_instances") else {
        return;
    };
    let apps = instances(&redis.url(), 3).await;
    for _ in 0..5 {
        let t = apps[0].create_ticket().await;
        let mut calls = Vec::new();
        for i in 0..18 {
            let app = &apps[i % 3];
            let action = if i % 2 == 0 { "confirm" } else { "deny" };
            calls.push(app.trusted(action, &t.id, json!({ "sub": format!("u{i}") })));
        }
        let results = futures_util::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.status() == 200).count();
        let conflicts = results.iter().filter(|r| r.status() == 409).count();
        assert_eq!((ok, conflicts), (1, 17));
    }
}

#[tokio::test]
async fn a_redis_restart_mid_wait_recovers_and_delivers() {
    let Some(mut redis) = RedisServer::start("a_redis_restart_mid_wait") else {
        return;
    };
    let apps = instances(&redis.url(), 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let t = a.create_ticket().await;
    let mut ws = b.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    // Persist, then crash: the restart loads the ticket back.
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    redis.kill();

    wait_ready(a, 503, 5).await;
    let r = a
        .client
        .post(a.url("/api/v1/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1", "a 503 says when to retry");
    assert_eq!(error_of(r).await, (503, "unavailable".into()));
    let r = c.confirm(&t.id, "u1").await;
    assert_eq!(error_of(r).await, (503, "unavailable".into()));
    // The browser keeps its socket through the outage.
    stays_open(&mut ws, 1500).await;

    redis.restart();
    wait_ready(c, 200, 10).await;
    assert_eq!(c.confirm(&t.id, "u1").await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
    // New tickets work again without any restart of ours.
    a.create_ticket().await;
    let metrics = b.metrics().await;
    assert!(metrics.contains("qrlogin_redis_errors_total"), "{metrics}");
    assert!(
        metrics.contains("qrlogin_redis_reconnects_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_killed_subscription_during_a_confirm_still_delivers() {
    let Some(redis) = RedisServer::start("a_killed_subscription") else {
        return;
    };
    let apps = instances(&redis.url(), 2).await;
    let (a, b) = (&apps[0], &apps[1]);
    let channel = format!("{}:changes", prefix_of(a));
    for _ in 0..3 {
        // Both instances subscribed (again) before each round.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while redis
            .cli(&["PUBSUB", "NUMSUB", &channel])
            .lines()
            .nth(1)
            .map(str::trim)
            != Some("2")
        {
            assert!(tokio::time::Instant::now() < deadline, "both subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = a.create_ticket().await;
        let mut ws = b.ws(&t).await;
        assert_eq!(next_frame(&mut ws).await["status"], "pending");
        let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(killed.trim(), "2", "both subscriptions killed");
        // Published while B's subscription is down: only B's re-read after
        // it resubscribes (within its backoff) can deliver this.
        let confirmed = std::time::Instant::now();
        assert_eq!(a.confirm(&t.id, "u1").await.status(), 200);
        assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
        let took = confirmed.elapsed();
        assert!(took < Duration::from_secs(2), "pushed after {took:?}");
    }
}

fn prefix_of(app: &TestApp) -> String {
    app.state.settings.redis.prefix.clone()
}

#[tokio::test]
async fn the_service_starts_before_redis_and_becomes_ready_with_it() {
    let Some(mut redis) = RedisServer::start("the_service_starts_before_redis") else {
        return;
    };
    redis.kill();
    let app = instance(&redis.url(), "late").await;
    assert_eq!(readyz(&app).await, 503);
    redis.restart();
    wait_ready(&app, 200, 10).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(app.confirm(&t.id, "u1").await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}

#[tokio::test]
async fn the_cross_instance_flow_works_on_a_three_master_cluster() {
    let Some(cluster) = RedisCluster::start("the_cross_instance_flow_on_a_cluster") else {
        return;
    };
    let apps = instances(&cluster.url(), 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    wait_ready(a, 200, 10).await;
    // Enough tickets that they land on every master.
    let mut masters = std::collections::HashSet::new();
    for _ in 0..8 {
        let t = a.create_ticket().await;
        let key = format!("{}:t:{{{}}}", prefix_of(a), t.id);
        let holder = cluster
            .nodes
            .iter()
            .position(|n| n.cli(&["EXISTS", &key]).trim() == "1");
        masters.insert(holder.expect("the ticket is on one master"));
        let mut ws = b.ws(&t).await;
        assert_eq!(next_frame(&mut ws).await["status"], "pending");
        assert_eq!(c.confirm(&t.id, "u1").await.status(), 200);
        assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
    }
    assert!(masters.len() >= 2, "tickets spread over the masters");
}

/// Cross-instance push latency: sockets on B, confirms on A; from sending
/// the confirm to the `confirmed` frame. Bounded (200 logins) on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_instance_confirm_to_frame_latency() {
    let Some(redis) = RedisServer::start("cross_instance_confirm_to_frame_latency") else {
        return;
    };
    let (a, b) = &two_ready(&redis.url()).await;
    let mut samples = Vec::new();
    for _ in 0..200 {
        samples.push(push_across(a, b).await);
    }
    samples.sort();
    let (p50, p99) = (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    );
    eprintln!("cross-instance confirm -> frame over 200 logins: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

/// The measurement: two instances, Redis down 2 s and back, then
/// logins one after another (socket on B, confirm on A). Readiness must
/// come back within 2 s of Redis, and once both say ready every push must
/// arrive within 1 s — the worst one is asserted, not a percentile.
#[tokio::test]
async fn once_ready_after_a_redis_restart_every_push_arrives_within_a_second() {
    let Some(mut redis) = RedisServer::start("once_ready_after_a_redis_restart") else {
        return;
    };
    let (a, b) = &two_ready(&redis.url()).await;
    redis.kill();
    wait_ready(a, 503, 5).await;
    wait_ready(b, 503, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let back = tokio::time::Instant::now();
    wait_ready(a, 200, 10).await;
    wait_ready(b, 200, 10).await;
    let ready_after = back.elapsed();
    // Ready means subscribed: both subscriptions are there the moment both
    // say so (before, `/readyz` came back with the store alone).
    let channel = format!("{}:changes", prefix_of(a));
    let subscribers = redis.cli(&["PUBSUB", "NUMSUB", &channel]);
    assert_eq!(
        subscribers.lines().nth(1).map(str::trim),
        Some("2"),
        "{subscribers}"
    );
    let mut worst = Duration::ZERO;
    for _ in 0..12 {
        worst = worst.max(push_across(a, b).await);
    }
    eprintln!("after a 2 s Redis outage: ready again after {ready_after:?}, worst push {worst:?}");
    assert!(
        ready_after < Duration::from_secs(2),
        "ready after {ready_after:?}"
    );
    assert!(worst < Duration::from_secs(1), "worst push {worst:?}");
}

/// A publish that fails while the other instances' subscriptions are fine
/// (here Redis refuses PUBLISH for a moment through its ACL; in service: a
/// connection that broke or timed out under a retry storm) must not lose
/// the push: nobody else would ever re-read that ticket before it expired.
/// It is published again until it goes through, and every browser gets its
/// frame within a second of that — the worst of ten asserted.
#[tokio::test]
async fn a_failed_publish_is_retried_and_every_push_arrives_within_a_second() {
    let Some(redis) = RedisServer::start("a_failed_publish_is_retried") else {
        return;
    };
    let (a, b) = &two_ready(&redis.url()).await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let t = a.create_ticket().await;
        let mut ws = b.ws(&t).await;
        assert_eq!(next_frame(&mut ws).await["status"], "pending");
        sockets.push((t, ws));
    }
    let acl = |rule: &str| redis.cli(&["ACL", "SETUSER", "default", rule]);
    assert_eq!(acl("-publish").trim(), "OK");
    for (t, _) in &sockets {
        assert_eq!(a.confirm(&t.id, "u1").await.status(), 200);
    }
    // Both subscriptions stay up, so nothing else re-reads these tickets.
    stays_open(&mut sockets[0].1, 1500).await;
    assert_eq!(readyz(b).await, 200);
    assert_eq!(acl("+publish").trim(), "OK");
    let allowed = std::time::Instant::now();
    for (_, ws) in &mut sockets {
        assert_eq!(next_frame(ws).await["status"], "confirmed");
    }
    let worst = allowed.elapsed();
    eprintln!("publishes refused, then allowed: the last of 10 pushes {worst:?} after");
    assert!(worst < Duration::from_secs(1), "worst push {worst:?}");
}

/// `cmdstat_<command>:calls=N` from `INFO commandstats`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// While Redis stalls (here `CLIENT PAUSE`; in the Sentinel soak, a retry
/// storm after a failover), an instance sends it at most its 256 commands
/// in flight; the others wait a second for a slot and fail (503) without
/// ever being sent. A command sent and then abandoned is still executed
/// by Redis, so before this bound every timeout grew the backlog Redis had
/// to work through, and the instance answered nothing but timeouts long
/// after the fault itself was over.
#[tokio::test]
async fn while_redis_stalls_an_instance_sends_it_a_bounded_number_of_commands() {
    use qrlogin::store::TicketStore;
    let Some(redis) = RedisServer::start("while_redis_stalls") else {
        return;
    };
    let store = std::sync::Arc::new(qrlogin::store::redis::RedisStore::new(
        qrlogin::redis::Redis::open(&redis.url(), &Default::default()).unwrap(),
        "stall",
    ));
    store.ping().await.unwrap();
    let before = calls(&redis, "get");
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]).trim(), "OK");
    let reads: Vec<_> = (0..1000)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&qrlogin::ticket::TicketId::generate()).await })
        })
        .collect();
    let mut busy = 0;
    for read in reads {
        match read.await.unwrap() {
            Ok(_) => {}
            Err(e) if e.to_string().contains("busy") => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let sent = calls(&redis, "get") - before;
    eprintln!("1000 reads while Redis stalled: {sent} sent, {busy} refused as busy");
    assert!(sent <= 256, "{sent} reads sent to a stalled Redis");
    assert_eq!(busy + sent, 1000);
}

/// An instance on a TLS Redis with the given CA (and the client certificate).
async fn tls_instance(url: &str, prefix: &str, certs: &TestCerts, ca: &str) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    let (ca, cert, key) = (
        certs.path(ca),
        certs.path("client.pem"),
        certs.path("client.key"),
    );
    spawn_app_with(move |s| {
        s.redis_url = Some(url);
        s.redis_prefix = prefix;
        s.redis_ca_file = Some(ca);
        s.redis_client_cert_file = Some(cert);
        s.redis_client_key_file = Some(key);
    })
    .await
}

#[tokio::test]
async fn over_tls_a_login_crosses_instances_and_a_wrong_ca_or_host_is_refused() {
    let certs = TestCerts::make();
    let Some((redis, tls_port)) = RedisServer::start_tls("over_tls_a_login_crosses", &certs) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let a = tls_instance(&url, "tls", &certs, "ca.pem").await;
    let b = tls_instance(&url, "tls", &certs, "ca.pem").await;
    wait_ready(&a, 200, 10).await;
    wait_ready(&b, 200, 10).await;
    push_across(&a, &b).await;
    // The tickets are in the server behind the TLS port.
    assert_ne!(redis.cli(&["DBSIZE"]).trim(), "0");

    // A server the CA did not sign, and a name the certificate does not
    // carry: refused, and never retried in plaintext.
    let wrong_ca = tls_instance(&url, "tls", &certs, "other-ca.pem").await;
    let wrong_host = tls_instance(
        &format!("rediss://localhost:{tls_port}"),
        "tls",
        &certs,
        "ca.pem",
    )
    .await;
    for app in [&wrong_ca, &wrong_host] {
        for _ in 0..3 {
            assert_eq!(readyz(app).await, 503);
        }
        let r = app.post_ticket(json!({})).await;
        assert_eq!(error_of(r).await, (503, "unavailable".into()));
    }
    // What the log line says (the error the store reports is what is logged).
    for (url, ca, says) in [
        (
            url.clone(),
            "other-ca.pem",
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            format!("rediss://localhost:{tls_port}"),
            "ca.pem",
            "certificate not valid for name \"localhost\"",
        ),
    ] {
        let tls = qrlogin::redis::TlsFiles {
            ca: Some(std::fs::read(certs.path(ca)).unwrap()),
            client: Some((
                std::fs::read(certs.path("client.pem")).unwrap(),
                std::fs::read(certs.path("client.key")).unwrap(),
            )),
        };
        let store = qrlogin::store::redis::RedisStore::new(
            qrlogin::redis::Redis::open(&url, &tls).unwrap(),
            "tls",
        );
        let err = qrlogin::store::TicketStore::ping(&store)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}

/// Sentinel: kill the master right after a confirm was answered 200; the
/// sentinels promote the replica, both instances follow without a restart,
/// the confirmed login still reaches its browser, and a socket opened
/// before the failover gets a confirm made after it.
#[tokio::test]
async fn through_sentinel_a_master_failover_loses_no_confirmed_login() {
    let Some(mut set) = RedisSentinels::start("through_sentinel_a_master_failover") else {
        return;
    };
    let (a, b) = &two_ready(&set.url()).await;
    let before = a.create_ticket().await;
    let waiting = a.create_ticket().await;
    let mut ws = b.ws(&waiting).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(a.confirm(&before.id, "u1").await.status(), 200);
    let old = set.master.port;
    set.master.kill();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while set.master_port() != Some(set.replica.port) {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(set.master_port(), Some(old));
    wait_ready(a, 200, 10).await;
    wait_ready(b, 200, 10).await;
    // Confirmed before the kill, read after it on the new master.
    let mut late = b.ws(&before).await;
    assert_eq!(next_frame(&mut late).await["status"], "confirmed");
    // The socket held through the failover hears a confirm made after it.
    assert_eq!(a.confirm(&waiting.id, "u2").await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}

/// A 3-master, 3-replica cluster: kill the master that holds a ticket just
/// confirmed (200); its replica is promoted, the instances follow the new
/// slot map without a restart, and the confirmed login still reaches its
/// browser.
#[tokio::test]
async fn on_a_cluster_with_replicas_a_killed_master_loses_no_confirmed_login() {
    let Some(mut cluster) = RedisCluster::start_with_replicas("on_a_cluster_with_replicas", 1)
    else {
        return;
    };
    let (a, b) = &two_ready(&cluster.url()).await;
    let t = a.create_ticket().await;
    let waiting = a.create_ticket().await;
    let mut ws = b.ws(&waiting).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(a.confirm(&t.id, "u1").await.status(), 200);
    let key = format!("{}:t:{{{}}}", prefix_of(a), t.id);
    let master = cluster
        .nodes
        .iter()
        .position(|n| {
            n.cli(&["INFO", "replication"]).contains("role:master")
                && n.cli(&["EXISTS", &key]).trim() == "1"
        })
        .expect("a master holds the ticket");
    cluster.nodes[master].kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Failed over: three masters among the survivors, and all of them
    // seeing the cluster whole again.
    let survivors = || {
        cluster
            .nodes
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != master)
            .map(|(_, n)| n)
    };
    while survivors()
        .filter(|n| n.cli(&["ROLE"]).lines().next() == Some("master"))
        .count()
        != 3
        || !survivors().all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The instances recover by themselves (the client refreshes the slot
    // map on the errors); until then the ticket's slot answers 503.
    let recovering = tokio::time::Instant::now();
    let deadline = recovering + Duration::from_secs(15);
    let mut late = loop {
        let protocols = format!("qrlogin.v1, secret.{}", t.secret);
        match b.ws_with(&t.id, &protocols).await {
            Ok(ws) => break ws,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "cluster: the ticket's slot answered again {:?} after cluster_state:ok",
        recovering.elapsed()
    );
    assert_eq!(next_frame(&mut late).await["status"], "confirmed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.confirm(&waiting.id, "u2").await.status() != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "confirms work again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}

/// Behind a load balancer a phone's confirm page and its form post may
/// reach different instances: the CSRF token of one is good on the other.
#[tokio::test]
async fn a_phone_page_from_one_instance_confirms_on_another() {
    let Some(redis) = RedisServer::start("a_phone_page_from_one_instance") else {
        return;
    };
    let apps = instances(&redis.url(), 2).await;
    let (a, b) = (&apps[0], &apps[1]);
    let t = a.create_ticket().await;
    let mut ws = a.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let phone = phone(IPHONE_UA);
    let page = phone
        .get(a.url(&format!("/m/{}", t.id)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b.tap_confirm(&phone, &t.id, &page).await;
    assert_eq!(r.status(), 200);
    loop {
        let frame = next_frame(&mut ws).await;
        if frame["status"] == "confirmed" {
            assert!(frame["token"].is_string(), "{frame}");
            break;
        }
        assert_eq!(frame["status"], "scanned", "{frame}");
    }
}

/// An instance on `url` waiting for `replicas` replicas (up to `timeout_ms`)
/// after each ticket change.
async fn waiting_instance(url: &str, prefix: &str, replicas: u32, timeout_ms: u64) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_app_with(move |s| {
        s.redis_url = Some(url);
        s.redis_prefix = prefix;
        s.redis_wait_replicas = Some(replicas);
        s.redis_wait_timeout_ms = timeout_ms;
    })
    .await
}

/// A replica of `master`, once in sync with it.
async fn replica_of(master: &RedisServer, test: &str) -> RedisServer {
    let port = master.port.to_string();
    let replica = RedisServer::start_with(test, &["--replicaof", "127.0.0.1", &port]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica not in sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica
}

/// `QRLOGIN_REDIS_WAIT_REPLICAS=1` on a plain `redis://` master with a
/// replica: the confirm's 200 comes only after the replica acknowledged it,
/// so the replica already holds the confirmed ticket (what a failover
/// would promote). Fails on code that sends no `WAIT` for `redis://`.
#[tokio::test]
async fn with_the_replica_wait_on_the_replica_holds_a_confirm_when_it_returns() {
    let Some(master) = RedisServer::start("with_the_replica_wait_on") else {
        return;
    };
    let replica = replica_of(&master, "with_the_replica_wait_on").await;
    let app = waiting_instance(&master.url(), "wait1", 1, 1000).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let waits = calls(&master, "wait");
    assert_eq!(app.confirm(&t.id, "u1").await.status(), 200);
    assert!(
        calls(&master, "wait") > waits,
        "the confirm waited for the replica"
    );
    let held = replica.cli(&["GET", &format!("wait1:t:{{{}}}", t.id)]);
    assert!(
        held.contains("confirmed"),
        "the replica holds the confirm: {held}"
    );
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}

/// With the wait on and no replica at all (as right after a failover that
/// left none), `WAIT` answers 0 after its timeout and the confirm still
/// succeeds, just that much later, and the next change does not wait again
/// at once; with the setting at 0 nothing waits.
#[tokio::test]
async fn with_no_replica_the_wait_times_out_and_the_change_still_succeeds() {
    let Some(redis) = RedisServer::start("with_no_replica_the_wait") else {
        return;
    };
    let on = waiting_instance(&redis.url(), "wait2", 1, 400).await;
    let t = on.create_ticket().await;
    let mut ws = on.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let started = std::time::Instant::now();
    assert_eq!(on.confirm(&t.id, "u1").await.status(), 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "the confirm waited for a replica: {took:?}"
    );
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
    // A short wait pauses the waits for a second: `WAIT` blocks the
    // connection every request shares, so waiting after every change with
    // no replica would queue each request behind a full timeout.
    let next = on.create_ticket().await;
    let started = std::time::Instant::now();
    assert_eq!(on.confirm(&next.id, "u1").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "paused after a short wait: {:?}",
        started.elapsed()
    );

    let off = waiting_instance(&redis.url(), "wait3", 0, 400).await;
    let t = off.create_ticket().await;
    let waits = calls(&redis, "wait");
    let started = std::time::Instant::now();
    assert_eq!(off.confirm(&t.id, "u1").await.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(
        calls(&redis, "wait"),
        waits,
        "no WAIT with the setting at 0"
    );
}

/// `WAIT` blocks the connection it runs on. With the replica wait on and
/// no replica to answer (right after a failover), a confirm waits its
/// full timeout; the instance's reads and new tickets meanwhile must not
/// queue behind that wait. Before ticket changes had a connection of
/// their own, they shared it with every request, and under the Sentinel
/// soak's load the waits in a row filled every slot (docs/redis.md).
#[tokio::test]
async fn a_replica_wait_never_holds_up_reads_or_new_tickets() {
    let Some(redis) = RedisServer::start("a_replica_wait_never_holds_up") else {
        return;
    };
    let app = std::sync::Arc::new(waiting_instance(&redis.url(), "wait4", 1, 1000).await);
    let t = app.create_ticket().await;
    let other = app.create_ticket().await;
    let confirming = {
        let (app, id) = (app.clone(), t.id.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            assert_eq!(app.confirm(&id, "u1").await.status(), 200);
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert_eq!(status_of(&app, &other.id).await, "pending");
    app.create_ticket().await;
    let meanwhile = started.elapsed();
    let waited = confirming.await.unwrap();
    eprintln!("a read and a creation during a {waited:?} wait took {meanwhile:?}");
    assert!(
        waited >= Duration::from_millis(1000),
        "the confirm waited: {waited:?}"
    );
    assert!(
        meanwhile < Duration::from_millis(400),
        "a read and a creation queued behind the wait: {meanwhile:?}"
    );
}

/// Confirms that finish together share one `WAIT` (each needs only a wait
/// begun after its write), and each 200 still means the replica holds that
/// confirm. One wait per change, one after another on one connection,
/// capped an instance's changes at one replica round trip each.
#[tokio::test]
async fn confirms_that_finish_together_share_a_wait_and_each_is_on_the_replica() {
    let Some(master) = RedisServer::start("confirms_that_finish_together") else {
        return;
    };
    let replica = replica_of(&master, "confirms_that_finish_together").await;
    let app = std::sync::Arc::new(waiting_instance(&master.url(), "wait5", 1, 1000).await);
    let mut tickets = Vec::new();
    for _ in 0..100 {
        tickets.push(app.create_ticket().await);
    }
    let waits = calls(&master, "wait");
    let confirms: Vec<_> = tickets
        .iter()
        .map(|t| {
            let (app, id) = (app.clone(), t.id.clone());
            tokio::spawn(async move { app.confirm(&id, "u1").await.status() })
        })
        .collect();
    for confirm in confirms {
        assert_eq!(confirm.await.unwrap(), 200);
    }
    let sent = calls(&master, "wait") - waits;
    eprintln!("100 concurrent confirms sent {sent} WAITs");
    assert!(sent < 50, "{sent} WAITs for 100 confirms");
    for t in &tickets {
        let held = replica.cli(&["GET", &format!("wait5:t:{{{}}}", t.id)]);
        assert!(
            held.contains("confirmed"),
            "the replica holds {}: {held}",
            t.id
        );
    }
}

/// Past `QRLOGIN_MAX_IN_PROGRESS` store operations in progress an instance
/// answers 503 `over_capacity` with `Retry-After` at once, before any Redis
/// work, and new tickets are refused first (from a quarter of it): the
/// people already part-way through a login keep the instance. Here the
/// operations are held in progress by a Redis that stalls (`CLIENT PAUSE`).
#[tokio::test]
async fn past_its_bound_on_work_in_progress_an_instance_refuses_new_tickets_first() {
    let Some(redis) = RedisServer::start("past_its_bound_on_work") else {
        return;
    };
    let (url, prefix) = (redis.url(), "shed".to_owned());
    let app = std::sync::Arc::new(
        spawn_app_with(move |s| {
            s.redis_url = Some(url);
            s.redis_prefix = prefix;
            s.max_in_progress = 8;
        })
        .await,
    );
    let t = app.create_ticket().await;
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]).trim(), "OK");
    let read = |app: std::sync::Arc<TestApp>, id: String| {
        tokio::spawn(async move { app.trusted_get(&id).await.status() })
    };
    let mut held: Vec<_> = (0..2).map(|_| read(app.clone(), t.id.clone())).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused_at_once = |r: reqwest::Response, took: Duration| async move {
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "over_capacity", "{body}");
        assert!(
            took < Duration::from_millis(300),
            "refused at once: {took:?}"
        );
    };
    let started = std::time::Instant::now();
    let create = app.post_ticket(json!({})).await;
    refused_at_once(create, started.elapsed()).await;
    held.extend((0..6).map(|_| read(app.clone(), t.id.clone())));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let ninth = app.trusted_get(&t.id).await;
    refused_at_once(ninth, started.elapsed()).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health is never refused");
    for r in held {
        assert_eq!(
            r.await.unwrap(),
            200,
            "the requests in progress were served"
        );
    }
    // Every place was given back.
    app.create_ticket().await;
}
