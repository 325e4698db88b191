//! WeChat: the HTTP client every WeChat flow shares, and what the flows
//! have in common (turning WeChat's ids into the token's identity).

pub mod access_token;
pub mod client;
pub mod crypto;
pub mod events;
pub mod miniprogram;
pub mod mp;
pub mod oauth;

pub use client::{WechatClient, WechatError};

use crate::config::{Settings, WechatSubject};
use crate::ticket::{Identity, UserInfo};

/// The identity a token will carry for a WeChat person: `idp` `wechat`,
/// their ids, and `sub` chosen by `QRLOGIN_WECHAT_SUBJECT` (the unionid when
/// WeChat gave one and the setting allows, else the openid). An empty
/// unionid counts as none.
pub fn identity(settings: &Settings, openid: &str, unionid: Option<&str>) -> Identity {
    let unionid = unionid.filter(|u| !u.is_empty()).map(str::to_owned);
    let sub = match (settings.wechat.subject, &unionid) {
        (WechatSubject::Unionid, Some(u)) => u.clone(),
        _ => openid.to_owned(),
    };
    Identity {
        sub,
        idp: "wechat".into(),
        openid: Some(openid.to_owned()),
        unionid,
    }
}

/// What the browser may show of a WeChat profile: empty strings (WeChat's
/// way of saying "none") become absent, and lengths are bounded.
pub fn user_info(nickname: Option<&str>, headimgurl: Option<&str>) -> Option<UserInfo> {
    let keep = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(1024).collect::<String>())
    };
    let user = UserInfo {
        nickname: keep(nickname),
        avatar: keep(headimgurl).filter(|u| u.starts_with("https://") || u.starts_with("http://")),
    };
    (user.nickname.is_some() || user.avatar.is_some()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(subject: &str) -> Settings {
        Settings::parse(&crate::config::Args::from_flags(["--wechat-subject", subject]).unwrap())
            .unwrap()
    }

    #[test]
    fn sub_is_the_unionid_when_present_and_wanted() {
        let s = settings("unionid");
        assert_eq!(identity(&s, "o1", Some("u1")).sub, "u1");
        assert_eq!(identity(&s, "o1", None).sub, "o1");
        assert_eq!(identity(&s, "o1", Some("")).unionid, None);
        let s = settings("openid");
        let id = identity(&s, "o1", Some("u1"));
        assert_eq!((id.sub.as_str(), id.unionid.as_deref()), ("o1", Some("u1")));
        assert_eq!(id.idp, "wechat");
    }

    #[test]
    fn empty_profile_fields_are_absent() {
        assert_eq!(user_info(Some(""), Some("")), None);
        let u = user_info(Some("Ann"), Some("javascript:alert(1)")).unwrap();
        assert_eq!(u.avatar, None);
    }
}
