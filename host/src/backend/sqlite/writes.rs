//! Several statements sent to the writer's connection as one batch.
//!
//! A transition writes its row, its lease event, its attempt and its outbox
//! row one after another with nothing read in between, and a claim or a
//! completion batch does so for dozens of rows. So the statements are
//! gathered here with their parameters and sent together, each statement
//! taking the next of the bound values it has `?` parameters for, in one of
//! two ways:
//!
//! - a batch whose texts repeat (many rows changed alike) runs on the
//!   writer's handle ([`super::raw`]): each text prepared once and stepped
//!   for every row, with no hand-off a statement;
//! - a single transition's few statements go to sqlx as one query, one
//!   hand-off, whose prepared form sqlx keeps on the connection (preparing
//!   them afresh each time would cost more than the hand-offs it saves).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentValue, SqliteArguments, SqliteTypeInfo};
use sqlx::{Arguments, Encode, Sqlite, SqliteConnection, Type};

use super::raw::{FromRaw, Locked};
use crate::backend::Run;
use crate::error::{EngineError, Result};

/// Statements and their parameters, to run in one hand-off to the writer.
#[derive(Default)]
pub(super) struct Writes<'q> {
    /// The statements' texts, one after another; `ends` marks where each ends.
    sql: String,
    ends: Vec<usize>,
    values: Vec<SqliteArgumentValue<'q>>,
    /// The first parameter that could not be encoded (a JSON value that does
    /// not serialise), reported by [`Writes::run`].
    refused: Option<BoxDynError>,
}

impl<'q> Writes<'q> {
    /// Add one statement (no `;`); its `?` parameters are the next values
    /// bound.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        if sql.contains(';') {
            self.refused
                .get_or_insert_with(|| format!("not one statement: {sql:?}").into());
        }
        self.sql.push_str(sql);
        self.ends.push(self.sql.len());
        self
    }

    /// Bind the lease's attempt, for `tenant_id = ? AND execution_id = ?
    /// AND attempt_index = ?`.
    pub fn bind_attempt(&mut self, lease: &crate::model::LeaseHandle) -> &mut Self {
        self.bind(lease.tenant_id)
            .bind(lease.execution_id)
            .bind(lease.attempt_index)
    }

    /// Bind the next `?` parameter, encoded as sqlx encodes it.
    pub fn bind<T: Encode<'q, Sqlite> + Type<Sqlite> + 'q>(&mut self, value: T) -> &mut Self {
        let before = self.values.len();
        match value.encode(&mut self.values) {
            Ok(IsNull::Yes) => self.values.push(SqliteArgumentValue::Null),
            Ok(IsNull::No) => {}
            Err(e) => {
                self.values.truncate(before);
                self.refused.get_or_insert(e);
            }
        }
        self
    }

    /// The statements' texts, in order.
    fn statements(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.sql[start..end])
    }

    /// Whether some statement's text comes more than once.
    fn texts_repeat(&self) -> bool {
        let mut seen: Vec<&str> = Vec::new();
        for text in self.statements() {
            if seen.contains(&text) {
                return true;
            }
            seen.push(text);
        }
        false
    }

    /// Run every statement, in order, in the connection's transaction.
    pub async fn run(self, conn: &mut SqliteConnection, op: &'static str) -> Result<()> {
        if self.ends.is_empty() && self.refused.is_none() {
            return Ok(());
        }
        if self.texts_repeat() {
            let mut handle = conn.lock_handle().await.map_err(EngineError::storage(op))?;
            return self.run_locked(&mut handle, op);
        }
        let (sql, arguments) = self.into_query(op)?;
        sqlx::query_with(&sql, arguments).run(conn, op).await?;
        Ok(())
    }

    /// These statements, or the error of the first value that could not be
    /// encoded.
    fn encoded(self, op: &'static str) -> Result<Self> {
        match self.refused {
            Some(e) => Err(EngineError::storage(op)(sqlx::Error::Encode(e))),
            None => Ok(self),
        }
    }

    /// Run every statement, in order, on the writer's locked handle.
    pub fn run_locked(self, handle: &mut dyn Locked, op: &'static str) -> Result<()> {
        let this = self.encoded(op)?;
        if this.ends.is_empty() {
            return Ok(());
        }
        super::raw::execute(handle, this.statements(), &this.values)
            .map_err(EngineError::storage(op))
    }

    /// Decode the rows of the one statement, read on the locked handle.
    pub fn fetch_locked<T: FromRaw>(
        self,
        handle: &mut dyn Locked,
        op: &'static str,
    ) -> Result<Vec<T>> {
        let this = self.encoded(op)?;
        super::raw::query(handle, &this.sql, &this.values).map_err(EngineError::storage(op))
    }

    /// The statements as one sqlx query: their texts joined, their values
    /// bound as they were encoded.
    pub fn into_query(self, op: &'static str) -> Result<(String, SqliteArguments<'q>)> {
        let this = self.encoded(op)?;
        let sql = this.statements().collect::<Vec<_>>().join(";\n");
        let mut arguments = SqliteArguments::default();
        for value in this.values {
            arguments
                .add(Encoded(value))
                .map_err(|e| EngineError::storage(op)(sqlx::Error::Encode(e)))?;
        }
        Ok((sql, arguments))
    }
}

