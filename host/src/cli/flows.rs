//! `flowfabric flow …`: create a flow from a JSON file, add to it, show it,
//! list and cancel flows, over the HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{ApiClient, Connection};
use super::remote::{items, print_json, text};

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
    let answer = match command {
        FlowCommand::Create { file } => {
            let body = read_json(&file)?;
            client.json(Method::POST, "/v1/flows", Some(&body)).await?
        }
        FlowCommand::Extend { id, file } => {
            let body = read_json(&file)?;
            let path = format!("/v1/flows/{id}/members");
            client.json(Method::POST, &path, Some(&body)).await?
        }
        FlowCommand::Get { id } => {
            let flow = client
                .json(Method::GET, &format!("/v1/flows/{id}"), None)
                .await?;
            if !connection.json {
                print_snapshot(&flow);
                return Ok(());
            }
            flow
        }
        FlowCommand::List { limit, cursor } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(cursor.map(|c| ("cursor", c)));
            let page = client.get_with_query("/v1/flows", &query).await?;
            if !connection.json {
                print_list(&page);
                return Ok(());
            }
            page
        }
        FlowCommand::Cancel { id, policy, reason } => {
            let body = json!({ "policy": policy, "reason": reason });
            let path = format!("/v1/flows/{id}/cancel");
            let answer = client.json(Method::POST, &path, Some(&body)).await?;
            if !connection.json {
                println!("flow {id} cancelled ({} members)", answer["cancelled"]);
                return Ok(());
            }
            answer
        }
    };
    if connection.json {
        return print_json(&answer);
    }
    // Create and extend: the revision and the new members' ids.
    println!(
        "flow {} at revision {}",
        text(&answer["flow_id"]),
        answer["revision"]
    );
    if let Some(members) = answer["members"].as_object() {
        for (key, id) in members {
            println!("  {key:<24} {}", text(id));
        }
    }
    Ok(())
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))
}

fn print_snapshot(flow: &Value) {
    println!(
        "flow {} ({}) {}: {} members, {} unfinished, {} failed, revision {}",
        text(&flow["flow_id"]),
        text(&flow["name"]),
        text(&flow["state"]),
        flow["members"].as_array().map_or(0, Vec::len),
        flow["unfinished"],
        flow["failed"],
        flow["revision"]
    );
    for m in flow["members"].as_array().into_iter().flatten() {
        let join = match m["join"]["type"].as_str() {
            Some(policy) => format!("{policy} ({})", text(&m["join_state"])),
            None => String::new(),
        };
        println!(
            "  {:<24} {:<36} {:<16} {}",
            text(&m["key"]),
            text(&m["execution_id"]),
            text(&m["state"]),
            join
        );
    }
    for e in flow["edges"].as_array().into_iter().flatten() {
        let passes = if e["pass_result"] == true {
            " (passes its result)"
        } else {
            ""
        };
        println!(
            "  {} -> {}: {}{passes}",
            text(&e["from"]),
            text(&e["to"]),
            text(&e["state"])
        );
    }
}

fn print_list(page: &Value) {
    println!(
        "{:<36}  {:<20} {:<10} {:>7} {:>10}",
        "ID", "NAME", "STATE", "MEMBERS", "UNFINISHED"
    );
    for f in items(page) {
        println!(
            "{:<36}  {:<20} {:<10} {:>7} {:>10}",
            text(&f["flow_id"]),
            text(&f["name"]),
            text(&f["state"]),
            f["members"],
            f["unfinished"]
        );
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more: --cursor {cursor}");
    }
}
