//! Outbound HTTP: every `wasi:http/outgoing-handler` request a guest makes is
//! sent by this module, never by wasmtime's default sender, so that each one
//! is checked against the attempt's grant where it happens.
//!
//! Why it is built this way:
//! * the origin must be allowed by both the component's grant and the
//!   tenant's ceiling, checked per request (a redirect is a new request the
//!   guest makes, so it is checked again);
//! * the host name is resolved here, every address is checked (loopback,
//!   private, link-local — where cloud metadata lives — and the rest are
//!   refused unless the operator allowed the range), and the connection goes
//!   to an address that was checked: there is no second lookup for DNS
//!   rebinding to slip through;
//! * timeouts, the response size and the tenant's concurrent connections are
//!   capped by the grant and the ceiling, whatever the guest asks for;
//! * each request is metered (`http_requests` before it is sent, so a hard
//!   budget stops it) and recorded as an [`HttpExchange`] — method, origin,
//!   status, bytes, duration; never the path, headers or bodies, which may
//!   carry credentials.
//!
//! A refusal reaches the guest as a `wasi:http` error code
//! (`HTTP-request-denied`, `destination-IP-prohibited`, …), never a trap.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::dial::{connect, resolve, tls, Stream};
use super::imports::TaskImports;
use super::UsageResult;
use crate::model::EffectiveGrant;

/// Exchanges one attempt keeps for its log; later ones are counted only.
const MAX_EXCHANGES_KEPT: usize = 1_000;

/// One request a guest made, as the attempt's log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpExchange {
    pub method: String,
    /// `scheme://host:port`; never the path or query.
    pub origin: String,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration: Duration,
    /// Why it was refused or failed, if it was.
    pub error: Option<String>,
}

/// What an attempt's requests came to.
#[derive(Debug, Clone, Default)]
pub struct HttpLog {
    pub exchanges: Vec<HttpExchange>,
    /// Requests past `MAX_EXCHANGES_KEPT`, not itemised.
    pub unlisted: u64,
}

impl HttpLog {
    pub fn bytes(&self) -> (u64, u64) {
        self.exchanges
            .iter()
            .fold((0, 0), |(o, i), e| (o + e.bytes_out, i + e.bytes_in))
    }
}

/// The per-tenant caps on open connections, shared by every run.
#[derive(Default)]
pub(super) struct ConnectionCaps(
    Mutex<std::collections::HashMap<uuid::Uuid, (u32, Arc<Semaphore>)>>,
);

impl ConnectionCaps {
    fn for_tenant(&self, tenant: uuid::Uuid, cap: u32) -> Arc<Semaphore> {
        let mut caps = self.0.lock().expect("connection caps");
        let entry = caps
            .entry(tenant)
            .or_insert_with(|| (cap, Arc::new(Semaphore::new(cap as usize))));
        if entry.0 != cap {
            // A changed ceiling: new connections count against the new cap;
            // those already open finish under the old one.
            *entry = (cap, Arc::new(Semaphore::new(cap as usize)));
        }
        entry.1.clone()
    }
}

/// The `wasi:http` hooks of one run.
pub(super) struct Outbound {
    shared: Arc<Shared>,
}

struct Shared {
    grant: Arc<EffectiveGrant>,
    imports: Arc<dyn TaskImports>,
    connections: Arc<Semaphore>,
    log: Mutex<HttpLog>,
    /// Hands the guest's CPU turn on while it waits on the network.
    release_turn: Box<dyn Fn() + Send + Sync>,
}

impl Outbound {
    pub(super) fn new(
        grant: Arc<EffectiveGrant>,
        imports: Arc<dyn TaskImports>,
        caps: &ConnectionCaps,
        release_turn: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        let connections = caps.for_tenant(grant.tenant.as_uuid(), grant.http_max_connections);
        Self {
            shared: Arc::new(Shared {
                grant,
                imports,
                connections,
                log: Mutex::default(),
                release_turn,
            }),
        }
    }

    pub(super) fn take_log(&self) -> HttpLog {
        std::mem::take(&mut *self.shared.log.lock().expect("http log"))
    }
}

/// What drives a connection after the response head arrived.
type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

type Sent = (http::Response<WasiBody>, IoFuture);

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, HttpError>> + Send> {
        let shared = self.shared.clone();
        Box::new(async move {
            metrics::counter!("flowfabric_host_calls_total", "function" => "http_request")
                .increment(1);
            (shared.release_turn)();
            let span = tracing::debug_span!("host_call", name = "http_request");
            tracing::Instrument::instrument(send(shared, request, options), span).await
        })
    }
}

