//! The login domain over the store/hub seam: every change is committed to
//! the store, then announced on the hub, then counted — in that order, so a
//! woken waiter always finds the change it was woken for.
//!
//! The store and the hub stay private: callers (the providers, the HTTP
//! edge) get methods that keep the rules, such as `watch`'s
//! register-before-read, instead of the parts to reassemble them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::hub::{Hub, Waiter};
use crate::in_progress::{Class, Held, InProgress};
use crate::store::{StoreError, TicketStore};
use crate::telemetry::ByProviderAndStatus;
use crate::throttle::Throttle;
use crate::ticket::{
    Change, Identity, Provider, Requester, SealTo, Secret, Status, Ticket, TicketId,
    TransitionError, UserInfo, now_ms,
};
use crate::token::Tokens;
use crate::token::seal::{Opener, PublicJwk};

/// Why the domain refused or failed. The HTTP edge (`crate::error`) maps
/// each to the contract's code and status in one place; causes meant for
/// operators are logged where they happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input cannot be what it claims (a code, a body, a field).
    #[error("{0}")]
    Invalid(String),
    /// A missing or wrong secret, key or signature.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Known, but not allowed for this caller.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Unknown or already expired.
    #[error("unknown or expired ticket")]
    TicketNotFound,
    /// Not here at all (a provider that is not configured).
    #[error("no such endpoint")]
    NotFound,
    /// The ticket's state does not allow what was asked, checked before a
    /// change was tried.
    #[error("{0}")]
    WrongState(String),
    /// The store refused the change itself.
    #[error(transparent)]
    Transition(TransitionError),
    /// Too many attempts; try again after `retry_after` seconds.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after: u64,
    },
    /// A configured cap is reached.
    #[error("{0}")]
    OverCapacity(&'static str),
    /// The store (or a key derivation) failed; retry shortly.
    #[error("the ticket store is unavailable, retry shortly")]
    Unavailable,
    /// WeChat answered with an error or not at all.
    #[error("{0}")]
    Upstream(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::TicketNotFound,
            StoreError::Transition(t) => Error::Transition(t),
            StoreError::Unavailable(cause) => {
                // While Redis is down every waiting socket fails a read
                // about once a second: one line a second says so.
                static LOGGED: Throttle = Throttle::new(Duration::from_secs(1));
                if let Some(held_back) = LOGGED.pass() {
                    tracing::warn!(%cause, held_back, "store unavailable");
                }
                Error::Unavailable
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A browser's registered interest in its ticket, after its secret was
/// checked: the waiter was registered before `ticket` was read, so no
/// change after that read can go unannounced.
pub struct Watch {
    pub waiter: Waiter,
    /// As the store holds it (see [`Engine::get_shared`]).
    pub ticket: Arc<Ticket>,
    /// Opens a token sealed at rest to the browser's secret.
    pub opener: Opener,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    StoreDown,
    /// The store answers, but changes made on other instances go unheard.
    SubscriptionDown,
}

#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn TicketStore>,
    hub: Arc<dyn Hub>,
    tokens: Arc<Tokens>,
    ttl_ms: u64,
    max_live: u64,
    in_progress: Arc<InProgress>,
    counted: Arc<Counted>,
}

/// What every change is counted in.
struct Counted {
    finished: ByProviderAndStatus,
    transitions: ByProviderAndStatus,
}

impl Engine {
    pub fn new(
        store: Arc<dyn TicketStore>,
        hub: Arc<dyn Hub>,
        tokens: Arc<Tokens>,
        ttl_secs: u64,
        max_live: u64,
    ) -> Self {
        Self {
            store,
            hub,
            tokens,
            ttl_ms: ttl_secs * 1000,
            max_live,
            in_progress: Arc::new(InProgress::new(0)),
            counted: Arc::new(Counted {
                finished: ByProviderAndStatus::new("qrlogin_tickets_finished_total"),
                transitions: ByProviderAndStatus::new("qrlogin_transitions_total"),
            }),
        }
    }

    /// At most `max_in_progress` store operations at once (0: no bound),
    /// new tickets refused from a quarter of it (`crate::in_progress`).
    pub fn bounded(mut self, max_in_progress: usize) -> Self {
        self.in_progress = Arc::new(InProgress::new(max_in_progress));
        self
    }

    /// Count one store operation of `class`, or refuse it: this instance
    /// is behind.
    fn enter(&self, class: Class) -> Result<Held<'_>> {
        self.in_progress.enter(class).ok_or_else(|| {
            metrics::counter!("qrlogin_refused_busy_total", "class" => match class {
                Class::Creation => "creation",
                Class::Other => "other",
            })
            .increment(1);
            Error::OverCapacity("this instance is busy, retry shortly")
        })
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_ms / 1000
    }

    /// The service's signer (tokens, JWKS, OpenID discovery).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Whether the store answers and this instance hears other instances'
    /// changes (`/readyz`).
    pub async fn readiness(&self) -> Readiness {
        match self.store.ping().await {
            Err(_) => Readiness::StoreDown,
            Ok(()) if !self.hub.live() => Readiness::SubscriptionDown,
            Ok(()) => Readiness::Ready,
        }
    }

    /// Tickets alive now (may lag slightly behind expiries).
    pub async fn live_count(&self) -> Result<u64> {
        Ok(self.store.live_count().await?)
    }

    /// Register interest in ticket `id` for the browser holding `secret`,
    /// then read it: registered first, so a change between the read and
    /// the wait still wakes the waiter.
    pub async fn watch(&self, id: &TicketId, secret: &str) -> Result<Watch> {
        let waiter = self.hub.watch(id);
        let ticket = self.get(id).await?.ok_or(Error::TicketNotFound)?;
        if !ticket.secret_hash.matches(secret) {
            return Err(Error::Unauthorized("wrong secret"));
        }
        let opener = Opener::from_secret(secret).map_err(|_| Error::Unavailable)?;
        Ok(Watch {
            waiter,
            ticket,
            opener,
        })
    }

    /// Claim `key` once for `ttl` (one-time codes, de-duplication, locks):
    /// true for the one caller that set it, with `value`.
    pub async fn claim_once(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let _held = self.enter(Class::Other)?;
        Ok(self.store.put_new(key, value, ttl).await?)
    }

    /// A shared value (a cached WeChat token, a claim's value), if set and
    /// not expired.
    pub async fn value(&self, key: &str) -> Result<Option<String>> {
        let _held = self.enter(Class::Other)?;
        Ok(self.store.get_value(key).await?)
    }

    /// Set the shared value `key` for `ttl`, replacing any.
    pub async fn set_value(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let _held = self.enter(Class::Other)?;
        Ok(self.store.put(key, value, ttl).await?)
    }

    /// Remove the shared value `key` (a released lock).
    pub async fn remove_value(&self, key: &str) -> Result<()> {
        let _held = self.enter(Class::Other)?;
        Ok(self.store.remove_value(key).await?)
    }

    /// The store, for the OpenID Provider's own records (requests, codes),
    /// which are not tickets and take no part in a ticket's changes.
    pub fn records(&self) -> &dyn TicketStore {
        self.store.as_ref()
    }

    /// Store a new pending ticket with id `id` (chosen by the caller because
    /// some providers must register it with WeChat first).
    ///
    /// Its token will be sealed to `seal`, the browser's key, when given;
    /// else, in a store inside this process, with the process's own key;
    /// else to a key derived from the new secret, of which only the public
    /// half is stored: the store never holds a presentable token.
    pub async fn create(
        &self,
        id: TicketId,
        provider: Provider,
        qr_content: String,
        requester: Requester,
        seal: Option<PublicJwk>,
    ) -> Result<(Ticket, Secret)> {
        let _held = self.enter(Class::Creation)?;
        if self.store.live_count().await? >= self.max_live {
            return Err(Error::OverCapacity("too many live tickets, retry shortly"));
        }
        let secret = Secret::generate();
        let seal_to = match seal {
            Some(key) => SealTo::Browser(key),
            None if self.store.in_process() => SealTo::Process,
            None => SealTo::Secret(
                Opener::from_secret(secret.expose())
                    .map_err(|e| {
                        tracing::error!(error = %e, "at-rest key derivation failed");
                        Error::Unavailable
                    })?
                    .public(),
            ),
        };
        let now = now_ms();
        let ticket = Ticket {
            id,
            secret_hash: secret.hash(),
            provider,
            status: Status::Pending,
            created_at: now,
            expires_at: now + self.ttl_ms,
            updated_at: now,
            qr_content,
            requester,
            user: None,
            scanned_by: None,
            identity: None,
            seal_to: Some(seal_to),
            token: None,
        };
        self.store.insert(&ticket).await?;
        metrics::counter!("qrlogin_tickets_created_total", "provider" => provider.as_str())
            .increment(1);
        Ok((ticket, secret))
    }

    /// Wake every waiter of this process: the service is stopping. A
    /// socket reads the stop flag when it wakes and closes with 1012; a
    /// long-poll reads its ticket once more and goes on waiting, as before,
    /// until its own deadline or the drain ends it.
    pub fn wake_all_waiters(&self) {
        self.hub.wake_all();
    }

    /// The ticket as the store holds it, shared rather than copied (the
    /// memory store's own): every read and every change hands out an
    /// `Arc<Ticket>`, so a confirm copies its ticket once, in `apply`.
    pub async fn get(&self, id: &TicketId) -> Result<Option<Arc<Ticket>>> {
        let _held = self.enter(Class::Other)?;
        Ok(self.store.get(id).await?)
    }

    /// The ticket, or 404.
    pub async fn require(&self, id: &TicketId) -> Result<Arc<Ticket>> {
        self.get(id).await?.ok_or(Error::TicketNotFound)
    }

    pub async fn scan(
        &self,
        id: &TicketId,
        by: Option<String>,
        user: Option<UserInfo>,
        identity: Option<Identity>,
    ) -> Result<Arc<Ticket>> {
        self.change(id, Change::Scan { by, user, identity }).await
    }

    /// Sign a token for `subject`, then confirm. The token is signed first so
    /// that it is stored with the `confirmed` state in one atomic step, and
    /// sealed inside that step (`Ticket::apply`), so only its JWE is ever
    /// written; a losing racer's token is simply never handed out.
    pub async fn confirm(
        &self,
        id: &TicketId,
        by: Option<String>,
        subject: &Identity,
        user: Option<UserInfo>,
        extra: Option<&Map<String, Value>>,
    ) -> Result<Arc<Ticket>> {
        let token = self.tokens.issue(subject, extra).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            Error::Unavailable
        })?;
        self.change(id, Change::Confirm { by, user, token }).await
    }

    pub async fn deny(&self, id: &TicketId, by: Option<String>) -> Result<Arc<Ticket>> {
        self.change(id, Change::Deny { by }).await
    }

    async fn change(&self, id: &TicketId, change: Change) -> Result<Arc<Ticket>> {
        let ticket = {
            let _held = self.enter(Class::Other)?;
            self.store.transition(id, change).await?
        };
        self.hub.publish(id).await;
        if ticket.status.is_terminal() {
            self.counted
                .finished
                .increment(ticket.provider, ticket.status);
        }
        self.counted
            .transitions
            .increment(ticket.provider, ticket.status);
        tracing::info!(
            ticket = ticket.id.short(),
            status = ticket.status.as_str(),
            provider = ticket.provider.as_str(),
            "ticket changed"
        );
        Ok(ticket)
    }
}
