//! `mgnt backup DIR` while the server runs, then README's restore (the
//! state directory's copy put back with `cp -a`) after the state is lost:
//! the same sites, the same tokens, the same cookie secret.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn a_backup_taken_while_serving_restores_the_node_with_cp() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\n"
            + "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"state\"\n"),
    );
    let mut server = Server::start_with(fixture);
    let (status, created) = server.post("/v1/sites", None);
    assert_eq!(status, 201, "{created}");
    let uuid = created["site"]["uuid"].as_str().unwrap().to_owned();
    let state = server.fixture.path("state");
    let cookie = std::fs::read(state.join("cookie.secret")).unwrap();

    let into = tempfile::tempdir().unwrap();
    let dir = into.path().join("mgnt-backup");
    let out = mgnt()
        .args(["backup", "--config"])
        .arg(server.fixture.config())
        .arg(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "tunnels.db",
        "vpnlog.db",
        "secret.key",
        "admin.token",
        "cookie.secret",
    ] {
        let copy = dir.join(state.join(name).strip_prefix("/").unwrap());
        assert!(said.contains(&copy.display().to_string()), "{name}: {said}");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // A second backup into the same directory is refused.
    let again = mgnt()
        .args(["backup", "--config"])
        .arg(server.fixture.config())
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // The node's state is lost; README's restore puts it back.
    server.stop();
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let copy = dir.join(state.strip_prefix("/").unwrap());
    let restored = std::process::Command::new("cp")
        .args(["-a", &format!("{}/.", copy.display())])
        .arg(format!("{}/", state.display()))
        .status()
        .unwrap();
    assert!(restored.success());
    server.restart();
    let (status, site) = server.get(&format!("/v1/sites/{uuid}"));
    assert_eq!(status, 200, "the site came back: {site}");
    assert_eq!(std::fs::read(state.join("cookie.secret")).unwrap(), cookie);
}
