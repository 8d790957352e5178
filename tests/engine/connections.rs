//! The engine's connection pool survives connections the server dropped.

use std::time::Duration;

use crate::{setup, task};

/// Every connection of the engine's pool that is not running this query,
/// closed from the server side, as a restarted server or a cut link would.
async fn terminate_pooled_connections(db: &flowfabric_tests::TestDb) -> u64 {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND query NOT LIKE 'LISTEN%'",
    )
    .execute(db.pg())
    .await
    .unwrap()
    .rows_affected()
}

#[tokio::test]
async fn idle_connections_the_server_dropped_are_replaced_not_returned_as_errors() {
    let (db, t) = setup().await;
    let id = db.engine.create(t, task("x")).await.unwrap().execution_id;
    // Open several connections: the pool hands out the idle ones in turn.
    let hold = |_| async {
        sqlx::query("SELECT pg_sleep(0.05)")
            .execute(db.pg())
            .await
            .unwrap()
    };
    futures::future::join_all((0..8).map(hold)).await;
    assert!(terminate_pooled_connections(&db).await >= 7);

    // Idle past the ping threshold: each is pinged before use, and a dead one
    // is swapped for a new connection.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let reads = (0..8).map(|_| db.engine.get(t, id));
    for read in futures::future::join_all(reads).await {
        read.expect("a dropped connection was replaced, not returned");
    }
}
