//! The scanner pass that releases what concurrency keys hold back, on both
//! backends: every tenant's held keys and every key of a tenant are looked
//! at in turn, and the pass finds them one index probe at a time, however
//! much each holds back.

use std::time::Duration;

use flowfabric::model::{ConcurrencyScope, NewExecution};
use flowfabric_tests::Store;

use crate::concurrency::{
    claim_keys, keyed, limit, per_second, release_held, set, submit, use_up_a_window,
};
use crate::setup_on;

/// The pass that releases held executions looks at every tenant's held
/// keys: a tenant with more held keys than the pass takes (none of them with
/// room) does not keep another tenant's key, whose window rolled over, held.
async fn a_tenant_with_many_held_keys_does_not_hold_back_anothers(store: Store) {
    let (db, _) = setup_on(store).await;
    let e = &db.engine;
    // Made first, so its keys come first in the held keys' index.
    let crowded = db.tenant("a-crowded").await;
    set(e, crowded, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    for key in ["k0", "k1", "k2", "k3", "k4"] {
        submit(e, crowded, key).await;
        submit(e, crowded, key).await;
    }
    assert_eq!(claim_keys(e, 20).await.len(), 5, "one of each key runs");
    assert!(claim_keys(e, 20).await.is_empty(), "the rest are held");

    let windowed = db.tenant("b-windowed").await;
    use_up_a_window(e, windowed, "w", 4).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Three held keys a tenant a pass: the crowded tenant's five fill it.
    release_held(e, 3).await;
    let released = claim_keys(e, 20).await;
    assert_eq!(released.len(), 2, "a new window for the other tenant");
    assert!(released.iter().all(|(key, _)| key == "w"));
}

/// The pass takes so many held keys a tenant. A tenant with more held keys
/// than that, none with room, does not keep its own later key held once that
/// key's window rolls over: each pass goes on where the last one stopped.
async fn every_held_key_of_a_tenant_is_looked_at_in_turn(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, per_second(1, 1)).await;
    // `w` sorts after every `k`, so it comes last in the held keys' index.
    for key in ["k0", "k1", "k2", "k3", "k4", "w"] {
        submit(e, t, key).await;
        submit(e, t, key).await;
    }
    let first = claim_keys(e, 20).await;
    assert_eq!(first.len(), 6, "one of each key runs");
    assert!(claim_keys(e, 20).await.is_empty(), "the rest are held");
    let (_, w) = first.iter().find(|(key, _)| key == "w").unwrap();
    e.complete(w, b"ok").await.unwrap();
    assert!(claim_keys(e, 20).await.is_empty(), "w's window is used up");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Three held keys a pass; the five `k` keys still run one each.
    for _ in 0..3 {
        release_held(e, 3).await;
    }
    let released = claim_keys(e, 20).await;
    assert_eq!(released.len(), 1, "w has a new window");
    assert_eq!(released[0].0, "w");
}

/// The held-keys pass finds a tenant's held groups one index probe a group,
/// however many executions each holds back: a tenant with a large backlog
/// behind one key does not make every pass read all of it (a `DISTINCT`
/// over the held executions did). Planned with and without statistics.
#[tokio::test]
async fn the_held_keys_pass_steps_from_group_to_group_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let backlog: Vec<NewExecution> = (0..2_000).map(|i| keyed(&format!("k{}", i % 2))).collect();
    for chunk in backlog.chunks(500) {
        e.create_batch(t, chunk).await.unwrap();
    }
    assert_eq!(claim_keys(e, 10).await.len(), 2, "one of each key runs");
    let backend = flowfabric::backend::postgres::PgBackend::connect(db.pg_url(), 2)
        .await
        .unwrap();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(db.pg()).await.unwrap();
        }
        let plan = backend.explain_held_keys_pass(500).await.unwrap();
        let groups = plan
            .split("CTE freed")
            .next()
            .and_then(|p| p.split("CTE groups").nth(1))
            .unwrap_or(&plan);
        assert!(
            groups.contains("Recursive Union")
                && groups.contains("executions_concurrency_held_groups_idx"),
            "the groups are walked on their index (analyzed: {analyzed}):\n{plan}"
        );
        let scans = [
            "Aggregate",
            "Unique",
            "Sort",
            "Bitmap Heap Scan",
            "Seq Scan on executions",
        ];
        for reads_all in scans {
            assert!(
                !groups.contains(reads_all),
                "finding the groups reads every held execution ({reads_all}, \
                 analyzed: {analyzed}):\n{plan}"
            );
        }
    }
}

