//! Where guests run: an attempt starts on the worker's own thread and, if it
//! runs for more than a couple of milliseconds, moves to the guest threads,
//! so a spinning guest leaves the worker's thread to its claims, leases and
//! API (`runtime::placement`).

use std::time::Duration;

use flowfabric::model::{FailureClass, PublicState};

use crate::{config, Env};

/// CPU time (user and system) the calling thread has used, from
/// `/proc/thread-self/stat` (in the kernel's 10 ms clock ticks).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("thread stat");
    // Past the command name, which is in parentheses and may hold spaces:
    // the state is field 3, utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// One thread for the test, the pool and its claims, as a worker's thread
/// is: a guest that stayed on it would take nearly all of its CPU.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_leaves_the_workers_thread() {
    let env = Env::new().await;
    let mut cfg = config(1);
    cfg.sandbox.timeout = Duration::from_millis(2_000);
    let pool = env.pool(cfg);
    // A short run ends where it started, on this thread.
    assert_eq!(env.completed_text("echo:short", 0).await, "short");

    let spinning = env.submit("testkit", "loop", 0).await;
    env.wait_state(spinning, PublicState::Active).await;
    let before = thread_cpu();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let used = thread_cpu() - before;
    let ex = env.wait_terminal(spinning).await;
    assert_eq!(
        ex.last_failure.map(|f| f.class),
        Some(FailureClass::Timeout),
        "it spun until its timeout"
    );
    // Loose, for a loaded machine: staying here it would be about 1,000 ms.
    assert!(
        used < Duration::from_millis(400),
        "the worker's thread spent {used:?} of 1 s on a spinning guest"
    );
    // And the worker's thread is free for the next short run.
    assert_eq!(env.completed_text("echo:after", 0).await, "after");
    pool.shutdown().await;
}

/// A guest that spends its run waiting (its sleeps are `wasi:clocks` waits,
/// its frames database writes) holds the worker's thread for far less than
/// the slice, however long it runs, so it stays there instead of paying a
/// guest thread's wake-up at every answer. The slice is 25 ms here, not the
/// default 2 ms, because an instantiation alone takes milliseconds in a debug
/// build; the run waits 60 ms. The metric is read from a recorder local to
/// this thread, where the worker records it.
#[tokio::test(flavor = "current_thread")]
async fn a_guest_waiting_on_the_host_stays_on_the_workers_thread() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let runs = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let env = Env::new().await;
    // A runtime of its own, with the longer slice; and in the shared one
    // another test's spinning testkit may have sent the component's next
    // attempts straight to the guest threads.
    let runtime = flowfabric::runtime::Runtime::new(flowfabric::runtime::RuntimeConfig {
        inline_slice: Duration::from_millis(25),
        ..Default::default()
    })
    .expect("wasm runtime");
    let pool = flowfabric::worker::WorkerPool::start(
        env.db.engine.clone(),
        std::sync::Arc::new(runtime),
        config(1),
    );
    // Four frames and four sleeps of 15 ms.
    assert_eq!(env.completed_text("drip:4:15", 0).await, "dripped=4");
    let rendered = runs.render();
    assert!(
        rendered.contains(r#"flowfabric_guest_runs_total{ran="caller"} 1"#),
        "{rendered}"
    );
    pool.shutdown().await;
}
