//! The store conformance suite, unchanged, against `RedisStore` on a real
//! `redis-server` (one server for the binary, one key prefix per test).

use std::sync::OnceLock;

use qrlogin::redis::Redis;
use qrlogin::store::redis::RedisStore;

use crate::redis_server::RedisServer;

/// The server all conformance tests share; it dies with the test process.
pub(crate) fn shared_server() -> Option<&'static RedisServer> {
    static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let server = RedisServer::start("redis store conformance")?;
            server.forget_dir(); // never dropped: nothing may be left behind
            Some(server)
        })
        .as_ref()
}

/// A store under a prefix of its own, or `None` when Redis is missing
/// (skipped loudly).
pub fn fresh_store() -> Option<RedisStore> {
    let server = shared_server()?;
    let prefix = format!("conf{}", rand::random::<u64>());
    Some(RedisStore::new(
        Redis::open(&server.url(), &Default::default()).unwrap(),
        &prefix,
    ))
}

qrlogin::store_conformance_suite!(match fresh_store() {
    Some(store) => store,
    None => return,
});

/// The count of live tickets is reused for a moment, and a count that was
/// cancelled (its request gave up while Redis stalled) must not leave it
/// reused for ever: a later count sees tickets other instances added.
#[tokio::test]
async fn a_cancelled_count_of_live_tickets_is_counted_again_later() {
    use qrlogin::store::TicketStore;
    use std::time::Duration;
    let Some(redis) = RedisServer::start("a_cancelled_count_of_live_tickets") else {
        return;
    };
    let store = RedisStore::new(
        Redis::open(&redis.url(), &Default::default()).unwrap(),
        "cnt",
    );
    assert_eq!(store.live_count().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]).trim(), "OK");
    let cancelled = tokio::time::timeout(Duration::from_millis(100), store.live_count()).await;
    assert!(cancelled.is_err(), "the count was cancelled");
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]).trim(), "OK");
    // Five tickets another instance made, alive for a minute.
    let until = (qrlogin::ticket::now_ms() + 60_000).to_string();
    for id in ["a", "b", "c", "d", "e"] {
        redis.cli(&["ZADD", "cnt:live", &until, id]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.live_count().await.unwrap(), 5, "counted again");
}
