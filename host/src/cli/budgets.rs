//! `flowfabric budget …`: define budgets, read their usage, reset them.

use anyhow::{anyhow, bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{ApiClient, Connection};
use super::remote::{print_json, text};

#[derive(clap::Subcommand)]
pub enum BudgetCommand {
    /// Create a budget.
    Create {
        name: String,
        /// `tenant`, `flow:<id>`, `execution:<id>` or `lane:<name>`.
        #[arg(long, default_value = "tenant")]
        scope: String,
        /// `DIMENSION=HARD`, `DIMENSION=HARD/SOFT` or `DIMENSION=/SOFT`;
        /// repeat for several dimensions.
        #[arg(long = "limit", required = true)]
        limits: Vec<String>,
        /// What crossing a hard limit does to the execution: fail or suspend.
        #[arg(long, default_value = "fail")]
        on_hard_limit: String,
        /// Usage goes back to zero this often.
        #[arg(long)]
        reset_interval_ms: Option<u64>,
    },
    /// List budgets with their usage.
    List,
    /// Show one budget.
    Get { id: String },
    /// Reset a budget's usage (executions suspended on it resume).
    Reset { id: String },
}

pub async fn run(connection: &Connection, command: BudgetCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let answer = match command {
        BudgetCommand::Create {
            name,
            scope,
            limits,
            on_hard_limit,
            reset_interval_ms,
        } => {
            let dimensions = limits
                .iter()
                .map(|l| dimension(l))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({
                "name": name,
                "scope": scope_json(&scope)?,
                "dimensions": dimensions,
                "on_hard_limit": on_hard_limit,
                "reset_interval_ms": reset_interval_ms,
            });
            client
                .json(Method::POST, "/v1/budgets", Some(&body))
                .await?
        }
        BudgetCommand::List => client.json(Method::GET, "/v1/budgets", None).await?,
        BudgetCommand::Get { id } => {
            let path = format!("/v1/budgets/{id}");
            client.json(Method::GET, &path, None).await?
        }
        BudgetCommand::Reset { id } => {
            let path = format!("/v1/budgets/{id}/reset");
            client.json(Method::POST, &path, None).await?
        }
    };
    if connection.json {
        return print_json(&answer);
    }
    match answer.as_array() {
        Some(budgets) => budgets.iter().for_each(print_budget),
        None => print_budget(&answer),
    }
    Ok(())
}

/// `tenant`, `flow:<id>`, `execution:<id>`, `lane:<name>` as the API's scope.
fn scope_json(scope: &str) -> anyhow::Result<Value> {
    Ok(match scope.split_once(':') {
        None if scope == "tenant" => json!({ "type": "tenant" }),
        Some(("flow", id)) => json!({ "type": "flow", "flow_id": id }),
        Some(("execution", id)) => json!({ "type": "execution", "execution_id": id }),
        Some(("lane", lane)) => json!({ "type": "lane", "lane": lane }),
        _ => bail!("--scope: expected tenant, flow:<id>, execution:<id> or lane:<name>"),
    })
}

/// `DIMENSION=HARD[/SOFT]` or `DIMENSION=/SOFT` as the API's dimension limit.
fn dimension(spec: &str) -> anyhow::Result<Value> {
    let invalid = || {
        anyhow!("--limit {spec}: expected DIMENSION=HARD, DIMENSION=HARD/SOFT or DIMENSION=/SOFT")
    };
    let (name, limits) = spec.split_once('=').ok_or_else(invalid)?;
    let (hard, soft) = limits.split_once('/').unwrap_or((limits, ""));
    let number = |s: &str| -> anyhow::Result<Option<u64>> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).with_context(invalid)
    };
    let (hard, soft) = (number(hard)?, number(soft)?);
    if name.is_empty() || (hard.is_none() && soft.is_none()) {
        return Err(invalid());
    }
    Ok(json!({ "dimension": name, "hard_limit": hard, "soft_limit": soft }))
}

fn print_budget(budget: &Value) {
    println!(
        "budget {} `{}` over {} (on hard limit: {})",
        text(&budget["budget_id"]),
        text(&budget["name"]),
        text(&budget["scope"]["type"]),
        text(&budget["on_hard_limit"])
    );
    for d in budget["dimensions"].as_array().into_iter().flatten() {
        let limit = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
        println!(
            "  {:<24} used {:>12}  soft {:>12}  hard {:>12}",
            text(&d["dimension"]),
            limit(&d["used"]),
            limit(&d["soft_limit"]),
            limit(&d["hard_limit"])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_scopes_parse_or_say_why() {
        assert_eq!(
            dimension("tokens=100/80").unwrap(),
            json!({ "dimension": "tokens", "hard_limit": 100, "soft_limit": 80 })
        );
        assert_eq!(dimension("calls=5").unwrap()["soft_limit"], Value::Null);
        assert_eq!(dimension("calls=/5").unwrap()["hard_limit"], Value::Null);
        for bad in ["calls", "=5", "calls=", "calls=x", "calls=5/y", "calls=/"] {
            assert!(dimension(bad).is_err(), "{bad}");
        }
        assert_eq!(scope_json("lane:gpu").unwrap()["lane"], "gpu");
        assert_eq!(scope_json("tenant").unwrap()["type"], "tenant");
        assert!(scope_json("planet:earth").is_err());
        assert!(scope_json("flow").is_err());
    }
}
