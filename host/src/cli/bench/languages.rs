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
//! (scheduling, and for a run that moved to a guest thread, the hop there
//! and back; see `runtime::placement`); and the wall time per task when as
//! many tasks are in flight as a busy worker pool keeps (busy). Then the same no-op run by wasmtime
//! alone (`runtime::Baseline`: the same engine and compiled component, none
//! of our path around it), so that what our path adds and what the
//! component itself costs are told apart in one run; beside it, the same
//! no-op called again and again on one instance (which the sandbox does only
//! for a grant's `reuse_instances`: it is what a fresh instance per attempt
//! costs, next to a call), and the no-op through our path with instances
//! reused. Then the same per-task figures for a realistic input: an order
//! of about 1 KiB of JSON that each guest parses and prices, reporting on it
//! through three host calls. Last, the smallest Rust guest (`echo.wasm`, a
//! progress call and a frame, as the template of `flowfabric new --lang
//! rust` does): a component's instantiation grows with the functions it
//! imports, and the conformance guest imports every interface there is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowfabric::runtime::{Baseline, BaselineTimes, Prepared, Runtime, RuntimeConfig};

use super::wasm::{per_task, run_once, timed, Instances, PerTask, TaskInput, NOOP};
use super::write_json;

#[derive(clap::Args)]
pub struct LanguagesBench {
    /// Where the Rust guests are (`testkit.wasm`, `echo.wasm`).
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
    /// The same with the realistic input (see [`Order`]).
    order: PerTask,
    /// The no-op run by wasmtime alone (see [`Baseline`]): no setup, no hop.
    baseline: PerTask,
    /// The no-op called on one instance by wasmtime alone.
    one_instance: OneInstance,
    /// The no-op through our path with instances reused (a grant's
    /// `reuse_instances`).
    reused: PerTask,
}

/// The smallest Rust guest's figures: it echoes its input after a progress
/// call and a frame.
#[derive(serde::Serialize)]
struct Smallest {
    bytes: usize,
    per_task: PerTask,
    reused: PerTask,
}

/// What the echo guest is asked, and answers.
const ECHO: TaskInput<'static> = TaskInput {
    input: b"echo:x",
    expect: b"echo:x",
};

/// The no-op called `calls` times on one instance (wasmtime alone): the
/// first call, which may initialise the guest's runtime, and the median of
/// the later ones.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct OneInstance {
    first_call_us: f64,
    later_call_us: f64,
}

/// The realistic input: `order:JSON` with an order of about 1 KiB, which
/// each guest parses, prices, and reports on (two progress calls and a
/// frame), and the answer it must give.
struct Order {
    input: String,
    expect: String,
    items: usize,
}

impl Order {
    fn new() -> Self {
        let (mut items, mut total) = (Vec::new(), 0u64);
        let mut input = String::new();
        while input.len() < 1024 {
            let (qty, price) = (1 + items.len() as u64 % 4, 199 + 100 * items.len() as u64);
            total += qty * price;
            items.push(serde_json::json!({
                "sku": format!("sku-{:05}", items.len()),
                "qty": qty,
                "price_cents": price,
            }));
            input = format!(
                "order:{}",
                serde_json::json!({ "order": "A-1001", "currency": "EUR", "items": items })
            );
        }
        Self {
            expect: format!("order=A-1001 items={} total_cents={total}", items.len()),
            items: items.len(),
            input,
        }
    }

    fn task(&self) -> TaskInput<'_> {
        TaskInput {
            input: self.input.as_bytes(),
            expect: self.expect.as_bytes(),
        }
    }
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
        "  {:<7} {:>9} {:>10} {:>12} {TASK_HEADER}   (ratios to rust: size, compile, first run, task, in sandbox, busy)",
        "", "bytes", "compile ms", "first run ms"
    );
    let order = Order::new();
    let mut rows: Vec<(&str, Figures)> = Vec::new();
    for (lang, path) in guests {
        let f = measure(&path, &order, args.calls)
            .await
            .with_context(|| format!("{lang} ({})", path.display()))?;
        let ratio = |ours: f64, base: fn(&Figures) -> f64| {
            rows.first()
                .map_or(String::new(), |(_, b)| format!("×{:.0}", ours / base(b)))
        };
        let task = f.per_task;
        println!(
            "  {lang:<7} {:>9} {:>10.0} {:>12.1} {}   {} {} {} {} {} {}",
            f.bytes,
            f.compile_ms,
            f.first_run_ms,
            task_columns(&task),
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
    print_baseline_rows(&rows);
    print_order_rows(&order, &rows);
    let echo = args.guests.join("echo.wasm");
    let smallest = measure_smallest(&echo, args.calls)
        .await
        .with_context(|| format!("rust echo ({})", echo.display()))?;
    print_smallest_row(&smallest, &rows);
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|(language, figures)| serde_json::json!({ "language": language, "figures": figures }))
        .collect();
    rows.push(serde_json::json!({ "language": "rust-echo", "figures": smallest }));
    write_json(args.json_out.as_deref(), &rows)
}

