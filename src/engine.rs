//! The login domain over the store/hub seam: every change is committed to
//! the store, then announced on the hub, then counted — in that order, so a
//! woken waiter always finds the change it was woken for.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::store::TicketStore;
use crate::ticket::{
    Change, Identity, Provider, Requester, SealTo, Secret, Status, Ticket, TicketId, UserInfo,
    now_ms,
};
use crate::token::Tokens;
use crate::token::seal::{Opener, PublicJwk};

#[derive(Clone)]
pub struct Engine {
    pub store: Arc<dyn TicketStore>,
    pub hub: Arc<dyn Hub>,
    pub tokens: Arc<Tokens>,
    ttl_ms: u64,
    max_live: u64,
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
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_ms / 1000
    }

    /// Store a new pending ticket with id `id` (chosen by the caller because
    /// some providers must register it with WeChat first).
    ///
    /// Its token will be sealed to `seal`, the browser's key, when given;
    /// else to a key derived from the new secret, of which only the public
    /// half is stored, so that the store never holds a presentable token.
    pub async fn create(
        &self,
        id: TicketId,
        provider: Provider,
        qr_content: String,
        requester: Requester,
        seal: Option<PublicJwk>,
    ) -> Result<(Ticket, Secret)> {
        if self.store.live_count().await? >= self.max_live {
            return Err(Error::OverCapacity("too many live tickets, retry shortly"));
        }
        let secret = Secret::generate();
        let seal_to = match seal {
            Some(key) => SealTo::Browser(key),
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

    pub async fn get(&self, id: &TicketId) -> Result<Option<Ticket>> {
        Ok(self.store.get(id).await?)
    }

    /// The ticket, or 404.
    pub async fn require(&self, id: &TicketId) -> Result<Ticket> {
        self.get(id).await?.ok_or(Error::TicketNotFound)
    }

    pub async fn scan(
        &self,
        id: &TicketId,
        by: Option<String>,
        user: Option<UserInfo>,
        identity: Option<Identity>,
    ) -> Result<Ticket> {
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
    ) -> Result<Ticket> {
        let token = self.tokens.issue(subject, extra).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            Error::Unavailable
        })?;
        self.change(id, Change::Confirm { by, user, token }).await
    }

    pub async fn deny(&self, id: &TicketId, by: Option<String>) -> Result<Ticket> {
        self.change(id, Change::Deny { by }).await
    }

    async fn change(&self, id: &TicketId, change: Change) -> Result<Ticket> {
        let ticket = self.store.transition(id, change).await?;
        self.hub.publish(id).await;
        let provider = ticket.provider.as_str();
        if ticket.status.is_terminal() {
            metrics::counter!("qrlogin_tickets_finished_total", "provider" => provider, "status" => ticket.status.as_str())
                .increment(1);
        }
        metrics::counter!("qrlogin_transitions_total", "provider" => provider, "status" => ticket.status.as_str())
            .increment(1);
        tracing::info!(
            ticket = ticket.id.short(),
            status = ticket.status.as_str(),
            provider,
            "ticket changed"
        );
        Ok(ticket)
    }
}
