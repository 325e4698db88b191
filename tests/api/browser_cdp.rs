//! A small Chrome DevTools Protocol client for the browser tests: starts the
//! system's Chromium headless with a fresh profile, opens pages in separate
//! browser contexts (a desktop, a phone), and drives them over CDP through
//! `tokio-tungstenite`, which the tests already use.
//!
//! Why not a CDP crate: the few commands these tests need (navigate,
//! evaluate, emulate a device, tap, screenshot) fit in this file, while the
//! generated protocol crates add minutes of build on a small machine.
//!
//! Tests wait for conditions (`Page::wait_for` polls a JavaScript
//! expression), never for fixed times. When a wait fails, the page's console
//! messages, errors and CSP reports are printed to explain why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long a condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub const IPHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// At most this many browsers at once: the suite shares a small machine
/// with every other test.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// The Chromium binary, if installed.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Where a test's screenshots go: `target/screenshots/{test}/`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("screenshots").join(test);
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// One CDP connection: requests by id, answers routed back to their caller,
/// console events kept per session.
struct Conn {
    out: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
    logs: Mutex<HashMap<String, Vec<String>>>,
}

impl Conn {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.out.send(msg.to_string()).expect("CDP connection open");
        tokio::time::timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("CDP {method}: no answer within {WAIT:?}"))
            .unwrap_or_else(|_| panic!("CDP {method}: connection closed"))
    }

    /// `call`, failing the test on a protocol error.
    async fn ok(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let answer = self.call(session, method, params).await;
        if let Some(error) = answer.get("error") {
            panic!("CDP {method} failed: {error}");
        }
        answer["result"].clone()
    }

    fn on_event(&self, msg: &Value) {
        let session = msg["sessionId"].as_str().unwrap_or("").to_owned();
        let p = &msg["params"];
        let line = match msg["method"].as_str() {
            Some("Runtime.consoleAPICalled") => format!(
                "console.{}: {}",
                p["type"].as_str().unwrap_or("log"),
                p["args"]
                    .as_array()
                    .map(|args| args
                        .iter()
                        .map(|a| a["value"].to_string())
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default()
            ),
            Some("Runtime.exceptionThrown") => format!(
                "exception: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(p["exceptionDetails"]["text"].as_str())
                    .unwrap_or("?")
            ),
            Some("Log.entryAdded") => format!(
                "log.{}: {} {}",
                p["entry"]["level"].as_str().unwrap_or("?"),
                p["entry"]["text"].as_str().unwrap_or(""),
                p["entry"]["url"].as_str().unwrap_or("")
            ),
            _ => return,
        };
        self.logs
            .lock()
            .unwrap()
            .entry(session)
            .or_default()
            .push(line);
    }
}

/// A headless Chromium with its own profile; killed and cleaned on drop.
pub struct Browser {
    child: tokio::process::Child,
    conn: Arc<Conn>,
    profile: PathBuf,
    user_agent: String,
    shots: PathBuf,
    _permit: SemaphorePermit<'static>,
}

/// Which device a page emulates.
#[derive(Clone, Copy)]
pub enum Device {
    Desktop,
    Phone,
}

