//! `get ID --steps`: an execution's journal of durable steps, as a table.

use flowfabric::api::StepList;
use flowfabric::model::{StepKind, StepSummary};

use super::client::ApiClient;

/// Every recorded step of the execution `id` (a path segment already), in
/// position order, page by page.
pub async fn fetch(client: &ApiClient, id: &str) -> anyhow::Result<Vec<StepSummary>> {
    let path = format!("/v1/executions/{id}/steps");
    let mut steps = Vec::new();
    let mut cursor: Option<u32> = None;
    loop {
        let mut query = vec![("limit", "1000".to_string())];
        query.extend(cursor.map(|c| ("cursor", c.to_string())));
        let page: StepList = client.get_typed(&path, &query).await?;
        steps.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(steps),
        }
    }
}

pub fn print(steps: &[StepSummary]) {
    if steps.is_empty() {
        println!("steps     none recorded");
        return;
    }
    println!(
        "steps\n  {:>4}  {:<24} {:<9} {:>7} {:>9} {:>9}",
        "#", "NAME", "KIND", "ATTEMPT", "DURATION", "SIZE"
    );
    for s in steps {
        let kind = match s.kind {
            StepKind::Completed => "completed",
            StepKind::Failed => "failed",
            StepKind::Sleep => "sleep",
        };
        let detail = match (&s.error, s.wake_at) {
            (Some(error), _) => format!("  {error}"),
            (None, Some(wake_at)) => format!(
                "  until {}",
                wake_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            (None, None) => String::new(),
        };
        println!(
            "  {:>4}  {:<24} {:<9} {:>7} {:>7}ms {:>8}B{detail}",
            s.position, s.name, kind, s.attempt_index, s.duration_ms, s.size
        );
    }
}
