//! Files holding secrets are the owner's only whatever the umask: the test
//! runs the server with umask 000 (its own process: the umask is the
//! process's), and every secret-bearing file it made is mode 0600.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn secret_bearing_files_are_0600_under_umask_000() {
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
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}
