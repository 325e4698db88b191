//! Ticket ids, secrets and the state machine — pure, no I/O.
//!
//! A `TicketId` can only be made by generating or parsing one, so handlers
//! never carry raw path strings past the edge. `Ticket::apply` is the only
//! place a state changes; stores run it inside their compare-and-set so every
//! engine enforces the same rules.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::token::seal::{
    Opener, PublicJwk, RestKey, SealError, open_in_process, seal, seal_at_rest, seal_in_process,
};

const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of a generated ticket id: 24 base62 characters ≈ 143 bits.
/// It must stay ≤ 32: the id travels as a Mini Program `scene`.
pub const TICKET_LEN: usize = 24;
/// Length of a generated secret: 32 base64url characters = 192 bits.
pub const SECRET_LEN: usize = 32;

/// `len` characters of `alphabet` (at most 256 of them), each equally likely,
/// from the thread's CSPRNG. Bytes are drawn 32 at a time and a byte is kept
/// only below the largest multiple of the alphabet's size, so `b % size` has
/// no bias: one draw per id instead of one per character (1,100 fewer
/// instructions per `jti`, per ticket id and per secret).
fn random_string(alphabet: &[u8], len: usize) -> String {
    let size = alphabet.len().clamp(1, 256);
    let limit = 256 - 256 % size;
    let mut rng = rand::rng();
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 32];
    while out.len() < len {
        rng.fill_bytes(&mut bytes);
        for b in bytes.iter().map(|&b| usize::from(b)).filter(|&b| b < limit) {
            if out.len() == len {
                break;
            }
            if let Some(&c) = alphabet.get(b % size) {
                out.push(char::from(c));
            }
        }
    }
    out
}

/// How this process hashes ticket ids in the maps only the service's own
/// ids enter (the memory store's, the per-ticket socket caps): foldhash,
/// seeded per map. SipHash, the standard one, cost a confirm about 1,200
/// instructions more over those lookups (docs/performance.md). Its
/// stronger guarantee is not needed there: only ids the service drew at
/// random are inserted, so a caller cannot make them collide. A map that
/// holds ids a caller chose, even briefly (the hub's waiters are
/// registered before the ticket is read), keeps SipHash.
pub type IdHasher = foldhash::fast::RandomState;

/// A map keyed by ticket id, hashed with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<TicketId, V, IdHasher>;

/// The public id of one login attempt (it is in the QR code).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TicketId(Box<str>);

impl TicketId {
    pub fn generate() -> Self {
        Self(random_string(BASE62, TICKET_LEN).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first characters only: enough to follow a ticket in logs, too few
    /// to act on it.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(6)]
    }
}

/// Why a string is not a ticket id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a ticket id is 1 to 32 characters of [A-Za-z0-9]")]
pub struct BadTicketId;

impl FromStr for TicketId {
    type Err = BadTicketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BadTicketId);
        }
        Ok(Self(s.into()))
    }
}

impl TryFrom<String> for TicketId {
    type Error = BadTicketId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TicketId> for String {
    fn from(id: TicketId) -> Self {
        id.0.into()
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ids are shortened whenever they are debug-printed, so a stray `?id` in a
/// log line does not leak a usable ticket.
impl fmt::Debug for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketId({}…)", self.short())
    }
}

/// The browser's private key to its ticket. Only its hash is stored.
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Self {
        Self(random_string(BASE64URL, SECRET_LEN))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

/// SHA-256 of a secret. A 192-bit random secret needs no slow hash; what
/// matters is that a store dump holds nothing a browser could present.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash(#[serde(with = "hex_bytes")] [u8; 32]);

impl SecretHash {
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }

    /// Constant-time comparison with a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        Self::of(presented).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <&str>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// Where a ticket is in its life. `Confirmed`, `Denied`, `Expired` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Scanned,
    Confirmed,
    Denied,
    Expired,
}

impl Status {
    /// Every status, in the order a ticket can pass through them.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Scanned,
        Status::Confirmed,
        Status::Denied,
        Status::Expired,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Confirmed | Status::Denied | Status::Expired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scanned => "scanned",
            Status::Confirmed => "confirmed",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "pending" => Status::Pending,
            "scanned" => Status::Scanned,
            "confirmed" => Status::Confirmed,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            _ => return Err(()),
        })
    }
}

