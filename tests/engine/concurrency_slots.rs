//! How a claim and a run's end meet on a key's slot row in Postgres, where
//! they lock it: a slot freed while a claim holds it, a held slot passed or
//! waited for (with a bound), a missing slot made. SQLite has one writer and
//! no such meetings.

use std::time::Duration;

use flowfabric::model::{
    ConcurrencyScope, ExecutionId, PublicState, TenantId, BLOCKED_BY_CONCURRENCY_KEY,
};

use crate::concurrency::{claim_keys, limit, set, submit};

/// Binds `$metrics` to a handle of what this thread records until the end
/// of the test (a test's runtime has one thread, where its claims run and
/// count).
macro_rules! record_metrics {
    ($metrics:ident) => {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let $metrics = recorder.handle();
        let _recording = metrics::set_default_local_recorder(&recorder);
    };
}

/// A run that ends while a claim holds its key's slot waits for that claim,
/// then gives the slot back. The version it locks is then newer than its
/// statement's snapshot; counted down by the row id it locked, in the same
/// statement, the count was lost: the key stayed full with nothing running,
/// and its queue was held back for good.
#[tokio::test]
async fn a_slot_freed_while_a_claim_holds_it_is_given_back_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    submit(e, t, "a").await;
    let second = submit(e, t, "a").await;
    let claimed = claim_keys(e, 10).await;
    assert_eq!(claimed.len(), 1, "one of key a runs");

    // A claim holding the slot: its row updated by a transaction left open.
    let holder = hold_slots(&db, t).await;
    let ending = {
        let (e, lease) = (e.clone(), claimed[0].1.clone());
        tokio::spawn(async move { e.complete(&lease, b"done").await })
    };
    crate::wait_for_a_lock_wait(&db).await;
    holder.commit().await.unwrap();
    ending.await.unwrap().expect("the run ends");

    let running = slot_running(&db, t, "a").await;
    assert_eq!(running, 0, "the slot was given back");
    let next = claim_keys(e, 10).await;
    assert_eq!(next.len(), 1, "the key's next runs");
    assert_eq!(next[0].1.execution_id, second);
}

/// A claim that finds its key's slot held by another claim (or a run's end)
/// for longer than its short wait passes the key and leaves its work
/// runnable, not held back; the next claim takes it.
#[tokio::test]
async fn a_claim_passes_a_held_slot_and_leaves_its_work_runnable_on_postgres() {
    record_metrics!(metrics);
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 5)).await;
    let queued = submit(e, t, "a").await;
    let holder = hold_slots(&db, t).await;
    let claimed = tokio::time::timeout(Duration::from_secs(5), claim_keys(e, 10))
        .await
        .expect("the claim does not wait long for the slot");
    assert!(claimed.is_empty(), "the held key is passed");
    let ex = e.get(t, queued).await.unwrap();
    assert_eq!(ex.state, PublicState::Waiting);
    assert_ne!(
        ex.blocking_reason.as_deref(),
        Some(BLOCKED_BY_CONCURRENCY_KEY)
    );
    holder.commit().await.unwrap();
    let next = claim_keys(e, 10).await;
    assert_eq!(next.len(), 1, "the next claim takes the key's work");
    assert_eq!(next[0].1.execution_id, queued);
    assert_eq!(reruns(&metrics, "held_slot"), 1);
}

/// A claim waits for a held slot, but gives way before a lock cycle could
/// abort anyone. Here the slot's holder goes on to update the claim's
/// candidate, as the schedule scanner cancels an overlapping schedule's
/// previous run after counting another run's end: the claim's wait runs out,
/// it claims again (passing the slot, or taking it if the holder has
/// committed by then), and the holder's update and commit go through well
/// before Postgres's deadlock check (1 s) would abort a side.
#[tokio::test]
async fn a_claim_waits_for_a_held_slot_and_gives_way_to_its_holder_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 5)).await;
    let queued = submit(e, t, "a").await;
    let mut holder = hold_slots(&db, t).await;
    let holder_goes_on = async {
        // The claim waits for the slot (a claim that passed at once would
        // never show here).
        crate::wait_for_a_lock_wait(&db).await;
        let started = tokio::time::Instant::now();
        sqlx::query(
            "UPDATE executions SET priority = priority + 1 \
             WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(t)
        .bind(queued)
        .execute(&mut *holder)
        .await
        .expect("the holder's update is not aborted");
        let waited = started.elapsed();
        holder.commit().await.expect("the holder commits");
        waited
    };
    let (claimed, waited) = tokio::join!(claim_keys(e, 10), holder_goes_on);
    assert!(
        waited < Duration::from_millis(800),
        "the claim gave way after {waited:?}"
    );
    let next = claim_keys(e, 10).await;
    let taken: Vec<ExecutionId> = claimed
        .iter()
        .chain(&next)
        .map(|(_, lease)| lease.execution_id)
        .collect();
    assert_eq!(taken, [queued], "taken once, by one claim or the next");
}

