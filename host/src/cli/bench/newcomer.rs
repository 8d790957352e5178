//! `flowfabric bench newcomer`: how long a newcomer waits from `flowfabric
//! new` to the first result, per language, with Rust as the baseline of the
//! same run.
//!
//! It does what a newcomer does, as printed: `flowfabric new NAME --lang L`,
//! then each next step that `new` prints (`cd DIR && ./build.sh`, `flowfabric
//! component upload …`, `flowfabric run …`), each a separate process of this
//! binary, against a server of the embedded default (a fresh SQLite file, a
//! worker pool and the HTTP API, in this process). Every step is timed from
//! the shell's side. Each build is its project's first, as a newcomer's is:
//! Rust compiles the SDK's dependencies into the project's own `target/`
//! (crates come from cargo's cache), JS installs componentize-js into the
//! project's `node_modules` (from npm's cache once npm has fetched it), and
//! Python takes componentize-py from the tool cache, which `--fresh-tools`
//! starts empty to measure the install a first-ever build pays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::process::Command;

use anyhow::{bail, ensure, Context};
use flowfabric::api::{self, ApiConfig};
use flowfabric::engine::Limits;
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::write_json;
use crate::cli::connect_with;
use crate::cli::new::Lang;

#[derive(clap::Args)]
pub struct NewcomerBench {
    /// Languages to measure; the first is the baseline of the ratios.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rust,js,python"
    )]
    langs: Vec<Lang>,
    /// The tool cache the templates' build.sh installs into and reuses
    /// (unset: their own default, ~/.cache/flowfabric/tools).
    #[arg(long, env = "FLOWFABRIC_TOOLS_DIR")]
    tools_dir: Option<PathBuf>,
    /// Start from an empty tool cache of the bench's own, so each build
    /// installs its language's toolchain (needs the network).
    #[arg(long)]
    fresh_tools: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// One language's wait, step by step, in seconds.
#[derive(Debug, Clone, serde::Serialize)]
struct Steps {
    language: String,
    new_s: f64,
    build_s: f64,
    upload_s: f64,
    first_result_s: f64,
}

impl Steps {
    fn total_s(&self) -> f64 {
        self.new_s + self.build_s + self.upload_s + self.first_result_s
    }
}

