//! The `mgnt` command line: parse arguments, run one operation.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use mgnt::{
    config::Config,
    dns::{Data, answer::Responder, listen},
    explain::explain,
    health::{self, HealthTable},
    state::RegionView,
};

#[derive(Parser)]
#[command(version, about = "Geo-aware DNS control plane for the management VPN")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS on the configured addresses.
    Serve {
        #[arg(long, default_value = "mgnt.toml")]
        config: PathBuf,
    },
    /// Load and check the config, zones and GeoIP database, then exit.
    CheckConfig {
        #[arg(long, default_value = "mgnt.toml")]
        config: PathBuf,
    },
    /// Show where a client is located and which region it would be given.
    Lookup {
        /// Client address, or an ECS prefix such as 81.240.0.0/16.
        client: String,
        #[arg(long, default_value = "mgnt.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn load(config: &std::path::Path) -> Result<Data> {
    let config = Config::load(config)?;
    Ok(Data::load(config)?)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => serve(load(&config)?),
        Command::CheckConfig { config } => {
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
            Ok(())
        }
        Command::Lookup {
            client,
            config,
            json,
        } => {
            let data = load(&config)?;
            let net: IpNet = client
                .parse()
                .or_else(|_| client.parse::<std::net::IpAddr>().map(IpNet::from))
                .with_context(|| format!("`{client}` is not an address or prefix"))?;
            let health = HealthTable::from_state_file(&data.config);
            let report = explain(&data, &health, net);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
    }
}

fn serve(data: Data) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let dns = data.config.dns.clone();
        let view = RegionView::all_serving(data.config.regions.len());
        let health_config = data.config.clone();
        let responder = Arc::new(Responder::new(data, view));
        let (bound, _tasks) =
            listen::start(&dns, responder.clone()).context("binding DNS listeners")?;
        let _health = health::start(&health_config, responder);
        for addr in &bound {
            tracing::info!(%addr, "serving DNS over UDP and TCP");
            println!("listening dns {addr}");
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
