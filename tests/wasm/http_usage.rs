//! A guest's HTTP usage reaches the budgets whatever way the attempt ends:
//! counted in memory while no budget limits requests, it is reported before
//! a call that lets go of the lease, since a report needs the lease.

use std::time::Duration;

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{BudgetScope, DimensionLimit, HardLimitAction, NewBudget, PublicState};

use crate::upstream::{allow_upstream, Upstream};
use crate::{config, text, Env};

#[tokio::test]
async fn usage_counted_before_a_durable_sleep_is_reported() {
    let env = Env::new().await;
    let scanners = Scanners::start(
        env.db.backend(),
        ScannerConfig {
            suspension_timeout: Duration::from_millis(100),
            ..ScannerConfig::default()
        },
    );
    let up = Upstream::start().await;
    allow_upstream(&env, &up).await;
    // Bytes are budgeted, requests are not: requests are counted in memory.
    let bytes = |dimension: &str| DimensionLimit {
        dimension: dimension.into(),
        soft_limit: Some(1 << 40),
        hard_limit: None,
    };
    let budget = NewBudget {
        name: "traffic".into(),
        scope: BudgetScope::Tenant,
        dimensions: vec![bytes("http_bytes_in"), bytes("http_bytes_out")],
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: None,
    };
    let budget = env
        .db
        .engine
        .create_budget(env.tenant, budget)
        .await
        .unwrap();
    let pool = env.pool(config(1));

    // A POST of `p1` (echoed back) as a step, then a durable sleep: the
    // attempt lets go of its lease, and the run after it takes the step's
    // answer from the journal without sending anything.
    let script = format!("steps:post:p1:{};sleep:300", up.url("/echo"));
    let id = env.submit("testkit", &script, 0).await;
    env.wait_state(id, PublicState::Suspended).await;
    let done = env.wait_terminal(id).await;
    assert_eq!(
        text(&done.result),
        "p1=p1,slept=300",
        "{:?}",
        done.last_failure
    );
    assert_eq!(up.hits(), 1);

    let used = env
        .db
        .engine
        .backend()
        .get_budget(env.tenant, budget.budget_id)
        .await
        .unwrap();
    let used: Vec<(&str, u64)> = used
        .dimensions
        .iter()
        .map(|d| (d.dimension.as_str(), d.used))
        .collect();
    assert_eq!(used, [("http_bytes_in", 2), ("http_bytes_out", 2)]);
    pool.shutdown().await;
    scanners.shutdown().await;
}
