//! The migrated template every test database is cloned from, and the
//! clean-up of test databases earlier runs left on a long-lived server.

use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;
use sqlx::postgres::PgPoolOptions;

pub(crate) const TEMPLATE: &str = "flowfabric_template";

/// Migrate the template once per server (idempotent across test binaries).
pub(crate) async fn prepare_template(server: &str) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server}/postgres"))
        .await
        .expect("connect to test server");
    // Serialise template creation across concurrently starting test binaries.
    let mut conn = admin.acquire().await.expect("admin connection");
    sqlx::query("SELECT pg_advisory_lock(7243)")
        .execute(&mut *conn)
        .await
        .expect("template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(TEMPLATE)
            .fetch_one(&mut *conn)
            .await
            .expect("check template");
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
            .execute(&mut *conn)
            .await
            .expect("create template");
    }
    drop_leftover_databases(&mut conn).await;
    // Always re-run migrations: a new migration must reach an old template.
    let template = PgBackend::connect(&format!("{server}/{TEMPLATE}"), 1)
        .await
        .expect("connect template");
    template.migrate().await.expect("migrate template");
    template.pool().close().await;
    sqlx::query("SELECT pg_advisory_unlock(7243)")
        .execute(&mut *conn)
        .await
        .expect("template unlock");
}

/// How old a test database must be before a later run drops it: older than
/// any test that could still be using it.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether `name` is a test database (`t_` and a time-ordered id) created
/// more than [`LEFTOVER_AGE`] before `now` (Unix milliseconds).
fn is_leftover(name: &str, now_ms: u64) -> bool {
    let Some(id) = name
        .strip_prefix("t_")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
    else {
        return false;
    };
    match id.get_timestamp() {
        Some(created) => {
            let (secs, nanos) = created.to_unix();
            let created_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
            now_ms.saturating_sub(created_ms) > LEFTOVER_AGE.as_millis() as u64
        }
        // An id without a time, from before test databases were named by
        // time: left by an earlier run.
        None => true,
    }
}

/// Drop the test databases earlier runs left on a long-lived server (each
/// test clones one, and nothing drops it when the test ends). One still in
/// use cannot be dropped, and is left.
async fn drop_leftover_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
            .fetch_all(&mut *conn)
            .await
            .expect("list test databases");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    for name in names.iter().filter(|n| is_leftover(n, now_ms)) {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut *conn)
            .await;
    }
}

#[cfg(test)]
mod leftover_tests {
    use super::is_leftover;

    #[test]
    fn only_old_test_databases_are_leftovers() {
        let now = uuid::Uuid::now_v7();
        let now_ms = {
            let (secs, nanos) = now.get_timestamp().unwrap().to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        };
        let fresh = format!("t_{}", now.simple());
        assert!(!is_leftover(&fresh, now_ms), "a database made just now");
        assert!(
            is_leftover(&fresh, now_ms + 2 * 3600 * 1000),
            "the same, two hours on"
        );
        let untimed = format!("t_{}", uuid::Uuid::new_v4().simple());
        assert!(is_leftover(&untimed, now_ms), "named before ids had a time");
        assert!(!is_leftover("postgres", now_ms));
        assert!(!is_leftover("flowfabric_template", now_ms));
        assert!(!is_leftover("t_not_a_uuid", now_ms));
    }
}
