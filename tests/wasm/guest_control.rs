//! A guest steering its own execution: parking it until a time it chooses
//! (`delay`), ending it (`cancel`), and noticing that its lease renewals are
//! failing (`lease-healthy`, `renewal-failures`).

use std::time::{Duration, Instant};

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{
    AttemptState, AttemptType, BudgetScope, DimensionLimit, HardLimitAction, NewBudget,
    PublicState, StepKind,
};
use flowfabric::worker::WorkerConfig;
use flowfabric_tests::Store;

use crate::{config, text, Env};

async fn a_guest_delays_its_execution_without_spending_a_retry(store: Store) {
    let env = Env::on(store).await;
    let scanners = Scanners::start(env.db.backend(), ScannerConfig::default());
    let pool = env.pool(config(2));
    let started = Instant::now();
    let id = env
        .submit("testkit", "steps:step:a;delay-until:3:300;step:b", 0)
        .await;
    let ex = env.wait_terminal(id).await;
    let took = started.elapsed();
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    // Two delays, then the third attempt ran to the end: `a` was not run
    // again, and no retry was spent (the policy allows none).
    assert_eq!(text(&ex.result), "a=a@1,delayed=3:delayed:0,b=b@3");
    assert_eq!((ex.attempt_index, ex.retry_count), (3, 0));
    assert!(took >= Duration::from_millis(600), "woke early: {took:?}");

    let mut attempts = env.db.engine.attempts(env.tenant, id).await.unwrap();
    attempts.reverse();
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt_index, a.attempt_type, a.state))
        .collect();
    assert_eq!(
        seen,
        [
            (1, AttemptType::Initial, AttemptState::Delayed),
            (2, AttemptType::Delayed, AttemptState::Delayed),
            (3, AttemptType::Delayed, AttemptState::Succeeded),
        ]
    );
    let gap = attempts[1].started_at - attempts[0].ended_at.unwrap();
    assert!(gap.num_milliseconds() >= 300, "parked only {gap}");
    let steps = env
        .db
        .engine
        .list_steps(env.tenant, id, None, 10)
        .await
        .unwrap();
    let kinds: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        kinds,
        [("a", StepKind::Completed), ("b", StepKind::Completed)]
    );
    pool.shutdown().await;
    scanners.shutdown().await;
}

async fn a_delay_out_of_range_is_refused_and_the_run_carries_on(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let past_30_days = 30 * 24 * 3_600_000u64 + 1;
    let script = format!("steps:delay-until:9:0;delay-until:9:{past_30_days};step:a");
    let id = env.submit("testkit", &script, 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    let result = text(&ex.result);
    assert_eq!(
        result,
        "delay=HostError::Invalid(\"invalid duration_ms: must be at least 1\"),\
         delay=HostError::Invalid(\"invalid duration_ms: must be at most 2592000000 (30 days)\"),\
         a=a@1"
    );
    assert_eq!(ex.attempt_index, 1, "nothing was parked");
    pool.shutdown().await;
}

async fn a_guest_cancels_its_execution_for_good(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env
        .submit(
            "testkit",
            "steps:step:a;cancel:the order was withdrawn;step:b",
            3,
        )
        .await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Cancelled);
    assert_eq!(
        ex.cancellation_reason.as_deref(),
        Some("the order was withdrawn")
    );
    assert_eq!((ex.attempt_index, ex.retry_count), (1, 0), "never retried");
    assert_eq!(ex.result, None);
    let attempts = env.db.engine.attempts(env.tenant, id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Cancelled);
    // The run stopped at the call: `b` never ran.
    let steps = env
        .db
        .engine
        .list_steps(env.tenant, id, None, 10)
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    // An operator's cancel of the ended execution changes nothing.
    let again = env.db.engine.cancel(env.tenant, id, "too late").await;
    assert!(!matches!(again, Ok(true)), "{again:?}");
    let after = env.db.engine.get(env.tenant, id).await.unwrap();
    assert_eq!(
        after.cancellation_reason.as_deref(),
        Some("the order was withdrawn")
    );
    pool.shutdown().await;
}

async fn failing_renewals_make_the_lease_unhealthy_until_one_succeeds(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(WorkerConfig {
        lease_ttl: Duration::from_millis(1_500),
        ..config(1)
    });
    env.db.refuse_lease_renewals(true).await;
    let id = env.submit("testkit", "steps:unhealthy", 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let frames = env.first_attempt_frames(id, 10).await;
        if let Some(f) = frames.iter().find(|f| f.frame_type == "health") {
            break String::from_utf8(f.payload.clone()).unwrap();
        }
        let ex = env.db.engine.get(env.tenant, id).await.unwrap();
        assert!(!ex.state.is_terminal(), "ended early: {ex:?}");
        assert!(Instant::now() < deadline, "no health frame in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health, "failures=3 healthy=false");
    env.db.refuse_lease_renewals(false).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "recovered=true");
    pool.shutdown().await;
}

async fn a_guest_reports_several_dimensions_in_one_call(store: Store) {
    let env = Env::on(store).await;
    let limit = |dimension: &str, hard| DimensionLimit {
        dimension: dimension.into(),
        soft_limit: None,
        hard_limit: Some(hard),
    };
    let budget = env
        .db
        .engine
        .create_budget(
            env.tenant,
            NewBudget {
                name: "llm".into(),
                scope: BudgetScope::Tenant,
                dimensions: vec![limit("calls", 3), limit("tokens", 100)],
                on_hard_limit: HardLimitAction::Fail,
                reset_interval_ms: None,
            },
        )
        .await
        .unwrap();
    let pool = env.pool(config(1));
    let ok = env
        .submit("testkit", "spend-many:tokens=60,calls=2", 0)
        .await;
    assert_eq!(text(&env.wait_terminal(ok).await.result), "ok");
    let over = env
        .submit("testkit", "spend-many:tokens=10,calls=2", 0)
        .await;
    let ex = env.wait_terminal(over).await;
    assert_eq!(ex.state, PublicState::Failed, "a hard breach fails it");
    assert_eq!(
        ex.last_failure.unwrap().class,
        flowfabric::model::FailureClass::BudgetExceeded
    );
    let used: Vec<_> = env
        .db
        .engine
        .backend()
        .get_budget(env.tenant, budget.budget_id)
        .await
        .unwrap()
        .dimensions
        .iter()
        .map(|d| (d.dimension.clone(), d.used))
        .collect();
    assert_eq!(
        used,
        [("calls".into(), 2), ("tokens".into(), 60)],
        "tokens not applied either"
    );
    pool.shutdown().await;
}

on_both_backends!(
    a_guest_reports_several_dimensions_in_one_call,
    a_guest_delays_its_execution_without_spending_a_retry,
    a_delay_out_of_range_is_refused_and_the_run_carries_on,
    a_guest_cancels_its_execution_for_good,
    failing_renewals_make_the_lease_unhealthy_until_one_succeeds,
);
