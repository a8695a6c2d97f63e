//! The live view's routes against the real server: tickets, and the
//! WebSocket fed by a RouterOS API stand-in listening on the site's tunnel
//! address (the pool is on loopback here, 127.64.0.0/24, so no namespace is
//! needed), logged in to as the user the site's job made.

mod common;

use std::time::Duration;

use common::{
    curl::*,
    routeros::{Config, Reboot, RouterOs},
    viewer::{next_of, open, ticket},
    *,
};
use serde_json::{Value, json};

const PROVISION: &str =
    "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n";

fn start(live: &str) -> Server {
    let fixture = Fixture::new();
    fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + PROVISION + live));
    Server::start_with(fixture)
}

#[test]
fn tickets_are_issued_for_sites_while_the_live_view_is_on() {
    let off = start("");
    let (status, body) = off.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    let uuid = body["site"]["uuid"].as_str().unwrap().to_owned();
    let (status, body) = off.post(&format!("/v1/sites/{uuid}/live/ticket"), None);
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("[live]"), "{body}");

    let on = start("\n[live]\nticket_ttl = \"20s\"\n");
    let (_, body) = on.post("/v1/sites", None);
    let uuid = body["site"]["uuid"].as_str().unwrap().to_owned();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = on.post(&format!("/v1/sites/{uuid}/live/ticket"), None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["site"], json!(uuid));
    let ticket = body["ticket"].as_str().unwrap();
    assert_eq!(ticket.len(), 48);
    let expires = body["expires"].as_u64().unwrap();
    assert!((before + 20..=before + 22).contains(&expires), "{body}");
    let (again, second) = on.post(&format!("/v1/sites/{uuid}/live/ticket"), None);
    assert_eq!(again, 201);
    assert_ne!(second["ticket"], body["ticket"], "a new ticket each time");

    let (status, body) = off.get(&format!("/v1/sites/{uuid}/resource"));
    assert_eq!(status, 404, "{body}");
    let missing = "00000000-0000-4000-8000-000000000000";
    let (status, body) = on.post(&format!("/v1/sites/{missing}/live/ticket"), None);
    assert_eq!(status, 404, "{body}");
    let (status, _) = on.post("/v1/sites/not-a-uuid/live/ticket", None);
    assert_eq!(status, 400);
}

/// A server whose sites' tunnel addresses are on loopback, with a router
/// endpoint and `[live]` on `api_port` (and the keys in `live`).
fn start_looped(api_port: u16, live: &str) -> Server {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"127.64.0.0/24\"\nauth = \"sha1\"\n"
            + "\n[routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n"
            + &format!("\n[live]\napi_port = {api_port}\nlinger = \"200ms\"\n{live}")),
    );
    Server::start_with(fixture)
}

/// A site whose router applied its install job: its uuid, tunnel address and
/// the live-view password that job carried.
fn applied_site(server: &Server) -> (String, String, String) {
    let (_, body) = server.post("/v1/sites", None);
    let uuid = body["site"]["uuid"].as_str().unwrap().to_owned();
    let address = body["site"]["address"].as_str().unwrap().to_owned();
    let token = body["router_token"].as_str().unwrap();
    let base = format!("http://{}", server.routers.unwrap());
    let password =
        common::routeros::apply_first_job(&ureq::Agent::new_with_defaults(), &base, token);
    (uuid, address, password)
}

