//! `GET /metrics`: every counter of the running server in Prometheus text format.

use std::{collections::BTreeMap, fmt::Write as _, sync::atomic::Ordering::Relaxed};

use super::Context;
use crate::{
    metrics::{Family, REASONS, escape, families_out, help},
    state::RegionStatus,
    vpnlog::{ingest::RegionLive, watch::Watchers},
};

pub fn render(cx: &Context) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let snapshot = cx.state.snapshot();
    let data = &snapshot.data;
    help(
        &mut out,
        "mgnt_node_info",
        "gauge",
        "This node's [node] name, as DNS tells it (NSID, CHAOS id.server).",
    );
    let _ = writeln!(
        out,
        "mgnt_node_info{{node=\"{}\"}} 1",
        escape(&data.config.node.name)
    );
    fleet(&mut out, cx, data.config_hash.as_str());
    cx.responder.queries.render(&mut out);
    dns_tcp(&mut out, &cx.responder.tcp);
    dns_guard(&mut out, &cx.responder.guard.counters);

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
                escape(&region.name),
                reason_name,
                data.counters[i].get(reason)
            );
        }
    }
    region_families(&mut out, &snapshot.regions);

    let counters = cx.state.counters();
    help(
        &mut out,
        "mgnt_probes_total",
        "counter",
        "Probe results by region, kind and result.",
    );
    let probes = counters.probes.lock().unwrap_or_else(|p| p.into_inner());
    for ((region, kind), stats) in probes.iter() {
        let (region, kind) = (escape(region), format!("{kind:?}").to_lowercase());
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
        "mgnt_probe_rtt_seconds",
        "histogram",
        "Round-trip time of passing probes, seconds.",
    );
    for ((region, kind), stats) in probes.iter() {
        let (region, kind) = (escape(region), format!("{kind:?}").to_lowercase());
        stats.rtt.render(
            &mut out,
            "mgnt_probe_rtt_seconds",
            &format!("region=\"{region}\",kind=\"{kind}\""),
        );
    }
    drop(probes);

    let totals = [
        (
            "mgnt_health_transitions_total",
            "Region health state changes.",
            counters.transitions.load(Relaxed),
        ),
        (
            "mgnt_fail_open_total",
            "Times a geo name had no serving region and failed open.",
            counters.fail_open_events.load(Relaxed),
        ),
        (
            "mgnt_reloads_total",
            "Successful reloads.",
            counters.reloads.load(Relaxed),
        ),
        (
            "mgnt_reload_failures_total",
            "Reloads refused; the previous data kept serving.",
            counters.reload_failures.load(Relaxed),
        ),
        (
            "mgnt_state_publishes_total",
            "Snapshots published by the state owner.",
            counters.publishes.load(Relaxed),
        ),
        (
            "mgnt_state_persist_failures_total",
            "Batches of region state that could not be persisted.",
            counters.persist_failures.load(Relaxed),
        ),
    ];
    for (name, text, value) in totals {
        help(&mut out, name, "counter", text);
        let _ = writeln!(out, "{name} {value}");
    }
    let gauges = [
        (
            "mgnt_state_generation",
            "The loaded configuration's generation (1 at start, one more per reload).",
            counters.generation.load(Relaxed),
        ),
        (
            "mgnt_state_queue_depth",
            "Commands and probe reports waiting for the state owner.",
            cx.state.queue_depth() as u64,
        ),
    ];
    for (name, text, value) in gauges {
        help(&mut out, name, "gauge", text);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(reach) = &cx.store {
        help(
            &mut out,
            "mgnt_store_up",
            "gauge",
            "Whether [store]'s database answers (0: DNS answers from the state last known, drains are refused).",
        );
        let up = u8::from(reach.lost_since().is_none());
        let _ = writeln!(out, "mgnt_store_up {up}");
    }
    if let Some(r) = &cx.routers {
        router_endpoint(&mut out, r);
    }
    if let Some(hub) = &cx.live {
        live(&mut out, hub.metrics());
        relays(&mut out, &cx.relays.metrics);
    }
    api_edge(&mut out, &cx.api_edge);
    if let Some(v) = &cx.vpnlog {
        let ingest = &v.ingest;
        help(
            &mut out,
            "mgnt_vpnlog_lines_total",
            "counter",
            "Log lines received, by result (unknown_sender: from no configured server's addresses, dropped; queue_full: UDP lines dropped while the writer's queue was full).",
        );
        let parsed = ingest.parsed.load(Relaxed);
        let unparsed = ingest.unparsed.load(Relaxed);
        let unknown = ingest.unknown_sender.load(Relaxed);
        let _ = writeln!(out, "mgnt_vpnlog_lines_total{{result=\"parsed\"}} {parsed}");
        let _ = writeln!(
            out,
            "mgnt_vpnlog_lines_total{{result=\"unparsed\"}} {unparsed}"
        );
        let _ = writeln!(
            out,
            "mgnt_vpnlog_lines_total{{result=\"unknown_sender\"}} {unknown}"
        );
        let _ = writeln!(
            out,
            "mgnt_vpnlog_lines_total{{result=\"queue_full\"}} {}",
            ingest.dropped.load(Relaxed)
        );
        if let Some(drops) = ingest.udp_kernel_drops() {
            help(
                &mut out,
                "mgnt_vpnlog_udp_kernel_drops_total",
                "counter",
                "Syslog datagrams the kernel dropped because the socket's receive buffer (udp_receive_buffer) was full.",
            );
            let _ = writeln!(out, "mgnt_vpnlog_udp_kernel_drops_total {drops}");
        }
        help(
            &mut out,
            "mgnt_vpnlog_queue_items",
            "gauge",
            "Records waiting for the writer.",
        );
        let _ = writeln!(out, "mgnt_vpnlog_queue_items {}", ingest.pending());
        help(
            &mut out,
            "mgnt_vpnlog_queue_capacity",
            "gauge",
            "queue_capacity: beyond it UDP lines are dropped and TCP senders wait.",
        );
        let _ = writeln!(out, "mgnt_vpnlog_queue_capacity {}", ingest.capacity());
        help(
            &mut out,
            "mgnt_vpnlog_tcp_closed_total",
            "counter",
            "Syslog TCP connections closed by us, by reason (cap: over tcp_max_connections or tcp_max_per_source; idle: silent for tcp_idle_timeout).",
        );
        for (reason, n) in [("cap", &ingest.tcp_refused), ("idle", &ingest.tcp_idle)] {
            let _ = writeln!(
                out,
                "mgnt_vpnlog_tcp_closed_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
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
        vpnlog_watchers(&mut out, &v.watchers);
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
        data.maps.db().build_epoch()
    );
    out
}

/// Each region's state, one family after another: serving and drained for
/// every region, the nodes' votes for probed ones.
fn region_families(out: &mut String, regions: &[RegionStatus]) {
    type Get = fn(&RegionStatus) -> Option<u32>;
    let families: [(&str, &str, Get); 5] = [
        (
            "mgnt_region_serving",
            "1 when the region may answer (healthy by the nodes' votes and not drained).",
            |s| Some(u32::from(s.serving)),
        ),
        (
            "mgnt_region_drained",
            "1 when an operator drained the region.",
            |s| Some(u32::from(s.drain.is_some())),
        ),
        (
            "mgnt_region_down_votes",
            "Nodes whose vote counts and says the probed region is down, this one included.",
            |s| s.votes.as_ref().map(|v| v.down),
        ),
        (
            "mgnt_region_votes",
            "Nodes whose vote on the probed region counts: this one and those that reported within two health intervals.",
            |s| s.votes.as_ref().map(|v| v.counted),
        ),
        (
            "mgnt_region_quorum",
            "Down votes that take the probed region out of the answers ([health] quorum or a majority of those counted).",
            |s| s.votes.as_ref().map(|v| v.quorum),
        ),
    ];
    for (name, text, get) in families {
        help(out, name, "gauge", text);
        for status in regions {
            if let Some(value) = get(status) {
                let region = escape(&status.name);
                let _ = writeln!(out, "{name}{{region=\"{region}\"}} {value}");
            }
        }
    }
}

/// DNS TCP connections closed by us, by reason.
fn dns_tcp(out: &mut String, tcp: &crate::dns::answer::TcpCounters) {
    help(
        out,
        "mgnt_dns_tcp_closed_total",
        "counter",
        "DNS TCP connections closed by us, by reason (cap: over tcp_max_connections; per_source: over tcp_max_per_source; io_timeout: a query or reply not through within tcp_io_timeout).",
    );
    for (reason, n) in [
        ("cap", &tcp.cap),
        ("per_source", &tcp.per_source),
        ("io_timeout", &tcp.io_timeout),
    ] {
        let _ = writeln!(
            out,
            "mgnt_dns_tcp_closed_total{{reason=\"{reason}\"}} {}",
            n.load(Relaxed)
        );
    }
}

/// UDP answers rate limited or truncated for want of a cookie.
fn dns_guard(out: &mut String, c: &crate::dns::guard::GuardCounters) {
    families_out(
        out,
        [(
            "mgnt_dns_rrl_answers_total",
            "UDP answers over the [dns.rrl] rate, by what was sent instead (dropped: nothing; slipped: truncated; badcookie: BADCOOKIE with a fresh cookie).",
            "action",
            vec![
                ("dropped", &c.rrl_dropped),
                ("slipped", &c.rrl_slipped),
                ("badcookie", &c.rrl_badcookie),
            ],
        )],
    );
    crate::metrics::single(
        out,
        "mgnt_dns_truncated_without_cookie_total",
        "counter",
        "UDP answers over truncate_without_cookie sent truncated to queries without a valid server cookie.",
        c.truncated_without_cookie.load(Relaxed),
    );
}

/// The config hash, and with `[store]` what this node found of the others.
fn fleet(out: &mut String, cx: &Context, hash: &str) {
    help(
        out,
        "mgnt_config_info",
        "gauge",
        "The config hash (shared configuration, zones, GeoIP data): equal on nodes that answer alike.",
    );
    let _ = writeln!(out, "mgnt_config_info{{hash=\"{}\"}} 1", escape(hash));
    if cx.fleet.db.is_none() {
        return;
    }
    let view = &cx.fleet.view;
    let gauges = [
        (
            "mgnt_node_name_held",
            "1 while this node holds its [node] name in the database (0: it lost the connection, or another node took the name).",
            u64::from(cx.fleet.holds_name()),
        ),
        (
            "mgnt_nodes_live",
            "Live nodes on the database, this one included, as last read.",
            view.live.load(Relaxed),
        ),
        (
            "mgnt_nodes_config_differing",
            "Other live nodes whose config hash differs from this node's.",
            view.differing.load(Relaxed),
        ),
    ];
    for (name, text, value) in gauges {
        help(out, name, "gauge", text);
        let _ = writeln!(out, "{name} {value}");
    }
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
            "mgnt_vpnlog_received_bytes_total",
            "counter",
            "Bytes received from routers, by region.",
            |l| l.bytes_in,
        ),
        (
            "mgnt_vpnlog_sent_bytes_total",
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
            let region = escape(region);
            let _ = writeln!(out, "{name}{{region=\"{region}\"}} {}", get(live));
        }
    }
}