impl Browser {
    /// Start Chromium for `test`, or `None` (after a loud notice) when it is
    /// not installed. Under `CI=true` a missing browser fails the test.
    pub async fn launch(test: &str) -> Option<Browser> {
        let Some(binary) = find_chromium() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("browser tests need chromium (apt-get install chromium), and CI=true");
            }
            loud(&format!(
                "\n*** SKIPPED: browser tests need chromium (apt-get install chromium) [{test}] ***\n"
            ));
            return None;
        };
        let permit = BROWSERS.acquire().await.unwrap();
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("chromium-profiles")
            .join(format!("{test}-{}", rand_suffix()));
        std::fs::create_dir_all(&profile).unwrap();
        let child = tokio::process::Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // Chromium writes its DevTools port and path to this file when ready.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium did not open its DevTools port within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("CDP connects");
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
        let conn = Arc::new(Conn {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            logs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let reader = Arc::downgrade(&conn);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(conn) = reader.upgrade() else { break };
                match value["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = conn.pending.lock().unwrap().remove(&id) {
                            let _ = tx.send(value);
                        }
                    }
                    None => conn.on_event(&value),
                }
            }
        });
        let version = conn.ok(None, "Browser.getVersion", json!({})).await;
        // Headless Chromium says "HeadlessChrome"; pages see a plain Chrome.
        let user_agent = version["userAgent"]
            .as_str()
            .unwrap_or("")
            .replace("HeadlessChrome", "Chrome");
        let shots = screenshot_dir(test);
        loud(&format!("{test}: screenshots in {}\n", shots.display()));
        Some(Browser {
            child,
            conn,
            profile,
            user_agent,
            shots,
            _permit: permit,
        })
    }

    /// A page in a fresh browser context (its own cookies and storage), as
    /// `device`, speaking `accept_language`.
    pub async fn page(&self, name: &str, device: Device, accept_language: &str) -> Page {
        let context = self
            .conn
            .ok(
                None,
                "Target.createBrowserContext",
                json!({ "disposeOnDetach": true }),
            )
            .await["browserContextId"]
            .clone();
        let target = self
            .conn
            .ok(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context }),
            )
            .await["targetId"]
            .clone();
        let session = self
            .conn
            .ok(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = Page {
            conn: self.conn.clone(),
            session,
            name: name.to_owned(),
            shots: self.shots.clone(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.ok(domain, json!({})).await;
        }
        let (width, height, scale, mobile, ua) = match device {
            Device::Desktop => (1024, 720, 1, false, self.user_agent.as_str()),
            Device::Phone => (390, 844, 2, true, IPHONE_UA),
        };
        page.ok(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
        )
        .await;
        page.ok(
            "Emulation.setUserAgentOverride",
            json!({ "userAgent": ua, "acceptLanguage": accept_language }),
        )
        .await;
        if mobile {
            page.ok(
                "Emulation.setTouchEmulationEnabled",
                json!({ "enabled": true, "maxTouchPoints": 5 }),
            )
            .await;
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let profile = self.profile.clone();
        // Chromium may still be writing its profile for a moment.
        std::thread::spawn(move || {
            for _ in 0..20 {
                if std::fs::remove_dir_all(&profile).is_ok() || !profile.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
}

/// Straight to stderr, in one write: the test harness hides `eprintln!` of
/// passing tests, and a skip or a screenshot folder must be seen.
fn loud(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

/// One tab, attached over a flat CDP session.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    pub name: String,
    shots: PathBuf,
}

impl Page {
    async fn ok(&self, method: &str, params: Value) -> Value {
        self.conn.ok(Some(&self.session), method, params).await
    }

    /// Run `source` in every document this page loads, before its scripts.
    pub async fn before_load(&self, source: &str) {
        self.ok(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        )
        .await;
    }

    /// Fail every request to URLs matching these patterns (`*` wildcards),
    /// so a test never reaches the internet.
    pub async fn block_urls(&self, patterns: &[&str]) {
        self.ok("Network.enable", json!({})).await;
        self.ok("Network.setBlockedURLs", json!({ "urls": patterns }))
            .await;
    }

    pub async fn goto(&self, url: &str) {
        let r = self.ok("Page.navigate", json!({ "url": url })).await;
        assert!(
            r.get("errorText").is_none(),
            "{}: navigating to {url}: {r}",
            self.name
        );
    }

    /// Evaluate `expr` (promises awaited) and return its JSON value, or the
    /// exception's text.
    pub async fn try_eval(&self, expr: &str) -> Result<Value, String> {
        let answer = self
            .conn
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = answer.get("error") {
            return Err(e.to_string());
        }
        let result = &answer["result"];
        if let Some(e) = result.get("exceptionDetails") {
            return Err(e["exception"]["description"]
                .as_str()
                .unwrap_or("exception")
                .to_owned());
        }
        Ok(result["result"]["value"].clone())
    }

    pub async fn eval(&self, expr: &str) -> Value {
        self.try_eval(expr)
            .await
            .unwrap_or_else(|e| panic!("{}: `{expr}` threw: {e}\n{}", self.name, self.logs()))
    }

    /// Wait until `expr` is truthy and return its value; `what` says, for a
    /// failure message, what was awaited.
    pub async fn wait_for(&self, what: &str, expr: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last: Value;
        loop {
            match self.try_eval(expr).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = json!(e),
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .try_eval("document.body && document.body.innerText")
                    .await
                    .unwrap_or_default();
                panic!(
                    "{}: waited {WAIT:?} for {what} (`{expr}`), last {last}\npage text: {text}\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the first element matching `selector`.
    pub async fn text(&self, selector: &str) -> String {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.innerText : null; }})()",
            json!(selector)
        );
        self.eval(&expr).await.as_str().unwrap_or("").to_owned()
    }

    /// The centre of `selector`'s element in CSS pixels, scrolled into view,
    /// once the page has loaded and nothing covers it (so a tap lands).
    async fn centre(&self, selector: &str) -> (f64, f64) {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); \
             if (!e || e.hidden || document.readyState !== 'complete') return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             if (!r.width || !r.height) return null; \
             const x = r.x + r.width / 2, y = r.y + r.height / 2, hit = document.elementFromPoint(x, y); \
             return hit && e.contains(hit) ? [x, y] : null; }})()",
            json!(selector)
        );
        let at = self
            .wait_for(&format!("{selector} to be visible"), &expr)
            .await;
        (at[0].as_f64().unwrap(), at[1].as_f64().unwrap())
    }

    /// A finger tap on `selector` (touch events, as on a phone).
    pub async fn tap(&self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        self.ok(
            "Input.dispatchTouchEvent",
            json!({ "type": "touchStart", "touchPoints": [{ "x": x, "y": y }] }),
        )
        .await;
        self.ok(
            "Input.dispatchTouchEvent",
            json!({ "type": "touchEnd", "touchPoints": [] }),
        )
        .await;
    }

    /// A mouse click on `selector`.
    pub async fn click(&self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.ok(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Type `text` into the focused element, as a keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.ok("Input.insertText", json!({ "text": text })).await;
    }

    /// Save a PNG of the viewport as `{n}-{page}-{label}.png` and return it.
    pub async fn screenshot(&self, label: &str) -> Vec<u8> {
        let shot = self
            .ok("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = self.shots.join(format!("{}-{label}.png", self.name));
        std::fs::write(&path, &png).unwrap();
        png
    }

    /// The text the QR shown by `selector` encodes, read from a screenshot
    /// of it: what a phone camera would read.
    pub async fn scan_qr(&self, selector: &str) -> String {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); if (!e || !e.complete || !e.naturalWidth) return null; \
             const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }})()",
            json!(selector)
        );
        let r = self.wait_for("the QR image to load", &expr).await;
        let clip = json!({ "x": r[0], "y": r[1], "width": r[2], "height": r[3], "scale": 2 });
        let shot = self
            .ok(
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let gray = image::load_from_memory(&png).unwrap().to_luma8();
        let mut prepared = rqrr::PreparedImage::prepare(gray);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "{}: one QR code on screen", self.name);
        grids[0].decode().expect("the QR decodes").1
    }

    /// Console messages, errors and CSP reports seen so far.
    pub fn logs(&self) -> String {
        let logs = self.conn.logs.lock().unwrap();
        match logs.get(&self.session) {
            Some(lines) if !lines.is_empty() => format!("console:\n  {}", lines.join("\n  ")),
            _ => "console: (empty)".to_owned(),
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}
