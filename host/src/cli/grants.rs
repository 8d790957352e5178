//! `flowfabric grant …`, `flowfabric config …` and `flowfabric tenant
//! capabilities`: what components may reach beyond their input.

use std::io::Read;

use anyhow::{bail, Context};
use reqwest::Method;

use flowfabric::api::{ConfigList, GrantList, SetConfig};
use flowfabric::engine::SealingKeys;
use flowfabric::model::{
    CapabilityCeiling, ComponentGrant, ComponentImport, ConfigEntry, StoredGrant,
};

use super::client::{path_segment, ApiClient, Connection, NO_BODY};
use super::remote::print_json;

#[derive(clap::Subcommand)]
pub enum GrantCommand {
    /// Create or replace what components of KIND may use (within the
    /// operator's ceiling); what is not given is not granted.
    Set {
        kind: String,
        #[command(flatten)]
        grant: GrantFlags,
    },
    /// Show the grant of KIND.
    Show { kind: String },
    /// List every grant.
    List,
    /// Remove the grant of KIND: its components reach nothing again.
    Rm { kind: String },
}

#[derive(clap::Args, Debug)]
pub struct GrantFlags {
    /// An origin the guest may send HTTP requests to
    /// (`https://api.example.com`, `https://*.example.com`, `http://10.0.0.5:8080`); repeat for more.
    #[arg(long = "http")]
    http: Vec<String>,
    /// Per-request timeout (connect, first byte, between bytes).
    #[arg(long)]
    http_timeout_ms: Option<u64>,
    /// Largest response body the guest may read.
    #[arg(long)]
    http_max_response_bytes: Option<u64>,
    /// A config value or secret the guest may read; repeat for more.
    #[arg(long = "config")]
    config: Vec<String>,
    /// Give each attempt a directory of its own at `/scratch`, holding at
    /// most this many bytes; it is deleted when the attempt ends.
    #[arg(long)]
    scratch_bytes: Option<u64>,
    /// Run attempts on instances kept from earlier attempts of this kind
    /// (much faster for JavaScript and Python guests); what the guest keeps
    /// in memory is then there for the next attempt. The ceiling must allow
    /// it (`tenant capabilities --reuse-instances`); not with --scratch-bytes.
    #[arg(long)]
    reuse_instances: bool,
}

impl From<GrantFlags> for ComponentGrant {
    fn from(f: GrantFlags) -> Self {
        Self {
            http: f.http,
            http_timeout_ms: f.http_timeout_ms,
            http_max_response_bytes: f.http_max_response_bytes,
            config: f.config,
            scratch_bytes: f.scratch_bytes,
            reuse_instances: f.reuse_instances,
        }
    }
}

/// The operator's ceiling of one tenant (`tenant capabilities`).
#[derive(clap::Args, Debug)]
pub struct CeilingFlags {
    /// An origin the tenant may grant (`https://*.example.com`); repeat for more.
    #[arg(long = "http-allow")]
    http_allow: Vec<String>,
    /// An address range guests may reach although it is not public
    /// (`10.1.0.0/16`, `127.0.0.1/32`); repeat for more.
    #[arg(long = "allow-cidr")]
    allow_cidr: Vec<String>,
    /// Longest wait of any request.
    #[arg(long)]
    http_timeout_ms: Option<u64>,
    /// Largest response body any guest may read.
    #[arg(long)]
    http_max_response_bytes: Option<u64>,
    /// Outbound connections the tenant's guests may hold at once.
    #[arg(long)]
    http_max_connections: Option<u32>,
    /// Let the tenant grant its config values and secrets.
    #[arg(long)]
    config: bool,
    /// Let the tenant grant scratch directories of up to this many bytes.
    #[arg(long)]
    scratch_bytes: Option<u64>,
    /// Let the tenant's grants reuse instances between attempts of a kind.
    #[arg(long)]
    reuse_instances: bool,
    /// Replace the ceiling with these flags (without it, the current ceiling is shown).
    #[arg(long)]
    set: bool,
}