/// How the phone side of a ticket works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The built-in phone page: anyone who opens it may log in. Development only.
    Dev,
    /// Official Account OAuth inside WeChat's browser.
    WechatOauth,
    /// Open Platform website application (WeChat's own QR).
    WechatWeb,
    /// Official Account parametric QR with event push.
    WechatMp,
    /// The product's Mini Program scans the code.
    Miniprogram,
    /// The product's own app scans the code and its backend drives the
    /// trusted API; the QR holds `QRLOGIN_APP_QR_URL`.
    App,
}

impl Provider {
    /// Every provider, in the order `--help` lists them.
    pub const ALL: [Provider; 6] = [
        Provider::Dev,
        Provider::WechatOauth,
        Provider::WechatWeb,
        Provider::WechatMp,
        Provider::Miniprogram,
        Provider::App,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Dev => "dev",
            Provider::WechatOauth => "wechat-oauth",
            Provider::WechatWeb => "wechat-web",
            Provider::WechatMp => "wechat-mp",
            Provider::Miniprogram => "miniprogram",
            Provider::App => "app",
        }
    }

    /// The `idp` claim of tokens from this provider.
    pub fn idp(self) -> &'static str {
        match self {
            Provider::Dev => "dev",
            Provider::WechatOauth | Provider::WechatWeb | Provider::WechatMp => "wechat",
            Provider::Miniprogram => "miniprogram",
            Provider::App => "app",
        }
    }
}

impl FromStr for Provider {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(())
    }
}

/// Which computer asked: shown on the phone before anyone confirms, so a
/// person scanning someone else's code can notice (QRLJacking).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub ip: String,
    pub user_agent: String,
}

/// What the browser may show about the person who scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// Who logged in, as the token will say (`sub`, `idp`, WeChat ids). Set
/// when a provider learns it (at scan for WeChat), used at confirm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub sub: String,
    pub idp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// The signed token handed to the browser on `confirmed`, as it is signed:
/// it lives in memory only, on its way to being sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedToken(.., expires_in: {})", self.expires_in)
    }
}

/// Whose key a ticket's token is sealed to before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", content = "jwk", rename_all = "snake_case")]
pub enum SealTo {
    /// The browser's own key (`seal`): the JWE goes out as `sealed_token`.
    Browser(PublicJwk),
    /// The key derived from the ticket's secret: the service opens the JWE
    /// when the secret is presented and hands out the plain `token`.
    Secret(RestKey),
    /// This process's own key, for a store inside this process (see
    /// `token::seal`). Never serialised: no other process could open it, so
    /// a store outside the process refuses such a ticket rather than keep a
    /// token nobody can open.
    #[serde(skip)]
    Process,
}

/// The token as stored: sealed (see `token::seal`), never the JWT itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedToken {
    #[serde(rename = "jwe")]
    pub sealed: Sealed,
    pub expires_in: u64,
}

/// A sealed token: a compact JWE, or, in a store inside this process, the
/// bytes only this process opens (`SealTo::Process`), which like that
/// variant are never serialised.
#[derive(Clone, PartialEq, Eq)]
pub enum Sealed {
    Jwe(String),
    InProcess(Vec<u8>),
}

impl Sealed {
    /// The compact JWE, if it is one.
    pub fn jwe(&self) -> Option<&str> {
        match self {
            Sealed::Jwe(jwe) => Some(jwe),
            Sealed::InProcess(_) => None,
        }
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sealed::Jwe(jwe) => write!(f, "Jwe({jwe:?})"),
            Sealed::InProcess(bytes) => write!(f, "InProcess({} bytes)", bytes.len()),
        }
    }
}

impl Serialize for Sealed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Sealed::Jwe(jwe) => serializer.serialize_str(jwe),
            Sealed::InProcess(_) => Err(serde::ser::Error::custom(
                "a token sealed in process never leaves it",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Sealed::Jwe)
    }
}

/// One login attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub secret_hash: SecretHash,
    pub provider: Provider,
    pub status: Status,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds; the ticket is `expired` from then on unless final.
    pub expires_at: u64,
    /// Unix milliseconds of the last change (push latency is measured from it).
    #[serde(default)]
    pub updated_at: u64,
    pub qr_content: String,
    pub requester: Requester,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// Who scanned: only they may confirm or deny from the phone side
    /// (a phone cookie's hash, an openid). Trusted backends are not bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_by: Option<String>,
    /// Who scanned, when the provider knows (WeChat ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Where the token will be sealed to; fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_to: Option<SealTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SealedToken>,
}

