//! Concurrency keys through the engine, on both backends: a key never runs
//! more than its limit, even under concurrent claimers; a full key's backlog
//! does not delay other keys; what a limit holds back says so and is handed
//! on as slots free; start windows; which limit applies; bad input; tenants.

use flowfabric::backend::Sweep;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowfabric::model::{
    ConcurrencyLimit, ConcurrencyScope, ExecutionFilter, ExecutionId, KeyLimit, NewExecution,
    PublicState, TenantId, BLOCKED_BY_CONCURRENCY_KEY,
};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::Store;

use crate::{request, setup_on, task};

pub(crate) fn keyed(key: &str) -> NewExecution {
    NewExecution {
        concurrency_key: Some(key.into()),
        ..task(key)
    }
}

pub(crate) fn limit(scope: ConcurrencyScope, name: &str, max_running: u32) -> ConcurrencyLimit {
    ConcurrencyLimit {
        scope,
        name: name.into(),
        limit: KeyLimit {
            max_running,
            max_starts: None,
            window_ms: None,
        },
    }
}

/// The `echo` kind's limit: `max_running`, and `max_starts` a second.
pub(crate) fn per_second(max_running: u32, max_starts: u32) -> ConcurrencyLimit {
    let mut rule = limit(ConcurrencyScope::Kind, "echo", max_running);
    rule.limit.max_starts = Some(max_starts);
    rule.limit.window_ms = Some(1_000);
    rule
}

/// One pass of the scanner that releases held work, at most `per_tenant`
/// held keys a tenant; how many executions it released.
pub(crate) async fn release_held(engine: &Engine, per_tenant: u32) -> u64 {
    engine
        .backend()
        .release_held_keys(Sweep::every_tenant(per_tenant))
        .await
        .unwrap()
}

pub(crate) async fn set(engine: &Engine, tenant: TenantId, limit: ConcurrencyLimit) {
    engine
        .set_concurrency_limit(tenant, limit)
        .await
        .expect("set concurrency limit");
}

pub(crate) async fn submit(engine: &Engine, tenant: TenantId, key: &str) -> ExecutionId {
    engine
        .create(tenant, keyed(key))
        .await
        .unwrap()
        .execution_id
}

