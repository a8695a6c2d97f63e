//! Provisioning over the admin API of the real server: sites, scripts, jobs.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;

const PROVISION: &str =
    "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n";

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn start() -> (Server, Self) {
        let fixture = Fixture::new();
        fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + PROVISION));
        let server = Server::start_with(fixture);
        let api = Self::for_server(&server);
        (server, api)
    }

    fn for_server(server: &Server) -> Self {
        Self {
            base: format!("http://{}", server.api),
            token: server.token(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn call(&self, method: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let mut resp = match method {
            "GET" => self.agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            "PUT" => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_empty(),
            _ => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
        }
        .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    fn json(&self, method: &str, path: &str) -> (u16, Value) {
        let (s, b) = self.call(method, path);
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

#[test]
fn a_site_gets_a_uuid_address_and_a_script_with_its_secret_once() {
    let (_server, api) = Api::start();
    let (status, created) = api.json("POST", "/v1/sites");
    assert_eq!(status, 201, "{created}");
    let uuid = created["site"]["uuid"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&uuid).unwrap().get_version_num(), 4);
    assert_eq!(created["site"]["address"], "100.64.0.2");
    assert_eq!(created["site"]["username"].as_str().unwrap().len(), 26);

    let (status, got) = api.json("GET", &format!("/v1/sites/{uuid}"));
    assert_eq!(status, 200);
    assert!(got.get("secret").is_none() && !got.to_string().contains(&secret));

    let (status, script) = api.call(
        "GET",
        &format!("/v1/sites/{uuid}/routeros.rsc?version=6.49.7"),
    );
    assert_eq!(status, 200, "{script}");
    assert!(script.contains(&format!("password=\"{secret}\"")));
    assert!(
        script.contains("cipher=aes256 ") && !script.contains("mode=ip protocol=tcp"),
        "v6 syntax"
    );
    let (_, script7) = api.call(
        "GET",
        &format!("/v1/sites/{uuid}/routeros.rsc?version=7.16"),
    );
    // TCP is the default everywhere; `protocol` is only proven from 7.9.
    let client = script7
        .lines()
        .find(|l| l.starts_with("/interface ovpn-client add"))
        .expect("an ovpn-client line");
    assert!(client.contains("cipher=aes256-cbc") && !client.contains("protocol="));
    let (status, _) = api.call("GET", &format!("/v1/sites/{uuid}/routeros.rsc?version=5"));
    assert_eq!(status, 400);

    // The install job is applied: its secret is gone from the API for good.
    let db_job = {
        let (_, s) = api.json("POST", &format!("/v1/sites/{uuid}/recreate"));
        s["job"]["id"].as_str().unwrap().to_owned()
    };
    let (status, script) = api.call("GET", &format!("/v1/jobs/{db_job}/script"));
    assert_eq!(status, 200);
    assert!(
        !script.contains(&format!("password=\"{secret}\"")),
        "the secret rotated"
    );
    let (_, job) = api.json("GET", &format!("/v1/jobs/{db_job}"));
    assert!(job["job"]["fetched"].is_number(), "{job}");
    assert_eq!(
        api.json("POST", &format!("/v1/jobs/{db_job}/applied")).0,
        200
    );
    assert_eq!(api.call("GET", &format!("/v1/jobs/{db_job}/script")).0, 410);
    assert_eq!(
        api.call("GET", &format!("/v1/sites/{uuid}/routeros.rsc")).0,
        409
    );

    assert_eq!(api.call("DELETE", &format!("/v1/sites/{uuid}")).0, 204);
    assert_eq!(api.call("GET", &format!("/v1/sites/{uuid}")).0, 404);
    assert_eq!(api.call("DELETE", &format!("/v1/sites/{uuid}")).0, 404);
}

#[test]
fn concurrent_puts_of_one_uuid_give_one_tunnel_and_one_address() {
    let (_server, api) = Api::start();
    let api = Arc::new(api);
    let uuid = uuid::Uuid::new_v4();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            std::thread::spawn(move || api.json("PUT", &format!("/v1/sites/{uuid}")))
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{results:?}"
    );
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 7);
    let addresses: std::collections::HashSet<_> = results
        .iter()
        .map(|(_, v)| v["site"]["address"].to_string())
        .collect();
    assert_eq!(addresses.len(), 1);
}

#[test]
fn bad_uuids_and_unknown_sites_get_json_errors() {
    let (_server, api) = Api::start();
    let (status, v) = api.json("PUT", "/v1/sites/not-a-uuid");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("not a UUID"));
    let unknown = uuid::Uuid::new_v4();
    for (m, p) in [
        ("GET", format!("/v1/sites/{unknown}")),
        ("POST", format!("/v1/sites/{unknown}/recreate")),
        ("GET", format!("/v1/jobs/{unknown}")),
        ("POST", format!("/v1/jobs/{unknown}/applied")),
    ] {
        let (status, v) = api.json(m, &p);
        assert_eq!(status, 404, "{m} {p}: {v}");
        assert!(v["error"].is_string());
    }
}

#[test]
fn provisioning_is_off_without_its_table() {
    let server = Server::start();
    let token = std::fs::read_to_string(server.fixture.path("state/admin.token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(&format!("http://{}/v1/sites", server.api))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[test]
fn cli_export_and_auth_verify_work_on_the_same_store() {
    let (server, _api) = Api::start();
    let run = |args: &[&str]| {
        let out = server.cli(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["site", "create"]);
    assert_eq!(code, Some(0), "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let (uuid, user, secret) = (
        created["site"]["uuid"].as_str().unwrap().to_owned(),
        created["site"]["username"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let (code, script, _) = run(&["site", "script", &uuid, "--version", "7.16"]);
    assert_eq!(code, Some(0));
    assert!(script.starts_with("# mgnt job ") && script.contains(&secret));

    let out_dir = server.fixture.path("openvpn");
    let (code, out, err) = run(&[
        "site",
        "export",
        out_dir.to_str().unwrap(),
        "--region",
        "europe1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 tunnels for europe1"), "{out}");
    let ccd = std::fs::read_to_string(out_dir.join("ccd").join(&user)).unwrap();
    assert_eq!(ccd, "ifconfig-push 100.64.0.2 255.255.255.0\n");
    let conf = std::fs::read_to_string(out_dir.join("server.conf")).unwrap();
    assert!(
        conf.contains("ifconfig 100.64.0.1 255.255.255.0")
            && conf.contains("auth-verify\" via-file"),
        "{conf}"
    );

    let creds = server.fixture.path("creds");
    for (password, want) in [(secret.as_str(), Some(0)), ("wrong", Some(1))] {
        std::fs::write(&creds, format!("{user}\n{password}\n")).unwrap();
        let (code, _, err) = run(&["auth-verify", creds.to_str().unwrap()]);
        assert_eq!(code, want, "{password}: {err}");
    }
    // The hook asks the control plane with a token of its own, good for nothing else.
    let hook = std::fs::read_to_string(server.fixture.path("state/hook.token")).unwrap();
    let hook = hook.trim();
    let mode = std::fs::metadata(server.fixture.path("state/hook.token"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    for path in ["/v1/regions", "/agent/v1/credentials"] {
        let url = format!("http://{}{path}", server.api);
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url, "-H"])
            .arg(format!("Authorization: Bearer {hook}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{path}");
    }
    let (code, _, _) = run(&["site", "delete", &uuid]);
    assert_eq!(code, Some(0));
    std::fs::write(&creds, format!("{user}\n{secret}\n")).unwrap();
    assert_eq!(
        run(&["auth-verify", creds.to_str().unwrap()]).0,
        Some(1),
        "deleted sites cannot log in"
    );
    let (_, out, _) = run(&["site", "export", out_dir.to_str().unwrap()]);
    assert!(
        out.contains("0 tunnels") && out.contains("1 stale files removed"),
        "{out}"
    );
}

#[test]
fn the_server_reexports_after_every_change_and_a_full_pool_is_a_409() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/29\"\nexport_dir = \"openvpn\"\n"),
    );
    let server = Server::start_with(fixture);
    let api = Api::for_server(&server);
    assert!(
        server.fixture.path("openvpn/server.conf").exists(),
        "exported at start"
    );
    let (_, created) = api.json("POST", "/v1/sites");
    let user = created["site"]["username"].as_str().unwrap().to_owned();
    let uuid = created["site"]["uuid"].as_str().unwrap().to_owned();
    assert!(server.fixture.path(&format!("openvpn/ccd/{user}")).exists());
    // A /29 holds five tunnels (network, gateway and broadcast excluded).
    for _ in 0..4 {
        assert_eq!(api.json("POST", "/v1/sites").0, 201);
    }
    let (status, v) = api.json("POST", "/v1/sites");
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("exhausted"), "{v}");
    assert_eq!(api.call("DELETE", &format!("/v1/sites/{uuid}")).0, 204);
    assert!(
        !server.fixture.path(&format!("openvpn/ccd/{user}")).exists(),
        "removed at once"
    );
}

#[test]
fn kill_9_during_puts_loses_nothing_acknowledged() {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let (mut server, api) = Api::start();
    let api = Arc::new(api);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(uuid::Uuid, String)>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let id = uuid::Uuid::new_v4();
                    let url = format!("{}/v1/sites/{id}", api.base);
                    let auth = format!("Bearer {}", api.token);
                    let Ok(mut resp) = api
                        .agent
                        .put(&url)
                        .header("Authorization", &auth)
                        .send_empty()
                    else {
                        break; // the server is gone
                    };
                    let Ok(body) = resp.body_mut().read_to_string() else {
                        break;
                    };
                    if resp.status().as_u16() == 201 {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        let address = v["site"]["address"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push((id, address));
                    }
                }
            })
        })
        .collect();
    // Kill while requests are in flight, once enough were acknowledged.
    let start = std::time::Instant::now();
    while acked.lock().unwrap().len() < 12 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "too few acknowledged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let acked = acked.lock().unwrap().clone();

    server.restart();
    let api = Api::for_server(&server);
    let mut addresses = std::collections::HashSet::new();
    for (id, address) in &acked {
        let (status, v) = api.json("GET", &format!("/v1/sites/{id}"));
        assert_eq!(status, 200, "acknowledged site {id} lost");
        assert_eq!(v["site"]["address"].as_str().unwrap(), address);
        assert!(addresses.insert(address.clone()), "{address} twice");
    }
    let db = rusqlite::Connection::open(server.fixture.path("state/tunnels.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // New sites after the crash never reuse an acknowledged address.
    let (_, v) = api.json("POST", "/v1/sites");
    assert!(!addresses.contains(v["site"]["address"].as_str().unwrap()));
}

/// 200 creations at once, with deletions among them: the OpenVPN directory
/// ends with exactly one ccd file per existing site (one writer, per-site
/// updates read from the store, so no stale snapshot deletes a newer file).
#[test]
fn concurrent_creates_and_deletes_leave_exactly_one_ccd_file_per_site() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/22\"\nexport_dir = \"openvpn\"\n"),
    );
    let server = Server::start_with(fixture);
    let api = Arc::new(Api::for_server(&server));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let api = api.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..25 {
                    let (status, created) = api.json("POST", "/v1/sites");
                    assert_eq!(status, 201, "{created}");
                    let uuid = created["site"]["uuid"].as_str().unwrap().to_owned();
                    let user = created["site"]["username"].as_str().unwrap().to_owned();
                    // Every fifth site of every other worker is deleted again.
                    if w % 2 == 0 && i % 5 == 0 {
                        assert_eq!(api.call("DELETE", &format!("/v1/sites/{uuid}")).0, 204);
                    } else {
                        kept.push(user);
                    }
                }
                kept
            })
        })
        .collect();
    let kept: std::collections::BTreeSet<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(kept.len(), 200 - 4 * 5);
    let files: std::collections::BTreeSet<String> =
        std::fs::read_dir(server.fixture.path("openvpn/ccd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(files, kept, "one ccd file per site, nothing else");
}

/// A reload whose pool no longer holds every allocated address is refused
/// (the next start would be); a start with such a pool keeps DNS serving
/// with provisioning off.
#[test]
fn a_pool_that_drops_allocated_addresses_is_refused_by_reload_and_disables_provisioning_at_start() {
    let fixture = Fixture::new();
    let config = |pool: &str| {
        config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + &format!("\n[provision]\ndata_dir = \"state\"\npool = \"{pool}\"\n")
    };
    fixture.write_config(&config("100.64.0.0/24"));
    let server = Server::start_with(fixture);
    let api = Api::for_server(&server);
    let (_, created) = api.json("POST", "/v1/sites");
    assert_eq!(created["site"]["address"], "100.64.0.2");

    server.fixture.write_config(&config("100.65.0.0/24"));
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("100.64.0.2"),
        "{body}"
    );
    server.fixture.write_config(&config("100.64.0.0/23"));
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["report"]["needs_restart"]
            .to_string()
            .contains("provision"),
        "{body}"
    );

    let mut server = server;
    server.fixture.write_config(&config("100.65.0.0/24"));
    server.restart();
    let dns = udp(
        server.v4,
        &query("mgnt.mkcld.io.", hickory_proto::rr::RecordType::A, None),
    );
    assert_eq!(
        dns.response_code,
        hickory_proto::op::ResponseCode::NoError,
        "DNS serves"
    );
    let (status, body) = Api::for_server(&server).json("POST", "/v1/sites");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("provisioning is off"),
        "{body}"
    );

    // Renumbering is explicit: it moves the site into the new pool, and the
    // next start provisions again (and exports the new address).
    let out = server.cli(&["site", "renumber"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(moved["renumbered"][0]["from"], "100.64.0.2", "{moved}");
    assert_eq!(moved["renumbered"][0]["to"], "100.65.0.2", "{moved}");
    server.restart();
    let api = Api::for_server(&server);
    let uuid = created["site"]["uuid"].as_str().unwrap();
    let (status, site) = api.json("GET", &format!("/v1/sites/{uuid}"));
    assert_eq!(
        (status, &site["site"]["address"]),
        (200, &Value::from("100.65.0.2")),
        "{site}"
    );
    let (status, fresh) = api.json("POST", "/v1/sites");
    assert_eq!(
        (status, &fresh["site"]["address"]),
        (201, &Value::from("100.65.0.3")),
        "{fresh}"
    );
}
