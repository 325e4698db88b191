//! The registered relying parties, read once at start from
//! `QRLOGIN_OIDC_CLIENTS_FILE` (RFC 7591 metadata names) and checked whole:
//! every problem names the client and the field, so an operator fixes the
//! file in one go rather than one error per restart.
//!
//! Secrets are kept only as SHA-256 digests and compared in constant time;
//! `Debug` and `describe` never show them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Problem;

/// Shortest accepted client secret: 32 characters of a random string are
/// far beyond guessing, even without the token endpoint's rate limit.
pub const MIN_SECRET_LEN: usize = 32;

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic (RFC 6749 §2.3.1); a confidential client may also use the form.
    SecretBasic,
    /// `client_secret` in the form body; Basic is accepted too.
    SecretPost,
    /// A public client: no secret, PKCE required.
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::SecretBasic => "client_secret_basic",
            AuthMethod::SecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }
}

pub struct Client {
    pub id: String,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    secret_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("redirect_uris", &self.redirect_uris)
            .field("auth_method", &self.auth_method)
            .field("secret", &self.secret_hash.map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// Public clients hold no secret and must use PKCE.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    /// Whether `presented` is this client's secret, in time independent of
    /// where a wrong guess differs (both sides are hashed to 32 bytes first).
    pub fn secret_matches(&self, presented: &str) -> bool {
        let Some(expected) = &self.secret_hash else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(expected).into()
    }

    /// Exact string match, as OpenID Connect Core §3.1.2.1 requires: no
    /// prefix, no normalisation, so no open redirector hides behind a path.
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }
}

/// The clients by id.
#[derive(Debug, Default)]
pub struct Clients {
    by_id: HashMap<String, Client>,
}

