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

#[cfg(test)]
mod tests {
    use super::describe;

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
