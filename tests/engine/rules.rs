//! The rulebook (`flowfabric::model::rules`) and the SQL agree: every
//! combination of the state vector reads as the same public state through
//! Postgres's generated column, SQLite's generated column and the Rust rule,
//! and the CHECK constraints allow exactly the spellings the enums have.

use std::collections::BTreeSet;

use flowfabric::model::{
    public_state, AttemptPhase, Eligibility, LifecyclePhase, Ownership, PublicState,
    TerminalOutcome,
};
use flowfabric_tests::TestDb;

/// The expression Postgres stores for the generated `public_state` column.
async fn public_state_expression(db: &TestDb) -> String {
    sqlx::query_scalar(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d \
         JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
         WHERE d.adrelid = 'executions'::regclass AND a.attname = 'public_state'",
    )
    .fetch_one(db.pg())
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_public_state_column_agrees_with_the_rulebook_on_every_vector() {
    let db = TestDb::new().await;
    let expression = public_state_expression(&db).await;
    let combinations = every_vector();
    let values: Vec<String> = combinations
        .iter()
        .map(|(p, e, o)| {
            let o = o.map_or("NULL".to_owned(), |o| format!("'{o}'"));
            format!("('{p}', '{e}', {o}::text)")
        })
        .collect();
    let sql = format!(
        "SELECT ({expression}) FROM (VALUES {}) \
         AS v(lifecycle_phase, eligibility_state, terminal_outcome)",
        values.join(", ")
    );
    let derived: Vec<String> = sqlx::query_scalar(&sql).fetch_all(db.pg()).await.unwrap();
    assert_eq!(derived.len(), combinations.len());
    for ((phase, eligibility, outcome), sql_state) in combinations.iter().zip(&derived) {
        let rust_state = public_state(*phase, *eligibility, *outcome);
        assert_eq!(
            sql_state.parse::<PublicState>().unwrap(),
            rust_state,
            "({phase}, {eligibility}, {outcome:?})"
        );
    }
}

/// Every state vector the rulebook knows: (phase, eligibility, outcome).
fn every_vector() -> Vec<(LifecyclePhase, Eligibility, Option<TerminalOutcome>)> {
    let mut outcomes: Vec<Option<TerminalOutcome>> = vec![None];
    outcomes.extend(TerminalOutcome::ALL.iter().copied().map(Some));
    let mut vectors = Vec::new();
    for phase in LifecyclePhase::ALL {
        for eligibility in Eligibility::ALL {
            for outcome in &outcomes {
                vectors.push((*phase, *eligibility, *outcome));
            }
        }
    }
    vectors
}

#[tokio::test]
async fn sqlite_public_state_column_agrees_with_the_rulebook_on_every_vector() {
    let db = TestDb::sqlite(Default::default()).await;
    let mut conn: sqlx::SqliteConnection =
        sqlx::Connection::connect(&format!("sqlite:{}", db.sqlite_path().display()))
            .await
            .unwrap();
    let table: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'executions'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let start = table
        .find("GENERATED ALWAYS AS (")
        .expect("a generated public_state")
        + "GENERATED ALWAYS AS ".len();
    let end = table.rfind(") VIRTUAL").unwrap() + 1;
    let expression = &table[start..end];
    let vectors = every_vector();
    let values: Vec<String> = vectors
        .iter()
        .enumerate()
        .map(|(i, (p, e, o))| {
            let o = o.map_or("NULL".to_owned(), |o| format!("'{o}'"));
            format!("({i}, '{p}', '{e}', {o})")
        })
        .collect();
    let sql = format!(
        "WITH v(i, lifecycle_phase, eligibility_state, terminal_outcome) AS (VALUES {}) \
         SELECT {expression} FROM v ORDER BY i",
        values.join(", ")
    );
    let derived: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut conn).await.unwrap();
    assert_eq!(derived.len(), vectors.len());
    for ((phase, eligibility, outcome), sql_state) in vectors.iter().zip(&derived) {
        assert_eq!(
            sql_state.parse::<PublicState>().unwrap(),
            public_state(*phase, *eligibility, *outcome),
            "({phase}, {eligibility}, {outcome:?})"
        );
    }
}

/// The values a `col = ANY (ARRAY['a'::text, …])` CHECK allows.
fn allowed(definition: &str) -> BTreeSet<String> {
    definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn spellings<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> BTreeSet<String> {
    all.iter().map(|v| as_str(*v).to_owned()).collect()
}

#[tokio::test]
async fn postgres_check_constraints_allow_exactly_the_rulebook_spellings() {
    let db = TestDb::new().await;
    for (column, expected) in [
        (
            "lifecycle_phase",
            spellings(LifecyclePhase::ALL, LifecyclePhase::as_str),
        ),
        (
            "eligibility_state",
            spellings(Eligibility::ALL, Eligibility::as_str),
        ),
        (
            "ownership_state",
            spellings(Ownership::ALL, Ownership::as_str),
        ),
        (
            "attempt_state",
            spellings(AttemptPhase::ALL, AttemptPhase::as_str),
        ),
        (
            "terminal_outcome",
            spellings(TerminalOutcome::ALL, TerminalOutcome::as_str),
        ),
    ] {
        let definition: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'executions'::regclass AND conname = $1",
        )
        .bind(format!("executions_{column}_check"))
        .fetch_one(db.pg())
        .await
        .unwrap();
        assert_eq!(allowed(&definition), expected, "{column}");
    }
}

#[tokio::test]
async fn sqlite_check_constraint_allows_exactly_the_rulebook_phases() {
    let db = TestDb::sqlite(Default::default()).await;
    let mut conn: sqlx::SqliteConnection =
        sqlx::Connection::connect(&format!("sqlite:{}", db.sqlite_path().display()))
            .await
            .unwrap();
    let definition: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'executions'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let check = &definition[definition.find("lifecycle_phase IN").unwrap()..];
    let check = &check[..check.find(')').unwrap()];
    assert_eq!(
        allowed(check),
        spellings(LifecyclePhase::ALL, LifecyclePhase::as_str)
    );
}