impl Clients {
    pub fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// One line per client for `check-config`, secrets redacted.
    pub fn describe(&self) -> String {
        let mut ids: Vec<&String> = self.by_id.keys().collect();
        ids.sort();
        ids.iter()
            .filter_map(|id| self.by_id.get(*id))
            .map(|c| {
                format!(
                    "oidc client {:?}{}: token_endpoint_auth_method={}, client_secret={}, redirect_uris={}",
                    c.id,
                    c.name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    c.auth_method.as_str(),
                    if c.is_public() { "none" } else { "<redacted>" },
                    c.redirect_uris.join(" "),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Read and check the file; every problem at once.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            clients: Vec<Value>,
        }
        let file: File =
            serde_json::from_str(text).map_err(|e| vec![format!("not a clients file: {e}")])?;
        let mut problems = Vec::new();
        let mut clients = Clients::default();
        for (i, raw) in file.clients.into_iter().enumerate() {
            let label = match raw.get("client_id").and_then(Value::as_str) {
                Some(id) => format!("client {id:?}"),
                None => format!("client #{}", i + 1),
            };
            match serde_json::from_value::<RawClient>(raw) {
                Err(e) => problems.push(format!("{label}: {e}")),
                Ok(raw) => match raw.check() {
                    Err(errors) => {
                        problems.extend(errors.into_iter().map(|e| format!("{label}: {e}")))
                    }
                    Ok(client) => {
                        if clients.by_id.contains_key(&client.id) {
                            problems.push(format!("{label}: client_id is listed twice"));
                        }
                        clients.by_id.insert(client.id.clone(), client);
                    }
                },
            }
        }
        if clients.is_empty() && problems.is_empty() {
            problems.push("clients: the list is empty".into());
        }
        if problems.is_empty() {
            Ok(clients)
        } else {
            Err(problems)
        }
    }
}

/// One client as written (RFC 7591 names). Unknown fields are refused so a
/// typo (`redirect_uri`) is a start error, not a client that never works.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
}

impl RawClient {
    fn check(self) -> Result<Client, Vec<String>> {
        let mut errors = Vec::new();
        let id_ok = (1..=128).contains(&self.client_id.len())
            && self
                .client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !id_ok {
            errors.push("client_id must be 1 to 128 characters of [A-Za-z0-9-._~]".into());
        }
        if let Some(secret) = &self.client_secret {
            if secret.len() < MIN_SECRET_LEN {
                errors.push(format!(
                    "client_secret must be at least {MIN_SECRET_LEN} characters"
                ));
            }
        }
        let method = match (
            self.token_endpoint_auth_method.as_deref(),
            &self.client_secret,
        ) {
            (None | Some("client_secret_basic"), Some(_)) => AuthMethod::SecretBasic,
            (Some("client_secret_post"), Some(_)) => AuthMethod::SecretPost,
            (None | Some("none"), None) => AuthMethod::None,
            (Some("none"), Some(_)) => {
                errors.push("token_endpoint_auth_method is none but a client_secret is set".into());
                AuthMethod::None
            }
            (Some("client_secret_basic" | "client_secret_post"), None) => {
                errors.push("token_endpoint_auth_method needs a client_secret".into());
                AuthMethod::None
            }
            (Some(other), _) => {
                errors.push(format!(
                    "token_endpoint_auth_method {other:?} is not one of client_secret_basic, client_secret_post, none"
                ));
                AuthMethod::None
            }
        };
        if self.redirect_uris.is_empty() {
            errors.push("redirect_uris must list at least one URI".into());
        }
        for uri in &self.redirect_uris {
            match url::Url::parse(uri) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.fragment().is_none() => {}
                _ => errors.push(format!(
                    "redirect_uris: {uri:?} is not an absolute http(s) URL without a fragment"
                )),
            }
        }
        if let Some(grants) = &self.grant_types {
            if !grants.iter().any(|g| g == "authorization_code") {
                errors.push(
                    "grant_types must include authorization_code (the only one served)".into(),
                );
            }
        }
        if let Some(types) = &self.response_types {
            if !types.iter().any(|t| t == "code") {
                errors.push("response_types must include code (the only one served)".into());
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Client {
            id: self.client_id,
            name: self.client_name,
            redirect_uris: self.redirect_uris,
            auth_method: method,
            secret_hash: self
                .client_secret
                .map(|s| Sha256::digest(s.as_bytes()).into()),
        })
    }
}

const VARIABLE: &str = "QRLOGIN_OIDC_CLIENTS_FILE";

/// What stops the provider of the clients file at `path` from starting,
/// for `Settings::parse`: the service's `issuer` (unset: the public URL)
/// and `audience`, and whether it signs with HS256.
pub fn problems(
    path: &Path,
    issuer: Option<&str>,
    public_url: &str,
    audience: &str,
    hs256: bool,
) -> Vec<Problem> {
    let mut out = Vec::new();
    // Access tokens are signed by the same key for the userinfo audience: a
    // service audience equal to it would let them pass as the service's JWT.
    let userinfo = format!(
        "{}/oauth2/userinfo",
        issuer.unwrap_or(public_url).trim_end_matches('/')
    );
    if audience == userinfo {
        out.push(Problem {
            variable: "QRLOGIN_JWT_AUDIENCE",
            message: format!(
                "{userinfo} is the OpenID provider's access-token audience: access tokens would pass as the service's own tokens"
            ),
        });
    }
    let mut bad = |message: String| {
        out.push(Problem {
            variable: VARIABLE,
            message,
        })
    };
    if hs256 {
        bad(
            "the OpenID provider signs ID tokens that relying parties verify from the JWKS: \
             QRLOGIN_JWT_ALG must be RS256, ES256 or EdDSA, not HS256"
                .into(),
        );
    }
    if let Some(issuer) = issuer {
        if issuer.trim_end_matches('/') != public_url {
            out.push(Problem {
                variable: "QRLOGIN_JWT_ISSUER",
                message: format!(
                    "{issuer} must equal QRLOGIN_PUBLIC_URL ({public_url}) when QRLOGIN_OIDC_CLIENTS_FILE is set: discovery is served under the issuer"
                ),
            });
        }
    }
    let mut bad = |message: String| {
        out.push(Problem {
            variable: VARIABLE,
            message,
        })
    };
    match Clients::load(path) {
        Err(errors) => {
            for e in errors {
                bad(format!("{}: {e}", path.display()));
            }
        }
        Ok(clients) => {
            if clients.get(audience).is_some() {
                bad(format!(
                    "{}: client {audience:?}: client_id equals QRLOGIN_JWT_AUDIENCE, so its ID tokens would pass as the service's own tokens",
                    path.display(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_good_file_parses_and_secrets_match_only_themselves() {
        let clients = Clients::parse(&format!(
            r#"{{"clients": [
                {{"client_id": "wiki", "client_secret": "{SECRET}", "redirect_uris": ["https://wiki.example.com/cb"], "client_name": "Wiki"}},
                {{"client_id": "spa", "token_endpoint_auth_method": "none", "redirect_uris": ["http://127.0.0.1:9/cb"]}}
            ]}}"#
        ))
        .unwrap();
        let wiki = clients.get("wiki").unwrap();
        assert!(wiki.secret_matches(SECRET));
        assert!(!wiki.secret_matches(&SECRET[1..]));
        assert_eq!(wiki.auth_method, AuthMethod::SecretBasic);
        let spa = clients.get("spa").unwrap();
        assert!(spa.is_public() && !spa.secret_matches(""));
        assert!(spa.has_redirect_uri("http://127.0.0.1:9/cb"));
        assert!(!spa.has_redirect_uri("http://127.0.0.1:9/cb/"));
        let described = clients.describe();
        assert!(!described.contains(SECRET), "{described}");
        assert!(described.contains("<redacted>"), "{described}");
        assert!(!format!("{wiki:?}").contains(SECRET));
    }

    #[test]
    fn every_problem_names_the_client_and_the_field() {
        let errors = Clients::parse(
            r#"{"clients": [
                {"client_id": "a", "client_secret": "short", "redirect_uris": ["https://a/cb#x"]},
                {"client_id": "b", "redirect_uri": ["https://b/cb"]},
                {"client_id": "c", "token_endpoint_auth_method": "client_secret_post", "redirect_uris": []}
            ]}"#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains(r#"client "a": client_secret"#), "{all}");
        assert!(all.contains(r#"client "a": redirect_uris"#), "{all}");
        assert!(
            all.contains(r#"client "b""#) && all.contains("redirect_uri"),
            "{all}"
        );
        assert!(
            all.contains(r#"client "c": token_endpoint_auth_method"#),
            "{all}"
        );
        assert!(all.contains(r#"client "c": redirect_uris"#), "{all}");
    }
}
