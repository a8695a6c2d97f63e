//! `mgnt serve` under a `Type=notify` unit: READY=1 once it serves, the
//! watchdog fed, STOPPING=1 on SIGTERM — told to a socket the test owns, as
//! systemd's `NOTIFY_SOCKET` would be.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixDatagram,
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;

/// The next notification, within a generous deadline.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_is_told_ready_after_the_listeners_then_fed_then_told_stopping() {
    let fixture = Fixture::new();
    let path = fixture.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = mgnt()
        .args(["serve", "--config"])
        .arg(fixture.config())
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = next(&socket);
    assert!(ready.starts_with("READY=1\nSTATUS=serving"), "{ready:?}");
    // By then every listener was bound: the last one printed precedes READY.
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("listening api"))
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("listening dns")),
        "{lines:?}"
    );
    // The watchdog is fed every 100 ms (half of WATCHDOG_USEC).
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(&socket), "WATCHDOG=1");
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    let pid = child.id().to_string();
    assert!(run_status("kill", &["-TERM", &pid]));
    let stopping = (0..50)
        .map(|_| next(&socket))
        .find(|m| m != "WATCHDOG=1")
        .unwrap();
    assert_eq!(stopping, "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

fn run_status(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap()
        .success()
}
