//! Storage operations written once for both drivers.
//!
//! Many operations are the same sqlx code on Postgres and on SQLite: the
//! same SQL (SQLite reads Postgres's `$N` placeholders), the same binds, the
//! same decoding. Written twice, the two copies drift. Here each is written
//! once, inside [`for_both_drivers!`], which gives it a `PgConnection` form
//! (in `pg`) and a `SqliteConnection` form (in `sqlite`); each backend calls
//! its own. An operation whose SQL differs between the drivers (arrays,
//! `RETURNING` shapes, PL/pgSQL) stays in its backend.

/// Define storage operations once for both drivers: each
/// `async fn name(conn, arg: Type, …) -> Ret { body }` becomes
/// `pg::name(conn: &mut PgConnection, …)` and
/// `sqlite::name(conn: &mut SqliteConnection, …)` with the same body.
macro_rules! for_both_drivers {
    (@driver $module:ident, $connection:ty, $row_lock:literal, $in_json:literal, $name_lock:literal,
        $doc:literal;
        $(
            $(#[$meta:meta])*
            async fn $name:ident($conn:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty $body:block
        )*
    ) => {
        #[doc = $doc]
        pub(crate) mod $module {
            #[allow(unused_imports)]
            use super::*;
            // The shared row caps, on this same driver.
            #[allow(unused_imports)]
            use crate::backend::shared::caps::$module as caps;
            /// What a read appends to lock the rows it reads until commit:
            /// Postgres locks them; on SQLite the one writer holds them all.
            #[allow(dead_code)]
            const FOR_UPDATE: &str = $row_lock;
            /// `column IN` the texts of a JSON array bound as `param` (a
            /// list of any length in one parameter, on either driver).
            #[allow(dead_code)]
            fn in_json_texts(column: &str, param: &str) -> String {
                format!($in_json, column = column, param = param)
            }
            /// Hold writes that name (`tenant`, `name`) still until commit:
            /// on Postgres, a transaction's advisory lock on the pair; on
            /// SQLite, the one writer already does.
            #[allow(dead_code)]
            async fn lock_name(
                conn: &mut $connection,
                tenant: crate::model::TenantId,
                name: &str,
                op: &'static str,
            ) -> crate::error::Result<()> {
                const SQL: &str = $name_lock;
                if !SQL.is_empty() {
                    use crate::backend::Run;
                    sqlx::query(SQL).bind(tenant).bind(name).run(&mut *conn, op).await?;
                }
                Ok(())
            }
            $(
                $(#[$meta])*
                pub(crate) async fn $name($conn: &mut $connection $(, $arg: $ty)*) -> $ret $body
            )*
        }
    };
    ($($operations:tt)*) => {
        for_both_drivers!(@driver pg, sqlx::PgConnection, " FOR UPDATE",
            "{column} IN (SELECT jsonb_array_elements_text({param}))",
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2, 0))",
            "On a Postgres connection."; $($operations)*);
        for_both_drivers!(@driver sqlite, sqlx::SqliteConnection, "",
            "{column} IN (SELECT value FROM json_each({param}))", "",
            "On a SQLite connection."; $($operations)*);
    };
}

/// Declare how a storage trait is implemented, one line a method, beside
/// the trait: defines (and exports from the invoking module)
/// `implement_concept!(Backend, driver)`, which each backend invokes in its
/// module of the same name.
///
/// `storage_methods! { $ implement_concept: impl Trait in concept { read {…} write {…} own {…} } }`
/// (the leading `$` lets the list define a macro of its own). Each entry is
/// one line, `"op" name(args) -> T;`:
/// - under `read`, the trait method runs `shared::concept::driver::name(conn,
///   args)` on a connection from the backend's `read` (no transaction);
/// - under `write`, the same inside the backend's `quiet_write`, a
///   transaction that wakes nobody (it adds no work, delivers no signal);
/// - under `own` (no `"op"`), the drivers differ, and the backend supplies
///   `async fn name(db: &Backend, args) -> Result<T>` in that module;
/// - under `held` (optional, last; the first argument is always `lease:
///   &LeaseHandle`), a write by the lease holder: the trait method runs the
///   backend's `write_held`, which checks the lease and locks the
///   execution in a transaction, and inside it the module's
///   `async fn name(held: Held<'_>, args) -> Result<T>`. No such write can
///   forget its fence.
///
/// Types in the list are named as `crate::model` and the backend's
/// parameter structs export them.
macro_rules! storage_methods {
    ($d:tt $implement:ident: impl $trait:ident in $concept:ident { $($list:tt)* }) => {
        #[doc = concat!("[`", stringify!($trait), "`](crate::backend::", stringify!($trait), ") ")]
        #[doc = "for a backend and its driver module: `implement_…!(Backend, driver)`."]
        macro_rules! $implement {
            ($d backend:ty, $d driver:ident) => {
                $crate::backend::shared::storage_impl! {
                    $trait for $d backend, $concept::$d driver, $($list)*
                }
            };
        }
        pub(crate) use $implement;
    };
}
pub(crate) use storage_methods;

/// The impl [`storage_methods!`] declares. It stands in an anonymous
/// constant so that the list's types resolve against `crate::model` and the
/// parameter structs without the backend importing them.
macro_rules! storage_impl {
    (
        $trait:ident for $backend:ty, $concept:ident::$driver:ident,
        read { $( $read_op:literal $read:ident($($read_arg:ident: $read_ty:ty),*) -> $read_ret:ty; )* }
        write { $( $write_op:literal $write:ident($($write_arg:ident: $write_ty:ty),*) -> $write_ret:ty; )* }
        own { $( $own:ident($($own_arg:ident: $own_ty:ty),*) -> $own_ret:ty; )* }
        $(held { $(
            $held_op:literal $held:ident(lease: &LeaseHandle $(, $held_arg:ident: $held_ty:ty)*)
                -> $held_ret:ty;
        )* })?
    ) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::backend::params::*;
            #[allow(unused_imports)]
            use $crate::model::*;
            #[allow(unused_imports)]
            use chrono::{DateTime, Utc};

            #[async_trait::async_trait]
            impl $crate::backend::$trait for $backend {
                $(
                    async fn $read(&self $(, $read_arg: $read_ty)*) -> $crate::error::Result<$read_ret> {
                        self.read($read_op, async |conn| {
                            $crate::backend::shared::$concept::$driver::$read(conn $(, $read_arg)*).await
                        })
                        .await
                    }
                )*
                $(
                    async fn $write(&self $(, $write_arg: $write_ty)*) -> $crate::error::Result<$write_ret> {
                        self.quiet_write($write_op, async |conn| {
                            $crate::backend::shared::$concept::$driver::$write(conn $(, $write_arg)*).await
                        })
                        .await
                    }
                )*
                $(
                    async fn $own(&self $(, $own_arg: $own_ty)*) -> $crate::error::Result<$own_ret> {
                        $own(self $(, $own_arg)*).await
                    }
                )*
                $($(
                    async fn $held(
                        &self,
                        lease: &LeaseHandle
                        $(, $held_arg: $held_ty)*
                    ) -> $crate::error::Result<$held_ret> {
                        self.write_held($held_op, lease, async |held| $held(held $(, $held_arg)*).await)
                            .await
                    }
                )*)?
            }
        };
    };
}
pub(crate) use storage_impl;

pub(crate) mod budgets;
pub(crate) mod caps;
pub(crate) mod children;
pub(crate) mod components;
pub(crate) mod concurrency;
pub(crate) mod config_values;
pub(crate) mod events;
pub(crate) mod executions;
pub(crate) mod flows;
pub(crate) mod grants;
pub(crate) mod insights;
pub(crate) mod output;
pub(crate) mod retention;
pub(crate) mod schedules;
pub(crate) mod stamp;
pub(crate) mod steps;
pub(crate) mod suspension;
pub(crate) mod tenancy;
pub(crate) mod usage;
pub(crate) mod waitpoint_keys;