/// A claim that reads its slots first (as claims do for a while after one
/// met a full key) counts a key's room off its snapshot and locks the key's
/// slot only if the room looks short. Should another claim fill the key
/// after that snapshot, the count at the end finds the slot full on the row
/// as last committed: the claim starts over locking every slot, and the
/// key's work is held back, never run past the limit.
#[tokio::test]
async fn a_room_taken_after_the_claims_snapshot_is_not_overrun_on_postgres() {
    record_metrics!(metrics);
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    meet_a_full_key(e, t, "b").await;
    let queued = submit(e, t, "a").await;
    // Another claim that took the key's room: its count not yet committed.
    let mut other = db.pg().begin().await.unwrap();
    sqlx::query("UPDATE concurrency_slots SET running = 1 WHERE tenant_id = $1 AND key = 'a'")
        .bind(t)
        .execute(&mut *other)
        .await
        .unwrap();
    let other_commits = async {
        crate::wait_for_a_lock_wait(&db).await;
        other.commit().await.unwrap();
    };
    let (claimed, ()) = tokio::join!(claim_keys(e, 10), other_commits);
    assert!(claimed.is_empty(), "the key was full: {claimed:?}");
    let running = slot_running(&db, t, "a").await;
    assert_eq!(running, 1, "only the other claim's run is counted");
    let ex = e.get(t, queued).await.unwrap();
    assert_eq!(ex.state, PublicState::Waiting);
    assert_eq!(
        ex.blocking_reason.as_deref(),
        Some(BLOCKED_BY_CONCURRENCY_KEY)
    );
    assert_eq!(reruns(&metrics, "room_taken"), 1);
}

/// A claim that reads its slots first waits for a tight key's slot that a
/// run's end holds, and finds it counted down once that end commits: the
/// key has room again, and the claim takes it. Its count into the slot is
/// checked on the count written, not on the slot as its snapshot saw it
/// (still full): checked there, the slot was passed over, and the claim
/// undone and run again for a room that was never taken.
#[tokio::test]
async fn a_slot_counted_down_after_the_claims_snapshot_is_taken_at_once_on_postgres() {
    record_metrics!(metrics);
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    meet_a_full_key(e, t, "b").await;
    submit(e, t, "a").await;
    submit(e, t, "a").await;
    let count_a = |running: i32| {
        sqlx::query("UPDATE concurrency_slots SET running = $2 WHERE tenant_id = $1 AND key = 'a'")
            .bind(t)
            .bind(running)
    };
    // One of key a runs: the key is full as the claim's snapshot sees it.
    count_a(1).execute(db.pg()).await.unwrap();
    // Its end, counting it out, not yet committed.
    let mut ending = db.pg().begin().await.unwrap();
    count_a(0).execute(&mut *ending).await.unwrap();
    let end_commits = async {
        crate::wait_for_a_lock_wait(&db).await;
        ending.commit().await.unwrap();
    };
    let (claimed, ()) = tokio::join!(claim_keys(e, 10), end_commits);
    assert_eq!(
        reruns(&metrics, "room_taken"),
        0,
        "the claim was not undone"
    );
    if reruns(&metrics, "held_slot") == 0 {
        assert_eq!(claimed.len(), 1, "the room the end gave back: {claimed:?}");
        assert_eq!(slot_running(&db, t, "a").await, 1);
    }
}

/// A claim first only counts its runs into their keys' slots, reading none
/// before. When a key has less room than the claim took, the count fails
/// and the claim runs again reading its slots: the key runs up to its limit
/// and the rest of its queue is held back. The next claims read first too,
/// while keys keep binding; eight in a row that find none go back to
/// counting only.
#[tokio::test]
async fn a_count_only_claim_that_meets_a_full_key_claims_again_reading_its_slots_on_postgres() {
    record_metrics!(metrics);
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 2)).await;
    for key in ["a", "b"] {
        submit(e, t, key).await;
    }
    let roomy = claim_keys(e, 10).await;
    assert_eq!(roomy.len(), 2, "room for both");
    assert_eq!(reruns(&metrics, "room_short"), 0, "counted only, at once");

    meet_a_full_key(e, t, "c").await;
    assert_eq!(reruns(&metrics, "room_short"), 1);
    assert_eq!(slot_running(&db, t, "c").await, 2, "the limit, not past it");
    // Reading first, the next claim holds a full key back without a rerun,
    // and starts the count of claims that read first again.
    for _ in 0..3 {
        submit(e, t, "d").await;
    }
    assert_eq!(claim_keys(e, 10).await.len(), 2);
    assert_eq!(reruns(&metrics, "room_short"), 1, "read first");
    for _ in 0..8 {
        assert!(claim_keys(e, 10).await.is_empty());
    }
    meet_a_full_key(e, t, "e").await;
    assert_eq!(reruns(&metrics, "room_short"), 2, "counting only again");
}