/// The concurrency key of each execution a claim of `n` takes.
pub(crate) async fn claim_keys(
    engine: &Engine,
    n: u32,
) -> Vec<(String, flowfabric::model::LeaseHandle)> {
    let mut out = Vec::new();
    for c in engine.claim(&request(n)).await.expect("claim") {
        let ex = engine
            .get(c.lease.tenant_id, c.lease.execution_id)
            .await
            .unwrap();
        out.push((ex.concurrency_key.unwrap_or_default(), c.lease));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn a_key_runs_at_most_its_limit_and_hands_its_slot_on(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let a: Vec<ExecutionId> = [
        submit(e, t, "a").await,
        submit(e, t, "a").await,
        submit(e, t, "a").await,
    ]
    .into();
    submit(e, t, "b").await;
    e.create(t, task("unkeyed")).await.unwrap();

    let claimed = claim_keys(e, 10).await;
    let keys: Vec<&str> = claimed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["", "a", "b"], "one of key a, the rest free");
    assert_eq!(claimed[1].1.execution_id, a[0], "the key's oldest first");

    // The two held back say why, in get and in list.
    for id in &a[1..] {
        let ex = e.get(t, *id).await.unwrap();
        assert_eq!(ex.state, PublicState::Waiting);
        assert_eq!(
            ex.blocking_reason.as_deref(),
            Some(BLOCKED_BY_CONCURRENCY_KEY)
        );
    }
    let page = ExecutionFilter {
        limit: 100,
        ..Default::default()
    };
    let listed = e.list(t, page).await.unwrap();
    let held = listed
        .iter()
        .filter(|x| x.blocking_reason.as_deref() == Some(BLOCKED_BY_CONCURRENCY_KEY))
        .count();
    assert_eq!(held, 2);
    assert!(claim_keys(e, 10).await.is_empty(), "key a is full");

    // Its run ends: the next of the key (and only it) becomes claimable.
    e.complete(&claimed[1].1, b"done").await.unwrap();
    let next = claim_keys(e, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.execution_id, a[1]);
    // A failure that retries frees the slot too.
    let failure =
        flowfabric::model::Failure::new(flowfabric::model::FailureClass::Transient, "flaky");
    e.fail(&next[0].1, failure).await.unwrap();
    let last = claim_keys(e, 10).await;
    assert_eq!(last.len(), 1, "one of key a again: {last:?}");
}

async fn concurrent_claimers_never_run_more_of_a_key_than_its_limit(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = Arc::new(db.engine.clone());
    set(&e, t, limit(ConcurrencyScope::Kind, "echo", 2)).await;
    // Each key's thirty are submitted together, so a claim without the
    // limit would take several of one key.
    let batch: Vec<NewExecution> = (0..300).map(|i| keyed(&format!("k{}", i / 30))).collect();
    for chunk in batch.chunks(100) {
        e.create_batch(t, chunk).await.unwrap();
    }
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let most = Arc::new(Mutex::new(0usize));
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let (e, running, most) = (e.clone(), running.clone(), most.clone());
        claimers.push(tokio::spawn(async move {
            let mut done = 0;
            let mut idle = 0;
            while idle < 200 {
                let claimed = claim_keys(&e, 4).await;
                if claimed.is_empty() {
                    idle += 1;
                    // A completion hands its slot to the key's next
                    // execution, skipping one a concurrent claim has
                    // locked; the scanner's pass frees what that left
                    // held, as it does in a running installation.
                    release_held(&e, 100).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for (key, _) in &claimed {
                    let mut map = running.lock().unwrap();
                    let n = map.entry(key.clone()).or_default();
                    *n += 1;
                    let mut most = most.lock().unwrap();
                    *most = (*most).max(*n);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                for (key, lease) in claimed {
                    // Counted down before the end commits: the sample can
                    // only under-count what the database holds.
                    *running.lock().unwrap().get_mut(&key).unwrap() -= 1;
                    e.complete(&lease, b"ok").await.unwrap();
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for c in claimers {
        total += c.await.unwrap();
    }
    assert_eq!(total, 300, "every execution ran once");
    let most = *most.lock().unwrap();
    assert!(most <= 2, "a key ran {most} at once under a limit of 2");
    assert!(most >= 1);
}

async fn a_full_key_with_a_backlog_does_not_delay_other_keys(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let backlog: Vec<NewExecution> = (0..100).map(|_| keyed("big")).collect();
    for _ in 0..5 {
        e.create_batch(t, &backlog).await.unwrap();
    }
    let first = claim_keys(e, 1).await;
    assert_eq!(first[0].0, "big");
    submit(e, t, "small").await;
    // The first claim that meets the full key blocks its whole queue, so
    // the one after finds the other key, however long the backlog.
    let mut found = None;
    for attempt in 1..=3 {
        if let Some((key, _)) = claim_keys(e, 5).await.pop() {
            found = Some((attempt, key));
            break;
        }
    }
    assert_eq!(found.map(|f| f.1).as_deref(), Some("small"));
    let held = e
        .list(
            t,
            ExecutionFilter {
                limit: 1_000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .iter()
        .filter(|x| x.blocking_reason.as_deref() == Some(BLOCKED_BY_CONCURRENCY_KEY))
        .count();
    assert_eq!(held, 499, "the rest of the full key waits, marked");
}

/// Give the tenant `n` executions of `key` under two starts a second, run
/// the window's two to their end, and check that the rest wait.
pub(crate) async fn use_up_a_window(e: &Engine, tenant: TenantId, key: &str, n: usize) {
    set(e, tenant, per_second(10, 2)).await;
    for _ in 0..n {
        submit(e, tenant, key).await;
    }
    let first = claim_keys(e, 20).await;
    assert_eq!(first.len(), 2, "two starts a window");
    for (_, lease) in &first {
        e.complete(lease, b"ok").await.unwrap();
    }
    assert!(claim_keys(e, 20).await.is_empty(), "the window is used up");
}

async fn starts_per_window_hold_a_key_until_the_window_rolls_over(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    use_up_a_window(e, t, "a", 5).await;
    release_held(e, 100).await;
    assert!(
        claim_keys(e, 10).await.is_empty(),
        "nothing is released inside the window"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(release_held(e, 100).await >= 2);
    assert_eq!(claim_keys(e, 10).await.len(), 2, "a new window");
}

async fn the_kinds_limit_applies_before_the_lanes(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Lane, "default", 1)).await;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 2)).await;
    for _ in 0..4 {
        submit(e, t, "a").await;
    }
    let other_kind = NewExecution {
        kind: "other".into(),
        ..keyed("a")
    };
    for _ in 0..3 {
        e.create(t, other_kind.clone()).await.unwrap();
    }
    let claimed = claim_keys(e, 10).await;
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, lease) in &claimed {
        let ex = e.get(t, lease.execution_id).await.unwrap();
        *kinds.entry(ex.kind).or_default() += 1;
    }
    assert_eq!(kinds.get("echo"), Some(&2), "the kind's limit: {kinds:?}");
    assert_eq!(kinds.get("other"), Some(&1), "the lane's limit: {kinds:?}");
    let listed = e.list_concurrency_limits(t).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].scope, ConcurrencyScope::Kind);
}

async fn deleting_or_raising_a_limit_frees_what_it_held(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    for _ in 0..4 {
        submit(e, t, "a").await;
    }
    assert_eq!(claim_keys(e, 10).await.len(), 1);
    assert!(claim_keys(e, 10).await.is_empty());
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 2)).await;
    assert_eq!(claim_keys(e, 10).await.len(), 1, "raised to two");
    e.delete_concurrency_limit(t, ConcurrencyScope::Kind, "echo")
        .await
        .unwrap();
    assert_eq!(claim_keys(e, 10).await.len(), 2, "no limit any more");
    let gone = e
        .delete_concurrency_limit(t, ConcurrencyScope::Kind, "echo")
        .await;
    assert!(
        matches!(gone, Err(EngineError::NotFound { .. })),
        "{gone:?}"
    );
}

async fn bad_limits_and_keys_are_refused_and_tenants_stay_apart(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let field = |r: Result<ConcurrencyLimit, EngineError>| match r {
        Err(EngineError::InvalidInput { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut bad = limit(ConcurrencyScope::Kind, "echo", 0);
    assert_eq!(
        field(e.set_concurrency_limit(t, bad.clone()).await),
        "max_running"
    );
    bad = limit(ConcurrencyScope::Lane, "no spaces", 1);
    assert_eq!(field(e.set_concurrency_limit(t, bad).await), "lane");
    bad = limit(ConcurrencyScope::Kind, "echo", 1);
    bad.limit.window_ms = Some(500);
    assert_eq!(field(e.set_concurrency_limit(t, bad).await), "window_ms");
    assert_eq!(db.count("concurrency_limits").await, 0, "nothing written");
    let long = NewExecution {
        concurrency_key: Some("k".repeat(257)),
        ..task("x")
    };
    match e.create(t, long).await {
        Err(EngineError::InvalidInput { field, .. }) => assert_eq!(field, "concurrency_key"),
        other => panic!("{other:?}"),
    }

    // Another tenant's limit, and its key of the same name, are its own.
    let other = db.tenant("globex").await;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    submit(e, t, "shared").await;
    submit(e, t, "shared").await;
    submit(e, other, "shared").await;
    submit(e, other, "shared").await;
    assert!(e.list_concurrency_limits(other).await.unwrap().is_empty());
    let claimed = claim_keys(e, 10).await;
    let per_tenant = |tenant: TenantId| {
        claimed
            .iter()
            .filter(|(_, l)| l.tenant_id == tenant)
            .count()
    };
    assert_eq!(per_tenant(t), 1, "acme's limit");
    assert_eq!(per_tenant(other), 2, "globex has none");
}

async fn a_schedules_executions_carry_its_concurrency_key(store: Store) {
    use flowfabric::model::{
        Cadence, MissedPolicy, NewSchedule, OverlapPolicy, ScheduledExecution,
    };
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let spec = NewSchedule {
        name: "sync".into(),
        cadence: Cadence::Interval {
            every_ms: 3_600_000,
        },
        jitter_ms: 0,
        missed: MissedPolicy::Skip,
        overlap: OverlapPolicy::Allow,
        execution: ScheduledExecution {
            kind: "echo".into(),
            lane: "default".into(),
            input: b"sync".to_vec(),
            priority: 0,
            tags: Default::default(),
            policy: Default::default(),
            concurrency_key: Some("customer-9".into()),
        },
    };
    let schedule = e.create_schedule(t, spec).await.unwrap();
    let first = e.trigger_schedule(t, schedule.schedule_id).await.unwrap();
    let second = e.trigger_schedule(t, schedule.schedule_id).await.unwrap();
    let claimed = claim_keys(e, 10).await;
    assert_eq!(claimed.len(), 1, "one of the key at a time");
    assert_eq!(claimed[0].0, "customer-9");
    assert_eq!(claimed[0].1.execution_id, first.execution_id);
    let held = e.get(t, second.execution_id).await.unwrap();
    assert_eq!(
        held.blocking_reason.as_deref(),
        Some(BLOCKED_BY_CONCURRENCY_KEY)
    );
}

/// Batches that end runs of the same keys in different orders: the slots
/// are counted out in key order, so they wait for each other instead of
/// deadlocking. (Per-row counting deadlocked under `bench engine --keys 10`
/// in a release build; this smaller run did not catch that reliably, and
/// stays as a check that batches over shared keys all complete.)
async fn batched_completions_across_keys_never_deadlock(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = Arc::new(db.engine.clone());
    set(&e, t, limit(ConcurrencyScope::Kind, "echo", 1_000)).await;
    let batch: Vec<NewExecution> = (0..100).map(|i| keyed(&format!("k{}", i % 10))).collect();
    for _ in 0..20 {
        e.create_batch(t, &batch).await.unwrap();
    }
    let mut loops = Vec::new();
    for _ in 0..4 {
        let e = e.clone();
        loops.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let claimed = e.claim(&request(100)).await.expect("claim");
                if claimed.is_empty() {
                    return done;
                }
                let ends: Vec<_> = claimed
                    .iter()
                    .map(|c| (c.lease.clone(), &b"ok"[..]))
                    .collect();
                for written in e.complete_many(&ends).await.expect("complete many") {
                    written.expect("completed");
                }
                done += claimed.len();
            }
        }));
    }
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    assert_eq!(total, 2_000);
}

/// Only a run that ends gives its slot back. Writes that leave a keyed run
/// running (lease renewals, progress) keep it counted, and a batch of ends
/// frees one slot per run it ended, not per row it touched: a completion
/// batch whose other lease is stale ends one run and frees one slot.
async fn only_runs_that_end_give_their_slots_back(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 2)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(e, t, "a").await);
    }
    let running = claim_keys(e, 10).await;
    assert_eq!(running.len(), 2, "the key's limit: {running:?}");
    let (first, second) = (&running[0].1, &running[1].1);

    for lease in [first, second] {
        e.renew(lease, Duration::from_secs(30)).await.unwrap();
        e.set_progress(lease, 50, "halfway").await.unwrap();
    }
    assert!(
        claim_keys(e, 10).await.is_empty(),
        "renewals and progress free no slot"
    );

    // One batch: the first run ends; the second's lease is from an older
    // epoch, so that write is fenced out and the run goes on.
    let mut stale = second.clone();
    stale.lease_epoch -= 1;
    let written = e
        .complete_many(&[(first.clone(), &b"ok"[..]), (stale, &b"ok"[..])])
        .await
        .unwrap();
    assert!(written[0].is_ok(), "{written:?}");
    assert!(written[1].is_err(), "{written:?}");
    let next = claim_keys(e, 10).await;
    assert_eq!(next.len(), 1, "one run ended, one slot free: {next:?}");
    assert!(claim_keys(e, 10).await.is_empty(), "the key is full again");

    // Both remaining runs end in one batch: two slots, two more runs.
    let written = e
        .complete_many(&[
            (second.clone(), &b"ok"[..]),
            (next[0].1.clone(), &b"ok"[..]),
        ])
        .await
        .unwrap();
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    assert_eq!(claim_keys(e, 10).await.len(), 2);
}

on_both_backends!(
    batched_completions_across_keys_never_deadlock,
    only_runs_that_end_give_their_slots_back,
    a_schedules_executions_carry_its_concurrency_key,
    a_key_runs_at_most_its_limit_and_hands_its_slot_on,
    concurrent_claimers_never_run_more_of_a_key_than_its_limit,
    a_full_key_with_a_backlog_does_not_delay_other_keys,
    starts_per_window_hold_a_key_until_the_window_rolls_over,
    the_kinds_limit_applies_before_the_lanes,
    deleting_or_raising_a_limit_frees_what_it_held,
    bad_limits_and_keys_are_refused_and_tenants_stay_apart,
);
