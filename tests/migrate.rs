//! `mgnt store migrate`: a single machine's deployment, made by the real
//! server, copied into PostgreSQL; a node on the database then serves its
//! sites, secrets, jobs and drains as the single machine did. Root only: the
//! throwaway PostgreSQL cluster runs as the `postgres` user.

mod common;

use std::process::Output;

use common::{pg::Postgres, *};
use serde_json::{Value, json};

/// The test config with provisioning (and an agent token), then `extra`
/// inside or after the `[provision]` table.
fn config(extra: &str) -> String {
    config_text("\"127.0.0.1:0\", \"[::1]:0\"")
        .replace("[api]\n", "[api]\nagent_token_file = \"agents.token\"\n")
        + "\n[provision]\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n"
        + extra
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mgnt auth-verify` (through the server's hook route) for `user`/`password`.
fn verifies(server: &Server, user: &str, password: &str) -> bool {
    let creds = server.fixture.path("creds");
    std::fs::write(&creds, format!("{user}\n{password}\n")).unwrap();
    let (code, _, err) = text(&server.cli(&["auth-verify", creds.to_str().unwrap()]));
    assert!(matches!(code, Some(0 | 1)), "{err}");
    code == Some(0)
}

/// The secret in a job's RouterOS script.
fn secret_in(script: &Value) -> String {
    let script = script.as_str().expect("a script");
    let start = script.find("password=\"").expect("a password") + "password=\"".len();
    script[start..].split('"').next().unwrap().to_owned()
}

/// The job id a site's pending script names in its first line.
fn job_in(script: &Value) -> String {
    let first = script.as_str().unwrap().lines().next().unwrap();
    let id = first.strip_prefix("# mgnt job ").expect("a job header");
    id.split_whitespace().next().unwrap().to_owned()
}

struct Tunnel {
    uuid: String,
    user: String,
    address: String,
    secret: String,
}

fn create(server: &Server) -> Tunnel {
    let (status, body) = server.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    let site = &body["site"];
    Tunnel {
        uuid: site["uuid"].as_str().unwrap().into(),
        user: site["username"].as_str().unwrap().into(),
        address: site["address"].as_str().unwrap().into(),
        secret: body["secret"].as_str().unwrap().into(),
    }
}

/// Rows per table, to see that a refused copy wrote nothing.
fn counts(pg: &Postgres) -> String {
    pg.psql(
        "mgnt",
        "SELECT (SELECT count(*) FROM sites) || ' ' || (SELECT count(*) FROM released) || ' '
             || (SELECT count(*) FROM jobs) || ' ' || (SELECT count(*) FROM auth_attempts) || ' '
             || (SELECT count(*) FROM drains) || ' ' || (SELECT count(*) FROM audit)",
    )
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn a_single_machine_copied_into_postgresql_serves_its_sites_secrets_jobs_and_drains() {
    let pg = Postgres::start();
    let fixture = Fixture::new();
    std::fs::write(fixture.path("agents.token"), "srv1:agent-token-of-srv1\n").unwrap();
    fixture.write_config(&config("data_dir = \"state\"\n"));
    let mut server = Server::start_with(fixture);

    // The single machine: `a` recreated (its new secret in an open job),
    // `b`'s install applied, `c` deleted (its address quarantined), a drain,
    // two logins checked.
    let (a, b, c) = (create(&server), create(&server), create(&server));
    let (status, body) = server.post(&format!("/v1/sites/{}/recreate", a.uuid), None);
    assert_eq!(status, 201, "{body}");
    let (status, script) = server.get(&format!("/v1/sites/{}/routeros.rsc?version=7.16", a.uuid));
    assert_eq!(status, 200, "{script}");
    let a_secret = secret_in(&script);
    assert_ne!(a_secret, a.secret);
    let (_, script) = server.get(&format!("/v1/sites/{}/routeros.rsc?version=7.16", b.uuid));
    let b_job = job_in(&script);
    assert_eq!(
        server.post(&format!("/v1/jobs/{b_job}/applied"), None).0,
        200
    );
    let (code, _, err) = text(&server.cli(&["site", "delete", &c.uuid]));
    assert_eq!(code, Some(0), "{err}");
    let (status, body) = server.post(
        "/v1/regions/us1/drain",
        Some(json!({"reason": "moving to postgres"})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(verifies(&server, &b.user, &b.secret));
    assert!(!verifies(&server, &b.user, "wrong"));
    server.stop();

    // The same files under a config with [store] (and the same key file).
    let root = server.fixture.dir.path().to_owned();
    let at = |p: &str| root.join(p);
    let config_file = at("mgnt.toml");
    let password = at("db.password");
    let tunnels_db = at("state/tunnels.db");
    let before = std::fs::read(&tunnels_db).unwrap();
    single_machine_logs(&at("state/vpnlog.db"));
    let store = "\n[node]\nname = \"node-a\"\n".to_owned() + &pg.store_toml(&password, "1h");
    let migrate = || {
        let mut cmd = mgnt();
        cmd.args(["store", "migrate", "--from"])
            .arg(at("state"))
            .arg("--state-file")
            .arg(at("state/health.json"))
            .arg("--config")
            .arg(&config_file);
        text(&cmd.output().unwrap())
    };
    // Another key file: the open job's sealed secret does not open; refused.
    let other_key = at("other.key");
    std::fs::write(&other_key, format!("{}\n", "7".repeat(64))).unwrap();
    std::fs::set_permissions(
        &other_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let with_other_key = config(&("secret_key_file = \"other.key\"\n".to_owned() + &store));
    std::fs::write(&config_file, with_other_key).unwrap();
    let (code, out, err) = migrate();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("sealed secret does not open with") && err.contains("other.key"),
        "{err}"
    );
    assert_eq!(counts(&pg).trim(), "0 0 0 0 0 0");

    std::fs::write(&config_file, config(&store)).unwrap();
    let (code, out, err) = migrate();
    assert_eq!(code, Some(0), "{out}{err}");
    for want in [
        "  sites                2",
        "  released             1",
        "  jobs                 3  (1 open)",
        "  auth_attempts        2",
        "  drains               1",
        "  audit                1",
        "secret_key_file",
        "The open job's sealed secret opens with it.",
        "  vpn_sessions         1  from",
        "  vpn_auth             2\n",
        "  vpn_unparsed         1\n",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    assert!(
        std::fs::read(&tunnels_db).unwrap() == before,
        "tunnels.db changed"
    );
    // The log records went into the partitions of the days they fall on.
    let days = pg.psql(
        "mgnt",
        "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'vpn_auth'",
    );
    assert_eq!(days.trim(), "vpn_auth_20241004 vpn_auth_20241005");
    // Every site inserted was numbered: an agent asking since=0 gets both.
    assert_eq!(pg.psql("mgnt", "SELECT value FROM sites_seq").trim(), "2");
    assert_eq!(
        pg.psql(
            "mgnt",
            "SELECT node || ' ' || (entry->>'action') FROM audit"
        )
        .trim(),
        "node-a drain"
    );

    // A node on the database serves what the single machine had.
    server.restart();
    for t in [&a, &b] {
        let (status, got) = server.get(&format!("/v1/sites/{}", t.uuid));
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["site"]["address"], t.address.as_str());
    }
    assert_eq!(server.get(&format!("/v1/sites/{}", c.uuid)).0, 404);
    let (_, script) = server.get(&format!("/v1/sites/{}/routeros.rsc?version=7.16", a.uuid));
    assert_eq!(secret_in(&script), a_secret, "a's open job, still sealed");
    assert!(verifies(&server, &a.user, &a_secret));
    assert!(verifies(&server, &b.user, &b.secret));
    assert!(
        !verifies(&server, &a.user, &a.secret),
        "a's first secret was never applied: the rotation ended it"
    );
    let (_, regions) = server.get("/v1/regions");
    let us1 = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "us1")
        .unwrap();
    assert_eq!(us1["drain"]["reason"], "moving to postgres", "{regions}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let credentials: Value = agent
        .get(&format!(
            "http://{}/agent/v1/credentials?since=0",
            server.api
        ))
        .header("Authorization", "Bearer agent-token-of-srv1")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let mut users: Vec<&str> = (credentials["sites"].as_array().unwrap().iter())
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    let mut want = vec![a.user.as_str(), b.user.as_str()];
    want.sort_unstable();
    assert_eq!(users, want, "{credentials}");
    // c's address is still in quarantine: a new site gets the next one.
    let d = create(&server);
    assert_eq!(
        (c.address.as_str(), d.address.as_str()),
        ("100.64.0.4", "100.64.0.5")
    );

    // A second copy is refused and writes nothing.
    let held = counts(&pg);
    let (code, out, err) = migrate();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("already holds 3 sites, 1 quarantined address, 1 drain and 3 VPN log records")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(counts(&pg), held);

    // The OpenVPN files, from the database.
    let out_dir = at("openvpn");
    let (code, out, err) = text(&server.cli(&["site", "export", out_dir.to_str().unwrap()]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 tunnels"), "{out}");
    for t in [&a, &b, &d] {
        let ccd = std::fs::read_to_string(out_dir.join("ccd").join(&t.user)).unwrap();
        assert_eq!(ccd, format!("ifconfig-push {} 255.255.255.0\n", t.address));
    }

    // Renumbered in the database, the node stopped.
    server.stop();
    let moved = std::fs::read_to_string(&config_file)
        .unwrap()
        .replace("100.64.0.0/24", "100.64.1.0/24");
    std::fs::write(&config_file, moved).unwrap();
    let (code, out, err) = text(
        &mgnt()
            .args(["site", "renumber", "--config"])
            .arg(&config_file)
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(0), "{err}");
    let renumbered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renumbered["renumbered"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        pg.psql(
            "mgnt",
            "SELECT count(*) FROM sites WHERE address << '100.64.1.0/24'"
        )
        .trim(),
        "3"
    );
}

/// A single machine's `vpnlog.db` with one session, two authentication
/// attempts a day apart and an unparsed line, as its log store writes them.
fn single_machine_logs(file: &std::path::Path) {
    use mgnt::vpnlog::{
        sessions::{AuthAttempt, Record, Session},
        store::{Item, LogStore, Origin, SqliteLogStore},
    };
    let day = 20_000 * 86_400; // 2024-10-04
    let origin = Origin {
        host: Some("vpn-fra-1".into()),
        region: Some("europe1".into()),
    };
    let peer = "198.51.100.7:4000".parse().unwrap();
    let auth = |time: u64| Item::Record {
        record: Record::Auth(AuthAttempt {
            time,
            peer: Some(peer),
            username: None,
            tunnel: None,
            ok: false,
        }),
        origin: origin.clone(),
        time,
    };
    let session = Session {
        tunnel: None,
        common_name: "r".into(),
        peer,
        virtual_addr: None,
        start: day,
        end: None,
        end_reason: None,
        bytes_in: 0,
        bytes_out: 0,
    };
    let store = SqliteLogStore::open(file).unwrap();
    store
        .write(&[
            Item::Record {
                record: Record::Opened(session),
                origin: origin.clone(),
                time: day,
            },
            auth(day + 10),
            auth(day + 86_400 + 10),
            Item::Unparsed {
                time: day + 20,
                origin: origin.clone(),
                raw: "what".into(),
            },
        ])
        .unwrap();
}
