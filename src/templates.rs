//! Page templates (minijinja): built into the binary, each overridable by a
//! file of the same name in `QRLOGIN_TEMPLATES_DIR`, so operators restyle
//! pages without rebuilding. Also the two languages pages speak.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// The built-in templates, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    (
        "phone_confirm.html",
        include_str!("../templates/phone_confirm.html"),
    ),
    (
        "phone_message.html",
        include_str!("../templates/phone_message.html"),
    ),
    (
        "wechat_handoff.html",
        include_str!("../templates/wechat_handoff.html"),
    ),
];

pub struct Templates {
    env: Environment<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("QRLOGIN_TEMPLATES_DIR: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {source}")]
    Syntax {
        name: &'static str,
        source: minijinja::Error,
    },
}

impl Templates {
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                None => (*built_in).to_owned(),
            };
            env.add_template_owned(*name, source)
                .map_err(|source| TemplateError::Syntax { name, source })?;
        }
        Ok(Self { env })
    }

    /// Render `name`; a broken override renders an apology, never a 500 page
    /// with internals.
    pub fn render(&self, name: &str, ctx: impl Serialize) -> String {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                tracing::error!(template = name, error = %e, "template failed");
                "<!doctype html><title>qrlogin</title><p>This page could not be shown.</p>"
                    .to_owned()
            })
    }
}

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Lang {
    #[serde(rename = "en")]
    En,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

impl Lang {
    /// `?lang=` first, then the first language of `Accept-Language` we speak.
    pub fn choose(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        let parse = |tag: &str| {
            let tag = tag.trim().to_ascii_lowercase();
            if tag.starts_with("zh") {
                Some(Lang::ZhCn)
            } else if tag.starts_with("en") {
                Some(Lang::En)
            } else {
                None
            }
        };
        if let Some(lang) = query.and_then(parse) {
            return lang;
        }
        let mut ranked: Vec<(f32, Lang)> = accept_language
            .unwrap_or("")
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.split(';');
                let lang = parse(pieces.next()?)?;
                let q = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, lang))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.first().map_or(Lang::En, |(_, l)| *l)
    }

    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// The page texts, by key.
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::ZhCn => &ZH_CN,
        }
    }
}

/// Every sentence a page shows.
#[derive(Debug, Serialize)]
pub struct Texts {
    pub title: &'static str,
    pub dev_banner: &'static str,
    pub login_heading: &'static str,
    pub login_hint: &'static str,
    pub confirm_heading: &'static str,
    pub confirm_intro: &'static str,
    pub browser: &'static str,
    pub system: &'static str,
    pub ip: &'static str,
    pub asked_at: &'static str,
    pub name_label: &'static str,
    pub confirm: &'static str,
    pub deny: &'static str,
    pub warning: &'static str,
    pub expired_heading: &'static str,
    pub expired_body: &'static str,
    pub done_heading: &'static str,
    pub done_body: &'static str,
    pub denied_heading: &'static str,
    pub denied_body: &'static str,
    pub taken_heading: &'static str,
    pub taken_body: &'static str,
    pub forbidden_heading: &'static str,
    pub forbidden_body: &'static str,
    pub wechat_heading: &'static str,
    pub wechat_body: &'static str,
    pub miniprogram_heading: &'static str,
    pub miniprogram_body: &'static str,
    pub app_heading: &'static str,
    pub app_body: &'static str,
    pub retry_heading: &'static str,
    pub retry_body: &'static str,
    pub rescan_heading: &'static str,
    pub rescan_body: &'static str,
    /// A phone or login link whose query string is malformed.
    pub bad_link_heading: &'static str,
    pub bad_link_body: &'static str,
    /// The login page's one-line explanation under its heading.
    pub login_lead: &'static str,
    /// Shown when the page cannot run its script.
    pub login_noscript: &'static str,
    /// Heads the "which computer asked" box of the confirm page.
    pub requester_heading: &'static str,
    /// Alternative text of a QR image on a phone page.
    pub qr_alt: &'static str,
    /// Placeholder of the dev page's optional name field.
    pub name_placeholder: &'static str,
    /// The `wechat-web` callback page while its script hands the code on.
    pub handoff_heading: &'static str,
    pub handoff_body: &'static str,
    /// The same page when scripts are off: it cannot hand anything on.
    pub handoff_noscript: &'static str,
}

