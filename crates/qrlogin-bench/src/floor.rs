//! `floor`: a server that answers the contract's login exchange (create a
//! ticket, open its socket, confirm it) with canned bytes and does nothing
//! else: no framework, no state machine, no token, no limits, no metrics.
//!
//! Why keep it: the performance budgets compare a qrlogin confirm with a
//! peer's push. A confirm moves more bytes over more system calls (a
//! request read, a response, a frame, a close) than a push does, and the
//! kernel's part of that is paid by any implementation of the contract.
//! Measured through the same load generator in the same run, this server's
//! CPU per confirm and latency tail are that floor; what qrlogin costs above
//! it is qrlogin's own. It runs on the runtime qrlogin runs on (tokio's
//! multi-thread scheduler, one worker per CPU it may use), writes what
//! qrlogin writes in the same order and sizes, and stops after `--seconds`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(clap::Args)]
pub struct FloorArgs {
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:18081")]
    bind: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Busy CPU time added to each confirm, in microseconds: the floor
    /// made as costly per confirm as qrlogin, to tell a tail that grows
    /// with a confirm's cost from one made by stalls.
    #[arg(long, default_value_t = 0)]
    confirm_work_us: u64,
}

/// The sockets waiting on a ticket, by ticket id.
type Waiters = Arc<Mutex<HashMap<Box<str>, oneshot::Sender<()>>>>;

/// Longest request head read; a longer one ends the connection.
const HEAD_MAX: usize = 16 * 1024;
/// Longest request body read.
const BODY_MAX: usize = 64 * 1024;

/// qrlogin's confirm answer and pushed frame are this long (bytes on the
/// wire, read with strace off a release build answering the load
/// generator's confirm, HS256 with a 48-byte secret, 2026-12-03: 284
/// before a backend's POST stepped around CORS); the floor's are as long.
const RESPONSE_LEN: usize = 162;
const FRAME_TEXT_LEN: usize = 429;

pub fn run(args: FloorArgs) -> bool {
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "qrlogin-bench floor: {} is not a loopback address",
            args.bind
        );
        return false;
    }
    // What `#[tokio::main]` builds for qrlogin.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qrlogin-bench floor: {e}");
            return false;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("qrlogin-bench floor: bind {}: {e}", args.bind);
                return false;
            }
        };
        let work = Duration::from_micros(args.confirm_work_us);
        let served = tokio::time::timeout(Duration::from_secs(args.seconds), serve(listener, work));
        match served.await {
            Ok(Err(e)) => {
                eprintln!("qrlogin-bench floor: accept: {e}");
                false
            }
            _ => true,
        }
    })
}

async fn serve(listener: TcpListener, confirm_work: Duration) -> io::Result<()> {
    let canned = Arc::new(Canned::new(confirm_work));
    let waiters = Waiters::default();
    let next = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            // Out of files: wait, as qrlogin's accept loop does.
            Err(e) if e.raw_os_error() == Some(24) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        stream.set_nodelay(true)?;
        let (canned, waiters, next) = (canned.clone(), waiters.clone(), next.clone());
        tokio::spawn(async move {
            let _ = connection(stream, &canned, &waiters, &next).await;
        });
    }
}

/// The bytes every answer of a kind shares.
struct Canned {
    confirmed: Vec<u8>,
    frames: Vec<u8>,
    confirm_work: Duration,
}

impl Canned {
    fn new(confirm_work: Duration) -> Self {
        let body = r#"{"status":"confirmed"}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-pad: ",
            body.len()
        );
        let pad = RESPONSE_LEN - head.len() - "\r\n\r\n".len() - body.len();
        let confirmed = format!("{head}{}\r\n\r\n{body}", "p".repeat(pad));
        let frame = r#"{"type":"state","status":"confirmed","token":""}"#;
        let frame = frame.replace(
            r#""""#,
            &format!(r#""{}""#, "t".repeat(FRAME_TEXT_LEN - frame.len())),
        );
        // The confirmed frame and a close frame (1000), in one write.
        let mut frames = text_frame(&frame);
        frames.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        Self {
            confirmed: confirmed.into_bytes(),
            frames,
            confirm_work,
        }
    }
}

/// An unmasked (server-to-client) text frame.
fn text_frame(text: &str) -> Vec<u8> {
    let mut f = vec![0x81];
    match text.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=65535 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(text.as_bytes());
    f
}

