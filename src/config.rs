//! Typed settings: every knob is an environment variable (also read from
//! `.env`), and a CLI flag of the same name may override it.
//!
//! The names are the operators' contract (API.md); `validate` turns raw
//! values into problems that name the variable, so a bad deployment stops at
//! start instead of failing on the first login.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ticket::Provider;

/// Where an `app` QR's URL takes the ticket id.
const APP_QR_PLACEHOLDER: &str = "{ticket}";

/// `qrlogin`: with no subcommand it serves.
#[derive(Debug, Clone, Parser)]
#[command(name = "qrlogin", version, about = "QR-code login service", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve (the default when no subcommand is given).
    Serve,
    /// Print the effective configuration (secrets redacted); exit 1 listing every problem.
    CheckConfig,
    /// Print a new private key as PKCS#8 PEM (`qrlogin keygen --alg es256 > key.pem`).
    Keygen {
        /// Key type: es256 (P-256), rs256 (RSA 2048) or eddsa (Ed25519).
        #[arg(long, value_enum, default_value = "es256", ignore_case = true)]
        alg: KeygenAlg,
    },
    /// Work with issued tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Print the claims of a valid token, or why it is not valid (exit 1).
    Verify {
        /// The JWT.
        jwt: String,
        /// Verify against this JWKS (an http(s) URL or a file) instead of the configured keys.
        #[arg(long)]
        jwks: Option<String>,
        /// Expected `iss` (default: QRLOGIN_JWT_ISSUER, else the public URL).
        #[arg(long)]
        issuer: Option<String>,
        /// Expected `aud` (default: QRLOGIN_JWT_AUDIENCE).
        #[arg(long)]
        audience: Option<String>,
    },
}

