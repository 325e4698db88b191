//! Relying-party software nobody here wrote, logging in through qrlogin in
//! headless Chromium: Apache httpd with mod_auth_openidc protecting a
//! location (PKCE S256, client_secret_basic). The phone reads the QR from a
//! screenshot of the desktop, as a camera would, and taps Confirm or Cancel.
//!
//! Without apache2 / mod_auth_openidc (or Chromium) the tests skip loudly;
//! under `CI=true` they fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::browser_cdp::{Browser, Device, Page};
use crate::helpers::{TestApp, spawn_app_with};
use crate::oidc::OidcFiles;

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";
const APACHE_SECRET: &str = "apache-secret-0123456789abcdef0123456789";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Apache httpd as a foreground child with its own config on a free port.
struct Apache {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Apache {
    fn available(test: &str) -> bool {
        let ok = std::path::Path::new(APACHE).exists()
            && std::path::Path::new(&format!("{MODULES}/mod_auth_openidc.so")).exists();
        if !ok {
            if ci() {
                panic!(
                    "{test}: needs apache2 and libapache2-mod-auth-openidc (scripts/test.sh installs them), and CI=true"
                );
            }
            eprintln!(
                "\n*** SKIPPED: {test} needs apache2 and libapache2-mod-auth-openidc (apt-get install apache2 libapache2-mod-auth-openidc) ***\n"
            );
        }
        ok
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Protect `/protected/` with qrlogin at `issuer`.
    fn start(port: u16, issuer: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qrlogin-apache-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("htdocs/protected")).unwrap();
        std::fs::write(
            dir.join("htdocs/protected/index.shtml"),
            "<!doctype html><title>Protected</title><h1 id=\"content\">Protected content</h1>\
             <p>user=<span id=\"user\"><!--#echo var=\"REMOTE_USER\" --></span>\
             name=<span id=\"name\"><!--#echo var=\"OIDC_CLAIM_name\" --></span></p>\n",
        )
        .unwrap();
        let d = dir.display();
        let config = format!(
            r#"ServerRoot "{d}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{d}/httpd.pid"
ErrorLog "{d}/error.log"
LogLevel warn auth_openidc:info
User nobody
Group nogroup
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule authz_user_module {MODULES}/mod_authz_user.so
LoadModule authn_core_module {MODULES}/mod_authn_core.so
LoadModule mime_module {MODULES}/mod_mime.so
LoadModule include_module {MODULES}/mod_include.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule auth_openidc_module {MODULES}/mod_auth_openidc.so
TypesConfig /etc/mime.types
DocumentRoot "{d}/htdocs"
DirectoryIndex index.shtml
AddType text/html .shtml
AddOutputFilter INCLUDES .shtml
OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID apache
OIDCClientSecret {APACHE_SECRET}
OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase {passphrase}
OIDCPKCEMethod S256
OIDCScope "openid profile"
OIDCRemoteUserClaim sub
OIDCCacheType shm
<Directory "{d}/htdocs">
  Options +Includes
  Require all granted
</Directory>
<Location /protected>
  AuthType openid-connect
  Require valid-user
</Location>
"#,
            passphrase = hex::encode(rand::random::<[u8; 16]>()),
        );
        let conf = dir.join("httpd.conf");
        std::fs::write(&conf, config).unwrap();
        // nobody reads the pages and writes nothing.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status();
        let child = Command::new(APACHE)
            .arg("-X")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start apache2");
        let mut apache = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = apache.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = apache.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("apache exited ({status}): {stderr}{}", apache.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "apache did not listen on {port}: {}",
                apache.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        apache
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// qrlogin with the `apache` client registered for `apache_port`.
async fn provider_for_apache(apache_port: u16) -> (TestApp, OidcFiles) {
    let files = OidcFiles::new(
        Algorithm::ES256,
        &[
            json!({"client_id": "apache", "client_secret": APACHE_SECRET,
                 "redirect_uris": [format!("http://127.0.0.1:{apache_port}/protected/redirect_uri")],
                 "client_name": "Apache"}),
        ],
    );
    let app = spawn_app_with(|s| files.apply(s, Algorithm::ES256)).await;
    (app, files)
}

const STATUS: &str = "(document.querySelector('#qrlogin') || {dataset: {}}).dataset.status";

/// The desktop opens the protected URL and lands on qrlogin's QR page; the
/// phone scans the screenshot and shows its confirm page.
async fn scan_from_protected_url(
    browser: &Browser,
    app: &TestApp,
    apache: &Apache,
) -> (Page, Page) {
    let desktop = browser.page("desktop", Device::Desktop, "en-US").await;
    desktop.goto(&apache.url("/protected/")).await;
    desktop
        .wait_for("qrlogin's QR page", &format!("{STATUS} === 'pending'"))
        .await;
    let here = desktop.eval("location.href").await;
    assert!(
        here.as_str()
            .unwrap()
            .starts_with(&app.url("/oauth2/authorize?")),
        "{here}"
    );
    desktop.screenshot("1-qr").await;
    let code = desktop.scan_qr(".qrlogin-qr").await;
    let phone = browser.page("phone", Device::Phone, "en-US").await;
    phone.goto(&code).await;
    phone
        .wait_for(
            "the confirm page",
            "document.querySelector('form.confirm button')",
        )
        .await;
    (desktop, phone)
}

#[tokio::test]
async fn mod_auth_openidc_logs_in_by_qr_and_serves_the_protected_content() {
    if !Apache::available("mod_auth_openidc login") {
        return;
    }
    let port = Apache::free_port();
    let (app, _files) = provider_for_apache(port).await;
    let Some(browser) = Browser::launch("oidc_apache_login").await else {
        return;
    };
    let apache = Apache::start(port, &app.address);
    let (desktop, phone) = scan_from_protected_url(&browser, &app, &apache).await;
    phone.tap("#name").await;
    phone.type_text("Ann").await;
    phone.tap("form.confirm button").await;
    desktop
        .wait_for(
            "the protected content",
            "document.querySelector('#content') && location.pathname.startsWith('/protected')",
        )
        .await;
    desktop.screenshot("2-protected").await;
    let user = desktop.text("#user").await;
    assert!(
        !user.is_empty() && user != "(none)",
        "the confirmed user: {user}"
    );
    assert_eq!(desktop.text("#name").await, "Ann", "{}", apache.error_log());
    assert!(
        app.metrics()
            .await
            .contains("qrlogin_oidc_token_requests_total{outcome=\"issued\"}")
    );
}

#[tokio::test]
async fn a_deny_ends_on_mod_auth_openidc_s_error_never_the_content() {
    if !Apache::available("mod_auth_openidc deny") {
        return;
    }
    let port = Apache::free_port();
    let (app, _files) = provider_for_apache(port).await;
    let Some(browser) = Browser::launch("oidc_apache_deny").await else {
        return;
    };
    let apache = Apache::start(port, &app.address);
    let (desktop, phone) = scan_from_protected_url(&browser, &app, &apache).await;
    phone.tap("form.deny button").await;
    desktop
        .wait_for(
            "mod_auth_openidc's error",
            &format!(
                "location.href.startsWith('{}') && document.readyState === 'complete' && document.body.innerText.length > 0",
                apache.url("/protected/redirect_uri")
            ),
        )
        .await;
    desktop.screenshot("2-error").await;
    let text = desktop.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    // mod_auth_openidc's own error page. (2.4.12, Debian 12's, reads the
    // RFC 9207 `iss` of an error response as a third-party-initiated login,
    // so it names that rather than access_denied; either way no session.)
    assert!(text.starts_with("Error"), "{text}");
    assert!(
        text.contains("access_denied") || text.contains("Invalid Request"),
        "{text}"
    );
    assert!(!text.contains("Protected content"), "{text}");
    let has_content = desktop.eval("!!document.querySelector('#content')").await;
    assert_eq!(has_content, json!(false));
    // And the protected URL still sends this browser to log in.
    desktop.goto(&apache.url("/protected/")).await;
    desktop
        .wait_for(
            "qrlogin's QR page again",
            &format!("{STATUS} === 'pending'"),
        )
        .await;
    assert!(
        app.metrics()
            .await
            .contains("qrlogin_oidc_authorizations_total{client=\"apache\",outcome=\"denied\"} 1")
    );
}

/// The openid-client relying party (`tests/rp/openid-client/rp.js`) on
/// `port`, until dropped.
struct NodeRp(Child);

impl NodeRp {
    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rp/openid-client")
    }

    fn available(test: &str) -> bool {
        let node = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let ok = node && Self::dir().join("node_modules/openid-client").is_dir();
        if !ok {
            if ci() {
                panic!(
                    "{test}: needs node and `npm ci` in tests/rp/openid-client (scripts/test.sh does it), and CI=true"
                );
            }
            eprintln!(
                "\n*** SKIPPED: {test} needs node and `npm ci` in tests/rp/openid-client ***\n"
            );
        }
        ok
    }

    fn start(port: u16, issuer: &str, client_id: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("node")
            .arg(Self::dir().join("rp.js"))
            .env("ISSUER", issuer)
            .env("CLIENT_ID", client_id)
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the relying party started");
        Self(child)
    }
}

impl Drop for NodeRp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn openid_client_runs_the_code_flow_with_pkce_and_validates_the_id_token() {
    if !NodeRp::available("openid-client login") {
        return;
    }
    let port = Apache::free_port();
    let files = OidcFiles::new(
        Algorithm::ES256,
        &[
            json!({"client_id": "node-rp", "token_endpoint_auth_method": "none",
                 "redirect_uris": [format!("http://127.0.0.1:{port}/callback")]}),
        ],
    );
    let app = spawn_app_with(|s| files.apply(s, Algorithm::ES256)).await;
    let Some(browser) = Browser::launch("oidc_openid_client").await else {
        return;
    };
    let issuer = app.address.clone();
    let _rp = tokio::task::spawn_blocking(move || NodeRp::start(port, &issuer, "node-rp"))
        .await
        .unwrap();
    let desktop = browser.page("desktop", Device::Desktop, "en-US").await;
    desktop
        .goto(&format!("http://127.0.0.1:{port}/login"))
        .await;
    desktop
        .wait_for("qrlogin's QR page", &format!("{STATUS} === 'pending'"))
        .await;
    let code = desktop.scan_qr(".qrlogin-qr").await;
    let phone = browser.page("phone", Device::Phone, "en-US").await;
    phone.goto(&code).await;
    phone
        .wait_for(
            "the confirm page",
            "document.querySelector('form.confirm button')",
        )
        .await;
    phone.tap("#name").await;
    phone.type_text("Ann").await;
    phone.tap("form.confirm button").await;
    desktop
        .wait_for(
            "the relying party's answer",
            "document.querySelector('#content') || document.querySelector('#error')",
        )
        .await;
    desktop.screenshot("logged-in").await;
    let error = desktop
        .eval("(document.querySelector('#error') || {}).textContent || ''")
        .await;
    assert_eq!(
        error,
        json!(""),
        "{}",
        desktop.eval("document.body.innerText").await
    );
    assert!(!desktop.text("#sub").await.is_empty());
    assert_eq!(desktop.text("#name").await, "Ann");
    assert_eq!(desktop.text("#aud").await, "node-rp");
    assert_eq!(desktop.text("#nonce").await, "true");
}
