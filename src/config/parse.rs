//! Raw [`Args`] become [`Settings`] here, and only here: every check
//! first (all problems, in one list naming their variables, as
//! `check-config` prints them), then the conversion, which can then take
//! every value as accepted.

use std::time::Duration;

use super::cli::Args;
use super::{
    APP_QR_PLACEHOLDER, Environment, Http, Limits, Oidc, Problem, Redis, Settings, Tickets, Wechat,
    WechatApp, normalize_origin, public_url,
};
use crate::ticket::Provider;
use crate::token::{JwtAlg, KeySettings};

impl Settings {
    /// The settings `args` describe, or every reason they cannot run.
    pub fn parse(args: &Args) -> Result<Self, Vec<Problem>> {
        let problems = args.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let a = args.clone();
        Ok(Settings {
            env: a.env,
            tokens: args.key_settings(),
            providers: a.providers,
            api_key: a.api_key,
            app_qr_url: a.app_qr_url,
            templates_dir: a.templates_dir,
            log_format: a.log_format,
            http: Http {
                bind: a.bind,
                public_url: a.public_url,
                allowed_origins: a
                    .allowed_origins
                    .iter()
                    .filter_map(|o| match o.as_str() {
                        "*" => Some(o.clone()),
                        _ => normalize_origin(o),
                    })
                    .collect(),
                trusted_proxies: a.trusted_proxies,
                metrics_bind: a.metrics_bind,
                header_read_timeout: Duration::from_secs(a.header_read_timeout),
                request_timeout: Duration::from_secs(a.request_timeout),
            },
            tickets: Tickets {
                ttl: Duration::from_secs(a.ticket_ttl),
                max_live: a.max_live_tickets,
            },
            wechat: Wechat {
                official: app(a.wechat_app_id, a.wechat_app_secret),
                web: app(a.wechat_web_app_id, a.wechat_web_app_secret),
                miniprogram: app(a.miniprogram_app_id, a.miniprogram_app_secret),
                oauth_scope: a.wechat_oauth_scope,
                push_token: a.wechat_token.filter(|t| !t.is_empty()),
                encoding_aes_key: a.wechat_encoding_aes_key,
                miniprogram_page: a.miniprogram_page,
                subject: a.wechat_subject,
                api_base: a.wechat_api_base,
                open_base: a.wechat_open_base,
                timeout: Duration::from_millis(a.wechat_timeout_ms),
            },
            redis: Redis {
                url: a.redis_url,
                prefix: a.redis_prefix,
                ca_file: a.redis_ca_file,
                client_cert_file: a.redis_client_cert_file,
                client_key_file: a.redis_client_key_file,
                wait_replicas: a.redis_wait_replicas,
                wait_timeout: Duration::from_millis(a.redis_wait_timeout_ms),
            },
            limits: Limits {
                max_sockets_per_ticket: a.max_sockets_per_ticket,
                ws_ping_interval: Duration::from_secs(a.ws_ping_interval),
                poll_max_wait: Duration::from_secs(a.poll_max_wait),
                max_sockets: a.max_sockets,
                max_sockets_per_ip: a.max_sockets_per_ip,
                max_polls: a.max_polls,
                max_polls_per_ip: a.max_polls_per_ip,
                max_in_progress: a.max_in_progress,
                rate_tickets: a.rate_tickets,
                rate_sockets: a.rate_sockets,
                rate_polls: a.rate_polls,
                rate_wechat: a.rate_wechat,
                rate_events: a.rate_events,
                rate_miniprogram: a.rate_miniprogram,
                rate_renders: a.rate_renders,
            },
            oidc: Oidc {
                clients_file: a.oidc_clients_file,
                token_rate: a.oidc_token_rate,
                code_ttl: Duration::from_secs(a.oidc_code_ttl),
            },
        })
    }
}

/// A WeChat app when both its id and secret are given and not empty.
fn app(app_id: Option<String>, secret: Option<String>) -> Option<WechatApp> {
    match (app_id, secret) {
        (Some(app_id), Some(secret)) if !app_id.is_empty() && !secret.is_empty() => {
            Some(WechatApp { app_id, secret })
        }
        _ => None,
    }
}

