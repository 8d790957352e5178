//! `flowfabric bench http`: what a guest's outbound request costs through
//! the host's sender, against the same request made by the host itself with
//! the same HTTP client (hyper), in one run against one loopback server.
//! Both sides keep their connection open between requests, as the sender
//! does by default; `--fresh-connections` opens one per request on both
//! sides (the sender with keep-alive off).
//!
//! The Rust guest's row is the host path's own cost: the SDK is a thin
//! layer over `wasi:http`. The JS (`fetch`) and Python rows add what each
//! language's HTTP layer costs on top; they are measured only when their
//! guests are built (`scripts/build-guests.sh`).
//!
//! Each guest's requests are also made by the same component run by
//! wasmtime alone, its `wasi:http` requests sent as they are on a kept
//! connection, with nothing of ours around them (`Runtime::baseline_sending_http`):
//! what is left between that and the host's own request is wasmtime's
//! `wasi:http` and the guest's own HTTP code, and between ours and it, our
//! sender's work (checks, meter, log, fair turns).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};

use flowfabric::model::{
    AttemptCapabilities, CapabilityCeiling, ComponentGrant, EffectiveGrant, TenantId,
};
use flowfabric::runtime::{
    Baseline, CancelFlag, Guest, Prepared, RunResult, Runtime, RuntimeConfig, SandboxLimits,
};

use super::wasm::NoImports;
use super::{median, write_json};

/// Rounds, each a host batch then each guest's batch; a guest's figures are
/// the medians over rounds of its batch against the host batch just before
/// it. Short rounds, paired, cancel what drifts during a run (on loopback,
/// the connections waiting out TIME_WAIT pile up and slow every `connect`).
///
/// A guest's batch is one run of the guest making the round's requests; the
/// run's own cost (instantiate, start, tear down: what `bench languages`
/// measures) is taken out by a run that makes none, just before it, so a
/// request's figure is what one more request costs, whatever the round's
/// size. The whole run divided by its requests is reported beside it.
const ROUNDS: u32 = 15;

#[derive(clap::Args)]
pub struct HttpBench {
    /// Where the built Rust guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Where the JS and Python guests are (`js.wasm`, `python.wasm`).
    #[arg(long, default_value = "guests/target/polyglot")]
    polyglot: PathBuf,
    /// Requests per path, split over the rounds.
    #[arg(long, default_value_t = 3_000)]
    requests: u32,
    /// Response body size.
    #[arg(long, default_value_t = 1_024)]
    body_bytes: usize,
    /// A new connection for every request, on both sides.
    #[arg(long)]
    fresh_connections: bool,
    /// Also run the Rust guest's requests through a worker pool on a
    /// scratch database of this Postgres server and on a fresh SQLite file,
    /// without and with a budget on `http_requests` (the bench creates and
    /// drops its own database).
    #[arg(long)]
    database_url: Option<String>,
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
    /// The Rust guest's run that made no request, and its whole runs per
    /// request (see [`ROUNDS`]).
    guest_run_without_requests_us: f64,
    guest_whole_run_us_per_request: f64,
    /// The Rust guest's request run by wasmtime alone, and ours against it.
    guest_alone_us_per_request: f64,
    guest_alone_over_host: f64,
    guest_over_alone: f64,
    /// The interpreted guests' rows, by language.
    languages: Vec<LanguageRow>,
    /// With `--database-url`: the Rust guest through a worker.
    worker: Vec<super::http_worker::WorkerRow>,
}

#[derive(serde::Serialize)]
struct LanguageRow {
    language: &'static str,
    us_per_request: f64,
    added_us_per_request: f64,
    over_host: f64,
    /// A run that makes no request: what the run itself costs.
    run_without_requests_us: f64,
    /// The whole run (its own cost included) divided by its requests.
    whole_run_us_per_request: f64,
    /// The same guest's request run by wasmtime alone, sent as it is.
    alone_us_per_request: f64,
    alone_added_us_per_request: f64,
    alone_over_host: f64,
    /// Ours against wasmtime alone, round by round.
    over_alone: f64,
}

/// A guest that makes the bench's requests, and its rounds.
struct Contender {
    language: &'static str,
    component: Prepared,
    /// µs per request in each round, the run's own cost taken out.
    rounds: Vec<f64>,
    /// Each round against the host batch before it: (added µs, ratio).
    paired: Vec<(f64, f64)>,
    /// µs of each round's run that made no request.
    empty_runs: Vec<f64>,
    /// µs per request in each round, the run's own cost included.
    whole: Vec<f64>,
    /// The component run by wasmtime alone, and its rounds as `rounds`
    /// and `paired` are.
    alone: Baseline,
    alone_rounds: Vec<f64>,
    alone_paired: Vec<(f64, f64)>,
    /// Each round's request through our sender against wasmtime alone's.
    over_alone: Vec<f64>,
}

