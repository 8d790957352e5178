//! `flowfabric signing-keys`: the keys that sign waitpoint tokens, stored in
//! the database and sealed under the operator's config key. These commands
//! talk to the database directly, like `migrate`: they are the operator's,
//! not a tenant's. Running hosts pick up a change within a refresh interval,
//! without a restart.

use std::time::Duration;

use anyhow::Context;
use flowfabric::engine::{ACTIVATION_DELAY, KEY_REFRESH_INTERVAL, MAX_GRACE};
use flowfabric::model::{SeedOutcome, WaitpointKeyInfo};

use super::grants::ConfigKeys;

#[derive(clap::Subcommand)]
pub enum SigningKeysCommand {
    /// List the stored keys: which one signs, which still verify, until when.
    List(Store),
    /// Store a new key; it signs a minute from now (once every host has
    /// read it), and the others verify until the grace window ends.
    Rotate {
        #[command(flatten)]
        store: Store,
        /// Hours the replaced keys keep verifying the tokens they signed
        /// (0 for a leaked key: its tokens stop working at once).
        #[arg(long, default_value_t = 168)]
        grace_hours: u64,
    },
    /// Install a given secret as the first key of a new installation
    /// (idempotent; an installation with keys rotates instead).
    Seed {
        #[command(flatten)]
        store: Store,
        /// The key id tokens will name: letters and digits.
        #[arg(long)]
        kid: String,
        /// A file holding the secret (32 to 1024 bytes; one trailing
        /// newline is ignored).
        #[arg(long)]
        secret_file: std::path::PathBuf,
    },
}

/// Where the keys are and what seals them.
#[derive(clap::Args)]
pub struct Store {
    /// `postgres://…`, or `sqlite:PATH` for the embedded backend.
    #[arg(long, env = "DATABASE_URL", default_value = super::DEFAULT_DATABASE_URL)]
    database_url: String,
    #[command(flatten)]
    keys: ConfigKeys,
}

impl Store {
    async fn engine(&self) -> anyhow::Result<flowfabric::engine::Engine> {
        let engine = super::connect(&self.database_url, 2).await?;
        Ok(engine.with_sealing_keys(self.keys.load()?))
    }
}

pub async fn run(command: SigningKeysCommand) -> anyhow::Result<()> {
    match command {
        SigningKeysCommand::List(store) => {
            print_keys(&store.engine().await?.list_waitpoint_keys().await?);
        }
        SigningKeysCommand::Rotate { store, grace_hours } => {
            let grace = grace_of(grace_hours)?;
            let keys = store.engine().await?.rotate_waitpoint_key(grace).await?;
            print_keys(&keys);
            println!(
                "hosts read keys every {}s; the new key signs once it is active",
                KEY_REFRESH_INTERVAL.as_secs()
            );
        }
        SigningKeysCommand::Seed {
            store,
            kid,
            secret_file,
        } => {
            let mut secret = std::fs::read(&secret_file)
                .with_context(|| format!("reading {}", secret_file.display()))?;
            if secret.last() == Some(&b'\n') {
                secret.pop();
            }
            let outcome = store
                .engine()
                .await?
                .seed_waitpoint_key(&kid, &secret)
                .await?;
            match outcome {
                SeedOutcome::Seeded => println!("seeded `{kid}`; it signs from now"),
                SeedOutcome::AlreadySeeded { same_secret: true } => {
                    println!("`{kid}` is already stored with this secret; nothing changed")
                }
                SeedOutcome::AlreadySeeded { same_secret: false } => anyhow::bail!(
                    "`{kid}` is already stored with a different secret; nothing changed"
                ),
            }
        }
    }
    Ok(())
}

fn grace_of(hours: u64) -> anyhow::Result<Duration> {
    let grace = Duration::from_secs(hours.saturating_mul(3600));
    anyhow::ensure!(
        grace <= MAX_GRACE,
        "--grace-hours must be at most {}",
        MAX_GRACE.as_secs() / 3600
    );
    if grace < ACTIVATION_DELAY {
        eprintln!(
            "warning: a grace under {}s retires the old keys before every host has read the new one",
            ACTIVATION_DELAY.as_secs()
        );
    }
    Ok(grace)
}

fn print_keys(keys: &[WaitpointKeyInfo]) {
    println!(
        "{:<16} {:<10} {:<10} {:<26} retires",
        "kid", "state", "sealed by", "signs from"
    );
    for k in keys {
        println!(
            "{:<16} {:<10} {:<10} {:<26} {}",
            k.kid,
            k.state.as_str(),
            k.sealed_by,
            k.activates_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            k.retires_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "-".into())
        );
    }
}
