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
