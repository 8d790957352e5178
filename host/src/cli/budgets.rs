//! `flowfabric budget …`: define budgets, read their usage, reset and
//! delete them.

use anyhow::{anyhow, bail, Context};
use reqwest::Method;
use serde_json::json;

use flowfabric::api::AdjustmentList;
use flowfabric::model::{Budget, BudgetScope, DimensionLimit, NewBudget, UsageAdjustment};

use super::client::{path_segment, wire_name, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

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
    /// Delete a budget (what it held is released, as by a reset).
    Rm { id: String },
    /// Correct one dimension's usage by hand (a negative delta lowers it),
    /// with a reason kept in the budget's audit trail.
    Adjust {
        id: String,
        #[arg(long)]
        dimension: String,
        #[arg(long, allow_hyphen_values = true)]
        delta: i64,
        #[arg(long)]
        reason: String,
    },
    /// The budget's hand corrections, newest first.
    Adjustments {
        id: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

pub async fn run(connection: &Connection, command: BudgetCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let list = matches!(command, BudgetCommand::List);
    let budgets: Vec<Budget> = match command {
        BudgetCommand::Create {
            name,
            scope,
            limits,
            on_hard_limit,
            reset_interval_ms,
        } => {
            let body = NewBudget {
                name,
                scope: scope_of(&scope)?,
                dimensions: limits
                    .iter()
                    .map(|l| dimension(l))
                    .collect::<anyhow::Result<_>>()?,
                on_hard_limit: serde_json::from_value(json!(on_hard_limit))
                    .map_err(|_| anyhow!("--on-hard-limit: expected fail or suspend"))?,
                reset_interval_ms,
            };
            vec![
                client
                    .typed(Method::POST, "/v1/budgets", Some(&body))
                    .await?,
            ]
        }
        BudgetCommand::List => client.typed(Method::GET, "/v1/budgets", NO_BODY).await?,
        BudgetCommand::Get { id } => {
            let path = format!("/v1/budgets/{}", path_segment(&id));
            vec![client.typed(Method::GET, &path, NO_BODY).await?]
        }
        BudgetCommand::Reset { id } => {
            let path = format!("/v1/budgets/{}/reset", path_segment(&id));
            vec![client.typed(Method::POST, &path, NO_BODY).await?]
        }
        BudgetCommand::Rm { id } => {
            let path = format!("/v1/budgets/{}", path_segment(&id));
            client.json(Method::DELETE, &path, None).await?;
            if !connection.json {
                println!("deleted budget {id}");
            }
            return Ok(());
        }
        BudgetCommand::Adjust {
            id,
            dimension,
            delta,
            reason,
        } => {
            let path = format!("/v1/budgets/{}/usage", path_segment(&id));
            let body = UsageAdjustment {
                dimension,
                delta,
                reason,
            };
            vec![client.typed(Method::POST, &path, Some(&body)).await?]
        }
        BudgetCommand::Adjustments { id, limit } => {
            let path = format!("/v1/budgets/{}/adjustments", path_segment(&id));
            let list: AdjustmentList = client
                .get_typed(&path, &[("limit", limit.to_string())])
                .await?;
            if connection.json {
                return print_json(&serde_json::to_value(&list)?);
            }
            for a in &list.items {
                println!(
                    "{}  {:<16} {:>+12} -> {:<12} {}",
                    a.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    a.dimension,
                    a.delta,
                    a.used_after,
                    a.reason
                );
            }
            return Ok(());
        }
    };
    if connection.json {
        // `list` answers an array, the others the one budget, as the API does.
        return match (list, budgets.first()) {
            (false, Some(one)) => print_json(&serde_json::to_value(one)?),
            _ => print_json(&budgets),
        };
    }
    budgets.iter().for_each(print_budget);
    Ok(())
}

/// `tenant`, `flow:<id>`, `execution:<id>`, `lane:<name>` as the API's scope.
fn scope_of(scope: &str) -> anyhow::Result<BudgetScope> {
    let id_of = |id: &str| -> anyhow::Result<uuid::Uuid> {
        id.parse()
            .with_context(|| format!("--scope {scope}: `{id}` is not an id"))
    };
    Ok(match scope.split_once(':') {
        None if scope == "tenant" => BudgetScope::Tenant,
        Some(("flow", id)) => BudgetScope::Flow {
            flow_id: id_of(id)?.into(),
        },
        Some(("execution", id)) => BudgetScope::Execution {
            execution_id: id_of(id)?.into(),
        },
        Some(("lane", lane)) => BudgetScope::Lane { lane: lane.into() },
        _ => bail!("--scope: expected tenant, flow:<id>, execution:<id> or lane:<name>"),
    })
}

/// `DIMENSION=HARD[/SOFT]` or `DIMENSION=/SOFT` as the API's dimension limit.
fn dimension(spec: &str) -> anyhow::Result<DimensionLimit> {
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
    let (hard_limit, soft_limit) = (number(hard)?, number(soft)?);
    if name.is_empty() || (hard_limit.is_none() && soft_limit.is_none()) {
        return Err(invalid());
    }
    Ok(DimensionLimit {
        dimension: name.into(),
        hard_limit,
        soft_limit,
    })
}

fn print_budget(budget: &Budget) {
    println!(
        "budget {} `{}` over {} (on hard limit: {})",
        budget.budget_id,
        budget.name,
        wire_name(&budget.scope),
        wire_name(&budget.on_hard_limit)
    );
    let limit = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
    for d in &budget.dimensions {
        println!(
            "  {:<24} used {:>12}  soft {:>12}  hard {:>12}",
            d.dimension,
            d.used,
            limit(d.soft_limit),
            limit(d.hard_limit)
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
            DimensionLimit {
                dimension: "tokens".into(),
                hard_limit: Some(100),
                soft_limit: Some(80)
            }
        );
        assert_eq!(dimension("calls=5").unwrap().soft_limit, None);
        assert_eq!(dimension("calls=/5").unwrap().hard_limit, None);
        for bad in ["calls", "=5", "calls=", "calls=x", "calls=5/y", "calls=/"] {
            assert!(dimension(bad).is_err(), "{bad}");
        }
        assert_eq!(
            scope_of("lane:gpu").unwrap(),
            BudgetScope::Lane { lane: "gpu".into() }
        );
        assert_eq!(scope_of("tenant").unwrap(), BudgetScope::Tenant);
        assert!(scope_of("planet:earth").is_err());
        assert!(scope_of("flow").is_err());
        assert!(scope_of("flow:not-an-id").is_err());
    }
}
