//! Several statements sent to the writer's connection as one query.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every
//! statement costs the writer a hand-off to that thread and back, and with
//! one writer those hand-offs are serial: under load they, not SQLite, bound
//! how many transitions a second the embedded backend makes. A transition
//! writes its row, its lease event, its attempt and its outbox row one after
//! another with nothing read in between, so they go as one query of several
//! statements, their `?` parameters bound in the order they appear (sqlx
//! binds a multi-statement query's positional parameters statement by
//! statement).

use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Encode, Sqlite, SqliteConnection, Type};

use crate::error::{EngineError, Result};

/// Statements and their parameters, to run in one round trip.
#[derive(Default)]
pub(super) struct Writes<'q> {
    sql: String,
    args: SqliteArguments<'q>,
    /// The first parameter that could not be encoded (a JSON value that does
    /// not serialise), reported by [`Writes::run`].
    refused: Option<BoxDynError>,
}

impl<'q> Writes<'q> {
    /// Add a statement; its `?` parameters are the next values bound.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(sql);
        self
    }

    /// Bind the next `?` parameter.
    pub fn bind<T: Encode<'q, Sqlite> + Type<Sqlite> + 'q>(&mut self, value: T) -> &mut Self {
        if let Err(e) = self.args.add(value) {
            self.refused.get_or_insert(e);
        }
        self
    }

    /// Run every statement, in order, in the connection's transaction.
    pub async fn run(self, conn: &mut SqliteConnection, op: &'static str) -> Result<()> {
        if let Some(e) = self.refused {
            return Err(EngineError::storage(op)(sqlx::Error::Encode(e)));
        }
        if self.sql.is_empty() {
            return Ok(());
        }
        sqlx::query_with(&self.sql, self.args)
            .execute(conn)
            .await
            .map_err(EngineError::storage(op))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    async fn memory() -> SqliteConnection {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    async fn rows(conn: &mut SqliteConnection) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT k, v FROM t ORDER BY k")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    /// Writes that insert each `(k, v)` in turn.
    fn inserts(pairs: &[(i64, &'static str)]) -> Writes<'static> {
        let mut writes = Writes::default();
        for &(k, v) in pairs {
            writes
                .statement("INSERT INTO t (k, v) VALUES (?, ?)")
                .bind(k)
                .bind(v);
        }
        writes
    }

    #[tokio::test]
    async fn each_statement_takes_its_own_parameters_in_order() {
        let mut conn = memory().await;
        let mut writes = inserts(&[(1, "one"), (2, "two")]);
        writes
            .statement("UPDATE t SET v = ? || v WHERE k = ?")
            .bind("x")
            .bind(1_i64);
        writes.run(&mut conn, "test").await.unwrap();
        assert_eq!(
            rows(&mut conn).await,
            [(1, "xone".to_owned()), (2, "two".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_failing_statement_is_a_storage_error_that_names_the_operation() {
        let mut conn = memory().await;
        let writes = inserts(&[(1, "one"), (1, "again")]);
        let e = writes.run(&mut conn, "write twice").await.unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Storage {
                    op: "write twice",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn nothing_to_write_is_no_statement() {
        let mut conn = memory().await;
        Writes::default().run(&mut conn, "nothing").await.unwrap();
        assert!(rows(&mut conn).await.is_empty());
    }
}
