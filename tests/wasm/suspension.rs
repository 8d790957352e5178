//! A real guest suspends, is resumed by a signal, and runs again from the top
//! on the same attempt with `resume-signals` saying what woke it.

use std::time::Duration;

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{NewSignal, PublicState, ResumeCondition, SignalOutcome};

use flowfabric_tests::Store;

use crate::{config, text, Env};

async fn a_guest_suspends_and_a_signal_resumes_it(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "wait:approval", 0).await;
    env.wait_state(id, PublicState::Suspended).await;

    // The guest handed out its token as a frame; the API lists it too.
    let frames = env.first_attempt_frames(id, 10).await;
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

/// The token the guest wrote for `key` in its `waitpoint` frame.
async fn token_for(env: &Env, id: flowfabric::model::ExecutionId, key: &str) -> String {
    let frames = env.first_attempt_frames(id, 10).await;
    frames
        .iter()
        .find_map(|f| {
            String::from_utf8(f.payload.clone())
                .ok()?
                .strip_prefix(&format!("{key}="))
                .map(String::from)
        })
        .expect("the waitpoint frame")
}

fn named(name: &str, payload: &str) -> NewSignal {
    NewSignal {
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: None,
    }
}

async fn only_named_signals_resume_and_operators_see_why_it_waits(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env
        .submit(
            "testkit",
            "wait-named:approval:approve,reject:waiting_for_approval",
            0,
        )
        .await;
    env.wait_state(id, PublicState::Suspended).await;

    let listed = env
        .db
        .engine
        .list_suspended(env.tenant, None, None, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert_eq!(entry.execution.execution_id, id);
    assert_eq!(
        entry.execution.blocking_reason.as_deref(),
        Some("waiting_for_signal")
    );
    let suspension = entry.execution.suspension.as_ref().expect("a suspension");
    assert_eq!(suspension.reason.as_deref(), Some("waiting_for_approval"));
    assert_eq!(suspension.signal_names, ["approve", "reject"]);
    assert_eq!(
        suspension.condition,
        ResumeCondition::Waitpoint {
            key: "approval".into()
        }
    );
    let keys: Vec<_> = entry.waitpoints.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["approval"]);
    let other = env.db.tenant("other").await;
    let theirs = env
        .db
        .engine
        .list_suspended(other, None, None, None, 100)
        .await
        .unwrap();
    assert!(theirs.is_empty(), "another tenant sees none");

    // A signal of another name is kept but wakes nothing.
    let token = token_for(&env, id, "approval").await;
    let outcome = env
        .db
        .engine
        .deliver_signal(&token, named("comment", "looks odd"))
        .await
        .unwrap();
    assert!(
        matches!(outcome.2, SignalOutcome::Accepted { resumed: false, .. }),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.db.engine.get(env.tenant, id).await.unwrap().state,
        PublicState::Suspended
    );

    let outcome = env
        .db
        .engine
        .deliver_signal(&token, named("approve", "yes"))
        .await
        .unwrap();
    assert!(
        matches!(outcome.2, SignalOutcome::Accepted { resumed: true, .. }),
        "{outcome:?}"
    );
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    let result = text(&done.result);
    assert!(
        result.starts_with("resumed attempt=1: ") && result.contains("approve=yes"),
        "{result}"
    );
    assert_eq!(done.suspension, None, "shown only while suspended");
    let listed = env
        .db
        .engine
        .list_suspended(env.tenant, None, None, None, 100)
        .await
        .unwrap();
    assert!(listed.is_empty());
    pool.shutdown().await;
}

async fn a_bad_reason_or_too_many_names_is_refused_to_the_guest(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let names: Vec<String> = (0..17).map(|i| format!("n{i}")).collect();
    let cases = [
        ("wait-named:k::Not A Code".to_string(), "reason"),
        (format!("wait-named:k:{}:", names.join(",")), "signal_names"),
        ("wait-named:k:bad name!:".to_string(), "signal name"),
    ];
    for (input, field) in cases {
        let id = env.submit("testkit", &input, 0).await;
        let done = env.wait_terminal(id).await;
        assert_eq!(done.state, PublicState::Completed, "{input}");
        let result = text(&done.result);
        assert!(
            result.starts_with("refused: invalid: "),
            "{input}: {result}"
        );
        assert!(result.contains(field), "{input}: {result}");
    }
    pool.shutdown().await;
}

async fn a_resumed_run_reads_back_what_it_wrote_before_suspending(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "checkpoint-wait:go", 0).await;
    env.wait_state(id, PublicState::Suspended).await;
    let token = token_for(&env, id, "go").await;
    env.db
        .engine
        .deliver_signal(&token, named("go", ""))
        .await
        .unwrap();
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    assert_eq!(
        text(&done.result),
        r#"checkpoint=Some("page=42") summary=Some("{\"page\":42}")"#
    );
    // Out of range: another attempt than its own, or no frames asked for.
    for (input, expect) in [
        (
            "read-frames:2:0:10",
            "error: HostError::Invalid(\"attempt must be 0",
        ),
        (
            "read-frames:0:0:0",
            "error: HostError::Invalid(\"limit must be 1 to 100",
        ),
        (
            "read-frames:0:0:101",
            "error: HostError::Invalid(\"limit must be 1 to 100",
        ),
        ("read-frames:1:0:10", "n=0"),
    ] {
        let id = env.submit("testkit", input, 0).await;
        let out = text(&env.wait_terminal(id).await.result);
        assert!(out.starts_with(expect), "{input}: {out}");
    }
    pool.shutdown().await;
}

on_both_backends!(
    a_resumed_run_reads_back_what_it_wrote_before_suspending,
    only_named_signals_resume_and_operators_see_why_it_waits,
    a_bad_reason_or_too_many_names_is_refused_to_the_guest,
    a_guest_suspends_and_a_signal_resumes_it,
    an_auto_resume_timeout_wakes_the_guest_with_a_timeout_signal,
    a_guest_spawns_children_waits_for_them_and_reads_their_outcomes,
);
