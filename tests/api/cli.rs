//! The binary as operators run it: `check-config`, `--help` and JSON logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn qrlogin() -> Command {
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
