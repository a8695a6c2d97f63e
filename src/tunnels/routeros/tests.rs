use std::{path::Path, time::Duration};

use uuid::Uuid;

use super::{
    check::{Kind, arguments, check},
    poller::bootstrap,
    *,
};

const SITE: &str = "3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c";
const JOB: &str = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f";

fn fingerprints() -> Vec<String> {
    vec!["5e8f2a6c1b7d4e9f0a3c6b8d2e5f7a9c1b4d6e8f0a2c4e6b8d0f2a4c6e8b0d2f".into()]
}

fn script<'a>(auth: &'a str, ca: Option<Ca<'a>>) -> TunnelScript<'a> {
    static NETS: std::sync::LazyLock<Vec<ipnet::Ipv4Net>> =
        std::sync::LazyLock::new(|| vec!["10.20.0.0/16".parse().unwrap()]);
    TunnelScript {
        uuid: Uuid::parse_str(SITE).unwrap(),
        job: Uuid::parse_str(JOB).unwrap(),
        username: "h4vwyhu2jvhixmocpvpj6cq3fq",
        password: "s3cr\"et$pw",
        connect_to: "mgnt.mkcld.io",
        port: 8443,
        auth,
        server_address: "100.64.0.1".parse().unwrap(),
        management: &NETS,
        ca,
        live_password: Some("live\"pw$x"),
    }
}

fn ca(fingerprints: &[String]) -> Ca<'_> {
    Ca {
        url: "https://routers.mkcld.io/router/v1/ca.pem",
        fingerprints,
    }
}

fn poller() -> Poller<'static> {
    Poller {
        site: Uuid::parse_str(SITE).unwrap(),
        base: "https://routers.mkcld.io",
        router_token: "rt0ken",
        interval: Duration::from_secs(300),
    }
}

fn golden_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tunnels/routeros/golden")
        .join(name)
}

/// Compares with `golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "{name} differs from the golden file");
}

const GOLDEN: [(&str, &str); 4] = [
    ("6.49.7", "v6.49.rsc"),
    ("7.7", "v7.7.rsc"),
    ("7.8", "v7.8.rsc"),
    ("7.16.2", "v7.16.rsc"),
];

#[test]
fn golden_scripts_per_version() {
    let fp = fingerprints();
    for (v, file) in GOLDEN {
        let got = script("sha1", Some(ca(&fp)))
            .render(Version::parse(v).unwrap())
            .unwrap();
        golden(file, &got);
    }
    let v716 = Version::parse("7.16").unwrap();
    let got = bootstrap(&poller(), &script("sha256", Some(ca(&fp))), v716).unwrap();
    golden("bootstrap-v7.16.rsc", &got);
}

/// What the checker finds in the scripts this project shipped before.
#[test]
fn the_checker_finds_what_was_wrong_with_the_old_scripts() {
    let old = |name: &str, v: &str| {
        let text = std::fs::read_to_string(golden_path(&format!("old/{name}"))).unwrap();
        let findings = check(&text, Version::parse(v).unwrap());
        let kinds: std::collections::HashSet<Kind> = findings.iter().map(|f| f.kind).collect();
        (findings, kinds)
    };
    for (name, v) in [
        ("v6.49.rsc", "6.49"),
        ("v7.7.rsc", "7.7"),
        ("v7.16.rsc", "7.16"),
    ] {
        let (findings, kinds) = old(name, v);
        for kind in [
            Kind::Scope,
            Kind::DynamicPlacement,
            Kind::EnabledBeforeRules,
            Kind::OpenToTunnel,
        ] {
            assert!(
                kinds.contains(&kind),
                "{name}: no {kind:?} in {findings:#?}"
            );
        }
        let scope = findings.iter().find(|f| f.kind == Kind::Scope).unwrap();
        assert!(scope.message.contains("$mgntTop"), "{scope}");
        assert_eq!(v != "6.49", kinds.contains(&Kind::Unverified), "{name}");
    }
    let (findings, kinds) = old("v7.7-sha256.rsc", "7.7");
    assert!(kinds.contains(&Kind::Version), "{findings:#?}");
    assert!(
        findings.iter().any(|f| f.message.contains("auth=sha256")),
        "{findings:#?}"
    );
}

