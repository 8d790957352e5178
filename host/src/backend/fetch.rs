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

/// One method of `Fetch` or `Run`: declared (`name -> Out;`), or
/// implemented (`name -> Out = fetch;`) by awaiting sqlx's `fetch` and
/// naming its error by the operation. The methods differ only in what they
/// return.
macro_rules! fetch_fn {
    ($(#[$doc:meta])* $name:ident -> $out:ty;) => {
        fetch_fn!(@fn [$(#[$doc])*] $name, $out, [];);
    };
    ($name:ident -> $out:ty = $fetch:ident;) => {
        fetch_fn!(@fn [] $name, $out, [$fetch]);
    };
    (@fn [$($doc:tt)*] $name:ident, $out:ty, [$($fetch:ident)?] $($semicolon:tt)?) => {
        $($doc)*
        fn $name<'e, 'c: 'e, E>(
            self,
            executor: E,
            op: impl Into<Op>,
        ) -> impl Future<Output = Result<$out>> + Send + 'e
        where
            'q: 'e,
            E: 'e + Executor<'c, Database = DB>
        $({
            let op = op.into();
            async move { self.$fetch(executor).await.map_err(|e| op.failed(e)) }
        })?
        $($semicolon)?
    };
}

/// A statement that returns rows, each decoded as `Self::Row`.
pub(crate) trait Fetch<'q, DB: Database>: Sized + Send + 'q {
    type Row: Send + Unpin + 'q;

    fetch_fn! {
        /// Exactly one row; none is a storage error (`RowNotFound`).
        one -> Self::Row;
    }
    fetch_fn! {
        /// Every row.
        all -> Vec<Self::Row>;
    }
    fetch_fn! {
        /// The first row, if there is one.
        optional -> Option<Self::Row>;
    }

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

            fetch_fn!(one -> $row = fetch_one;);
            fetch_fn!(all -> Vec<$row> = fetch_all;);
            fetch_fn!(optional -> Option<$row> = fetch_optional;);
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
    fetch_fn! {
        /// Run it; what it changed (`rows_affected`).
        run -> DB::QueryResult;
    }

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
    fetch_fn!(run -> DB::QueryResult = execute;);
}
