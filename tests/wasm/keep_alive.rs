//! Outbound connections kept open between a guest's requests: reused by the
//! same tenant for the same origin, across attempts, and never by another
//! tenant, past a narrowed operator range, or over the tenant's cap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowfabric::model::CapabilityCeiling;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::upstream::{
    allow_loopback_port, allow_upstream, grant, http_grant, loopback_ceiling, tenant_with_testkit,
    Upstream,
};
use crate::{config, Env};

#[tokio::test]
async fn a_tenants_requests_share_a_connection_across_attempts() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    allow_upstream(&env, &up).await;
    let pool = env.pool(config(1));

    let five = format!("http-n:5:{}", up.url("/hello"));
    let first = env.submit("testkit", &five, 0).await;
    assert_eq!(
        crate::text(&env.wait_terminal(first).await.result),
        "ok=5 error=none"
    );
    assert_eq!(up.hits(), 5);
    assert_eq!(up.connections(), 1, "five requests, one connection");
    let second = env.submit("testkit", &five, 0).await;
    assert_eq!(
        crate::text(&env.wait_terminal(second).await.result),
        "ok=5 error=none"
    );
    assert_eq!(up.connections(), 1, "the next attempt reuses it");
    // The attempt's log says which requests a kept connection carried.
    assert_eq!(reused(&env, first).await, [false, true, true, true, true]);
    assert_eq!(reused(&env, second).await, [true; 5]);

    // Another tenant, same component kind, same origin: its own connection.
    let origin = format!("http://127.0.0.1:{}", up.port);
    let other = tenant_with_testkit(&env, "other", http_grant(&[origin])).await;
    let mut theirs = flowfabric::model::NewExecution::new("testkit", five.as_bytes());
    theirs.policy.retry.max_retries = 0;
    let id = env
        .db
        .engine
        .create(other, theirs)
        .await
        .unwrap()
        .execution_id;
    let done = env
        .db
        .wait_terminal(other, id, Duration::from_secs(30))
        .await;
    assert_eq!(crate::text(&done.result), "ok=5 error=none");
    assert_eq!(up.hits(), 15);
    assert_eq!(up.connections(), 2, "tenants never share a connection");
    pool.shutdown().await;
}

/// Each `http` frame's `reused_connection`, in order.
async fn reused(env: &Env, id: flowfabric::model::ExecutionId) -> Vec<bool> {
    env.first_attempt_frames(id, 100)
        .await
        .iter()
        .filter(|f| f.frame_type == "http")
        .map(|f| serde_json::from_slice::<serde_json::Value>(&f.payload).unwrap())
        .map(|v| v["reused_connection"].as_bool().unwrap())
        .collect()
}

#[tokio::test]
async fn a_narrowed_range_refuses_a_kept_connection() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    allow_upstream(&env, &up).await;
    let pool = env.pool(config(1));
    let one = format!("http:GET:{}", up.url("/hello"));
    assert_eq!(
        env.completed_text(&one, 0).await,
        "status=200 bytes=5 body=hello"
    );

    // The operator takes loopback away; the kept connection to it is not
    // a way around that.
    let no_range = CapabilityCeiling {
        http_allow: vec!["http://127.0.0.1:*".into()],
        ..Default::default()
    };
    env.db
        .engine
        .set_ceiling(env.tenant, &no_range)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        env.completed_text(&one, 0).await,
        "error=DestinationIpProhibited"
    );
    assert_eq!(up.hits(), 1, "nothing more reached the server");
    pool.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_gives_its_permit_to_a_new_origin() {
    let env = Env::new().await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let one_connection = CapabilityCeiling {
        http_max_connections: Some(1),
        http_timeout_ms: Some(2_000),
        ..loopback_ceiling()
    };
    env.db
        .engine
        .set_ceiling(env.tenant, &one_connection)
        .await
        .unwrap();
    let origins = [a.url(""), b.url("")];
    grant(&env, env.tenant, "testkit", http_grant(&origins)).await;
    let pool = env.pool(config(1));

    let call = |up: &Upstream| format!("http:GET:{}", up.url("/hello"));
    let hello = "status=200 bytes=5 body=hello";
    assert_eq!(env.completed_text(&call(&a), 0).await, hello);
    // The tenant's one permit is held by the idle connection to `a`; the
    // request to `b` closes it rather than wait for the idle timeout.
    assert_eq!(env.completed_text(&call(&b), 0).await, hello);
    assert_eq!(env.completed_text(&call(&a), 0).await, hello);
    assert_eq!((a.connections(), b.connections()), (2, 1));
    pool.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_used_again() {
    let env = Env::new().await;
    let server = ClosingServer::start().await;
    allow_loopback_port(&env, server.port).await;
    let origin = format!("http://127.0.0.1:{}", server.port);
    let pool = env.pool(config(1));
    let call = format!("http:GET:{origin}/");
    for _ in 0..3 {
        assert_eq!(
            env.completed_text(&call, 0).await,
            "status=200 bytes=5 body=hello"
        );
        // Past the server's idle close.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    pool.shutdown().await;
}

/// A server that answers one request a connection, keep-alive, and closes
/// the connection 20 ms later, as a server's idle timeout does.
struct ClosingServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl ClosingServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                    let _ = socket.write_all(reply.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
            }
        });
        Self { port, accepted }
    }
}