/// A requested change of state.
#[derive(Debug, Clone)]
pub enum Change {
    /// Someone scanned; they alone may finish from the phone side.
    Scan {
        by: Option<String>,
        user: Option<UserInfo>,
        identity: Option<Identity>,
    },
    /// Log the browser in with this token, which is sealed to the ticket's
    /// `seal_to` key as it is stored. `by`, when given, must be whoever
    /// scanned (the phone side); `None` is a trusted caller.
    Confirm {
        by: Option<String>,
        user: Option<UserInfo>,
        token: IssuedToken,
    },
    /// Refuse; `by` as for `Confirm`.
    Deny { by: Option<String> },
}

impl Change {
    pub fn target(&self) -> Status {
        match self {
            Change::Scan { .. } => Status::Scanned,
            Change::Confirm { .. } => Status::Confirmed,
            Change::Deny { .. } => Status::Denied,
        }
    }
}

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the ticket is {0:?} and cannot become {1:?}")]
    Invalid(Status, Status),
    #[error("the ticket was scanned by someone else")]
    NotScanner,
    /// No key to seal the token to (a ticket stored before sealing
    /// existed), or the random generator failed: nothing is stored.
    #[error("the token could not be sealed")]
    Unsealable,
}

impl Ticket {
    /// The JWT of a confirmed ticket, for the browser that presented its
    /// secret (the caller has checked it against `secret_hash`; `opener` is
    /// made from it). None before the confirm and for a token sealed to the
    /// browser's own key, which goes out as stored.
    pub fn open_token(&self, opener: &Opener) -> Option<Result<String, SealError>> {
        let sealed = &self.token.as_ref()?.sealed;
        let plain = match (&self.seal_to, sealed) {
            (Some(SealTo::Browser(_)), _) => return None,
            (Some(SealTo::Process), Sealed::InProcess(bytes)) => open_in_process(bytes),
            (Some(SealTo::Secret(_)) | None, Sealed::Jwe(jwe)) => opener.open(jwe),
            _ => Err(SealError::Unopenable),
        };
        Some(plain.and_then(|p| String::from_utf8(p).map_err(|_| SealError::Unopenable)))
    }

    /// The status as of `now`: an unfinished ticket past its time is expired.
    pub fn status_at(&self, now_ms: u64) -> Status {
        if !self.status.is_terminal() && now_ms >= self.expires_at {
            Status::Expired
        } else {
            self.status
        }
    }

    /// The ticket after `change`, or why not. Pure: stores call it inside
    /// their compare-and-set. (Pure but for the randomness of sealing a
    /// confirm's token.)
    ///
    /// A final state reached in the ticket's last moments stays readable
    /// for `FINAL_STATE_GRACE_MS` after it was reached: the sockets waiting
    /// for it (on other instances: after a pub/sub wake-up that a Redis
    /// reconnect can delay by seconds) re-read the store, and a ticket gone
    /// by then would be reported to them as `expired` although the backend
    /// was told `confirmed`.
    pub fn apply(&self, change: Change, now_ms: u64) -> Result<Ticket, TransitionError> {
        let current = self.status_at(now_ms);
        let target = change.target();
        let allowed = matches!(
            (current, target),
            (Status::Pending, Status::Scanned)
                | (
                    Status::Pending | Status::Scanned,
                    Status::Confirmed | Status::Denied
                )
        );
        if !allowed {
            return Err(TransitionError::Invalid(current, target));
        }
        let check_scanner = |by: &Option<String>| match (by, &self.scanned_by) {
            (None, _) => Ok(()),
            (Some(by), Some(scanner)) if by == scanner => Ok(()),
            _ => Err(TransitionError::NotScanner),
        };
        let mut next = self.clone();
        next.status = target;
        next.updated_at = now_ms;
        if target.is_terminal() {
            next.expires_at = next.expires_at.max(now_ms + FINAL_STATE_GRACE_MS);
        }
        match change {
            Change::Scan { by, user, identity } => {
                next.scanned_by = by;
                next.user = user;
                next.identity = identity;
            }
            Change::Confirm { by, user, token } => {
                check_scanner(&by)?;
                if user.is_some() {
                    next.user = user;
                }
                let to = self.seal_to.as_ref().ok_or(TransitionError::Unsealable)?;
                let sealed = match to {
                    SealTo::Browser(key) => seal(key, token.token.as_bytes()).map(Sealed::Jwe),
                    SealTo::Secret(key) => {
                        seal_at_rest(key, token.token.as_bytes()).map(Sealed::Jwe)
                    }
                    SealTo::Process => {
                        seal_in_process(token.token.as_bytes()).map(Sealed::InProcess)
                    }
                }
                .map_err(|_| TransitionError::Unsealable)?;
                next.token = Some(SealedToken {
                    sealed,
                    expires_in: token.expires_in,
                });
            }
            Change::Deny { by } => check_scanner(&by)?,
        }
        Ok(next)
    }
}

