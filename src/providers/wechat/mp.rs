//! `wechat-mp`: the Official Account's parametric QR and its event push.
//!
//! A ticket's QR is a temporary `QR_STR_SCENE` code whose scene is the
//! ticket id. When someone scans it, WeChat pushes a `SCAN` (already
//! following) or `subscribe` (following now) event to `/wechat/events`; we
//! verify it came from WeChat, move the ticket to `scanned` for that openid,
//! and answer with a passive text message holding a one-time link to our
//! confirm page. A scan alone never logs anyone in: the person still opens
//! the link and taps Confirm.
//!
//! The link carries a fresh random key `K`; the ticket is bound to
//! `link_binding(K)`, so only whoever holds the message can confirm. The
//! first opening redeems `K` once (a `put_new`) into a fresh random phone
//! cookie the service sets, recording which phone redeemed it; the same link
//! opened anywhere else afterwards shows "scan again". `K` itself never
//! becomes a cookie: whoever made someone open a link they hold must not
//! know that phone's cookie (it would let them confirm the next ticket that
//! phone scans with another provider).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::access_token::{AccessTokens, App};
use super::crypto::{self, MsgCrypt};
use super::events::{self, Push};
use crate::engine::{Error, Result};
use crate::providers::Context;
use crate::providers::Notice;
use crate::ticket::{Provider, Secret, Status, Ticket, TicketId, TransitionError, now_ms};

/// What a ticket scanned through a push is bound to until its link is
/// redeemed: the link key's hash, in a namespace no phone cookie's binding
/// (`phone:…`) can ever equal, so presenting `K` as a cookie confirms
/// nothing.
pub fn link_binding(key: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "link:{}",
        hex::encode(&Sha256::digest(key.as_bytes())[..16])
    )
}

/// The store key naming the phone (its binding) that redeemed `id`'s link.
fn redeemed_key(id: &TicketId) -> String {
    format!("wechat-mp:redeemed:{id}")
}

pub const QRCODE_CREATE: &str = "/cgi-bin/qrcode/create";

/// The body WeChat takes as "nothing to say" (no retry, nothing shown).
pub const SUCCESS: &str = "success";

/// How long a push's reply is kept for WeChat's retries (three tries over
/// about 15 s).
const DEDUP_TTL: Duration = Duration::from_secs(120);
/// What the de-duplication key holds while the first delivery is handled.
const IN_PROGRESS: &str = "\u{1}in-progress";
/// How long a retry waits for the first delivery's reply.
const RETRY_WAIT: Duration = Duration::from_secs(3);
/// Pushes whose timestamp is further than this from our clock are refused:
/// in plain mode the signature does not cover the body, so a captured
/// query must not stay usable forever.
pub const MAX_SKEW_SECS: u64 = 300;

/// The Official Account's credentials.
pub fn oa_app<'a>(app: &Context<'a>) -> Result<App<'a>> {
    let oa = app
        .settings
        .wechat
        .official
        .as_ref()
        .ok_or(Error::NotFound)?;
    Ok(App {
        app_id: &oa.app_id,
        secret: &oa.secret,
    })
}

#[derive(Serialize)]
struct CreateQr<'a> {
    expire_seconds: u64,
    action_name: &'static str,
    action_info: ActionInfo<'a>,
}

#[derive(Serialize)]
struct ActionInfo<'a> {
    scene: Scene<'a>,
}

#[derive(Serialize)]
struct Scene<'a> {
    scene_str: &'a str,
}

#[derive(Deserialize)]
struct QrCreated {
    url: String,
}

/// Register ticket `id` as a temporary QR with WeChat; the QR's content
/// (WeChat's `url`).
pub async fn create_qr(app: &Context<'_>, id: &TicketId) -> Result<String> {
    let tokens = AccessTokens {
        engine: app.engine,
        client: app.wechat,
    };
    let body = CreateQr {
        expire_seconds: app.engine.ttl_secs(),
        action_name: "QR_STR_SCENE",
        action_info: ActionInfo {
            scene: Scene {
                scene_str: id.as_str(),
            },
        },
    };
    let created: QrCreated = tokens
        .with_token(oa_app(app)?, "qrcode create", |token| {
            let body = &body;
            async move {
                app.wechat
                    .post_json(QRCODE_CREATE, &[("access_token", token.as_str())], body)
                    .await
            }
        })
        .await?;
    if created.url.is_empty() || created.url.len() > 1024 {
        return Err(Error::Upstream(format!(
            "WeChat {QRCODE_CREATE} answered an unusable url"
        )));
    }
    Ok(created.url)
}