/// Each language's no-op run by wasmtime alone, and what our path costs
/// beside it.
fn print_baseline_rows(rows: &[(&str, Figures)]) {
    println!(
        "the same no-op, wasmtime alone: same engine and component, on the bench's own task, \
         no host state, no guest thread, no turns"
    );
    println!(
        "  {:<7} {:>8} {:>11} {:>6} {:>8} {:>6}   (ours ÷ alone: task, in sandbox, busy)",
        "", "µs/task", "instantiate", "run", "teardown", "busy"
    );
    for (lang, f) in rows {
        let (ours, alone) = (f.per_task, f.baseline);
        println!(
            "  {lang:<7} {:>8.1} {:>11.1} {:>6.1} {:>8.1} {:>6.1}   {:.2} {:.2} {:.2}",
            alone.total_us,
            alone.instantiate_us,
            alone.run_us,
            alone.teardown_us,
            alone.busy_us,
            ours.total_us / alone.total_us,
            (ours.instantiate_us + ours.run_us) / (alone.instantiate_us + alone.run_us),
            ours.busy_us / alone.busy_us,
        );
    }
    println!(
        "the same no-op, wasmtime alone, called again and again on one instance \
         (the sandbox reuses one only for a grant's reuse_instances)"
    );
    println!(
        "  {:<7} {:>10} {:>10}   (fresh instance per task ÷ later call)",
        "", "first call", "later call"
    );
    for (lang, f) in rows {
        let one = f.one_instance;
        println!(
            "  {lang:<7} {:>10.1} {:>10.1}   {:.0}",
            one.first_call_us,
            one.later_call_us,
            f.baseline.total_us / one.later_call_us.max(0.1),
        );
    }
    println!(
        "the same no-op through our path, instances reused (a grant's reuse_instances; \
         first task on a fresh instance, the rest on kept ones)"
    );
    println!(
        "  {:<7} {:>8} {:>11} {:>6} {:>5} {:>6}   (fresh ÷ reused: task, busy)",
        "", "µs/task", "instantiate", "run", "hop", "busy"
    );
    for (lang, f) in rows {
        let reused = f.reused;
        println!(
            "  {lang:<7} {:>8.1} {:>11.1} {:>6.1} {:>5.1} {:>6.1}   {:.1} {:.1}",
            reused.total_us,
            reused.instantiate_us,
            reused.run_us,
            reused.hop_us(),
            reused.busy_us,
            f.per_task.total_us / reused.total_us,
            f.per_task.busy_us / reused.busy_us,
        );
    }
}

/// The realistic input's row per language, beside its no-op figures.
fn print_order_rows(order: &Order, rows: &[(&str, Figures)]) {
    println!(
        "realistic input: order:JSON ({} bytes; parse, price {} items, 3 host calls)",
        order.input.len(),
        order.items
    );
    println!(
        "  {:<7} {:>8} {:>11} {:>6} {:>6} {:>12}   (ratio of task to rust)",
        "", "µs/task", "instantiate", "run", "busy", "run - no-op"
    );
    for (lang, f) in rows {
        let task = f.order;
        let ratio = rows.first().map_or(String::new(), |(_, b)| {
            format!("×{:.0}", task.total_us / b.order.total_us)
        });
        println!(
            "  {lang:<7} {:>8.1} {:>11.1} {:>6.1} {:>6.1} {:>12.1}   {ratio}",
            task.total_us,
            task.instantiate_us,
            task.run_us,
            task.busy_us,
            task.run_us - f.per_task.run_us,
        );
    }
}

async fn measure(path: &Path, order: &Order, calls: usize) -> anyhow::Result<Figures> {
    let wasm =
        std::fs::read(path).context("reading the component (scripts/build-guests.sh builds it)")?;
    let cache = ScratchCache::new();
    let config = cache.config();

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
    run_once(&worker, &component, NOOP, Instances::Fresh).await?;
    let first_run_ms = started.elapsed().as_secs_f64() * 1e3;

    let realistic = per_task(&worker, &wasm, order.task(), calls, Instances::Fresh).await?;
    let reused = per_task(&worker, &wasm, NOOP, calls, Instances::Reused).await?;
    let per_task = per_task(&worker, &wasm, NOOP, calls, Instances::Fresh).await?;
    let baseline = baseline_per_task(&worker, &component, calls, per_task.in_flight).await?;
    let one_instance = calls_on_one_instance(&worker, &component, calls).await?;
    Ok(Figures {
        bytes: wasm.len(),
        compile_ms,
        first_run_ms,
        per_task,
        order: realistic,
        baseline,
        one_instance,
        reused,
    })
}

/// An artifact cache of the bench's own, removed when dropped (on an error
/// too), so each measurement starts from an empty one.
struct ScratchCache(PathBuf);

impl ScratchCache {
    fn new() -> Self {
        let dir = format!("ff-bench-lang-{}", uuid::Uuid::now_v7().simple());
        Self(std::env::temp_dir().join(dir))
    }

    fn config(&self) -> RuntimeConfig {
        RuntimeConfig {
            cache_dir: Some(self.0.clone()),
            ..RuntimeConfig::default()
        }
    }
}

