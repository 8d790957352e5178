//! `flowfabric schedule …`: recurring executions.

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::Value;

use flowfabric::api::{CreateSchedule, ScheduleList, ScheduleView, ScheduledBody};
use flowfabric::model::{Cadence, Created, MissedPolicy, OverlapPolicy};

use super::client::{path_segment, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

#[derive(clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: `--cron EXPR [--time-zone ZONE]` or `--every-ms N`.
    Create {
        name: String,
        /// The component kind each fire runs.
        kind: String,
        /// A cron expression: 5 fields (minute to weekday) or 6 (seconds first).
        #[arg(
            long,
            conflicts_with = "every_ms",
            required_unless_present = "every_ms"
        )]
        cron: Option<String>,
        /// The cron expression's time zone (IANA name).
        #[arg(long, default_value = "UTC", requires = "cron")]
        time_zone: String,
        /// Fire every this many milliseconds instead (at least 1000).
        #[arg(long)]
        every_ms: Option<u64>,
        /// The input, as JSON (or text, when it is not JSON).
        #[arg(long)]
        input: Option<String>,
        /// Each fire's execution is due up to this much later, at random.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Fire times that passed unfired: skip, run-once, or backfill:N.
        #[arg(long, default_value = "run-once")]
        missed: String,
        /// When the last execution has not ended.
        #[arg(long, value_enum, default_value_t = Overlap::Allow)]
        overlap: Overlap,
        /// Each fire's execution carries this concurrency key.
        #[arg(long)]
        concurrency_key: Option<String>,
    },
    /// List schedules with their next fire times.
    List,
    /// Show one schedule.
    Get { id: String },
    /// Stop firing until resumed.
    Pause { id: String },
    /// Fire again from the next time to come.
    Resume { id: String },
    /// Create the schedule's execution now; prints its id.
    Trigger { id: String },
    /// Delete a schedule (its executions stay).
    Rm { id: String },
}

pub async fn run(connection: &Connection, command: ScheduleCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let at = |id: &str, action: &str| format!("/v1/schedules/{}{action}", path_segment(id));
    let shown: Vec<ScheduleView> = match command {
        ScheduleCommand::Create {
            name,
            kind,
            cron,
            time_zone,
            every_ms,
            input,
            jitter_ms,
            missed,
            overlap,
            concurrency_key,
        } => {
            let cadence = match (cron, every_ms) {
                (Some(expression), _) => Cadence::Cron {
                    expression,
                    time_zone,
                },
                (None, Some(every_ms)) => Cadence::Interval { every_ms },
                (None, None) => bail!("give --cron or --every-ms"),
            };
            let input = input
                .map(|text| serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)));
            let body = CreateSchedule {
                name,
                cadence,
                jitter_ms,
                missed: missed_policy(&missed)?,
                overlap: overlap.into(),
                execution: ScheduledBody {
                    kind,
                    input,
                    concurrency_key,
                    ..ScheduledBody::default()
                },
            };
            vec![
                client
                    .typed(Method::POST, "/v1/schedules", Some(&body))
                    .await?,
            ]
        }
        ScheduleCommand::List => {
            let page: ScheduleList = client
                .get_typed("/v1/schedules", &[("limit", "1000".into())])
                .await?;
            if connection.json {
                return print_json(&page);
            }
            page.items
        }
        ScheduleCommand::Get { id } => {
            vec![client.typed(Method::GET, &at(&id, ""), NO_BODY).await?]
        }
        ScheduleCommand::Pause { id } => {
            vec![
                client
                    .typed(Method::POST, &at(&id, "/pause"), NO_BODY)
                    .await?,
            ]
        }
        ScheduleCommand::Resume { id } => {
            vec![
                client
                    .typed(Method::POST, &at(&id, "/resume"), NO_BODY)
                    .await?,
            ]
        }
        ScheduleCommand::Trigger { id } => {
            let created: Created = client
                .typed(Method::POST, &at(&id, "/trigger"), NO_BODY)
                .await?;
            match connection.json {
                true => print_json(&created)?,
                false => println!("{}", created.execution_id),
            }
            return Ok(());
        }
        ScheduleCommand::Rm { id } => {
            client.json(Method::DELETE, &at(&id, ""), None).await?;
            if !connection.json {
                println!("deleted schedule {id}");
            }
            return Ok(());
        }
    };
    if connection.json {
        return match shown.as_slice() {
            [one] => print_json(one),
            all => print_json(&all),
        };
    }
    shown.iter().for_each(print_schedule);
    Ok(())
}

/// What `--overlap` takes, as the API's overlap policy.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Overlap {
    /// Start another one beside it.
    Allow,
    /// Skip this fire time.
    Skip,
    /// Cancel the running one, then start the new one.
    CancelPrevious,
}

impl From<Overlap> for OverlapPolicy {
    fn from(overlap: Overlap) -> Self {
        match overlap {
            Overlap::Allow => OverlapPolicy::Allow,
            Overlap::Skip => OverlapPolicy::Skip,
            Overlap::CancelPrevious => OverlapPolicy::CancelPrevious,
        }
    }
}

/// `skip`, `run-once` or `backfill:N` as the API's missed policy.
fn missed_policy(spec: &str) -> anyhow::Result<MissedPolicy> {
    Ok(match spec.split_once(':') {
        None if spec == "skip" => MissedPolicy::Skip,
        None if spec == "run-once" => MissedPolicy::RunOnce,
        Some(("backfill", n)) => {
            let max: u32 = n
                .parse()
                .with_context(|| format!("--missed {spec}: `{n}` is not a count"))?;
            MissedPolicy::Backfill { max }
        }
        _ => bail!("--missed: expected skip, run-once or backfill:N"),
    })
}

fn print_schedule(view: &ScheduleView) {
    let s = &view.schedule;
    let cadence = match &s.spec.cadence {
        flowfabric::model::Cadence::Cron {
            expression,
            time_zone,
        } => format!("cron `{expression}` ({time_zone})"),
        flowfabric::model::Cadence::Interval { every_ms } => format!("every {every_ms} ms"),
    };
    let state = if s.paused { "paused" } else { "active" };
    println!(
        "{}  {}  {}  runs {}  {state}",
        s.schedule_id, s.spec.name, cadence, s.spec.execution.kind
    );
    let fmt =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(last) = &s.last_fire_at {
        println!("  last fire  {}", fmt(last));
    }
    if !view.upcoming.is_empty() {
        let next: Vec<String> = view.upcoming.iter().map(fmt).collect();
        println!("  next       {}", next.join(", "));
    }
}
