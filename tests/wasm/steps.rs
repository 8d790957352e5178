//! Durable steps and timers with a real guest: side effects (POSTs to a
//! loopback counter) happen once across retries, resumes and replays; a run
//! that diverges from its journal fails with a clear error; a durable sleep
//! holds nothing while it waits and wakes at its time.

use std::time::{Duration, Instant};

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{FailureClass, PublicState, StepKind};
use flowfabric_tests::Store;

use crate::upstream::{allow_upstream, Upstream};
use crate::{config, text, Env};

/// An environment whose testkit may POST to a fresh counter.
async fn with_counter(store: Store) -> (Env, Upstream) {
    let env = Env::on(store).await;
    let up = Upstream::start().await;
    allow_upstream(&env, &up).await;
    (env, up)
}

async fn steps_of(env: &Env, id: flowfabric::model::ExecutionId) -> Vec<(String, StepKind, i32)> {
    env.db
        .engine
        .list_steps(env.tenant, id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.kind, s.attempt_index))
        .collect()
}

async fn a_transient_failure_after_a_step_retries_without_repeating_it(store: Store) {
    let (env, up) = with_counter(store).await;
    let pool = env.pool(config(2));
    let script = format!("steps:post:charge:{};step:b;fail-until:3", up.url("/echo"));
    let id = env.submit("testkit", &script, 3).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(ex.attempt_index, 3);
    // Both steps ran on the first attempt only: the charge reached the
    // counter once, and `b` still says which attempt ran it.
    assert_eq!(text(&ex.result), "charge=charge,b=b@1");
    assert_eq!(up.hits(), 1, "the side effect happened once");
    assert_eq!(
        steps_of(&env, id).await,
        vec![
            ("charge".into(), StepKind::Completed, 1),
            ("b".into(), StepKind::Completed, 1),
        ]
    );
    // Each record was announced as a durable `step` frame of attempt 1.
    let frames = env.first_attempt_frames(id, 100).await;
    let announced: Vec<serde_json::Value> = frames
        .iter()
        .filter(|f| f.frame_type == "step")
        .map(|f| serde_json::from_slice(&f.payload).unwrap())
        .collect();
    assert_eq!(announced.len(), 2, "{frames:?}");
    assert_eq!(announced[0]["name"], "charge");
    assert_eq!(announced[0]["kind"], "completed");
    assert_eq!(announced[0]["size"], 6);
    assert_eq!(announced[1]["position"], 1);
    pool.shutdown().await;
}

async fn steps_recorded_before_a_suspension_are_skipped_on_resume(store: Store) {
    let (env, up) = with_counter(store).await;
    let pool = env.pool(config(2));
    let script = format!(
        "steps:post:a:{url};step:b;wait:k;post:c:{url}",
        url = up.url("/echo")
    );
    let id = env.submit("testkit", &script, 0).await;
    env.wait_state(id, PublicState::Suspended).await;
    assert_eq!(up.hits(), 1);
    env.db.engine.resume(env.tenant, id).await.unwrap();
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "a=a,b=b@1,waited=k,c=c");
    assert_eq!(up.hits(), 2, "a once before the suspension, c once after");
    pool.shutdown().await;
}

async fn a_run_that_diverges_from_its_journal_fails_with_journal_mismatch(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    // The first attempt records `at-1`, then fails; the retry asks for
    // `at-2` at the same position.
    let id = env
        .submit("testkit", "steps:attempt-step;fail-until:2", 3)
        .await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed);
    let failure = ex.last_failure.expect("a failure");
    assert_eq!(failure.class, FailureClass::JournalMismatch);
    assert!(
        failure.message.contains("journal mismatch at step 0")
            && failure.message.contains("`at-2`")
            && failure.message.contains("`at-1`"),
        "{}",
        failure.message
    );
    assert_eq!(ex.attempt_index, 2, "a mismatch is never retried");
    pool.shutdown().await;
}

async fn a_permanent_step_failure_is_recorded_and_handed_back(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env
        .submit("testkit", "steps:fail:f;step:g;fail-until:2", 2)
        .await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "f=failed(f failed for good),g=g@1");
    let steps = env
        .db
        .engine
        .list_steps(env.tenant, id, None, 100)
        .await
        .unwrap();
    assert_eq!(steps[0].kind, StepKind::Failed);
    assert_eq!(steps[0].error.as_deref(), Some("f failed for good"));
    pool.shutdown().await;
}