/// A value already encoded, bound as it is.
struct Encoded<'q>(SqliteArgumentValue<'q>);

impl<'q> Encode<'q, Sqlite> for Encoded<'q> {
    fn encode(
        self,
        buf: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> std::result::Result<IsNull, BoxDynError> {
        buf.push(self.0);
        Ok(IsNull::No)
    }

    fn encode_by_ref(
        &self,
        buf: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> std::result::Result<IsNull, BoxDynError> {
        buf.push(self.0.clone());
        Ok(IsNull::No)
    }
}

impl Type<Sqlite> for Encoded<'_> {
    /// Not consulted: SQLite binds each value by its own type.
    fn type_info() -> SqliteTypeInfo {
        <Vec<u8> as Type<Sqlite>>::type_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::raw::memory_connection;

    const TABLE_T: &str = "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)";

    async fn memory() -> SqliteConnection {
        memory_connection(&[TABLE_T]).await
    }

    /// `writes` fails with `reason` in its message and writes nothing.
    async fn assert_refused(conn: &mut SqliteConnection, writes: Writes<'_>, reason: &str) {
        let e = writes.run(&mut *conn, "refused").await.unwrap_err();
        assert!(e.to_string().contains(reason), "{e}");
        assert!(rows(conn).await.is_empty());
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
    async fn a_constraint_failure_is_classified_as_sqlx_classifies_it() {
        let mut conn = memory().await;
        let e = inserts(&[(1, "one"), (1, "again")])
            .run(&mut conn, "write twice")
            .await
            .unwrap_err();
        let EngineError::Storage {
            cause: sqlx::Error::Database(db),
            ..
        } = e
        else {
            panic!("{e:?}");
        };
        assert!(db.is_unique_violation(), "{db}");
        assert!(db.message().contains("UNIQUE"), "{db}");
    }

    #[tokio::test]
    async fn parameters_and_values_that_do_not_match_run_nothing() {
        let mut conn = memory().await;
        let mut too_few = inserts(&[(1, "one")]);
        too_few
            .statement("INSERT INTO t (k, v) VALUES (?, ?)")
            .bind(2_i64);
        let mut too_many = inserts(&[(1, "one"), (2, "two")]);
        too_many.bind("spare");
        // Both batches repeat a text, so they run on the handle, which
        // counts each statement's parameters.
        for writes in [too_few, too_many] {
            assert_refused(&mut conn, writes, "parameters for").await;
        }
    }

    #[tokio::test]
    async fn a_text_of_two_statements_is_refused() {
        let mut conn = memory().await;
        let mut writes = Writes::default();
        writes.statement(
            "INSERT INTO t (k, v) VALUES (1, 'a'); INSERT INTO t (k, v) VALUES (2, 'b')",
        );
        assert_refused(&mut conn, writes, "not one statement").await;
    }

    #[tokio::test]
    async fn values_are_stored_as_sqlx_binds_them() {
        let mut conn = memory_connection(&[
            "CREATE TABLE typed (id BLOB, doc TEXT, n INTEGER, x REAL, b BLOB, z TEXT)",
        ])
        .await;
        let id = uuid::Uuid::now_v7();
        let doc = sqlx::types::Json(serde_json::json!({"a": [1, "two"]}));
        let sql = "INSERT INTO typed (id, doc, n, x, b, z) VALUES (?, ?, ?, ?, ?, ?)";
        // Once (through sqlx), then twice (a repeated text: on the handle).
        for times in [1, 2] {
            let mut writes = Writes::default();
            for _ in 0..times {
                writes
                    .statement(sql)
                    .bind(id)
                    .bind(&doc)
                    .bind(-7_i64)
                    .bind(0.5_f64)
                    .bind(vec![0_u8, 255])
                    .bind(None::<String>);
            }
            writes.run(&mut conn, "typed").await.unwrap();
        }
        sqlx::query(sql)
            .bind(id)
            .bind(&doc)
            .bind(-7_i64)
            .bind(0.5_f64)
            .bind(vec![0_u8, 255])
            .bind(None::<String>)
            .execute(&mut conn)
            .await
            .unwrap();
        type Stored = (Vec<u8>, String, i64, f64, Vec<u8>, Option<String>);
        let stored: Vec<Stored> = sqlx::query_as("SELECT id, doc, n, x, b, z FROM typed")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored.len(), 4);
        assert!(
            stored.iter().all(|row| *row == stored[3]),
            "both paths store what sqlx's own binds store: {stored:?}"
        );
        assert_eq!(stored[0].0, id.as_bytes());
    }

    #[tokio::test]
    async fn nothing_to_write_is_no_statement() {
        let mut conn = memory().await;
        Writes::default().run(&mut conn, "nothing").await.unwrap();
        assert!(rows(&mut conn).await.is_empty());
    }
}
