//! The agent's login path under load: an emulator of OpenVPN's management
//! interface (`--management-client-auth`) replays CONNECTs to a real `mgnt
//! agent` (its credential cache seeded on disk, the control plane away, the
//! firewall off) and counts the answers. A quarter of the logins carry a
//! wrong secret; every answer is checked. Prints one JSON line: decisions
//! per wall second, per second of the agent's CPU, and its CPU per login.
//!
//! `mgmtreplay MGNT_BINARY [LOGINS] [SITES] [WINDOW]` (50000, 10000, 64)

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    process::{Command, Stdio},
    sync::Arc,
    time::Instant,
};

use mgnt::{
    agent::cache::{Cache, Changes},
    agent::firewall::Policy,
    tunnels::{keys::Keys, store::Credential, username::username},
};

/// User and system CPU of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .expect("usage: mgmtreplay MGNT_BINARY [LOGINS] [SITES] [WINDOW]");
    let arg = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (logins, sites, window) = (arg(2, 50_000), arg(3, 10_000), arg(4, 64));
    let dir = tempfile::tempdir().expect("a temp dir");
    let keys = Keys::load_or_create(&dir.path().join("secret.key")).expect("a key");

    // The cache an agent would have written after a full read.
    let mut creds = Vec::with_capacity(sites);
    let mut secrets = Vec::with_capacity(sites);
    for i in 0..sites {
        let user = username(&uuid::Uuid::new_v4());
        let secret = keys.new_secret().expect("a secret");
        creds.push(Credential {
            username: user.clone(),
            address: std::net::Ipv4Addr::from(0x6440_0002 + i as u32),
            secret: keys.digest(&secret),
            previous: None,
            previous_until: None,
        });
        secrets.push((user, secret));
    }
    let mut cache = Cache::default();
    cache
        .apply(Changes {
            server: "bench".into(),
            region: None,
            seq: 1,
            full: true,
            sites: creds,
            deleted: vec![],
            netmask: "255.192.0.0".parse().unwrap(),
            digest_key: keys.digests().to_hex(),
            policy: Policy {
                pool: "100.64.0.0/10".parse().unwrap(),
                networks: vec![],
                inbound: vec![],
                outbound: vec![],
            },
        })
        .expect("changes");
    let cache_dir = dir.path().join("cache");
    cache.save(&cache_dir).expect("saving the cache");

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    std::fs::write(dir.path().join("token"), "bench-agent-token-0123456789\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nmanagement = \"{addr}\"\ncontrol = \"http://127.0.0.1:9\"\ntoken_file = \"token\"\n\
             cache_dir = \"cache\"\nfirewall = false\n"
        ),
    )
    .unwrap();
    let mut agent = Command::new("taskset")
        .args(["-c", "1", binary, "agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("running the agent under taskset");
    let (stream, _) = listener.accept().expect("the agent connects");
    let pid = agent.id();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let writer = Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(stream)));
    // The agent asks for byte counts first; read that much of it later.
    let block = |i: usize| {
        let (user, secret) = &secrets[i % sites];
        let password = if i % 4 == 3 {
            "wrong-secret"
        } else {
            secret.as_str()
        };
        format!(
            ">CLIENT:CONNECT,{i},0\n>CLIENT:ENV,untrusted_ip=169.254.1.{}\n>CLIENT:ENV,untrusted_port={}\n\
             >CLIENT:ENV,username={user}\n>CLIENT:ENV,password={password}\n>CLIENT:ENV,END\n",
            i % 250 + 1,
            10_000 + i % 50_000,
        )
    };
    let cpu0 = cpu_ticks(pid);
    let began = Instant::now();
    let mut sent = 0;
    let send_upto = |n: usize, sent: &mut usize| {
        let mut w = writer.lock().unwrap();
        while *sent < n.min(logins) {
            w.write_all(block(*sent).as_bytes()).unwrap();
            *sent += 1;
        }
        w.flush().unwrap();
    };
    send_upto(window, &mut sent);
    let (mut decided, mut allowed, mut denied) = (0, 0, 0);
    let mut line = String::new();
    while decided < logins {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the agent closed the connection after {decided} answers");
        }
        let Some(rest) = line
            .strip_prefix("client-auth ")
            .map(|r| (r, true))
            .or_else(|| line.strip_prefix("client-deny ").map(|r| (r, false)))
        else {
            continue;
        };
        let cid: usize = rest.0.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(
            rest.1,
            cid % 4 != 3,
            "client {cid} answered wrongly: {line}"
        );
        if rest.1 {
            allowed += 1;
        } else {
            denied += 1;
        }
        decided += 1;
        send_upto(decided + window, &mut sent);
    }
    let wall = began.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid) - cpu0;
    let hz = 100.0; // USER_HZ on Linux
    let cpu = ticks as f64 / hz;
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "{{\"logins\":{logins},\"sites\":{sites},\"window\":{window},\"allowed\":{allowed},\"denied\":{denied},\
         \"seconds\":{wall:.3},\"decisions_per_s\":{:.0},\"agent_cpu_s\":{cpu:.2},\"decisions_per_cpu_s\":{:.0},\"cpu_us_per_login\":{:.2}}}",
        logins as f64 / wall,
        logins as f64 / cpu.max(0.01),
        cpu * 1e6 / logins as f64,
    );
}
