//! `flowfabric flow …`: create a flow from a JSON file, add to it, show it,
//! list and cancel flows, over the HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use flowfabric::api::{CancelFlowBody, EdgeList, FlowCancelled, FlowPage};
use flowfabric::model::{FlowCancelPolicy, FlowSnapshot, GraphApplied};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::{path_segment, wire_name, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

#[derive(clap::Subcommand)]
pub enum FlowCommand {
    /// Create a flow from a JSON file (`{name, members: [{key, execution, join?}],
    /// edges: [{from, to, pass_result?}]}`, the body of `POST /v1/flows`).
    Create { file: PathBuf },
    /// Add members and edges from a JSON file (the body of
    /// `POST /v1/flows/{id}/members`).
    Extend { id: String, file: PathBuf },
    /// Show a flow: its members, their states, and its edges.
    Get { id: String },
    /// List flows, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A flow's edges with both ends' executions: all, a member's outgoing
    /// (`--from KEY`) or incoming (`--to KEY`), or one (both).
    Edges {
        id: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Close a flow and cancel its members.
    Cancel {
        id: String,
        /// cancel_all, cancel_pending or flow_only.
        #[arg(long, default_value = "cancel_all")]
        policy: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(connection: &Connection, command: FlowCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let json = connection.json;
    match command {
        FlowCommand::Create { file } => {
            let body = read_json(&file)?;
            let applied: GraphApplied =
                client.typed(Method::POST, "/v1/flows", Some(&body)).await?;
            show(json, &applied, print_applied)
        }
        FlowCommand::Extend { id, file } => {
            let body = read_json(&file)?;
            let path = format!("/v1/flows/{}/members", path_segment(&id));
            let applied: GraphApplied = client.typed(Method::POST, &path, Some(&body)).await?;
            show(json, &applied, print_applied)
        }
        FlowCommand::Get { id } => {
            let path = format!("/v1/flows/{}", path_segment(&id));
            let flow: FlowSnapshot = client.typed(Method::GET, &path, NO_BODY).await?;
            show(json, &flow, print_snapshot)
        }
        FlowCommand::List { limit, cursor } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(cursor.map(|c| ("cursor", c)));
            let page: FlowPage = client.get_typed("/v1/flows", &query).await?;
            show(json, &page, print_list)
        }
        FlowCommand::Edges { id, from, to } => {
            let path = format!("/v1/flows/{}/edges", path_segment(&id));
            let mut query = Vec::new();
            query.extend(from.map(|k| ("from", k)));
            query.extend(to.map(|k| ("to", k)));
            let list: EdgeList = client.get_typed(&path, &query).await?;
            show(json, &list, |list| {
                for e in &list.items {
                    println!(
                        "{} -> {}  {}  {} -> {}{}",
                        e.from,
                        e.to,
                        e.state.as_str(),
                        e.from_execution_id,
                        e.to_execution_id,
                        if e.pass_result {
                            "  (passes its result)"
                        } else {
                            ""
                        }
                    );
                }
            })
        }
        FlowCommand::Cancel { id, policy, reason } => {
            let policy: FlowCancelPolicy = serde_json::from_value(Value::String(policy.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--policy {policy}: expected cancel_all, cancel_pending or flow_only"
                    )
                })?;
            let body = CancelFlowBody { policy, reason };
            let path = format!("/v1/flows/{}/cancel", path_segment(&id));
            let answer: FlowCancelled = client.typed(Method::POST, &path, Some(&body)).await?;
            show(json, &answer, |a| {
                println!("flow {id} cancelled ({} members)", a.cancelled)
            })
        }
    }
}

/// Print `answer` as JSON for scripts, or as text for people.
fn show<T: Serialize>(json: bool, answer: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::to_value(answer)?);
    }
    text(answer);
    Ok(())
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))
}

/// Create and extend: the revision and the new members' ids.
fn print_applied(applied: &GraphApplied) {
    println!("flow {} at revision {}", applied.flow_id, applied.revision);
    for (key, id) in &applied.members {
        println!("  {key:<24} {id}");
    }
}

fn print_snapshot(flow: &FlowSnapshot) {
    let s = &flow.summary;
    println!(
        "flow {} ({}) {}: {} members, {} unfinished, {} failed, revision {}",
        s.flow_id,
        s.name,
        s.state.as_str(),
        flow.members.len(),
        s.unfinished,
        s.failed,
        s.revision
    );
    for m in &flow.members {
        let join = match (&m.join, m.join_state) {
            (Some(policy), Some(state)) => format!("{} ({})", wire_name(policy), wire_name(&state)),
            _ => String::new(),
        };
        println!(
            "  {:<24} {:<36} {:<16} {}",
            m.key,
            m.execution_id,
            m.state.as_str(),
            join
        );
    }
    for e in &flow.edges {
        let passes = if e.pass_result {
            " (passes its result)"
        } else {
            ""
        };
        println!("  {} -> {}: {}{passes}", e.from, e.to, e.state.as_str());
    }
}

fn print_list(page: &FlowPage) {
    println!(
        "{:<36}  {:<20} {:<10} {:>7} {:>10}",
        "ID", "NAME", "STATE", "MEMBERS", "UNFINISHED"
    );
    for f in &page.items {
        println!(
            "{:<36}  {:<20} {:<10} {:>7} {:>10}",
            f.flow_id,
            f.name,
            f.state.as_str(),
            f.members,
            f.unfinished
        );
    }
    if let Some(cursor) = page.next_cursor {
        eprintln!("more: --cursor {cursor}");
    }
}
