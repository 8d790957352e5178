//! The engine's connection pool: it survives connections the server dropped,
//! rolls back what a caller let go of, and closes old and idle connections.

use std::time::Duration;

use flowfabric::backend::pool::Lifetimes;
use flowfabric::backend::postgres::{Connections, PgBackend};

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
            .execute(db.pg_backend_connections())
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

/// Holds the advisory lock `key` until its transaction ends.
const LOCK: &str = "SELECT pg_advisory_xact_lock(4242)";
const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock(4242)";

/// Whether another session can take the lock, trying for up to five seconds.
async fn lock_freed(db: &flowfabric_tests::TestDb) -> bool {
    for _ in 0..100 {
        let taken: bool = sqlx::query_scalar(TRY_LOCK)
            .fetch_one(db.pg())
            .await
            .unwrap();
        if taken {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A transaction its caller let go of without ending it (a dropped future)
/// is rolled back at once, not when the connection is next used: until then
/// the rows and locks it held would stay held.
#[tokio::test]
async fn a_connection_let_go_mid_transaction_is_rolled_back_at_once() {
    let (db, _t) = setup().await;
    let connections = db.pg_backend_connections();
    {
        let mut conn = connections.acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query(LOCK).execute(&mut *tx).await.unwrap();
        let held: bool = sqlx::query_scalar(TRY_LOCK)
            .fetch_one(db.pg())
            .await
            .unwrap();
        assert!(!held, "the transaction holds the lock");
    }
    assert!(
        lock_freed(&db).await,
        "the abandoned transaction still held its lock"
    );
}

/// A statement whose future was dropped mid-way leaves its connection to be
/// brought back in step before anyone uses it again: the next statement gets
/// its own answer, not the abandoned one's.
#[tokio::test]
async fn a_statement_dropped_mid_way_leaves_its_connection_usable() {
    let (db, _t) = setup().await;
    let (connections, _backend) = db.one_connection_backend().await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.5)").fetch_one(&connections),
    )
    .await;
    assert!(abandoned.is_err(), "the slow statement was dropped mid-way");
    let answer: i32 = sqlx::query_scalar("SELECT 7")
        .fetch_one(&connections)
        .await
        .unwrap();
    assert_eq!(answer, 7);
}

/// A connection left inside a transaction nothing owns (a `begin` whose
/// future was dropped after the database began, before sqlx made its
/// `Transaction`) is closed on its way back, not handed to the next user,
/// whose statements would run inside that transaction and never commit.
#[tokio::test]
async fn a_connection_left_inside_an_unowned_transaction_is_not_reused() {
    use sqlx::{Connection as _, TransactionManager as _};
    let (db, _t) = setup().await;
    let (connections, _backend) = db.one_connection_backend().await;
    let pid = server_pid(&connections).await;
    {
        let mut conn = connections.acquire().await.unwrap();
        // What such a dropped `begin` leaves: the transaction begun, no
        // `Transaction` to end it.
        sqlx::postgres::PgTransactionManager::begin(&mut conn, None)
            .await
            .unwrap();
        assert!(conn.is_in_transaction());
    }
    assert!(
        server_process_ends(&db, pid).await,
        "the connection was closed"
    );
    let conn = connections.acquire().await.unwrap();
    assert!(!conn.is_in_transaction(), "the next user starts clean");
    drop(conn);
    assert_ne!(server_pid(&connections).await, pid, "a new connection");
}

/// A pool of its own on the test database, its connections living as
/// `lifetimes` says.
fn pool_living(db: &flowfabric_tests::TestDb, lifetimes: Lifetimes) -> Connections {
    let options = PgBackend::connect_options(db.pg_url()).expect("test database url");
    Connections::with_lifetimes(options, 2, Duration::from_secs(10), lifetimes)
}

/// The server process behind the connection a statement ran on.
async fn server_pid(connections: &Connections) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(connections)
        .await
        .unwrap()
}

/// Whether the server process `pid` ends within five seconds.
async fn server_process_ends(db: &flowfabric_tests::TestDb, pid: i32) -> bool {
    for _ in 0..100 {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(db.pg())
                .await
                .unwrap();
        if !alive {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_connection_past_its_lifetime_is_replaced_and_closed() {
    let (db, _t) = setup().await;
    let connections = pool_living(
        &db,
        Lifetimes {
            max_lifetime: Duration::from_millis(300),
            ..Lifetimes::default()
        },
    );
    let first = server_pid(&connections).await;
    assert_eq!(
        server_pid(&connections).await,
        first,
        "a young connection is used again"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_ne!(
        server_pid(&connections).await,
        first,
        "a connection past its lifetime was used again"
    );
    assert!(
        server_process_ends(&db, first).await,
        "the replaced connection was left open on the server"
    );
}

#[tokio::test]
async fn a_connection_unused_past_the_idle_timeout_is_closed() {
    let (db, _t) = setup().await;
    let connections = pool_living(
        &db,
        Lifetimes {
            idle_timeout: Duration::from_millis(200),
            idle_check_every: Duration::from_millis(50),
            ..Lifetimes::default()
        },
    );
    let pid = server_pid(&connections).await;
    assert!(
        server_process_ends(&db, pid).await,
        "an idle connection stayed open past the idle timeout"
    );
    // The pool opens a new one when it is next needed.
    assert_ne!(server_pid(&connections).await, pid);
}
