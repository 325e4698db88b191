//! The phone sides. Each provider decides what its QR holds when a ticket
//! is made (`prepare`), learns who scanned (an `Identity`) and binds the
//! ticket to that phone; confirming from the phone then signs a token for
//! that identity.
//!
//! Providers are domain code: they take a [`Context`] and answer outcomes
//! (enums, tickets, [`Notice`]s) that the HTTP edge turns into pages or
//! JSON. Cookies, CSRF and rendering stay at the edge; a phone arrives here
//! as its binding, a plain string.

pub mod dev;
pub mod wechat;

use std::sync::Arc;

use crate::config::Settings;
use crate::engine::{Engine, Error, Result};
use crate::ticket::{Provider, Ticket, TicketId};
use wechat::WechatClient;

/// What a provider works with.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub engine: &'a Engine,
    /// WeChat's HTTP client (one connection pool for every WeChat flow).
    pub wechat: &'a WechatClient,
    pub settings: &'a Settings,
}

/// What the phone is told instead of a confirm page; the edge words it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Notice {
    /// Unknown, expired or finished.
    Expired,
    /// Another phone scanned it first.
    Taken,
    /// This phone may not do that.
    Forbidden,
    /// Scan the code with WeChat.
    OpenInWechat,
    /// Something failed on our side or WeChat's: try again.
    Retry,
    /// This code or link is used up: scan again.
    Rescan,
}

/// What a provider wants a new ticket to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What the ticket's QR code encodes.
    pub qr_content: String,
    /// WeChat's own login page (`wechat-web`), which the login page embeds.
    pub authorize_url: Option<String>,
}

/// Decide what ticket `id` of `provider` shows, before it is stored. May ask
/// WeChat (a provider whose QR WeChat makes); its errors fail the creation.
pub async fn prepare(app: &Context<'_>, provider: Provider, id: &TicketId) -> Result<Prepared> {
    let phone_page = format!("{}/m/{}", app.settings.http.public_url(), id);
    match provider {
        Provider::WechatWeb => {
            let state = wechat::oauth::new_web_state(app, id).await?;
            Ok(Prepared {
                qr_content: phone_page,
                authorize_url: Some(
                    wechat::oauth::qrconnect_url(app, &state).ok_or(Error::NotFound)?,
                ),
            })
        }
        Provider::WechatMp => Ok(Prepared {
            qr_content: wechat::mp::create_qr(app, id).await?,
            authorize_url: None,
        }),
        Provider::App => Ok(Prepared {
            qr_content: app.settings.app_qr_content(id),
            authorize_url: None,
        }),
        Provider::Dev | Provider::WechatOauth | Provider::Miniprogram => Ok(Prepared {
            qr_content: phone_page,
            authorize_url: None,
        }),
    }
}

/// Confirm `ticket` from the phone bound as `binding`, for the identity the
/// provider recorded at scan.
pub async fn confirm_from_phone(
    app: &Context<'_>,
    ticket: &Ticket,
    binding: String,
) -> Result<Arc<Ticket>> {
    let identity = ticket
        .identity
        .clone()
        .ok_or(Error::Forbidden("nobody scanned this ticket"))?;
    app.engine
        .confirm(&ticket.id, Some(binding), &identity, None, None)
        .await
}
