//! sqlx's fetches, each failing as this crate's storage error named by its
//! operation.
//!
//! Every statement the backends run ends the same way: fetch on a
//! connection, await, and turn a driver error into
//! [`EngineError::Storage`] with the name of the operation that failed (the
//! name is what an operator reads in the error and the logs). Written out,
//! that is three lines after every statement, hundreds of times, on both
//! drivers; here it is one call: `.one(conn, "op")`, `.all(…)`,
//! `.optional(…)`, and `.run(…)` for a statement that returns no rows.

use std::future::Future;

use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Database, Executor, FromRow, IntoArguments};

use crate::error::{EngineError, Result};

/// A statement that returns rows, each decoded as `Self::Row`.
pub(crate) trait Fetch<'q, DB: Database>: Sized + Send + 'q {
    type Row: Send + Unpin + 'q;

    /// Exactly one row; none is a storage error (`RowNotFound`).
    fn one<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: &'static str,
    ) -> impl Future<Output = Result<Self::Row>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Every row.
    fn all<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: &'static str,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// The first row, if there is one.
    fn optional<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: &'static str,
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Every row, each turned into a `T` by `into`: the common read of a
    /// list, rows straight into the model's type.
    fn all_mapped<'e, 'c: 'e, E, T>(
        self,
        executor: E,
        op: &'static str,
        into: impl FnMut(Self::Row) -> T + Send + 'e,
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
    {
        let rows = self.all(executor, op);
        async move { Ok(rows.await?.into_iter().map(into).collect()) }
    }
}

/// One `impl Fetch` for a sqlx query type: the same three methods, each
/// forwarding to sqlx's fetch of the same name.
macro_rules! fetch_impl {
    ([$($generics:tt)*] $query:ty, $row:ty, where $($bounds:tt)*) => {
        impl<'q, DB, A, $($generics)*> Fetch<'q, DB> for $query
        where
            DB: Database,
            A: 'q + IntoArguments<'q, DB> + Send,
            $($bounds)*
        {
            type Row = $row;

            async fn one<'e, 'c: 'e, E>(self, executor: E, op: &'static str) -> Result<$row>
            where
                'q: 'e,
                E: 'e + Executor<'c, Database = DB>,
            {
                self.fetch_one(executor).await.map_err(EngineError::storage(op))
            }

            async fn all<'e, 'c: 'e, E>(self, executor: E, op: &'static str) -> Result<Vec<$row>>
            where
                'q: 'e,
                E: 'e + Executor<'c, Database = DB>,
            {
                self.fetch_all(executor).await.map_err(EngineError::storage(op))
            }

            async fn optional<'e, 'c: 'e, E>(
                self,
                executor: E,
                op: &'static str,
            ) -> Result<Option<$row>>
            where
                'q: 'e,
                E: 'e + Executor<'c, Database = DB>,
            {
                self.fetch_optional(executor).await.map_err(EngineError::storage(op))
            }
        }
    };
}

fetch_impl!([O] QueryAs<'q, DB, O, A>, O,
    where O: Send + Unpin + for<'r> FromRow<'r, DB::Row> + 'q,);
fetch_impl!([O] QueryScalar<'q, DB, O, A>, O,
    where O: Send + Unpin + 'q, (O,): Send + Unpin + for<'r> FromRow<'r, DB::Row>,);
fetch_impl!([] Query<'q, DB, A>, DB::Row, where DB::Row: 'q,);

/// A statement run for its effect.
pub(crate) trait Run<'q, DB: Database>: Sized + Send + 'q {
    /// Run it; what it changed (`rows_affected`).
    fn run<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: &'static str,
    ) -> impl Future<Output = Result<DB::QueryResult>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Run it; whether it changed any row (a delete or update of one row by
    /// its key: whether there was one).
    fn changed<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: &'static str,
    ) -> impl Future<Output = Result<bool>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
        DB::QueryResult: RowsAffected,
    {
        let done = self.run(executor, op);
        async move { Ok(done.await?.rows_affected() > 0) }
    }
}

/// What a statement changed, as each driver reports it.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl<'q, DB, A> Run<'q, DB> for Query<'q, DB, A>
where
    DB: Database,
    A: 'q + IntoArguments<'q, DB> + Send,
{
    async fn run<'e, 'c: 'e, E>(self, executor: E, op: &'static str) -> Result<DB::QueryResult>
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
    {
        self.execute(executor)
            .await
            .map_err(EngineError::storage(op))
    }
}
