//! sqlx's fetches, each failing as this crate's storage error named by its
//! operation.
//!
//! Every statement the backends run ends the same way: fetch on a
//! connection, await, and turn a driver error into
//! [`EngineError::Storage`] with the name of the operation that failed (the
//! name is what an operator reads in the error and the logs). Written out,
//! that is three lines after every statement, hundreds of times, on both
//! drivers; here it is one call: `.one(conn, "op")`, `.all(…)`,
//! `.optional(…)`, and `.run(…)` for a statement that returns no rows. The
//! name may be an [`Op`] instead: [`Op::for_tenant`] names a write of a
//! tenant's row, whose `tenant_id` foreign key's violation then reads as
//! that tenant not found.

use std::future::Future;

use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Database, Executor, FromRow, IntoArguments};

use crate::backend::refusals;
use crate::error::{EngineError, Result};
use crate::model::TenantId;

/// What a statement's errors are named by: its operation and, for a write
/// of a tenant's row, that tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    name: &'static str,
    tenant: Option<TenantId>,
}

impl Op {
    /// A write of `tenant`'s row: a violation of its `tenant_id` foreign key
    /// (only `tenant_id` references `tenants` among the columns writes name)
    /// is the tenant's `not_found`.
    pub(crate) fn for_tenant(name: &'static str, tenant: TenantId) -> Self {
        Op {
            name,
            tenant: Some(tenant),
        }
    }

    fn failed(self, e: sqlx::Error) -> EngineError {
        match (&e, self.tenant) {
            (sqlx::Error::Database(db), Some(tenant)) if db.is_foreign_key_violation() => {
                refusals::unknown_tenant(tenant)
            }
            _ => EngineError::Storage {
                op: self.name,
                cause: e,
            },
        }
    }
}

impl From<&'static str> for Op {
    fn from(name: &'static str) -> Self {
        Op { name, tenant: None }
    }
}

/// A statement that returns rows, each decoded as `Self::Row`.
pub(crate) trait Fetch<'q, DB: Database>: Sized + Send + 'q {
    type Row: Send + Unpin + 'q;

    /// Exactly one row; none is a storage error (`RowNotFound`).
    fn one<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: impl Into<Op>,
    ) -> impl Future<Output = Result<Self::Row>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Every row.
    fn all<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: impl Into<Op>,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// The first row, if there is one.
    fn optional<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: impl Into<Op>,
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Every row, each turned into a `T` by `into`: the common read of a
    /// list, rows straight into the model's type.
    fn all_mapped<'e, 'c: 'e, E, T>(
        self,
        executor: E,
        op: impl Into<Op>,
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

/// One method of an `impl Fetch` or `impl Run`: `$name` awaits sqlx's
/// `$fetch` and names its error by the operation.
macro_rules! fetch_method {
    ($name:ident, $fetch:ident, $out:ty) => {
        fn $name<'e, 'c: 'e, E>(
            self,
            executor: E,
            op: impl Into<Op>,
        ) -> impl Future<Output = Result<$out>> + Send + 'e
        where
            'q: 'e,
            E: 'e + Executor<'c, Database = DB>,
        {
            let op = op.into();
            async move { self.$fetch(executor).await.map_err(|e| op.failed(e)) }
        }
    };
}

/// One `impl Fetch` for a sqlx query type: three methods, each forwarding
/// to sqlx's fetch of the same name.
macro_rules! fetch_impl {
    ([$($generics:tt)*] $query:ty, $row:ty, where $($bounds:tt)*) => {
        impl<'q, DB, A, $($generics)*> Fetch<'q, DB> for $query
        where
            DB: Database,
            A: 'q + IntoArguments<'q, DB> + Send,
            $($bounds)*
        {
            type Row = $row;

            fetch_method!(one, fetch_one, $row);
            fetch_method!(all, fetch_all, Vec<$row>);
            fetch_method!(optional, fetch_optional, Option<$row>);
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
        op: impl Into<Op>,
    ) -> impl Future<Output = Result<DB::QueryResult>> + Send + 'e
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>;

    /// Run it; whether it changed any row (a delete or update of one row by
    /// its key: whether there was one).
    fn changed<'e, 'c: 'e, E>(
        self,
        executor: E,
        op: impl Into<Op>,
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
    fetch_method!(run, execute, DB::QueryResult);
}
