//! Site creations through the admin API: `CONCURRENCY` clients each create
//! sites (`POST /v1/sites`) until `SITES` are acknowledged; prints one JSON
//! line with creations per second and the latency percentiles.
//!
//! `sitesload API_ADDR TOKEN_FILE SITES [CONCURRENCY]`

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, api, token_file, sites, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sitesload API_ADDR TOKEN_FILE SITES [CONCURRENCY]");
        std::process::exit(2);
    };
    let total: u64 = sites.parse().expect("SITES");
    let clients: u64 = rest.first().and_then(|c| c.parse().ok()).unwrap_or(8);
    let token = std::fs::read_to_string(token_file).expect("token file");
    let auth = format!("Bearer {}", token.trim());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (api, auth, next) = (api.clone(), auth.clone(), next.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut took = Vec::new();
                while next.fetch_add(1, Relaxed) < total {
                    let t = Instant::now();
                    let resp = agent
                        .post(&format!("http://{api}/v1/sites"))
                        .header("Authorization", &auth)
                        .send_empty()
                        .expect("POST /v1/sites");
                    assert_eq!(resp.status().as_u16(), 201, "a site was not created");
                    took.push(t.elapsed());
                }
                took
            })
        })
        .collect();
    let mut took: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = start.elapsed();
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "{{\"sites\":{total},\"clients\":{clients},\"seconds\":{:.3},\"per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    );
}
