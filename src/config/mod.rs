//! Typed settings: every knob is an environment variable (also read from
//! `.env`), and a CLI flag of the same name may override it.
//!
//! - [`cli`]: the command-line grammar ([`Cli`], one flag per variable in
//!   [`Args`]), the environment checks and `check-config`'s listing.
//! - [`parse`]: [`Settings::parse`], the one place raw [`Args`] become
//!   [`Settings`]; every problem names its variable, so a bad deployment
//!   stops at start instead of failing on the first login.
//!
//! The names are the operators' contract (API.md). A [`Settings`] exists
//! only when its values were accepted: sections hold durations as
//! [`Duration`]s, and a WeChat app only when both its id and secret are set.

pub mod cli;
mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

pub use cli::{Args, Cli, Command, EnvProblem, KeygenAlg, TokenCommand, describe, env_problems};

use crate::ticket::Provider;
use crate::token::KeySettings;

/// Where an `app` QR's URL takes the ticket id.
const APP_QR_PLACEHOLDER: &str = "{ticket}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OauthScope {
    #[value(name = "snsapi_userinfo")]
    SnsapiUserinfo,
    #[value(name = "snsapi_base")]
    SnsapiBase,
}

/// Which WeChat id becomes the token's `sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WechatSubject {
    /// The unionid when WeChat gave one, else the openid.
    Unionid,
    /// Always the openid.
    Openid,
}

/// One reason the settings cannot run, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every setting of a running service, accepted by [`Settings::parse`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Environment,
    /// Enabled providers, at least one; the first is the default.
    pub providers: Vec<Provider>,
    /// Key of trusted backends (trusted API off when unset).
    pub api_key: Option<String>,
    /// The `app` provider's QR content, with `{ticket}`.
    pub app_qr_url: Option<String>,
    /// Folder whose templates override the built-in ones.
    pub templates_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub http: Http,
    pub tickets: Tickets,
    /// Keys and claims of issued tokens; `token` reads the key files.
    pub tokens: KeySettings,
    pub wechat: Wechat,
    pub redis: Redis,
    pub limits: Limits,
    pub oidc: Oidc,
}

/// Listening and the HTTP edge.
#[derive(Debug, Clone)]
pub struct Http {
    pub bind: SocketAddr,
    /// External base URL; unset: `http://{bind}` (see [`Http::public_url`]).
    pub public_url: Option<String>,
    /// Origins allowed for WebSocket and CORS, normalised by
    /// [`normalize_origin`] (or `*`).
    pub allowed_origins: Vec<String>,
    /// CIDRs whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, /metrics is served only there.
    pub metrics_bind: Option<SocketAddr>,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
}

/// Tickets' lifetime and number.
#[derive(Debug, Clone)]
pub struct Tickets {
    pub ttl: Duration,
    /// Cap on live tickets, at least 1.
    pub max_live: u64,
}

/// A WeChat application's credentials: both or none, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatApp {
    pub app_id: String,
    pub secret: String,
}

/// The WeChat providers. Each app is set when its provider is enabled
/// (start refuses otherwise), so no call goes to WeChat with an empty id.
#[derive(Debug, Clone)]
pub struct Wechat {
    /// The Official Account (`wechat-oauth`, `wechat-mp`).
    pub official: Option<WechatApp>,
    /// The Open Platform website application (`wechat-web`).
    pub web: Option<WechatApp>,
    /// The Mini Program (`miniprogram`).
    pub miniprogram: Option<WechatApp>,
    pub oauth_scope: OauthScope,
    /// Event push signature token, non-empty (`wechat-mp`).
    pub push_token: Option<String>,
    /// Safe-mode EncodingAESKey, 43 characters.
    pub encoding_aes_key: Option<String>,
    pub miniprogram_page: String,
    pub subject: WechatSubject,
    pub api_base: String,
    pub open_base: String,
    /// How long one WeChat call may take.
    pub timeout: Duration,
}

/// Redis, when tickets and pushes go through it.
#[derive(Debug, Clone)]
pub struct Redis {
    pub url: Option<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub wait_replicas: Option<u32>,
    /// 1 ms to 1 s.
    pub wait_timeout: Duration,
}

/// Caps and rates (per minute; 0: no limit).
#[derive(Debug, Clone)]
pub struct Limits {
    /// At least 1.
    pub max_sockets_per_ticket: usize,
    pub ws_ping_interval: Duration,
    pub poll_max_wait: Duration,
    pub max_sockets: usize,
    pub max_sockets_per_ip: u32,
    pub max_polls: usize,
    pub max_polls_per_ip: u32,
    /// 0: no cap.
    pub max_in_progress: usize,
    pub rate_tickets: u32,
    pub rate_sockets: u32,
    pub rate_polls: u32,
    pub rate_wechat: u32,
    pub rate_events: u32,
    pub rate_miniprogram: u32,
    pub rate_renders: u32,
}

/// The OpenID provider.
#[derive(Debug, Clone)]
pub struct Oidc {
    /// The provider is off when unset.
    pub clients_file: Option<PathBuf>,
    /// Token requests one client may make per minute, at least 1.
    pub token_rate: u32,
    /// At most 60 s.
    pub code_ttl: Duration,
}

impl Http {
    /// The external base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        public_url(self.public_url.as_deref(), self.bind)
    }
}

/// `QRLOGIN_PUBLIC_URL` without its trailing slash, else `http://{bind}`.
fn public_url(given: Option<&str>, bind: SocketAddr) -> String {
    match given {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bind}"),
    }
}

impl Settings {
    /// What an `app` ticket's QR holds: `QRLOGIN_APP_QR_URL` with its
    /// `{ticket}` replaced (checked at start to be there).
    pub fn app_qr_content(&self, id: &crate::ticket::TicketId) -> String {
        self.app_qr_url
            .as_deref()
            .unwrap_or(APP_QR_PLACEHOLDER)
            .replace(APP_QR_PLACEHOLDER, id.as_str())
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// The provider of tickets created without one.
    pub fn default_provider(&self) -> Provider {
        self.providers.first().copied().unwrap_or(Provider::Dev)
    }
}

/// An origin as browsers send it in `Origin`: scheme and host lowercase,
/// the default port dropped, no path. `None` for anything that is not an
/// http(s) origin (a path, a query, user info, garbage). The allowed list
/// and each request's `Origin` both go through this, so the WebSocket check
/// and CORS can never disagree about one spelling.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin.trim()).ok()?;
    let bare = matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !bare || !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}
