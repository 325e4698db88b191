//! The one HTTP client every WeChat flow talks through.
//!
//! WeChat's APIs answer errors as HTTP 200 with `{"errcode", "errmsg"}`,
//! often labelled `text/plain`, and sometimes with an empty body: so a reply
//! is judged by its body alone, never by its status line or content type.
//! `errcode -1` ("system busy") is retried once after a short pause.
//!
//! Request URLs carry app secrets and access tokens in their query strings,
//! so nothing here ever formats a URL (or a `reqwest::Error`, whose display
//! names the URL) into an error: a [`WechatError`] names the endpoint's path
//! only, and is safe to log and to show.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Settings;

/// How long to wait before the one retry of a busy (`-1`) answer.
const BUSY_PAUSE: Duration = Duration::from_millis(200);
/// `errmsg` is cut to this many characters in errors and logs.
const ERRMSG_MAX: usize = 120;

/// Why a WeChat call failed. Its `Display` names the endpoint path (never a
/// query string, secret, code or token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// WeChat answered `{"errcode": N, "errmsg": …}` with N ≠ 0.
    #[error("WeChat {endpoint} answered errcode {errcode} ({errmsg})")]
    Api {
        endpoint: String,
        errcode: i64,
        /// WeChat's text, without its per-request `rid`/`hint` suffix.
        errmsg: String,
    },
    /// No complete answer within the client timeout.
    #[error("WeChat {endpoint} did not answer in time")]
    Timeout { endpoint: String },
    /// The connection failed (DNS, TCP, TLS, reset).
    #[error("WeChat {endpoint} could not be reached: {reason}")]
    Transport { endpoint: String, reason: String },
    /// HTTP 200 with nothing in it (seen for bad credentials).
    #[error("WeChat {endpoint} answered an empty body")]
    Empty { endpoint: String },
    /// A body that is neither an error nor the expected answer, or an HTTP
    /// error status without an `errcode`.
    #[error("WeChat {endpoint} answered something unexpected ({what})")]
    Malformed { endpoint: String, what: String },
}

impl WechatError {
    /// WeChat's `errcode`, when it gave one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WechatError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// A short label for logs and metrics: `api`, `timeout`, `transport`,
    /// `empty`, `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            WechatError::Api { .. } => "api",
            WechatError::Timeout { .. } => "timeout",
            WechatError::Transport { .. } => "transport",
            WechatError::Empty { .. } => "empty",
            WechatError::Malformed { .. } => "malformed",
        }
    }

    /// The OAuth code was unknown (40029), already used (40163) or expired
    /// (42003): the person should scan again; nothing is wrong with us.
    pub fn is_bad_code(&self) -> bool {
        matches!(self.errcode(), Some(40029 | 40163 | 42003))
    }

    /// Log this failure once, at warn, with its errcode and kind.
    pub fn log(&self, during: &'static str) {
        tracing::warn!(
            during,
            kind = self.kind(),
            errcode = self.errcode(),
            error = %self,
            "WeChat call failed"
        );
    }
}

/// WeChat's HTTP client: base URLs, timeouts and a connection pool shared
/// by every flow of one running service.
#[derive(Clone, Debug)]
pub struct WechatClient {
    http: reqwest::Client,
    api_base: String,
    open_base: String,
    timeout: Duration,
}

