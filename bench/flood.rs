//! The replay cache under a random-subdomain flood, without sockets.
//!
//! One UDP thread's work as the server does it: the fast path first, else
//! the full path and `fast::learn`. Queries alternate between a hot set of
//! 1,000 names (asked again and again, as resolvers ask a zone's real names)
//! and names never asked before (`<random>.mkcld.io`, the flood). Each flood
//! name costs a full-path answer whatever the cache does; what the cache
//! decides is whether the hot names stay replayable. Prints the hot names'
//! replay rate, then times one hot and one flood query per iteration.
//! `cargo bench --bench flood`.

use std::{hint::black_box, net::IpAddr, path::Path};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_server::net::xfer::Protocol;
use mgnt::{
    config::Config,
    dns::{Data, answer::Responder, fast},
    route::RegionView,
};

const HOT: usize = 1000;

/// `name A` with EDNS.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}

/// One thread's answering of one query; whether it was replayed.
struct Thread {
    data: Data,
    view: RegionView,
    responder: Responder,
    runtime: tokio::runtime::Runtime,
    caches: fast::Caches,
    out: Vec<u8>,
    src: IpAddr,
}

impl Thread {
    fn answer(&mut self, q: &[u8]) -> bool {
        let fast = fast::answer(
            &self.data,
            &self.view,
            q,
            self.src,
            &mut self.out,
            &mut self.caches,
        );
        if fast.is_some() {
            return true;
        }
        let peer = (self.src, 5353).into();
        let full = self
            .runtime
            .block_on(
                self.responder
                    .respond(&self.data, &self.view, q, peer, Protocol::Udp),
            )
            .expect("an answer");
        fast::learn(&self.data, q, self.src, &full, &mut self.caches.answers);
        black_box(full);
        false
    }
}

fn benches(c: &mut Criterion) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("mgnt.toml");
    let data = Data::load(Config::load(&config).expect("config")).expect("data");
    let view = RegionView::all_serving(data.config.regions.len());
    let mut t = Thread {
        data,
        view,
        responder: Responder::default(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap(),
        caches: fast::Caches::default(),
        out: Vec::with_capacity(512),
        src: "127.0.0.1".parse().unwrap(),
    };
    let hot: Vec<Vec<u8>> = (0..HOT).map(|i| query(&format!("h{i}.mkcld.io"))).collect();
    let mut n = 0u64;
    let mut flood = move || {
        n += 1;
        query(&format!("r{n:x}.mkcld.io"))
    };
    // Warm up, then count the hot names replayed while the flood runs.
    for (i, q) in hot.iter().cycle().take(4 * HOT).enumerate() {
        t.answer(q);
        if i % 2 == 0 {
            t.answer(&flood());
        }
    }
    let rounds = 100 * HOT;
    let replayed = (0..rounds)
        .filter(|&i| {
            let hit = t.answer(&hot[i % HOT]);
            t.answer(&flood());
            hit
        })
        .count();
    eprintln!(
        "hot names replayed under the flood: {replayed} of {rounds} ({:.1} %)",
        100.0 * replayed as f64 / rounds as f64
    );
    let mut i = 0;
    c.bench_function(
        "one hot and one flood query (replay cache under a flood)",
        |b| {
            b.iter(|| {
                i = (i + 1) % HOT;
                black_box(t.answer(&hot[i]));
                black_box(t.answer(&flood()));
            })
        },
    );
}

criterion_group!(flood, benches);
criterion_main!(flood);
