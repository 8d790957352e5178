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
    (@driver $module:ident, $connection:ty, $doc:literal;
        $(
            $(#[$meta:meta])*
            async fn $name:ident($conn:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty $body:block
        )*
    ) => {
        #[doc = $doc]
        pub(crate) mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                pub(crate) async fn $name($conn: &mut $connection $(, $arg: $ty)*) -> $ret $body
            )*
        }
    };
    ($($operations:tt)*) => {
        for_both_drivers!(@driver pg, sqlx::PgConnection, "On a Postgres connection."; $($operations)*);
        for_both_drivers!(@driver sqlite, sqlx::SqliteConnection, "On a SQLite connection."; $($operations)*);
    };
}

pub(crate) mod budgets;
pub(crate) mod components;
pub(crate) mod concurrency;
pub(crate) mod config_values;
pub(crate) mod flows;
pub(crate) mod grants;
pub(crate) mod insights;
pub(crate) mod output;
pub(crate) mod schedules;
pub(crate) mod stamp;
pub(crate) mod steps;
pub(crate) mod suspension;
pub(crate) mod tenancy;
pub(crate) mod waitpoint_keys;