/// The key types `keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeygenAlg {
    #[value(name = "es256")]
    Es256,
    #[value(name = "rs256")]
    Rs256,
    #[value(name = "eddsa")]
    EdDsa,
}

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
pub enum JwtAlg {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
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

/// Every setting of a running service.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Listen address.
    #[arg(long = "bind", env = "QRLOGIN_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// External base URL used in QR contents and redirects (default: http://{bind}).
    #[arg(long = "public-url", env = "QRLOGIN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// `development` or `production`.
    #[arg(
        long = "env",
        env = "QRLOGIN_ENV",
        value_enum,
        default_value = "development"
    )]
    pub env: Environment,
    /// Comma list of enabled providers; the first is the default for new tickets.
    #[arg(
        long = "providers",
        env = "QRLOGIN_PROVIDERS",
        value_delimiter = ',',
        default_value = "dev"
    )]
    pub providers: Vec<Provider>,
    /// Ticket lifetime in seconds.
    #[arg(long = "ticket-ttl", env = "QRLOGIN_TICKET_TTL", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ticket_ttl: u64,
    /// Key of trusted backends (trusted API off when unset).
    #[arg(long = "api-key", env = "QRLOGIN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The `app` provider's QR content, with `{ticket}` (a universal link or
    /// an app scheme the product's own app opens).
    #[arg(long = "app-qr-url", env = "QRLOGIN_APP_QR_URL")]
    pub app_qr_url: Option<String>,
    /// Comma list of Origins allowed for WebSocket and CORS (empty: same origin only).
    #[arg(
        long = "allowed-origins",
        env = "QRLOGIN_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// CIDRs whose X-Forwarded-For is believed.
    #[arg(
        long = "trusted-proxies",
        env = "QRLOGIN_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, tickets and pushes go through Redis (several instances).
    #[arg(long = "redis-url", env = "QRLOGIN_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(
        long = "redis-prefix",
        env = "QRLOGIN_REDIS_PREFIX",
        default_value = "qrlogin"
    )]
    pub redis_prefix: String,
    /// CA certificate(s) (PEM) that sign the Redis servers' certificates, for
    /// a private CA; default: the system's roots. TLS (rediss…) URLs only.
    #[arg(long = "redis-ca-file", env = "QRLOGIN_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS to Redis.
    #[arg(
        long = "redis-client-cert-file",
        env = "QRLOGIN_REDIS_CLIENT_CERT_FILE"
    )]
    pub redis_client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long = "redis-client-key-file", env = "QRLOGIN_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,
    /// After each ticket change, wait for this many replicas to acknowledge
    /// it (`WAIT`), so a confirm answered 200 survives a failover. Default:
    /// 1 with Sentinel, 0 (off) otherwise; not available with Cluster.
    #[arg(long = "redis-wait-replicas", env = "QRLOGIN_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u32>,
    /// The longest that wait lasts, in milliseconds; when it ends without
    /// an acknowledgement the change still succeeds (counted in
    /// `qrlogin_redis_unreplicated_total`).
    #[arg(
        long = "redis-wait-timeout-ms",
        env = "QRLOGIN_REDIS_WAIT_TIMEOUT_MS",
        default_value_t = 100
    )]
    pub redis_wait_timeout_ms: u64,
    /// Folder whose templates override the built-in ones.
    #[arg(long = "templates-dir", env = "QRLOGIN_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// JWT signing algorithm.
    #[arg(
        long = "jwt-alg",
        env = "QRLOGIN_JWT_ALG",
        value_enum,
        default_value = "HS256"
    )]
    pub jwt_alg: JwtAlg,
    /// HS256 key (at least 32 bytes). Unset in development: a random one.
    #[arg(
        long = "jwt-secret",
        env = "QRLOGIN_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM private key that signs (asymmetric algorithms).
    #[arg(long = "jwt-key-file", env = "QRLOGIN_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// Comma list of earlier PEM keys: published and still verifying, never signing
    /// (rotation: move the old KEY_FILE here, point KEY_FILE at the new key).
    #[arg(
        long = "jwt-previous-key-files",
        env = "QRLOGIN_JWT_PREVIOUS_KEY_FILES",
        value_delimiter = ','
    )]
    pub jwt_previous_key_files: Vec<PathBuf>,
    /// `iss` of issued tokens (default: the public URL).
    #[arg(long = "jwt-issuer", env = "QRLOGIN_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` of issued tokens.
    #[arg(
        long = "jwt-audience",
        env = "QRLOGIN_JWT_AUDIENCE",
        default_value = "qrlogin"
    )]
    pub jwt_audience: String,
    /// Token lifetime in seconds.
    #[arg(long = "jwt-ttl", env = "QRLOGIN_JWT_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(30..=2_592_000))]
    pub jwt_ttl: u64,
    /// Official Account app id.
    #[arg(long = "wechat-app-id", env = "QRLOGIN_WECHAT_APP_ID")]
    pub wechat_app_id: Option<String>,
    /// Official Account app secret.
    #[arg(
        long = "wechat-app-secret",
        env = "QRLOGIN_WECHAT_APP_SECRET",
        hide_env_values = true
    )]
    pub wechat_app_secret: Option<String>,
    /// OAuth scope of `wechat-oauth`.
    #[arg(
        long = "wechat-oauth-scope",
        env = "QRLOGIN_WECHAT_OAUTH_SCOPE",
        value_enum,
        default_value = "snsapi_userinfo"
    )]
    pub wechat_oauth_scope: OauthScope,
    /// Event push signature token.
    #[arg(
        long = "wechat-token",
        env = "QRLOGIN_WECHAT_TOKEN",
        hide_env_values = true
    )]
    pub wechat_token: Option<String>,
    /// Safe-mode EncodingAESKey (43 characters).
    #[arg(
        long = "wechat-encoding-aes-key",
        env = "QRLOGIN_WECHAT_ENCODING_AES_KEY",
        hide_env_values = true
    )]
    pub wechat_encoding_aes_key: Option<String>,
    /// Open Platform website-application app id (`wechat-web`).
    #[arg(long = "wechat-web-app-id", env = "QRLOGIN_WECHAT_WEB_APP_ID")]
    pub wechat_web_app_id: Option<String>,
    /// Open Platform website-application secret.
    #[arg(
        long = "wechat-web-app-secret",
        env = "QRLOGIN_WECHAT_WEB_APP_SECRET",
        hide_env_values = true
    )]
    pub wechat_web_app_secret: Option<String>,
    /// Mini Program app id.
    #[arg(long = "miniprogram-app-id", env = "QRLOGIN_MINIPROGRAM_APP_ID")]
    pub miniprogram_app_id: Option<String>,
    /// Mini Program app secret.
    #[arg(
        long = "miniprogram-app-secret",
        env = "QRLOGIN_MINIPROGRAM_APP_SECRET",
        hide_env_values = true
    )]
    pub miniprogram_app_secret: Option<String>,
    /// Mini Program page that a Mini Program code (`kind=wxacode`) opens.
    #[arg(
        long = "miniprogram-page",
        env = "QRLOGIN_MINIPROGRAM_PAGE",
        default_value = "pages/login/login"
    )]
    pub miniprogram_page: String,
    /// Which WeChat id becomes `sub`.
    #[arg(
        long = "wechat-subject",
        env = "QRLOGIN_WECHAT_SUBJECT",
        value_enum,
        default_value = "unionid"
    )]
    pub wechat_subject: WechatSubject,
    /// WeChat API base URL (tests point it at a local fake).
    #[arg(
        long = "wechat-api-base",
        env = "QRLOGIN_WECHAT_API_BASE",
        default_value = "https://api.weixin.qq.com"
    )]
    pub wechat_api_base: String,
    /// WeChat Open Platform base URL.
    #[arg(
        long = "wechat-open-base",
        env = "QRLOGIN_WECHAT_OPEN_BASE",
        default_value = "https://open.weixin.qq.com"
    )]
    pub wechat_open_base: String,
    /// Milliseconds WeChat gets to answer one call. Hidden: WeChat's own
    /// limits make 5 s right in service; tests shorten it.
    #[arg(long = "wechat-timeout-ms", env = "QRLOGIN_WECHAT_TIMEOUT_MS", default_value_t = 5000,
          hide = true, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub wechat_timeout_ms: u64,
    /// Cap on live tickets (503 over_capacity beyond it).
    #[arg(
        long = "max-live-tickets",
        env = "QRLOGIN_MAX_LIVE_TICKETS",
        default_value_t = 1_000_000
    )]
    pub max_live_tickets: u64,
    /// Cap on simultaneous WebSockets and waiting long-polls of one ticket,
    /// counted together (429 beyond it).
    #[arg(
        long = "max-sockets-per-ticket",
        env = "QRLOGIN_MAX_SOCKETS_PER_TICKET",
        default_value_t = 4
    )]
    pub max_sockets_per_ticket: usize,
    /// Seconds between server pings on idle WebSockets (a little jitter is added).
    #[arg(long = "ws-ping-interval", env = "QRLOGIN_WS_PING_INTERVAL", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_ping_interval: u64,
    /// Longest long-poll wait in seconds.
    #[arg(long = "poll-max-wait", env = "QRLOGIN_POLL_MAX_WAIT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub poll_max_wait: u64,
    /// Cap on open WebSockets in this instance (503 over_capacity beyond it).
    #[arg(
        long = "max-sockets",
        env = "QRLOGIN_MAX_SOCKETS",
        default_value_t = 1_000_000
    )]
    pub max_sockets: usize,
    /// Cap on open WebSockets from one client IP (an IPv6 client is its /64; 429 beyond it).
    #[arg(
        long = "max-sockets-per-ip",
        env = "QRLOGIN_MAX_SOCKETS_PER_IP",
        default_value_t = 2_000
    )]
    pub max_sockets_per_ip: u32,
    /// Cap on long-polls waiting at once in this instance (503 over_capacity beyond it).
    #[arg(
        long = "max-polls",
        env = "QRLOGIN_MAX_POLLS",
        default_value_t = 20_000
    )]
    pub max_polls: usize,
    /// Cap on long-polls waiting at once from one client IP (429 beyond it).
    #[arg(
        long = "max-polls-per-ip",
        env = "QRLOGIN_MAX_POLLS_PER_IP",
        default_value_t = 2_000
    )]
    pub max_polls_per_ip: u32,
    /// Seconds a client has to send its request head (slowloris defence).
    #[arg(long = "header-read-timeout", env = "QRLOGIN_HEADER_READ_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout: u64,
    /// Seconds a request (other than WebSocket and long-poll) may take.
    #[arg(long = "request-timeout", env = "QRLOGIN_REQUEST_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout: u64,
    /// Tickets one client IP may create per minute (0: no limit).
    #[arg(
        long = "rate-tickets",
        env = "QRLOGIN_RATE_TICKETS",
        default_value_t = 60
    )]
    pub rate_tickets: u32,
    /// WebSocket connects one client IP may open per minute (0: no limit).
    #[arg(
        long = "rate-sockets",
        env = "QRLOGIN_RATE_SOCKETS",
        default_value_t = 240
    )]
    pub rate_sockets: u32,
    /// Long-polls one client IP may make per minute (0: no limit).
    #[arg(long = "rate-polls", env = "QRLOGIN_RATE_POLLS", default_value_t = 600)]
    pub rate_polls: u32,
    /// WeChat callbacks and `wechat-web` code redemptions one client IP may
    /// make per minute (0: no limit). A login needs one or two; a loop
    /// guessing states or replaying codes needs many.
    #[arg(
        long = "rate-wechat",
        env = "QRLOGIN_RATE_WECHAT",
        default_value_t = 60
    )]
    pub rate_wechat: u32,
    /// Pushes to /wechat/events one IP may make per minute (0: no limit). WeChat
    /// pushes from a few server addresses, so this is high: it bounds a forger's
    /// signature checks, not WeChat.
    #[arg(
        long = "rate-events",
        env = "QRLOGIN_RATE_EVENTS",
        default_value_t = 6000
    )]
    pub rate_events: u32,
    /// Mini Program calls (/api/v1/miniprogram/…) one client IP may make per minute (0: no limit).
    #[arg(
        long = "rate-miniprogram",
        env = "QRLOGIN_RATE_MINIPROGRAM",
        default_value_t = 120
    )]
    pub rate_miniprogram: u32,
    /// QR images one client IP may have rendered per minute (0: no limit);
    /// a cached image costs nothing.
    #[arg(
        long = "rate-renders",
        env = "QRLOGIN_RATE_RENDERS",
        default_value_t = 120
    )]
    pub rate_renders: u32,
    /// When set, /metrics is served only on this second listen address
    /// (not on QRLOGIN_BIND), so it need not be exposed with the service.
    #[arg(long = "metrics-bind", env = "QRLOGIN_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// OpenID Connect clients (JSON, RFC 7591 names); the provider is off when unset.
    #[arg(long = "oidc-clients-file", env = "QRLOGIN_OIDC_CLIENTS_FILE")]
    pub oidc_clients_file: Option<PathBuf>,
    /// Token requests one OpenID Connect client may make per minute.
    #[arg(long = "oidc-token-rate", env = "QRLOGIN_OIDC_TOKEN_RATE", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub oidc_token_rate: u32,
    /// Seconds an authorization code stays redeemable (at most 60).
    #[arg(long = "oidc-code-ttl", env = "QRLOGIN_OIDC_CODE_TTL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub oidc_code_ttl: u64,
    /// `text` or `json` log lines.
    #[arg(
        long = "log-format",
        env = "QRLOGIN_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
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

