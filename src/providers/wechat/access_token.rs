//! WeChat's app access token (`/cgi-bin/stable_token`), one per app, shared
//! by every request of every instance through the store's shared values.
//!
//! WeChat limits how often a token may be fetched and each fetch can
//! rotate it, so a fleet must not fetch one per request: the token lives in
//! the store under the app id, a short `put_new` lock lets exactly one
//! caller refresh it while the others wait for its result, and it is
//! refreshed a little before WeChat's `expires_in` ends. A call WeChat
//! refuses with 40001/42001 (stale or expired token) refreshes it once more
//! and is retried once.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{WechatClient, WechatError};
use crate::engine::Engine;
use crate::engine::Error;

pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";

/// How often a caller waiting for another's refresh looks again.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// One WeChat app's credentials (Official Account or Mini Program).
#[derive(Clone, Copy, Debug)]
pub struct App<'a> {
    pub app_id: &'a str,
    pub secret: &'a str,
}

#[derive(Serialize)]
struct StableTokenRequest<'a> {
    grant_type: &'static str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

#[derive(Deserialize)]
struct StableTokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// Whether WeChat refused a call because of the token itself.
pub fn is_token_error(e: &WechatError) -> bool {
    matches!(e.errcode(), Some(40001 | 42001))
}

/// A failed WeChat call as the contract's 502, logged and counted once.
pub fn upstream(e: WechatError, during: &'static str) -> Error {
    e.log(during);
    metrics::counter!("qrlogin_wechat_failures_total", "during" => during, "kind" => e.kind())
        .increment(1);
    Error::Upstream(e.to_string())
}

fn token_key(app: &App<'_>) -> String {
    format!("wechat:access-token:{}", app.app_id)
}

fn lock_key(app: &App<'_>) -> String {
    format!("wechat:access-token-lock:{}", app.app_id)
}

/// How long the token is kept: WeChat's lifetime minus a margin (at most
/// 5 minutes, at most a fifth of it), so it is replaced before it lapses.
pub fn keep_for(expires_in: u64) -> Duration {
    let margin = (expires_in / 5).min(300);
    Duration::from_secs(expires_in.saturating_sub(margin).max(1))
}

/// The shared token cache of one service (a view over the store).
pub struct AccessTokens<'a> {
    pub engine: &'a Engine,
    pub client: &'a WechatClient,
}

impl AccessTokens<'_> {
    /// The current token of `app`, fetched when none is cached (or when the
    /// cached one is `stale`, i.e. WeChat just refused it).
    pub async fn get(&self, app: App<'_>, stale: Option<&str>) -> Result<String, Error> {
        let key = token_key(&app);
        let lock = lock_key(&app);
        // A refresh holds the lock at most this long (one call plus its
        // busy retry); waiters give up a little after that.
        let lock_ttl = self.client.timeout() * 2 + Duration::from_secs(1);
        let deadline = Instant::now() + lock_ttl + Duration::from_secs(1);
        loop {
            if let Some(token) = self.cached(&key, stale).await? {
                return Ok(token);
            }
            if self.engine.claim_once(&lock, "1", lock_ttl).await? {
                // Someone may have stored a fresh token between our read and
                // our lock.
                let result = match self.cached(&key, stale).await {
                    Ok(Some(token)) => Ok(token),
                    Ok(None) => self.refresh(app, &key).await,
                    Err(e) => Err(e),
                };
                let _ = self.engine.remove_value(&lock).await;
                return result;
            }
            if Instant::now() >= deadline {
                return Err(upstream(
                    WechatError::Timeout {
                        endpoint: STABLE_TOKEN.into(),
                    },
                    "access token wait",
                ));
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    async fn cached(&self, key: &str, stale: Option<&str>) -> Result<Option<String>, Error> {
        Ok(self
            .engine
            .value(key)
            .await?
            .filter(|token| Some(token.as_str()) != stale))
    }

    /// Fetch a token (the lock is held) and share it.
    async fn refresh(&self, app: App<'_>, key: &str) -> Result<String, Error> {
        let request = StableTokenRequest {
            grant_type: "client_credential",
            appid: app.app_id,
            secret: app.secret,
            force_refresh: false,
        };
        let answer: StableTokenAnswer = self
            .client
            .post_json(STABLE_TOKEN, &[], &request)
            .await
            .map_err(|e| upstream(e, "access token"))?;
        if answer.access_token.is_empty() {
            return Err(upstream(
                WechatError::Malformed {
                    endpoint: STABLE_TOKEN.into(),
                    what: "an empty access_token".into(),
                },
                "access token",
            ));
        }
        metrics::counter!("qrlogin_wechat_access_token_refreshes_total").increment(1);
        tracing::info!(
            app_id = app.app_id,
            expires_in = answer.expires_in,
            "WeChat access token refreshed"
        );
        self.engine
            .set_value(key, &answer.access_token, keep_for(answer.expires_in))
            .await?;
        Ok(answer.access_token)
    }

    /// Run `call` with the app's token; when WeChat refuses the token
    /// (40001/42001) refresh it once and run `call` once more.
    pub async fn with_token<T, F, Fut>(
        &self,
        app: App<'_>,
        during: &'static str,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let token = self.get(app, None).await?;
        match call(token.clone()).await {
            Err(e) if is_token_error(&e) => {
                tracing::info!(
                    errcode = e.errcode(),
                    during,
                    "WeChat refused the access token; refreshing once"
                );
                let fresh = self.get(app, Some(&token)).await?;
                call(fresh).await.map_err(|e| upstream(e, during))
            }
            other => other.map_err(|e| upstream(e, during)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_before_wechat_expires_them() {
        assert_eq!(keep_for(7200), Duration::from_secs(6900));
        assert_eq!(keep_for(300), Duration::from_secs(240));
        assert_eq!(keep_for(0), Duration::from_secs(1));
    }

    #[test]
    fn only_token_errcodes_trigger_a_refresh() {
        let api = |errcode| WechatError::Api {
            endpoint: "/x".into(),
            errcode,
            errmsg: String::new(),
        };
        assert!(is_token_error(&api(40001)));
        assert!(is_token_error(&api(42001)));
        assert!(!is_token_error(&api(40029)));
        assert!(!is_token_error(&WechatError::Empty {
            endpoint: "/x".into()
        }));
    }
}
