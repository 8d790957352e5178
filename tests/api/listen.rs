//! The listener itself, before any request is known: a client that sends
//! its headers too slowly is cut off, and connections past the cap wait
//! until one closes.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use flowfabric::api::listen::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(limits: ServeLimits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(serve(listener, router, limits, std::future::pending()));
    address
}

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

/// What the server sends before it closes the connection or `wait` passes
/// (`None`: it neither answered nor closed in time).
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_cut_off() {
    let address = start(ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    })
    .await;
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    let closed = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the half-sent request was not cut off");

    // One that sends nothing at all is closed the same way, and a prompt
    // client is served meanwhile.
    let mut silent = TcpStream::connect(address).await.unwrap();
    let mut prompt = TcpStream::connect(address).await.unwrap();
    prompt.write_all(REQUEST).await.unwrap();
    let mut head = [0u8; 12];
    prompt.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let closed = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(closed.as_deref(), Some(""), "closed without an answer");
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_one_to_close() {
    let address = start(ServeLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 2,
    })
    .await;
    let idle_a = TcpStream::connect(address).await.unwrap();
    let _idle_b = TcpStream::connect(address).await.unwrap();
    // Accepted by the kernel, not yet by the server.
    let mut third = TcpStream::connect(address).await.unwrap();
    third.write_all(REQUEST).await.unwrap();
    let mut head = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut head)).await;
    assert!(early.is_err(), "a third connection was served past the cap");
    drop(idle_a);
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut head))
        .await
        .expect("served once a place freed")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}
