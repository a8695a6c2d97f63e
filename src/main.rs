//! The `mgnt` command line: parse arguments, run one operation.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use mgnt::cli;

#[derive(Parser)]
#[command(version, about = "Geo-aware DNS control plane for the management VPN")]
struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = "mgnt.toml")]
    config: PathBuf,
    /// How log lines are written: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for mgnt::logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS and the admin API; SIGHUP reloads.
    Serve,
    /// Load and check the config, zones and GeoIP database, then exit.
    CheckConfig,
    /// Copy this node's state and secrets into DIR while it runs, each
    /// file at its absolute path under DIR.
    Backup {
        /// A new or empty directory.
        dir: std::path::PathBuf,
    },
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
    /// Have the running server re-read its config, zones and GeoIP
    /// database; lists the settings that wait for a restart.
    Reload,
    /// Show every region's health, drain and answer counts, one row each.
    Status {
        /// Print the API's JSON (times in seconds since 1970) instead.
        #[arg(long)]
        json: bool,
    },
    /// Show the nodes on the server's database: live or gone, config hash
    /// (same as the server's or not), version, times.
    Nodes,
    /// Provisioning: sites and their tunnels.
    Site {
        #[command(subcommand)]
        action: SiteCommand,
    },
    /// The `[store]` database.
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// OpenVPN's auth-user-pass-verify (via-file): exit 0 when the username
    /// and password in FILE belong to a tunnel, 1 otherwise; records the attempt.
    AuthVerify { file: PathBuf },
    /// Beside an OpenVPN server (`--management-client-auth`): answer its
    /// logins from the control plane's credentials. `--config` names the
    /// agent's file (an `[agent]` table).
    Agent {
        /// Print the nftables rules the agent installs, and exit.
        #[arg(long)]
        print_rules: bool,
    },
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
        /// The router's RouterOS version (6.49.7, 7.16, …); without it the
        /// versions scripts are made for are listed.
        #[arg(long)]
        version: Option<String>,
    },
    /// Issue new credentials and a job that recreates the tunnel on the router.
    Recreate { uuid: String },
    /// Issue a one-time bootstrap token; prints the line to paste into the
    /// router's terminal.
    Bootstrap {
        uuid: String,
        /// The router's RouterOS version (6.49.7, 7.16, …).
        #[arg(long)]
        version: String,
    },
    /// Reboot the site's router through the live view (`[live]`).
    Reboot {
        uuid: String,
        /// Follow it until the router confirms it or the server gives up.
        #[arg(long)]
        wait: bool,
    },
    /// Where a reboot stands.
    RebootStatus { uuid: String, id: String },
    /// Move every site whose address lies outside `[provision] pool` into it
    /// (run with the server stopped; its next start rewrites the OpenVPN files).
    Renumber,
    /// Write the OpenVPN server's ccd files and config fragment into DIR.
    Export {
        dir: PathBuf,
        /// The region these files are for (recorded in the fragment's comment).
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy a single machine's sites, jobs, credentials, auth attempts,
    /// drains and audit log into the (empty) `[store]` database, in one
    /// transaction. `[provision] secret_key_file` must be the single
    /// machine's: digests and sealed secrets are copied as they are.
    Migrate {
        /// The single machine's `[provision] data_dir` (with tunnels.db).
        #[arg(long)]
        from: PathBuf,
        /// Its state file (default: this config's `[health] state_file`).
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Its audit log (default: this config's `[api] audit_log`).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Its `[vpnlog] data_dir` (with vpnlog.db; default: `--from`).
        #[arg(long)]
        vpnlog_dir: Option<PathBuf>,
    },
}

fn print(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let node = match cli.command {
        Command::Serve => mgnt::logging::node_name(&cli.config),
        _ => None,
    };
    mgnt::logging::init(node, cli.log_format.into());
    let config = cli.config;
    match cli.command {
        Command::Serve => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(mgnt::server::run(config))?;
        }
        Command::CheckConfig => println!("{}", cli::check_config(&config)?),
        Command::Backup { dir } => print!("{}", cli::backup(&config, &dir)?),
        Command::Lookup { client, json } => {
            let report = cli::lookup(&config, &client)?;
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
        } => print(&cli::drain(
            &config,
            &region,
            &reason,
            until.as_deref(),
            force,
        )?)?,
        Command::Undrain { region } => print(&cli::undrain(&config, &region)?)?,
        Command::Reload => print!("{}", cli::reload(&config)?),
        Command::Status { json } => print!("{}", cli::status(&config, json)?),
        Command::Nodes => print!("{}", cli::nodes(&config)?),
        Command::Site { action } => site(&config, action)?,
        Command::Store {
            action:
                StoreCommand::Migrate {
                    from,
                    state_file,
                    audit_log,
                    vpnlog_dir,
                },
        } => {
            let sources = cli::MigrateFrom {
                dir: &from,
                state_file: state_file.as_deref(),
                audit_log: audit_log.as_deref(),
                vpnlog_dir: vpnlog_dir.as_deref(),
            };
            print!("{}", cli::store_migrate(&config, &sources)?);
        }
        Command::Agent { print_rules } => {
            let agent = mgnt::agent::AgentConfig::load(&config)?;
            if print_rules {
                print!("{}", mgnt::agent::rules(&agent)?);
                return Ok(());
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(mgnt::agent::run(agent))?;
        }
        Command::AuthVerify { file } => {
            let ok = cli::auth_verify(&config, &file)?;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
    Ok(())
}

fn site(config: &std::path::Path, action: SiteCommand) -> Result<()> {
    match action {
        SiteCommand::Export { dir, region } => {
            println!("{}", cli::export(config, &dir, region.as_deref())?);
            return Ok(());
        }
        SiteCommand::Renumber => return print(&cli::renumber(config)?),
        // Its version is checked before anything is asked of the server.
        SiteCommand::Script { uuid, version } => {
            print!("{}", cli::site_script(config, &uuid, version.as_deref())?);
            return Ok(());
        }
        _ => {}
    }
    let client = cli::client(config)?;
    match action {
        SiteCommand::Create => print(&client.post("/v1/sites", None)?),
        SiteCommand::Show { uuid } => print(&client.get(&format!("/v1/sites/{uuid}"))?),
        SiteCommand::Delete { uuid } => {
            client.delete(&format!("/v1/sites/{uuid}"))?;
            println!("deleted {uuid}");
            Ok(())
        }
        SiteCommand::Recreate { uuid } => {
            print(&client.post(&format!("/v1/sites/{uuid}/recreate"), None)?)
        }
        SiteCommand::Bootstrap { uuid, version } => {
            let path = format!("/v1/sites/{uuid}/bootstrap?version={version}");
            let issued = client.post(&path, None)?;
            let command = issued["command"].as_str().unwrap_or_default();
            let expires = issued["expires"].as_u64().unwrap_or_default();
            println!("{command}");
            eprintln!(
                "paste it into the router's terminal; the token works once, until {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires)
                )
            );
            Ok(())
        }
        SiteCommand::Reboot { uuid, wait } => {
            println!("{}", cli::reboot::reboot(&client, &uuid, wait)?);
            Ok(())
        }
        SiteCommand::RebootStatus { uuid, id } => {
            println!("{}", cli::reboot::status(&client, &uuid, &id)?);
            Ok(())
        }
        SiteCommand::Export { .. } | SiteCommand::Renumber | SiteCommand::Script { .. } => {
            unreachable!("handled above")
        }
    }
}
