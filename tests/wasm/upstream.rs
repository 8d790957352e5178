//! A loopback HTTP server for guests to call: it counts the requests that
//! reach it, so a test can see how often a side effect happened, and the
//! connections they came on.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use flowfabric::model::{CapabilityCeiling, ComponentGrant, TenantId};

use crate::Env;

/// A loopback server: `/hello`, `/echo` (POST, returns the body), `/slow` (answers after 3 s), `/big` (2 MiB),
/// `/redirect?to=URL`; it counts the requests that reach it.
pub struct Upstream {
    pub port: u16,
    hits: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    peers: Mutex<HashSet<SocketAddr>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let hits = Arc::new(Counts::default());
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/echo",
                axum::routing::post(|body: axum::body::Bytes| async move { body }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "late"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 2 << 20] }))
            .route("/redirect", get(redirect))
            .layer(axum::middleware::from_fn_with_state(hits.clone(), count))
            .with_state(());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn hits(&self) -> u64 {
        self.hits.requests.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one request.
    pub fn connections(&self) -> usize {
        self.hits.peers.lock().unwrap().len()
    }
}

async fn count(
    State(hits): State<Arc<Counts>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    hits.requests.fetch_add(1, Ordering::SeqCst);
    hits.peers.lock().unwrap().insert(peer);
    next.run(request).await
}

async fn redirect(
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())])
}

/// The operator lets the tenant reach loopback HTTP on any port.
pub fn loopback_ceiling() -> CapabilityCeiling {
    CapabilityCeiling {
        http_allow: vec!["http://127.0.0.1:*".into(), "http://localhost:*".into()],
        http_allow_cidrs: vec!["127.0.0.0/8".into()],
        config: true,
        ..Default::default()
    }
}

pub async fn grant(env: &Env, tenant: TenantId, kind: &str, grant: ComponentGrant) {
    env.db.engine.put_grant(tenant, kind, &grant).await.unwrap();
}

/// The loopback ceiling, and testkit granted the upstream's origin.
pub async fn allow_upstream(env: &Env, up: &Upstream) {
    allow_loopback_port(env, up.port).await;
}

/// The loopback ceiling, and testkit granted `http://127.0.0.1:PORT`.
pub async fn allow_loopback_port(env: &Env, port: u16) {
    env.db
        .engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    let origin = format!("http://127.0.0.1:{port}");
    grant(env, env.tenant, "testkit", http_grant(&[origin])).await;
}

pub fn http_grant(origins: &[String]) -> ComponentGrant {
    ComponentGrant {
        http: origins.to_vec(),
        ..Default::default()
    }
}

/// Another tenant with testkit uploaded, the loopback ceiling and `grant`.
pub async fn tenant_with_testkit(env: &Env, name: &str, grant: ComponentGrant) -> TenantId {
    let tenant = env.db.tenant(name).await;
    flowfabric::components::register(
        &env.db.engine,
        &env.runtime,
        tenant,
        "testkit",
        &flowfabric_tests::guest("testkit"),
    )
    .await
    .unwrap();
    env.db
        .engine
        .set_ceiling(tenant, &loopback_ceiling())
        .await
        .unwrap();
    env.db
        .engine
        .put_grant(tenant, "testkit", &grant)
        .await
        .unwrap();
    tenant
}
