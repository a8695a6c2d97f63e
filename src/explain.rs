//! Why a client gets the answer it gets: the report behind `mgnt lookup`.

use std::{fmt::Write as _, net::IpAddr};

use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    dns::Data,
    geo::Location,
    health::{HealthTable, machine::Status},
    route::{Reason, RegionState},
    state::RegionView,
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
    pub fn of(table: &HealthTable, region: usize) -> Self {
        let h = &table.regions[region];
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
            let _ = write!(s, ", probed at {at}");
        }
        if let Some(rtt) = self.rtt_ms {
            let _ = write!(s, ", rtt {rtt:.1} ms");
        }
        s
    }
}

/// Explains every geo name for `client`; a prefix is treated as an ECS source prefix.
pub fn explain(data: &Data, health: &HealthTable, view: &RegionView, client: IpNet) -> Explanation {
    let ip: IpAddr = client.addr();
    let mut names = Vec::with_capacity(data.geo.len());
    let mut location = None;
    for table in &data.geo {
        let choice = data.choose(table, ip, &view.states);
        let regions = choice
            .ranking
            .iter()
            .map(|r| {
                let region = &data.config.regions[r.region];
                RegionLine {
                    name: region.name.clone(),
                    host: region.host.to_string(),
                    distance_km: r.distance_km.map(|d| d.round()),
                    overridden: r.overridden,
                    state: view.states.get(r.region).copied().unwrap_or_default(),
                    health: HealthLine::of(health, r.region),
                }
            })
            .collect();
        let mut answer = Vec::new();
        for qtype in [RecordType::A, RecordType::AAAA] {
            let (cname, records) = table.answer(choice.decision.region, qtype);
            if answer.is_empty() {
                answer.extend(cname.map(ToString::to_string));
            }
            answer.extend(records.iter().map(ToString::to_string));
        }
        names.push(NameExplanation {
            name: table.spec.name.to_string(),
            regions,
            region: data.config.regions[choice.decision.region].name.clone(),
            reason: choice.decision.reason,
            ecs_scope: choice.scope.min(client.prefix_len()),
            answer,
        });
        location.get_or_insert(Location::from(choice.location));
    }
    Explanation {
        client,
        location: location.unwrap_or_else(|| data.geodb.locate(ip)),
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
                    if r.state.serving {
                        "serving"
                    } else {
                        "not serving"
                    },
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
