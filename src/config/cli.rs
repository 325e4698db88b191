//! The command-line grammar: subcommands, one flag per variable, and the
//! checks and listing that work on clap's own matches (`check-config`).
//! What the values mean is [`super::Settings`]'s business.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};

use super::{Environment, LogFormat, OauthScope, WechatSubject};
use crate::ticket::Provider;
use crate::token::JwtAlg;

/// `qrlogin`: with no subcommand it serves.
#[derive(Debug, Clone, Parser)]
#[command(name = "qrlogin", version, about = "QR-code login service", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
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

/// Every setting as given: one field per variable (and flag), the names
/// and help operators read. [`Settings::parse`](super::Settings::parse)
/// turns it into the typed settings a running service uses.
///
/// Each setting is named once, by its field: `ws_ping_interval` is the flag
/// `--ws-ping-interval` and the variable `QRLOGIN_WS_PING_INTERVAL`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_args = qrlogin_env)]
pub struct Args {
    /// Listen address.
    #[arg(long, env, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// External base URL used in QR contents and redirects (default: http://{bind}).
    #[arg(long, env)]
    pub public_url: Option<String>,
    /// `development` or `production`.
    #[arg(long, env, value_enum, default_value = "development")]
    pub env: Environment,
    /// Comma list of enabled providers; the first is the default for new tickets.
    #[arg(long, env, value_delimiter = ',', default_value = "dev", value_parser = provider_parser())]
    pub providers: Vec<Provider>,
    /// Ticket lifetime in seconds.
    #[arg(long, env, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ticket_ttl: u64,
    /// Key of trusted backends (trusted API off when unset).
    #[arg(long, env, hide_env_values = true)]
    pub api_key: Option<String>,
    /// The `app` provider's QR content, with `{ticket}` (a universal link or
    /// an app scheme the product's own app opens).
    #[arg(long, env)]
    pub app_qr_url: Option<String>,
    /// Comma list of Origins allowed for WebSocket and CORS (empty: same origin only).
    #[arg(long, env, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// CIDRs whose X-Forwarded-For is believed.
    #[arg(long, env, value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, tickets and pushes go through Redis (several instances).
    #[arg(long, env, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env, default_value = "qrlogin")]
    pub redis_prefix: String,
    /// CA certificate(s) (PEM) that sign the Redis servers' certificates, for
    /// a private CA; default: the system's roots. TLS (rediss…) URLs only.
    #[arg(long, env)]
    pub redis_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS to Redis.
    #[arg(long, env)]
    pub redis_client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env)]
    pub redis_client_key_file: Option<PathBuf>,
    /// After each ticket change, wait for this many replicas to acknowledge
    /// it (`WAIT`), so a confirm answered 200 survives a failover. Default:
    /// 1 with Sentinel, 0 (off) otherwise; not available with Cluster.
    #[arg(long, env)]
    pub redis_wait_replicas: Option<u32>,
    /// The longest that wait lasts, in milliseconds; when it ends without
    /// an acknowledgement the change still succeeds (counted in
    /// `qrlogin_redis_unreplicated_total`).
    #[arg(long, env, default_value_t = 100)]
    pub redis_wait_timeout_ms: u64,
    /// Folder whose templates override the built-in ones.
    #[arg(long, env)]
    pub templates_dir: Option<PathBuf>,
    /// JWT signing algorithm.
    #[arg(long, env, default_value = "HS256", value_parser = jwt_alg_parser())]
    pub jwt_alg: JwtAlg,
    /// HS256 key (at least 32 bytes). Unset in development: a random one.
    #[arg(long, env, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM private key that signs (asymmetric algorithms).
    #[arg(long, env)]
    pub jwt_key_file: Option<PathBuf>,
    /// Comma list of earlier PEM keys: published and still verifying, never signing
    /// (rotation: move the old KEY_FILE here, point KEY_FILE at the new key).
    #[arg(long, env, value_delimiter = ',')]
    pub jwt_previous_key_files: Vec<PathBuf>,
    /// `iss` of issued tokens (default: the public URL).
    #[arg(long, env)]
    pub jwt_issuer: Option<String>,
    /// `aud` of issued tokens.
    #[arg(long, env, default_value = "qrlogin")]
    pub jwt_audience: String,
    /// Token lifetime in seconds.
    #[arg(long, env, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(30..=2_592_000))]
    pub jwt_ttl: u64,
    /// Official Account app id.
    #[arg(long, env)]
    pub wechat_app_id: Option<String>,
    /// Official Account app secret.
    #[arg(long, env, hide_env_values = true)]
    pub wechat_app_secret: Option<String>,
    /// OAuth scope of `wechat-oauth`.
    #[arg(long, env, value_enum, default_value = "snsapi_userinfo")]
    pub wechat_oauth_scope: OauthScope,
    /// Event push signature token.
    #[arg(long, env, hide_env_values = true)]
    pub wechat_token: Option<String>,
    /// Safe-mode EncodingAESKey (43 characters).
    #[arg(long, env, hide_env_values = true)]
    pub wechat_encoding_aes_key: Option<String>,
    /// Open Platform website-application app id (`wechat-web`).
    #[arg(long, env)]
    pub wechat_web_app_id: Option<String>,
    /// Open Platform website-application secret.
    #[arg(long, env, hide_env_values = true)]
    pub wechat_web_app_secret: Option<String>,
    /// Mini Program app id.
    #[arg(long, env)]
    pub miniprogram_app_id: Option<String>,
    /// Mini Program app secret.
    #[arg(long, env, hide_env_values = true)]
    pub miniprogram_app_secret: Option<String>,
    /// Mini Program page that a Mini Program code (`kind=wxacode`) opens.
    #[arg(long, env, default_value = "pages/login/login")]
    pub miniprogram_page: String,
    /// Which WeChat id becomes `sub`.
    #[arg(long, env, value_enum, default_value = "unionid")]
    pub wechat_subject: WechatSubject,
    /// WeChat API base URL (tests point it at a local fake).
    #[arg(long, env, default_value = "https://api.weixin.qq.com")]
    pub wechat_api_base: String,
    /// WeChat Open Platform base URL.
    #[arg(long, env, default_value = "https://open.weixin.qq.com")]
    pub wechat_open_base: String,
    /// Milliseconds WeChat gets to answer one call. Hidden: WeChat's own
    /// limits make 5 s right in service; tests shorten it.
    #[arg(long, env, default_value_t = 5000, hide = true, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub wechat_timeout_ms: u64,
    /// Cap on live tickets (503 over_capacity beyond it).
    #[arg(long, env, default_value_t = 1_000_000)]
    pub max_live_tickets: u64,
    /// Cap on simultaneous WebSockets and waiting long-polls of one ticket,
    /// counted together (429 beyond it).
    #[arg(long, env, default_value_t = 4)]
    pub max_sockets_per_ticket: usize,
    /// Seconds between server pings on idle WebSockets (a little jitter is added).
    #[arg(long, env, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_ping_interval: u64,
    /// Longest long-poll wait in seconds.
    #[arg(long, env, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub poll_max_wait: u64,
    /// Cap on open WebSockets in this instance (503 over_capacity beyond it).
    #[arg(long, env, default_value_t = 1_000_000)]
    pub max_sockets: usize,
    /// Cap on open WebSockets from one client IP (an IPv6 client is its /64; 429 beyond it).
    #[arg(long, env, default_value_t = 2_000)]
    pub max_sockets_per_ip: u32,
    /// Cap on store operations in progress at once in this instance (503
    /// over_capacity with Retry-After beyond it; new tickets from a quarter
    /// of it on); 0: no cap.
    #[arg(long, env, default_value_t = 1_024)]
    pub max_in_progress: usize,
    /// Cap on long-polls waiting at once in this instance (503 over_capacity beyond it).
    #[arg(long, env, default_value_t = 20_000)]
    pub max_polls: usize,
    /// Cap on long-polls waiting at once from one client IP (429 beyond it).
    #[arg(long, env, default_value_t = 2_000)]
    pub max_polls_per_ip: u32,
    /// Seconds a client has to send its request head (slowloris defence).
    #[arg(long, env, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout: u64,
    /// Seconds a request (other than WebSocket and long-poll) may take.
    #[arg(long, env, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout: u64,
    /// Tickets one client IP may create per minute (0: no limit).
    #[arg(long, env, default_value_t = 60)]
    pub rate_tickets: u32,
    /// WebSocket connects one client IP may open per minute (0: no limit).
    #[arg(long, env, default_value_t = 240)]
    pub rate_sockets: u32,
    /// Long-polls one client IP may make per minute (0: no limit).
    #[arg(long, env, default_value_t = 600)]
    pub rate_polls: u32,
    /// WeChat callbacks and `wechat-web` code redemptions one client IP may
    /// make per minute (0: no limit). A login needs one or two; a loop
    /// guessing states or replaying codes needs many.
    #[arg(long, env, default_value_t = 60)]
    pub rate_wechat: u32,
    /// Pushes to /wechat/events one IP may make per minute (0: no limit). WeChat
    /// pushes from a few server addresses, so this is high: it bounds a forger's
    /// signature checks, not WeChat.
    #[arg(long, env, default_value_t = 6000)]
    pub rate_events: u32,
    /// Mini Program calls (/api/v1/miniprogram/…) one client IP may make per minute (0: no limit).
    #[arg(long, env, default_value_t = 120)]
    pub rate_miniprogram: u32,
    /// QR images one client IP may have rendered per minute (0: no limit);
    /// a cached image costs nothing.
    #[arg(long, env, default_value_t = 120)]
    pub rate_renders: u32,
    /// When set, /metrics is served only on this second listen address
    /// (not on QRLOGIN_BIND), so it need not be exposed with the service.
    #[arg(long, env)]
    pub metrics_bind: Option<SocketAddr>,
    /// OpenID Connect clients (JSON, RFC 7591 names); the provider is off when unset.
    #[arg(long, env)]
    pub oidc_clients_file: Option<PathBuf>,
    /// Token requests one OpenID Connect client may make per minute.
    #[arg(long, env, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub oidc_token_rate: u32,
    /// Seconds an authorization code stays redeemable (at most 60).
    #[arg(long, env, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub oidc_code_ttl: u64,
    /// `text` or `json` log lines.
    #[arg(long, env, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A setting's variable: `QRLOGIN_` before the name clap derives from the
