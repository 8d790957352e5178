//! A loopback TCP proxy in front of Postgres that can go silent on chosen
//! connections: the sockets stay open, but nothing crosses in either direction,
//! which is what a NAT or firewall that forgets an idle flow does. Neither end
//! sees an error, so only the client's own timeouts and polling can notice.
//!
//! Connections are chosen by what the client sent on them (say, `LISTEN`), so a
//! test can deafen the engine's notification listener and nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    port: u16,
    connections: Arc<Mutex<Vec<Arc<Connection>>>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Connection {
    /// The client sent the marker on this connection.
    marked: AtomicBool,
    silent: AtomicBool,
    /// Bytes the server sent after the connection went silent.
    swallowed: AtomicU64,
}

impl Proxy {
    /// Forward every connection to the server of `server_url`
    /// (`postgres://user@host:port`), noting which ones carry `marker`.
    pub async fn start(server_url: &str, marker: &'static [u8]) -> Self {
        let upstream = upstream_addr(server_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let connections: Arc<Mutex<Vec<Arc<Connection>>>> = Arc::default();
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue; // The client sees its connection close.
                    };
                    let connection = Arc::new(Connection::default());
                    connections.lock().unwrap().push(connection.clone());
                    let (client_in, client_out) = client.into_split();
                    let (server_in, server_out) = server.into_split();
                    tokio::spawn(pump(
                        client_in,
                        server_out,
                        connection.clone(),
                        Some(marker),
                    ));
                    tokio::spawn(pump(server_in, client_out, connection, None));
                }
            }
        });
        Self {
            port,
            connections,
            accept,
        }
    }

    /// `postgres://postgres@127.0.0.1:port` of the proxy, without a database name.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Connections on which the client has sent the marker so far.
    pub fn marked(&self) -> usize {
        self.each(|c| c.marked.load(Relaxed)).count()
    }

    /// Silence every marked connection; returns how many.
    pub fn silence_marked(&self) -> usize {
        self.each(|c| c.marked.load(Relaxed))
            .inspect(|c| c.silent.store(true, Relaxed))
            .count()
    }

    /// Bytes the server has sent to silenced connections since: what their
    /// clients never got.
    pub fn swallowed(&self) -> u64 {
        self.each(|_| true).map(|c| c.swallowed.load(Relaxed)).sum()
    }

    fn each(&self, keep: impl Fn(&Connection) -> bool) -> impl Iterator<Item = Arc<Connection>> {
        let all = self.connections.lock().unwrap().clone();
        all.into_iter().filter(move |c| keep(c))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copy one direction until either end closes. `marker` is set on the client's
/// direction; the server's direction counts what a silenced connection drops.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Arc<Connection>,
    marker: Option<&'static [u8]>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let bytes = &buf[..n];
        match marker {
            Some(m) if bytes.windows(m.len()).any(|w| w == m) => {
                connection.marked.store(true, Relaxed);
            }
            None if connection.silent.load(Relaxed) => {
                connection.swallowed.fetch_add(n as u64, Relaxed);
            }
            _ => {}
        }
        if connection.silent.load(Relaxed) {
            continue;
        }
        if to.write_all(bytes).await.is_err() {
            return;
        }
    }
}

/// `host:port` of a `postgres://user@host:port` URL; the proxy speaks TCP only.
fn upstream_addr(server_url: &str) -> SocketAddr {
    let authority = server_url
        .split_once("://")
        .map_or(server_url, |(_, rest)| rest);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .split('/')
        .next()
        .unwrap_or_default();
    host_port
        .parse()
        .unwrap_or_else(|_| panic!("the proxy needs a TCP server address, not {server_url}"))
}
