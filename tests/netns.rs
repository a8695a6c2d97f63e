//! A region behind a cut link: the probe times out (no RST, no ICMP error) and
//! the answer moves. Runs the server and the region in network namespaces this
//! test creates, joined by a veth pair with link-local addresses, so no packet
//! can leave the machine. Needs root: ignored for other users, run as root by
//! `scripts/test` (CI).

mod common;

use std::{
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use common::{lab::*, *};
use hickory_proto::rr::RecordType;

const REGION_IP: &str = "169.254.88.2";

fn state_error(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["regions"]["europe1"]["last"]["results"][0]["error"]
        .as_str()
        .map(str::to_owned)
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test runs it as root"]
fn a_cut_link_times_the_probe_out_and_moves_the_answer() {
    require_root(&[]);
    let lab = Lab::new("dn", "169.254.88");
    let _listener = in_netns(&lab.region, || {
        TcpListener::bind((REGION_IP, 8443)).unwrap()
    });
    let fixture = Fixture::new();
    let state = fixture.path("state/health.json");
    let mut config = config_text("\"127.0.0.1:0\", \"[::1]:0\"");
    config.push_str(&format!(
        "\n[health]\ninterval = \"2s\"\ntimeout = \"500ms\"\nrecheck = \"1s\"\nstate_file = \"{}\"\n\
         \n[regions.europe1.probe]\ntcp = [\"{REGION_IP}:8443\"]\nicmp = [\"{REGION_IP}\"]\nrequire = \"all\"\n",
        state.display()
    ));
    fixture.write_config(&config);
    let server = Server::start_in_netns(fixture, &lab.server);
    let region = |deadline: Duration, want: &str| {
        let start = Instant::now();
        loop {
            let q = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"));
            let got = in_netns(&lab.server, || region_of(&udp(server.v4, &q)));
            if got.as_deref() == Some(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < deadline,
                "never answered {want}; last {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Up: TCP and ICMP both answer across the veth.
    let start = Instant::now();
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"ok\": true")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "europe1 never probed ok"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    region(Duration::from_secs(5), "europe1");

    lab.set_region_link(false);
    let took = region(Duration::from_secs(10), "us1");
    let err = state_error(&state).unwrap_or_default();
    assert!(
        err.contains("no connection within"),
        "timed out, not refused: {err}"
    );
    eprintln!("cut link detected in {took:?}");

    lab.set_region_link(true);
    region(Duration::from_secs(10), "europe1");
}