/// The router endpoint's requests, results and connections, one family each.
fn router_endpoint(out: &mut String, r: &crate::routers::Routers) {
    let (c, e) = (&r.counters, &r.edge);
    let families: [Family; 4] = [
        (
            "mgnt_router_polls_total",
            "Job polls on the router endpoint, by result.",
            "result",
            vec![
                ("job", &c.jobs_served),
                ("empty", &c.polls_empty),
                ("unauthorized", &c.unauthorized),
                ("rate_limited", &c.rate_limited),
                ("bad_request", &c.bad_requests),
            ],
        ),
        (
            "mgnt_router_bootstraps_total",
            "Bootstrap scripts fetched with a one-time token, by result.",
            "result",
            vec![
                ("served", &c.bootstraps),
                ("refused", &c.bootstraps_refused),
            ],
        ),
        (
            "mgnt_router_results_total",
            "Job results reported by routers, by outcome.",
            "status",
            vec![
                ("applied", &c.results_applied),
                ("failed", &c.results_failed),
                ("refused", &c.results_refused),
            ],
        ),
        (
            "mgnt_router_connections_total",
            "Connections to the router endpoint, by what became of them.",
            "result",
            e.by_result(),
        ),
    ];
    families_out(out, families);
}

/// The live view: routers with an API connection, viewers, streams, and
/// what became of samples and connections.
fn live(out: &mut String, m: &crate::live::hub::Metrics) {
    let gauges: [(&str, &str, &std::sync::atomic::AtomicI64); 3] = [
        (
            "mgnt_live_routers",
            "Routers whose API connection the live view holds (or lingers on).",
            &m.routers,
        ),
        (
            "mgnt_live_viewers",
            "Live-view viewers connected.",
            &m.viewers,
        ),
        (
            "mgnt_live_streams",
            "Streams running on routers (one per interface set, one per log).",
            &m.streams,
        ),
    ];
    for (name, text, value) in gauges {
        help(out, name, "gauge", text);
        let _ = writeln!(out, "{name} {}", value.load(Relaxed));
    }
    let families: [Family; 2] = [
        (
            "mgnt_live_connects_total",
            "Router API connections the live view opened, by result.",
            "result",
            vec![("tried", &m.connects), ("failed", &m.connect_failures)],
        ),
        (
            "mgnt_live_dropped_total",
            "What the live view dropped, by why: samples a full viewer queue skipped, viewers over max_viewers_per_router.",
            "reason",
            vec![
                ("sample_skipped", &m.skipped),
                ("viewer_refused", &m.refused_viewers),
            ],
        ),
    ];
    families_out(out, families);
}

