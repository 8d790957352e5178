//! Reaching an address the outbound module has already checked: a DNS
//! lookup with a deadline, a TCP connection to the first checked address
//! that answers, and TLS against the system's trusted roots.
//!
//! Nothing here decides whether a request may go out; that is `outbound`'s
//! job. Each step has its own deadline and maps its failure to the
//! `wasi:http` error code a guest can act on.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::outbound::Target;

pub(super) async fn resolve(
    target: &Target,
    within: Duration,
) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let found = tokio::time::timeout(
        within,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| HttpError::DnsTimeout)?
    .map_err(|_| HttpError::DnsError {
        rcode: Some("address lookup failed".into()),
        info_code: None,
    })?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    Ok(addrs)
}

/// Connect to the first of the checked addresses that answers.
pub(super) async fn connect(
    addrs: &[SocketAddr],
    within: Duration,
) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(within, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(_)) => last = HttpError::ConnectionRefused,
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// TLS with the system's trusted roots, loaded once per process.
pub(super) async fn tls(
    tcp: TcpStream,
    host: &str,
    within: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?,
    };
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    tokio::time::timeout(within, connector.connect(name, tcp))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if certificate {
                HttpError::TlsCertificateError
            } else {
                HttpError::TlsProtocolError
            }
        })
}

/// HTTP/1.1 over `stream`, the connection driven by a task of its own on
/// `io` that holds the tenant's connection `permit` until the connection
/// closes (when the server closes it, or its sender is dropped with nothing
/// in flight).
pub(super) async fn http1(
    stream: Box<dyn Stream>,
    within: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
    io: &tokio::runtime::Handle,
) -> Result<SendRequest<WasiBody>, HttpError> {
    let (sender, conn) = tokio::time::timeout(
        within,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(HttpError::from)?;
    io.spawn(async move {
        let _permit = permit;
        // How it ended reaches the request or the body being read.
        let _ = conn.await;
    });
    Ok(sender)
}
