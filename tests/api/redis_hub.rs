//! The hub conformance suite, unchanged, against `RedisHub`: two hubs on
//! one real `redis-server` under one prefix are two instances of one
//! deployment (the server is the store suite's; one prefix per test).

use std::sync::Arc;

use qrlogin::hub::Hub;
use qrlogin::hub::conformance::Pair;
use qrlogin::hub::redis::RedisHub;
use qrlogin::redis::Redis;

/// Two instances' hubs, or `None` when Redis is missing (skipped loudly).
fn fresh_pair() -> Option<Pair> {
    let server = crate::redis_store::shared_server()?;
    let prefix = format!("hub{}", rand::random::<u64>());
    let hub = || -> Arc<dyn Hub> {
        let redis = Redis::open(&server.url(), &Default::default()).unwrap();
        Arc::new(RedisHub::start(redis, &prefix))
    };
    Some((hub(), hub()))
}

qrlogin::hub_conformance_suite!(match fresh_pair() {
    Some(pair) => pair,
    None => return,
});
