//! Instances reused between attempts (a grant's `reuse_instances`): the
//! guest's memory carries over only between attempts of one tenant's
//! component kind, never after a run that did not return, and everything
//! the host gives an attempt stays its own. `testkit`'s `count` answers how
//! many times its instance has been called, so it tells a kept instance
//! from a fresh one.

use flowfabric::model::{CapabilityCeiling, ComponentGrant, FailureClass, PublicState, TenantId};
use flowfabric_tests::guest;

use crate::upstream::grant;
use crate::{config, text, Env};

fn reuse_ceiling() -> CapabilityCeiling {
    CapabilityCeiling {
        reuse_instances: true,
        config: true,
        ..Default::default()
    }
}

fn reuse_grant() -> ComponentGrant {
    ComponentGrant {
        reuse_instances: true,
        ..Default::default()
    }
}

/// Let `tenant` reuse instances of `kind` (the ceiling, then the grant).
pub(crate) async fn allow_reuse(env: &Env, tenant: TenantId, kind: &str) {
    env.db
        .engine
        .set_ceiling(tenant, &reuse_ceiling())
        .await
        .unwrap();
    grant(env, tenant, kind, reuse_grant()).await;
}

/// Run `input` as `kind` for `tenant`, one at a time, and return its result.
async fn run_as(env: &Env, tenant: TenantId, kind: &str, input: &str) -> String {
    let mut new = flowfabric::model::NewExecution::new(kind, input.as_bytes());
    new.policy.retry.max_retries = 0;
    let id = env
        .db
        .engine
        .create(tenant, new)
        .await
        .unwrap()
        .execution_id;
    let ex = env
        .db
        .wait_terminal(tenant, id, std::time::Duration::from_secs(30))
        .await;
    match ex.state {
        PublicState::Completed => text(&ex.result),
        _ => format!("{}: {:?}", ex.state, ex.last_failure.map(|f| f.class)),
    }
}

#[tokio::test]
async fn a_fresh_instance_per_attempt_unless_the_grant_reuses_them() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    // Not granted: every attempt counts from a fresh instance.
    for _ in 0..3 {
        assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    }
    pool.shutdown().await;

    allow_reuse(&env, env.tenant, "testkit").await;
    let pool = env.pool(config(1));
    for n in 1..=3 {
        assert_eq!(count(&env, env.tenant, "testkit").await, n);
    }
    pool.shutdown().await;
}

/// What `count` answers for `tenant`'s `kind` now.
async fn count(env: &Env, tenant: TenantId, kind: &str) -> u64 {
    let answer = run_as(env, tenant, kind, "count").await;
    answer
        .strip_prefix("count=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("count answered {answer}"))
}

#[tokio::test]
async fn kept_instances_never_cross_tenants_or_kinds() {
    let env = Env::new().await;
    let other = env.db.tenant("globex").await;
    let wasm = guest("testkit");
    for (tenant, kind) in [(env.tenant, "counter"), (other, "testkit")] {
        flowfabric::components::register(&env.db.engine, &env.runtime, tenant, kind, &wasm)
            .await
            .unwrap();
    }
    // The same component under two kinds of one tenant, and under a kind
    // of another tenant: all three reuse instances.
    allow_reuse(&env, env.tenant, "testkit").await;
    grant(&env, env.tenant, "counter", reuse_grant()).await;
    allow_reuse(&env, other, "testkit").await;
    let pool = env.pool(config(1));
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 2);
    assert_eq!(count(&env, env.tenant, "counter").await, 1);
    assert_eq!(count(&env, other, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 3);
    assert_eq!(count(&env, other, "testkit").await, 2);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_run_that_did_not_return_leaves_no_instance_to_reuse() {
    let env = Env::new().await;
    allow_reuse(&env, env.tenant, "testkit").await;
    let pool = env.pool(config(1));
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 2);
    // The task's own error returns: the instance serves again.
    let failed = run_as(&env, env.tenant, "testkit", "permanent").await;
    assert!(failed.starts_with("failed"), "{failed}");
    assert_eq!(count(&env, env.tenant, "testkit").await, 3);
    // A trap does not: the next attempt gets a fresh instance.
    let trapped = run_as(&env, env.tenant, "testkit", "panic").await;
    assert_eq!(trapped, "failed: Some(Trap)");
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    // Nor does a timeout.
    let mut spin = flowfabric::model::NewExecution::new("testkit", b"loop".to_vec());
    spin.policy.retry.max_retries = 0;
    spin.policy.timeouts.attempt_timeout_ms = Some(200);
    let id = env.db.engine.create(env.tenant, spin).await.unwrap();
    let ex = env.wait_terminal(id.execution_id).await;
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::Timeout);
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 2);
    // Nor does a refused memory growth.
    let oom = run_as(&env, env.tenant, "testkit", "alloc:512").await;
    assert_eq!(oom, "failed: Some(OutOfMemory)");
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    pool.shutdown().await;
}

#[tokio::test]
async fn each_attempt_on_a_kept_instance_has_its_own_output_and_values() {
    let env = Env::new().await;
    allow_reuse(&env, env.tenant, "testkit").await;
    let mut grant_with_config = reuse_grant();
    grant_with_config.config = vec!["GREETING".into()];
    grant(&env, env.tenant, "testkit", grant_with_config).await;
    env.db
        .engine
        .put_config(env.tenant, "GREETING", "hello", false)
        .await
        .unwrap();
    let pool = env.pool(config(1));
    let mut stdout = Vec::new();
    for word in ["first", "second"] {
        let id = env.submit("testkit", &format!("print:{word}"), 0).await;
        env.wait_terminal(id).await;
        let frames = env.first_attempt_frames(id, 10).await;
        let out: Vec<String> = frames
            .iter()
            .filter(|f| f.frame_type == "stdout")
            .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
            .collect();
        stdout.push(out.concat());
    }
    assert_eq!(stdout, ["first\n", "second\n"]);
    assert_eq!(env.completed_text("config:GREETING", 0).await, "hello");
    // A value changed between attempts is read anew by the next one (once
    // the pool's lookups, fresh for a second, see it).
    env.db
        .engine
        .put_config(env.tenant, "GREETING", "bonjour", false)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(env.completed_text("config:GREETING", 0).await, "bonjour");
    // And all of it ran on one instance.
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 2);
    pool.shutdown().await;
}

#[tokio::test]
async fn reuse_needs_the_operators_ceiling_and_no_scratch() {
    let env = Env::new().await;
    let refused = env
        .db
        .engine
        .put_grant(env.tenant, "testkit", &reuse_grant())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("reuse_instances"), "{refused}");
    env.db
        .engine
        .set_ceiling(
            env.tenant,
            &CapabilityCeiling {
                scratch_bytes: Some(1 << 20),
                ..reuse_ceiling()
            },
        )
        .await
        .unwrap();
    let with_scratch = ComponentGrant {
        scratch_bytes: Some(1024),
        ..reuse_grant()
    };
    let refused = env
        .db
        .engine
        .put_grant(env.tenant, "testkit", &with_scratch)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("scratch_bytes"), "{refused}");
    // Allowed, and then the ceiling taken back: attempts get fresh
    // instances again, whatever the stored grant says.
    grant(&env, env.tenant, "testkit", reuse_grant()).await;
    env.db
        .engine
        .set_ceiling(env.tenant, &CapabilityCeiling::default())
        .await
        .unwrap();
    let pool = env.pool(config(1));
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    assert_eq!(count(&env, env.tenant, "testkit").await, 1);
    pool.shutdown().await;
}
