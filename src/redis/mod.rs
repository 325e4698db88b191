//! The connection to Redis that the Redis store and the Redis hub share:
//! the forms of `QRLOGIN_REDIS_URL` (`url`), the TLS material (`tls`), the
//! command connections with Sentinel master discovery (`conn`), the pub/sub
//! subscription (`subscription`), and the key layout both read.
//!
//! `Redis` connects lazily, so the service starts while Redis is still
//! coming up and reports not ready until it answers. Every command is
//! bounded (a slot, a timeout), and every failure is counted
//! (`qrlogin_redis_errors_total{op}`) and becomes a `Failed`, which the
//! store reports as `StoreError::Unavailable`.

mod conn;
pub mod subscription;
mod tls;
mod url;

pub use conn::{Failed, Lane, OP_TIMEOUT, Redis, ReplicaWait, Written, count_error, failed};
pub use subscription::Subscription;
pub use tls::TlsFiles;
pub use url::{SentinelTarget, Target, redact};

use crate::ticket::TicketId;

/// The key of a ticket under prefix `P`: `P:t:{<id>}`. The braces are a
/// Redis Cluster hash tag: everything about one ticket lives in one slot.
pub fn ticket_key(prefix: &str, id: &TicketId) -> String {
    format!("{prefix}:t:{{{}}}", id.as_str())
}
