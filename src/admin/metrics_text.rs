//! `GET /metrics`: every counter of the running server in Prometheus text format.

use std::{collections::BTreeMap, fmt::Write as _, sync::atomic::Ordering::Relaxed};

use crate::{
    metrics::{REASONS, help},
    server::Server,
    state,
    vpnlog::ingest::RegionLive,
};

pub fn render(server: &Server) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let shared = &server.shared;
    let data = shared.responder.data.load();
    let view = shared.responder.view.load();
    let drains = shared.drains.load();
    let now = state::now();
    shared.responder.queries.render(&mut out);

    help(
        &mut out,
        "mgnt_geo_answers_total",
        "counter",
        "Geo answers by region and reason.",
    );
    for (i, region) in data.config.regions.iter().enumerate() {
        for reason in REASONS {
            let reason_name = serde_json::to_value(reason).unwrap_or_default();
            let _ = writeln!(
                out,
                "mgnt_geo_answers_total{{region=\"{}\",reason={}}} {}",
                region.name,
                reason_name,
                data.counters[i].get(reason)
            );
        }
    }
    help(
        &mut out,
        "mgnt_region_serving",
        "gauge",
        "1 when the region may answer (healthy and not drained).",
    );
    help(
        &mut out,
        "mgnt_region_drained",
        "gauge",
        "1 when an operator drained the region.",
    );
    for (i, region) in data.config.regions.iter().enumerate() {
        let serving = view.states.get(i).is_none_or(|s| s.serving);
        let drained = drains.is_drained(&region.name, now);
        let _ = writeln!(
            out,
            "mgnt_region_serving{{region=\"{}\"}} {}",
            region.name,
            u8::from(serving)
        );
        let _ = writeln!(
            out,
            "mgnt_region_drained{{region=\"{}\"}} {}",
            region.name,
            u8::from(drained)
        );
    }

    let health = &server.health;
    help(
        &mut out,
        "mgnt_probes_total",
        "counter",
        "Probe results by region, kind and result.",
    );
    let probes = health.probes.lock().unwrap_or_else(|p| p.into_inner());
    for ((region, kind), stats) in probes.iter() {
        let kind = format!("{kind:?}").to_lowercase();
        let _ = writeln!(
            out,
            "mgnt_probes_total{{region=\"{region}\",kind=\"{kind}\",result=\"ok\"}} {}",
            stats.ok
        );
        let _ = writeln!(
            out,
            "mgnt_probes_total{{region=\"{region}\",kind=\"{kind}\",result=\"failed\"}} {}",
            stats.failed
        );
    }
    help(
        &mut out,
        "mgnt_probe_rtt_ms",
        "histogram",
        "Round-trip time of passing probes, milliseconds.",
    );
    for ((region, kind), stats) in probes.iter() {
        let kind = format!("{kind:?}").to_lowercase();
        stats.rtt_ms.render(
            &mut out,
            "mgnt_probe_rtt_ms",
            &format!("region=\"{region}\",kind=\"{kind}\""),
        );
    }
    drop(probes);

    let counters = [
        (
            "mgnt_health_transitions_total",
            "Region health state changes.",
            health.transitions.load(Relaxed),
        ),
        (
            "mgnt_fail_open_total",
            "Times a geo name had no serving region and failed open.",
            shared.fail_open_events.load(Relaxed),
        ),
        (
            "mgnt_reloads_total",
            "Successful reloads.",
            server.reloads.load(Relaxed),
        ),
        (
            "mgnt_reload_failures_total",
            "Reloads refused; the previous data kept serving.",
            server.reload_failures.load(Relaxed),
        ),
    ];
    for (name, text, value) in counters {
        help(&mut out, name, "counter", text);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(v) = &server.vpnlog {
        let ingest = &v.ingest;
        help(
            &mut out,
            "mgnt_vpnlog_lines_total",
            "counter",
            "Log lines received, by parse result.",
        );
        let parsed = ingest.parsed.load(Relaxed);
        let unparsed = ingest.unparsed.load(Relaxed);
        let _ = writeln!(out, "mgnt_vpnlog_lines_total{{result=\"parsed\"}} {parsed}");
        let _ = writeln!(
            out,
            "mgnt_vpnlog_lines_total{{result=\"unparsed\"}} {unparsed}"
        );
        help(
            &mut out,
            "mgnt_vpnlog_records_written_total",
            "counter",
            "Records and raw lines stored.",
        );
        let _ = writeln!(
            out,
            "mgnt_vpnlog_records_written_total {}",
            ingest.written.load(Relaxed)
        );
        help(
            &mut out,
            "mgnt_vpnlog_records_queued_total",
            "counter",
            "Records and raw lines handed to the writer (stored once written reaches it).",
        );
        let _ = writeln!(
            out,
            "mgnt_vpnlog_records_queued_total {}",
            ingest.queued.load(Relaxed)
        );
        vpnlog_regions(&mut out, &ingest.regions());
    }
    help(
        &mut out,
        "mgnt_geoip_build_epoch_seconds",
        "gauge",
        "Build time of the loaded GeoIP database.",
    );
    let _ = writeln!(
        out,
        "mgnt_geoip_build_epoch_seconds {}",
        data.geodb.build_epoch()
    );
    out
}

/// Per-region figures of log ingestion (`region=""`: servers not configured).
fn vpnlog_regions(out: &mut String, regions: &BTreeMap<String, RegionLive>) {
    type Get = fn(&RegionLive) -> u64;
    let gauges: [(&str, &str, &str, Get); 5] = [
        (
            "mgnt_vpnlog_connected_tunnels",
            "gauge",
            "Tunnels with an open session, by region.",
            |l| l.connected_tunnels,
        ),
        (
            "mgnt_vpnlog_auth_failures_total",
            "counter",
            "Failed authentications seen, by region.",
            |l| l.auth_failures,
        ),
        (
            "mgnt_vpnlog_bytes_in_total",
            "counter",
            "Bytes received from routers, by region.",
            |l| l.bytes_in,
        ),
        (
            "mgnt_vpnlog_bytes_out_total",
            "counter",
            "Bytes sent to routers, by region.",
            |l| l.bytes_out,
        ),
        (
            "mgnt_vpnlog_unparsed_lines_total",
            "counter",
            "Log lines not understood (kept raw), by region.",
            |l| l.unparsed_lines,
        ),
    ];
    for (name, kind, text, get) in gauges {
        help(out, name, kind, text);
        for (region, live) in regions {
            let _ = writeln!(out, "{name}{{region=\"{region}\"}} {}", get(live));
        }
    }
}
