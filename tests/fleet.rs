//! Several `mgnt serve` nodes on one PostgreSQL database (`[store]`): a drain
//! made on one reaches the others by notification, and outlives a restart;
//! a name is held by one live node at a time; nodes that load different
//! configurations are reported. Root only: the throwaway PostgreSQL cluster
//! runs as the `postgres` user.

mod common;

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{pg::Postgres, *};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

/// Node `name` on `pg`'s database; the full re-read at `reread`.
fn node(pg: &Postgres, name: &str, reread: &str) -> Server {
    Server::start_with(fixture(pg, name, reread))
}

/// The files of node `name` on `pg`'s database.
fn fixture(pg: &Postgres, name: &str, reread: &str) -> Fixture {
    let fixture = Fixture::new();
    let password = fixture.path("db.password");
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + &format!("\n[node]\nname = \"{name}\"\n")
            + &pg.store_toml(&password, reread)),
    );
    fixture
}

fn drain_of(regions: &Value, name: &str) -> Value {
    regions["regions"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == name))
        .map_or(Value::Null, |r| r["drain"].clone())
}

/// The region answering a Belgian resolver (europe1 unless drained).
fn answer_for_belgium(server: &Server) -> Option<String> {
    region_of(&udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16")),
    ))
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn a_drain_on_one_node_reaches_the_other_outlives_a_restart_and_waits_out_the_database() {
    let pg = Postgres::start();
    // An hour between full re-reads: only a notification can carry the drain in time.
    let mut a = node(&pg, "node-a", "1h");
    let mut b = node(&pg, "node-b", "1h");
    assert_eq!(answer_for_belgium(&b).as_deref(), Some("europe1"));

    let (status, body) = a.post(
        "/v1/regions/europe1/drain",
        Some(json!({"reason": "maintenance"})),
    );
    assert_eq!(status, 200, "{body}");
    b.get_until("/v1/regions", "europe1 drained on node-b", |r| {
        drain_of(r, "europe1")["reason"] == "maintenance"
    });
    assert_ne!(answer_for_belgium(&b).as_deref(), Some("europe1"));

    // Back the other way: undrained on b, seen on a.
    assert_eq!(b.post("/v1/regions/europe1/undrain", None).0, 200);
    a.get_until("/v1/regions", "europe1 undrained on node-a", |r| {
        drain_of(r, "europe1").is_null()
    });
    assert_eq!(answer_for_belgium(&a).as_deref(), Some("europe1"));

    // A drain lives in the database, not in the node: a restart keeps it.
    let (status, body) = b.post("/v1/regions/us1/drain", Some(json!({"reason": "move"})));
    assert_eq!(status, 200, "{body}");
    a.get_until("/v1/regions", "us1 drained on node-a", |r| {
        drain_of(r, "us1")["reason"] == "move"
    });
    a.stop();
    a.restart();
    let (_, regions) = a.get("/v1/regions");
    assert_eq!(drain_of(&regions, "us1")["by"], "admin", "{regions}");

    // The database away: each node answers from what it holds; drains are
    // refused (they could not be shared), with a reason.
    let health = |node: &Server| node.get("/healthz").1;
    assert_eq!(health(&b)["store"], "available");
    pg.down();
    assert_eq!(answer_for_belgium(&b).as_deref(), Some("europe1"));
    let (status, body) = b.post("/v1/regions/asia1/drain", Some(json!({"reason": "x"})));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot persist"),
        "{body}"
    );
    let said = health(&b);
    assert_eq!(
        (said["status"].as_str(), said["store"].as_str()),
        (Some("ok"), Some("unavailable")),
        "{said}"
    );
    assert!(said["since"].as_u64() > Some(0), "{said}");
    let Value::String(m) = b.get("/metrics").1 else {
        panic!("metrics are text")
    };
    assert!(m.contains("mgnt_store_up 0"), "{m}");
    // A node started while the database is away answers by what it last
    // knew: us1's drain, made on it before.
    b.stop();
    b.restart();
    let (_, regions) = b.get("/v1/regions");
    assert_eq!(drain_of(&regions, "us1")["reason"], "move", "{regions}");
    assert_eq!(health(&b)["store"], "unavailable");
    assert_eq!(answer_for_belgium(&b).as_deref(), Some("europe1"));
    // Back: a drain made now reaches the other node again.
    pg.up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = b.post("/v1/regions/asia1/drain", Some(json!({"reason": "y"})));
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    a.get_until("/v1/regions", "asia1 drained on node-a", |r| {
        drain_of(r, "asia1")["reason"] == "y"
    });
    a.get_until("/healthz", "node-a finds the database again", |h| {
        h["store"] == "available"
    });
    b.get_until(
        "/metrics",
        "node-b claims its name once the database is back",
        |m| {
            m.as_str()
                .is_some_and(|m| m.contains("mgnt_node_name_held 1"))
        },
    );

    // Each node audited what it did, under its name.
    let audited = pg.psql(
        "mgnt",
        "SELECT node || ' ' || (entry->>'action') FROM audit ORDER BY id",
    );
    assert_eq!(
        audited.lines().collect::<Vec<_>>(),
        [
            "node-a drain",
            "node-b undrain",
            "node-b drain",
            "node-b drain"
        ],
        "{audited}"
    );
}

