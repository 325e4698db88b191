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
use tokio_tungstenite::tungstenite::{Message, http::header::SEC_WEBSOCKET_PROTOCOL};

use crate::http::Conn;
use crate::net::Sources;

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Deserialize)]
pub struct Created {
    pub ticket: String,
    pub secret: String,
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
    let stream = sources
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut request = format!("ws://{server}/api/v1/tickets/{}/ws", created.ticket)
        .into_client_request()
        .map_err(|e| format!("ws request: {e}"))?;
    let protocols = HeaderValue::from_str(&format!("qrlogin.v1, secret.{}", created.secret))
        .map_err(|e| format!("ws request: {e}"))?;
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, protocols);
    // The generator holds as many sockets as the server: keep its own small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("ws handshake: {e}"))?;
    let first = next_text(&mut ws).await?;
    Ok((ws, first))
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
