//! The checked-in canonical schema is what the migrations produce, on both
//! backends. Regenerate with `scripts/dump-schema.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flowfabric::backend::{postgres, sqlite};
use flowfabric_tests::TestDb;

const UPDATE: &str = "FLOWFABRIC_UPDATE_SCHEMA";
const HOW: &str = "regenerate it with scripts/dump-schema.sh";

fn backend_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../host/src/backend/{name}/sql"))
}

fn check(path: &Path, generated: &str) {
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date: {HOW}",
        path.display()
    );
}

#[tokio::test]
async fn postgres_schema_and_functions_match_the_migrations() {
    let db = TestDb::new().await;
    let canonical = postgres::schema::canonical(db.pg()).await.unwrap();
    let dir = backend_dir("postgres");
    check(&dir.join("schema.sql"), &canonical.schema);
    assert!(canonical.schema.contains("CREATE TABLE executions ("));
    assert!(canonical.schema.contains("executions_claim_idx"));

    let functions_dir = dir.join("functions");
    let generated: BTreeMap<String, String> = canonical
        .functions
        .into_iter()
        .map(|(stem, text)| (format!("{stem}.sql"), text))
        .collect();
    assert!(generated.contains_key("flowfabric_on_completion.sql"));
    if std::env::var_os(UPDATE).is_some() {
        let _ = std::fs::remove_dir_all(&functions_dir);
    }
    for (file, text) in &generated {
        check(&functions_dir.join(file), text);
    }
    let checked_in: Vec<String> = std::fs::read_dir(&functions_dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for file in checked_in {
        assert!(
            generated.contains_key(&file),
            "functions/{file} is no longer defined by the migrations: {HOW}"
        );
    }
}

#[tokio::test]
async fn sqlite_schema_matches_the_migrations() {
    let db = TestDb::sqlite(Default::default()).await;
    let mut conn = sqlx::Connection::connect(&format!("sqlite:{}", db.sqlite_path().display()))
        .await
        .unwrap();
    let schema = sqlite::schema::canonical(&mut conn).await.unwrap();
    assert!(schema.contains("CREATE TABLE executions"));
    check(&backend_dir("sqlite").join("schema.sql"), &schema);
}

/// What a Postgres migration may not do: a process of the previous build
/// keeps running until it is replaced (`docs/operations.md`), and a column
/// dropped, renamed or given another type breaks its statements (a changed
/// type fails every statement it prepared that returns the column, with
/// `cached plan must not change result type`). Such a change waits for a
/// release that says so.
const BREAKS_THE_PREVIOUS_BUILD: [&str; 4] =
    ["DROP COLUMN", "ALTER COLUMN", "RENAME", "DROP TABLE"];

/// Migrations that copy a table into a new one of the same columns, names
/// and types (to order its columns anew), with the table they copy: the
/// previous build's statements are planned again against the copy. Each has
/// a test that runs the previous build's statements across it
/// (`upgrade.rs`).
const TABLES_COPIED: [(&str, &str); 1] = [("0046_execution_columns_by_change.sql", "executions")];

/// The two statements of a copy that swap it in: the old table dropped, the
/// copy (`<table>_reordered`) named as it. Every other line of the migration
/// is held to the rule like any other.
fn swaps_in_the_copy(code: &str, table: &str) -> bool {
    let table = table.to_uppercase();
    let code = code.trim();
    code == format!("DROP TABLE {table};")
        || code == format!("ALTER TABLE {table}_REORDERED RENAME TO {table};")
}

#[test]
fn postgres_migrations_leave_the_previous_builds_columns_alone() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy();
        let copied = TABLES_COPIED
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, table)| *table);
        let mut swaps = 0;
        for (n, line) in sql.lines().enumerate() {
            let code = line.split("--").next().unwrap_or("").to_uppercase();
            if copied.is_some_and(|table| swaps_in_the_copy(&code, table)) {
                swaps += 1;
                continue;
            }
            for breaking in BREAKS_THE_PREVIOUS_BUILD {
                assert!(
                    !code.contains(breaking),
                    "{}:{}: `{breaking}` would break processes of the previous build",
                    path.display(),
                    n + 1
                );
            }
        }
        if copied.is_some() {
            assert_eq!(swaps, 2, "{}: the copy's drop and rename", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 29, "read {checked} migrations");
}
