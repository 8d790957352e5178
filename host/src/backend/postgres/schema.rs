//! The current form of the schema, read back from a migrated database.
//!
//! Migrations are history: a function redefined in three of them has no one
//! place that shows what it does today. So the checked-in `sql/schema.sql`
//! (tables, constraints, indexes, triggers) and `sql/functions/*.sql` (one
//! file per PL/pgSQL function) are what [`canonical`] reads from the catalog
//! of a freshly migrated database, and a test fails when they drift
//! (`scripts/dump-schema.sh` writes them anew).
//!
//! The text comes from Postgres's own deparsers (`pg_get_constraintdef`,
//! `pg_get_indexdef`, `pg_get_triggerdef`, `pg_get_functiondef`), ordered by
//! name, so it does not depend on the order the migrations happened to use.

use sqlx::PgPool;

use crate::backend::Fetch;
use crate::error::Result;

/// The schema as one document, and each function as a file of its own.
pub struct CanonicalSchema {
    /// Tables (columns, then constraints), indexes and triggers.
    pub schema: String,
    /// `(file stem, CREATE OR REPLACE FUNCTION …)` in name order.
    pub functions: Vec<(String, String)>,
}

const HEADER: &str = "-- The current Postgres schema, read from a freshly migrated database.\n\
    -- Written by scripts/dump-schema.sh; edit the migrations, never this file.\n";

/// Read the canonical schema of the database `pool` is connected to.
pub async fn canonical(pool: &PgPool) -> Result<CanonicalSchema> {
    let mut schema = String::from(HEADER);
    for table in definitions(pool, TABLES).await? {
        schema.push('\n');
        schema.push_str(&table_ddl(pool, &table).await?);
    }
    section(&mut schema, "Indexes", &definitions(pool, INDEXES).await?);
    section(&mut schema, "Triggers", &definitions(pool, TRIGGERS).await?);
    Ok(CanonicalSchema {
        schema,
        functions: functions(pool).await?,
    })
}

fn section(out: &mut String, title: &str, statements: &[String]) {
    out.push_str(&format!("\n-- {title}\n"));
    for statement in statements {
        out.push_str(statement);
        out.push_str(";\n");
    }
}

const OP: &str = "read schema";

const TABLES: &str = "SELECT tablename::text FROM pg_tables \
     WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations' ORDER BY tablename";

/// Indexes that no constraint creates (those show with their constraint).
const INDEXES: &str = "SELECT pg_get_indexdef(i.indexrelid) \
     FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indexrelid \
     JOIN pg_class t ON t.oid = i.indrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = 'public' AND t.relname <> '_sqlx_migrations' \
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
     ORDER BY t.relname, c.relname";

const TRIGGERS: &str = "SELECT pg_get_triggerdef(tg.oid) \
     FROM pg_trigger tg \
     JOIN pg_class t ON t.oid = tg.tgrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     WHERE n.nspname = 'public' AND NOT tg.tgisinternal \
     ORDER BY t.relname, tg.tgname";

/// What `sql` reads, one name or definition a row.
async fn definitions(pool: &PgPool, sql: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(sql).all(pool, OP).await
}

async fn table_ddl(pool: &PgPool, table: &str) -> Result<String> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
             || CASE WHEN a.attgenerated = 's' \
                     THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED' \
                     ELSE coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') END \
             || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
         FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = ('public.' || quote_ident($1))::regclass \
           AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(table)
    .all(pool, OP)
    .await?;
    let constraints: Vec<String> = sqlx::query_scalar(
        "SELECT 'CONSTRAINT ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint \
         WHERE conrelid = ('public.' || quote_ident($1))::regclass AND contype <> 'n' \
         ORDER BY conname",
    )
    .bind(table)
    .all(pool, OP)
    .await?;
    // Storage parameters (a fillfactor) decide how writes land on pages,
    // which is part of what a migration sets.
    let options: Option<String> = sqlx::query_scalar(
        "SELECT array_to_string(reloptions, ', ') FROM pg_class \
         WHERE oid = ('public.' || quote_ident($1))::regclass",
    )
    .bind(table)
    .one(pool, OP)
    .await?;
    let body: Vec<String> = columns
        .into_iter()
        .chain(constraints)
        .map(|line| format!("    {line}"))
        .collect();
    let with = options.map_or(String::new(), |o| format!(" WITH ({o})"));
    Ok(format!(
        "CREATE TABLE {table} (\n{}\n){with};\n",
        body.join(",\n")
    ))
}

async fn functions(pool: &PgPool) -> Result<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, pg_get_functiondef(p.oid) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public' \
         ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)",
    )
    .all(pool, OP)
    .await?;
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut out = Vec::with_capacity(rows.len());
    for (name, definition) in rows {
        // Overloads share a name: the second is `name_2`, and so on.
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        let stem = if *n == 1 { name } else { format!("{name}_{n}") };
        out.push((stem, format!("{}\n", definition.trim_end())));
    }
    Ok(out)
}
