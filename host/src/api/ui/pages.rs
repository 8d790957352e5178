//! The tenant's other pages: the overview, components (with upload and
//! deprecate), budgets and schedules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Redirect};
use axum::Form;
use chrono::{DurationRound, TimeDelta, Utc};

use super::session::{csrf_matches, TenantSession};
use super::signin::CsrfForm;
use super::view::{self, render, Chrome};
use super::{UiError, UiResult};
use crate::api::error::{Path, RawBody};
use crate::api::AppState;
use crate::engine::OVERVIEW_WINDOW;
use crate::model::{BudgetId, EffectiveGrant, MinuteOutcomes};

/// One minute's bar on the overview chart (succeeded stacked under failed).
pub struct Bar {
    pub x: i64,
    pub ok_y: i64,
    pub ok_h: i64,
    pub fail_y: i64,
    pub fail_h: i64,
    pub title: String,
}

const CHART_H: i64 = 120;
const BAR_W: i64 = 10;

/// One bar per minute of the window, oldest on the left, scaled to the
/// busiest minute.
fn bars(minutes: &[MinuteOutcomes]) -> Vec<Bar> {
    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    let slots = OVERVIEW_WINDOW.num_minutes();
    let by_minute: BTreeMap<i64, &MinuteOutcomes> = minutes
        .iter()
        .map(|m| ((now - m.minute).num_minutes(), m))
        .collect();
    let peak = minutes
        .iter()
        .map(|m| m.succeeded + m.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    (0..slots)
        .filter_map(|slot| {
            let ago = slots - 1 - slot;
            let m = by_minute.get(&ago)?;
            let ok_h = ((m.succeeded as f64 / peak) * CHART_H as f64).round() as i64;
            let fail_h = ((m.failed as f64 / peak) * CHART_H as f64).round() as i64;
            Some(Bar {
                x: slot * BAR_W,
                ok_y: CHART_H - ok_h,
                ok_h,
                fail_y: CHART_H - ok_h - fail_h,
                fail_h,
                title: format!(
                    "{}: {} succeeded, {} failed",
                    m.minute.format("%H:%M"),
                    m.succeeded,
                    m.failed
                ),
            })
        })
        .collect()
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    /// Each state with its count as shown (`10000+` past the cap).
    states: Vec<(String, String)>,
    total: String,
    succeeded: u64,
    failed: u64,
    bars: Vec<Bar>,
    chart_width: i64,
    failing_kinds: Vec<(String, u64)>,
}

/// A count as the overview shows it: `10000+` when counting stopped there.
fn shown_count(count: u64, more: bool) -> String {
    if more {
        format!("{count}+")
    } else {
        count.to_string()
    }
}

pub async fn overview(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<Html<String>> {
    let o = state.engine.overview(session.tenant).await?;
    let page = OverviewPage {
        chrome: Chrome::tenant("Overview", "overview", &session.session),
        total: shown_count(
            o.states.iter().map(|s| s.count).sum(),
            o.states.iter().any(|s| s.more),
        ),
        states: o
            .states
            .iter()
            .map(|s| (s.state.as_str().to_owned(), shown_count(s.count, s.more)))
            .collect(),
        succeeded: o.minutes.iter().map(|m| m.succeeded).sum(),
        failed: o.minutes.iter().map(|m| m.failed).sum(),
        bars: bars(&o.minutes),
        chart_width: OVERVIEW_WINDOW.num_minutes() * BAR_W,
        failing_kinds: o
            .failing_kinds
            .into_iter()
            .map(|k| (k.kind, k.failed))
            .collect(),
    };
    Ok(Html(render(&page)))
}

pub struct VersionRow {
    pub kind: String,
    pub version: i32,
    pub digest: String,
    pub size: String,
    pub deprecated: bool,
    /// It may be purged (`ComponentVersion::purge_refusal`).
    pub purgeable: bool,
    pub created: String,
    /// Imports a grant governs, each `name (capability, granted|denied)`;
    /// `None` while this process has not loaded the version.
    pub imports: Option<Vec<String>>,
}

#[derive(Template)]
#[template(path = "ui/components.html")]
struct ComponentsPage {
    chrome: Chrome,
    versions: Vec<VersionRow>,
    /// Each kind with a grant: (kind, what it grants).
    grants: Vec<(String, String)>,
}

fn size(bytes: i32) -> String {
    let b = f64::from(bytes.max(0));
    if b >= 1048576.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// The imports a grant governs, as `name (capability, granted|denied)`.
fn governed_imports(names: &[String], grant: &EffectiveGrant) -> Vec<String> {
    crate::components::imports_of(names, grant)
        .into_iter()
        .filter_map(|i| {
            let capability = i.capability?;
            let verdict = if i.granted { "granted" } else { "denied" };
            Some(format!("{} ({capability}, {verdict})", i.name))
        })
        .collect()
}

pub async fn components(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<Html<String>> {
    let tenant = session.tenant;
    let backend = state.engine.backend();
    // One grant lookup per kind, and only for kinds with a version whose
    // imports are known: recorded at upload, or (for a version stored
    // before they were) known to this process because it loaded it.
    let mut grants_by_kind: HashMap<String, EffectiveGrant> = HashMap::new();
    let mut versions = Vec::new();
    let listed = backend.list_components(tenant).await?;
    let mut newest: HashMap<String, i32> = HashMap::new();
    for v in &listed {
        let n = newest.entry(v.kind.clone()).or_default();
        *n = (*n).max(v.version);
    }
    for v in listed {
        let known = v
            .imports
            .clone()
            .or_else(|| state.runtime.imports(&v.digest));
        let imports = match known {
            None => None,
            Some(names) => {
                if !grants_by_kind.contains_key(&v.kind) {
                    let grant =
                        crate::components::effective_grant(&state.engine, tenant, &v.kind).await?;
                    grants_by_kind.insert(v.kind.clone(), grant);
                }
                Some(governed_imports(&names, &grants_by_kind[&v.kind]))
            }
        };
        versions.push(VersionRow {
            purgeable: v.purge_refusal(newest[&v.kind]).is_none(),
            kind: v.kind,
            version: v.version,
            digest: v.digest,
            size: size(v.size_bytes),
            deprecated: v.deprecated,
            created: view::time(v.created_at),
            imports,
        });
    }
    let grants = backend
        .list_grants(tenant)
        .await?
        .into_iter()
        .map(|g| {
            let mut parts = Vec::new();
            if !g.grant.http.is_empty() {
                parts.push(format!("http: {}", g.grant.http.join(", ")));
            }
            if !g.grant.config.is_empty() {
                parts.push(format!("config: {}", g.grant.config.join(", ")));
            }
            (g.kind, parts.join("; "))
        })
        .collect();
    let page = ComponentsPage {
        chrome: Chrome::tenant("Components", "components", &session.session),
        versions,
        grants,
    };
    Ok(Html(render(&page)))
}

/// Upload a component: the page's script sends the file as the body, with
/// the CSRF token in `x-csrf-token`.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path(kind): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> UiResult<(StatusCode, String)> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !csrf_matches(&session.session, token) {
        return Err(UiError::csrf());
    }
    let turn = state.engine.begin_upload(session.tenant)?;
    let RawBody(wasm) = RawBody::from_request(request, &state).await?;
    let (version, created) =
        crate::components::register_to_end(&state.engine, &state.runtime, turn, &kind, wasm)
            .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        format!("{} version {}", version.kind, version.version),
    ))
}