/// Where a request goes.
pub(super) struct Target {
    pub(super) scheme: &'static str,
    pub(super) host: String,
    pub(super) port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Result<Self, HttpError> {
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(HttpError::HttpProtocolError),
        };
        let host = uri
            .host()
            .ok_or(HttpError::HttpRequestUriInvalid)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        Ok(Self { scheme, host, port })
    }

    fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// One exchange being recorded; it is logged when dropped, with what it got
/// to by then.
struct Recorder {
    shared: Arc<Shared>,
    exchange: HttpExchange,
    started: Instant,
    bytes_out: Arc<AtomicU64>,
}

impl Recorder {
    fn fail(&mut self, e: &HttpError) {
        if self.exchange.error.is_none() {
            self.exchange.error = Some(describe(e));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut exchange = std::mem::take(&mut self.exchange);
        exchange.duration = self.started.elapsed();
        exchange.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        let outcome = if exchange.error.is_some() {
            "failed"
        } else {
            "ok"
        };
        metrics::counter!("flowfabric_http_requests_total", "outcome" => outcome).increment(1);
        metrics::counter!("flowfabric_http_bytes_total", "direction" => "out")
            .increment(exchange.bytes_out);
        metrics::counter!("flowfabric_http_bytes_total", "direction" => "in")
            .increment(exchange.bytes_in);
        let mut log = self.shared.log.lock().expect("http log");
        if log.exchanges.len() < MAX_EXCHANGES_KEPT {
            log.exchanges.push(exchange);
        } else {
            log.unlisted += 1;
        }
    }
}

async fn send(
    shared: Arc<Shared>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, HttpError> {
    let target = Target::of(request.uri())?;
    let mut recorder = Recorder {
        shared: shared.clone(),
        exchange: HttpExchange {
            method: request.method().to_string(),
            origin: target.origin(),
            ..HttpExchange::default()
        },
        started: Instant::now(),
        bytes_out: Arc::default(),
    };
    match exchange(&shared, request, options, &target, &mut recorder).await {
        Ok((response, conn)) => {
            let limit = shared.grant.http_max_response_bytes;
            let between = timeouts(&shared.grant, options).2;
            let body = response.map(|incoming| {
                MeteredBody {
                    incoming,
                    limit,
                    between,
                    idle: Box::pin(tokio::time::sleep(between)),
                    bytes_in: 0,
                    recorder,
                }
                .boxed_unsync()
            });
            let io = conn.into_io();
            Ok((body, io))
        }
        Err(e) => {
            recorder.fail(&e);
            Err(e)
        }
    }
}

/// Connect, first-byte and between-bytes timeouts: what the guest asked
/// for, capped by the grant.
fn timeouts(
    grant: &EffectiveGrant,
    options: Option<RequestOptions>,
) -> (Duration, Duration, Duration) {
    let cap = Duration::from_millis(grant.http_timeout_ms);
    let pick = |asked: Option<Duration>| {
        asked
            .map_or(cap, |d| d.min(cap))
            .max(Duration::from_millis(1))
    };
    let o = options.unwrap_or_default();
    (
        pick(o.connect_timeout),
        pick(o.first_byte_timeout),
        pick(o.between_bytes_timeout),
    )
}

async fn exchange(
    shared: &Shared,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    target: &Target,
    recorder: &mut Recorder,
) -> Result<(http::Response<hyper::body::Incoming>, Connection), HttpError> {
    let grant = &shared.grant;
    if !grant.allows_origin(target.scheme, &target.host, target.port) {
        return Err(HttpError::HttpRequestDenied);
    }
    let (connect_timeout, first_byte, _) = timeouts(grant, options);
    let permit = tokio::time::timeout(connect_timeout, shared.connections.clone().acquire_owned())
        .await
        .map_err(|_| HttpError::ConnectionLimitReached)?
        .map_err(|_| HttpError::ConnectionLimitReached)?;
    meter_request(shared).await?;
    let addrs = resolve(target, connect_timeout).await?;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| grant.allows_ip(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(HttpError::DestinationIpProhibited);
    }
    let tcp = connect(&allowed, connect_timeout).await?;
    let stream: Box<dyn Stream> = if target.scheme == "https" {
        Box::new(tls(tcp, &target.host, connect_timeout).await?)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(HttpError::from)?;

    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let counted = recorder.bytes_out.clone();
    let request = request.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counted.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
    });
    let mut conn = Connection::new(conn, permit);
    let response = tokio::time::timeout(first_byte, conn.alongside(sender.send_request(request)))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    recorder.exchange.status = Some(response.status().as_u16());
    if let Some(len) = declared_length(&response) {
        if len > grant.http_max_response_bytes {
            return Err(HttpError::HttpResponseBodySize(Some(len)));
        }
    }
    Ok((response, conn))
}

/// Count the request against the budgets covering the execution before it
/// is sent: a hard limit refuses it (and ends the attempt, as the budget
/// says), a lost lease refuses it too.
async fn meter_request(shared: &Shared) -> Result<(), HttpError> {
    match shared
        .imports
        .report_usage("http_requests".to_owned(), 1, None)
        .await
    {
        Ok(UsageResult::HardBreach(b)) => Err(HttpError::InternalError(Some(format!(
            "budget exceeded: {} is at {} of {}",
            b.dimension, b.current, b.limit
        )))),
        Ok(_) => Ok(()),
        Err(e) => Err(HttpError::InternalError(Some(format!(
            "the request could not be metered: {e:?}"
        )))),
    }
}

/// A connection being driven, holding the tenant's connection permit until
/// it closes (when the response body is read or dropped).
///
/// It is driven alongside the request in the same task until the response
/// head arrives, then handed on as the exchange's I/O future, which wasmtime
/// runs on a task of its own: one task fewer than spawning the connection
/// first, and no hop between tasks to get the head.
struct Connection {
    conn: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
    permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new<C>(conn: C, permit: OwnedSemaphorePermit) -> Self
    where
        C: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        Self {
            conn: Some(Box::pin(conn)),
            permit,
        }
    }