static EN: Texts = Texts {
    title: "Log in with QR code",
    dev_banner: "Development mode: the dev provider logs anyone in. Never use it in production.",
    login_heading: "Log in",
    login_hint: "Scan the code with your phone.",
    confirm_heading: "Log in on a computer?",
    confirm_intro: "A computer asked to log in as you. Confirm only if it is the one in front of you.",
    browser: "Browser",
    system: "System",
    ip: "IP address",
    asked_at: "Asked at",
    name_label: "Your name",
    confirm: "Confirm login",
    deny: "Cancel",
    warning: "If you did not scan this code on your own screen, tap Cancel.",
    expired_heading: "This code has expired",
    expired_body: "Refresh the code on your computer and scan it again.",
    done_heading: "Logged in",
    done_body: "You are now logged in on your computer. You can close this page.",
    denied_heading: "Login cancelled",
    denied_body: "Nobody was logged in. You can close this page.",
    taken_heading: "Already scanned",
    taken_body: "This code was scanned on another device. Refresh the code on your computer to try again.",
    forbidden_heading: "This page has expired",
    forbidden_body: "Open the code again from your phone's camera or scanner, then confirm.",
    wechat_heading: "Open this in WeChat",
    wechat_body: "Scan the code on your computer with WeChat to log in.",
    miniprogram_heading: "Open this in the Mini Program",
    miniprogram_body: "Scan the code on your computer with our Mini Program to log in.",
    app_heading: "Open this in the app",
    app_body: "Scan the code on your computer with our app to log in.",
    retry_heading: "Something went wrong",
    retry_body: "WeChat did not answer in time. Scan the code on your computer again.",
    rescan_heading: "Please scan again",
    rescan_body: "This link was already used or has expired. Scan the code on your computer again.",
    bad_link_heading: "This link is not valid",
    bad_link_body: "The address is damaged. Scan the code on your computer again.",
    login_lead: "Scan the code with your phone to log in. No password needed.",
    login_noscript: "This page needs JavaScript to show the login code. Turn it on and reload the page.",
    requester_heading: "The computer asking to log in",
    qr_alt: "QR code of this login",
    name_placeholder: "dev user",
    handoff_heading: "Back from WeChat",
    handoff_body: "Returning to the login page…",
    handoff_noscript: "This page needs JavaScript to finish the login. Nothing was done.",
};

static ZH_CN: Texts = Texts {
    title: "扫码登录",
    dev_banner: "开发模式：dev 登录方式允许任何人登录，切勿用于生产环境。",
    login_heading: "登录",
    login_hint: "请使用手机扫描二维码。",
    confirm_heading: "在电脑上登录？",
    confirm_intro: "有一台电脑请求以你的身份登录。只有当它就在你面前时才确认。",
    browser: "浏览器",
    system: "系统",
    ip: "IP 地址",
    asked_at: "请求时间",
    name_label: "你的名字",
    confirm: "确认登录",
    deny: "取消",
    warning: "如果这个二维码不是在你自己的屏幕上扫描的，请点击取消。",
    expired_heading: "二维码已过期",
    expired_body: "请在电脑上刷新二维码后重新扫描。",
    done_heading: "已登录",
    done_body: "你已在电脑上登录，可以关闭此页面。",
    denied_heading: "已取消登录",
    denied_body: "没有任何人登录，可以关闭此页面。",
    taken_heading: "已被扫描",
    taken_body: "此二维码已在另一台设备上扫描。请在电脑上刷新二维码后重试。",
    forbidden_heading: "页面已失效",
    forbidden_body: "请重新用手机扫描二维码，然后确认。",
    wechat_heading: "请在微信中打开",
    wechat_body: "请使用微信扫描电脑上的二维码登录。",
    miniprogram_heading: "请在小程序中打开",
    miniprogram_body: "请使用我们的小程序扫描电脑上的二维码登录。",
    app_heading: "请在应用中打开",
    app_body: "请使用我们的应用扫描电脑上的二维码登录。",
    retry_heading: "出错了",
    retry_body: "微信未能及时响应，请重新扫描电脑上的二维码。",
    rescan_heading: "请重新扫码",
    rescan_body: "此链接已被使用或已过期，请重新扫描电脑上的二维码。",
    bad_link_heading: "链接无效",
    bad_link_body: "此地址已损坏，请重新扫描电脑上的二维码。",
    login_lead: "用手机扫描二维码即可登录，无需密码。",
    login_noscript: "此页面需要 JavaScript 才能显示登录二维码。请启用后刷新页面。",
    requester_heading: "请求登录的电脑",
    qr_alt: "本次登录的二维码",
    name_placeholder: "dev user",
    handoff_heading: "已从微信返回",
    handoff_body: "正在返回登录页面…",
    handoff_noscript: "此页面需要 JavaScript 才能完成登录。未进行任何操作。",
};

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_accept_language_chooses_without_panicking(
            header in "([a-zA-Z-]{0,8}(;q=[0-9.eEnNaAiIfF+-]{0,8})?, ?){0,6}|\\PC{0,60}",
            query in proptest::option::of("\\PC{0,10}"),
        ) {
            let chosen = Lang::choose(query.as_deref(), Some(&header));
            if query.as_deref().is_some_and(|q| q.trim().to_ascii_lowercase().starts_with("zh")) {
                proptest::prop_assert_eq!(chosen, Lang::ZhCn);
            }
        }
    }

    #[test]
    fn query_wins_over_accept_language() {
        assert_eq!(Lang::choose(Some("en"), Some("zh-CN,zh;q=0.9")), Lang::En);
        assert_eq!(Lang::choose(Some("zh-CN"), None), Lang::ZhCn);
    }

    #[test]
    fn accept_language_is_ranked_by_q() {
        assert_eq!(
            Lang::choose(None, Some("fr;q=1, en;q=0.5, zh-CN;q=0.8")),
            Lang::ZhCn
        );
        assert_eq!(Lang::choose(None, Some("de")), Lang::En);
        assert_eq!(Lang::choose(None, None), Lang::En);
    }

    #[test]
    fn built_in_templates_parse() {
        assert!(Templates::load(None).is_ok());
    }
}