/// Claims that meet `key` full: one more of it than the limit of 2 (or 1)
/// allows is submitted and claimed, and the rest is held back.
async fn meet_a_full_key(e: &flowfabric::engine::Engine, t: TenantId, key: &str) {
    for _ in 0..3 {
        submit(e, t, key).await;
    }
    let claimed = claim_keys(e, 10).await;
    assert!(
        matches!(claimed.len(), 1 | 2) && claimed.iter().all(|(k, _)| k == key),
        "{claimed:?}"
    );
    let held = e
        .list(
            t,
            flowfabric::model::ExecutionFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .iter()
        .filter(|x| {
            x.concurrency_key.as_deref() == Some(key)
                && x.blocking_reason.as_deref() == Some(BLOCKED_BY_CONCURRENCY_KEY)
        })
        .count();
    assert_eq!(held, 3 - claimed.len(), "the rest of {key} is held back");
}

/// A keyed claim reads each candidate's slot with a probe of its own, and
/// counts its runs in by key: with thousands of slots, a join that hashed a
/// scan of all of them made a claim of 100 cost twice as much.
#[tokio::test]
async fn a_keyed_claim_probes_its_slots_by_key_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 5)).await;
    let backlog: Vec<_> = (0..3_000)
        .map(|i| crate::concurrency::keyed(&format!("key-{i}")))
        .collect();
    for chunk in backlog.chunks(500) {
        e.create_batch(t, chunk).await.unwrap();
    }
    let backend = db.analysed_backend("executions, concurrency_slots").await;
    for n in [1, 100] {
        let plan = backend.explain_claim(&crate::request(n)).await.unwrap();
        assert!(plan.contains("CTE seen"), "the keyed shape:\n{plan}");
        assert!(
            !plan.contains("Seq Scan on concurrency_slots"),
            "a claim of {n} scans every slot:\n{plan}"
        );
    }
}

/// The running count of the tenant's slot of `key`.
async fn slot_running(db: &flowfabric_tests::TestDb, tenant: TenantId, key: &str) -> i32 {
    sqlx::query_scalar("SELECT running FROM concurrency_slots WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .fetch_one(db.pg())
        .await
        .unwrap()
}

/// How many keyed claims ran again, for `why`.
fn reruns(metrics: &metrics_exporter_prometheus::PrometheusHandle, why: &str) -> u64 {
    let series = format!("flowfabric_keyed_claims_rerun_total{{why=\"{why}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.parse().expect("a count"))
}

/// The tenant's slots as a claim holds them: updated by a transaction left
/// open until it is committed.
async fn hold_slots(
    db: &flowfabric_tests::TestDb,
    tenant: TenantId,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = db.pg().begin().await.unwrap();
    sqlx::query("UPDATE concurrency_slots SET running = running WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// A key whose slot is missing (its submit raced a cleanup, or the row was
/// lost) is passed over by the claim that finds it so, which makes the slot;
/// the next claim takes the key under its limit.
#[tokio::test]
async fn a_missing_slot_is_made_by_the_claim_that_finds_it_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    set(e, t, limit(ConcurrencyScope::Kind, "echo", 1)).await;
    submit(e, t, "a").await;
    submit(e, t, "a").await;
    sqlx::query("DELETE FROM concurrency_slots WHERE tenant_id = $1")
        .bind(t)
        .execute(db.pg())
        .await
        .unwrap();
    assert!(claim_keys(e, 10).await.is_empty(), "passed over");
    let slots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM concurrency_slots \
         WHERE tenant_id = $1 AND scope = 'kind' AND key = 'a' AND running = 0",
    )
    .bind(t)
    .fetch_one(db.pg())
    .await
    .unwrap();
    assert_eq!(slots, 1, "the claim made the slot");
    assert_eq!(
        claim_keys(e, 10).await.len(),
        1,
        "one of the key, its limit"
    );
}
