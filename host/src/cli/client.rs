//! The CLI's HTTP client: one place that turns API answers into values and
//! API errors (`{error, kind}`) into one-line messages.

use std::time::Duration;

use anyhow::{anyhow, Context};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use flowfabric::api::error::ErrorBody;

/// Where the API is and who is calling; shared by every remote command.
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// Base URL of the API.
    #[arg(
        long,
        env = "FLOWFABRIC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The tenant's API key.
    #[arg(
        long,
        env = "FLOWFABRIC_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub api_key: Option<String>,
    /// The server's admin token (tenant commands).
    #[arg(
        long,
        env = "FLOWFABRIC_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// Print JSON for scripts instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A Server-Sent Event: its name and JSON data.
pub type SseEvent = (String, Value);

impl ApiClient {
    /// A client acting as the tenant of `--api-key`.
    pub fn tenant(connection: &Connection) -> anyhow::Result<Self> {
        let token = connection
            .api_key
            .clone()
            .context("no API key: pass --api-key or set FLOWFABRIC_API_KEY")?;
        Self::new(connection, token)
    }

    /// A client acting as the operator (`--admin-token`).
    pub fn admin(connection: &Connection) -> anyhow::Result<Self> {
        let token = connection
            .admin_token
            .clone()
            .context("no admin token: pass --admin-token or set FLOWFABRIC_ADMIN_TOKEN")?;
        Self::new(connection, token)
    }

    fn new(connection: &Connection, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: connection.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.finish(request).await
    }

    /// Send `body` (if any) and read the answer as the API's own type.
    pub async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_value).transpose()?;
        decode("an answer", self.json(method, path, body.as_ref()).await?)
    }

    /// A GET with a query, read as the API's own type.
    pub async fn get_typed<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        decode("an answer", self.get_with_query(path, query).await?)
    }

    pub async fn get_with_query(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        self.finish(self.request(Method::GET, path).query(query))
            .await
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let request = self
            .request(Method::POST, path)
            .header("content-type", "application/wasm")
            .body(bytes);
        self.finish(request).await
    }

    async fn finish(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = self.checked(request).await?;
        let text = response.text().await.context("reading the response")?;
        if text.is_empty() {
            // 204 No Content.
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the API answered with something other than JSON")
    }

    async fn checked(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the API at {}: {}", self.base, root_cause(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        Err(match response.json::<ErrorBody>().await {
            Ok(ErrorBody { error, kind, .. }) => {
                anyhow!("{error} ({kind}, HTTP {})", status.as_u16())
            }
            Err(_) => anyhow!("the API answered HTTP {status}"),
        })
    }

    /// Follow a Server-Sent Events route until the server closes it.
    pub async fn events(
        &self,
        path: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<SseEvent>>> {
        let response = self.checked(self.request(Method::GET, path)).await?;
        Ok(response.bytes_stream().eventsource().map(|event| {
            let event = event.map_err(|e| anyhow!("reading the event stream: {e}"))?;
            let data = serde_json::from_str(&event.data).unwrap_or(Value::String(event.data));
            Ok((event.event, data))
        }))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `value` as one URL path segment: a kind may contain `/` (and a name the
/// server will refuse may contain anything), which must not start a new
/// segment or a query.
/// `value` as the API's type for `what` the server sent (an answer, an
/// event); another shape is a one-line error.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow!("the server sent {what} of an unexpected shape: {e}"))
}

/// The name a value has on the wire: an enum's spelling, or a tagged
/// object's `type`.
pub fn wire_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value).unwrap_or_default() {
        Value::String(name) => name,
        Value::Object(fields) => fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        other => other.to_string(),
    }
}

/// No request body, for [`ApiClient::typed`].
pub const NO_BODY: Option<&()> = None;

pub fn path_segment(value: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    /// Everything but what RFC 3986 leaves unreserved.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(value, SEGMENT).to_string()
}

#[cfg(test)]
mod path_tests {
    #[test]
    fn a_kind_with_a_slash_stays_one_segment() {
        assert_eq!(super::path_segment("a/b"), "a%2Fb");
        assert_eq!(super::path_segment("echo-1.2_x:y"), "echo-1.2_x%3Ay");
        assert_eq!(super::path_segment("a?b#c d"), "a%3Fb%23c%20d");
    }
}
