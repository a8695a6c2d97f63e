//! The records each geo name answers with, rendered once per region at load.
//!
//! Checking the config against the zones also happens here: a region host
//! without addresses or a geo name that already owns zone data would otherwise
//! only show up as wrong answers.

use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{AnswerMode, Config, ConfigError, GeoName};

use super::{fast::Templates, zones::Zones};

/// A geo name ready to answer.
pub struct GeoTable {
    pub name: LowerName,
    /// `name` in lower-case wire format, for the fast path's matching.
    pub name_wire: Vec<u8>,
    /// Pre-rendered A/AAAA answers per region (config order), for the fast path.
    pub templates: Vec<Option<Templates>>,
    pub spec: GeoName,
    /// For NODATA answers (RFC 2308), from the zone holding the name.
    pub negative_soa: Record,
    /// Indexed by region (config order); `None` for regions this name does not use.
    by_region: Vec<Option<RegionRecords>>,
}

/// What one region contributes to an answer.
struct RegionRecords {
    /// `name CNAME host`, in `cname` mode.
    cname: Option<Record>,
    /// The host's records (cname mode) or the name's own A/AAAA (address mode), by type.
    by_type: HashMap<RecordType, Vec<Record>>,
}

impl GeoTable {
    /// Answer records for `qtype` from `region`; empty means NODATA after any CNAME.
    pub fn answer(&self, region: usize, qtype: RecordType) -> (Option<&Record>, &[Record]) {
        let Some(Some(r)) = self.by_region.get(region) else {
            return (None, &[]);
        };
        let data = match qtype {
            // RFC 8482: a minimal answer to ANY; the CNAME alone in cname mode.
            RecordType::ANY if r.cname.is_some() => &[][..],
            RecordType::ANY => r.by_type.get(&RecordType::A).map_or(&[][..], Vec::as_slice),
            RecordType::CNAME => &[][..],
            t => r.by_type.get(&t).map_or(&[][..], Vec::as_slice),
        };
        (r.cname.as_ref(), data)
    }

    /// The authority section: the SOA for NODATA (RFC 2308 §2.2), unless the
    /// CNAME itself answers a CNAME or ANY query.
    pub fn authority(
        &self,
        qtype: RecordType,
        cname: Option<&Record>,
        data: &[Record],
    ) -> &[Record] {
        let answered = cname.is_some() && matches!(qtype, RecordType::CNAME | RecordType::ANY);
        if data.is_empty() && !answered {
            std::slice::from_ref(&self.negative_soa)
        } else {
            &[]
        }
    }

    fn render_templates(&mut self) {
        self.templates = (0..self.by_region.len())
            .map(|region| {
                self.by_region[region].as_ref()?;
                Some(Templates::render(&self.name_wire, |qtype| {
                    let (cname, data) = self.answer(region, qtype);
                    let answers = cname.into_iter().chain(data).cloned().collect();
                    (answers, self.authority(qtype, cname, data).to_vec())
                }))
            })
            .collect();
    }
}

/// Builds one [`GeoTable`] per configured geo name, checking the config against the zones.
pub fn build(config: &Config, zones: &Zones) -> Result<Vec<GeoTable>, ConfigError> {
    let err = |key: String, reason: String| ConfigError::Invalid {
        file: config.file.clone(),
        key,
        reason,
    };
    for (i, region) in config.regions.iter().enumerate() {
        if host_addresses(zones, &region.host).next().is_none() {
            let key = format!("regions.{}.host", config.regions[i].name);
            let reason = format!("{} has no A or AAAA record in the zones", region.host);
            return Err(err(key, reason));
        }
    }
    let mut tables = Vec::with_capacity(config.geo.len());
    for (i, geo) in config.geo.iter().enumerate() {
        let key = format!("geo[{i}].name");
        let zone = zones.zone_of(&geo.name).ok_or_else(|| {
            err(
                key.clone(),
                format!("{} is inside no loaded zone", geo.name),
            )
        })?;
        if let Some(r) = zones.records_at(&geo.name).first() {
            let reason = format!(
                "{} collides with a {} record in {}",
                geo.name,
                r.record_type(),
                zone.file.display()
            );
            return Err(err(key, reason));
        }
        let mut by_region: Vec<Option<RegionRecords>> =
            (0..config.regions.len()).map(|_| None).collect();
        for &r in &geo.regions {
            by_region[r] = Some(region_records(geo, &config.regions[r].host, zones));
        }
        let mut table = GeoTable {
            name: LowerName::new(&geo.name),
            name_wire: GeoTable::wire_name(&geo.name),
            templates: Vec::new(),
            spec: geo.clone(),
            negative_soa: zone.negative_soa.clone(),
            by_region,
        };
        table.render_templates();
        tables.push(table);
    }
    Ok(tables)
}

fn host_addresses<'a>(zones: &'a Zones, host: &Name) -> impl Iterator<Item = &'a Record> {
    zones
        .records_at(host)
        .iter()
        .filter(|r| matches!(r.data, RData::A(_) | RData::AAAA(_)))
}

fn region_records(geo: &GeoName, host: &Name, zones: &Zones) -> RegionRecords {
    let mut by_type: HashMap<RecordType, Vec<Record>> = HashMap::new();
    match geo.answer {
        AnswerMode::Cname => {
            for r in zones.records_at(host) {
                by_type.entry(r.record_type()).or_default().push(r.clone());
            }
            RegionRecords {
                cname: Some(Record::from_rdata(
                    geo.name.clone(),
                    geo.ttl,
                    RData::CNAME(hickory_proto::rr::rdata::CNAME(host.clone())),
                )),
                by_type,
            }
        }
        AnswerMode::Address => {
            for r in host_addresses(zones, host) {
                let own = Record::from_rdata(geo.name.clone(), geo.ttl, r.data.clone());
                by_type.entry(r.record_type()).or_default().push(own);
            }
            RegionRecords {
                cname: None,
                by_type,
            }
        }
    }
}