/// The stand-in on the site's tunnel address, knowing its live-view user.
fn router_of(address: &str, port: u16, password: String, reboot: bool, config: Config) -> RouterOs {
    let config = config.with_live_user(&password, reboot);
    RouterOs::start_on(format!("{address}:{port}").parse().unwrap(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_share_the_routers_stream_through_tickets() {
    let port = free_port();
    let server = start_looped(port, "");
    let (uuid, address, password) = applied_site(&server);
    let router = router_of(&address, port, password, true, Config::default());

    let path = |t: &str| format!("/v1/sites/{uuid}/live?ticket={t}&interfaces=ether1&log=1");
    let first = ticket(&server, &uuid);
    let mut a = open(&server, &path(&first), None).await.unwrap();
    let sample = next_of(&mut a, "traffic").await;
    assert_eq!(sample["interface"], "ether1", "{sample}");
    assert!(
        sample["rx_bps"].is_u64() && sample["time"].is_u64(),
        "{sample}"
    );
    // The API's own origin is welcome; a ticket works once.
    let own = format!("http://{}", server.api);
    let mut b = open(&server, &path(&ticket(&server, &uuid)), Some(&own))
        .await
        .unwrap();
    next_of(&mut b, "traffic").await;
    assert_eq!(open(&server, &path(&first), None).await.err(), Some(401));
    assert_eq!(router.connections(), 1, "one API connection for both");
    assert_eq!(router.active_streams(), 2, "traffic and log, shared");
    let metrics = curl(&[
        &format!("http://{}/metrics", server.api),
        "-H",
        &bearer(&server.token()),
    ])
    .body;
    for line in [
        "mgnt_live_routers 1",
        "mgnt_live_viewers 2",
        "mgnt_live_streams 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    // The router's resources, on the same connection.
    let (status, body) = server.get(&format!("/v1/sites/{uuid}/resource"));
    assert_eq!(status, 200, "{body}");
    let resource = &body["resource"];
    assert_eq!(resource["version"], "7.18 (stable)", "{body}");
    assert!(resource["uptime"].as_u64().unwrap() > 3 * 86_400, "{body}");
    assert_eq!(resource["total_memory"], 67_108_864, "{body}");
    assert_eq!(router.connections(), 1, "the shared connection");
    // A site whose router does not answer: 502, saying so.
    let (_, other) = server.post("/v1/sites", None);
    let other = other["site"]["uuid"].as_str().unwrap().to_owned();
    let (status, body) = server.get(&format!("/v1/sites/{other}/resource"));
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("does not answer"),
        "{body}"
    );
    router.push_log("system,info", "user admin logged in");
    for socket in [&mut a, &mut b] {
        let log = next_of(socket, "log").await;
        assert_eq!(log["message"], "user admin logged in");
        assert_eq!(log["topics"], json!(["system", "info"]));
    }

    // Another site's page, or none of ours, is refused before the ticket is spent.
    let spare = ticket(&server, &uuid);
    let evil = open(&server, &path(&spare), Some("https://evil.example")).await;
    assert_eq!(evil.err(), Some(403));
    assert_eq!(
        open(
            &server,
            &format!("/v1/sites/{uuid}/live?ticket={spare}"),
            None
        )
        .await
        .err(),
        Some(400)
    );
    assert!(
        open(&server, &path(&spare), None).await.is_ok(),
        "still unspent"
    );

    a.close(None).await.unwrap();
    b.close(None).await.unwrap();
    router
        .until("cancelled after the last viewer", |r| {
            r.active_streams() == 0
        })
        .await;
}

/// The audit log's reboot entries.
fn reboots_audited(server: &Server) -> Vec<Value> {
    let text = std::fs::read_to_string(server.fixture.path("state/audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "reboot")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_is_sent_confirmed_or_not_audited_and_spaced() {
    let port = free_port();
    let server = start_looped(port, "reboot_timeout = \"3s\"\nreboot_min_gap = \"1h\"\n");
    let state = |uuid: &str, id: &str| {
        let (status, body) = server.get(&format!("/v1/sites/{uuid}/reboots/{id}"));
        assert_eq!(status, 200, "{body}");
        body["reboot"].clone()
    };

    // A router that answers !done, drops the connection and comes back
    // with its uptime started again, watched by a viewer meanwhile.
    let (uuid, address, password) = applied_site(&server);
    let router = router_of(&address, port, password, true, Config::default());
    let path = format!(
        "/v1/sites/{uuid}/live?ticket={}&interfaces=ether1",
        ticket(&server, &uuid)
    );
    let mut viewer = open(&server, &path, None).await.unwrap();
    next_of(&mut viewer, "traffic").await;
    let (status, body) = server.post(&format!("/v1/sites/{uuid}/reboot"), None);
    assert_eq!(status, 202, "{body}");
    let reboot = &body["reboot"];
    assert_eq!(reboot["state"], "sent", "{body}");
    assert_eq!(reboot["site"], json!(uuid));
    assert_eq!(reboot["user"], "admin", "the token's name");
    let id = reboot["id"].as_str().unwrap().to_owned();
    let first = id.clone();
    assert_eq!(router.reboots(), 1);
    let error = next_of(&mut viewer, "error").await;
    assert_eq!(error["code"], "router_unreachable", "{error}");
    next_of(&mut viewer, "traffic").await; // the hub reconnected
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while state(&uuid, &id)["state"] != "confirmed" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            state(&uuid, &id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(state(&uuid, &id)["finished"].is_u64());
    // One reboot per reboot_min_gap.
    let again = curl(&[
        "-X",
        "POST",
        &format!("http://{}/v1/sites/{uuid}/reboot", server.api),
        "-H",
        &bearer(&server.token()),
    ]);
    assert_eq!(again.status, 429, "{}", again.body);
    let retry: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert!(again.body.contains("reboot_min_gap"), "{}", again.body);
    assert_eq!(
        router.reboots(),
        1,
        "the refused one never reached the router"
    );

    // A router that drops the connection without a word and never returns.
    let (gone, address, password) = applied_site(&server);
    let config = Config {
        reboot: Reboot::Drop,
        ..Config::default()
    };
    let router = router_of(&address, port, password, true, config);
    let (status, body) = server.post(&format!("/v1/sites/{gone}/reboot"), None);
    assert_eq!(status, 202, "{body}");
    assert_eq!(router.reboots(), 1);
    drop(router);
    let id = body["reboot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(state(&gone, &id)["state"], "sent");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while state(&gone, &id)["state"] != "unconfirmed" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            state(&gone, &id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A live-view user without the reboot policy: refused, not held back.
    let (refused, address, password) = applied_site(&server);
    let router = router_of(&address, port, password, false, Config::default());
    for _ in 0..2 {
        let (status, body) = server.post(&format!("/v1/sites/{refused}/reboot"), None);
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["reboot"]["state"], "failed", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("not sent"),
            "{body}"
        );
        let id = body["reboot"]["id"].as_str().unwrap();
        assert_eq!(state(&refused, id)["state"], "failed");
    }
    assert_eq!(router.reboots(), 0);

    let audited = reboots_audited(&server);
    let outcomes: Vec<(&str, &str)> = audited
        .iter()
        .map(|e| (e["site"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes.len(), 4, "{audited:?}");
    assert_eq!(outcomes[0], (uuid.as_str(), "sent"));
    assert_eq!(outcomes[1], (gone.as_str(), "sent"));
    assert!(
        outcomes[2..]
            .iter()
            .all(|(s, o)| *s == refused && o.starts_with("not sent"))
    );
    assert!(audited.iter().all(|e| e["token"] == "admin"), "{audited:?}");

    // The same from the command line, in words.
    let out = server.cli(&["site", "reboot-status", &uuid, &first]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(": confirmed (asked by admin at 20"), "{text}");
    let out = server.cli(&["site", "reboot", &refused, "--wait"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the reboot was not sent"), "{said}");

    let missing = "00000000-0000-4000-8000-000000000000";
    let (status, _) = server.post(&format!("/v1/sites/{missing}/reboot"), None);
    assert_eq!(status, 404);
    let (status, _) = server.get(&format!("/v1/sites/{uuid}/reboots/{missing}"));
    assert_eq!(status, 404);
    let (status, _) = server.get(&format!("/v1/sites/{gone}/reboots/{first}"));
    assert_eq!(status, 404, "another site's reboot");
}
