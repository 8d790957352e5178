//! A real API server on loopback, over a database of its own, optionally with
//! an in-process worker pool: what `flowfabric serve` runs, minus the process.

use std::time::Duration;

use flowfabric::api::{self, ApiConfig};
use flowfabric::engine::Limits;
use flowfabric::runtime::SandboxLimits;
use flowfabric::worker::{WorkerConfig, WorkerPool};
use serde_json::{json, Value};

use crate::{runtime, Store, TestDb};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestServer {
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    /// The in-process server, unless this is a client of one elsewhere.
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pool: Option<WorkerPool>,
}

/// A tenant as the API created it.
#[derive(Debug, Clone)]
pub struct ApiTenant {
    pub id: flowfabric::model::TenantId,
    pub token: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Limits::default(), ApiConfig::default()).await
    }

    pub async fn start_with(limits: Limits, config: ApiConfig) -> Self {
        Self::serve(TestDb::with_limits(limits).await, config).await
    }

    /// A server over a database on `store`, with default limits.
    pub async fn start_on(store: Store) -> Self {
        let db = match store {
            Store::Postgres => TestDb::with_limits(Limits::default()).await,
            Store::Sqlite => TestDb::sqlite(Limits::default()).await,
        };
        Self::serve(db, ApiConfig::default()).await
    }

    async fn serve(db: TestDb, config: ApiConfig) -> Self {
        let config = ApiConfig {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..config
        };
        let router = api::router(db.engine.clone(), runtime(), &config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = tokio::spawn(api::serve(listener, router, std::future::pending()));
        Self {
            db,
            base,
            http: reqwest::Client::new(),
            server: Some(server),
            pool: None,
        }
    }

    /// A client of a server running elsewhere (a `flowfabric serve` process)
    /// at `base`, over `db`, with [`ADMIN_TOKEN`] as its admin token.
    pub fn attach(db: TestDb, base: String) -> Self {
        Self {
            db,
            base,
            http: reqwest::Client::new(),
            server: None,
            pool: None,
        }
    }

    /// Run executions on an in-process worker pool from now on.
    pub fn start_workers(&mut self, config: WorkerConfig) {
        self.pool = Some(WorkerPool::start(self.db.engine.clone(), runtime(), config));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of an unauthenticated GET of `path` (`/openapi.json`).
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// `/metrics`, read as the operator.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Create a tenant through the admin API; returns its id and first key.
    pub async fn tenant(&self, name: &str) -> ApiTenant {
        let response = self
            .http
            .post(self.url("/v1/admin/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("create tenant");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("tenant body");
        ApiTenant {
            id: body["tenant"]["tenant_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("tenant id"),
            token: body["api_key"]["token"]
                .as_str()
                .expect("api key token")
                .to_owned(),
        }
    }

    /// Upload a guest built from `guests/` as `kind`.
    pub async fn upload(&self, tenant: &ApiTenant, kind: &str, guest: &str) -> Value {
        let response = self
            .http
            .post(self.url(&format!("/v1/components/{kind}")))
            .bearer_auth(&tenant.token)
            .header("content-type", "application/wasm")
            .body(crate::guest(guest))
            .send()
            .await
            .expect("upload");
        assert!(
            response.status().is_success(),
            "upload: {}",
            response.status()
        );
        response.json().await.expect("upload body")
    }

    /// Send a request as `tenant`; returns the status and the JSON body
    /// (`Value::Null` when the body is not JSON).
    pub async fn call(
        &self,
        tenant: &ApiTenant,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&tenant.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        response_parts(request.send().await.expect("request")).await
    }

    /// Read an event stream's first page until it holds at least `want` items
    /// and nothing is pending (see `TestDb::events`); returns the page.
    pub async fn events(&self, tenant: &ApiTenant, path: &str, want: usize) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, page) = self.call(tenant, reqwest::Method::GET, path, None).await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().map_or(0, Vec::len);
            if items >= want && page["pending"] == false {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {items} of {want} events after 10 s: {page}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Open a live (SSE) route as `tenant`.
    pub async fn follow(&self, tenant: &ApiTenant, path: &str) -> reqwest::Response {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&tenant.token)
            .send()
            .await
            .expect("open stream");
        assert_eq!(response.status(), 200, "{path}");
        response
    }

    /// Poll an execution until it is terminal.
    pub async fn wait_terminal(&self, tenant: &ApiTenant, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self
                .call(
                    tenant,
                    reqwest::Method::GET,
                    &format!("/v1/executions/{id}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let state = body["state"].as_str().unwrap_or_default();
            if ["completed", "failed", "cancelled", "expired", "skipped"].contains(&state) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {id} not terminal after 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn response_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Worker settings for API tests: short polls, generous leases.
pub fn worker_config(slots: usize) -> WorkerConfig {
    WorkerConfig {
        slots,
        lease_ttl: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        sandbox: SandboxLimits {
            timeout: Duration::from_secs(10),
            memory_bytes: 64 << 20,
            ..SandboxLimits::default()
        },
        drain_timeout: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Read a live (SSE) response until it has sent `count` events named `name`;
/// returns the text read. Fails after 10 s without the next chunk.
pub async fn read_sse(response: reqwest::Response, name: &str, count: usize) -> String {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let marker = format!("event: {name}\n");
    while text.matches(&marker).count() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap_or_else(|_| panic!("{count} `{name}` events within 10 s; got: {text}"))
            .expect("stream open")
            .expect("stream chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}