/// As on Postgres, SQLite finds the tenants with held work and each
/// tenant's held groups one index probe at a time: each step of the groups'
/// walk searches `executions_concurrency_held_groups_idx` bounded by the
/// whole group, and nothing scans the held executions.
#[tokio::test]
async fn the_held_keys_pass_steps_from_group_to_group_on_sqlite() {
    let (db, t) = setup_on(Store::Sqlite).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let backlog: Vec<NewExecution> = (0..600).map(|i| keyed(&format!("k{}", i % 2))).collect();
    e.create_batch(t, &backlog).await.unwrap();
    assert_eq!(claim_keys(e, 10).await.len(), 2, "one of each key runs");
    let backend = flowfabric::backend::sqlite::SqliteBackend::open(&db.sqlite_path())
        .await
        .unwrap();
    let plan = backend.explain_held_keys_pass().await.unwrap();
    let whole_group = "USING COVERING INDEX executions_concurrency_held_groups_idx \
                       (tenant_id=? AND (concurrency_key,kind,lane)>(?,?,?))";
    assert_eq!(
        plan.lines().filter(|l| l.ends_with(whole_group)).count(),
        2,
        "both steps of the groups' walk probe the index by the whole group:\n{plan}"
    );
    assert!(
        plan.lines()
            .any(|l| l.starts_with("SEARCH x USING") && l.ends_with("(tenant_id>?)")),
        "the next tenant is one probe:\n{plan}"
    );
    for reads_all in ["SCAN executions", "SCAN x", "TEMP B-TREE"] {
        assert!(!plan.contains(reads_all), "{reads_all}:\n{plan}");
    }
}

/// A run's end hands its key on to what the same limit holds back, looking
/// through at most 1,000 of the key's held executions (in claim order): a
/// key holding back a great many of another kind ahead of them does not make
/// every end read them all. Past the bound, the held-keys pass frees it.
async fn a_runs_end_looks_through_a_bounded_part_of_its_keys_backlog(store: Store) {
    for (ahead, freed_by_the_end) in [(10, true), (1_100, false)] {
        let (db, t) = setup_on(store).await;
        let e = &db.engine;
        set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
        set(e, t, limit(ConcurrencyScope::Kind, "sync", 1)).await;
        // One echo runs; `ahead` more are held, older than any sync.
        let echoes: Vec<NewExecution> = (0..=ahead).map(|_| keyed("k")).collect();
        for chunk in echoes.chunks(500) {
            e.create_batch(t, chunk).await.unwrap();
        }
        let sync = || NewExecution {
            kind: "sync".into(),
            ..keyed("k")
        };
        e.create_batch(t, &[sync(), sync()]).await.unwrap();
        let mut running = Vec::new();
        loop {
            let claimed = e.claim(&crate::request(100)).await.unwrap();
            if claimed.is_empty() {
                break;
            }
            running.extend(claimed);
        }
        let kinds: Vec<&str> = running.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds.len(), 2, "one of each kind runs: {kinds:?}");
        let running_sync = running.iter().find(|c| c.kind == "sync").unwrap();

        e.complete(&running_sync.lease, b"ok").await.unwrap();
        let next = e.claim(&crate::request(100)).await.unwrap();
        assert_eq!(
            next.len(),
            usize::from(freed_by_the_end),
            "with {ahead} held ahead, the end hands the key on: {freed_by_the_end}"
        );
        if !freed_by_the_end {
            release_held(e, 500).await;
            let next = e.claim(&crate::request(100)).await.unwrap();
            assert_eq!(next.len(), 1, "the pass frees the held sync");
            assert_eq!(next[0].kind, "sync");
        } else {
            assert_eq!(next[0].kind, "sync");
        }
    }
}

/// Deleting a limit frees at once at most 1,000 of what it held back, so one
/// API call is never one unbounded update; the held-keys pass frees the
/// rest.
async fn a_limit_change_frees_a_bounded_part_at_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    let held = 1_100;
    let echoes: Vec<NewExecution> = (0..=held).map(|_| keyed("k")).collect();
    for chunk in echoes.chunks(500) {
        e.create_batch(t, chunk).await.unwrap();
    }
    assert_eq!(claim_all(e).await, 1, "one runs, the rest are held");

    e.delete_concurrency_limit(t, ConcurrencyScope::Kind, "echo")
        .await
        .unwrap();
    assert_eq!(claim_all(e).await, 1_000, "freed at once");
    release_held(e, 500).await;
    assert_eq!(claim_all(e).await, held - 1_000, "freed by the pass");
}

/// Claims until nothing is claimable; how many were claimed.
async fn claim_all(e: &flowfabric::Engine) -> usize {
    let mut claimed = 0;
    loop {
        let batch = e.claim(&crate::request(100)).await.unwrap();
        if batch.is_empty() {
            return claimed;
        }
        claimed += batch.len();
    }
}

on_both_backends!(
    a_tenant_with_many_held_keys_does_not_hold_back_anothers,
    every_held_key_of_a_tenant_is_looked_at_in_turn,
    a_runs_end_looks_through_a_bounded_part_of_its_keys_backlog,
    a_limit_change_frees_a_bounded_part_at_once,
);