/// field (`#[arg(env)]`). Applied to the command `Args` is part of.
fn qrlogin_env(arg: clap::Arg) -> clap::Arg {
    match arg
        .get_env()
        .map(|env| format!("QRLOGIN_{}", env.to_string_lossy()))
    {
        Some(variable) => arg.env(variable),
        None => arg,
    }
}

/// The providers as `QRLOGIN_PROVIDERS` names them, with their help.
const PROVIDERS: [(&str, Provider, &str); 6] = [
    (
        "dev",
        Provider::Dev,
        "The built-in phone page: anyone who opens it may log in. Development only",
    ),
    (
        "wechat-oauth",
        Provider::WechatOauth,
        "Official Account OAuth inside WeChat's browser",
    ),
    (
        "wechat-web",
        Provider::WechatWeb,
        "Open Platform website application (WeChat's own QR)",
    ),
    (
        "wechat-mp",
        Provider::WechatMp,
        "Official Account parametric QR with event push",
    ),
    (
        "miniprogram",
        Provider::Miniprogram,
        "The product's Mini Program scans the code",
    ),
    (
        "app",
        Provider::App,
        "The product's own app scans the code and its backend drives the trusted API; the QR holds `QRLOGIN_APP_QR_URL`",
    ),
];

/// `QRLOGIN_PROVIDERS`'s values: parsed here, so the domain's `Provider`
/// knows nothing of command lines.
fn provider_parser() -> impl TypedValueParser<Value = Provider> {
    PossibleValuesParser::new(PROVIDERS.map(|(name, _, help)| PossibleValue::new(name).help(help)))
        .map(|name| {
            PROVIDERS
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or(Provider::Dev, |(_, p, _)| *p)
        })
}

/// `QRLOGIN_JWT_ALG`'s values, by their JWS names.
fn jwt_alg_parser() -> impl TypedValueParser<Value = JwtAlg> {
    PossibleValuesParser::new(JwtAlg::NAMES.map(|(name, _)| name)).map(|name| {
        JwtAlg::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(JwtAlg::Hs256, |(_, alg)| *alg)
    })
}

impl Args {
    /// The settings of the environment alone (no flags), as tests and
    /// embedders start from.
    pub fn from_env() -> Result<Self, clap::Error> {
        Cli::try_parse_from(["qrlogin"]).map(|cli| cli.args)
    }

    /// The settings of `flags` over the embedded defaults, reading no
    /// environment variable: what tests start from, so a `QRLOGIN_*` in the
    /// shell cannot change them.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<Self, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|arg| arg.env(None::<&str>))
            .try_get_matches_from(std::iter::once("qrlogin").chain(flags))?;
        Cli::from_arg_matches(&matches).map(|cli| cli.args)
    }
}

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
        let example = include_str!("../../.env.example");
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
