//! Why a client gets the answer it gets: the report behind `mgnt lookup`.

use std::fmt::Write as _;

use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    clock::rfc3339,
    geo::Location,
    health::{RegionHealth, machine::Status},
    locate::Client,
    route::{self, Reason, RegionState},
    state::{DrainRecord, Snapshot},
};

/// The whole explanation for one client address (or ECS prefix).
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub client: IpNet,
    pub location: Location,
    pub names: Vec<NameExplanation>,
}

#[derive(Debug, Serialize)]
pub struct NameExplanation {
    pub name: String,
    pub regions: Vec<RegionLine>,
    pub region: String,
    pub reason: Reason,
    /// Scope an ECS answer would carry for this client.
    pub ecs_scope: u8,
    pub answer: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RegionLine {
    pub name: String,
    pub host: String,
    pub distance_km: Option<f64>,
    pub overridden: bool,
    pub state: RegionState,
    pub health: HealthLine,
    /// The operator's drain that keeps it out of the answers, if any.
    pub drain: Option<DrainRecord>,
}

/// A region's health as far as this process knows it.
#[derive(Debug, Serialize)]
pub struct HealthLine {
    pub probed: bool,
    pub status: Status,
    pub confirmed: bool,
    /// Seconds since 1970 of the last probe round, and its best RTT.
    pub last_probe: Option<u64>,
    pub rtt_ms: Option<f64>,
}

impl HealthLine {
    pub fn of(h: &RegionHealth) -> Self {
        let last = h.last.as_ref();
        Self {
            probed: h.probed,
            status: h.machine.status,
            confirmed: h.machine.confirmed,
            last_probe: last.map(|r| r.at),
            rtt_ms: last.and_then(|r| {
                r.results
                    .iter()
                    .filter_map(|t| t.rtt_ms)
                    .min_by(f64::total_cmp)
            }),
        }
    }

    fn to_text(&self) -> String {
        if !self.probed {
            return "unprobed".into();
        }
        let mut s = format!("{:?}", self.status).to_lowercase();
        if !self.confirmed {
            s.push_str(" (unconfirmed)");
        }
        if let Some(at) = self.last_probe {
            let _ = write!(s, ", probed at {}", rfc3339(at));
        }
        if let Some(rtt) = self.rtt_ms {
            let _ = write!(s, ", rtt {rtt:.1} ms");
        }
        s
    }
}

/// A drain in words: the reason (quoted, so no control character reaches
/// the terminal), who drained it and until when.
pub fn drain_text(d: &DrainRecord) -> String {
    match d.until {
        Some(until) => format!("{:?} by {} until {}", d.reason, d.by, rfc3339(until)),
        None => format!("{:?} by {}, no end", d.reason, d.by),
    }
}

impl RegionLine {
    /// Serving, or why not: drained (by whom, why, until when) or down.
    fn serving_text(&self) -> String {
        match (&self.drain, self.state.serving) {
            (Some(d), _) => format!("not serving: drained {}", drain_text(d)),
            (None, true) => "serving".into(),
            (None, false) => "not serving: down".into(),
        }
    }
}

/// Explains every geo name for `client` from one snapshot; a prefix is
/// treated as an ECS source prefix.
pub fn explain(snapshot: &Snapshot, client: IpNet) -> Explanation {
    let data = &snapshot.data;
    let at = data
        .maps
        .locate(Client::prefix(client.addr(), client.prefix_len()));
    let located = data.maps.db().locate_raw(client.addr());
    let mut names = Vec::with_capacity(data.geo.len());
    for (geo, table) in data.geo.iter().enumerate() {
        let decision = route::decide(data.maps.order(at.orders, geo), &snapshot.view);
        let regions = data
            .maps
            .explain(geo, &at, &located)
            .iter()
            .map(|r| {
                let region = &data.config.regions[r.region];
                RegionLine {
                    name: region.name.clone(),
                    host: region.host.to_string(),
                    distance_km: r.distance_km.map(|d| d.round()),
                    overridden: r.overridden,
                    state: RegionState {
                        serving: snapshot.view.serving(r.region),
                    },
                    health: HealthLine::of(&snapshot.regions[r.region].health),
                    drain: snapshot.regions[r.region].drain.clone(),
                }
            })
            .collect();
        let mut answer = Vec::new();
        for qtype in [RecordType::A, RecordType::AAAA] {
            let (cname, records) = table.answer(decision.region, qtype);
            if answer.is_empty() {
                answer.extend(cname.map(ToString::to_string));
            }
            answer.extend(records.iter().map(ToString::to_string));
        }
        names.push(NameExplanation {
            name: table.spec.name.to_string(),
            regions,
            region: data.config.regions[decision.region].name.clone(),
            reason: decision.reason,
            ecs_scope: at.scope,
            answer,
        });
    }
    Explanation {
        client,
        location: Location::from(located),
        names,
    }
}

impl Explanation {
    /// The human-readable form printed by `mgnt lookup`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let loc = &self.location;
        let _ = writeln!(out, "client    {}", self.client);
        let _ = writeln!(
            out,
            "location  country {}, coordinates {} ({:?}), GeoIP network {}",
            loc.country.as_deref().unwrap_or("unknown"),
            loc.coords
                .map_or("unknown".into(), |c| format!("{:.2}, {:.2}", c.lat, c.lon)),
            loc.source,
            loc.network,
        );
        for n in &self.names {
            let _ = writeln!(out, "\n{}", n.name);
            for r in &n.regions {
                let _ = writeln!(
                    out,
                    "  {:<12} {:<24} {:>9} {}{} [{}]",
                    r.name,
                    r.host,
                    r.distance_km.map_or("-".into(), |d| format!("{d:.0} km")),
                    r.serving_text(),
                    if r.overridden { ", override" } else { "" },
                    r.health.to_text(),
                );
            }
            let _ = writeln!(
                out,
                "  => {} ({:?}), ECS scope /{}",
                n.region, n.reason, n.ecs_scope
            );
            for a in &n.answer {
                let _ = writeln!(out, "     {a}");
            }
        }
        out
    }
}
