//! `flowfabric events …`: read a tenant's event streams (completions, lease
//! history, signal delivery) by cursor, or follow one live.

use chrono::{DateTime, Utc};
use flowfabric::api::EventPage;
use flowfabric::model::{CompletionEvent, EventCursor, ExecutionId, LeaseEvent, SignalEvent};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use super::client::{decode, path_segment, ApiClient, Connection};
use super::remote::print_json;

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
    /// Only events about this execution.
    #[arg(long)]
    execution: Option<ExecutionId>,
    /// Only events about executions of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only events about executions in this lane.
    #[arg(long)]
    lane: Option<String>,
    /// Only events with this outcome (completions: success, failed,
    /// cancelled, expired, skipped; leases: acquired, reclaimed, renewed,
    /// released, expired, revoked; signals: resumed, buffered, duplicate).
    #[arg(long)]
    outcome: Option<String>,
}

impl Events {
    /// The cursor and filter, as query parameters.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        query.extend(self.after.clone().map(|v| ("after", v)));
        query.extend(self.execution.map(|v| ("execution", v.to_string())));
        query.extend(self.kind.clone().map(|v| ("kind", v)));
        query.extend(self.lane.clone().map(|v| ("lane", v)));
        query.extend(self.outcome.clone().map(|v| ("outcome", v)));
        query
    }
}

pub async fn run(connection: &Connection, args: Events) -> anyhow::Result<()> {
    match args.stream {
        Stream::Completions => show::<CompletionEvent>(connection, &args).await,
        Stream::Leases => show::<LeaseEvent>(connection, &args).await,
        Stream::Signals => show::<SignalEvent>(connection, &args).await,
    }
}

async fn show<E: Line>(connection: &Connection, args: &Events) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    if args.follow {
        return follow::<E>(&client, connection.json, args).await;
    }
    let mut query = vec![("limit", args.limit.to_string())];
    query.extend(args.query());
    let page: EventPage<E> = client.get_typed(args.stream.path(), &query).await?;
    if connection.json {
        return print_json(&page);
    }
    for event in &page.items {
        println!("{}", event.line());
    }
    eprintln!("next: --after {}", page.next_cursor);
    Ok(())
}

async fn follow<E: Line>(client: &ApiClient, json: bool, args: &Events) -> anyhow::Result<()> {
    let mut path = format!("{}/stream", args.stream.path());
    let query: Vec<String> = args
        .query()
        .into_iter()
        .map(|(name, value)| format!("{name}={}", path_segment(&value)))
        .collect();
    if !query.is_empty() {
        path.push_str(&format!("?{}", query.join("&")));
    }
    let mut events = Box::pin(client.events(&path).await?);
    while let Some(event) = events.next().await {
        let (_, data) = event?;
        if json {
            println!("{data}");
            continue;
        }
        let event: E = decode("an event", data)?;
        println!("{}", event.line());
    }
    Ok(())
}

/// An event of one stream, as the API sends it, printable as one line.
trait Line: DeserializeOwned + Serialize + ToSchema {
    fn when(&self) -> DateTime<Utc>;
    fn execution(&self) -> ExecutionId;
    fn cursor(&self) -> EventCursor;
    /// What happened.
    fn what(&self) -> String;

    /// When, which execution, what happened, its cursor.
    fn line(&self) -> String {
        format!(
            "{}  {}  {}  [{}]",
            self.when().to_rfc3339(),
            self.execution(),
            self.what(),
            self.cursor()
        )
    }
}

macro_rules! event_line {
    ($event:ty, |$e:ident| $what:expr) => {
        impl Line for $event {
            fn when(&self) -> DateTime<Utc> {
                self.created_at
            }
            fn execution(&self) -> ExecutionId {
                self.execution_id
            }
            fn cursor(&self) -> EventCursor {
                self.cursor
            }
            fn what(&self) -> String {
                let $e = self;
                $what
            }
        }
    };
}

event_line!(CompletionEvent, |e| format!(
    "attempt {}: {}",
    e.attempt_index, e.outcome
));
event_line!(LeaseEvent, |e| format!(
    "attempt {} epoch {}: {} ({})",
    e.attempt_index, e.lease_epoch, e.kind, e.phase
));
event_line!(SignalEvent, |e| format!(
    "signal {} `{}`: {}",
    e.signal_id, e.name, e.effect
));