impl Settings {
    /// Whether any of the Redis TLS files is given.
    fn redis_tls_files_set(&self) -> bool {
        self.redis_ca_file.is_some()
            || self.redis_client_cert_file.is_some()
            || self.redis_client_key_file.is_some()
    }

    /// Settings from the environment alone (no CLI), as tests and embedders start from.
    pub fn from_env() -> Result<Self, clap::Error> {
        Cli::try_parse_from(["qrlogin"]).map(|cli| cli.settings)
    }

    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_secs(self.ticket_ttl)
    }

    /// How long one WeChat call may take.
    pub fn wechat_timeout(&self) -> Duration {
        Duration::from_millis(self.wechat_timeout_ms)
    }

    /// The external base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.bind),
        }
    }

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

    /// Every problem that stops a start, each naming its variable.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad =
            |variable: &'static str, message: String| problems.push(Problem { variable, message });
        if let Some(url) = &self.public_url {
            match url::Url::parse(url) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => bad(
                    "QRLOGIN_PUBLIC_URL",
                    format!("{url:?} is not an http(s) URL"),
                ),
                // Paths are appended to it: a query or fragment would
                // swallow them and break every QR link.
                Ok(u) if u.query().is_some() || u.fragment().is_some() => bad(
                    "QRLOGIN_PUBLIC_URL",
                    format!(
                        "{url:?} has a query or fragment; give a base URL like https://login.example.com"
                    ),
                ),
                Ok(u) if self.is_production() && u.scheme() != "https" => bad(
                    "QRLOGIN_PUBLIC_URL",
                    format!("{url:?} is not https; production cookies are Secure and need it"),
                ),
                Ok(_) => {}
                Err(_) => bad(
                    "QRLOGIN_PUBLIC_URL",
                    format!("{url:?} is not an http(s) URL"),
                ),
            }
        } else if self.is_production() {
            bad(
                "QRLOGIN_PUBLIC_URL",
                "must be set to an https URL in production (the default http://{bind} cannot carry Secure cookies)".into(),
            );
        }
        if self.max_live_tickets == 0 {
            bad(
                "QRLOGIN_MAX_LIVE_TICKETS",
                "must be at least 1 (0 refuses every ticket)".into(),
            );
        }
        if let Some(dir) = &self.templates_dir {
            if !dir.is_dir() {
                bad(
                    "QRLOGIN_TEMPLATES_DIR",
                    format!("{} is not a readable folder", dir.display()),
                );
            }
        }
        if self.providers.is_empty() {
            bad(
                "QRLOGIN_PROVIDERS",
                "at least one provider must be enabled".into(),
            );
        }
        if self.is_production() && self.providers.contains(&Provider::Dev) {
            bad(
                "QRLOGIN_PROVIDERS",
                "the dev provider logs anyone in and is refused when QRLOGIN_ENV=production".into(),
            );
        }
        if self.providers.contains(&Provider::App) {
            match &self.app_qr_url {
                None => bad(
                    "QRLOGIN_APP_QR_URL",
                    "is required when the app provider is enabled".into(),
                ),
                Some(url) if !url.contains(APP_QR_PLACEHOLDER) => bad(
                    "QRLOGIN_APP_QR_URL",
                    format!("{url:?} must contain {APP_QR_PLACEHOLDER}"),
                ),
                Some(_) => {}
            }
            if self.api_key.is_none() {
                bad(
                    "QRLOGIN_API_KEY",
                    "is required when the app provider is enabled (its backend drives the trusted API)"
                        .into(),
                );
            }
        }
        if let Some(key) = &self.api_key {
            if key.len() < 16 {
                bad("QRLOGIN_API_KEY", "must be at least 16 characters".into());
            }
        }
        for origin in &self.allowed_origins {
            if origin != "*" && normalize_origin(origin).is_none() {
                bad(
                    "QRLOGIN_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin like https://example.com"),
                );
            }
        }
        match self.jwt_alg {
            JwtAlg::Hs256 => match &self.jwt_secret {
                Some(s) if s.len() < 32 => bad(
                    "QRLOGIN_JWT_SECRET",
                    format!("is {} bytes; HS256 needs at least 32", s.len()),
                ),
                None if self.is_production() => bad(
                    "QRLOGIN_JWT_SECRET",
                    "must be set in production (at least 32 bytes)".into(),
                ),
                _ => {}
            },
            _ => {
                if self.jwt_key_file.is_none() {
                    bad(
                        "QRLOGIN_JWT_KEY_FILE",
                        format!("{:?} needs a PEM private key file", self.jwt_alg),
                    );
                }
            }
        }
        if self.jwt_alg == JwtAlg::Hs256 && !self.jwt_previous_key_files.is_empty() {
            bad(
                "QRLOGIN_JWT_PREVIOUS_KEY_FILES",
                "key files are for RS256, ES256 and EdDSA; HS256 has one secret".into(),
            );
        }
        for (variable, path) in self
            .jwt_key_file
            .iter()
            .filter(|_| self.jwt_alg != JwtAlg::Hs256)
            .map(|p| ("QRLOGIN_JWT_KEY_FILE", p))
            .chain(
                self.jwt_previous_key_files
                    .iter()
                    .map(|p| ("QRLOGIN_JWT_PREVIOUS_KEY_FILES", p)),
            )
        {
            // Parsed here too, so `check-config` finds a bad key before a deploy does.
            match std::fs::read_to_string(path) {
                Err(e) => bad(variable, format!("cannot read {}: {e}", path.display())),
                Ok(pem) => match crate::token::SigningKey::from_pem(&pem) {
                    Err(e) => bad(variable, format!("{}: {e}", path.display())),
                    Ok(key)
                        if variable == "QRLOGIN_JWT_KEY_FILE"
                            && key.algorithm() != crate::token::algorithm_of(self.jwt_alg) =>
                    {
                        bad(
                            variable,
                            format!(
                                "{} holds a {:?} key but QRLOGIN_JWT_ALG is {:?}",
                                path.display(),
                                key.algorithm(),
                                self.jwt_alg
                            ),
                        )
                    }
                    Ok(_) => {}
                },
            }
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}', ' ']) {
            bad(
                "QRLOGIN_REDIS_PREFIX",
                "must be non-empty, without spaces or braces".into(),
            );
        }
        if let Some(url) = &self.redis_url {
            match crate::store::redis::Target::parse(url) {
                Err(e) => bad("QRLOGIN_REDIS_URL", e),
                Ok(target) if !target.tls() && self.redis_tls_files_set() => bad(
                    "QRLOGIN_REDIS_CA_FILE",
                    "TLS files are set but QRLOGIN_REDIS_URL is not a rediss… URL".into(),
                ),
                Ok(crate::store::redis::Target::Cluster(_))
                    if self.redis_wait_replicas.is_some_and(|n| n > 0) =>
                {
                    bad(
                        "QRLOGIN_REDIS_WAIT_REPLICAS",
                        "not available with redis+cluster:// (a cluster connection cannot \
                         wait on the node that took the write); leave it unset or 0"
                            .into(),
                    )
                }
                Ok(_) => {}
            }
        } else if self.redis_tls_files_set() {
            bad(
                "QRLOGIN_REDIS_CA_FILE",
                "TLS files are set but QRLOGIN_REDIS_URL is not".into(),
            );
        }
        // Redis reads a WAIT timeout of 0 as "forever"; past a second the
        // wait would outlast the operation's own bound and fail the change.
        if !(1..=1000).contains(&self.redis_wait_timeout_ms) {
            bad(
                "QRLOGIN_REDIS_WAIT_TIMEOUT_MS",
                format!(
                    "{} is out of range 1..=1000 (QRLOGIN_REDIS_WAIT_REPLICAS=0 turns the wait off)",
                    self.redis_wait_timeout_ms
                ),
            );
        }
        if self.redis_client_cert_file.is_some() != self.redis_client_key_file.is_some() {
            bad(
                "QRLOGIN_REDIS_CLIENT_CERT_FILE",
                "needs QRLOGIN_REDIS_CLIENT_KEY_FILE, and the other way round".into(),
            );
        }
        for (variable, file) in [
            ("QRLOGIN_REDIS_CA_FILE", &self.redis_ca_file),
            (
                "QRLOGIN_REDIS_CLIENT_CERT_FILE",
                &self.redis_client_cert_file,
            ),
            ("QRLOGIN_REDIS_CLIENT_KEY_FILE", &self.redis_client_key_file),
        ] {
            let Some(path) = file else { continue };
            if let Err(e) = std::fs::metadata(path) {
                bad(variable, format!("{}: {e}", path.display()));
            }
        }
        if self.max_sockets_per_ticket == 0 {
            bad(
                "QRLOGIN_MAX_SOCKETS_PER_TICKET",
                "must be at least 1".into(),
            );
        }
        for (variable, base) in [
            ("QRLOGIN_WECHAT_API_BASE", &self.wechat_api_base),
            ("QRLOGIN_WECHAT_OPEN_BASE", &self.wechat_open_base),
        ] {
            if !matches!(
                url::Url::parse(base)
                    .map(|u| u.scheme().to_owned())
                    .as_deref(),
                Ok("http" | "https")
            ) {
                bad(variable, format!("{base:?} is not an http(s) URL"));
            }
        }
        let needs = |p: Provider| self.providers.contains(&p);
        let mut require = |on: bool, variable: &'static str, value: &Option<String>, why: &str| {
            if on && value.as_deref().is_none_or(str::is_empty) {
                problems.push(Problem {
                    variable,
                    message: format!("is required by {why}"),
                });
            }
        };
        let oa = needs(Provider::WechatOauth) || needs(Provider::WechatMp);
        require(
            oa,
            "QRLOGIN_WECHAT_APP_ID",
            &self.wechat_app_id,
            "wechat-oauth / wechat-mp",
        );
        require(
            oa,
            "QRLOGIN_WECHAT_APP_SECRET",
            &self.wechat_app_secret,
            "wechat-oauth / wechat-mp",
        );
        require(
            needs(Provider::WechatMp),
            "QRLOGIN_WECHAT_TOKEN",
            &self.wechat_token,
            "wechat-mp",
        );
        let web = needs(Provider::WechatWeb);
        require(
            web,
            "QRLOGIN_WECHAT_WEB_APP_ID",
            &self.wechat_web_app_id,
            "wechat-web",
        );
        require(
            web,
            "QRLOGIN_WECHAT_WEB_APP_SECRET",
            &self.wechat_web_app_secret,
            "wechat-web",
        );
        let mp = needs(Provider::Miniprogram);
        require(
            mp,
            "QRLOGIN_MINIPROGRAM_APP_ID",
            &self.miniprogram_app_id,
            "miniprogram",
        );
        require(
            mp,
            "QRLOGIN_MINIPROGRAM_APP_SECRET",
            &self.miniprogram_app_secret,
            "miniprogram",
        );
        problems.extend(crate::oidc::clients::problems(self));
        if let Some(key) = &self.wechat_encoding_aes_key {
            if key.len() != 43 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push(Problem {
                    variable: "QRLOGIN_WECHAT_ENCODING_AES_KEY",
                    message: "must be 43 characters of [A-Za-z0-9]".into(),
                });
            }
        }
        problems
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