    /// Wait for `request` while driving the connection. A connection that
    /// ends first ends the request with it.
    async fn alongside<R>(
        &mut self,
        request: impl Future<Output = hyper::Result<R>>,
    ) -> Result<R, HttpError> {
        let mut request = std::pin::pin!(request);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = request.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(HttpError::from));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Err(HttpError::ConnectionTerminated));
            };
            match conn.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(ended) => {
                    self.conn = None;
                    // The request learns of the ended connection at once.
                    match request.as_mut().poll(cx) {
                        Poll::Ready(r) => Poll::Ready(r.map_err(HttpError::from)),
                        Poll::Pending => Poll::Ready(Err(ended
                            .err()
                            .map_or(HttpError::ConnectionTerminated, HttpError::from))),
                    }
                }
            }
        })
        .await
    }

    /// What is left of the connection, to drive while the guest reads.
    fn into_io(self) -> IoFuture {
        Box::new(async move {
            let _permit = self.permit;
            match self.conn {
                Some(conn) => conn.await.map_err(HttpError::from),
                None => Ok(()),
            }
        })
    }
}

fn declared_length<B>(response: &http::Response<B>) -> Option<u64> {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The response body as the guest reads it: cut off past the size cap,
/// failed when the server goes quiet for longer than the between-bytes
/// timeout, and counted into the exchange's record.
struct MeteredBody {
    incoming: hyper::body::Incoming,
    limit: u64,
    between: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    bytes_in: u64,
    recorder: Recorder,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_in += data.len() as u64;
                    this.recorder.exchange.bytes_in = this.bytes_in.min(this.limit);
                    if this.bytes_in > this.limit {
                        let e = HttpError::HttpResponseBodySize(Some(this.limit));
                        this.recorder.fail(&e);
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                let deadline = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = HttpError::from(e);
                this.recorder.fail(&e);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let e = HttpError::ConnectionReadTimeout;
                    this.recorder.fail(&e);
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// A refusal or failure in words for the attempt's log: the error code's
/// name, never anything the server or the guest sent.
fn describe(e: &HttpError) -> String {
    match e {
        HttpError::HttpRequestDenied => "denied: the origin is not granted".into(),
        HttpError::DestinationIpProhibited => {
            "denied: the address is not public and no allowed range covers it".into()
        }
        HttpError::HttpResponseBodySize(Some(n)) => format!("response body over {n} bytes"),
        HttpError::InternalError(Some(m)) => m.clone(),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("error")
            .to_owned(),
    }
}