/// Keeps the CPU busy for `work` (nothing when zero).
fn spin(work: Duration) {
    if work.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One kept-alive HTTP/1.1 connection, until it upgrades or ends.
async fn connection(
    mut stream: TcpStream,
    canned: &Canned,
    waiters: &Waiters,
    next: &AtomicU64,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > HEAD_MAX || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default();
        let path = request_line.next().unwrap_or_default();
        let (mut length, mut ws_key) = (0, None);
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(usize::MAX);
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                ws_key = Some(value.trim());
            }
        }
        if length > BODY_MAX {
            return Ok(());
        }
        while buf.len() < head_end + length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head_end + length);
        let tail = path.strip_prefix("/api/v1/tickets").unwrap_or("-");
        if method == "POST" && tail.is_empty() {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let body = format!(r#"{{"ticket":"f{n:021}","secret":"{n:043}","expires_in":600}}"#);
            let answer = format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await?;
        } else if let (Some(id), Some(key)) = (tail.strip_suffix("/ws"), ws_key) {
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\nsec-websocket-protocol: qrlogin.v1\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(answer.as_bytes()).await?;
            return socket(stream, id.trim_start_matches('/').into(), canned, waiters).await;
        } else if let Some(id) = tail.strip_suffix("/confirm") {
            let waiter = waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id.trim_start_matches('/'));
            match waiter {
                Some(wake) => {
                    spin(canned.confirm_work);
                    let _ = wake.send(());
                    stream.write_all(&canned.confirmed).await?;
                }
                None => stream.write_all(NOT_FOUND).await?,
            }
        } else if path == "/healthz" {
            stream.write_all(OK).await?;
        } else {
            stream.write_all(NOT_FOUND).await?;
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

/// A waiting browser's socket: the pending frame, then the confirmed frame
/// and a close when its ticket is confirmed, or nothing if the browser
/// leaves first.
async fn socket(
    mut stream: TcpStream,
    id: Box<str>,
    canned: &Canned,
    waiters: &Waiters,
) -> io::Result<()> {
    let (wake, woken) = oneshot::channel();
    waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), wake);
    stream
        .write_all(&text_frame(r#"{"type":"state","status":"pending"}"#))
        .await?;
    let mut scratch = [0u8; 256];
    let confirmed = tokio::select! {
        r = woken => r.is_ok(),
        _ = async { while stream.read(&mut scratch).await.is_ok_and(|n| n > 0) {} } => false,
    };
    if confirmed {
        stream.write_all(&canned.frames).await?;
    } else {
        waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(text_frame("ab"), [0x81, 2, b'a', b'b']);
        let long = text_frame(&"x".repeat(300));
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn canned_answers_have_qrlogins_sizes() {
        let c = Canned::new(Duration::ZERO);
        assert_eq!(c.confirmed.len(), RESPONSE_LEN);
        let text = String::from_utf8(c.confirmed.clone()).unwrap();
        assert!(text.ends_with("\r\n\r\n{\"status\":\"confirmed\"}"));
        assert!(text.contains("content-length: 22\r\n"));
        assert_eq!(c.frames.len(), 4 + FRAME_TEXT_LEN + 4);
        assert!(c.frames[4..].starts_with(br#"{"type":"state","status":"confirmed","token":"ttt"#));
    }

    /// The exchange the load generators drive: create, open the socket
    /// (pending frame), confirm (200), then the confirmed frame and a close;
    /// a second confirm of the same ticket finds nobody waiting.
    #[tokio::test]
    async fn serves_a_login_exchange() {
        tokio::time::timeout(Duration::from_secs(10), exchange(Duration::ZERO))
            .await
            .expect("the exchange ends within 10 s");
    }

    /// `--confirm-work-us`: the confirm's answer comes no sooner than the
    /// work it was given, and the exchange is otherwise the same.
    #[tokio::test]
    async fn a_confirm_spends_the_work_it_is_given() {
        let work = Duration::from_millis(300);
        let took = tokio::time::timeout(Duration::from_secs(10), exchange(work))
            .await
            .expect("the exchange ends within 10 s");
        assert!(took >= work, "confirmed in {took:?}, given {work:?}");
    }

    /// The exchange; returns how long the first confirm's answer took.
    async fn exchange(confirm_work: Duration) -> Duration {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, confirm_work));
        // The generator's own browser: what `push` and `hold` do to it.
        let sources = crate::net::Sources::new(1);
        let mut conn = crate::http::Conn::open(addr, &sources).await.unwrap();
        let created = crate::browser::create(&mut conn).await.unwrap();
        let (mut ws, first) = crate::browser::open(addr, &sources, &created)
            .await
            .unwrap();
        assert_eq!(first, r#"{"type":"state","status":"pending"}"#);
        let ticket = created.ticket;
        let mut http = TcpStream::connect(addr).await.unwrap();
        let confirm = format!(
            "POST /api/v1/tickets/{ticket}/confirm HTTP/1.1\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        let started = std::time::Instant::now();
        let answer = request(&mut http, &confirm).await;
        let took = started.elapsed();
        assert_eq!(answer.len(), RESPONSE_LEN);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => assert!(t.starts_with(r#"{"type":"state","status":"confirmed""#)),
            other => panic!("expected the confirmed frame, got {other:?}"),
        }
        assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
        let again = request(&mut http, &confirm).await;
        assert!(again.starts_with("HTTP/1.1 404 "), "{again}");
        took
    }

    /// Write a request and read one answer (head and its content-length body).
    async fn request(http: &mut TcpStream, text: &str) -> String {
        http.write_all(text.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = http.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return text;
                }
            }
        }
    }
}