impl From<CeilingFlags> for CapabilityCeiling {
    fn from(f: CeilingFlags) -> Self {
        Self {
            http_allow: f.http_allow,
            http_allow_cidrs: f.allow_cidr,
            http_timeout_ms: f.http_timeout_ms,
            http_max_response_bytes: f.http_max_response_bytes,
            http_max_connections: f.http_max_connections,
            config: f.config,
            scratch_bytes: f.scratch_bytes,
            reuse_instances: f.reuse_instances,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Set a config value or secret. Without --value the value is read from
    /// standard input (so a secret stays out of the shell's history).
    Set {
        name: String,
        #[arg(long)]
        value: Option<String>,
        /// Never show the value again (listings show the name only).
        #[arg(long)]
        secret: bool,
    },
    /// List config values (secrets by name only).
    List,
    /// Delete a config value or secret.
    Rm { name: String },
}

pub async fn grant(connection: &Connection, command: GrantCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let path = |kind: &str| format!("/v1/grants/{}", path_segment(kind));
    let grants: Vec<StoredGrant> = match command {
        GrantCommand::Set { kind, grant } => {
            let body = ComponentGrant::from(grant);
            vec![client.typed(Method::PUT, &path(&kind), Some(&body)).await?]
        }
        GrantCommand::Show { kind } => {
            vec![client.typed(Method::GET, &path(&kind), NO_BODY).await?]
        }
        GrantCommand::List => {
            let list: GrantList = client.typed(Method::GET, "/v1/grants", NO_BODY).await?;
            if connection.json {
                return print_json(&list);
            }
            list.items
        }
        GrantCommand::Rm { kind } => {
            client.json(Method::DELETE, &path(&kind), None).await?;
            println!("grant of {kind} removed");
            return Ok(());
        }
    };
    if connection.json {
        return print_json(&grants[0]);
    }
    if grants.is_empty() {
        println!("no grants: components reach nothing beyond their input");
    }
    for g in &grants {
        print_grant(g);
    }
    Ok(())
}

fn print_grant(g: &StoredGrant) {
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("{}", g.kind);
    println!("  http:   {}", list(&g.grant.http));
    println!("  config: {}", list(&g.grant.config));
    if let Some(ms) = g.grant.http_timeout_ms {
        println!("  http timeout: {ms} ms");
    }
    if let Some(bytes) = g.grant.http_max_response_bytes {
        println!("  http response cap: {bytes} bytes");
    }
    if let Some(bytes) = g.grant.scratch_bytes {
        println!("  scratch: /scratch, {bytes} bytes per attempt");
    }
}

pub async fn ceiling(
    connection: &Connection,
    tenant: uuid::Uuid,
    flags: CeilingFlags,
) -> anyhow::Result<()> {
    let client = ApiClient::admin(connection)?;
    let path = format!("/v1/admin/tenants/{tenant}/capabilities");
    let set = flags.set;
    let body = CapabilityCeiling::from(flags);
    let ceiling: CapabilityCeiling = if set {
        client.typed(Method::PUT, &path, Some(&body)).await?
    } else {
        if body != CapabilityCeiling::default() {
            bail!("pass --set to replace the ceiling with these flags");
        }
        client.typed(Method::GET, &path, NO_BODY).await?
    };
    if connection.json {
        return print_json(&ceiling);
    }
    println!("capabilities of {tenant}:");
    let fields = serde_json::to_value(&ceiling)?;
    for (name, value) in fields.as_object().into_iter().flatten() {
        println!("  {name} = {value}");
    }
    Ok(())
}

pub async fn config(connection: &Connection, command: ConfigCommand) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    match command {
        ConfigCommand::Set {
            name,
            value,
            secret,
        } => {
            let value = match value {
                Some(v) => v,
                None => read_stdin()?,
            };
            let body = SetConfig { value, secret };
            let path = format!("/v1/config/{}", path_segment(&name));
            let entry: ConfigEntry = client.typed(Method::PUT, &path, Some(&body)).await?;
            if connection.json {
                return print_json(&entry);
            }
            let what = if entry.secret {
                "secret"
            } else {
                "config value"
            };
            println!("{what} {} set", entry.name);
        }
        ConfigCommand::List => {
            let list: ConfigList = client.typed(Method::GET, "/v1/config", NO_BODY).await?;
            if connection.json {
                return print_json(&list);
            }
            println!("{:<32} {:<6}  VALUE", "NAME", "SECRET");
            for e in &list.items {
                let (secret, value) = match (&e.value, e.secret) {
                    (_, true) => ("yes", "(hidden)".to_owned()),
                    (Some(v), false) => ("no", v.clone()),
                    (None, false) => ("no", "(unreadable with this server's keys)".to_owned()),
                };
                println!("{:<32} {secret:<6}  {value}", e.name);
            }
        }
        ConfigCommand::Rm { name } => {
            let path = format!("/v1/config/{}", path_segment(&name));
            client.json(Method::DELETE, &path, None).await?;
            println!("{name} deleted");
        }
    }
    Ok(())
}

/// The value from standard input, without one trailing newline.
fn read_stdin() -> anyhow::Result<String> {
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the value from standard input")?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// The imports of an uploaded component, one line each, with whether the
/// kind's grant covers those a grant governs.
pub fn print_imports(imports: &[ComponentImport]) {
    for i in imports.iter().filter(|i| i.capability.is_some()) {
        let status = if i.granted { "granted" } else { "NOT GRANTED" };
        println!(
            "  imports {:<40} {:<8} {status}",
            i.name,
            i.capability.as_deref().unwrap_or("")
        );
    }
}

/// Where the keys that seal config values and secrets come from.
#[derive(clap::Args, Clone, Debug)]
pub struct ConfigKeys {
    /// Keys that seal config values and secrets, `kid=base64key,…` (32
    /// random bytes each; the first seals, all open). Every API and worker
    /// process needs the same list. Without it, the key file is used.
    #[arg(long, env = "FLOWFABRIC_CONFIG_KEYS", hide_env_values = true)]
    pub config_keys: Option<String>,
    /// The key file used without --config-keys; created with a new key
    /// (mode 0600) when it does not exist.
    #[arg(
        long,
        env = "FLOWFABRIC_CONFIG_KEYS_FILE",
        default_value = ".flowfabric/config-keys"
    )]
    pub config_keys_file: std::path::PathBuf,
}

impl ConfigKeys {
    pub fn load(&self) -> anyhow::Result<SealingKeys> {
        match &self.config_keys {
            Some(spec) => Ok(SealingKeys::parse(spec).context("--config-keys")?),
            None => SealingKeys::load_or_create(&self.config_keys_file)
                .with_context(|| format!("the key file {}", self.config_keys_file.display())),
        }
    }
}

/// `flowfabric reseal-config`.
#[derive(clap::Args)]
pub struct Reseal {
    /// `postgres://…`, or `sqlite:PATH` for the embedded backend.
    #[arg(long, env = "DATABASE_URL", default_value = super::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    #[command(flatten)]
    pub keys: ConfigKeys,
}

pub async fn reseal(args: Reseal) -> anyhow::Result<()> {
    let engine = super::connect(&args.database_url, 2).await?;
    let keys = args.keys.load()?;
    let current = keys.current_id().to_owned();
    let engine = engine.with_sealing_keys(keys);
    let values = engine.reseal_config().await?;
    let keys = engine.reseal_waitpoint_keys().await?;
    println!("resealed {values} config values and {keys} waitpoint keys under {current}");
    Ok(())
}