/// The query of WeChat's calls to `/wechat/events`.
#[derive(Debug, Default, Deserialize)]
pub struct PushQuery {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub openid: Option<String>,
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

fn push_token<'a>(app: &Context<'a>) -> Result<&'a str> {
    app.settings
        .wechat
        .push_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(Error::NotFound)
}

/// `GET /wechat/events`: WeChat's server check. The `echostr` back only
/// for a valid, fresh signature, whose `(timestamp, nonce)` it spends like
/// a push: its query signs the same way as a plain push's, so a captured
/// check must not become a push of someone else's making.
pub async fn check_server(app: &Context<'_>, q: &PushQuery) -> Result<String> {
    let token = push_token(app)?;
    let (Some(signature), Some(timestamp), Some(nonce), Some(echostr)) =
        (&q.signature, &q.timestamp, &q.nonce, &q.echostr)
    else {
        return Err(Error::Unauthorized(
            "signature, timestamp, nonce and echostr are required",
        ));
    };
    if !crypto::check_signature(token, timestamp, nonce, signature) {
        return Err(Error::Unauthorized("bad signature"));
    }
    check_fresh(timestamp)?;
    claim_stamp(
        app,
        timestamp,
        nonce,
        format!("echostr:{echostr}").as_bytes(),
    )
    .await?;
    Ok(echostr.clone())
}

/// What `/wechat/events` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub String);

impl Reply {
    pub fn is_xml(&self) -> bool {
        self.0.starts_with("<xml>")
    }
}

/// `POST /wechat/events`: verify, decrypt, parse, de-duplicate, act.
///
/// The mode comes from configuration, never from the request: with an
/// EncodingAESKey set only an encrypted push (`encrypt_type=aes` and a valid
/// `msg_signature`, which covers the body) is accepted. A plain signature
/// covers only `timestamp` and `nonce`, and WeChat sends it in safe mode too,
/// so honouring a plain push there would let one captured query carry any
/// body.
pub async fn handle_push(app: &Context<'_>, q: &PushQuery, body: &[u8]) -> Result<Reply> {
    let token = push_token(app)?;
    let (Some(timestamp), Some(nonce)) = (q.timestamp.as_deref(), q.nonce.as_deref()) else {
        return Err(Error::Unauthorized("timestamp and nonce are required"));
    };
    let safe = app.settings.wechat.encoding_aes_key.is_some();
    match (safe, q.encrypt_type.as_deref()) {
        (true, Some("aes")) | (false, None | Some("" | "raw")) => {}
        (true, None | Some("" | "raw")) => {
            metrics::counter!("qrlogin_wechat_push_refused_total", "why" => "plain_in_safe_mode")
                .increment(1);
            return Err(Error::Forbidden(
                "safe mode: only encrypted pushes are accepted",
            ));
        }
        (false, Some("aes")) => {
            return Err(Error::Invalid("safe mode is not configured".into()));
        }
        (_, Some(_)) => return Err(Error::Invalid("unknown encrypt_type".into())),
    }
    match q.signature.as_deref() {
        Some(sig) if !crypto::check_signature(token, timestamp, nonce, sig) => {
            return Err(Error::Unauthorized("bad signature"));
        }
        None if !safe => return Err(Error::Unauthorized("signature is required")),
        _ => {}
    }
    check_fresh(timestamp)?;
    let outer = events::parse(body).map_err(|e| Error::Invalid(e.to_string()))?;
    let (push, crypt) = if safe {
        let crypt = safe_mode(app)?;
        let encrypt = outer
            .encrypt
            .as_deref()
            .ok_or_else(|| Error::Invalid("safe mode without <Encrypt>".into()))?;
        let presented = q
            .msg_signature
            .as_deref()
            .ok_or(Error::Unauthorized("msg_signature is required"))?;
        if !crypto::check_msg_signature(token, timestamp, nonce, encrypt, presented) {
            return Err(Error::Unauthorized("bad msg_signature"));
        }
        claim_stamp(app, timestamp, nonce, body).await?;
        let xml = crypt
            .decrypt(encrypt)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let inner = events::parse(xml.as_bytes()).map_err(|e| Error::Invalid(e.to_string()))?;
        (inner, Some(crypt))
    } else {
        claim_stamp(app, timestamp, nonce, body).await?;
        (outer, None)
    };
    let seal = |reply: String| match &crypt {
        Some(crypt) if reply != SUCCESS => seal_reply(token, crypt, &reply),
        _ => reply,
    };
    let Some(key) = push.dedup_key() else {
        return Ok(Reply(seal(answer(app, &push).await?)));
    };
    let key = format!("wechat-mp:push:{key}");
    let store = app.engine;
    if !store.claim_once(&key, IN_PROGRESS, DEDUP_TTL).await? {
        metrics::counter!("qrlogin_wechat_push_retries_total").increment(1);
        return Ok(Reply(earlier_reply(app, &key).await?));
    }
    match answer(app, &push).await {
        Ok(reply) => {
            let body = seal(reply);
            store.set_value(&key, &body, DEDUP_TTL).await?;
            Ok(Reply(body))
        }
        Err(e) => {
            // Let WeChat's retry try again.
            let _ = store.remove_value(&key).await;
            Err(e)
        }
    }
}

