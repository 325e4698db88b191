//! "Which computer asked": a browser and OS named from a User-Agent, for the
//! phone page a person reads before confirming.

/// E.g. ("Chrome 120", "Windows 10").
pub fn describe(user_agent: &str) -> (String, String) {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let Some(ua) = parsed else {
        return ("Unknown browser".into(), "unknown system".into());
    };
    let browser = match (ua.name, ua.version) {
        ("UNKNOWN", _) => "Unknown browser".to_owned(),
        (name, "UNKNOWN" | "") => name.to_owned(),
        (name, version) => format!("{name} {}", version.split('.').next().unwrap_or(version)),
    };
    let os = match (ua.os, ua.os_version.as_ref()) {
        ("UNKNOWN", _) => "unknown system".to_owned(),
        (os, v) if v == "UNKNOWN" || v.is_empty() || os.contains(v) => os.to_owned(),
        (os, v) => format!("{os} {v}"),
    };
    (browser, os)
}

/// One readable line for an app to show before a confirm, e.g. "Chrome on
/// Windows 10": names without versions, which say little to a person.
pub fn device(user_agent: &str) -> String {
    let known = |name: &str, fallback: &str| match name {
        "UNKNOWN" | "" => fallback.to_owned(),
        name => name.to_owned(),
    };
    match woothee::parser::Parser::new().parse(user_agent) {
        Some(ua) => format!(
            "{} on {}",
            known(ua.name, "Unknown browser"),
            known(ua.os, "unknown system")
        ),
        None => "Unknown browser on unknown system".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{describe, device};

    #[test]
    fn a_device_is_a_browser_on_a_system() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(device(chrome), "Chrome on Windows 10");
        assert_eq!(device(""), "Unknown browser on unknown system");
    }

    #[test]
    fn names_common_desktop_browsers() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let (browser, os) = describe(chrome);
        assert_eq!(browser, "Chrome 120");
        assert!(os.starts_with("Windows"), "{os}");
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
        assert_eq!(describe(firefox).0, "Firefox 121");
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(describe("").0, "Unknown browser");
        assert_eq!(describe("\u{0}\u{1}curl").1, "unknown system");
    }
}
