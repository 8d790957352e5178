//! The current form of the SQLite schema, read back from a migrated file.
//!
//! SQLite keeps each object's creating statement (amended by every `ALTER
//! TABLE`) in `sqlite_master`, so the checked-in `sql/schema.sql` is those
//! statements in a fixed order: tables, then indexes, then triggers, each by
//! name. A test fails when it drifts from the migrations
//! (`scripts/dump-schema.sh` writes it anew).

use sqlx::SqliteConnection;

use crate::backend::Fetch;
use crate::error::Result;

const HEADER: &str = "-- The current SQLite schema, read from a freshly migrated database.\n\
    -- Written by scripts/dump-schema.sh; edit the migrations, never this file.\n";

/// Read the canonical schema of the database `conn` is connected to.
pub async fn canonical(conn: &mut SqliteConnection) -> Result<String> {
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master \
         WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' \
         ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'trigger' THEN 2 \
                  ELSE 3 END, name",
    )
    .all(conn, "read schema")
    .await?;
    let mut out = String::from(HEADER);
    for statement in statements {
        out.push('\n');
        out.push_str(statement.trim_end());
        out.push_str(";\n");
    }
    Ok(out)
}
