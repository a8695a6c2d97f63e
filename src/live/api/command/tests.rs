use super::*;

fn ifaces(names: &[&str]) -> Interfaces {
    Interfaces::new(names.iter().copied()).unwrap()
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::Login {
            name: "viewer".into(),
            password: "pa=ss word".into(),
        },
        Command::Cancel { tag: 41 },
        Command::InterfacePrint,
        Command::MonitorTraffic {
            interfaces: ifaces(&["ether1", "bridge lan"]),
            once: false,
        },
        Command::MonitorTraffic {
            interfaces: ifaces(&["ether1"]),
            once: true,
        },
        Command::LogFollow,
        Command::LogListen,
        Command::ResourcePrint,
        Command::Reboot,
    ]
}

fn parse(words: &[&str]) -> Result<(Command, u32), NotAllowed> {
    Command::parse(words)
}

#[test]
fn every_command_renders_its_exact_words() {
    let rendered: Vec<Vec<String>> = all_commands().iter().map(|c| c.render(7)).collect();
    let expected: &[&[&str]] = &[
        &["/login", "=name=viewer", "=password=pa=ss word", ".tag=7"],
        &["/cancel", "=tag=41", ".tag=7"],
        &["/interface/print", "=.proplist=name,type,running", ".tag=7"],
        &[
            "/interface/monitor-traffic",
            "=interface=ether1,bridge lan",
            "=.proplist=name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second",
            ".tag=7",
        ],
        &[
            "/interface/monitor-traffic",
            "=interface=ether1",
            "=.proplist=name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second",
            "=once=",
            ".tag=7",
        ],
        &[
            "/log/print",
            "=follow-only=",
            "=.proplist=time,topics,message",
            ".tag=7",
        ],
        &["/log/listen", "=.proplist=time,topics,message", ".tag=7"],
        &[
            "/system/resource/print",
            "=.proplist=uptime,version,cpu-load,free-memory,total-memory",
            ".tag=7",
        ],
        &["/system/reboot", ".tag=7"],
    ];
    assert_eq!(rendered, expected);
}

#[test]
fn parse_takes_back_exactly_what_render_produces() {
    for command in all_commands() {
        for tag in [0, 1, 4_000_000_000] {
            assert_eq!(
                Command::parse(&command.render(tag)),
                Ok((command.clone(), tag))
            );
        }
    }
}

#[test]
fn commands_outside_the_list_are_refused() {
    for path in [
        "/user/add",
        "/system/reset-configuration",
        "/interface/set",
        "/interface/ethernet/print",
        "/system/script/run",
        "/tool/fetch",
        "/file/print",
        "/quit",
        "login",
        "/LOGIN",
        "/system/reboot/",
    ] {
        assert_eq!(
            parse(&[path, ".tag=1"]),
            Err(NotAllowed::Command(path.to_owned())),
            "{path}"
        );
    }
    assert_eq!(parse(&[]), Err(NotAllowed::Empty));
}

#[test]
fn log_print_without_follow_only_is_refused() {
    assert!(matches!(
        parse(&["/log/print", "=.proplist=time,topics,message", ".tag=1"]),
        Err(NotAllowed::Missing { name, .. }) if name == "follow-only"
    ));
    assert!(matches!(
        parse(&["/log/print", "=follow=", "=.proplist=time,topics,message", ".tag=1"]),
        Err(NotAllowed::Missing { name, .. }) if name == "follow-only"
    ));
    assert!(matches!(
        parse(&["/log/print", "=follow-only=yes", "=.proplist=time,topics,message", ".tag=1"]),
        Err(NotAllowed::Value { name, .. }) if name == "follow-only"
    ));
}

#[test]
fn extra_attributes_queries_and_injected_words_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "/interface/print",
                "=.proplist=name,type,running",
                "=detail=",
                ".tag=1",
            ],
            "extra",
        ),
        (
            &[
                "/interface/print",
                "=.proplist=name,type,running",
                "?name=ether1",
                ".tag=1",
            ],
            "query",
        ),
        (&["/system/reboot", "=numbers=0", ".tag=1"], "extra"),
        (&["/system/reboot", "/user/add", ".tag=1"], "word"),
        (&["/system/reboot", "!done", ".tag=1"], "word"),
        (&["/system/reboot", "", ".tag=1"], "word"),
        (&["/system/reboot", "==x", ".tag=1"], "word"),
        (
            &[
                "/interface/print",
                "=.proplist=name,type,running,password",
                ".tag=1",
            ],
            "proplist",
        ),
        (&["/interface/print", ".tag=1"], "no proplist"),
        (&["/cancel", "=tag=1", "=tag=2", ".tag=3"], "repeat"),
        (
            &["/login", "=name=a", "=password=b", "=name=c", ".tag=1"],
            "repeat",
        ),
    ];
    for (words, why) in cases {
        assert!(parse(words).is_err(), "{why}: {words:?}");
    }
    assert!(matches!(
        parse(&[
            "/interface/print",
            "=.proplist=name,type,running",
            "?name=ether1",
            ".tag=1"
        ]),
        Err(NotAllowed::Query { .. })
    ));
}

