//! The flows pages: the list, and one flow drawn as a graph (members by
//! depth, left to right, coloured by state; edges by outcome), laid out on
//! the server as SVG so the page needs no graph library.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Html;
use serde::Deserialize;

use super::session::TenantSession;
use super::view::{self, render, Chrome};
use super::UiResult;
use crate::api::error::Path;
use crate::api::AppState;
use crate::model::{FlowEdgeView, FlowId, FlowMemberView, FlowSummary};

const PAGE_FLOWS: u32 = 50;
/// Members drawn; a larger flow lists the rest in its table only.
const MAX_DRAWN: usize = 300;
const NODE_W: i64 = 170;
const NODE_H: i64 = 46;
const GAP_X: i64 = 70;
const GAP_Y: i64 = 22;
const MARGIN: i64 = 10;

pub struct FlowRow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub members: i64,
    pub unfinished: i64,
    pub failed: i64,
    pub created: String,
}

impl FlowRow {
    fn of(f: &FlowSummary) -> Self {
        Self {
            id: f.flow_id.to_string(),
            name: f.name.clone(),
            state: view::name_of(&f.state),
            members: f.members,
            unfinished: f.unfinished,
            failed: f.failed,
            created: view::time(f.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/flows.html")]
struct ListPage {
    chrome: Chrome,
    flows: Vec<FlowRow>,
    next_page_url: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<FlowId>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> UiResult<Html<String>> {
    let flows = state
        .engine
        .list_flows(session.tenant, q.cursor, PAGE_FLOWS)
        .await?;
    let next_page_url = (flows.len() == PAGE_FLOWS as usize)
        .then(|| flows.last())
        .flatten()
        .map(|f| format!("/ui/flows?cursor={}", f.flow_id));
    let page = ListPage {
        chrome: Chrome::tenant("Flows", "flows", &session.session),
        flows: flows.iter().map(FlowRow::of).collect(),
        next_page_url,
    };
    Ok(Html(render(&page)))
}

/// A member placed on the drawing.
pub struct Node {
    pub key: String,
    pub label: String,
    pub execution_id: String,
    pub kind: String,
    pub state: String,
    pub x: i64,
    pub y: i64,
}

/// An edge placed on the drawing.
pub struct Line {
    pub from: String,
    pub to: String,
    pub state: String,
    pub x1: i64,
    pub y1: i64,
    pub x2: i64,
    pub y2: i64,
}

pub struct Drawing {
    pub nodes: Vec<Node>,
    pub lines: Vec<Line>,
    pub width: i64,
    pub height: i64,
    /// Members not drawn (past [`MAX_DRAWN`]).
    pub left_out: usize,
}

/// Each member's depth: the longest path to it from a member without
/// incoming edges (edges always point forward, so the graph is acyclic).
fn depths(members: &[FlowMemberView], edges: &[FlowEdgeView]) -> HashMap<String, usize> {
    let mut depth: HashMap<String, usize> = members.iter().map(|m| (m.key.clone(), 0)).collect();
    // Relax until nothing changes: at most one pass per level of the graph.
    for _ in 0..members.len() {
        let mut changed = false;
        for e in edges {
            let from = depth.get(&e.from).copied().unwrap_or(0);
            if let Some(to) = depth.get_mut(&e.to) {
                if *to < from + 1 {
                    *to = from + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

pub fn draw(members: &[FlowMemberView], edges: &[FlowEdgeView]) -> Drawing {
    let drawn = &members[..members.len().min(MAX_DRAWN)];
    let depth = depths(drawn, edges);
    let mut per_column: HashMap<usize, i64> = HashMap::new();
    let mut at: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut nodes = Vec::with_capacity(drawn.len());
    for m in drawn {
        let column = depth.get(&m.key).copied().unwrap_or(0);
        let row = per_column.entry(column).or_insert(0);
        let (x, y) = (
            MARGIN + column as i64 * (NODE_W + GAP_X),
            MARGIN + *row * (NODE_H + GAP_Y),
        );
        *row += 1;
        at.insert(&m.key, (x, y));
        nodes.push(Node {
            key: m.key.clone(),
            label: m.key.chars().take(20).collect(),
            execution_id: m.execution_id.to_string(),
            kind: m.kind.chars().take(22).collect(),
            state: m.state.as_str().to_owned(),
            x,
            y,
        });
    }
    let lines = edges
        .iter()
        .filter_map(|e| {
            let (fx, fy) = *at.get(e.from.as_str())?;
            let (tx, ty) = *at.get(e.to.as_str())?;
            Some(Line {
                from: e.from.clone(),
                to: e.to.clone(),
                state: e.state.as_str().to_owned(),
                x1: fx + NODE_W,
                y1: fy + NODE_H / 2,
                x2: tx,
                y2: ty + NODE_H / 2,
            })
        })
        .collect();
    let columns = depth.values().max().map_or(1, |d| d + 1) as i64;
    let rows = per_column.values().max().copied().unwrap_or(1);
    Drawing {
        nodes,
        lines,
        width: 2 * MARGIN + columns * NODE_W + (columns - 1) * GAP_X,
        height: 2 * MARGIN + rows * NODE_H + (rows - 1).max(0) * GAP_Y,
        left_out: members.len().saturating_sub(MAX_DRAWN),
    }
}

#[derive(Template)]
#[template(path = "ui/flow.html")]
struct DetailPage {
    chrome: Chrome,
    flow: FlowRow,
    revision: i32,
    drawing: Drawing,
    members: Vec<MemberRow>,
}

/// A member in the table under the graph.
pub struct MemberRow {
    pub key: String,
    pub execution_id: String,
    pub kind: String,
    pub state: &'static str,
}

impl MemberRow {
    fn of(m: &FlowMemberView) -> Self {
        Self {
            key: m.key.clone(),
            execution_id: m.execution_id.to_string(),
            kind: m.kind.clone(),
            state: m.state.as_str(),
        }
    }
}

pub async fn detail(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path(id): Path<FlowId>,
) -> UiResult<Html<String>> {
    let snapshot = state.engine.backend().get_flow(session.tenant, id).await?;
    let drawing = draw(&snapshot.members, &snapshot.edges);
    // Every member is listed, drawn or not.
    let members = snapshot.members.iter().map(MemberRow::of).collect();
    let page = DetailPage {
        chrome: Chrome::tenant(
            format!("Flow {}", snapshot.summary.name),
            "flows",
            &session.session,
        ),
        flow: FlowRow::of(&snapshot.summary),
        revision: snapshot.summary.revision,
        drawing,
        members,
    };
    Ok(Html(render(&page)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EdgeState, ExecutionId, PublicState};

    fn member(key: &str) -> FlowMemberView {
        FlowMemberView {
            key: key.into(),
            execution_id: ExecutionId::new(),
            kind: "k".into(),
            state: PublicState::Waiting,
            join: None,
            join_state: None,
        }
    }

    fn edge(from: &str, to: &str) -> FlowEdgeView {
        FlowEdgeView {
            from: from.into(),
            to: to.into(),
            pass_result: false,
            state: EdgeState::Pending,
        }
    }

    #[test]
    fn members_sit_one_column_right_of_their_deepest_upstream() {
        let members = ["a", "b", "c", "d"].map(member);
        let edges = [
            edge("a", "b"),
            edge("b", "d"),
            edge("a", "d"),
            edge("c", "d"),
        ];
        let d = draw(&members, &edges);
        let x = |k: &str| d.nodes.iter().find(|n| n.key == k).unwrap().x;
        assert_eq!(x("a"), x("c"));
        assert!(x("b") > x("a"));
        assert!(x("d") > x("b"), "d follows b, its deepest upstream");
        assert_eq!(d.lines.len(), 4);
    }
}
