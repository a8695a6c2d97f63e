//! The RouterOS API client against the stand-in router of
//! tests/common/routeros.rs, and the stand-in itself checked by Python's
//! librouteros, a client written against real routers.

mod common;

use std::{net::SocketAddr, process::Command as Process, time::Duration};

use common::routeros::{Config, Interface, Reboot, RouterOs};
use mgnt::live::api::{Attrs, Client, ClientError, Command, Interfaces, Subscription, Timeouts};
use serde_json::{Value, json};

/// Generous for a loaded two-core machine; nothing waits this long on success.
const WAIT: Duration = Duration::from_secs(20);

const TIMEOUTS: Timeouts = Timeouts {
    connect: WAIT,
    login: WAIT,
    reply: WAIT,
};

/// librouteros's plain login, prints (one with `.proplist`, one without), a
/// wrong password, a read-only user's write and an unknown command, printed
/// as JSON.
const LIBROUTEROS: &str = r#"
import json, sys
import librouteros
from librouteros.exceptions import TrapError

port = int(sys.argv[1])

def connect(user, password):
    return librouteros.connect(host="127.0.0.1", username=user, password=password, port=port, timeout=20)

def trap(call):
    try:
        call()
        return None
    except TrapError as e:
        return str(e)

out = {}
api = connect("admin", "secret")
out["resource"] = list(api("/system/resource/print"))
out["interfaces"] = list(api.rawCmd("/interface/print", "=.proplist=name,type,running"))
out["all_interfaces"] = list(api.path("interface"))
api.close()
out["wrong_password"] = trap(lambda: connect("admin", "wrong"))
viewer = connect("viewer", "view")
out["read_only"] = trap(lambda: list(viewer("/user/add", name="x", group="full")))
out["unknown"] = trap(lambda: list(viewer("/nonsense/print")))
out["after_traps"] = list(viewer.rawCmd("/system/resource/print", "=.proplist=version"))
print(json.dumps(out))
"#;

fn python(args: &[&str]) -> std::process::Output {
    Process::new("/usr/bin/python3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("/usr/bin/python3: {e}: install the Debian package python3"))
}

#[test]
fn librouteros_speaks_with_the_stand_in() {
    let module = python(&["-c", "import librouteros"]);
    assert!(
        module.status.success(),
        "Python's librouteros is not installed: install the Debian package python3-librouteros (`apt-get install python3-librouteros`; scripts/test does)"
    );
    let router = RouterOs::start(Config::default());
    let port = router.addr().port().to_string();
    let run = python(&["-c", LIBROUTEROS, &port]);
    assert!(
        run.status.success(),
        "librouteros: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value = serde_json::from_slice(&run.stdout).unwrap();
    let resource = &out["resource"][0];
    assert_eq!(resource["version"], "7.18 (stable)");
    assert_eq!(resource["uptime"], "3d4h5s");
    assert_eq!(resource["board-name"], "hAP lite");
    assert_eq!(
        out["interfaces"],
        json!([
            {"name": "ether1", "type": "ether", "running": true},
            {"name": "ether2", "type": "ether", "running": false},
            {"name": "bridge1", "type": "bridge", "running": true},
        ])
    );
    assert_eq!(out["all_interfaces"][0][".id"], "*1");
    assert_eq!(out["all_interfaces"][0]["mtu"], 1500);
    assert_eq!(out["wrong_password"], "invalid user name or password (6)");
    assert_eq!(out["read_only"], "not enough permissions (9)");
    assert_eq!(out["unknown"], "no such command prefix");
    assert_eq!(out["after_traps"], json!([{"version": "7.18 (stable)"}]));
    assert_eq!((router.connections(), router.logins()), (3, 2));
}

async fn login(router: &RouterOs, name: &str, password: &str) -> Client {
    let client = Client::connect(router.addr(), TIMEOUTS).await.unwrap();
    client.login(name, password).await.unwrap();
    client
}

/// Every sentence the stand-in received is one the allowlist renders.
fn assert_allowlisted(router: &RouterOs) {
    let commands = router.commands();
    assert!(!commands.is_empty());
    for words in commands {
        if let Err(e) = Command::parse(&words) {
            panic!("the router received {words:?}: {e}");
        }
    }
}

fn monitor(names: &[&str], once: bool) -> Command {
    Command::MonitorTraffic {
        interfaces: Interfaces::new(names.iter().copied()).unwrap(),
        once,
    }
}

async fn next(stream: &mut Subscription) -> Attrs {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(item))) => item,
        other => panic!("no item: {other:?}"),
    }
}

