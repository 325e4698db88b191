//! The product backends in `examples/` (Node + Express, Python + Flask) run
//! end to end: the service signs with an asymmetric key, the example runs as
//! a child process on its own origin, real headless Chromium opens the
//! example's page, and a phone confirms on the dev phone page. Then, from
//! outside over HTTP, what each backend must refuse: the page's token
//! replayed, tokens signed by a key the JWKS does not hold, a logout without
//! the session's CSRF token. Last, the service restarts on a key of another
//! algorithm (the old one published as previous) and the same running
//! backend logs in again.
//!
//! Without node (or python) or an example's dependencies (`scripts/test.sh`
//! installs them), each test prints a loud SKIPPED and returns, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use qrlogin::token::SigningKey;
use serde_json::Value;

use crate::browser_cdp::{Browser, Device, Page};
use crate::helpers::{IPHONE_UA, TestApp, error_of, phone, spawn_app_with};
use crate::tokens::{
    AUDIENCE, ISSUER, KeyDir, claims_now, jwks_of, jwt_alg, kids, login, sign_with_file,
};

/// Kept by the page's document before its scripts run: the token the page
/// posts to its backend, so the test can replay exactly that one.
const RECORD_TOKEN: &str = "(() => { const send = window.fetch; \
    window.fetch = function (url, init) { \
      if (url === '/session' && init && init.body) window.sentToken = JSON.parse(init.body).token; \
      return send.apply(this, arguments); }; })()";

const SIGNED_OUT: &str = "document.body && document.body.dataset.state === 'signed-out'";
const QR_SRC: &str = "(document.querySelector('#login img') || {}).src";
const SIGNED_IN: &str = "document.body && document.body.dataset.state === 'signed-in'";

#[derive(Clone, Copy)]
enum Example {
    NodeExpress,
    PythonFlask,
}

