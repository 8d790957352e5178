//! `flowfabric events …`: read a tenant's event streams (completions, lease
//! history, signal delivery) by cursor, or follow one live.

use futures::StreamExt;
use serde_json::Value;

use super::client::{ApiClient, Connection};
use super::remote::{items, print_json, text};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Stream {
    /// Executions that ended.
    Completions,
    /// Leases acquired, renewed, released, expired, revoked.
    Leases,
    /// Signals delivered: resumed, buffered, duplicate.
    Signals,
}

impl Stream {
    fn path(self) -> &'static str {
        match self {
            Stream::Completions => "/v1/events",
            Stream::Leases => "/v1/events/leases",
            Stream::Signals => "/v1/events/signals",
        }
    }
}

#[derive(clap::Args)]
pub struct Events {
    #[arg(value_enum, default_value = "completions")]
    stream: Stream,
    /// Only events after this cursor (a previous page's `next_cursor`).
    #[arg(long)]
    after: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Keep the stream open and print events as they happen.
    #[arg(long)]
    follow: bool,
}

pub async fn run(connection: &Connection, args: Events) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    if args.follow {
        return follow(&client, connection.json, &args).await;
    }
    let mut query = vec![("limit", args.limit.to_string())];
    query.extend(args.after.map(|after| ("after", after)));
    let page = client.get_with_query(args.stream.path(), &query).await?;
    if connection.json {
        return print_json(&page);
    }
    for event in items(&page) {
        println!("{}", line(args.stream, event));
    }
    eprintln!("next: --after {}", text(&page["next_cursor"]));
    Ok(())
}

async fn follow(client: &ApiClient, json: bool, args: &Events) -> anyhow::Result<()> {
    let mut path = format!("{}/stream", args.stream.path());
    if let Some(after) = &args.after {
        path.push_str(&format!("?after={after}"));
    }
    let mut events = Box::pin(client.events(&path).await?);
    while let Some(event) = events.next().await {
        let (_, data) = event?;
        if json {
            println!("{data}");
        } else {
            println!("{}", line(args.stream, &data));
        }
    }
    Ok(())
}

/// One event as a line: when, which execution, what happened, its cursor.
fn line(stream: Stream, event: &Value) -> String {
    let what = match stream {
        Stream::Completions => format!(
            "attempt {}: {}",
            event["attempt_index"],
            text(&event["outcome"])
        ),
        Stream::Leases => format!(
            "attempt {} epoch {}: {} ({})",
            event["attempt_index"],
            event["lease_epoch"],
            text(&event["kind"]),
            text(&event["phase"])
        ),
        Stream::Signals => format!(
            "signal {} `{}`: {}",
            text(&event["signal_id"]),
            text(&event["name"]),
            text(&event["effect"])
        ),
    };
    format!(
        "{}  {}  {what}  [{}]",
        text(&event["created_at"]),
        text(&event["execution_id"]),
        text(&event["cursor"])
    )
}
