//! Health by quorum: three `mgnt serve` nodes on one PostgreSQL database,
//! each in a network namespace of its own with a veth link of its own to
//! the probe target (a TCP listener in a hub namespace). One link cut: that
//! node's machine says europe1 is down, one vote of three is no majority,
//! and europe1 stays in every node's answers; every link cut: out
//! everywhere; the links back: in again. The nodes reach the database over
//! its Unix socket (a path, the same in every namespace), so a cut probe
//! link never cuts a node from it. Root only: namespaces, and the cluster
//! runs as the postgres user.

mod common;

use std::net::TcpListener;

use common::{lab::*, pg::Postgres, *};
use hickory_proto::rr::RecordType;
use serde_json::Value;

const NODES: usize = 3;
/// Benchmarking addresses (RFC 2544), inside the namespaces only.
const BASE: &str = "198.18.76";

/// Node `i` in its namespace, probing europe1 across its own link.
fn node(pg: &Postgres, star: &Star, i: usize) -> Server {
    let fixture = Fixture::new();
    let password = fixture.path("db.password");
    let mut config = config_text("\"127.0.0.1:0\", \"[::1]:0\"");
    config.push_str(&format!(
        "\n[node]\nname = \"node-{i}\"\n\
         \n[health]\ninterval = \"2s\"\ntimeout = \"500ms\"\nrecheck = \"500ms\"\nfall = 2\nrise = 2\n\
         \n[regions.europe1.probe]\ntcp = [\"{}:8443\"]\n",
        star.hub_addr(i)
    ));
    // An hour between full re-reads: the votes travel by notification.
    config.push_str(&pg.store_toml_socket(&password, "1h"));
    fixture.write_config(&config);
    Server::start_in_netns(fixture, &star.leaves[i])
}

fn europe1(regions: &Value) -> Value {
    regions["regions"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == "europe1"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// (down votes, counted, quorum) of europe1 in a `/v1/regions` body.
fn votes(regions: &Value) -> (u64, u64, u64) {
    let v = &europe1(regions)["votes"];
    let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    (n("down"), n("counted"), n("quorum"))
}

/// The region answering a Belgian resolver (europe1 while it serves).
fn answer_for_belgium(server: &Server) -> Option<String> {
    let ns = server.netns.as_deref().unwrap();
    let q = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"));
    in_netns(ns, || region_of(&udp(server.v4, &q)))
}

/// Waits until every node sees europe1's votes as `want` and its own
/// machine as `own[i]` (a stable state: nothing changes after it while the
/// links stay as they are), then checks every node's answer.
fn settle(nodes: &[Server], want: (u64, u64, u64), own: [&str; NODES], serving: bool) {
    for (i, n) in nodes.iter().enumerate() {
        let what = format!("node-{i}: europe1 votes {want:?}, own machine {}", own[i]);
        let body = n.get_until("/v1/regions", &what, |r| {
            votes(r) == want && europe1(r)["health"]["status"] == own[i]
        });
        assert_eq!(europe1(&body)["serving"], serving, "node-{i}: {body:#}");
    }
    for (i, n) in nodes.iter().enumerate() {
        let answer = answer_for_belgium(n);
        assert_eq!(
            answer.as_deref() == Some("europe1"),
            serving,
            "node-{i} answers {answer:?}"
        );
    }
}

#[test]
#[ignore = "needs root (network namespaces; a PostgreSQL cluster run as the postgres user); scripts/test runs it as root"]
fn one_cut_link_keeps_the_region_everywhere_and_every_cut_link_takes_it_out_everywhere() {
    require_root(&[]);
    let pg = Postgres::start();
    let star = Star::new("qm", BASE, NODES);
    let target = in_netns(&star.hub, || TcpListener::bind(("0.0.0.0", 8443)).unwrap());
    // Accepted and closed at once: a full backlog would fail probes by itself.
    std::thread::spawn(move || {
        for stream in target.incoming() {
            drop(stream);
        }
    });
    let nodes: Vec<Server> = (0..NODES).map(|i| node(&pg, &star, i)).collect();
    let started = std::time::Instant::now();

    // Every node counts the three votes: a majority of three is two.
    settle(&nodes, (0, 3, 2), ["up"; NODES], true);

    // node-0's link cut: its machine says down, one of three is no majority.
    star.set_leaf_link(0, false);
    settle(&nodes, (1, 3, 2), ["down", "up", "up"], true);
    let Value::String(metrics) = nodes[1].get("/metrics").1 else {
        panic!("metrics are text")
    };
    assert!(
        metrics.contains("mgnt_region_down_votes{region=\"europe1\"} 1"),
        "{metrics}"
    );
    let body = nodes[2].get("/v1/regions").1;
    assert_eq!(
        europe1(&body)["votes"]["down_nodes"],
        serde_json::json!(["node-0"])
    );

    // Every link cut: three of three say down, out of every node's answers.
    star.set_leaf_link(1, false);
    star.set_leaf_link(2, false);
    settle(&nodes, (3, 3, 2), ["down"; NODES], false);

    // The links back: in again everywhere.
    for i in 0..NODES {
        star.set_leaf_link(i, true);
    }
    settle(&nodes, (0, 3, 2), ["up"; NODES], true);
    eprintln!("quorum test took {:?}", started.elapsed());
}