async fn steps_past_the_caps_end_the_attempt_for_good(store: Store) {
    let env = Env::on_with(store, |l| {
        l.max_steps_per_execution = 3;
        l.max_step_bytes = 64 << 10;
        l.max_journal_bytes_per_execution = 100 << 10;
    })
    .await;
    let pool = env.pool(config(2));
    for (script, limit) in [
        ("steps:big:b:65", "max_step_bytes"),
        ("steps:big:a:60;big:b:60", "max_journal_bytes_per_execution"),
        (
            "steps:step:a;step:b;step:c;step:d",
            "max_steps_per_execution",
        ),
    ] {
        let id = env.submit("testkit", script, 3).await;
        let ex = env.wait_terminal(id).await;
        assert_eq!(ex.state, PublicState::Failed, "{script}");
        let failure = ex.last_failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::LimitExceeded, "{script}");
        assert!(
            failure.message.contains(limit),
            "{script}: {}",
            failure.message
        );
        assert_eq!(ex.attempt_index, 1, "{script}: never retried");
    }
    pool.shutdown().await;
}

async fn a_durable_sleep_releases_the_execution_and_wakes_on_time(store: Store) {
    let env = Env::on(store).await;
    let scanners = Scanners::start(
        env.db.backend(),
        ScannerConfig {
            suspension_timeout: Duration::from_millis(100),
            ..ScannerConfig::default()
        },
    );
    let pool = env.pool(config(2));
    let started = Instant::now();
    let id = env
        .submit("testkit", "steps:step:a;sleep:1500;step:b", 0)
        .await;
    env.wait_state(id, PublicState::Suspended).await;
    let ex = env.wait_terminal(id).await;
    let took = started.elapsed();
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "a=a@1,slept=1500,b=b@1");
    assert!(took >= Duration::from_millis(1_500), "woke early: {took:?}");
    let steps = env
        .db
        .engine
        .list_steps(env.tenant, id, None, 100)
        .await
        .unwrap();
    let kinds: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("a", StepKind::Completed),
            ("sleep", StepKind::Sleep),
            ("b", StepKind::Completed)
        ]
    );
    let wake_at = steps[1].wake_at.expect("a wake time");
    let slept = (wake_at - steps[1].recorded_at).num_milliseconds();
    assert!((1_400..=1_500).contains(&slept), "wakes {slept} ms after");
    pool.shutdown().await;
    scanners.shutdown().await;
}

async fn replay_starts_a_fresh_journal_unless_told_to_keep_it(store: Store) {
    let (env, up) = with_counter(store).await;
    let pool = env.pool(config(2));
    let id = env
        .submit("testkit", &format!("steps:post:a:{}", up.url("/echo")), 0)
        .await;
    env.wait_terminal(id).await;
    assert_eq!(up.hits(), 1);

    env.db.engine.replay(env.tenant, id, true).await.unwrap();
    let kept = env.wait_terminal(id).await;
    assert_eq!(kept.state, PublicState::Completed);
    assert_eq!(up.hits(), 1, "a kept journal skips the step");

    env.db.engine.replay(env.tenant, id, false).await.unwrap();
    let fresh = env.wait_terminal(id).await;
    assert_eq!(fresh.state, PublicState::Completed);
    assert_eq!(up.hits(), 2, "a fresh journal runs it again");
    assert_eq!(steps_of(&env, id).await[0].2, fresh.attempt_index);
    pool.shutdown().await;
}

on_both_backends!(
    a_transient_failure_after_a_step_retries_without_repeating_it,
    steps_recorded_before_a_suspension_are_skipped_on_resume,
    a_run_that_diverges_from_its_journal_fails_with_journal_mismatch,
    a_permanent_step_failure_is_recorded_and_handed_back,
    steps_past_the_caps_end_the_attempt_for_good,
    a_durable_sleep_releases_the_execution_and_wakes_on_time,
    replay_starts_a_fresh_journal_unless_told_to_keep_it,
);
