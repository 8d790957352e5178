//! Setting a server up over its HTTP API: tenants (create, limits,
//! capability ceilings, list; with the admin token) and components (upload,
//! list; with a tenant's key).

use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;

use flowfabric::api::{ComponentList, CreateTenant, TenantCreated, TenantList, Uploaded};
use flowfabric::model::{ComponentVersion, Tenant, TenantLimits};

use super::client::{decode, path_segment, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first API key (shown only once).
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// Replace a tenant's limits (a limit not given is the installation's).
    Limits {
        /// The tenant's id.
        tenant: uuid::Uuid,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// Show a tenant's capability ceiling, or replace it with `--set`:
    /// what the tenant may grant its components (default: nothing).
    Capabilities {
        /// The tenant's id.
        tenant: uuid::Uuid,
        #[command(flatten)]
        ceiling: super::grants::CeilingFlags,
    },
    /// List tenants.
    List,
}

/// A tenant's limits; each can only tighten the installation's.
#[derive(clap::Args, Debug)]
pub struct LimitFlags {
    /// Executions running at once, across all workers.
    #[arg(long)]
    max_running: Option<u32>,
    /// Executions waiting to run; creating more is refused with 429.
    #[arg(long)]
    max_queued: Option<u32>,
    #[arg(long)]
    max_input_bytes: Option<u32>,
    #[arg(long)]
    max_component_bytes: Option<u32>,
    /// Longest one run of a guest may take.
    #[arg(long)]
    max_task_timeout_ms: Option<u64>,
    /// Linear memory cap of one guest.
    #[arg(long)]
    max_memory_mib: Option<u32>,
    /// Start-rate quota: at most this many attempts start per window.
    #[arg(long)]
    max_starts_per_window: Option<u32>,
    #[arg(long, requires = "max_starts_per_window")]
    start_window_ms: Option<u64>,
    /// Largest result one execution may return.
    #[arg(long)]
    max_result_bytes: Option<u32>,
    /// Payload bytes of all frames of one attempt.
    #[arg(long)]
    max_frame_bytes_per_attempt: Option<u64>,
    #[arg(long)]
    max_children_per_execution: Option<u32>,
    #[arg(long)]
    max_flow_members: Option<u32>,
    #[arg(long)]
    max_waitpoints_per_execution: Option<u32>,
    /// Bytes the tenant may keep stored: inputs, results and frames.
    #[arg(long)]
    max_stored_bytes: Option<u64>,
}

impl From<LimitFlags> for TenantLimits {
    fn from(f: LimitFlags) -> Self {
        Self {
            max_running: f.max_running,
            max_queued: f.max_queued,
            max_input_bytes: f.max_input_bytes,
            max_component_bytes: f.max_component_bytes,
            max_task_timeout_ms: f.max_task_timeout_ms,
            max_memory_mib: f.max_memory_mib,
            max_starts_per_window: f.max_starts_per_window,
            start_window_ms: f.start_window_ms,
            max_result_bytes: f.max_result_bytes,
            max_frame_bytes_per_attempt: f.max_frame_bytes_per_attempt,
            max_children_per_execution: f.max_children_per_execution,
            max_flow_members: f.max_flow_members,
            max_waitpoints_per_execution: f.max_waitpoints_per_execution,
            max_stored_bytes: f.max_stored_bytes,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum ComponentCommand {
    /// Upload a `.wasm` component as the next version of `kind`.
    Upload { kind: String, file: PathBuf },
    /// List the tenant's components.
    List,
    /// Deprecate a version: new attempts run the newest one not deprecated.
    Deprecate { kind: String, version: i32 },
    /// Remove a deprecated version (not its kind's newest) and its bytes,
    /// to make room under the tenant's storage quota.
    Purge { kind: String, version: i32 },
}

pub async fn tenant(connection: &Connection, command: TenantCommand) -> anyhow::Result<()> {
    let client = ApiClient::admin(connection)?;
    match command {
        TenantCommand::Create { name, limits } => {
            let body = CreateTenant {
                name,
                limits: Some(TenantLimits::from(limits)),
            };
            let created: TenantCreated = client
                .typed(Method::POST, "/v1/admin/tenants", Some(&body))
                .await?;
            if connection.json {
                return print_json(&created);
            }
            println!(
                "tenant {} ({})",
                created.tenant.name, created.tenant.tenant_id
            );
            println!("api key (shown once; store it now):");
            println!("{}", created.api_key.token);
        }
        TenantCommand::Limits { tenant, limits } => {
            let path = format!("/v1/admin/tenants/{}/limits", tenant);
            let updated: Tenant = client
                .typed(Method::PUT, &path, Some(&TenantLimits::from(limits)))
                .await?;
            if connection.json {
                return print_json(&updated);
            }
            println!("limits of {tenant}:");
            let limits = serde_json::to_value(updated.limits)?;
            for (name, value) in limits.as_object().into_iter().flatten() {
                if !value.is_null() {
                    println!("  {name} = {value}");
                }
            }
        }
        TenantCommand::Capabilities { tenant, ceiling } => {
            return super::grants::ceiling(connection, tenant, ceiling).await;
        }
        TenantCommand::List => {
            let list: TenantList = client
                .typed(Method::GET, "/v1/admin/tenants", NO_BODY)
                .await?;
            if connection.json {
                return print_json(&list);
            }
            for tenant in &list.items {
                println!("{}  {}", tenant.tenant_id, tenant.name);
            }
        }
    }
    Ok(())
}

pub async fn component(connection: &Connection, command: ComponentCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    match command {
        ComponentCommand::Upload { kind, file } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let answer = client
                .upload(&format!("/v1/components/{}", path_segment(&kind)), wasm)
                .await?;
            let uploaded: Uploaded = decode("an answer", answer)?;
            if connection.json {
                return print_json(&uploaded);
            }
            let verb = if uploaded.created {
                "uploaded"
            } else {
                "unchanged:"
            };
            let v = &uploaded.version;
            println!(
                "{verb} {kind} v{} ({} bytes, sha256 {})",
                v.version, v.size_bytes, v.digest
            );
            super::grants::print_imports(&uploaded.imports);
        }
        ComponentCommand::List => {
            let list: ComponentList = client.typed(Method::GET, "/v1/components", NO_BODY).await?;
            if connection.json {
                return print_json(&list);
            }
            println!("{:<24} {:>7} {:>10}  DIGEST", "KIND", "VERSION", "BYTES");
            for v in &list.items {
                let deprecated = if v.deprecated { " (deprecated)" } else { "" };
                println!(
                    "{:<24} {:>7} {:>10}  {}{deprecated}",
                    v.kind,
                    v.version,
                    v.size_bytes,
                    &v.digest[..12.min(v.digest.len())]
                );
            }
        }
        ComponentCommand::Deprecate { kind, version } => {
            let path = version_path(&kind, version, "");
            let v: ComponentVersion = client.typed(Method::DELETE, &path, NO_BODY).await?;
            if connection.json {
                return print_json(&v);
            }
            println!("deprecated {} v{}", v.kind, v.version);
        }
        ComponentCommand::Purge { kind, version } => {
            let path = version_path(&kind, version, "/purge");
            client.json(Method::POST, &path, None).await?;
            if !connection.json {
                println!("purged {kind} v{version}");
            }
        }
    }
    Ok(())
}

fn version_path(kind: &str, version: i32, action: &str) -> String {
    format!(
        "/v1/components/{}/versions/{version}{action}",
        path_segment(kind)
    )
}
