//! What one waiting browser does: create a ticket, open its WebSocket with
//! the `secret.` subprotocol, read the first frame.

use std::net::SocketAddr;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message, http::header::SEC_WEBSOCKET_PROTOCOL,
};

use crate::http::Conn;
use crate::net::Sources;

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Deserialize)]
pub struct Created {
    pub ticket: String,
    pub secret: String,
    /// The ticket's lifetime in seconds.
    pub expires_in: u64,
}

/// `POST /api/v1/tickets` on a keep-alive connection.
pub async fn create(conn: &mut Conn) -> Result<Created, String> {
    let r = conn
        .request("POST", "/api/v1/tickets", None, b"{}")
        .await
        .map_err(|e| format!("create: {e}"))?;
    if r.status != 201 {
        return Err(format!(
            "create: HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("create: {e}"))
}

/// Open the ticket's WebSocket and return it with its first text frame.
pub async fn open(
    server: SocketAddr,
    sources: &Sources,
    created: &Created,
) -> Result<(Ws, String), String> {
    let mut ws = connect(server, sources, &created.ticket, &created.secret)
        .await
        .map_err(|e| e.to_string())?;
    let first = next_text(&mut ws).await?;
    Ok((ws, first))
}

/// Why a WebSocket could not be opened: callers that retry (the soak)
/// need the HTTP status of a refused upgrade, not only its text.
#[derive(Debug)]
pub enum OpenError {
    /// No TCP connection (refused: the instance is down).
    Connect(std::io::Error),
    /// The server answered the upgrade with this status.
    Status(u16),
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Connect(e) => write!(f, "connect: {e}"),
            OpenError::Status(s) => write!(f, "ws handshake: HTTP {s}"),
            OpenError::Other(e) => f.write_str(e),
        }
    }
}

/// Open a ticket's WebSocket (offering `qrlogin.v1, secret.{secret}`),
/// without reading any frame.
pub async fn connect(
    server: SocketAddr,
    sources: &Sources,
    ticket: &str,
    secret: &str,
) -> Result<Ws, OpenError> {
    let stream = sources.connect(server).await.map_err(OpenError::Connect)?;
    let mut request = format!("ws://{server}/api/v1/tickets/{ticket}/ws")
        .into_client_request()
        .map_err(|e| OpenError::Other(format!("ws request: {e}")))?;
    let protocols = HeaderValue::from_str(&format!("qrlogin.v1, secret.{secret}"))
        .map_err(|e| OpenError::Other(format!("ws request: {e}")))?;
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, protocols);
    // The generator holds as many sockets as the server: keep its own small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(OpenError::Status(response.status().as_u16())),
        Err(e) => Err(OpenError::Other(format!("ws handshake: {e}"))),
    }
}

/// The next text frame (pings are answered by tungstenite on the way).
pub async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("ws: {e}")),
            None => return Err("ws: ended".into()),
        }
    }
}

/// Whether a frame is the push we wait for: `confirmed` with a token.
pub fn is_confirmed(frame: &str) -> bool {
    frame.contains(r#""status":"confirmed""#) && frame.contains(r#""token":""#)
}
