//! The live view's routes against the real server: tickets.

mod common;

use common::*;
use serde_json::json;

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

    let missing = "00000000-0000-4000-8000-000000000000";
    let (status, body) = on.post(&format!("/v1/sites/{missing}/live/ticket"), None);
    assert_eq!(status, 404, "{body}");
    let (status, _) = on.post("/v1/sites/not-a-uuid/live/ticket", None);
    assert_eq!(status, 400);
}