impl Contender {
    fn row(&self) -> LanguageRow {
        LanguageRow {
            language: self.language,
            us_per_request: median(self.rounds.clone()),
            added_us_per_request: median(self.paired.iter().map(|p| p.0).collect()),
            over_host: median(self.paired.iter().map(|p| p.1).collect()),
            run_without_requests_us: median(self.empty_runs.clone()),
            whole_run_us_per_request: median(self.whole.clone()),
            alone_us_per_request: median(self.alone_rounds.clone()),
            alone_added_us_per_request: median(self.alone_paired.iter().map(|p| p.0).collect()),
            alone_over_host: median(self.alone_paired.iter().map(|p| p.1).collect()),
            over_alone: median(self.over_alone.clone()),
        }
    }
}

pub async fn run(args: HttpBench) -> anyhow::Result<()> {
    let per_round = args.requests / ROUNDS;
    anyhow::ensure!(per_round >= 10, "--requests: at least {}", 10 * ROUNDS);
    let fresh = args.fresh_connections;
    let runtime = Runtime::new(RuntimeConfig {
        http_idle_timeout: if fresh {
            std::time::Duration::ZERO
        } else {
            flowfabric::runtime::DEFAULT_HTTP_IDLE_TIMEOUT
        },
        ..RuntimeConfig::default()
    })?;
    let mut contenders = vec![contender(
        &runtime,
        "rust",
        prepare(&runtime, &args.guests.join("testkit.wasm"))
            .await
            .context("testkit.wasm (build the guests first)")?,
    )?];
    for language in ["js", "python"] {
        let path = args.polyglot.join(format!("{language}.wasm"));
        if path.exists() {
            contenders.push(contender(
                &runtime,
                language,
                prepare(&runtime, &path).await?,
            )?);
        } else {
            println!("({language}: {} not built, skipped)", path.display());
        }
    }
    let port = serve(args.body_bytes).await?;
    let url = format!("http://127.0.0.1:{port}/body");
    // One tenant makes every guest request: kept connections serve the
    // next run as they serve the next request.
    let tenant = TenantId::new();
    // Warm every path, then take the rounds.
    host_round(&url, 50, fresh).await?;
    for c in &contenders {
        guest_run(&runtime, tenant, &c.component, &url, port, 20).await?;
        alone_run(&c.alone, &url, 20).await?;
    }
    let mut host_rounds = Vec::new();
    for _ in 0..ROUNDS {
        let host = host_round(&url, per_round, fresh).await?;
        host_rounds.push(host);
        for c in &mut contenders {
            let empty = guest_run(&runtime, tenant, &c.component, &url, port, 0).await?;
            let run = guest_run(&runtime, tenant, &c.component, &url, port, per_round).await?;
            let guest = (run - empty).max(0.0) / f64::from(per_round);
            c.empty_runs.push(empty);
            c.whole.push(run / f64::from(per_round));
            c.rounds.push(guest);
            c.paired.push((guest - host, guest / host));
            let empty = alone_run(&c.alone, &url, 0).await?;
            let run = alone_run(&c.alone, &url, per_round).await?;
            let alone = (run - empty).max(0.0) / f64::from(per_round);
            c.alone_rounds.push(alone);
            c.alone_paired.push((alone - host, alone / host));
            c.over_alone.push(guest / alone);
        }
    }
    let host = median(host_rounds);
    let connections = if fresh {
        "a fresh connection each"
    } else {
        "connections kept open"
    };
    println!(
        "GET of a {} B body over loopback, {connections}; {ROUNDS} rounds of {per_round} requests, medians:",
        args.body_bytes
    );
    println!("  host, hyper directly          {host:>8.1} µs/request");
    let rows: Vec<LanguageRow> = contenders.iter().map(Contender::row).collect();
    for r in &rows {
        println!(
            "  {:<6} guest, through the host {:>8.1} µs/request  {:.2}× host, +{:.1} µs",
            r.language, r.us_per_request, r.over_host, r.added_us_per_request
        );
    }
    println!(
        "  the same guests run by wasmtime alone, each request sent as it is on a kept connection\n  (no grant, address check, meter or log; the guests' own HTTP code and wasmtime's wasi:http):"
    );
    for r in &rows {
        println!(
            "  {:<6} guest, wasmtime alone   {:>8.1} µs/request  {:.2}× host, +{:.1} µs; ours ÷ alone {:.2}",
            r.language,
            r.alone_us_per_request,
            r.alone_over_host,
            r.alone_added_us_per_request,
            r.over_alone
        );
    }
    println!("  each guest round's run itself, taken out above (a run making no request):");
    for r in &rows {
        println!(
            "  {:<6} {:>8.1} µs a run; with it, {:.1} µs/request",
            r.language, r.run_without_requests_us, r.whole_run_us_per_request
        );
    }
    let mut worker = Vec::new();
    if let Some(database_url) = &args.database_url {
        let wasm = super::http_worker::testkit(&args.guests)?;
        worker = super::http_worker::rows(database_url, &wasm, port, 5, per_round).await?;
        println!(
            "  the Rust guest through a worker pool, one slot, µs/request (metering included):"
        );
        for w in &worker {
            let metering = if w.budget_on_requests {
                "a budget on http_requests: reported per request"
            } else {
                "no budget on requests: reported per attempt"
            };
            println!("  {:<8} {:>8.1}  ({metering})", w.store, w.us_per_request);
        }
    }
    let mut rows = rows.into_iter();
    let rust = rows.next().expect("the Rust row is always there");
    write_json(
        args.json_out.as_deref(),
        &Summary {
            host_us_per_request: host,
            guest_us_per_request: rust.us_per_request,
            added_us_per_request: rust.added_us_per_request,
            guest_over_host: rust.over_host,
            guest_run_without_requests_us: rust.run_without_requests_us,
            guest_whole_run_us_per_request: rust.whole_run_us_per_request,
            guest_alone_us_per_request: rust.alone_us_per_request,
            guest_alone_over_host: rust.alone_over_host,
            guest_over_alone: rust.over_alone,
            languages: rows.collect(),
            worker,
        },
    )
}

