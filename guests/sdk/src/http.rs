//! Outbound HTTP through `wasi:http`, for components granted an origin.
//!
//! ```ignore
//! let reply = flowfabric_guest::http::get("https://api.example.com/v1/items")?;
//! assert_eq!(reply.status, 200);
//! ```
//!
//! Each request is checked by the host against the component's grant; a
//! refused one returns [`HttpError`] with the `wasi:http` error code (for
//! example `HttpRequestDenied` for an origin the grant does not list).
//! Redirects are returned as they are, for the guest to follow (each
//! follow-up request is checked again).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed: the host's `wasi:http` error code, or a URL this
/// helper could not use.
#[derive(Debug, Clone)]
pub enum HttpError {
    Code(ErrorCode),
    BadUrl(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => {
                let code = format!("{code:?}");
                f.write_str(code.trim_start_matches("ErrorCode::"))
            }
            Self::BadUrl(why) => write!(f, "bad url: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::TaskError {
    fn from(e: HttpError) -> Self {
        crate::TaskError::transient(e.to_string())
    }
}

pub fn get(url: &str) -> Result<Response, HttpError> {
    request("GET", url, &[], &[])
}

pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Response, HttpError> {
    request("POST", url, &[("content-type", content_type)], body)
}

/// Send one request and read the whole response.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::BadUrl(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| HttpError::BadUrl(what.to_owned()));
    set(request.set_method(&method), "method")?;
    set(request.set_scheme(Some(&scheme)), "scheme")?;
    set(request.set_authority(Some(authority)), "authority")?;
    set(request.set_path_with_query(Some(path)), "path")?;
    // A request without a body never opens one: the host then sends it
    // whole, with no body stream to wait on.
    let outgoing = if body.is_empty() {
        None
    } else {
        Some(request.body().expect("the body is taken once"))
    };
    let future = outgoing_handler::handle(request, None).map_err(HttpError::Code)?;
    if let Some(outgoing) = outgoing {
        write_body(outgoing, body)?;
    }
    future.subscribe().block();
    let response = future
        .get()
        .expect("ready after block")
        .expect("taken once")
        .map_err(HttpError::Code)?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().expect("the body is taken once");
    let body = read_body(&incoming)?;
    drop(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn write_body(outgoing: OutgoingBody, body: &[u8]) -> Result<(), HttpError> {
    {
        let stream = outgoing.write().expect("the stream is taken once");
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(HttpError::Code)
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming.stream().expect("the stream is taken once");
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}

/// A failed body stream: the host's error code when it gave one.
fn stream_error(e: StreamError) -> HttpError {
    match e {
        StreamError::LastOperationFailed(err) => match wasip2::http::types::http_error_code(&err) {
            Some(code) => HttpError::Code(code),
            None => HttpError::Code(ErrorCode::InternalError(Some(err.to_debug_string()))),
        },
        StreamError::Closed => HttpError::Code(ErrorCode::HttpResponseIncomplete),
    }
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::BadUrl(format!("`{url}` has no scheme")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::BadUrl(format!("`{url}` has no host")));
    }
    Ok((scheme, authority, path))
}