/// One environment value clap cannot parse: the argument's id (to parse
/// the rest without it) and the problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProblem {
    pub id: String,
    pub variable: String,
    pub text: String,
}

/// Every environment value of `command` that clap would refuse, each named
/// by its variable. clap's own error names the flag (`--bind <BIND>`),
/// which an operator who set `QRLOGIN_BIND` never typed, and stops at the
/// first; this checks them all with clap's own value parsers. `args` are
/// the command-line arguments: a flag given there overrides its variable.
pub fn env_problems(command: &clap::Command, args: &[std::ffi::OsString]) -> Vec<EnvProblem> {
    let mut problems = Vec::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let Some(raw) = std::env::var_os(env) else {
            continue;
        };
        let Some(long) = arg.get_long() else {
            continue;
        };
        let flag = format!("--{long}");
        let overridden = args.iter().filter_map(|a| a.to_str()).any(|a| {
            a == flag
                || a.strip_prefix(flag.as_str())
                    .is_some_and(|r| r.starts_with('='))
        });
        if overridden {
            continue;
        }
        let variable = env.to_string_lossy();
        let id = arg.get_id().as_str().to_owned();
        let Some(text) = raw.to_str() else {
            problems.push(EnvProblem {
                id,
                variable: variable.clone().into_owned(),
                text: format!("{variable}: is not valid UTF-8"),
            });
            continue;
        };
        // clap's own parser, on this one argument alone.
        let probe = clap::Command::new("qrlogin")
            .no_binary_name(true)
            .arg(arg.clone().env(None::<&str>));
        if let Err(e) = probe.try_get_matches_from([format!("--{long}={text}")]) {
            use clap::error::{ContextKind, ContextValue};
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => text.to_owned(),
            };
            problems.push(EnvProblem {
                id,
                variable: variable.clone().into_owned(),
                text: format!(
                    "{variable}: invalid value '{value}' ({})",
                    expected(arg, &e)
                ),
            });
        }
    }
    problems
}

