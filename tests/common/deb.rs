//! The Debian package as `cargo deb` makes it from the binary these tests
//! run: the same metadata and files a release package has, without a second
//! build.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Builds the package from the binary under test into `dir`, under the
/// version `cargo deb` gives it or `version` (a later one, for an upgrade);
/// its path.
pub fn build(dir: &Path, version: Option<&str>) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_mgnt"));
    // target/<profile dir>/mgnt: the package takes the same binary.
    let profile = match binary.parent().and_then(Path::file_name) {
        Some(d) if d == "debug" => "dev".to_owned(),
        Some(d) => d.to_string_lossy().into_owned(),
        None => panic!("{} is not in a profile directory", binary.display()),
    };
    let out = dir.join(format!("mgnt_{}.deb", version.unwrap_or("built")));
    let mut cargo = Command::new("cargo");
    cargo
        .args(["deb", "--no-build", "--no-strip", "--quiet", "--fast"])
        .args(["--profile", &profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--output")
        .arg(&out);
    if let Some(version) = version {
        cargo.args(["--deb-version", version]);
    }
    let done = cargo.output().expect("cargo");
    assert!(
        done.status.success(),
        "cargo deb failed (scripts/test installs cargo-deb): {}",
        String::from_utf8_lossy(&done.stderr)
    );
    out
}