/// A node with provisioning on `pg`'s database; every node shares `key`.
fn provisioning_node(pg: &Postgres, name: &str, key: &std::path::Path) -> Server {
    let fixture = Fixture::new();
    let password = fixture.path("db.password");
    std::fs::write(fixture.path("agents.token"), "srv1:agent-token-of-srv1\n").unwrap();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"").replace(
            "[api]\n",
            "[api]\nagent_token_file = \"agents.token\"\n",
        ) + &format!(
            "\n[node]\nname = \"{name}\"\n\n[provision]\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\nsecret_key_file = \"{}\"\nexport_dir = \"openvpn\"\n",
            key.display()
        ) + &pg.store_toml(&password, "1h")),
    );
    Server::start_with(fixture)
}

/// POST /v1/sites on `api` with `token`: the site's uuid and address when
/// acknowledged (201).
fn create_site(api: std::net::SocketAddr, token: &str) -> Option<(String, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{api}/v1/sites"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_empty()
        .ok()?;
    if resp.status().as_u16() != 201 {
        return None;
    }
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    let site = &body["site"];
    Some((
        site["uuid"].as_str()?.into(),
        site["address"].as_str()?.into(),
    ))
}

/// GET /agent/v1/credentials on `node` as agent srv1.
fn agent_credentials(node: &Server, query: &str) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "60", "-H"])
        .arg("Authorization: Bearer agent-token-of-srv1")
        .arg(format!("http://{}/agent/v1/credentials?{query}", node.api))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `mgnt serve` on `fixture`, which must refuse to start: what it said.
fn refused(fixture: &Fixture) -> String {
    let mut child = mgnt()
        .args(["serve", "--config"])
        .arg(fixture.config())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut said = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut said)
                .unwrap();
            assert!(!status.success(), "{said}");
            return said;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a node under a name another live node holds still runs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node `name`'s entry in a `GET /v1/nodes` answer.
