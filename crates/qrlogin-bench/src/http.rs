//! A minimal HTTP/1.1 keep-alive client: the generator must spend far less
//! CPU per request than the server it measures, so it writes requests by
//! hand and reads only the status line, `Content-Length` and the body.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::net::Sources;

pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
}

pub struct Response {
    pub status: u16,
    /// `Retry-After` in seconds, when sent.
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

impl Conn {
    pub async fn open(server: SocketAddr, sources: &Sources) -> io::Result<Self> {
        let stream = sources.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::with_capacity(8 * 1024, stream),
            host: server.to_string(),
            line: String::with_capacity(256),
        })
    }

    /// One request; the connection stays open for the next.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: qrlogin-bench\r\n",
            self.host
        );
        if let Some(key) = bearer {
            head.push_str("Authorization: Bearer ");
            head.push_str(key);
            head.push_str("\r\n");
        }
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.get_mut().write_all(&request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad("no HTTP status line"))?;
        let mut length = None;
        let mut retry_after = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("retry-after") {
                    retry_after = value.trim().parse::<u64>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(bad("chunked responses are not expected"));
                }
            }
        }
        let mut body = vec![0; length.unwrap_or(0)];
        self.stream.read_exact(&mut body).await?;
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

/// Keep-alive connections per server, shared by many tasks: a request takes
/// one (or opens one) and gives it back when it went well, so the pool
/// grows to the number of requests in flight and no further.
pub struct Pool {
    idle: Mutex<Vec<Vec<(Instant, Conn)>>>,
}

/// A connection idle longer than this may have been closed by the server
/// (its header-read timeout also runs between requests): open a new one.
const MAX_IDLE: Duration = Duration::from_secs(4);

impl Pool {
    pub fn new(servers: usize) -> Self {
        Self {
            idle: Mutex::new((0..servers).map(|_| Vec::new()).collect()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<(Instant, Conn)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection to server `which` (`servers[which]`): an idle one, or a
    /// new one.
    pub async fn take(
        &self,
        which: usize,
        servers: &[SocketAddr],
        sources: &Sources,
    ) -> io::Result<Conn> {
        let pooled = {
            let mut idle = self.lock();
            let list = idle.get_mut(which);
            let mut found = None;
            if let Some(list) = list {
                while let Some((since, conn)) = list.pop() {
                    if since.elapsed() < MAX_IDLE {
                        found = Some(conn);
                        break;
                    }
                }
            }
            found
        };
        match pooled {
            Some(conn) => Ok(conn),
            None => {
                let server = servers
                    .get(which)
                    .copied()
                    .ok_or_else(|| io::Error::other("no such server"))?;
                Conn::open(server, sources).await
            }
        }
    }

    pub fn give(&self, which: usize, conn: Conn) {
        if let Some(list) = self.lock().get_mut(which) {
            list.push((Instant::now(), conn));
        }
    }

    /// Close every idle connection.
    pub fn clear(&self) {
        for list in self.lock().iter_mut() {
            list.clear();
        }
    }
}
