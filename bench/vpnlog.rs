//! Criterion benchmark of the OpenVPN log parser on a real OpenVPN 2.6 log
//! (server and client lines at verb 3), mixed with syslog-wrapped copies.
//! `cargo bench --bench vpnlog`; throughput is reported in lines per second.
//! Three figures: the whole parse in the local time zone (as served), the
//! same in UTC (no zone lookups), and the syslog header alone (syslog_loose).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mgnt::vpnlog::parse::parse;

fn corpus() -> Vec<String> {
    let raw = include_str!("../tests/data/openvpn-2.6-verb3.log");
    let mut lines: Vec<String> = raw.lines().map(str::to_owned).collect();
    let wrapped: Vec<String> = raw
        .lines()
        .map(|l| {
            format!(
                "<29>Nov 25 18:08:05 vpn-fra-2 openvpn[812]: {}",
                &l[l.len().min(20)..]
            )
        })
        .collect();
    lines.extend(wrapped);
    lines
}

fn benches(c: &mut Criterion) {
    let lines = corpus();
    let mut group = c.benchmark_group("vpnlog");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse mixed corpus", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse(black_box(l)));
            }
        })
    });
    group.bench_function("parse mixed corpus, UTC", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(mgnt::vpnlog::parse::parse_in(black_box(l), chrono::Utc));
            }
        })
    });
    group.bench_function("syslog header only, UTC", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(mgnt::vpnlog::syslog::header(black_box(l), chrono::Utc));
            }
        })
    });
    group.finish();
}

criterion_group!(vpnlog, benches);
criterion_main!(vpnlog);
