//! The `mgnt` command line: parse arguments, run one operation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use mgnt::{
    admin::client::Client,
    config::Config,
    dns::Data,
    explain::explain,
    health::HealthTable,
    state::{self, file},
    tunnels::store::{Attempt, SqliteStore, Store},
};
use serde_json::json;

#[derive(Parser)]
#[command(version, about = "Geo-aware DNS control plane for the management VPN")]
struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = "mgnt.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS and the admin API; SIGHUP reloads.
    Serve,
    /// Load and check the config, zones and GeoIP database, then exit.
    CheckConfig,
    /// Show where a client is located and which region it would be given.
    Lookup {
        /// Client address, or an ECS prefix such as 81.240.0.0/16.
        client: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Take a region out of the answers (through the running server's API).
    Drain {
        region: String,
        #[arg(long)]
        reason: String,
        /// RFC 3339 time at which the drain ends by itself.
        #[arg(long)]
        until: Option<String>,
        /// Drain even the last serving region of a geo name.
        #[arg(long)]
        force: bool,
    },
    /// Put a drained region back into the answers.
    Undrain { region: String },
    /// Show every region's health, drain and answer counts.
    Status,
    /// Provisioning: sites and their tunnels.
    Site {
        #[command(subcommand)]
        action: SiteCommand,
    },
    /// OpenVPN's auth-user-pass-verify (via-file): exit 0 when the username
    /// and password in FILE belong to a tunnel, 1 otherwise; records the attempt.
    AuthVerify { file: PathBuf },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Create a site with a new UUID (prints its secret once).
    Create,
    /// Show a site.
    Show { uuid: String },
    /// Delete a site.
    Delete { uuid: String },
    /// Print the RouterOS script of the site's pending job.
    Script {
        uuid: String,
        #[arg(long, default_value = "7")]
        version: String,
    },
    /// Issue new credentials and a job that recreates the tunnel on the router.
    Recreate { uuid: String },
    /// Write the OpenVPN server's ccd files and config fragment into DIR.
    Export {
        dir: PathBuf,
        /// The region these files are for (recorded in the fragment's comment).
        #[arg(long)]
        region: Option<String>,
    },
}

fn load(config: &Path) -> Result<Data> {
    Ok(Data::load(Config::load(config)?)?)
}

fn print(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.config;
    match cli.command {
        Command::Serve => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(mgnt::server::run(config))?;
        }
        Command::CheckConfig => {
            let data = load(&config)?;
            println!(
                "{}: ok ({} zones, {} geo names, {} regions, GeoIP {} built {})",
                config.display(),
                data.zones.zones.len(),
                data.geo.len(),
                data.config.regions.len(),
                data.geodb.database_type(),
                data.geodb.build_epoch(),
            );
        }
        Command::Lookup { client, json } => {
            let data = load(&config)?;
            let net: IpNet = client
                .parse()
                .or_else(|_| client.parse::<std::net::IpAddr>().map(IpNet::from))
                .with_context(|| format!("`{client}` is not an address or prefix"))?;
            // What a server restarted now would use: the state file's health and drains.
            let saved = file::load(&data.config.health.state_file);
            let health = HealthTable::initial(&data.config, saved.as_ref());
            let drains = saved.map(|s| s.drains).unwrap_or_default();
            let view = state::compose(&health, &drains, state::now());
            let report = explain(&data, &health, &view, net);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Drain {
            region,
            reason,
            until,
            force,
        } => {
            let client = Client::new(&Config::load(&config)?)?;
            let path = format!(
                "/v1/regions/{region}/drain{}",
                if force { "?force=true" } else { "" }
            );
            print(&client.post(&path, Some(json!({ "reason": reason, "until": until })))?)?;
        }
        Command::Undrain { region } => {
            let client = Client::new(&Config::load(&config)?)?;
            print(&client.post(&format!("/v1/regions/{region}/undrain"), None)?)?;
        }
        Command::Status => {
            let client = Client::new(&Config::load(&config)?)?;
            print(&client.get("/v1/regions")?)?;
        }
        Command::Site { action } => site(&config, action)?,
        Command::AuthVerify { file } => {
            let ok = auth_verify(&config, &file)?;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
    Ok(())
}

fn site(config: &Path, action: SiteCommand) -> Result<()> {
    let cfg = Config::load(config)?;
    if let SiteCommand::Export { dir, region } = action {
        return export(config, &cfg, &dir, region.as_deref());
    }
    let client = Client::new(&cfg)?;
    match action {
        SiteCommand::Create => print(&client.post("/v1/sites", None)?),
        SiteCommand::Show { uuid } => print(&client.get(&format!("/v1/sites/{uuid}"))?),
        SiteCommand::Delete { uuid } => {
            client.delete(&format!("/v1/sites/{uuid}"))?;
            println!("deleted {uuid}");
            Ok(())
        }
        SiteCommand::Script { uuid, version } => {
            let path = format!("/v1/sites/{uuid}/routeros.rsc?version={version}");
            match client.get(&path)? {
                serde_json::Value::String(text) => print!("{text}"),
                other => print(&other)?,
            }
            Ok(())
        }
        SiteCommand::Recreate { uuid } => {
            print(&client.post(&format!("/v1/sites/{uuid}/recreate"), None)?)
        }
        SiteCommand::Export { .. } => unreachable!("handled above"),
    }
}

fn provision(cfg: &Config) -> Result<&mgnt::config::ProvisionConfig> {
    cfg.provision
        .as_ref()
        .context("provisioning is off: the config has no [provision] table")
}

fn export(config: &Path, cfg: &Config, dir: &Path, region: Option<&str>) -> Result<()> {
    let p = provision(cfg)?;
    let store = SqliteStore::open_for_checks(&p.data_dir.join("tunnels.db"))?;
    let done = mgnt::tunnels::export::export_store(&store, p, config, dir)?;
    println!(
        "{}: {} tunnels{}, {} stale files removed",
        dir.display(),
        done.tunnels,
        region.map(|r| format!(" for {r}")).unwrap_or_default(),
        done.removed
    );
    Ok(())
}

/// Reads OpenVPN's via-file (username, then password) and checks it.
fn auth_verify(config: &Path, file: &Path) -> Result<bool> {
    let cfg = Config::load(config)?;
    let p = provision(&cfg)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = text.lines();
    let (user, password) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let store = SqliteStore::open_for_checks(&p.data_dir.join("tunnels.db"))?;
    let site = store.verify(user, password)?;
    let attempt = Attempt {
        time: state::now(),
        username: user.chars().take(64).collect(),
        site: site.as_ref().map(|s| s.uuid),
        ok: site.is_some(),
        source: std::env::var("untrusted_ip").ok(),
    };
    store.record_attempt(&attempt)?;
    Ok(site.is_some())
}
