//! Several `mgnt serve` nodes on one PostgreSQL database (`[store]`): a drain
//! made on one reaches the others by notification, and outlives a restart.
//! Root only: the throwaway PostgreSQL cluster runs as the `postgres` user.

mod common;

use common::{pg::Postgres, *};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

/// Node `name` on `pg`'s database; the full re-read at `reread`.
fn node(pg: &Postgres, name: &str, reread: &str) -> Server {
    let fixture = Fixture::new();
    let password = fixture.path("db.password");
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + &format!("\n[node]\nname = \"{name}\"\n")
            + &pg.store_toml(&password, reread)),
    );
    Server::start_with(fixture)
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
    let b = node(&pg, "node-b", "1h");
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