fn listed<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes["nodes"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn sites_made_on_two_nodes_share_one_pool_survive_a_killed_node_and_reach_the_other_nodes_agents() {
    let pg = Postgres::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("secret.key");
    let mut a = provisioning_node(&pg, "node-a", &key);
    let b = provisioning_node(&pg, "node-b", &key);

    // Creations on both nodes at once, node-a killed (-9) in the middle:
    // every acknowledged site exists once, with the address it was given.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for (node, api, token) in [("a", a.api, a.token()), ("b", b.api, b.token())] {
        for _ in 0..3 {
            let (token, acknowledged) = (token.clone(), acknowledged.clone());
            workers.push(std::thread::spawn(move || {
                for _ in 0..15 {
                    if let Some(site) = create_site(api, &token) {
                        acknowledged.lock().unwrap().push((node, site));
                    }
                }
            }));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "no creations acknowledged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    a.stop();
    for w in workers {
        w.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let stored = pg.psql("mgnt", "SELECT uuid || ' ' || host(address) FROM sites");
    let stored: Vec<&str> = stored.lines().collect();
    for (_, (uuid, address)) in &acknowledged {
        let line = format!("{uuid} {address}");
        assert_eq!(
            stored.iter().filter(|s| **s == line).count(),
            1,
            "{line} in {stored:?}"
        );
    }
    let addresses: std::collections::HashSet<_> =
        stored.iter().map(|s| s.split(' ').nth(1)).collect();
    assert_eq!(addresses.len(), stored.len(), "one address per site");
    let on_b = acknowledged.iter().filter(|(node, _)| *node == "b").count();
    assert_eq!(on_b, 45, "node-b kept creating");
    assert!(
        acknowledged.len() < 90,
        "node-a was killed before it made all its sites"
    );

    // An agent of node-b hears of a site made on node-a at once: its long
    // poll ends by notification (re-reads are an hour apart).
    a.restart();
    let all = agent_credentials(&b, "since=0");
    let seq = all["seq"].as_u64().expect("a sequence number");
    assert_eq!(all["sites"].as_array().map(Vec::len), Some(stored.len()));
    let waiting = {
        let api = b.api;
        std::thread::spawn(move || {
            let out = std::process::Command::new("curl")
                .args(["-s", "--max-time", "60", "-H"])
                .arg("Authorization: Bearer agent-token-of-srv1")
                .arg(format!(
                    "http://{api}/agent/v1/credentials?since={seq}&wait=60"
                ))
                .output()
                .unwrap();
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (uuid, _) = create_site(a.api, &a.token()).expect("a site made on node-a");
    let heard = waiting.join().unwrap();
    let usernames: Vec<&str> = (heard["sites"].as_array().unwrap().iter())
        .filter_map(|s| s["username"].as_str())
        .collect();
    assert_eq!(usernames.len(), 1, "{heard}");
    let (status, site) = b.get(&format!("/v1/sites/{uuid}"));
    assert_eq!(status, 200, "{site}");
    assert_eq!(usernames[0], site["site"]["username"], "{heard}");
    // node-b's OpenVPN files follow it too.
    let ccd = b.fixture.path(&format!("openvpn/ccd/{}", usernames[0]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ccd.exists() {
        assert!(std::time::Instant::now() < deadline, "no {}", ccd.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(a.cli(&["site", "delete", &uuid]).status.code(), Some(0));
    while ccd.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} stays",
            ccd.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A real agent asking node-b: its credential cache takes in a site made
    // on node-a (its firewall off: this is the test machine's own).
    let agent = Agent::start(&b);
    agent.until_cached(""); // its first full read, before the site is made
    let (made, _) = create_site(a.api, &a.token()).expect("a site made on node-a");
    let (_, made) = b.get(&format!("/v1/sites/{made}"));
    agent.until_cached(made["site"]["username"].as_str().unwrap());
    drop(agent);

    // The database away: creations are refused with a reason, and work again
    // once it is back.
    pg.down();
    let (status, body) = b.post("/v1/sites", None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("unavailable"),
        "{body}"
    );
    pg.up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while create_site(b.api, &b.token()).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no creation after the database came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Everything acknowledged before the database went away is still there.
    let after = pg.psql("mgnt", "SELECT uuid || ' ' || host(address) FROM sites");
    for (_, (uuid, address)) in &acknowledged {
        let line = format!("{uuid} {address}");
        assert!(after.lines().any(|l| l == line), "{line} lost");
    }
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn a_name_is_held_by_one_live_node_and_nodes_that_differ_are_reported() {
    let pg = Postgres::start();
    let mut first = node(&pg, "node-a", "1h");
    // Every node loads one GeoIP file (the generated one carries its build time).
    let geoip = first.fixture.path("test-city.mmdb");
    let same_geoip = |f: &Fixture| std::fs::copy(&geoip, f.path("test-city.mmdb")).unwrap();

    // A second node under a live node's name is refused, and told why.
    let twin = fixture(&pg, "node-a", "1h");
    same_geoip(&twin);
    let said = refused(&twin);
    assert!(
        said.contains("node name `node-a` is held by another live node")
            && said.contains("[node] name"),
        "{said}"
    );
    assert!(first.is_running());

    // Killed (no goodbye to the database), the name is free again at once.
    first.stop();
    let started = Instant::now();
    let a = Server::start_logging(twin);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the name came free after {:?}",
        started.elapsed()
    );

    // A node whose geo TTL differs: each reports the other.
    let other = fixture(&pg, "node-b", "1h");
    same_geoip(&other);
    let same_config = std::fs::read_to_string(other.config()).unwrap();
    other.write_config(&same_config.replacen("ttl = 60", "ttl = 61", 1));
    let b = Server::start_logging(other);
    let m = a.get_until("/metrics", "node-a sees node-b differ", |m| {
        m.as_str()
            .is_some_and(|m| m.contains("mgnt_nodes_config_differing 1"))
    });
    let m = m.as_str().unwrap();
    assert!(
        m.contains("mgnt_nodes_live 2") && m.contains("mgnt_node_name_held 1"),
        "{m}"
    );
    let nodes = b.get_until("/v1/nodes", "node-b lists node-a as differing", |n| {
        listed(n, "node-a")["live"] == true && listed(n, "node-a")["matches"] == false
    });
    let (ours, theirs) = (
        listed(&nodes, "node-b")["config_hash"].as_str().unwrap(),
        listed(&nodes, "node-a")["config_hash"].as_str().unwrap(),
    );
    assert_eq!(nodes["config_hash"], ours, "{nodes:#}");
    assert!(
        m.contains(&format!("mgnt_config_info{{hash=\"{theirs}\"}} 1")),
        "{m}"
    );
    let me = listed(&nodes, "node-b");
    assert_eq!((&me["this"], &me["matches"]), (&json!(true), &json!(true)));
    assert!(me["last_seen"].as_u64() >= me["started"].as_u64(), "{me}");
    assert_eq!(
        nodes["nodes"].as_array().map(Vec::len),
        Some(2),
        "{nodes:#}"
    );
    // The log names both nodes and both hashes, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let differs = |log: &str| {
        log.lines()
            .filter(|l| l.contains("differ from another live node"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    while differs(&b.log()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = differs(&b.log());
    assert_eq!(lines.len(), 1, "{}", b.log());
    for part in [
        "node=node-b ",
        "other_node=node-a",
        &format!("config_hash={ours}"),
        &format!("other_config_hash={theirs}"),
    ] {
        assert!(lines[0].contains(part), "{part}: {}", lines[0]);
    }
    let out = b.cli(&["nodes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("node-a live config {theirs} (differs)")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // node-b reloads node-a's configuration: they agree again.
    b.fixture.write_config(&same_config);
    let (status, body) = b.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["config_hash"], theirs, "{body}");
    a.get_until("/metrics", "node-a sees node-b agree", |m| {
        m.as_str()
            .is_some_and(|m| m.contains("mgnt_nodes_config_differing 0"))
    });
    b.get_until("/v1/nodes", "node-b lists node-a as the same", |n| {
        listed(n, "node-a")["matches"] == true
    });

    // node-a's connection is cut and another session takes its name (as a
    // node started meanwhile would): node-a says so, and claims its name
    // again once it is free.
    let key = mgnt::fleet::compare::lock_key("node-a");
    let (high, low) = ((key as u64 >> 32) as u32, key as u32);
    let held = |n: u8| {
        move |m: &Value| {
            m.as_str()
                .is_some_and(|m| m.contains(&format!("mgnt_node_name_held {n}")))
        }
    };
    let logged = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !a.log().contains(what) {
            assert!(Instant::now() < deadline, "{what}: {}", a.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::thread::scope(|s| {
        // Longer than node-a's wait for its name (5 s, after a second).
        s.spawn(|| {
            pg.psql(
                "mgnt",
                &format!(
                    "BEGIN; SELECT pg_terminate_backend(pid) FROM pg_locks \
                     WHERE locktype = 'advisory' AND objsubid = 1 \
                     AND classid = '{high}'::oid AND objid = '{low}'::oid; \
                     UPDATE nodes SET started = 1 WHERE name = 'node-a'; COMMIT; \
                     SELECT pg_advisory_lock({key}); SELECT pg_sleep(9)"
                ),
            )
        });
        a.get_until("/metrics", "node-a without its name", held(0));
        logged("another node took this node's name");
    });
    a.get_until("/metrics", "node-a holds its name again", held(1));
    logged("this node holds its name again");
    assert_eq!(answer_for_belgium(&a).as_deref(), Some("europe1"));
}

/// `mgnt agent` beside no OpenVPN server (its management interface never
/// answers), asking `node` for credentials as srv1; killed on drop.
struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start(node: &Server) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (file, text) in [("token", "agent-token-of-srv1\n"), ("mgmt.pw", "unused\n")] {
            std::fs::write(d.join(file), text).unwrap();
            std::fs::set_permissions(d.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            d.join("agent.toml"),
            format!(
                "[agent]\nmanagement = \"127.0.0.1:9\"\nmanagement_password_file = \"{}\"\n\
                 control = \"http://{}\"\ntoken_file = \"{}\"\ncache_dir = \"{}\"\nfirewall = false\n",
                d.join("mgmt.pw").display(),
                node.api,
                d.join("token").display(),
                d.join("cache").display(),
            ),
        )
        .unwrap();
        let child = mgnt()
            .args(["agent", "--config"])
            .arg(d.join("agent.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    /// Waits until the agent's cache on disk holds `username` (any file, for "").
    fn until_cached(&self, username: &str) {
        let file = self.dir.path().join("cache/credentials.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if !text.is_empty() && text.contains(username) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{username} not in {}: {text}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node with provisioning, the router endpoint and the live view on
/// `pg`'s database, its API on `api_port` and published as its `api_url`;
/// the tunnel pool on loopback so a stand-in router is reached directly.
fn live_node(
    pg: &Postgres,
    name: &str,
    key: &std::path::Path,
    api_port: u16,
    router_api: u16,
) -> Server {
    let fixture = Fixture::new();
    let password = fixture.path("db.password");
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"").replace(
            "[api]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[api]\nlisten = \"127.0.0.1:{api_port}\"\n"),
        ) + &format!(
            "\n[node]\nname = \"{name}\"\napi_url = \"http://127.0.0.1:{api_port}\"\n\
             \n[provision]\npool = \"127.64.0.0/24\"\nauth = \"sha1\"\nsecret_key_file = \"{}\"\n\
             \n[routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n\
             \n[live]\napi_port = {router_api}\nlinger = \"300ms\"\n",
            key.display()
        ) + &pg.store_toml(&password, "1h")),
    );
    Server::start_with(fixture)
}

/// Two nodes, one router: the node that opened the router's API holds its
/// lease, the other relays its viewers from it (one API connection for
/// both); once the holder lets go, the other node takes the router itself.
#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn one_node_holds_a_routers_live_connection_and_the_other_relays_its_viewers() {
    use common::{
        routeros::{Config, RouterOs, apply_first_job},
        viewer::{next_of, open, ticket},
    };
    let pg = Postgres::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("secret.key");
    let router_api = free_port();
    let a = live_node(&pg, "a", &key, free_port(), router_api);
    let b = live_node(&pg, "b", &key, free_port(), router_api);
    let (status, body) = a.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    let uuid = body["site"]["uuid"].as_str().unwrap().to_owned();
    let address = body["site"]["address"].as_str().unwrap();
    let base = format!("http://{}", a.routers.unwrap());
    let token = body["router_token"].as_str().unwrap();
    let password = apply_first_job(&ureq::Agent::new_with_defaults(), &base, token);
    let config = Config::default().with_live_user(&password, true);
    let router = RouterOs::start_on(format!("{address}:{router_api}").parse().unwrap(), config);
    let gauge = |node: &Server, name: &str| {
        let (_, text) = node.get("/metrics");
        let text = text.as_str().unwrap_or_default().to_owned();
        (text.lines())
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let path = |t: &str| format!("/v1/sites/{uuid}/live?ticket={t}&interfaces=ether1&log=1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut on_a = open(&a, &path(&ticket(&a, &uuid)), None).await.unwrap();
        next_of(&mut on_a, "traffic").await;
        let mut on_b = open(&b, &path(&ticket(&b, &uuid)), None).await.unwrap();
        let sample = next_of(&mut on_b, "traffic").await;
        assert_eq!(sample["interface"], "ether1", "{sample}");
        router.push_log("system,info", "seen on both nodes");
        for socket in [&mut on_a, &mut on_b] {
            assert_eq!(
                next_of(socket, "log").await["message"],
                "seen on both nodes"
            );
        }
        assert_eq!(
            router.connections(),
            1,
            "one API connection for both nodes' viewers"
        );
        assert_eq!(gauge(&a, "mgnt_live_viewers"), 2, "b's viewer is a's");
        assert_eq!(gauge(&b, "mgnt_live_routers"), 0);

        // The holder lets go after its last viewer and the linger; then
        // the other node opens the router itself.
        on_a.close(None).await.unwrap();
        on_b.close(None).await.unwrap();
        router
            .until("a's connection closed", |r| r.active_streams() == 0)
            .await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while gauge(&a, "mgnt_live_routers") != 0 {
            assert!(tokio::time::Instant::now() < deadline, "a never let go");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut again = open(&b, &path(&ticket(&b, &uuid)), None).await.unwrap();
        next_of(&mut again, "traffic").await;
        assert_eq!(router.connections(), 2);
        assert_eq!(gauge(&b, "mgnt_live_routers"), 1, "b holds it now");
    });
}