/// The embedded default in this process: what `flowfabric serve` runs,
/// on a fresh SQLite file, with one tenant's API key for the CLI.
struct Server {
    url: String,
    api_key: String,
    pool: WorkerPool,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    async fn start(scratch: &Path) -> anyhow::Result<Self> {
        let database = format!("sqlite:{}", scratch.join("newcomer.db").display());
        let engine = connect_with(&database, 8, Limits::default()).await?;
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            cache_dir: Some(scratch.join("artifacts")),
            ..RuntimeConfig::default()
        })?);
        let tenant = engine.create_tenant("newcomer").await?.tenant_id;
        let api_key = engine.issue_api_key(tenant, "bench").await?.token;
        let pool = WorkerPool::start(engine.clone(), runtime.clone(), WorkerConfig::default());
        let router = api::router(engine, runtime, &ApiConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(api::serve(listener, router, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(Self {
            url,
            api_key,
            pool,
            stop,
        })
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.pool.shutdown().await;
    }

    /// A printed `flowfabric …` line as a process of this binary, run from
    /// the project's directory against this server.
    fn cli_line(&self, line: &str, dir: &Path) -> anyhow::Result<Command> {
        let mut words = line.split_whitespace();
        ensure!(
            words.next() == Some("flowfabric"),
            "not a flowfabric command: {line}"
        );
        let mut cmd = own_binary()?;
        cmd.args(words)
            .current_dir(dir)
            .env("FLOWFABRIC_URL", &self.url)
            .env("FLOWFABRIC_API_KEY", &self.api_key);
        Ok(cmd)
    }
}

pub async fn run(args: NewcomerBench) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!(
        "ff-bench-newcomer-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&scratch)?;
    let tools = match (args.fresh_tools, &args.tools_dir) {
        (true, _) => Some(scratch.join("tools")),
        (false, dir) => dir.clone(),
    };
    println!(
        "from `flowfabric new` to the first result, as printed, against the embedded default; tools: {}{}",
        tools
            .as_deref()
            .map_or("the templates' default cache".into(), |t| t.display().to_string()),
        if args.fresh_tools { " (empty at start)" } else { "" }
    );
    let server = Server::start(&scratch).await?;
    let measured = measure_all(&args.langs, &scratch, tools.as_deref(), &server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    let rows = measured?;
    write_json(args.json_out.as_deref(), &rows)
}

async fn measure_all(
    langs: &[Lang],
    scratch: &Path,
    tools: Option<&Path>,
    server: &Server,
) -> anyhow::Result<Vec<Steps>> {
    println!(
        "  {:<7} {:>7} {:>9} {:>9} {:>14} {:>9}   (ratio of total to {})",
        "",
        "new s",
        "build s",
        "upload s",
        "first result s",
        "total s",
        langs.first().map_or(String::new(), |l| l.name())
    );
    let mut rows: Vec<Steps> = Vec::new();
    for lang in langs {
        let steps = measure(&lang.name(), scratch, tools, server)
            .await
            .with_context(|| format!("{}: from `new` to the first result", lang.name()))?;
        let ratio = rows.first().map_or(String::new(), |b| {
            format!("×{:.1}", steps.total_s() / b.total_s())
        });
        println!(
            "  {:<7} {:>7.2} {:>9.1} {:>9.1} {:>14.2} {:>9.1}   {ratio}",
            steps.language,
            steps.new_s,
            steps.build_s,
            steps.upload_s,
            steps.first_result_s,
            steps.total_s()
        );
        rows.push(steps);
    }
    Ok(rows)
}

async fn measure(
    lang: &str,
    scratch: &Path,
    tools: Option<&Path>,
    server: &Server,
) -> anyhow::Result<Steps> {
    let name = format!("hello-{lang}");
    let dir = scratch.join(&name);
    let (new_s, printed) = timed(
        own_binary()?
            .args(["new", &name, "--lang", lang, "--dir"])
            .arg(&dir),
    )
    .await?;
    let next: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    let [build, upload, run] = next[..] else {
        bail!("`new` printed {} next steps, not 3:\n{printed}", next.len());
    };
    let (build_s, _) = timed(&mut shell_line(build, tools)).await?;
    let (upload_s, _) = timed(&mut server.cli_line(upload, &dir)?).await?;
    let (first_result_s, result) = timed(&mut server.cli_line(run, &dir)?).await?;
    ensure!(
        result.trim_end() == "hello, world",
        "`{run}` printed {result:?}, not the template's greeting"
    );
    Ok(Steps {
        language: lang.to_owned(),
        new_s,
        build_s,
        upload_s,
        first_result_s,
    })
}

fn own_binary() -> anyhow::Result<Command> {
    Ok(Command::new(
        std::env::current_exe().context("finding this binary")?,
    ))
}

/// A printed shell line (`cd DIR && ./build.sh`) run by bash, with the tool
/// cache given (else the templates' own default) and without the cargo
/// settings of whoever ran the bench (`cargo run` sets some), so the project
/// builds as it would for a user.
fn shell_line(line: &str, tools: Option<&Path>) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", line]);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key.starts_with("RUSTC") {
            cmd.env_remove(key);
        }
    }
    match tools {
        Some(tools) => cmd.env("FLOWFABRIC_TOOLS_DIR", tools),
        None => cmd.env_remove("FLOWFABRIC_TOOLS_DIR"),
    };
    cmd
}

/// Run `cmd` to its end; its wall time and stdout. A failure carries its
/// stderr.
async fn timed(cmd: &mut Command) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let out = cmd
        .output()
        .await
        .with_context(|| format!("starting {cmd:?}"))?;
    let elapsed = started.elapsed();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        elapsed.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}
