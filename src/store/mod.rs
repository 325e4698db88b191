//! The `TicketStore` seam: where the truth about tickets lives.
//!
//! Every change goes through `transition`, a compare-and-set that runs the
//! pure `Ticket::apply` so there is exactly one winner per change, in one
//! process (`memory`) or across instances (`redis`). The store also keeps
//! small shared values — one-time markers (event de-duplication, code
//! replay) and cached WeChat access tokens — so they follow the same engine.
//!
//! `conformance` is the one test suite every engine must pass.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ticket::{Change, Ticket, TicketId, TransitionError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Unknown, or past its `expires_at`.
    #[error("ticket not found")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The engine cannot be reached (Redis down); the cause is for logs only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Store a new ticket; it is gone at its `expires_at`.
    async fn insert(&self, ticket: &Ticket) -> Result<(), StoreError>;

    /// The ticket, or `None` once unknown or past its `expires_at`.
    /// Shared, not copied: a socket woken by a change reads its ticket, and
    /// the memory store hands out the one it holds.
    async fn get(&self, id: &TicketId) -> Result<Option<Arc<Ticket>>, StoreError>;

    /// Apply `change` atomically: exactly one of racing changes wins.
    async fn transition(&self, id: &TicketId, change: Change) -> Result<Arc<Ticket>, StoreError>;

    /// Tickets alive now (may lag slightly behind expiries).
    async fn live_count(&self) -> Result<u64, StoreError>;

    /// Whether the engine answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Set `key` to `value` for `ttl` unless it is already set; true when
    /// this call set it (one-time markers, locks).
    async fn put_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Set `key` to `value` for `ttl`, replacing any value.
    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// The value of `key`, if set and not expired.
    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Remove `key`.
    async fn remove_value(&self, key: &str) -> Result<(), StoreError>;

    /// Whether what is stored never leaves this process (the memory store).
    /// Tokens are then sealed with the process's own key instead of one
    /// derived from each ticket's secret (`token::seal`); a store shared
    /// with other instances must answer false.
    fn in_process(&self) -> bool {
        false
    }
}

#[doc(hidden)]
pub mod conformance;