fn contender(
    runtime: &Runtime,
    language: &'static str,
    component: Prepared,
) -> anyhow::Result<Contender> {
    Ok(Contender {
        language,
        alone: runtime.baseline_sending_http(&component)?,
        component,
        rounds: Vec::new(),
        paired: Vec::new(),
        empty_runs: Vec::new(),
        whole: Vec::new(),
        alone_rounds: Vec::new(),
        alone_paired: Vec::new(),
        over_alone: Vec::new(),
    })
}

async fn prepare(runtime: &Runtime, path: &std::path::Path) -> anyhow::Result<Prepared> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = runtime.register(&wasm).await?;
    Ok(runtime
        .prepare(&digest, || async { Ok::<_, String>(wasm.clone()) })
        .await?)
}

/// A loopback server answering `/body` with `bytes` bytes, on a thread and
/// runtime of its own, as a real server is in a process of its own: on the
/// bench's own runtime, a client and the server would answer each other
/// within one thread's task queue, which flatters whichever path runs its
/// client there and charges a path that crosses threads twice.
async fn serve(bytes: usize) -> anyhow::Result<u16> {
    let body = vec![b'x'; bytes];
    let app = axum::Router::new().route(
        "/body",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("bench-http-server".into())
        .spawn(move || {
            server.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).await
            })
        })?;
    Ok(port)
}

/// µs per request made by the host with hyper, as the sender makes them:
/// on one connection kept open, or (`fresh`) a new one each.
async fn host_round(url: &str, requests: u32, fresh: bool) -> anyhow::Result<f64> {
    let uri: http::Uri = url.parse()?;
    let addr = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80)
    );
    let started = Instant::now();
    let mut kept = None;
    for _ in 0..requests {
        let sender = match kept.take() {
            Some(sender) => sender,
            None => {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let (sender, conn) = hyper::client::conn::http1::handshake(
                    wasmtime_wasi_http::io::TokioIo::new(tcp),
                )
                .await?;
                tokio::spawn(conn);
                sender
            }
        };
        let mut sender: hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>> = sender;
        sender.ready().await?;
        let request = http::Request::get(uri.path())
            .header(
                http::header::HOST,
                uri.authority().map_or("", |a| a.as_str()),
            )
            .body(Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(!body.is_empty(), "empty body");
        if !fresh {
            kept = Some(sender);
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(requests))
}

/// µs of one run of the guest making `requests` requests (`http-n`), run by
/// wasmtime alone.
async fn alone_run(alone: &Baseline, url: &str, requests: u32) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (answer, _) = alone.run(http_n(requests, url).as_bytes()).await;
    let elapsed = started.elapsed();
    match answer {
        Ok(out) if all_answered(&out, requests) => {}
        other => anyhow::bail!("the guest's requests, wasmtime alone, failed: {other:?}"),
    }
    Ok(elapsed.as_secs_f64() * 1e6)
}

/// The guests' command: `requests` GETs of `url`.
fn http_n(requests: u32, url: &str) -> String {
    format!("http-n:{requests}:{url}")
}

/// Whether `http-n`'s answer says every request was answered.
fn all_answered(out: &[u8], requests: u32) -> bool {
    out == format!("ok={requests} error=none").as_bytes()
}

/// µs of one run of the guest making `requests` requests (`http-n`).
async fn guest_run(
    runtime: &Runtime,
    tenant: TenantId,
    component: &Prepared,
    url: &str,
    port: u16,
    requests: u32,
) -> anyhow::Result<f64> {
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
        kind: Arc::from("bench"),
    };
    let input = http_n(requests, url);
    let limits = SandboxLimits {
        timeout: std::time::Duration::from_secs(600),
        ..SandboxLimits::default()
    };
    let started = Instant::now();
    let outcome = runtime
        .run(
            component,
            guest,
            input.as_bytes(),
            &limits,
            CancelFlag::default(),
        )
        .await;
    let elapsed = started.elapsed();
    match outcome.result {
        RunResult::Completed(out) if all_answered(&out, requests) => {}
        other => anyhow::bail!("the guest's requests failed: {other:?}"),
    }
    Ok(elapsed.as_secs_f64() * 1e6)
}