/// Router connections asked of agents (the relay).
fn relays(out: &mut String, m: &crate::live::relay::Metrics) {
    families_out(
        out,
        [(
            "mgnt_live_relays_total",
            "Router API connections asked of the agent holding the tunnel, by result (refused: too many waiting, or the agent's channel full).",
            "result",
            vec![
                ("opened", &m.opened),
                ("failed", &m.failed),
                ("refused", &m.refused),
            ],
        )],
    );
}

/// The admin API's connections.
fn api_edge(out: &mut String, e: &crate::edge::EdgeCounters) {
    families_out(
        out,
        [(
            "mgnt_api_connections_total",
            "Connections to the admin API, by what became of them.",
            "result",
            e.by_result(),
        )],
    );
}

/// The management watchers' sessions, by server and by how they ended.
fn vpnlog_watchers(out: &mut String, watchers: &Watchers) {
    help(
        out,
        "mgnt_vpnlog_management_reconnects_total",
        "counter",
        "Management-interface connections of the log watcher ended and made again, by server and reason (closed; silent: nothing heard for max(3 poll intervals, 45 s); error).",
    );
    for (host, reconnects) in watchers.reconnects() {
        let host = escape(host);
        for (reason, n) in reconnects.by_reason() {
            let _ = writeln!(
                out,
                "mgnt_vpnlog_management_reconnects_total{{host=\"{host}\",reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{RegionHealth, quorum::Tally};

    #[test]
    fn region_families_are_whole_and_votes_only_for_probed_regions() {
        let status = |name: &str, votes: Option<Tally>| RegionStatus {
            name: name.into(),
            serving: true,
            health: RegionHealth::fresh(votes.is_some()),
            votes,
            drain: None,
        };
        let tally = Tally {
            down: 1,
            counted: 3,
            quorum: 2,
            down_nodes: vec!["b".into()],
        };
        let regions = [status("europe1", Some(tally)), status("us1", None)];
        let mut out = String::new();
        region_families(&mut out, &regions);
        crate::metrics::check_exposition(&out).unwrap();
        for line in [
            "mgnt_region_serving{region=\"us1\"} 1",
            "mgnt_region_down_votes{region=\"europe1\"} 1",
            "mgnt_region_votes{region=\"europe1\"} 3",
            "mgnt_region_quorum{region=\"europe1\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in {out}");
        }
        assert!(!out.contains("mgnt_region_votes{region=\"us1\"}"), "{out}");
    }
}
