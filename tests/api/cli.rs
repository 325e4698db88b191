//! The binary as operators run it: `check-config`, `--help` and JSON logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn qrlogin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qrlogin"));
    // Only what the test sets: no stray QRLOGIN_* from the environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("QRLOGIN_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let out = qrlogin()
        .env("QRLOGIN_JWT_SECRET", "short")
        .env("QRLOGIN_API_KEY", "tiny")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("problem: QRLOGIN_JWT_SECRET"), "{text}");
    assert!(text.contains("problem: QRLOGIN_API_KEY"), "{text}");
    assert!(
        text.contains("QRLOGIN_JWT_SECRET=<redacted>  (environment)"),
        "{text}"
    );
    assert!(!text.contains("short"), "secrets are redacted");
}

#[test]
fn check_config_passes_good_settings() {
    let out = qrlogin().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn help_names_every_variable() {
    let out = qrlogin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for variable in include_str!("../../.env.example")
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("QRLOGIN_") && *k != "QRLOGIN_WECHAT_TIMEOUT_MS")
    {
        assert!(help.contains(variable), "{variable} in --help");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = qrlogin()
        .env("QRLOGIN_BIND", "127.0.0.1:0")
        .env("QRLOGIN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let mut parsed = 0;
    let mut listening = false;
    while started.elapsed() < Duration::from_secs(10) && !listening {
        let Some(Ok(line)) = lines.next() else { break };
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        parsed += 1;
        listening = line.contains("listening");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening && parsed >= 2, "saw {parsed} JSON lines");
}

/// clap's errors named the flag (`--bind <BIND>`) and stopped at the first;
/// an operator set variables, so every bad value is listed by its name.
#[test]
fn check_config_names_every_unparsable_variable_and_exits_1() {
    let out = qrlogin()
        .env("QRLOGIN_BIND", "nonsense")
        .env("QRLOGIN_TICKET_TTL", "soon")
        .env("QRLOGIN_ENV", "prod")
        .env("QRLOGIN_API_KEY", "tiny")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("problem: QRLOGIN_BIND: invalid value 'nonsense' (expected host:port"),
        "{text}"
    );
    assert!(
        text.contains("problem: QRLOGIN_TICKET_TTL: invalid value 'soon'"),
        "{text}"
    );
    assert!(
        text.contains(
            "problem: QRLOGIN_ENV: invalid value 'prod' (expected one of development, production)"
        ),
        "{text}"
    );
    assert!(
        text.contains("problem: QRLOGIN_API_KEY"),
        "the rest too: {text}"
    );
    assert!(!text.contains("--bind"), "{text}");
}

#[test]
fn serving_with_a_bad_variable_names_it_and_exits_1() {
    let out = qrlogin().env("QRLOGIN_BIND", "nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("QRLOGIN_BIND: invalid value 'nonsense'"),
        "{text}"
    );
    assert!(!text.contains("--bind"), "{text}");
    // A flag still overrides its variable.
    let out = qrlogin()
        .env("QRLOGIN_BIND", "nonsense")
        .args(["--bind", "127.0.0.1:0", "check-config"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[cfg(unix)]
#[test]
fn a_non_utf8_value_names_its_variable() {
    use std::os::unix::ffi::OsStrExt;
    let out = qrlogin()
        .env(
            "QRLOGIN_PUBLIC_URL",
            std::ffi::OsStr::from_bytes(b"https://\xff.example"),
        )
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("problem: QRLOGIN_PUBLIC_URL: is not valid UTF-8"),
        "{text}"
    );
}

/// Values that parse but could not run: a public URL whose query or
/// fragment would swallow every QR path, a cap of 0 live tickets, a
/// templates folder that is not there, and plain http in production.
#[test]
fn unusable_values_are_problems() {
    for (variable, value) in [
        ("QRLOGIN_PUBLIC_URL", "https://login.example.com/?a=1"),
        ("QRLOGIN_PUBLIC_URL", "https://login.example.com/#top"),
        ("QRLOGIN_MAX_LIVE_TICKETS", "0"),
        ("QRLOGIN_TEMPLATES_DIR", "/nonexistent/qrlogin-templates"),
    ] {
        let out = qrlogin()
            .env(variable, value)
            .arg("check-config")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{variable}={value}: {text}");
        assert!(text.contains(&format!("problem: {variable}:")), "{text}");
    }
}

#[test]
fn production_refuses_a_public_url_that_is_not_https() {
    let production = || {
        let mut command = qrlogin();
        command
            .env("QRLOGIN_ENV", "production")
            .env("QRLOGIN_PROVIDERS", "wechat-web")
            .env("QRLOGIN_WECHAT_WEB_APP_ID", "wxweb")
            .env("QRLOGIN_WECHAT_WEB_APP_SECRET", "secret")
            .env("QRLOGIN_JWT_SECRET", "k".repeat(32))
            .arg("check-config");
        command
    };
    for url in [None, Some("http://login.example.com")] {
        let mut command = production();
        if let Some(url) = url {
            command.env("QRLOGIN_PUBLIC_URL", url);
        }
        let out = command.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{url:?}: {text}");
        assert!(text.contains("problem: QRLOGIN_PUBLIC_URL:"), "{text}");
    }
    let out = production()
        .env("QRLOGIN_PUBLIC_URL", "https://login.example.com")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
}