/// The error a stream ends with, skipping the items before it.
async fn end(stream: &mut Subscription) -> Option<ClientError> {
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Some(e),
            Ok(None) => return None,
            Err(_) => panic!("stream did not end"),
        }
    }
}

fn keys(item: &Attrs) -> Vec<&str> {
    item.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn login_accepted_and_refused_with_the_routers_message() {
    let router = RouterOs::start(Config::default());
    login(&router, "admin", "secret").await;
    assert_eq!(router.logins(), 1);
    let client = Client::connect(router.addr(), TIMEOUTS).await.unwrap();
    match client.login("admin", "wrong").await {
        Err(ClientError::LoginRefused(m)) => assert_eq!(m, "invalid user name or password (6)"),
        other => panic!("{other:?}"),
    }
    assert_eq!(router.logins(), 1);
    assert_allowlisted(&router);
}

#[tokio::test]
async fn commands_before_login_end_the_connection() {
    let router = RouterOs::start(Config::default());
    let client = Client::connect(router.addr(), TIMEOUTS).await.unwrap();
    match client.call(&Command::ResourcePrint).await {
        Err(ClientError::Fatal(m)) => assert_eq!(m, "not logged in"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.call(&Command::InterfacePrint).await,
        Err(ClientError::Fatal(_))
    ));
}

#[tokio::test]
async fn login_and_connect_time_out_or_fail_clearly() {
    // Accepts and never answers, like a router whose API service hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short = Timeouts {
        login: Duration::from_millis(200),
        ..TIMEOUTS
    };
    let client = Client::connect(silent.local_addr().unwrap(), short)
        .await
        .unwrap();
    assert!(matches!(
        client.login("admin", "secret").await,
        Err(ClientError::Timeout("login", _))
    ));
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        Client::connect(closed, TIMEOUTS).await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn resource_print_returns_the_proplist_and_interface_print_the_interfaces() {
    let router = RouterOs::start(Config::default());
    let client = login(&router, "viewer", "view").await;
    let rows = client.call(&Command::ResourcePrint).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        keys(&rows[0]),
        [
            "cpu-load",
            "free-memory",
            "total-memory",
            "uptime",
            "version"
        ]
    );
    assert_eq!(rows[0]["version"], "7.18 (stable)");
    let rows = client.call(&Command::InterfacePrint).await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["ether1", "ether2", "bridge1"]);
    assert_eq!(keys(&rows[1]), ["name", "running", "type"]);
    assert_eq!(rows[1]["running"], "false");
    assert_eq!(router.empties(), 0);
    assert_allowlisted(&router);
}

#[tokio::test]
async fn monitor_traffic_streams_until_cancelled_and_late_sentences_are_dropped() {
    let router = RouterOs::start(Config::default());
    let client = login(&router, "viewer", "view").await;
    let mut traffic = client
        .subscribe(&monitor(&["ether1", "bridge1"], false))
        .await
        .unwrap();
    let mut samples = Vec::new();
    for _ in 0..4 {
        samples.push(next(&mut traffic).await);
    }
    let names: Vec<&str> = samples.iter().map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["ether1", "bridge1", "ether1", "bridge1"]);
    assert_eq!(
        keys(&samples[0]),
        [
            "name",
            "rx-bits-per-second",
            "rx-packets-per-second",
            "tx-bits-per-second",
            "tx-packets-per-second"
        ]
    );
    assert_eq!(samples[0]["rx-bits-per-second"], "1000000");
    assert_eq!(samples[3]["rx-bits-per-second"], "3001000");
    assert_eq!(router.active_streams(), 1);
    assert_eq!(traffic.lost(), 0);

    tokio::time::timeout(WAIT, traffic.cancel())
        .await
        .unwrap()
        .unwrap();
    router
        .until("2 late sentences sent", |r| r.late() == 2)
        .await;
    router
        .until("streams stopped", |r| r.active_streams() == 0)
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.stray() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "late sentences not seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.stray(), 2);
    // The connection is still good after the cancel and the late sentences.
    let once = client.call(&monitor(&["ether2"], true)).await.unwrap();
    assert_eq!(once.len(), 1);
    assert_eq!(once[0]["name"], "ether2");
    assert_allowlisted(&router);
}