impl Args {
    /// The token section: what `token` needs to read and check the keys
    /// (also for `qrlogin token verify`, which needs no other setting).
    pub fn key_settings(&self) -> KeySettings {
        KeySettings {
            alg: self.jwt_alg,
            secret: self.jwt_secret.clone(),
            key_file: self.jwt_key_file.clone(),
            previous_key_files: self.jwt_previous_key_files.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            ttl: Duration::from_secs(self.jwt_ttl),
        }
    }

    /// Whether any of the Redis TLS files is given.
    fn redis_tls_files_set(&self) -> bool {
        self.redis_ca_file.is_some()
            || self.redis_client_cert_file.is_some()
            || self.redis_client_key_file.is_some()
    }

    fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// The external base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        public_url(self.public_url.as_deref(), self.bind)
    }

    /// Every problem that stops a start, each naming its variable.
    fn problems(&self) -> Vec<Problem> {
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
        // The key files are read and parsed now, by the code that signs, so
        // `check-config` finds a bad key before a deploy does.
        for p in crate::token::keys::check(&self.key_settings(), self.is_production()) {
            bad(p.variable, p.message);
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
        if let Some(path) = &self.oidc_clients_file {
            problems.extend(crate::oidc::clients::problems(
                path,
                self.jwt_issuer.as_deref(),
                &self.public_url(),
                &self.jwt_audience,
                self.jwt_alg == JwtAlg::Hs256,
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of these flags (none when they parse).
    fn problems(args: &[&str]) -> Vec<Problem> {
        let args = Args::from_flags(args.iter().copied()).unwrap();
        Settings::parse(&args).err().unwrap_or_default()
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
        assert_eq!(problems(&[]), vec![]);
    }

    #[test]
    fn replica_wait_is_refused_on_a_cluster_and_outside_its_range() {
        let variables = |args: &[&str]| -> Vec<&'static str> {
            problems(args).iter().map(|p| p.variable).collect()
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
        let problems = problems(&["--jwt-secret", "short"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].variable, "QRLOGIN_JWT_SECRET");
    }

    #[test]
    fn dev_provider_is_refused_in_production() {
        let s = problems(&["--env", "production", "--jwt-secret", &"k".repeat(32)]);
        assert!(s.iter().any(|p| p.variable == "QRLOGIN_PROVIDERS"));
    }

    #[test]
    fn wechat_providers_name_their_missing_credentials() {
        let problems = problems(&["--providers", "wechat-mp"]);
        let vars: Vec<_> = problems.iter().map(|p| p.variable).collect();
        assert!(vars.contains(&"QRLOGIN_WECHAT_APP_ID"));
        assert!(vars.contains(&"QRLOGIN_WECHAT_TOKEN"));
    }

    #[test]
    fn a_wechat_app_exists_only_with_its_id_and_secret() {
        let official = |args: &[&str]| {
            let args = Args::from_flags(args.iter().copied()).unwrap();
            Settings::parse(&args).unwrap().wechat.official
        };
        assert_eq!(official(&["--wechat-app-id", "wx1"]), None);
        assert_eq!(
            official(&["--wechat-app-id", "wx1", "--wechat-app-secret", ""]),
            None
        );
        assert_eq!(
            official(&["--wechat-app-id", "wx1", "--wechat-app-secret", "s"]),
            Some(WechatApp {
                app_id: "wx1".into(),
                secret: "s".into()
            })
        );
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
            problems(&["--jwt-alg", "EdDSA", "--jwt-key-file", ed]),
            vec![]
        );
        let wrong_alg = problems(&["--jwt-alg", "ES256", "--jwt-key-file", ed]);
        assert_eq!(wrong_alg[0].variable, "QRLOGIN_JWT_KEY_FILE");
        assert!(wrong_alg[0].message.contains("EdDSA"), "{}", wrong_alg[0]);
        let missing = problems(&[
            "--jwt-alg",
            "EdDSA",
            "--jwt-key-file",
            ed,
            "--jwt-previous-key-files",
            "/nonexistent/old.pem",
        ]);
        assert_eq!(missing[0].variable, "QRLOGIN_JWT_PREVIOUS_KEY_FILES");
        let hs_previous = problems(&["--jwt-previous-key-files", ed]);
        assert_eq!(hs_previous[0].variable, "QRLOGIN_JWT_PREVIOUS_KEY_FILES");
        std::fs::remove_dir_all(&dir).ok();
    }
}
