//! The HTTP API through real HTTP on loopback: a real server, a real Postgres,
//! real components. The tenant's path (`user_path`) runs on SQLite too.

#[macro_use]
extern crate flowfabric_tests;

mod budgets;
mod concurrency;
mod dashboard;
mod errors;
mod fairness;
mod flows;
mod isolation;
mod listen;
mod openapi;
mod operator;
mod streams;
mod user_path;

use reqwest::Method;
use serde_json::{json, Value};

use flowfabric_tests::server::{ApiTenant, TestServer};
use flowfabric_tests::Store;

/// A server with one tenant that has `echo` and `testkit` uploaded.
pub async fn setup() -> (TestServer, ApiTenant) {
    setup_on(Store::Postgres).await
}

/// [`setup`] on either backend.
pub async fn setup_on(store: Store) -> (TestServer, ApiTenant) {
    let server = TestServer::start_on(store).await;
    let tenant = server.tenant("acme").await;
    server.upload(&tenant, "echo", "echo").await;
    server.upload(&tenant, "testkit", "testkit").await;
    (server, tenant)
}

/// A dashboard session cookie for the tenant (`name=value`).
pub async fn sign_in(server: &TestServer, tenant: &ApiTenant) -> String {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url("/ui/login"))
        .form(&[("token", tenant.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// A GET of a dashboard route under the session cookie `session`.
pub async fn ui_get(server: &TestServer, session: &str, path: &str) -> reqwest::Response {
    server
        .http
        .get(server.url(path))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
}

pub async fn submit(server: &TestServer, tenant: &ApiTenant, kind: &str, input: Value) -> String {
    create(server, tenant, json!({ "kind": kind, "input": input })).await
}

/// Submit with raw text as the input (the testkit guest reads commands as text).
pub async fn submit_text(
    server: &TestServer,
    tenant: &ApiTenant,
    kind: &str,
    text: &str,
) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    create(
        server,
        tenant,
        json!({ "kind": kind, "input_base64": encoded }),
    )
    .await
}

/// `POST /v1/executions`, which must create; returns the new id.
async fn create(server: &TestServer, tenant: &ApiTenant, body: Value) -> String {
    let (status, body) = server
        .call(tenant, Method::POST, "/v1/executions", Some(body))
        .await;
    assert_eq!(status, 201, "{body}");
    body["execution_id"]
        .as_str()
        .expect("execution id")
        .to_owned()
}

/// Parse a finished Server-Sent Events body into (event, data) pairs.
pub fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some((event?, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}
