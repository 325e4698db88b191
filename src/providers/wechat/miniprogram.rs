//! `miniprogram`: the product's own Mini Program scans the code.
//!
//! The QR holds the ordinary `/m/{ticket}` URL (WeChat opens the Mini
//! Program for such links through its "scan ordinary QR codes" rule); a Mini
//! Program code (`wxacode`, scene = ticket) can be served instead. The Mini
//! Program sends its `wx.login` code, which we exchange at
//! `/sns/jscode2session` for the person's openid; the ticket becomes
//! `scanned` and the Mini Program gets a random `scan_token`, whose hash is
//! the ticket's `scanned_by`: only that token can confirm or deny that
//! ticket, for that openid.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::WechatError;
use super::access_token::{AccessTokens, App, upstream};
use crate::engine::{Error, Result};
use crate::providers::Context;
use crate::ticket::{Identity, Provider, Secret, Status, Ticket, TicketId, now_ms};

pub const JSCODE2SESSION: &str = "/sns/jscode2session";
pub const GETWXACODEUNLIMIT: &str = "/wxa/getwxacodeunlimit";

/// The Mini Program's credentials.
pub fn mp_app<'a>(app: &Context<'a>) -> Result<App<'a>> {
    let mp = app
        .settings
        .wechat
        .miniprogram
        .as_ref()
        .ok_or(Error::NotFound)?;
    Ok(App {
        app_id: &mp.app_id,
        secret: &mp.secret,
    })
}

/// `scanned_by` of a ticket scanned with `scan_token`.
pub fn token_binding(scan_token: &str) -> String {
    format!(
        "miniprogram:{}",
        hex::encode(&Sha256::digest(scan_token.as_bytes())[..16])
    )
}

#[derive(Serialize)]
struct WxacodeRequest<'a> {
    scene: &'a str,
    page: &'a str,
}

/// The Mini Program code of `ticket` (image bytes as WeChat made them).
pub async fn wxacode(app: &Context<'_>, ticket: &Ticket) -> Result<bytes::Bytes> {
    if ticket.provider != Provider::Miniprogram {
        return Err(Error::Invalid(
            "kind=wxacode is only for miniprogram tickets".into(),
        ));
    }
    let tokens = AccessTokens {
        engine: app.engine,
        client: app.wechat,
    };
    let body = WxacodeRequest {
        scene: ticket.id.as_str(),
        page: &app.settings.wechat.miniprogram_page,
    };
    tokens
        .with_token(mp_app(app)?, "wxacode", |token| {
            let body = &body;
            async move {
                app.wechat
                    .post_for_bytes(GETWXACODEUNLIMIT, &[("access_token", token.as_str())], body)
                    .await
            }
        })
        .await
}

/// The content type of an image WeChat sent, from its first bytes.
pub fn image_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

#[derive(Deserialize)]
struct Session {
    openid: String,
    #[serde(default)]
    unionid: Option<String>,
    // `session_key` is deliberately not read: it is never needed or kept.
}

/// What a `wx.login` code was refused for, in words.
fn code_refusal(e: &WechatError) -> Option<Error> {
    let (what, code) = match e.errcode()? {
        40029 => ("invalid or expired code", 40029),
        40163 => ("code already used", 40163),
        40226 => ("code blocked: high-risk user", 40226),
        45011 => {
            return Some(Error::RateLimited {
                message: "WeChat's per-minute login quota is reached (45011)",
                retry_after: 60,
            });
        }
        _ => return None,
    };
    Some(Error::Invalid(format!(
        "WeChat refused the wx.login code: {what} (errcode {code})"
    )))
}

/// A ticket scanned by the Mini Program, and the `scan_token` that alone
/// may confirm or deny it.
#[derive(Debug)]
pub struct Scan {
    pub scan_token: String,
    pub ticket: Arc<Ticket>,
}

/// Exchange `code` and scan ticket `id` for its person.
pub async fn scan(app: &Context<'_>, id: &TicketId, code: &str) -> Result<Scan> {
    let code = code.trim();
    if code.is_empty() || code.len() > 256 || code.chars().any(char::is_control) {
        return Err(Error::Invalid("code must be a wx.login code".into()));
    }
    let ticket = live_ticket(app, id).await?;
    if ticket.status_at(now_ms()) != Status::Pending {
        return Err(Error::WrongState(format!(
            "the ticket is {} and cannot be scanned",
            ticket.status_at(now_ms()).as_str()
        )));
    }
    let App { app_id, secret } = mp_app(app)?;
    let session: Session = app
        .wechat
        .get_json(
            JSCODE2SESSION,
            &[
                ("appid", app_id),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await
        .map_err(|e| match code_refusal(&e) {
            Some(refusal) => {
                e.log("jscode2session");
                refusal
            }
            None => upstream(e, "jscode2session"),
        })?;
    if session.openid.is_empty() {
        return Err(Error::Upstream(format!(
            "WeChat {JSCODE2SESSION} answered no openid"
        )));
    }
    let mut identity: Identity =
        super::identity(app.settings, &session.openid, session.unionid.as_deref());
    identity.idp = Provider::Miniprogram.idp().to_owned();
    let scan_token = Secret::generate();
    let ticket = app
        .engine
        .scan(
            id,
            Some(token_binding(scan_token.expose())),
            None,
            Some(identity),
        )
        .await?;
    Ok(Scan {
        scan_token: scan_token.expose().to_owned(),
        ticket,
    })
}

async fn live_ticket(app: &Context<'_>, id: &TicketId) -> Result<Arc<Ticket>> {
    let ticket = app.engine.require(id).await?;
    if ticket.provider != Provider::Miniprogram {
        return Err(Error::Invalid("not a miniprogram ticket".into()));
    }
    Ok(ticket)
}

fn binding_of(scan_token: &str) -> Result<String> {
    if scan_token.is_empty() || scan_token.len() > 64 {
        return Err(Error::Unauthorized("a scan_token is required"));
    }
    Ok(token_binding(scan_token))
}

/// Confirm ticket `id` with the `scan_token` its scan handed out.
pub async fn confirm(app: &Context<'_>, id: &TicketId, scan_token: &str) -> Result<Arc<Ticket>> {
    let binding = binding_of(scan_token)?;
    let ticket = live_ticket(app, id).await?;
    crate::providers::confirm_from_phone(app, &ticket, binding).await
}

/// Deny ticket `id` with the `scan_token` its scan handed out.
pub async fn deny(app: &Context<'_>, id: &TicketId, scan_token: &str) -> Result<Arc<Ticket>> {
    let binding = binding_of(scan_token)?;
    live_ticket(app, id).await?;
    app.engine.deny(id, Some(binding)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_code_errcodes_are_named() {
        let api = |errcode| WechatError::Api {
            endpoint: JSCODE2SESSION.into(),
            errcode,
            errmsg: String::new(),
        };
        let msg = code_refusal(&api(40163)).unwrap().to_string();
        assert!(
            msg.contains("already used") && msg.contains("40163"),
            "{msg}"
        );
        assert!(
            code_refusal(&api(40029))
                .unwrap()
                .to_string()
                .contains("invalid")
        );
        assert!(code_refusal(&api(-1)).is_none());
    }

    #[test]
    fn images_are_named_by_their_magic() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\nxxxx"), "image/png");
        assert_eq!(image_type(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(image_type(b"{}"), "application/octet-stream");
    }

    #[test]
    fn each_scan_token_binds_differently() {
        assert_ne!(token_binding("a"), token_binding("b"));
        assert!(token_binding("a").starts_with("miniprogram:"));
    }
}