/// How long a push's `(timestamp, nonce)` stays claimed: a timestamp is
/// accepted while it is within [`MAX_SKEW_SECS`] of our clock, so at most
/// twice that from its first arrival; a minute more for clock drift between
/// instances.
const STAMP_TTL: Duration = Duration::from_secs(2 * MAX_SKEW_SECS + 60);

/// Accept a verified push's `(timestamp, nonce)` once, in the store (so on
/// every instance). The claim holds a hash of the body: the very same
/// delivery again (WeChat retrying without a new stamp) goes on to the
/// de-duplication, which answers it as before and changes nothing; another
/// body under a used stamp is a replayed signature and is refused (403:
/// WeChat never sends two bodies under one stamp, so only a forger sees it).
async fn claim_stamp(app: &Context<'_>, timestamp: &str, nonce: &str, body: &[u8]) -> Result<()> {
    use sha2::{Digest, Sha256};
    let stamp = hex::encode(&Sha256::digest(format!("{timestamp}\n{nonce}").as_bytes())[..16]);
    let key = format!("wechat-mp:stamp:{stamp}");
    let digest = hex::encode(&Sha256::digest(body)[..16]);
    let store = app.engine;
    if store.claim_once(&key, &digest, STAMP_TTL).await? {
        return Ok(());
    }
    if store.value(&key).await?.as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
    metrics::counter!("qrlogin_wechat_push_refused_total", "why" => "replayed_stamp").increment(1);
    tracing::warn!("a WeChat push reused a timestamp and nonce with another body; refused");
    Err(Error::Forbidden(
        "this timestamp and nonce were used already",
    ))
}

fn check_fresh(timestamp: &str) -> Result<()> {
    let sent: u64 = timestamp
        .parse()
        .map_err(|_| Error::Unauthorized("timestamp is not a number"))?;
    let now = now_ms() / 1000;
    if sent.abs_diff(now) > MAX_SKEW_SECS {
        return Err(Error::Forbidden("the push timestamp is too old or too new"));
    }
    Ok(())
}

fn safe_mode(app: &Context<'_>) -> Result<MsgCrypt> {
    let s = &app.settings;
    let key = s
        .wechat
        .encoding_aes_key
        .as_deref()
        .ok_or_else(|| Error::Invalid("safe mode is not configured".into()))?;
    MsgCrypt::new(key, oa_app(app)?.app_id).map_err(|e| Error::Invalid(e.to_string()))
}

/// Our reply in WeChat's safe-mode envelope, signed over our own
/// timestamp and nonce.
fn seal_reply(token: &str, crypt: &MsgCrypt, reply: &str) -> String {
    let encrypt = crypt.encrypt(reply);
    let timestamp = now_ms() / 1000;
    let nonce = rand::rng()
        .random_range(100_000_000u32..4_000_000_000)
        .to_string();
    let signature = crypto::msg_signature(token, &timestamp.to_string(), &nonce, &encrypt);
    events::encrypted_reply(&encrypt, &signature, timestamp, &nonce)
}

