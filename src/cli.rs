//! The commands behind the `mgnt` command line; `main.rs` only parses
//! arguments and prints what these return.

pub mod reboot;
mod status;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::{
    admin::client::{Client, ClientError},
    config::{Config, ConfigError, Named, ProvisionConfig, ReadError},
    dns::LoadError,
    explain::{Explanation, explain},
    pg::{Db, DbError},
    state::{self, Regions, Snapshot},
    store_migrate::{self, MigrateError, Sources},
    tunnels::{
        export::{ExportError, export_store},
        routeros::Version,
        store::{PgSiteStore, SqliteStore, StoreError},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error(
        "`{region}` is the last serving region of {}; use --force to drain it anyway (answers then fail open)",
        geo_names.join(", ")
    )]
    LastServing {
        region: String,
        geo_names: Vec<String>,
    },
    #[error("{reason}; `mgnt site recreate {uuid}` issues a new one")]
    NoJob { uuid: String, reason: String },
    #[error("{}", Version::choices())]
    NoVersion,
    #[error(transparent)]
    File(#[from] Named<ReadError>),
    #[error("`{0}` is not an address or prefix")]
    Client(String),
    #[error("provisioning is off: the config has no [provision] table")]
    NoProvision,
    #[error("tunnel store: {0}")]
    Open(#[from] crate::tunnels::OpenError),
    #[error("tunnel store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("reading {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("the config has no [store] table: there is no database to copy into")]
    NoStore,
    #[error("[store]: {0}")]
    Db(#[from] DbError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `mgnt check-config`: loads everything; the one-line summary.
pub fn check_config(config: &Path) -> Result<String, CliError> {
    let mut data = state::load(config)?;
    // Read when present, not created: the server makes the secret.
    data.load_cookies(false)?;
    let db = data.maps.db();
    let (orders, classes) = data.maps.counts();
    Ok(format!(
        "{}: ok ({} zones, {} geo names, {} regions, GeoIP {} built {}, {orders} region orders for {classes} client classes; config hash {})",
        config.display(),
        data.zones.zones.len(),
        data.geo.len(),
        data.config.regions.len(),
        db.database_type(),
        db.build_epoch(),
        data.config_hash,
    ))
}

/// `mgnt backup DIR`: what was copied, what the config names but is not
/// there, and where the shared state is when it is not in these files.
pub fn backup(config: &Path, dir: &Path) -> Result<String, CliError> {
    let config = Config::load(config)?;
    let report = crate::backup::run(&crate::backup::plan(&config), dir)?;
    let mut out = String::new();
    for file in &report.copied {
        out.push_str(&format!("copied   {}\n", file.display()));
    }
    for file in &report.missing {
        out.push_str(&format!("not there {}\n", file.display()));
    }
    if config.store.is_some() {
        out.push_str("[store]: sites, drains, health and logs are in PostgreSQL; back them up with pg_dump\n");
    }
    Ok(out)
}

/// `mgnt lookup`: what a server started now would answer `client` (an
/// address or a prefix), with the state file's health and drains.
pub fn lookup(config: &Path, client: &str) -> Result<Explanation, CliError> {
    let net: IpNet = client
        .parse()
        .or_else(|_| client.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| CliError::Client(client.to_owned()))?;
    let data = state::load(config)?;
    let saved = state::file::load(&data.config.health.state_file);
    let regions = Regions::restore(&data.config, saved.as_ref());
    let snapshot = Snapshot::of(Arc::new(data), &regions, state::now());
    Ok(explain(&snapshot, net))
}

/// The admin API client for `config`'s server.
pub fn client(config: &Path) -> Result<Client, CliError> {
    Ok(Client::new(&Config::load(config)?)?)
}

/// `mgnt drain`.
pub fn drain(
    config: &Path,
    region: &str,
    reason: &str,
    until: Option<&str>,
    force: bool,
) -> Result<Value, CliError> {
    let path = format!(
        "/v1/regions/{region}/drain{}",
        if force { "?force=true" } else { "" }
    );
    let body = json!({ "reason": reason, "until": until });
    client(config)?
        .post(&path, Some(body))
        .map_err(|e| match e {
            // The server's words name its URL parameter; ours, the flag.
            ClientError::Status {
                status: 409, body, ..
            } if body["geo_names"].is_array() => CliError::LastServing {
                region: region.to_owned(),
                geo_names: serde_json::from_value(body["geo_names"].clone()).unwrap_or_default(),
            },
            e => e.into(),
        })
}

/// `mgnt status`: the regions as a table, or the API's JSON as it is.
pub fn status(config: &Path, json: bool) -> Result<String, CliError> {
    let listed = client(config)?.get("/v1/regions")?;
    if json {
        return Ok(format!("{listed:#}\n"));
    }
    Ok(status::table(&listed))
}

/// `mgnt site script`: the RouterOS script of the site's pending job.
/// Without the router's version there is no script: the releases differ in
/// what they accept, and a guess would be the newest (`7` = 7.99).
pub fn site_script(config: &Path, uuid: &str, version: Option<&str>) -> Result<String, CliError> {
    let version = version.ok_or(CliError::NoVersion)?;
    let path = format!("/v1/sites/{uuid}/routeros.rsc?version={version}");
    match client(config)?.get(&path) {
        Ok(Value::String(text)) => Ok(text),
        Ok(other) => Ok(format!("{other:#}\n")),
        // 409: no pending job; 410: its secret is gone. Either way a new job is the fix.
        Err(ClientError::Status {
            status: 409 | 410,
            message,
            ..
        }) => Err(CliError::NoJob {
            uuid: uuid.to_owned(),
            reason: message.split(';').next().unwrap_or_default().to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// `mgnt undrain`.
pub fn undrain(config: &Path, region: &str) -> Result<Value, CliError> {
    Ok(client(config)?.post(&format!("/v1/regions/{region}/undrain"), None)?)
}

/// `mgnt reload`: what the server loaded, and what waits for a restart.
pub fn reload(config: &Path) -> Result<String, CliError> {
    Ok(reload_text(&client(config)?.post("/v1/reload", None)?))
}

/// `POST /v1/reload`'s answer as lines, one per setting to restart for.
fn reload_text(answer: &Value) -> String {
    let report = &answer["report"];
    let mut out = format!(
        "reloaded: generation {} config hash {}\n",
        report["generation"],
        report["config_hash"].as_str().unwrap_or("?")
    );
    for key in report["needs_restart"].as_array().into_iter().flatten() {
        out += &format!(
            "needs a restart: {} (differs from what runs)\n",
            key.as_str().unwrap_or("?")
        );
    }
    out
}

/// `mgnt nodes`: the nodes on the server's database, one line each.
pub fn nodes(config: &Path) -> Result<String, CliError> {
    Ok(nodes_text(&client(config)?.get("/v1/nodes")?))
}

/// `GET /v1/nodes`'s answer as lines, times in RFC 3339.
fn nodes_text(listed: &Value) -> String {
    let time = |v: &Value| crate::clock::rfc3339(v.as_u64().unwrap_or(0)).to_string();
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut out = String::new();
    for node in listed["nodes"].as_array().into_iter().flatten() {
        let state = if node["live"] == true { "live" } else { "gone" };
        let hash = if node["matches"] == true {
            "same"
        } else {
            "differs"
        };
        out += &format!(
            "{} {state} config {} ({hash}) mgnt {} started {} last seen {}{}\n",
            text(&node["name"]),
            text(&node["config_hash"]),
            text(&node["version"]),
            time(&node["started"]),
            time(&node["last_seen"]),
            if node["this"] == true {
                " (this node)"
            } else {
                ""
            },
        );
    }
    out
}

fn provision(cfg: &Config) -> Result<&ProvisionConfig, CliError> {
    cfg.provision.as_ref().ok_or(CliError::NoProvision)
}

/// The store, opened without rebuilding its pool (fast with a million
/// tunnels): for exporting and renumbering, which allocate nothing through it.
fn open_store(cfg: &Config) -> Result<SqliteStore, CliError> {
    crate::tunnels::open_store(cfg, true)?.ok_or(CliError::NoProvision)
}

/// A runtime for the commands that talk to PostgreSQL. Multi-threaded: the
/// site store's blocking calls (`Handle::block_on` from this thread) need
/// workers to drive the connections.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// The `[store]` database's site store, opened on `rt`.
fn open_shared(
    cfg: &Config,
    store: &crate::config::StoreConfig,
    rt: &tokio::runtime::Runtime,
) -> Result<PgSiteStore, CliError> {
    rt.block_on(async {
        let db = Db::open(store).await?;
        crate::tunnels::open_shared(cfg, db)?.ok_or(CliError::NoProvision)
    })
}

/// `mgnt site export`: writes the OpenVPN files into `dir` from the
/// `[store]` database or the local store; a summary line.
pub fn export(config: &Path, dir: &Path, region: Option<&str>) -> Result<String, CliError> {
    let cfg = Config::load(config)?;
    let p = provision(&cfg)?;
    let done = match &cfg.store {
        None => export_store(&open_store(&cfg)?, p, config, dir)?,
        Some(store) => {
            let rt = runtime()?;
            // Its blocking calls run from this thread, outside the runtime.
            let shared = open_shared(&cfg, store, &rt)?;
            export_store(&shared, p, config, dir)?
        }
    };
    Ok(format!(
        "{}: {} tunnels{}, {} stale files removed",
        dir.display(),
        done.tunnels,
        region.map(|r| format!(" for {r}")).unwrap_or_default(),
        done.removed
    ))
}

/// `mgnt site renumber`: moves the sites outside `[provision] pool` into it
/// (the servers stopped); what moved.
pub fn renumber(config: &Path) -> Result<serde_json::Value, CliError> {
    let cfg = Config::load(config)?;
    let p = provision(&cfg)?;
    let moved = match &cfg.store {
        None => open_store(&cfg)?.renumber(p.pool, state::now())?,
        Some(store) => {
            let rt = runtime()?;
            let shared = open_shared(&cfg, store, &rt)?;
            rt.block_on(shared.renumber(p.pool, state::now()))?
        }
    };
    Ok(serde_json::json!({ "pool": p.pool.to_string(), "renumbered": moved }))
}

/// Where `mgnt store migrate` reads from; `None`: the default.
pub struct MigrateFrom<'a> {
    pub dir: &'a Path,
    pub state_file: Option<&'a Path>,
    pub audit_log: Option<&'a Path>,
    pub vpnlog_dir: Option<&'a Path>,
}

/// `mgnt store migrate`: copies a single machine's stores (`from`, its
/// `[provision] data_dir`; the state file and audit log as given, else as
/// `config` names them) into `config`'s `[store]` database; the summary.
pub fn store_migrate(config: &Path, from: &MigrateFrom) -> Result<String, CliError> {
    let cfg = Config::load(config)?;
    let store = cfg.store.as_ref().ok_or(CliError::NoStore)?;
    let sources = Sources {
        dir: from.dir.to_owned(),
        state_file: from
            .state_file
            .map_or_else(|| cfg.health.state_file.clone(), Path::to_owned),
        audit_log: from
            .audit_log
            .map_or_else(|| cfg.api.audit_log.clone(), Path::to_owned),
        vpnlog_dir: from.vpnlog_dir.unwrap_or(from.dir).to_owned(),
    };
    let summary = runtime()?.block_on(async {
        let db = Db::open(store).await?;
        Ok::<_, CliError>(store_migrate::run(&cfg, &db, &sources).await?)
    })?;
    Ok(summary.to_text())
}

/// `mgnt auth-verify`: checks OpenVPN's via-file (username, then password)
/// with the control plane on this machine (which records the attempt);
/// whether it belongs to a tunnel. No answer means no.
pub fn auth_verify(config: &Path, file: &Path) -> Result<bool, CliError> {
    let cfg = Config::load(config)?;
    let p = provision(&cfg)?;
    let read = |f: &Path| {
        std::fs::read_to_string(f).map_err(|source| CliError::Read {
            file: f.to_owned(),
            source,
        })
    };
    let text = read(file)?;
    let mut lines = text.lines();
    let (user, password) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let token = std::fs::read_to_string(&p.hook_token_file)
        .map_err(|source| {
            let file = p.hook_token_file.clone();
            Named::new(
                config,
                "provision.hook_token_file",
                ReadError { file, source },
            )
        })?
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let client = crate::admin::client::Client::with_token(&cfg, token)?;
    let body = serde_json::json!({
        "username": user,
        "password": password,
        "source": std::env::var("untrusted_ip").ok(),
    });
    let answer = client.post("/hook/v1/verify", Some(body))?;
    Ok(answer["ok"] == serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_lists_what_waits_for_a_restart() {
        let answer = json!({"reloaded": true, "report": {
            "generation": 3, "config_hash": "0123456789abcdef",
            "needs_restart": ["dns.listen", "provision"]}});
        assert_eq!(
            reload_text(&answer),
            "reloaded: generation 3 config hash 0123456789abcdef\n\
             needs a restart: dns.listen (differs from what runs)\n\
             needs a restart: provision (differs from what runs)\n"
        );
    }

    #[test]
    fn nodes_are_listed_one_line_each_with_rfc3339_times() {
        let listed = json!({"node": "ns1", "config_hash": "00ff", "nodes": [
            {"name": "ns1", "live": true, "matches": true, "this": true, "config_hash": "00ff",
             "version": "0.1.0", "started": 1_750_000_000u64, "last_seen": 1_750_000_060u64},
            {"name": "ns2", "live": false, "matches": false, "this": false, "config_hash": "11ee",
             "version": "0.1.0", "started": 1_749_000_000u64, "last_seen": 1_749_000_010u64},
        ]});
        assert_eq!(
            nodes_text(&listed),
            "ns1 live config 00ff (same) mgnt 0.1.0 started 2025-06-15T15:06:40Z last seen 2025-06-15T15:07:40Z (this node)\n\
             ns2 gone config 11ee (differs) mgnt 0.1.0 started 2025-06-04T01:20:00Z last seen 2025-06-04T01:20:10Z\n"
        );
    }
}
