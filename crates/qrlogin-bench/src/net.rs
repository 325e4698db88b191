//! Client sockets with their source address spread over 127.0.0.0/8: one
//! source address has only ~28,000 ephemeral ports, so many held sockets
//! (and several generator processes) need many source addresses.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// Hands out source addresses 127.N.x.y round robin over 62,500 addresses;
/// `net` (N) lets separate generator processes use separate ranges.
pub struct Sources {
    net: u8,
    next: AtomicU32,
}

impl Sources {
    pub fn new(net: u8) -> Self {
        Self {
            net,
            next: AtomicU32::new(0),
        }
    }

    fn next_addr(&self) -> Ipv4Addr {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % 62_500;
        Ipv4Addr::new(127, self.net, (k / 250) as u8, (k % 250) as u8 + 2)
    }

    /// A TCP connection to `server` from the next source address.
    pub async fn connect(&self, server: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((self.next_addr(), 0)))?;
        // Sends are small and latency is what we measure.
        socket.set_nodelay(true)?;
        socket.connect(server).await
    }
}

/// Only loopback targets: the generator never loads another host.
pub fn loopback_only(addrs: &[SocketAddr]) -> Result<(), String> {
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(format!(
            "{a} is not a loopback address; refusing to load it"
        )),
        None if addrs.is_empty() => Err("give at least one --server".into()),
        None => Ok(()),
    }
}
