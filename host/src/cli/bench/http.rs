//! `flowfabric bench http`: what a guest's outbound request costs through
//! the host's sender, against the same request made by the host itself with
//! the same HTTP client (hyper, a fresh connection per request, as the
//! sender makes them), in one run against one loopback server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};

use flowfabric::model::{
    AttemptCapabilities, CapabilityCeiling, ComponentGrant, EffectiveGrant, TenantId,
};
use flowfabric::runtime::{CancelFlag, Guest, RunResult, Runtime, RuntimeConfig, SandboxLimits};

use super::wasm::NoImports;
use super::write_json;

#[derive(clap::Args)]
pub struct HttpBench {
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Requests per measurement.
    #[arg(long, default_value_t = 2_000)]
    requests: u32,
    /// Response body size.
    #[arg(long, default_value_t = 1_024)]
    body_bytes: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Summary {
    host_us_per_request: f64,
    guest_us_per_request: f64,
    added_us_per_request: f64,
    guest_over_host: f64,
}

pub async fn run(args: HttpBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests >= 10, "--requests: at least 10");
    let wasm = std::fs::read(args.guests.join("testkit.wasm"))
        .context("reading testkit.wasm (build the guests first)")?;
    let port = serve(args.body_bytes).await?;
    let url = format!("http://127.0.0.1:{port}/body");
    // Warm both paths, then alternate three rounds and keep each side's best.
    host_round(&url, 50).await?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    guest_round(&runtime, &wasm, &url, port, 50).await?;
    let (mut host, mut guest) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        host = host.min(host_round(&url, args.requests).await?);
        guest = guest.min(guest_round(&runtime, &wasm, &url, port, args.requests).await?);
    }
    println!(
        "GET of a {} B body over loopback, a fresh connection each, {} requests (best of 3):",
        args.body_bytes, args.requests
    );
    println!("  host, hyper directly     {host:>8.1} µs/request");
    println!("  guest, through the host  {guest:>8.1} µs/request");
    println!(
        "  guest / host: {:.2}  (the host path adds {:.1} µs/request)",
        guest / host,
        guest - host
    );
    write_json(
        args.json_out.as_deref(),
        &Summary {
            host_us_per_request: host,
            guest_us_per_request: guest,
            added_us_per_request: guest - host,
            guest_over_host: guest / host,
        },
    )
}

/// A loopback server answering `/body` with `bytes` bytes.
async fn serve(bytes: usize) -> anyhow::Result<u16> {
    let body = vec![b'x'; bytes];
    let app = axum::Router::new().route(
        "/body",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

/// µs per request made by the host with hyper, as the sender makes them.
async fn host_round(url: &str, requests: u32) -> anyhow::Result<f64> {
    let uri: http::Uri = url.parse()?;
    let addr = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80)
    );
    let started = Instant::now();
    for _ in 0..requests {
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(tcp))
                .await?;
        tokio::spawn(conn);
        let request = http::Request::get(uri.path())
            .header(
                http::header::HOST,
                uri.authority().map_or("", |a| a.as_str()),
            )
            .body(Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(!body.is_empty(), "empty body");
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(requests))
}

/// µs per request a guest makes (`http-n`), in one run.
async fn guest_round(
    runtime: &Runtime,
    wasm: &[u8],
    url: &str,
    port: u16,
    requests: u32,
) -> anyhow::Result<f64> {
    let digest = runtime.register(wasm).await?;
    let component = runtime
        .prepare(&digest, || async { Ok::<_, String>(wasm.to_vec()) })
        .await?;
    let tenant = TenantId::new();
    let ceiling = CapabilityCeiling {
        http_allow: vec!["http://127.0.0.1:*".into()],
        http_allow_cidrs: vec!["127.0.0.0/8".into()],
        http_max_connections: Some(64),
        ..Default::default()
    };
    let grant = ComponentGrant {
        http: vec![format!("http://127.0.0.1:{port}")],
        ..Default::default()
    };
    let guest = Guest {
        imports: Arc::new(NoImports),
        owner: tenant.as_uuid(),
        capabilities: Arc::new(AttemptCapabilities {
            grant: EffectiveGrant::resolve(tenant, &ceiling, &grant),
            config: Vec::new(),
        }),
    };
    let input = format!("http-n:{requests}:{url}");
    let limits = SandboxLimits {
        timeout: std::time::Duration::from_secs(600),
        ..SandboxLimits::default()
    };
    let started = Instant::now();
    let outcome = runtime
        .run(
            &component,
            guest,
            input.as_bytes(),
            &limits,
            CancelFlag::default(),
        )
        .await;
    let elapsed = started.elapsed();
    match outcome.result {
        RunResult::Completed(out) if out == format!("ok={requests} error=none").as_bytes() => {}
        other => anyhow::bail!("the guest's requests failed: {other:?}"),
    }
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(requests))
}
