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
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::dial::{connect, http1, resolve, tls, Stream};
use super::http_usage::HttpUsage;
use super::imports::TaskImports;
use super::keep_alive::{KeepAlive, Kept, Origin, Sent as KeptSent};
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
    /// It went out on a connection kept open from an earlier request.
    pub reused_connection: bool,
}

/// What an attempt's requests came to.
#[derive(Debug, Clone, Default)]
pub struct HttpLog {
    pub exchanges: Vec<HttpExchange>,
    /// Requests past `MAX_EXCHANGES_KEPT`, not itemised.
    pub unlisted: u64,
    /// Usage counted and not yet reported (see `http_usage`), by
    /// dimension, for the attempt's end to report.
    pub usage: Vec<(String, u64)>,
}

/// What every run's requests share: each tenant's cap on open connections,
/// and the connections kept open between requests (`keep_alive`).
pub(super) struct Connections {
    caps: Mutex<std::collections::HashMap<uuid::Uuid, (u32, Arc<Semaphore>)>>,
    kept: Arc<KeepAlive>,
    /// Where each connection's task runs: the guest threads (see [`open`]).
    io: tokio::runtime::Handle,
}

impl Connections {
    /// `idle_timeout` zero opens a connection per request; `io` is the
    /// guest threads' runtime.
    pub(super) fn new(idle_timeout: Duration, io: tokio::runtime::Handle) -> Self {
        Self {
            caps: Mutex::default(),
            kept: KeepAlive::new(idle_timeout),
            io,
        }
    }

    fn for_tenant(&self, tenant: uuid::Uuid, cap: u32) -> Arc<Semaphore> {
        let mut caps = self.caps.lock().expect("connection caps");
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
    usage: HttpUsage,
    connections: Arc<Semaphore>,
    kept: Arc<KeepAlive>,
    io: tokio::runtime::Handle,
    log: Mutex<HttpLog>,
    /// Hands the guest's CPU turn on while it waits on the network.
    release_turn: Box<dyn Fn() + Send + Sync>,
}

impl Outbound {
    pub(super) fn new(
        grant: Arc<EffectiveGrant>,
        imports: Arc<dyn TaskImports>,
        connections: &Connections,
        release_turn: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        let cap = connections.for_tenant(grant.tenant.as_uuid(), grant.http_max_connections);
        Self {
            shared: Arc::new(Shared {
                grant,
                usage: HttpUsage::new(imports),
                connections: cap,
                kept: connections.kept.clone(),
                io: connections.io.clone(),
                log: Mutex::default(),
                release_turn,
            }),
        }
    }

    pub(super) fn take_log(&self) -> HttpLog {
        let mut log = std::mem::take(&mut *self.shared.log.lock().expect("http log"));
        log.usage = self.shared.usage.take();
        log
    }

