//! Syslog-over-TCP load for the log ingester: sends the real OpenVPN log,
//! RFC 3164-wrapped and octet-counted, over several connections, then waits
//! until the server has accounted for every line (parsed + unparsed, from
//! `/metrics`) and stored every record. Prints one JSON line with lines/s.
//!
//! `syslogload SYSLOG_ADDR API_ADDR TOKEN_FILE LINES [CONNECTIONS]`

use std::{
    io::{BufWriter, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, syslog, api, token_file, lines, rest @ ..] = args.as_slice() else {
        eprintln!("usage: syslogload SYSLOG_ADDR API_ADDR TOKEN_FILE LINES [CONNECTIONS]");
        std::process::exit(2);
    };
    let total: u64 = lines.parse().expect("LINES");
    let conns: u64 = rest.first().and_then(|c| c.parse().ok()).unwrap_or(4);
    let token = std::fs::read_to_string(token_file).expect("token file");
    let corpus: Vec<String> = include_str!("../tests/data/openvpn-2.6-verb3.log")
        .lines()
        .map(|l| {
            let m = format!("<29>Nov 25 18:08:05 vpn-fra-1 openvpn[812]: {l}");
            format!("{} {m}", m.len())
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let read = |name: &str| {
        let mut r = agent
            .get(&format!("http://{api}/metrics"))
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .call()
            .expect("metrics");
        metric(&r.body_mut().read_to_string().expect("body"), name)
    };
    let before = read("mgnt_vpnlog_lines_total{result=\"parsed\"}")
        + read("mgnt_vpnlog_lines_total{result=\"unparsed\"}");
    let start = Instant::now();
    let senders: Vec<_> = (0..conns)
        .map(|c| {
            let (syslog, corpus) = (syslog.clone(), corpus.clone());
            let share = total / conns + u64::from(c < total % conns);
            std::thread::spawn(move || {
                let mut out = BufWriter::with_capacity(
                    1 << 20,
                    TcpStream::connect(&syslog).expect("connect"),
                );
                for i in 0..share {
                    out.write_all(corpus[i as usize % corpus.len()].as_bytes())
                        .expect("send");
                }
                out.flush().expect("flush");
            })
        })
        .collect();
    senders.into_iter().for_each(|s| s.join().expect("sender"));
    let sent_in = start.elapsed();
    loop {
        let done = read("mgnt_vpnlog_lines_total{result=\"parsed\"}")
            + read("mgnt_vpnlog_lines_total{result=\"unparsed\"}")
            - before;
        if done >= total {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {done} of {total} lines accounted for"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let accounted = start.elapsed();
    // Stored: everything handed to the writer is committed.
    let (written, stored) = loop {
        let queued = read("mgnt_vpnlog_records_queued_total");
        let written = read("mgnt_vpnlog_records_written_total");
        if written == queued {
            break (written, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "{{\"lines\":{total},\"connections\":{conns},\"sent_s\":{:.3},\"accounted_s\":{:.3},\"stored_s\":{:.3},\"records_written\":{written},\"lines_per_s\":{:.0}}}",
        sent_in.as_secs_f64(),
        accounted.as_secs_f64(),
        stored.as_secs_f64(),
        total as f64 / stored.as_secs_f64().max(accounted.as_secs_f64())
    );
}