#[test]
fn tags_must_be_one_plain_number() {
    let print = |tag: &[&'static str]| {
        let mut words = vec![
            "/system/resource/print",
            "=.proplist=uptime,version,cpu-load,free-memory,total-memory",
        ];
        words.extend_from_slice(tag);
        parse(&words)
    };
    assert!(matches!(print(&[]), Err(NotAllowed::NoTag { .. })));
    assert!(
        matches!(print(&[".tag=1", ".tag=2"]), Err(NotAllowed::Repeated { name, .. }) if name == ".tag")
    );
    for bad in [
        ".tag=",
        ".tag=x",
        ".tag=01",
        ".tag=+1",
        ".tag=-1",
        ".tag=4294967296",
    ] {
        assert!(
            matches!(print(&[bad]), Err(NotAllowed::BadTag { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        parse(&["/cancel", "=tag=07", ".tag=1"]),
        Err(NotAllowed::BadTag { .. })
    ));
}

#[test]
fn words_out_of_order_are_refused() {
    assert!(matches!(
        parse(&[".tag=1", "/system/reboot"]),
        Err(NotAllowed::Command(_))
    ));
    assert!(matches!(
        parse(&[
            "/log/print",
            "=.proplist=time,topics,message",
            "=follow-only=",
            ".tag=1"
        ]),
        Err(NotAllowed::Order { .. })
    ));
    assert!(matches!(
        parse(&["/system/reboot", ".tag=1"]).map(|(c, _)| c),
        Ok(Command::Reboot)
    ));
    assert!(matches!(
        parse(&["/login", "=password=b", "=name=a", ".tag=1"]),
        Err(NotAllowed::Order { .. })
    ));
    assert!(matches!(
        parse(&["/cancel", ".tag=1", "=tag=2"]),
        Err(NotAllowed::Order { .. })
    ));
}

#[test]
fn interface_names_cannot_smuggle_attributes() {
    for (name, reason) in [
        ("", "empty"),
        ("ether1,ether2", "contains ',' or '='"),
        ("ether1=x", "contains ',' or '='"),
        ("ether1\n=.proplist=x", "contains ',' or '='"),
        ("ether1\0", "contains a control character"),
        ("ether1\r", "contains a control character"),
    ] {
        assert_eq!(
            Interfaces::new([name]),
            Err(NotAllowed::Interface {
                name: name.to_owned(),
                reason
            }),
            "{name:?}"
        );
    }
    let long = "e".repeat(MAX_INTERFACE_NAME + 1);
    assert!(Interfaces::new([long.as_str()]).is_err());
    assert!(Interfaces::new(["e".repeat(MAX_INTERFACE_NAME)]).is_ok());
    assert_eq!(
        Interfaces::new(Vec::<String>::new()),
        Err(NotAllowed::NoInterfaces)
    );
    let many: Vec<String> = (0..=MAX_INTERFACES).map(|i| format!("ether{i}")).collect();
    assert_eq!(Interfaces::new(many), Err(NotAllowed::TooManyInterfaces));
    // The same checks apply to a relayed sentence.
    for list in ["", "ether1,", ",ether1", "ether1,,ether2", "ether1\u{7f}"] {
        let interface = format!("=interface={list}");
        let words = [
            "/interface/monitor-traffic",
            interface.as_str(),
            "=.proplist=name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second",
            ".tag=1",
        ];
        assert!(
            matches!(parse(&words), Err(NotAllowed::Interface { .. })),
            "{list:?}"
        );
    }
}

#[test]
fn monitor_traffic_once_is_a_bare_flag() {
    let words = [
        "/interface/monitor-traffic",
        "=interface=ether1",
        "=.proplist=name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second",
        "=once=yes",
        ".tag=1",
    ];
    assert!(matches!(parse(&words), Err(NotAllowed::Value { name, .. }) if name == "once"));
    let words = [
        "/interface/monitor-traffic",
        "=interface=ether1",
        "=.proplist=name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second",
        "=interval=0.1",
        ".tag=1",
    ];
    assert!(matches!(parse(&words), Err(NotAllowed::Word { .. })));
}

#[test]
fn only_streams_run_until_cancelled() {
    let streams: Vec<&str> = all_commands()
        .iter()
        .filter(|c| c.is_stream())
        .map(Command::path)
        .collect();
    assert_eq!(
        streams,
        ["/interface/monitor-traffic", "/log/print", "/log/listen"]
    );
}

#[test]
fn the_known_paths_are_the_commands_paths() {
    let mut paths: Vec<&str> = all_commands().iter().map(Command::path).collect();
    paths.dedup();
    assert_eq!(paths, PATHS);
}