#[test]
fn the_checker_finds_nothing_in_todays_scripts() {
    let fp = fingerprints();
    for v in [
        "6.48", "6.49.7", "7.1", "7.7", "7.8", "7.9", "7.15", "7.16", "7.20",
    ] {
        let version = Version::parse(v).unwrap();
        let auth = if version.has_sha2_auth() {
            "sha256"
        } else {
            "sha1"
        };
        let job = script(auth, Some(ca(&fp)));
        let text = job.render(version).unwrap();
        assert_eq!(check(&text, version), vec![], "job for {v}:\n{text}");
        let text = bootstrap(&poller(), &job, version).unwrap();
        assert_eq!(check(&text, version), vec![], "bootstrap for {v}:\n{text}");
        assert_eq!(check(&poller().source(), version), vec![], "poller for {v}");
    }
    // Without a CA a v7 router cannot verify the server, and the checker says so.
    let v7 = Version::LATEST_7;
    let text = script("sha1", None).render(v7).unwrap();
    let kinds: Vec<Kind> = check(&text, v7).iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [Kind::Unverified]);
}

#[test]
fn scripts_for_old_releases_and_missing_digests_are_refused() {
    let v6 = Version::parse("6.49.7").unwrap();
    assert!(matches!(
        script("sha256", None).render(v6),
        Err(ScriptError::Auth(..))
    ));
    assert!(matches!(
        script("sha1", None).render(Version::parse("6.45").unwrap()),
        Err(ScriptError::TooOld(..))
    ));
    assert!(matches!(
        script("whirlpool", None).render(v6),
        Err(ScriptError::UnknownAuth(_))
    ));
}