impl WechatClient {
    /// A client for `api_base` (`https://api.weixin.qq.com`) and `open_base`
    /// (`https://open.weixin.qq.com`) whose every call ends within `timeout`.
    pub fn new(api_base: &str, open_base: &str, timeout: Duration) -> Result<Self, WechatError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("qrlogin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WechatError::Transport {
                endpoint: "(client)".into(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            open_base: open_base.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, WechatError> {
        Self::new(
            &settings.wechat.api_base,
            &settings.wechat.open_base,
            settings.wechat.timeout,
        )
    }

    /// `{QRLOGIN_WECHAT_API_BASE}{path}`.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base)
    }

    /// `{QRLOGIN_WECHAT_OPEN_BASE}{path}`.
    pub fn open_url(&self, path: &str) -> String {
        format!("{}{path}", self.open_base)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET {api_base}{path}?{query}`, the body parsed as `T` unless it is an
    /// error.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, WechatError> {
        let bytes = self
            .send_retrying(path, || self.http.get(self.api_url(path)).query(query))
            .await?;
        parse_json(path, &bytes)
    }

    /// `POST {api_base}{path}?{query}` with a JSON body, the answer parsed as
    /// `T` unless it is an error.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<T, WechatError> {
        let bytes = self
            .send_retrying(path, || {
                self.http.post(self.api_url(path)).query(query).json(body)
            })
            .await?;
        parse_json(path, &bytes)
    }

    /// `POST {api_base}{path}?{query}` with a JSON body for endpoints that
    /// answer raw bytes on success (images) and JSON on failure: the bytes,
    /// unless the body is an `errcode` object or empty.
    pub async fn post_for_bytes<B: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<bytes::Bytes, WechatError> {
        let bytes = self
            .send_retrying(path, || {
                self.http.post(self.api_url(path)).query(query).json(body)
            })
            .await?;
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(err) = api_error(path, &value) {
                return Err(err);
            }
            return Err(WechatError::Malformed {
                endpoint: path.to_owned(),
                what: "JSON where bytes were expected".into(),
            });
        }
        Ok(bytes)
    }

    /// Send, and once more after a pause if WeChat says it is busy (`-1`).
    async fn send_retrying(
        &self,
        path: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, WechatError> {
        match self.send_once(path, request()).await {
            Err(e) if e.errcode() == Some(-1) => {
                tracing::info!(endpoint = path, "WeChat busy (-1), retrying once");
                tokio::time::sleep(BUSY_PAUSE).await;
                self.send_once(path, request()).await
            }
            other => other,
        }
    }

    /// One exchange: the body, or why there is none usable. Errors are read
    /// from the body first, whatever the status line says.
    async fn send_once(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, WechatError> {
        let started = std::time::Instant::now();
        let result = self.exchange(path, request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::histogram!("qrlogin_wechat_request_seconds", "endpoint" => path.to_owned(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        // By WeChat's errcode: "0" for a good answer, the kind when WeChat
        // gave no errcode (timeout, transport, empty, malformed).
        let errcode = match &result {
            Ok(_) => "0".to_owned(),
            Err(e) => e
                .errcode()
                .map_or_else(|| e.kind().to_owned(), |c| c.to_string()),
        };
        metrics::counter!("qrlogin_wechat_requests_total", "endpoint" => path.to_owned(), "errcode" => errcode)
            .increment(1);
        result
    }

    async fn exchange(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, WechatError> {
        let response = request.send().await.map_err(|e| transport(path, e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(path, e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(WechatError::Empty {
                endpoint: path.to_owned(),
            });
        }
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(err) = api_error(path, &value) {
                return Err(err);
            }
        }
        if !status.is_success() {
            return Err(WechatError::Malformed {
                endpoint: path.to_owned(),
                what: format!("HTTP {}", status.as_u16()),
            });
        }
        Ok(bytes)
    }
}

/// A reqwest failure, described without its URL.
fn transport(path: &str, e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        return WechatError::Timeout {
            endpoint: path.to_owned(),
        };
    }
    let reason = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off".to_owned()
    } else {
        e.without_url().to_string()
    };
    WechatError::Transport {
        endpoint: path.to_owned(),
        reason,
    }
}

/// The error a JSON body carries: an object with a non-zero `errcode`.
fn api_error(path: &str, value: &Value) -> Option<WechatError> {
    let errcode = value.get("errcode")?.as_i64()?;
    if errcode == 0 {
        return None;
    }
    let errmsg = value.get("errmsg").and_then(Value::as_str).unwrap_or("");
    Some(WechatError::Api {
        endpoint: path.to_owned(),
        errcode,
        errmsg: clean_errmsg(errmsg),
    })
}

/// WeChat's errmsg without the per-request suffix (`, rid: …`, `hints: [ … ]`,
/// `hint: [ … ]`), bounded.
fn clean_errmsg(errmsg: &str) -> String {
    let cut = ["rid:", "hints:", "hint:"]
        .iter()
        .filter_map(|marker| errmsg.find(marker))
        .min()
        .unwrap_or(errmsg.len());
    errmsg[..cut]
        .trim_end_matches([' ', ',', ';'])
        .chars()
        .take(ERRMSG_MAX)
        .collect()
}

/// A success body parsed as `T`. A shape mismatch is reported without the
/// body (it may hold tokens).
fn parse_json<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, WechatError> {
    serde_json::from_slice(bytes).map_err(|e| WechatError::Malformed {
        endpoint: path.to_owned(),
        what: format!(
            "{:?} at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errmsg_loses_its_request_suffix() {
        assert_eq!(
            clean_errmsg("invalid code, rid: 668f2aa4-51c08c03-3d141241"),
            "invalid code"
        );
        assert_eq!(
            clean_errmsg("invalid code hints: [ req_id: zp1Bma0037uth6 ]"),
            "invalid code"
        );
        assert_eq!(clean_errmsg("system error"), "system error");
    }

    #[test]
    fn errcode_zero_is_not_an_error() {
        let ok = serde_json::json!({"errcode": 0, "errmsg": "ok"});
        assert_eq!(api_error("/x", &ok), None);
        let bad = serde_json::json!({"errcode": 40029, "errmsg": "invalid code, rid: 1"});
        let err = api_error("/x", &bad).unwrap();
        assert_eq!(err.errcode(), Some(40029));
        assert!(err.is_bad_code());
        assert_eq!(
            err.to_string(),
            "WeChat /x answered errcode 40029 (invalid code)"
        );
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_query() {
        // A port nothing listens on: the connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = WechatClient::new(&base, &base, Duration::from_secs(2)).unwrap();
        let err = client
            .get_json::<Value>("/sns/oauth2/access_token", &[("secret", "TOPSECRET")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "transport");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(!shown.contains("secret="), "{shown}");
    }

    #[test]
    fn shape_errors_do_not_repeat_the_body() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Need {
            openid: String,
        }
        let err = parse_json::<Need>("/sns/x", br#"{"access_token":"SECRET-TOKEN"}"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRET-TOKEN"), "{err}");
    }
}