/// How long a confirmed or denied ticket stays readable at least, after its
/// final transition (see `Ticket::apply`).
pub const FINAL_STATE_GRACE_MS: u64 = 30_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::seal::Opener;

    fn ticket(status: Status) -> Ticket {
        Ticket {
            id: TicketId::generate(),
            secret_hash: Secret::generate().hash(),
            provider: Provider::Dev,
            status,
            created_at: 1_000,
            expires_at: 10_000,
            updated_at: 1_000,
            qr_content: "x".into(),
            requester: Requester {
                ip: "127.0.0.1".into(),
                user_agent: "t".into(),
            },
            user: None,
            scanned_by: None,
            identity: None,
            seal_to: Some(SealTo::Secret(Opener::from_secret("s").unwrap().public())),
            token: None,
        }
    }

    fn token() -> IssuedToken {
        IssuedToken {
            token: "jwt".into(),
            expires_in: 60,
        }
    }

    fn scan(by: &str) -> Change {
        Change::Scan {
            by: Some(by.into()),
            user: None,
            identity: None,
        }
    }

    #[test]
    fn generated_characters_are_all_equally_likely() {
        // 62 characters: bytes from 248 up are thrown away, else the first
        // eight would come up 5/4 as often. 124,000 draws, ~2,000 each;
        // a biased one would be ~2,420, far outside ±300.
        let mut counts = std::collections::HashMap::new();
        for _ in 0..124_000 / TICKET_LEN + 1 {
            for c in random_string(BASE62, TICKET_LEN).chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        assert_eq!(counts.len(), 62);
        for (c, n) in counts {
            assert!((1_700..=2_300).contains(&n), "{c}: {n}");
        }
        assert_eq!(random_string(BASE64URL, 100).len(), 100);
        assert!(
            random_string(BASE64URL, 100)
                .bytes()
                .all(|b| BASE64URL.contains(&b))
        );
    }

    #[test]
    fn generated_ids_fit_every_wechat_field() {
        let id = TicketId::generate();
        assert_eq!(id.as_str().len(), TICKET_LEN);
        assert!(id.as_str().parse::<TicketId>().is_ok());
        let secret = Secret::generate();
        assert!(
            secret
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn odd_ids_do_not_parse() {
        for bad in ["", "../etc", "a%00", "a b", "é", "😀", &"a".repeat(33)] {
            assert!(bad.parse::<TicketId>().is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_string_never_panics_and_accepts_only_the_alphabet(s in "\\PC{0,40}") {
            let ok = s.parse::<TicketId>().is_ok();
            let valid = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
            proptest::prop_assert_eq!(ok, valid);
        }

        #[test]
        fn valid_ids_round_trip_through_text_and_json(s in "[A-Za-z0-9]{1,32}") {
            let id: TicketId = s.parse().unwrap();
            proptest::prop_assert_eq!(id.as_str(), s.as_str());
            proptest::prop_assert!(s.starts_with(id.short()));
            let json = serde_json::to_string(&id).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<TicketId>(&json).unwrap(), id);
        }

        #[test]
        fn json_never_smuggles_an_invalid_id(s in "\\PC{0,40}") {
            let valid = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
            let json = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<TicketId>(&json).is_ok(), valid);
        }

        #[test]
        fn status_parsing_round_trips(i in 0usize..Status::ALL.len()) {
            let all = Status::ALL;
            proptest::prop_assert_eq!(all[i].as_str().parse::<Status>(), Ok(all[i]));
        }
    }

    #[test]
    fn secret_hash_matches_only_its_secret() {
        let secret = Secret::generate();
        let hash = secret.hash();
        assert!(hash.matches(secret.expose()));
        assert!(!hash.matches("other"));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<SecretHash>(&json).unwrap(), hash);
    }

    #[test]
    fn every_allowed_transition() {
        let t = ticket(Status::Pending);
        assert_eq!(t.apply(scan("p"), 0).unwrap().status, Status::Scanned);
        let c = Change::Confirm {
            by: None,
            user: None,
            token: token(),
        };
        assert_eq!(t.apply(c.clone(), 0).unwrap().status, Status::Confirmed);
        assert_eq!(
            t.apply(Change::Deny { by: None }, 0).unwrap().status,
            Status::Denied
        );
        let s = t.apply(scan("p"), 0).unwrap();
        let sealed = s.apply(c, 0).unwrap().token.unwrap();
        assert_eq!(sealed.expires_in, 60);
        let jwe = sealed.sealed.jwe().unwrap();
        let opened = Opener::from_secret("s").unwrap().open(jwe).unwrap();
        assert_eq!(opened, b"jwt");
        assert_eq!(
            s.apply(
                Change::Deny {
                    by: Some("p".into())
                },
                0
            )
            .unwrap()
            .status,
            Status::Denied
        );
    }

    #[test]
    fn a_ticket_with_no_key_to_seal_to_is_not_confirmed() {
        // A record from before sealing: confirming it would store the JWT.
        let mut t = ticket(Status::Pending);
        t.seal_to = None;
        let c = Change::Confirm {
            by: None,
            user: None,
            token: token(),
        };
        assert_eq!(t.apply(c, 0), Err(TransitionError::Unsealable));
    }

    #[test]
    fn terminal_states_never_change() {
        for status in [Status::Confirmed, Status::Denied] {
            let t = ticket(status);
            for change in [scan("p"), Change::Deny { by: None }] {
                assert!(matches!(
                    t.apply(change, 0),
                    Err(TransitionError::Invalid(_, _))
                ));
            }
        }
    }

    #[test]
    fn a_second_scan_is_refused() {
        let t = ticket(Status::Pending).apply(scan("a"), 0).unwrap();
        assert_eq!(
            t.apply(scan("b"), 0),
            Err(TransitionError::Invalid(Status::Scanned, Status::Scanned))
        );
    }

    #[test]
    fn only_the_scanner_finishes_from_the_phone() {
        let t = ticket(Status::Pending).apply(scan("a"), 0).unwrap();
        let other = Change::Confirm {
            by: Some("b".into()),
            user: None,
            token: token(),
        };
        assert_eq!(t.apply(other, 0), Err(TransitionError::NotScanner));
        assert_eq!(
            t.apply(
                Change::Deny {
                    by: Some("b".into())
                },
                0
            ),
            Err(TransitionError::NotScanner)
        );
    }

    #[test]
    fn phone_side_cannot_confirm_an_unscanned_ticket() {
        let t = ticket(Status::Pending);
        let c = Change::Confirm {
            by: Some("a".into()),
            user: None,
            token: token(),
        };
        assert_eq!(t.apply(c, 0), Err(TransitionError::NotScanner));
    }

    #[test]
    fn past_its_time_a_ticket_is_expired_and_frozen() {
        let t = ticket(Status::Scanned);
        assert_eq!(t.status_at(10_000), Status::Expired);
        let c = Change::Confirm {
            by: None,
            user: None,
            token: token(),
        };
        assert_eq!(
            t.apply(c, 10_000),
            Err(TransitionError::Invalid(Status::Expired, Status::Confirmed))
        );
        assert_eq!(
            ticket(Status::Confirmed).status_at(99_999),
            Status::Confirmed
        );
    }

    #[test]
    fn a_final_state_reached_late_stays_readable_for_the_grace() {
        let mut t = ticket(Status::Pending);
        t.expires_at = 100_000;
        // Denied 1 ms before the end: readable for the grace after it.
        let late = t
            .apply(Change::Deny { by: None }, t.expires_at - 1)
            .unwrap();
        assert_eq!(late.expires_at, t.expires_at - 1 + FINAL_STATE_GRACE_MS);
        // Denied early: the ticket's own end stands when it is later.
        let early = t
            .apply(
                Change::Deny { by: None },
                t.expires_at - FINAL_STATE_GRACE_MS - 5,
            )
            .unwrap();
        assert_eq!(early.expires_at, t.expires_at);
        // A scan is not final: the end does not move.
        let scanned = t
            .apply(
                Change::Scan {
                    by: None,
                    user: None,
                    identity: None,
                },
                t.expires_at - 1,
            )
            .unwrap();
        assert_eq!(scanned.expires_at, t.expires_at);
    }
}