#[tokio::test]
async fn monitor_traffic_of_an_unknown_interface_is_a_trap() {
    let router = RouterOs::start(Config::default());
    let client = login(&router, "viewer", "view").await;
    let mut traffic = client.subscribe(&monitor(&["wlan9"], false)).await.unwrap();
    match end(&mut traffic).await {
        Some(ClientError::Trap { message, .. }) => {
            assert_eq!(message, "input does not match any value of interface");
        }
        other => panic!("{other:?}"),
    }
}

fn no_interfaces(version: &'static str) -> Config {
    Config {
        version,
        interfaces: Vec::<Interface>::new(),
        ..Config::default()
    }
}

#[tokio::test]
async fn empty_answers_from_7_18_and_plain_done_before() {
    for (version, empties) in [("7.18", 1), ("7.20.1", 1), ("7.17.2", 0), ("6.49", 0)] {
        let router = RouterOs::start(no_interfaces(version));
        let client = login(&router, "admin", "secret").await;
        let rows = client.call(&Command::InterfacePrint).await.unwrap();
        assert!(rows.is_empty(), "{version}");
        assert_eq!(router.empties(), empties, "{version}");
        assert_eq!(client.stray(), 0, "{version}");
        // And the next command is answered as usual.
        let rows = client.call(&Command::ResourcePrint).await.unwrap();
        assert_eq!(rows[0]["version"], format!("{version} (stable)"));
    }
}

#[tokio::test]
async fn log_follow_and_listen_receive_pushed_entries() {
    let router = RouterOs::start(Config::default());
    router.push_log("system,info", "before the follow: not sent");
    let client = login(&router, "viewer", "view").await;
    let mut follow = client.subscribe(&Command::LogFollow).await.unwrap();
    let mut listen = client.subscribe(&Command::LogListen).await.unwrap();
    router
        .until("both streams running", |r| r.active_streams() == 2)
        .await;
    router.push_log("system,info,account", "user admin logged in via api");
    router.push_log("interface,info", "ether2 link down");
    for stream in [&mut follow, &mut listen] {
        let first = next(stream).await;
        assert_eq!(keys(&first), ["message", "time", "topics"]);
        assert_eq!(first["topics"], "system,info,account");
        assert_eq!(first["message"], "user admin logged in via api");
        assert_eq!(next(stream).await["message"], "ether2 link down");
    }
    follow.cancel().await.unwrap();
    listen.cancel().await.unwrap();
    router
        .until("streams stopped", |r| r.active_streams() == 0)
        .await;
    assert_allowlisted(&router);
}

#[tokio::test]
async fn reboot_is_sent_whether_the_router_answers_or_just_drops() {
    for behaviour in [Reboot::DoneThenDrop, Reboot::Drop] {
        let router = RouterOs::start(Config {
            reboot: behaviour,
            ..Config::default()
        });
        let client = login(&router, "viewer", "view").await;
        let watcher = login(&router, "admin", "secret").await;
        let mut traffic = watcher
            .subscribe(&monitor(&["ether1"], false))
            .await
            .unwrap();
        let uptime = client.call(&Command::ResourcePrint).await.unwrap();
        assert_eq!(uptime[0]["uptime"], "3d4h5s");

        client
            .reboot()
            .await
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        assert_eq!(router.reboots(), 1);
        // The router went down with every session.
        assert!(matches!(end(&mut traffic).await, Some(ClientError::Closed)));
        // Closed, or reset when the command was written after the router
        // had closed its end.
        let after = client.call(&Command::ResourcePrint).await;
        assert!(
            matches!(after, Err(ClientError::Closed | ClientError::Io(_))),
            "{behaviour:?}: {after:?}"
        );

        let again = login(&router, "viewer", "view").await;
        let uptime = again.call(&Command::ResourcePrint).await.unwrap();
        let uptime = &uptime[0]["uptime"];
        assert!(
            uptime.ends_with('s') && uptime.len() <= 3,
            "{behaviour:?}: {uptime}"
        );
        assert_allowlisted(&router);
    }
}

