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
    }
    Ok(())
}
