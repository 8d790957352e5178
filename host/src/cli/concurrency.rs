//! `flowfabric concurrency …`: limits per concurrency key, per kind or lane.

use reqwest::Method;

use flowfabric::api::ConcurrencyLimitList;
use flowfabric::model::{ConcurrencyLimit, ConcurrencyScope, KeyLimit};

use super::client::{path_segment, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

#[derive(clap::Subcommand)]
pub enum ConcurrencyCommand {
    /// Set the limit for a kind or lane: executions with a concurrency key
    /// run at most `--max-running` of each key at once.
    Set {
        #[arg(value_enum)]
        scope: Scope,
        /// The kind (component) or lane.
        name: String,
        #[arg(long)]
        max_running: u32,
        /// Also at most this many starts of each key per window.
        #[arg(long)]
        max_starts: Option<u32>,
        /// The start window in milliseconds (default 1000).
        #[arg(long, requires = "max_starts")]
        window_ms: Option<u64>,
    },
    /// List the tenant's limits.
    List,
    /// Delete a limit; what it held back becomes claimable.
    Rm {
        #[arg(value_enum)]
        scope: Scope,
        name: String,
    },
}

/// What a limit applies to, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Scope {
    Kind,
    Lane,
}

impl From<Scope> for ConcurrencyScope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Kind => ConcurrencyScope::Kind,
            Scope::Lane => ConcurrencyScope::Lane,
        }
    }
}

fn at(scope: Scope, name: &str) -> String {
    let scope = ConcurrencyScope::from(scope).as_str();
    format!("/v1/concurrency-limits/{scope}/{}", path_segment(name))
}

pub async fn run(connection: &Connection, command: ConcurrencyCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    match command {
        ConcurrencyCommand::Set {
            scope,
            name,
            max_running,
            max_starts,
            window_ms,
        } => {
            let body = KeyLimit {
                max_running,
                max_starts,
                window_ms,
            };
            let set: ConcurrencyLimit = client
                .typed(Method::PUT, &at(scope, &name), Some(&body))
                .await?;
            match connection.json {
                true => print_json(&set)?,
                false => print_limit(&set),
            }
        }
        ConcurrencyCommand::List => {
            let list: ConcurrencyLimitList = client
                .typed(Method::GET, "/v1/concurrency-limits", NO_BODY)
                .await?;
            match connection.json {
                true => print_json(&list)?,
                false => list.limits.iter().for_each(print_limit),
            }
        }
        ConcurrencyCommand::Rm { scope, name } => {
            client.json(Method::DELETE, &at(scope, &name), None).await?;
            if !connection.json {
                println!("deleted the concurrency limit of {name}");
            }
        }
    }
    Ok(())
}

fn print_limit(limit: &ConcurrencyLimit) {
    let key = &limit.limit;
    let starts = match (key.max_starts, key.window_ms()) {
        (Some(n), Some(ms)) => format!(", {n} starts per {ms} ms"),
        _ => String::new(),
    };
    println!(
        "{} {}: {} running per key{starts}",
        limit.scope.as_str(),
        limit.name,
        key.max_running
    );
}