    /// Report the usage counted so far, while the lease is held (see
    /// `http_usage`).
    pub(super) async fn settle_usage(&self) {
        self.shared.usage.settle().await;
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
        self.shared
            .usage
            .count_bytes(exchange.bytes_out, exchange.bytes_in);
        let outcome = if exchange.error.is_some() {
            "failed"
        } else {
            "ok"
        };
        metrics::counter!("flowfabric_guest_http_requests_total", "outcome" => outcome)
            .increment(1);
        metrics::counter!("flowfabric_guest_http_bytes_total", "direction" => "out")
            .increment(exchange.bytes_out);
        metrics::counter!("flowfabric_guest_http_bytes_total", "direction" => "in")
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
    let origin = Origin {
        tenant: shared.grant.tenant.as_uuid(),
        scheme: target.scheme,
        host: target.host.clone(),
        port: target.port,
    };
    match exchange(&shared, request, options, &target, &origin, &mut recorder).await {
        Ok((response, kept)) => {
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
                    reuse: Some((shared.kept.clone(), origin, kept)),
                }
                .boxed_unsync()
            });
            // The connection is driven by a task of its own (`open`), which
            // outlives the response when the connection is kept.
            let io: IoFuture = Box::new(async { Ok(()) });
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

/// Check, meter and send one request: on a kept connection to its origin
/// if there is one (see `keep_alive`), else on a new one.
async fn exchange(
    shared: &Shared,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    target: &Target,
    origin: &Origin,
    recorder: &mut Recorder,
) -> Result<(http::Response<hyper::body::Incoming>, Kept), HttpError> {
    let grant = &shared.grant;
    if !grant.allows_origin(target.scheme, &target.host, target.port) {
        return Err(HttpError::HttpRequestDenied);
    }
    let (connect_timeout, first_byte, _) = timeouts(grant, options);
    let mut request = outgoing(request, recorder)?;
    let kept = shared.kept.take(origin, |ip| grant.allows_ip(ip));
    let permit = match kept {
        Some(_) => None,
        None => Some(permit(shared, connect_timeout).await?),
    };
    shared.usage.count_request().await?;
    let (response, kept) = 'sent: {
        if let Some(mut kept) = kept {
            match kept.send(request, connect_timeout, first_byte).await? {
                KeptSent::Answered(response) => {
                    count_connection("reused");
                    recorder.exchange.reused_connection = true;
                    break 'sent (response, kept);
                }
                // The server closed it while it was idle; the request was
                // not sent, so it goes out on a new connection.
                KeptSent::Unsent(unsent) => request = unsent,
            }
        }
        let permit = match permit {
            Some(permit) => permit,
            None => self::permit(shared, connect_timeout).await?,
        };
        let mut kept = open(shared, target, connect_timeout, permit).await?;
        count_connection("opened");
        match kept.send(request, connect_timeout, first_byte).await? {
            KeptSent::Answered(response) => (response, kept),
            KeptSent::Unsent(_) => return Err(HttpError::ConnectionTerminated),
        }
    };
    recorder.exchange.status = Some(response.status().as_u16());
    if let Some(len) = declared_length(&response) {
        if len > grant.http_max_response_bytes {
            return Err(HttpError::HttpResponseBodySize(Some(len)));
        }
    }
    Ok((response, kept))
}

fn count_connection(how: &'static str) {
    metrics::counter!("flowfabric_guest_http_connections_total", "connection" => how).increment(1);
}

/// The request as it goes on the wire: its target as a path (the
/// connection is the origin's), its body's bytes counted as they are sent.
fn outgoing(
    mut request: http::Request<WasiBody>,
    recorder: &Recorder,
) -> Result<http::Request<WasiBody>, HttpError> {
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
    Ok(request.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counted.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed_unsync()
    }))
}

/// One of the tenant's connection permits; with none free, the tenant's
/// longest idle connection is closed to free one.
async fn permit(shared: &Shared, within: Duration) -> Result<OwnedSemaphorePermit, HttpError> {
    if let Ok(permit) = shared.connections.clone().try_acquire_owned() {
        return Ok(permit);
    }
    shared.kept.close_oldest(shared.grant.tenant.as_uuid());
    tokio::time::timeout(within, shared.connections.clone().acquire_owned())
        .await
        .map_err(|_| HttpError::ConnectionLimitReached)?
        .map_err(|_| HttpError::ConnectionLimitReached)
}

/// A new connection to a checked address of `target`, driven by a task of
/// its own that holds the tenant's permit until the connection closes.
///
/// That task runs on the guest threads, wherever the request came from:
/// reading and writing a guest's connection (parsing its responses,
/// decrypting TLS) is the guest's work, at the guest threads' priority, not
/// the host's; and a guest that runs there (any that ran past its first
/// slice, see `placement`) then waits on a task of its own runtime, where
/// one on the host's runtime cost it two wake-ups across runtimes a request
/// (`bench http`: 1.18–1.41× wasmtime alone against 1.02–1.05).
async fn open(
    shared: &Shared,
    target: &Target,
    within: Duration,
    permit: OwnedSemaphorePermit,
) -> Result<Kept, HttpError> {
    let grant = &shared.grant;
    let addrs = resolve(target, within).await?;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| grant.allows_ip(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(HttpError::DestinationIpProhibited);
    }
    let tcp = connect(&allowed, within).await?;
    let peer = tcp
        .peer_addr()
        .map_err(|_| HttpError::ConnectionTerminated)?;
    let stream: Box<dyn Stream> = if target.scheme == "https" {
        Box::new(tls(tcp, &target.host, within).await?)
    } else {
        Box::new(tcp)
    };
    let sender = http1(stream, within, permit, &shared.io).await?;
    Ok(Kept { sender, peer })
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
    /// The connection, kept once the body was read to its end; dropped
    /// (and so closed) with the body otherwise.
    reuse: Option<(Arc<KeepAlive>, Origin, Kept)>,
}

impl MeteredBody {
    /// Record the failure; the connection is not kept after one.
    fn failed(&mut self, e: &HttpError) {
        self.recorder.fail(e);
        self.reuse = None;
    }
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
                        this.failed(&e);
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                let deadline = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = HttpError::from(e);
                this.failed(&e);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some((pool, origin, kept)) = this.reuse.take() {
                    pool.put(origin, kept);
                }
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let e = HttpError::ConnectionReadTimeout;
                    this.failed(&e);
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
