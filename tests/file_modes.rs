//! Files holding secrets are the owner's only whatever the umask: the test
//! runs the server with umask 000 (its own process: the umask is the
//! process's), and every secret-bearing file it made is mode 0600, in a
//! directory it made 0700.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn secret_bearing_files_are_0600_in_a_0700_directory_under_umask_000() {
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0) };
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\n"
            + "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"state\"\n"),
    );
    let server = Server::start_with(fixture);
    let (status, body) = server.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    let mode = |f: &str| {
        let path = server.fixture.path(f);
        std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for file in [
        "state/tunnels.db",
        "state/tunnels.db-wal",
        "state/tunnels.db-shm",
        "state/vpnlog.db",
        "state/secret.key",
        "state/admin.token",
        "state/hook.token",
        "state/cookie.secret",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    assert_eq!(mode("state"), 0o700, "the state directory");
}

#[test]
fn secret_files_others_could_read_are_made_private_at_start() {
    let fixture = Fixture::new();
    let loose = std::fs::Permissions::from_mode(0o644);
    std::fs::create_dir(fixture.path("etc")).unwrap();
    for (file, text) in [
        ("etc/admin.token", "0123456789abcdef0123\n"),
        ("etc/cookie.secret", "e5e973e5a6b2a43f48e7dc849e37bfcf\n"),
        ("etc/secret.key", &format!("{}\n", "ab".repeat(32))),
    ] {
        std::fs::write(fixture.path(file), text).unwrap();
        std::fs::set_permissions(fixture.path(file), loose.clone()).unwrap();
    }
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            .replace(
                "udp_sockets = 2",
                "udp_sockets = 2\ncookie_secret_file = \"etc/cookie.secret\"",
            )
            .replace(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:0\"\ntoken_file = \"etc/admin.token\"",
            )
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nsecret_key_file = \"etc/secret.key\"\n"),
    );
    let server = Server::start_with(fixture);
    for file in ["etc/admin.token", "etc/cookie.secret", "etc/secret.key"] {
        let mode = std::fs::metadata(server.fixture.path(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}
