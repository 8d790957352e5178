//! A real guest suspends, is resumed by a signal, and runs again from the top
//! on the same attempt with `resume-signals` saying what woke it.

use std::time::Duration;

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{NewSignal, PublicState};

use flowfabric_tests::Store;

use crate::{config, text, Env};

async fn a_guest_suspends_and_a_signal_resumes_it(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "wait:approval", 0).await;
    env.wait_state(id, PublicState::Suspended).await;

    // The guest handed out its token as a frame; the API lists it too.
    let frames = env
        .db
        .engine
        .read_frames(env.tenant, id, 1, 0, 10)
        .await
        .unwrap();
    let frame = String::from_utf8(frames[0].payload.clone()).unwrap();
    let token = frame
        .strip_prefix("approval=")
        .expect("the waitpoint frame");
    let listed = env
        .db
        .engine
        .list_waitpoints(env.tenant, id, None, 100)
        .await
        .unwrap();
    assert_eq!(listed[0].token, token);

    let signal = NewSignal {
        name: "approve".into(),
        payload: b"yes".to_vec(),
        idempotency_key: None,
    };
    env.db.engine.deliver_signal(token, signal).await.unwrap();
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    assert_eq!(text(&done.result), "resumed attempt=1: approve=yes");
    pool.shutdown().await;
}

async fn an_auto_resume_timeout_wakes_the_guest_with_a_timeout_signal(store: Store) {
    let env = Env::on(store).await;
    let scanners = Scanners::start(
        env.db.backend(),
        ScannerConfig {
            suspension_timeout: Duration::from_millis(50),
            ..ScannerConfig::default()
        },
    );
    let pool = env.pool(config(2));
    let resumed = env
        .submit("testkit", "wait-timeout:200:auto-resume", 0)
        .await;
    let failed = env.submit("testkit", "wait-timeout:200:fail", 0).await;
    let done = env.wait_terminal(resumed).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    assert_eq!(text(&done.result), "resumed attempt=1: timeout=");
    let failed = env.wait_terminal(failed).await;
    assert_eq!(failed.state, PublicState::Failed);
    assert!(failed
        .last_failure
        .unwrap()
        .message
        .contains("suspension timed out"));
    pool.shutdown().await;
    scanners.shutdown().await;
}

async fn a_guest_spawns_children_waits_for_them_and_reads_their_outcomes(store: Store) {
    let env = Env::on(store).await;
    // The retried child waits out its backoff in the delayed promoter.
    let scanners = Scanners::start(env.db.backend(), ScannerConfig::default());
    let pool = env.pool(config(2));
    let id = env
        .submit("testkit", "spawn:echo:first|permanent|fail-until:2", 0)
        .await;
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    // Children run with the default retry policy: `fail-until:2` succeeds on
    // its second attempt, `permanent` never does.
    assert_eq!(
        text(&done.result),
        "after-resume child-1=completed:first;\
         child-2=failed:this input can never succeed;\
         child-3=completed:ok on attempt 2"
    );
    let flow = env
        .db
        .engine
        .backend()
        .get_flow(env.tenant, done.flow_id.expect("the parent joined a flow"))
        .await
        .unwrap();
    assert_eq!(flow.members.len(), 4, "root and three children, none twice");

    // Spawning a key twice in one run yields one child.
    let keyed = env.submit("testkit", "spawn-keyed:only", 0).await;
    let done = env.wait_terminal(keyed).await;
    let ids = text(&done.result);
    let (a, b) = ids.split_once(' ').unwrap();
    assert_eq!(a, b);
    pool.shutdown().await;
    scanners.shutdown().await;
}

on_both_backends!(
    a_guest_suspends_and_a_signal_resumes_it,
    an_auto_resume_timeout_wakes_the_guest_with_a_timeout_signal,
    a_guest_spawns_children_waits_for_them_and_reads_their_outcomes,
);