impl Drop for ScratchCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The echo guest per task, through our path with a fresh instance and with
/// instances reused.
async fn measure_smallest(path: &Path, calls: usize) -> anyhow::Result<Smallest> {
    let wasm = std::fs::read(path).context(
        "reading the component (`cargo build --release --target wasm32-wasip2` in guests/ builds it)",
    )?;
    let cache = ScratchCache::new();
    let worker = Runtime::new(cache.config())?;
    let reused = per_task(&worker, &wasm, ECHO, calls, Instances::Reused).await?;
    let per_task = per_task(&worker, &wasm, ECHO, calls, Instances::Fresh).await?;
    Ok(Smallest {
        bytes: wasm.len(),
        per_task,
        reused,
    })
}

/// The smallest Rust guest's row, beside the conformance guest's no-op.
fn print_smallest_row(smallest: &Smallest, rows: &[(&str, Figures)]) {
    println!(
        "the smallest rust guest: echo.wasm (a progress call and a frame, as the template of \
         `flowfabric new --lang rust`), {} bytes",
        smallest.bytes
    );
    println!(
        "  {:<7} {TASK_HEADER} {:>7}   (÷ rust testkit: task, instantiate)",
        "", "reused"
    );
    let (task, reused) = (smallest.per_task, smallest.reused);
    let ratios = rows.first().map_or(String::new(), |(_, b)| {
        format!(
            "{:.2} {:.2}",
            task.total_us / b.per_task.total_us,
            task.instantiate_us / b.per_task.instantiate_us
        )
    });
    println!(
        "  {:<7} {} {:>7.1}   {ratios}",
        "echo",
        task_columns(&task),
        reused.total_us,
    );
}

/// The per-task columns' heading, matching [`task_columns`].
const TASK_HEADER: &str = " µs/task  setup instantiate    run teardown   hop   busy";

/// A task's split, in the columns of [`TASK_HEADER`].
fn task_columns(task: &PerTask) -> String {
    format!(
        "{:>8.1} {:>6.1} {:>11.1} {:>6.1} {:>8.1} {:>5.1} {:>6.1}",
        task.total_us,
        task.setup_us,
        task.instantiate_us,
        task.run_us,
        task.teardown_us,
        task.hop_us(),
        task.busy_us,
    )
}

/// The no-op per task by wasmtime alone: one task at a time on this task
/// after a warm-up, then `in_flight` at once on the bench's threads.
async fn baseline_per_task(
    runtime: &Runtime,
    component: &Prepared,
    calls: usize,
    in_flight: usize,
) -> anyhow::Result<PerTask> {
    let baseline = Arc::new(runtime.baseline(component)?);
    let (wall, [instantiate, run, teardown]) = timed(calls, || async {
        let times = baseline_once(&baseline).await?;
        Ok([times.instantiate, times.run, times.teardown])
    })
    .await?;
    let each = calls.div_ceil(in_flight);
    let started = Instant::now();
    let lanes: Vec<_> = (0..in_flight)
        .map(|_| {
            let baseline = baseline.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    baseline_once(&baseline).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for lane in lanes {
        lane.await??;
    }
    let busy = started.elapsed().as_secs_f64() * 1e6 / (each * in_flight) as f64;
    let micros = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    Ok(PerTask {
        total_us: micros(wall),
        setup_us: 0.0,
        instantiate_us: micros(instantiate),
        run_us: micros(run),
        teardown_us: micros(teardown),
        busy_us: busy,
        in_flight,
    })
}

/// The no-op `calls` times on one instance, by wasmtime alone; every answer
/// must be the sandbox's.
async fn calls_on_one_instance(
    runtime: &Runtime,
    component: &Prepared,
    calls: usize,
) -> anyhow::Result<OneInstance> {
    let baseline = runtime.baseline(component)?;
    let answers = baseline
        .run_on_one_instance(NOOP.input, calls.max(2))
        .await
        .map_err(|e| anyhow::anyhow!("wasmtime alone, one instance: {e}"))?;
    if let Some((wrong, _)) = answers.iter().find(|(answer, _)| answer != NOOP.expect) {
        anyhow::bail!(
            "wasmtime alone, one instance: the guest answered {:?}",
            String::from_utf8_lossy(wrong)
        );
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mut later: Vec<f64> = answers[1..].iter().map(|(_, d)| micros(*d)).collect();
    later.sort_by(f64::total_cmp);
    Ok(OneInstance {
        first_call_us: micros(answers[0].1),
        later_call_us: later[later.len() / 2],
    })
}

/// One baseline no-op, which must answer as the sandbox's does.
async fn baseline_once(baseline: &Baseline) -> anyhow::Result<BaselineTimes> {
    let (answer, times) = baseline.run(NOOP.input).await;
    match answer {
        Ok(output) if output == NOOP.expect => Ok(times),
        Ok(output) => anyhow::bail!(
            "wasmtime alone: the guest answered {:?}",
            String::from_utf8_lossy(&output)
        ),
        Err(e) => anyhow::bail!("wasmtime alone: {e}"),
    }
}
