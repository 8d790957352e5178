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