impl Example {
    fn name(self) -> &'static str {
        match self {
            Example::NodeExpress => "node-express",
            Example::PythonFlask => "python-flask",
        }
    }

    fn dir(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(self.name())
    }

    /// The command that runs the example, or why it cannot run here.
    fn command(self) -> Result<tokio::process::Command, String> {
        let dir = self.dir();
        match self {
            Example::NodeExpress => {
                if !on_path("node") {
                    return Err("node is not installed (apt-get install nodejs npm)".into());
                }
                for dep in ["express", "jose"] {
                    if !dir
                        .join("node_modules")
                        .join(dep)
                        .join("package.json")
                        .is_file()
                    {
                        return Err(format!(
                            "`{dep}` is missing: run `npm ci` in examples/node-express"
                        ));
                    }
                }
                let mut command = tokio::process::Command::new("node");
                command.arg("server.js");
                Ok(command)
            }
            Example::PythonFlask => {
                // scripts/test.sh installs into a virtualenv beside the example.
                let venv = dir.join(".venv").join("bin").join("python");
                let python = if venv.is_file() {
                    venv
                } else if on_path("python3") {
                    PathBuf::from("python3")
                } else {
                    return Err("python3 is not installed".into());
                };
                let imports = std::process::Command::new(&python)
                    .args(["-c", "import flask, jwt, cryptography"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !imports {
                    return Err(format!(
                        "{} lacks Flask or PyJWT[crypto]: pip install -r examples/python-flask/requirements.txt",
                        python.display()
                    ));
                }
                let mut command = tokio::process::Command::new(python);
                command.arg("app.py");
                Ok(command)
            }
        }
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// A loud notice (the harness hides a passing test's output), or a failure
/// under `CI=true`, where nothing may skip.
fn skip(example: Example, why: &str) {
    use std::io::Write;
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the {} example cannot run: {why}; and CI=true",
            example.name()
        );
    }
    let line = format!(
        "\n*** SKIPPED: the {} example test: {why} (scripts/test.sh installs it) ***\n",
        example.name()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A port nobody listens on now, for a process that binds it itself.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running example backend; killed when dropped.
struct Backend {
    child: tokio::process::Child,
    address: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Backend {
    /// Start `example` on `port` against the service at `qrlogin`, and wait
    /// until it answers; `None` (after a notice) when it cannot run here.
    async fn start(example: Example, port: u16, qrlogin: &str) -> Option<Backend> {
        Self::start_with(example, port, qrlogin, &[]).await
    }

    /// `start`, with these variables set over the test's.
    async fn start_with(
        example: Example,
        port: u16,
        qrlogin: &str,
        vars: &[(&str, &str)],
    ) -> Option<Backend> {
        let mut command = match example.command() {
            Ok(command) => command,
            Err(why) => {
                skip(example, &why);
                return None;
            }
        };
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("example-{}-{port}.log", example.name()));
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .current_dir(example.dir())
            .env("QRLOGIN_URL", qrlogin)
            .env("QRLOGIN_ISSUER", ISSUER)
            .env("QRLOGIN_AUDIENCE", AUDIENCE)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            // The test rotates keys within a second of the first fetch.
            .env("JWKS_COOLDOWN_SECONDS", "0")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("the {} example starts: {e}", example.name()));
        let mut backend = Backend {
            child,
            address: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if backend.http.get(backend.url("/me")).send().await.is_ok() {
                return Some(backend);
            }
            if let Some(status) = backend.child.try_wait().unwrap() {
                panic!(
                    "the {} example exited with {status}:\n{}",
                    example.name(),
                    backend.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {} example did not answer within 30 s:\n{}",
                example.name(),
                backend.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// What the example printed, for a failure message.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The page's login call: POST the token as JSON.
    async fn post_token(&self, client: &reqwest::Client, token: &str) -> reqwest::Response {
        client
            .post(self.url("/session"))
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Backend {
    /// `kill_on_drop` ends the process; its output stays only for a failure.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("the example's output: {}", self.log.display());
        }
    }
}

/// The service on `port` (0: any) signing with `alg` and `key`, the
/// `previous` keys still published, the example's `origin` allowed.
async fn service(
    origin: &str,
    port: u16,
    alg: Algorithm,
    key: &Path,
    previous: &[&Path],
) -> TestApp {
    spawn_app_with(|s| {
        s.bind = ([127, 0, 0, 1], port).into();
        s.jwt_alg = jwt_alg(alg);
        s.jwt_key_file = Some(key.to_path_buf());
        s.jwt_previous_key_files = previous.iter().map(|p| p.to_path_buf()).collect();
        s.jwt_issuer = Some(ISSUER.into());
        s.allowed_origins = vec![origin.to_owned()];
    })
    .await
}

/// Scan the code the page shows and confirm it on the dev phone page;
/// answers the code.
async fn scan_and_confirm(page: &Page, app: &TestApp) -> String {
    let code = page.scan_qr("#login img").await;
    assert!(
        code.starts_with(&app.url("/m/")),
        "the product page shows the service's code: {code}"
    );
    let phone = phone(IPHONE_UA);
    let confirm_page = phone.open(&code).await;
    let r = phone.confirm(&confirm_page).await;
    assert_eq!(r.status(), 200, "the phone confirms");
    code
}

/// Open the product page, scan its code, confirm on the dev phone page, and
/// wait for the page to show the user; answers the token the page sent.
async fn log_in_on_the_page(page: &Page, app: &TestApp, backend: &Backend) -> String {
    page.goto(&backend.url("/")).await;
    page.wait_for("the signed-out page", SIGNED_OUT).await;
    scan_and_confirm(page, app).await;
    page.wait_for("the signed-in page", SIGNED_IN).await;
    assert_eq!(page.text("#user").await, "dev:dev user");
    let token = page.eval("window.sentToken").await;
    token.as_str().expect("the page posted a token").to_owned()
}

fn alg_of(token: &str) -> Algorithm {
    jsonwebtoken::decode_header(token).unwrap().alg
}

/// The whole first hour of a product team, against `example`: log in, the
/// refusals, log out, rotate from `first` to a `second` algorithm.
async fn run(example: Example, first: Algorithm, second: Algorithm) {
    let keys = KeyDir::new();
    let old_key = keys.key("old.pem", first);
    let new_key = keys.key("new.pem", second);
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let app = service(&origin, 0, first, &old_key, &[]).await;
    let Some(backend) = Backend::start(example, port, &app.address).await else {
        return;
    };
    let Some(browser) = Browser::launch(&format!("example-{}", example.name())).await else {
        return;
    };
    let page = browser.page("product", Device::Desktop, "en-US").await;
    page.before_load(RECORD_TOKEN).await;

    // A login through the page; a reload shows the user from /me, so the
    // session cookie holds.
    let token = log_in_on_the_page(&page, &app, &backend).await;
    assert_eq!(alg_of(&token), first);
    page.goto(&backend.url("/")).await;
    page.wait_for("the session after a reload", SIGNED_IN).await;
    assert_eq!(page.text("#user").await, "dev:dev user");
    page.screenshot("1-signed-in").await;

    // The page's token, replayed from elsewhere.
    let outsider = reqwest::Client::new();
    let replayed = backend.post_token(&outsider, &token).await;
    assert_eq!(
        error_of(replayed).await,
        (401, "token_replayed".into()),
        "a replayed token\n{}",
        backend.output()
    );

    // Signed by a key the JWKS does not hold, under the published kid and
    // under a kid of its own; the same claims under the real key pass, so
    // the key is what is refused.
    let published = kids(&jwks_of(&app).await).remove(0);
    let foreign = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .to_pkcs8_pem()
        .unwrap()
        .to_string();
    for kid in [published.as_str(), "mallorys-key"] {
        let forged = sign_with_file(Algorithm::ES256, &foreign, kid, &claims_now(600));
        let r = backend.post_token(&outsider, &forged).await;
        assert_eq!(
            error_of(r).await,
            (401, "invalid_token".into()),
            "a token signed by a foreign key under kid {kid}"
        );
    }
    let real = std::fs::read_to_string(&old_key).unwrap();
    let honest = sign_with_file(first, &real, &published, &claims_now(600));
    let r = backend.post_token(&outsider, &honest).await;
    assert_eq!(r.status(), 200, "honest control\n{}", backend.output());

    // Logout needs the session's CSRF token.
    let visitor = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = backend
        .post_token(&visitor, &login(&app, "user-42").await)
        .await;
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("session="))
        .expect("a session cookie")
        .to_owned();
    let attributes: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.iter().any(|a| a == "httponly"), "{cookie}");
    assert!(attributes.iter().any(|a| a == "samesite=lax"), "{cookie}");
    assert!(
        !attributes.iter().any(|a| a == "secure"),
        "plain http: {cookie}"
    );
    let csrf = r.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .expect("the CSRF token")
        .to_owned();
    let me = |client: &reqwest::Client| client.get(backend.url("/me")).send();
    let who: Value = me(&visitor).await.unwrap().json().await.unwrap();
    assert_eq!(who["user"]["sub"], "user-42");
    for header in [None, Some("not-the-token")] {
        let mut logout = visitor.post(backend.url("/logout"));
        if let Some(value) = header {
            logout = logout.header("x-csrf-token", value);
        }
        let r = logout.send().await.unwrap();
        assert_eq!(error_of(r).await, (403, "csrf".into()), "{header:?}");
    }
    assert_eq!(me(&visitor).await.unwrap().status(), 200, "still logged in");
    let r = visitor
        .post(backend.url("/logout"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = me(&visitor).await.unwrap();
    assert_eq!(error_of(r).await, (401, "not_logged_in".into()));

    // The page's own Log out sends its CSRF token.
    page.click("#logout").await;
    page.wait_for("the signed-out page", SIGNED_OUT).await;
    page.goto("about:blank").await;

    // Rotation to another algorithm: the service restarts on a new key with
    // the old one published as previous; the backend keeps running.
    let unspent = login(&app, "bob").await;
    let service_port = app.port;
    app.stop.stop();
    app.task.await.unwrap();
    let app = service(&origin, service_port, second, &new_key, &[&old_key]).await;
    let token = log_in_on_the_page(&page, &app, &backend).await;
    assert_eq!(alg_of(&token), second, "signed by the new key");
    page.screenshot("2-signed-in-after-rotation").await;
    let r = backend.post_token(&outsider, &unspent).await;
    assert_eq!(
        r.status(),
        200,
        "a token of the previous key still logs in\n{}",
        backend.output()
    );
}

#[tokio::test]
async fn the_node_express_backend_logs_in_refuses_replays_forgeries_and_bare_logouts() {
    run(Example::NodeExpress, Algorithm::RS256, Algorithm::ES256).await;
}

#[tokio::test]
async fn the_python_flask_backend_logs_in_refuses_replays_forgeries_and_bare_logouts() {
    run(Example::PythonFlask, Algorithm::EdDSA, Algorithm::RS256).await;
}

/// A backend expecting another audience refuses the token, and its page says
/// why and shows a new code rather than failing silently.
async fn refusal_is_explained(example: Example) {
    let keys = KeyDir::new();
    let key = keys.key("key.pem", Algorithm::ES256);
    let port = free_port();
    let app = service(
        &format!("http://127.0.0.1:{port}"),
        0,
        Algorithm::ES256,
        &key,
        &[],
    )
    .await;
    let vars = [("QRLOGIN_AUDIENCE", "another-product")];
    let Some(backend) = Backend::start_with(example, port, &app.address, &vars).await else {
        return;
    };
    let test = format!("example-{}-refused", example.name());
    let Some(browser) = Browser::launch(&test).await else {
        return;
    };
    let page = browser.page("product", Device::Desktop, "en-US").await;
    page.goto(&backend.url("/")).await;
    page.wait_for("the signed-out page", SIGNED_OUT).await;
    let first_src = page.wait_for("the code", QR_SRC).await;
    let code = scan_and_confirm(&page, &app).await;
    page.wait_for(
        "the refusal on the page",
        "!document.getElementById('error').hidden",
    )
    .await;
    assert_eq!(
        page.text("#error").await,
        "Login refused: the token's aud claim is not accepted"
    );
    page.wait_for("a new code", &format!("{QR_SRC} !== {first_src}"))
        .await;
    let next = page.scan_qr("#login img").await;
    assert_ne!(next, code, "a new code to try again");
    assert_eq!(page.eval(SIGNED_OUT).await, true);
    page.screenshot("refused").await;
}

#[tokio::test]
async fn the_node_express_page_explains_a_refused_login() {
    refusal_is_explained(Example::NodeExpress).await;
}

#[tokio::test]
async fn the_python_flask_page_explains_a_refused_login() {
    refusal_is_explained(Example::PythonFlask).await;
}
