//! Phone sides other than the built-in dev page. Each provider decides what
//! its QR holds when a ticket is made (`prepare`), learns who scanned (an
//! `Identity`) and binds the ticket to that phone; confirming from the
//! phone then signs a token for that identity.

pub mod wechat;

use crate::error::{Error, Result};
use crate::ticket::{Provider, Ticket, TicketId};
use crate::web::AppState;

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
pub async fn prepare(app: &AppState, provider: Provider, id: &TicketId) -> Result<Prepared> {
    let phone_page = format!("{}/m/{}", app.settings.public_url(), id);
    match provider {
        Provider::WechatWeb => {
            let state = wechat::oauth::new_web_state(app, id).await?;
            Ok(Prepared {
                qr_content: phone_page,
                authorize_url: Some(wechat::oauth::qrconnect_url(app, &state)),
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
    app: &AppState,
    ticket: &Ticket,
    binding: String,
) -> Result<Ticket> {
    let identity = ticket
        .identity
        .clone()
        .ok_or(Error::Forbidden("nobody scanned this ticket"))?;
    app.engine
        .confirm(&ticket.id, Some(binding), &identity, None, None)
        .await
}