/// What a value of `arg` should look like, from clap's error.
fn expected(arg: &clap::Arg, e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    let source = std::error::Error::source(e);
    if source.is_some_and(|s| s.is::<std::net::AddrParseError>()) {
        return "expected host:port, like 127.0.0.1:8080".into();
    }
    if source.is_some_and(|s| s.is::<ipnet::AddrParseError>()) {
        return "expected a CIDR, like 10.0.0.0/8".into();
    }
    if source.is_some_and(|s| s.is::<std::num::ParseIntError>()) {
        return "expected a whole number".into();
    }
    match source {
        Some(s) => s.to_string(),
        None => format!("not a valid {}", arg.get_id()),
    }
}

/// The effective configuration, one `VARIABLE=value (source)` line per
/// setting, with secrets (settings marked `hide_env_values`) redacted.
/// Read from clap's own matches, so a new setting is listed without code here.
pub fn describe(matches: &clap::ArgMatches) -> String {
    use clap::CommandFactory;
    use clap::parser::ValueSource;
    let command = Cli::command();
    let mut lines = Vec::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let value = if raw.is_empty() {
            String::new()
        } else if arg.is_hide_env_values_set() {
            "<redacted>".to_owned()
        } else {
            raw.join(",")
        };
        lines.push(format!("{env}={value}  ({source})"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn env_example_lists_every_variable() {
        let example = include_str!("../.env.example");
        for arg in Cli::command().get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                assert!(
                    example.contains(&format!("{env}=")),
                    "{env} missing from .env.example"
                );
            }
        }
    }

    #[test]
    fn describe_redacts_secrets_and_names_sources() {
        let matches = Cli::command()
            .try_get_matches_from([
                "qrlogin",
                "--api-key",
                "super-secret-api-key",
                "--ticket-ttl",
                "30",
            ])
            .unwrap();
        let text = describe(&matches);
        assert!(
            text.contains("QRLOGIN_API_KEY=<redacted>  (flag)"),
            "{text}"
        );
        assert!(!text.contains("super-secret-api-key"));
        assert!(text.contains("QRLOGIN_TICKET_TTL=30  (flag)"));
        assert!(text.contains("QRLOGIN_BIND=127.0.0.1:8080  (default)"));
    }

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["qrlogin"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.settings).unwrap()
    }

    #[test]
    fn origins_normalise_to_what_browsers_send() {
        for (given, want) in [
            ("HTTPS://Other.Example.com", "https://other.example.com"),
            (
                "https://other.example.com:443/",
                "https://other.example.com",
            ),
            ("http://a.example:80", "http://a.example"),
            ("http://a.example:8080", "http://a.example:8080"),
        ] {
            assert_eq!(normalize_origin(given).as_deref(), Some(want), "{given}");
        }
        for garbage in [
            "a.example",
            "https://a.example/path",
            "https://a.example/?q",
            "https://u@a.example",
            "ftp://a.example",
            "null",
        ] {
            assert_eq!(normalize_origin(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn defaults_run_without_problems() {
        assert_eq!(settings(&[]).problems(), vec![]);
    }

    #[test]
    fn replica_wait_is_refused_on_a_cluster_and_outside_its_range() {
        let variables = |args: &[&str]| -> Vec<&'static str> {
            settings(args)
                .problems()
                .iter()
                .map(|p| p.variable)
                .collect()
        };
        let cluster = [
            "--redis-url",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        ];
        assert_eq!(
            variables(&[&cluster[..], &["--redis-wait-replicas", "1"]].concat()),
            vec!["QRLOGIN_REDIS_WAIT_REPLICAS"]
        );
        assert!(variables(&[&cluster[..], &["--redis-wait-replicas", "0"]].concat()).is_empty());
        assert!(variables(&cluster).is_empty());
        let single = [
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-wait-replicas",
            "2",
        ];
        assert!(variables(&single).is_empty());
        for bad in ["0", "1001"] {
            assert_eq!(
                variables(&[&single[..], &["--redis-wait-timeout-ms", bad]].concat()),
                vec!["QRLOGIN_REDIS_WAIT_TIMEOUT_MS"],
                "{bad}"
            );
        }
    }

    #[test]
    fn short_jwt_secret_is_refused_naming_the_variable() {
        let problems = settings(&["--jwt-secret", "short"]).problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].variable, "QRLOGIN_JWT_SECRET");
    }

    #[test]
    fn dev_provider_is_refused_in_production() {
        let s = settings(&["--env", "production", "--jwt-secret", &"k".repeat(32)]);
        assert!(
            s.problems()
                .iter()
                .any(|p| p.variable == "QRLOGIN_PROVIDERS")
        );
    }

    #[test]
    fn wechat_providers_name_their_missing_credentials() {
        let problems = settings(&["--providers", "wechat-mp"]).problems();
        let vars: Vec<_> = problems.iter().map(|p| p.variable).collect();
        assert!(vars.contains(&"QRLOGIN_WECHAT_APP_ID"));
        assert!(vars.contains(&"QRLOGIN_WECHAT_TOKEN"));
    }

    #[test]
    fn key_files_are_read_and_checked_against_the_algorithm() {
        let dir = std::env::temp_dir().join(format!("qrlogin-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ed = dir.join("ed.pem");
        let key = crate::token::SigningKey::generate(jsonwebtoken::Algorithm::EdDSA).unwrap();
        std::fs::write(&ed, key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        let ed = ed.to_str().unwrap();
        assert_eq!(
            settings(&["--jwt-alg", "EdDSA", "--jwt-key-file", ed]).problems(),
            vec![]
        );
        let wrong_alg = settings(&["--jwt-alg", "ES256", "--jwt-key-file", ed]).problems();
        assert_eq!(wrong_alg[0].variable, "QRLOGIN_JWT_KEY_FILE");
        assert!(wrong_alg[0].message.contains("EdDSA"), "{}", wrong_alg[0]);
        let missing = settings(&[
            "--jwt-alg",
            "EdDSA",
            "--jwt-key-file",
            ed,
            "--jwt-previous-key-files",
            "/nonexistent/old.pem",
        ])
        .problems();
        assert_eq!(missing[0].variable, "QRLOGIN_JWT_PREVIOUS_KEY_FILES");
        let hs_previous = settings(&["--jwt-previous-key-files", ed]).problems();
        assert_eq!(hs_previous[0].variable, "QRLOGIN_JWT_PREVIOUS_KEY_FILES");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn keygen_and_token_verify_parse() {
        let cli = Cli::try_parse_from(["qrlogin", "keygen", "--alg", "ES256"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keygen {
                alg: KeygenAlg::Es256
            })
        ));
        let cli = Cli::try_parse_from(["qrlogin", "token", "verify", "a.b.c", "--jwks", "k.json"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Token {
                command: TokenCommand::Verify { jwks: Some(_), .. }
            })
        ));
    }
}