/// The reply of the first delivery of a retried push, once it is known;
/// `success` if it does not come in time (the first delivery answers).
async fn earlier_reply(app: &Context<'_>, key: &str) -> Result<String> {
    let started = std::time::Instant::now();
    loop {
        match app.engine.value(key).await? {
            Some(v) if v != IN_PROGRESS => return Ok(v),
            // The first delivery failed and released the key.
            None => return Ok(SUCCESS.to_owned()),
            Some(_) if started.elapsed() >= RETRY_WAIT => return Ok(SUCCESS.to_owned()),
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What to answer a verified push: a link for a scan of a live ticket,
/// `success` for everything else.
async fn answer(app: &Context<'_>, push: &Push) -> Result<String> {
    let Some((scene, _kind)) = push.scene() else {
        return Ok(SUCCESS.to_owned());
    };
    let Ok(id) = scene.parse::<TicketId>() else {
        return Ok(SUCCESS.to_owned());
    };
    let Some(openid) = push
        .from_user_name
        .as_deref()
        .filter(|o| !o.is_empty() && o.len() <= 128)
    else {
        return Ok(SUCCESS.to_owned());
    };
    match app.engine.get(&id).await? {
        Some(t) if t.provider == Provider::WechatMp && t.status_at(now_ms()) == Status::Pending => {
        }
        _ => return Ok(SUCCESS.to_owned()),
    }
    let key = Secret::generate();
    let identity = super::identity(app.settings, openid, None);
    match app
        .engine
        .scan(&id, Some(link_binding(key.expose())), None, Some(identity))
        .await
    {
        Ok(_) => {}
        // Scanned, finished or gone in the meantime: nothing to offer.
        Err(
            Error::Transition(TransitionError::Invalid(..) | TransitionError::NotScanner)
            | Error::TicketNotFound,
        ) => {
            return Ok(SUCCESS.to_owned());
        }
        Err(e) => return Err(e),
    }
    let link = confirm_link(app, &id, key.expose());
    let content = format!(
        "请点击链接，确认在电脑上登录：\nTap the link to confirm the login on your computer:\n{link}"
    );
    Ok(events::text_reply(
        openid,
        push.to_user_name.as_deref().unwrap_or(""),
        now_ms() / 1000,
        &content,
    ))
}

/// `{public_url}/m/{ticket}?k=K`.
pub fn confirm_link(app: &Context<'_>, id: &TicketId, key: &str) -> String {
    format!("{}/m/{}?k={}", app.settings.http.public_url(), id, key)
}

/// A phone as the edge knows it: its binding (what tickets store), and
/// `cookie`, which the provider only hands back.
#[derive(Debug, PartialEq, Eq)]
pub struct Phone<C> {
    pub binding: String,
    pub cookie: C,
}

/// What opening `/m/{ticket}` of a `wechat-mp` ticket shows.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkOutcome<C> {
    /// The confirm page for the phone whose cookie is `cookie`;
    /// `new_cookie` when this opening redeemed the link with the fresh
    /// phone, whose cookie the page must set.
    Confirm { cookie: C, new_cookie: bool },
    /// A notice page.
    Notice(Notice),
    /// The page of a finished or gone ticket.
    Final,
}

/// Open the one-time link (`key` from `?k=`) or the bare page, on the
/// phone `current` (none: no cookie yet). `fresh` is a phone the edge drew,
/// to be the ticket's if this opening redeems the link.
pub async fn open_link<C>(
    app: &Context<'_>,
    ticket: &Ticket,
    key: Option<&str>,
    current: Option<Phone<C>>,
    fresh: Phone<C>,
) -> LinkOutcome<C> {
    let status = ticket.status_at(now_ms());
    if status == Status::Pending {
        return LinkOutcome::Notice(Notice::OpenInWechat);
    }
    if status != Status::Scanned {
        return LinkOutcome::Final;
    }
    let redeemed = match app.engine.value(&redeemed_key(&ticket.id)).await {
        Ok(r) => r,
        Err(_) => return LinkOutcome::Notice(Notice::Retry),
    };
    // The phone that redeemed the link, coming back (with the link or not).
    if let (Some(phone), Some(r)) = (current, redeemed.as_deref()) {
        if phone.binding == r {
            return LinkOutcome::Confirm {
                cookie: phone.cookie,
                new_cookie: false,
            };
        }
    }
    let Some(k) = key else {
        return LinkOutcome::Notice(Notice::Taken);
    };
    if redeemed.is_some() || ticket.scanned_by.as_deref() != Some(link_binding(k).as_str()) {
        return LinkOutcome::Notice(Notice::Rescan);
    }
    // Redeem `K` once: a fresh cookie, and its binding recorded as the
    // ticket's phone. Racing openings: one claim wins.
    let ttl =
        Duration::from_millis(ticket.expires_at.saturating_sub(now_ms())) + Duration::from_secs(60);
    match app
        .engine
        .claim_once(&redeemed_key(&ticket.id), &fresh.binding, ttl)
        .await
    {
        Ok(true) => LinkOutcome::Confirm {
            cookie: fresh.cookie,
            new_cookie: true,
        },
        Ok(false) => LinkOutcome::Notice(Notice::Rescan),
        Err(_) => LinkOutcome::Notice(Notice::Retry),
    }
}

/// The binding a confirm or deny from the phone bound as `mine` presents
/// for `ticket`: the ticket's own (its link's) when this phone redeemed the
/// link, else the phone's, which the ticket refuses.
pub async fn answer_binding(app: &Context<'_>, ticket: &Ticket, mine: &str) -> Result<String> {
    let redeemed = app.engine.value(&redeemed_key(&ticket.id)).await?;
    match (redeemed, &ticket.scanned_by) {
        (Some(r), Some(scanner)) if r == mine => Ok(scanner.clone()),
        _ => Ok(mine.to_owned()),
    }
}