#[tokio::test]
async fn a_read_only_users_trap_is_an_error_and_the_session_goes_on() {
    let router = RouterOs::start(Config::default());
    // "watcher" is read-only without the reboot policy.
    let client = login(&router, "watcher", "watch").await;
    match client.reboot().await {
        Err(ClientError::Trap { message, .. }) => assert_eq!(message, "not enough permissions (9)"),
        other => panic!("{other:?}"),
    }
    assert_eq!(router.reboots(), 0);
    assert_eq!(client.call(&Command::ResourcePrint).await.unwrap().len(), 1);
    assert_allowlisted(&router);
}

#[tokio::test]
async fn fatal_and_end_of_connection_end_every_stream_with_an_error() {
    let router = RouterOs::start(Config::default());
    let client = login(&router, "viewer", "view").await;
    let mut traffic = client
        .subscribe(&monitor(&["ether1"], false))
        .await
        .unwrap();
    let mut log = client.subscribe(&Command::LogFollow).await.unwrap();
    router
        .until("both streams running", |r| r.active_streams() == 2)
        .await;
    router.fatal_all("session terminated on request");
    for stream in [&mut traffic, &mut log] {
        match end(stream).await {
            Some(ClientError::Fatal(m)) => assert_eq!(m, "session terminated on request"),
            other => panic!("{other:?}"),
        }
        assert!(stream.next().await.is_none());
    }
    router
        .until("streams stopped", |r| r.active_streams() == 0)
        .await;
    assert!(matches!(
        client.subscribe(&Command::LogListen).await,
        Err(ClientError::Fatal(_))
    ));

    let client = login(&router, "viewer", "view").await;
    let mut traffic = client
        .subscribe(&monitor(&["ether1"], false))
        .await
        .unwrap();
    next(&mut traffic).await;
    router.drop_all();
    assert!(matches!(end(&mut traffic).await, Some(ClientError::Closed)));
    assert!(matches!(traffic.cancel().await, Err(ClientError::Closed)));
    assert_allowlisted(&router);
}

#[tokio::test]
async fn every_command_of_the_allowlist_and_nothing_else_reaches_the_router() {
    let router = RouterOs::start(Config::default());
    let client = login(&router, "admin", "secret").await;
    client.call(&Command::InterfacePrint).await.unwrap();
    client.call(&Command::ResourcePrint).await.unwrap();
    client
        .call(&monitor(&["ether1", "ether2"], true))
        .await
        .unwrap();
    for command in [
        monitor(&["ether1"], false),
        Command::LogFollow,
        Command::LogListen,
    ] {
        let stream = client.subscribe(&command).await.unwrap();
        stream.cancel().await.unwrap();
    }
    // Dropped without cancel: cancelled in the background.
    let listen = client.subscribe(&Command::LogListen).await.unwrap();
    router.until("listening", |r| r.active_streams() == 1).await;
    drop(listen);
    router
        .until("streams stopped", |r| r.active_streams() == 0)
        .await;
    client.reboot().await.unwrap();
    let paths: Vec<String> = router.commands().iter().map(|w| w[0].clone()).collect();
    assert_eq!(
        paths,
        [
            "/login",
            "/interface/print",
            "/system/resource/print",
            "/interface/monitor-traffic",
            "/interface/monitor-traffic",
            "/cancel",
            "/log/print",
            "/cancel",
            "/log/listen",
            "/cancel",
            "/log/listen",
            "/cancel",
            "/system/reboot",
        ]
    );
    assert_allowlisted(&router);
}
