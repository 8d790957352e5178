//! `flowfabric bench languages`: what a guest's language costs, with the Rust
//! guest as the baseline measured in the same run.
//!
//! For the conformance guest of each language (Rust testkit, JS and Python from
//! `scripts/build-guests.sh`): its size; the compile an upload pays once
//! (`Component::new`); the first run on a host that finds the precompiled
//! artifact on disk (deserialize, link, instantiate, call); and the per-task
//! cost of a fresh instance plus one `run` after that, one task at a time,
//! split into the attempt's host state (setup), instantiation, the `run`
//! call, the store's drop (teardown) and what is left of the caller's wait
//! (the hop to a guest thread and back); and the wall time per task when as
//! many tasks are in flight as a busy worker pool keeps (busy), where the
//! hops overlap with other tasks' work.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use flowfabric::runtime::{Runtime, RuntimeConfig};

use super::wasm::{per_task, run_once, PerTask};
use super::write_json;

#[derive(clap::Args)]
pub struct LanguagesBench {
    /// Where the Rust guests are (`testkit.wasm`).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Where the JS and Python guests are (`js.wasm`, `python.wasm`).
    #[arg(long, default_value = "guests/target/polyglot")]
    polyglot: PathBuf,
    /// Instantiate+call iterations per language.
    #[arg(long, default_value_t = 1_000)]
    calls: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Figures {
    bytes: usize,
    compile_ms: f64,
    first_run_ms: f64,
    per_task: PerTask,
}

pub async fn run(args: LanguagesBench) -> anyhow::Result<()> {
    let guests = [
        ("rust", args.guests.join("testkit.wasm")),
        ("js", args.polyglot.join("js.wasm")),
        ("python", args.polyglot.join("python.wasm")),
    ];
    println!(
        "per language: size, compile on upload, first run from the artifact cache, per task ({} calls)",
        args.calls
    );
    println!(
        "  {:<7} {:>9} {:>10} {:>12} {:>8} {:>6} {:>11} {:>6} {:>8} {:>5} {:>6}   (ratios to rust: size, compile, first run, task, in sandbox, busy)",
        "", "bytes", "compile ms", "first run ms", "µs/task", "setup", "instantiate", "run",
        "teardown", "hop", "busy"
    );
    let mut rows: Vec<(&str, Figures)> = Vec::new();
    for (lang, path) in guests {
        let f = measure(&path, args.calls)
            .await
            .with_context(|| format!("{lang} ({})", path.display()))?;
        let ratio = |ours: f64, base: fn(&Figures) -> f64| {
            rows.first()
                .map_or(String::new(), |(_, b)| format!("×{:.0}", ours / base(b)))
        };
        let task = f.per_task;
        println!(
            "  {lang:<7} {:>9} {:>10.0} {:>12.1} {:>8.1} {:>6.1} {:>11.1} {:>6.1} {:>8.1} {:>5.1} {:>6.1}   {} {} {} {} {} {}",
            f.bytes,
            f.compile_ms,
            f.first_run_ms,
            task.total_us,
            task.setup_us,
            task.instantiate_us,
            task.run_us,
            task.teardown_us,
            task.hop_us(),
            task.busy_us,
            ratio(f.bytes as f64, |b| b.bytes as f64),
            ratio(f.compile_ms, |b| b.compile_ms),
            ratio(f.first_run_ms, |b| b.first_run_ms),
            ratio(task.total_us, |b| b.per_task.total_us),
            ratio(task.instantiate_us + task.run_us, |b| {
                b.per_task.instantiate_us + b.per_task.run_us
            }),
            ratio(task.busy_us, |b| b.per_task.busy_us),
        );
        rows.push((lang, f));
    }
    if let Some((_, first)) = rows.first() {
        println!(
            "  busy: wall time per task with {} tasks in flight",
            first.per_task.in_flight
        );
    }
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(language, figures)| serde_json::json!({ "language": language, "figures": figures }))
        .collect();
    write_json(args.json_out.as_deref(), &rows)
}

async fn measure(path: &Path, calls: usize) -> anyhow::Result<Figures> {
    let wasm =
        std::fs::read(path).context("reading the component (scripts/build-guests.sh builds it)")?;
    let cache =
        std::env::temp_dir().join(format!("ff-bench-lang-{}", uuid::Uuid::now_v7().simple()));
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };

    let uploader = Runtime::new(config.clone())?;
    let started = Instant::now();
    let digest = uploader.register(&wasm).await?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(uploader);

    // Another host process: nothing in memory, the artifact on disk.
    let worker = Runtime::new(config)?;
    let started = Instant::now();
    let component = worker
        .prepare(&digest, || async {
            Err::<Vec<u8>, _>("the artifact cache missed")
        })
        .await?;
    run_once(&worker, &component).await?;
    let first_run_ms = started.elapsed().as_secs_f64() * 1e3;

    let per_task = per_task(&worker, &wasm, calls).await?;
    let _ = std::fs::remove_dir_all(cache);
    Ok(Figures {
        bytes: wasm.len(),
        compile_ms,
        first_run_ms,
        per_task,
    })
}