/// Parameters and values RouterOS accepts per command. Names follow the
/// `community.routeros` collection's API data (`plugins/module_utils/_api_data.py`,
/// including its per-version fields); values and the v6 and pre-7.8
/// differences follow MikroTik's documentation.
fn accepted(
    version: Version,
    command: &str,
) -> Vec<(&'static str, Option<&'static [&'static str]>)> {
    match command {
        "/interface ovpn-client add" => {
            let mut p: Vec<(&str, Option<&[&str]>)> = vec![
                ("name", None),
                ("connect-to", None),
                ("port", None),
                ("mode", Some(&["ip", "ethernet"])),
                ("user", None),
                ("password", None),
                ("profile", None),
                ("certificate", None),
                ("add-default-route", Some(&["yes", "no"])),
                ("disabled", Some(&["yes", "no"])),
                ("comment", None),
                ("cipher", Some(version.ciphers())),
                ("auth", Some(version.auths())),
            ];
            if version.major == 7 {
                p.push(("verify-server-certificate", Some(&["yes", "no"])));
            }
            p
        }
        "/ppp profile add" => vec![
            ("name", None),
            ("change-tcp-mss", Some(&["yes", "no", "default"])),
            (
                "use-encryption",
                Some(&["yes", "no", "required", "default"]),
            ),
        ],
        "/ip firewall filter add" => vec![
            ("chain", Some(&["input", "output", "forward"])),
            ("in-interface", None),
            ("out-interface", None),
            ("protocol", Some(&["tcp", "udp", "icmp"])),
            ("dst-port", None),
            ("src-address", None),
            ("dst-address", None),
            ("src-address-list", None),
            ("dst-address-list", None),
            ("connection-state", None),
            ("action", Some(&["accept", "drop"])),
            ("comment", None),
            ("place-before", None),
        ],
        "/ip firewall address-list add" => {
            vec![("list", None), ("address", None), ("comment", None)]
        }
        "/tool fetch" => vec![
            ("url", None),
            ("dst-path", None),
            ("check-certificate", Some(&["yes", "no", "yes-without-crl"])),
            ("http-method", Some(&["get", "post"])),
            ("http-header-field", None),
            ("http-data", None),
            ("output", Some(&["none", "file", "user"])),
        ],
        "/certificate import" => vec![("file-name", None), ("passphrase", None)],
        "/system script add" => vec![("name", None), ("policy", None), ("source", None)],
        "/system scheduler add" => vec![
            ("name", None),
            ("start-time", None),
            ("interval", None),
            ("policy", None),
            ("on-event", None),
        ],
        // MikroTik's User manual (v7) and Router AAA (v6): the same on both.
        "/user group add" => vec![("name", None), ("policy", None)],
        "/user add" => vec![
            ("name", None),
            ("group", None),
            ("password", None),
            ("address", None),
        ],
        other => panic!("no parameter table for `{other}`"),
    }
}

const COMMANDS: [&str; 10] = [
    "/user group add",
    "/user add",
    "/interface ovpn-client add",
    "/ppp profile add",
    "/ip firewall filter add",
    "/ip firewall address-list add",
    "/tool fetch",
    "/certificate import",
    "/system script add",
    "/system scheduler add",
];

#[test]
fn every_command_uses_only_parameters_the_version_accepts() {
    let fp = fingerprints();
    for v in ["6.49.7", "7.7", "7.16"] {
        let version = Version::parse(v).unwrap();
        let job = script("sha1", Some(ca(&fp)));
        let text = bootstrap(&poller(), &job, version).unwrap() + &poller().source();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // Commands sit inside blocks and `:if`s; check every one.
            for cmd in line.split(['{', '}', ';']).map(str::trim) {
                let Some(command) = COMMANDS.into_iter().find(|c| cmd.starts_with(c)) else {
                    continue;
                };
                let table = accepted(version, command);
                for (k, val) in arguments(&cmd[command.len()..]) {
                    let Some((_, values)) = table.iter().find(|(name, _)| *name == k) else {
                        panic!("RouterOS {v}: `{command}` has no parameter `{k}`");
                    };
                    if let Some(values) = values {
                        assert!(values.contains(&val.as_str()), "RouterOS {v}: {k}={val}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 30, "{checked} commands checked for {v}");
    }
}

#[test]
fn every_find_names_its_property() {
    let fp = fingerprints();
    let job = script("sha1", Some(ca(&fp)));
    let text = bootstrap(&poller(), &job, Version::LATEST_7).unwrap();
    assert!(!text.contains("[find]"), "a bare find matches everything");
    let pieces: Vec<&str> = text.split("find ").collect();
    for (before, find) in pieces.iter().zip(&pieces[1..]) {
        if before.ends_with(':') {
            continue; // `:find`, the string search
        }
        let cond = &find[..find.find(']').unwrap()];
        assert!(
            ["name=", "comment=$tag", "fingerprint=", "dynamic=no"]
                .iter()
                .any(|p| cond.starts_with(p)),
            "{cond}"
        );
    }
    // No script variable is named like a property it could be compared with.
    let text = text + &poller().source();
    for property in [
        "name",
        "comment",
        "fingerprint",
        "dynamic",
        "address",
        "list",
        "version",
        "size",
    ] {
        assert!(!text.contains(&format!(":local {property} ")), "{property}");
    }
}

#[test]
fn the_live_user_may_read_and_reboot_only_from_the_server_and_management() {
    let text = script("sha1", None).render(Version::LATEST_7).unwrap();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    let user = at(r#"/user remove [find name="mgnt-live"]"#);
    let group = at(r#"/user group remove [find name="mgnt-live"]"#);
    let new_group = at(r#"/user group add name="mgnt-live" policy=read,api,reboot"#);
    let new_user = at(
        r#"/user add name="mgnt-live" group="mgnt-live" password="live\"pw\$x" address=100.64.0.1/32,10.20.0.0/16"#,
    );
    assert!(user < group && group < new_group && new_group < new_user);
    assert!(
        new_user < at("ovpn-client enable"),
        "in place before the tunnel is up"
    );
    assert_eq!(text.matches("policy=").count(), 1, "{text}");
    // Rendered without its password (for the admin API) it is left alone.
    let mut bare = script("sha1", None);
    bare.live_password = None;
    let text = bare.render(Version::LATEST_7).unwrap();
    assert!(!text.contains("/user "), "{text}");
    assert!(!text.contains("live\\\"pw"), "{text}");
}

#[test]
fn passwords_are_escaped() {
    let text = script("sha1", None).render(Version::LATEST_7).unwrap();
    assert!(text.contains(r#"password="s3cr\"et\$pw""#), "{text}");
}

#[test]
fn rules_accept_management_only_from_the_management_networks() {
    let text = script("sha1", None).render(Version::LATEST_7).unwrap();
    assert!(
        text.contains("/ip firewall address-list add list=$tag address=100.64.0.1 comment=$tag")
    );
    assert!(
        text.contains("/ip firewall address-list add list=$tag address=10.20.0.0/16 comment=$tag")
    );
    for l in text
        .lines()
        .filter(|l| l.contains("chain=input") && l.contains("dst-port"))
    {
        assert!(l.contains("src-address-list=$tag"), "{l}");
    }
    let icmp: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("chain=input") && l.contains("icmp"))
        .collect();
    assert_eq!(icmp.len(), 1);
    assert!(icmp[0].contains("src-address=100.64.0.1 "), "{}", icmp[0]);
    // Added disabled, enabled last.
    let add = text.find("ovpn-client add").unwrap();
    let enable = text.find("ovpn-client enable").unwrap();
    assert!(text[add..].lines().next().unwrap().contains("disabled=yes"));
    assert!(text.rfind("firewall filter add").unwrap() < enable);
}