/// A version's button: `deprecate`, or `purge` (a deprecated version that is
/// not its kind's newest).
pub async fn version_action(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path((kind, version, action)): Path<(String, i32, String)>,
    Form(form): Form<CsrfForm>,
) -> UiResult<Redirect> {
    if !csrf_matches(&session.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    let engine = &state.engine;
    match action.as_str() {
        "deprecate" => {
            engine
                .deprecate_component(session.tenant, &kind, version)
                .await?;
        }
        "purge" => {
            engine
                .purge_component(session.tenant, &kind, version)
                .await?
        }
        _ => return Err(UiError::not_found("action")),
    }
    Ok(Redirect::to("/ui/components"))
}

/// The budgets page's Delete button.
pub async fn delete_budget(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path(id): Path<BudgetId>,
    Form(form): Form<CsrfForm>,
) -> UiResult<Redirect> {
    if !csrf_matches(&session.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    state.engine.delete_budget(session.tenant, id).await?;
    Ok(Redirect::to("/ui/budgets"))
}

pub struct DimensionRow {
    pub budget: String,
    /// The budget's id on its first dimension's row (where its Delete
    /// button goes); `None` on the others.
    pub delete: Option<String>,
    pub scope: String,
    pub dimension: String,
    pub used: u64,
    pub soft: String,
    pub hard: String,
    /// Used as a share of the hard limit (else the soft one), 0–100.
    pub percent: u64,
    pub exhausted: bool,
    pub next_reset: String,
}

#[derive(Template)]
#[template(path = "ui/budgets.html")]
struct BudgetsPage {
    chrome: Chrome,
    rows: Vec<DimensionRow>,
}

pub async fn budgets(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<Html<String>> {
    let mut rows = Vec::new();
    for b in state.engine.backend().list_budgets(session.tenant).await? {
        for (i, d) in b.dimensions.iter().enumerate() {
            let limit = d.hard_limit.or(d.soft_limit).filter(|l| *l > 0);
            rows.push(DimensionRow {
                budget: b.name.clone(),
                delete: (i == 0).then(|| b.budget_id.to_string()),
                scope: serde_json::to_string(&b.scope).unwrap_or_default(),
                dimension: d.dimension.clone(),
                used: d.used,
                soft: d.soft_limit.map(|l| l.to_string()).unwrap_or_default(),
                hard: d.hard_limit.map(|l| l.to_string()).unwrap_or_default(),
                percent: limit.map_or(0, |l| (d.used.saturating_mul(100) / l).min(100)),
                exhausted: d.exhausted,
                next_reset: view::time_opt(b.next_reset_at),
            });
        }
    }
    let page = BudgetsPage {
        chrome: Chrome::tenant("Budgets", "budgets", &session.session),
        rows,
    };
    Ok(Html(render(&page)))
}

pub struct ScheduleRow {
    pub name: String,
    pub cadence: String,
    pub kind: String,
    pub paused: bool,
    pub next_fire: String,
    pub last_fire: String,
    pub last_execution: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    rows: Vec<ScheduleRow>,
}

/// Schedules a page lists.
const PAGE_SCHEDULES: u32 = 200;

pub async fn schedules(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<Html<String>> {
    let rows = state
        .engine
        .list_schedules(session.tenant, None, PAGE_SCHEDULES)
        .await?
        .into_iter()
        .map(|s| ScheduleRow {
            cadence: serde_json::to_string(&s.spec.cadence).unwrap_or_default(),
            name: s.spec.name,
            kind: s.spec.execution.kind,
            paused: s.paused,
            next_fire: view::time(s.next_fire_at),
            last_fire: view::time_opt(s.last_fire_at),
            last_execution: s.last_execution_id.map(|id| id.to_string()),
        })
        .collect();
    let page = SchedulesPage {
        chrome: Chrome::tenant("Schedules", "schedules", &session.session),
        rows,
    };
    Ok(Html(render(&page)))
}
