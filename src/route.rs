//! Which region answers: a pure decision over a location and the region states.
//!
//! Following gdnsd's split, this module knows nothing about packets or databases.
//! It ranks a geo name's regions by great-circle distance from the client
//! (operator overrides first), then takes the first region that is serving.
//! When none is serving it fails open to the first of the ranking: an answer
//! that may be down beats SERVFAIL, which would strand every router.

use serde::Serialize;

/// Mean Earth radius (IUGG), kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on Earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coord {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle distance in kilometres (haversine formula).
///
/// ```
/// use mgnt::route::{Coord, distance_km};
/// let brussels = Coord { lat: 50.85, lon: 4.35 };
/// let frankfurt = Coord { lat: 50.11, lon: 8.68 };
/// let km = distance_km(brussels, frankfurt);
/// assert!((310.0..330.0).contains(&km), "{km}");
/// ```
pub fn distance_km(a: Coord, b: Coord) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// What a region may do right now; health and drain feed this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegionState {
    pub serving: bool,
}

impl Default for RegionState {
    fn default() -> Self {
        Self { serving: true }
    }
}

/// Why a region was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// An operator override named this region and it is serving.
    Override,
    /// The nearest region, serving.
    Nearest,
    /// A nearer (or overridden) region is not serving; this is the next one.
    Failover,
    /// The client could not be located; the configured order was used.
    NoLocation,
    /// No region is serving; the first of the ranking is answered anyway.
    FailOpen,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    /// Index into the config's region list.
    pub region: usize,
    pub reason: Reason,
}

/// One candidate of a ranking, best first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ranked {
    pub region: usize,
    /// `None` when the client has no coordinates.
    pub distance_km: Option<f64>,
    /// Placed first by an operator override.
    pub overridden: bool,
}

/// Most regions one geo name may list; rankings live on the stack.
pub const MAX_REGIONS: usize = 16;

/// Candidates best first, without allocating (it is built for every query).
#[derive(Debug, Clone, Copy)]
pub struct Ranking {
    items: [Ranked; MAX_REGIONS],
    len: usize,
}

impl std::ops::Deref for Ranking {
    type Target = [Ranked];

    fn deref(&self) -> &[Ranked] {
        &self.items[..self.len]
    }
}

/// Orders `candidates` (indices into `locations`, in configured order) for a client.
///
/// Overridden regions come first in the override's order; the rest follow by
/// distance, ties and unknown locations keeping the configured order.
/// Candidates past [`MAX_REGIONS`] are ignored (config validation rejects them).
pub fn rank(
    client: Option<Coord>,
    candidates: &[usize],
    locations: &[Coord],
    preferred: &[usize],
) -> Ranking {
    let empty = Ranked {
        region: 0,
        distance_km: None,
        overridden: false,
    };
    let mut r = Ranking {
        items: [empty; MAX_REGIONS],
        len: candidates.len().min(MAX_REGIONS),
    };
    for (i, &region) in candidates.iter().take(MAX_REGIONS).enumerate() {
        r.items[i] = Ranked {
            region,
            distance_km: client.map(|c| distance_km(c, locations[region])),
            overridden: false,
        };
    }
    let items = &mut r.items[..r.len];
    // Unstable sort does not allocate; the configured position breaks ties.
    let position = |x: &Ranked| candidates.iter().position(|&c| c == x.region).unwrap_or(0);
    items.sort_unstable_by(|a, b| {
        let (da, db) = (a.distance_km.unwrap_or(0.0), b.distance_km.unwrap_or(0.0));
        da.total_cmp(&db)
            .then_with(|| position(a).cmp(&position(b)))
    });
    let mut placed = 0;
    for want in preferred {
        if let Some(i) = items[placed..].iter().position(|x| x.region == *want) {
            let i = placed + i;
            items[i].overridden = true;
            items[placed..=i].rotate_right(1);
            placed += 1;
        }
    }
    r
}

/// Serving state per region, indexed like the regions of the data it was
/// built for (a snapshot's own indices: never read with another load's data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionView {
    pub states: Vec<RegionState>,
}

impl RegionView {
    /// Every region serving: the state before any health information exists.
    pub fn all_serving(regions: usize) -> Self {
        Self {
            states: vec![RegionState::default(); regions],
        }
    }

    /// Whether `region` may answer; a region the view does not know serves.
    pub fn serving(&self, region: usize) -> bool {
        self.states.get(region).is_none_or(|s| s.serving)
    }
}

/// Takes the first serving region of `order` ("which", after "where" has
/// ordered the regions); fails open to the first entry when none serves.
pub fn decide(order: &Order, view: &RegionView) -> Decision {
    decide_by(
        usize::from(order.len),
        |i| {
            (
                usize::from(order.regions[i]),
                order.overridden & (1 << i) != 0,
            )
        },
        order.located,
        view,
    )
}

/// [`decide`] over `len` candidates given as (region, overridden), best first.
fn decide_by(
    len: usize,
    at: impl Fn(usize) -> (usize, bool),
    located: bool,
    view: &RegionView,
) -> Decision {
    match (0..len).find(|&i| view.serving(at(i).0)) {
        Some(i) => {
            let (region, overridden) = at(i);
            let reason = if overridden {
                Reason::Override
            } else if i > 0 {
                Reason::Failover
            } else if located {
                Reason::Nearest
            } else {
                Reason::NoLocation
            };
            Decision { region, reason }
        }
        None => Decision {
            region: at(0).0,
            reason: Reason::FailOpen,
        },
    }
}

/// A ranking reduced to what [`decide`] reads (region order, overrides, and
/// whether the client was located): 40 bytes instead of a ranking's 520, so
/// the orders of a whole GeoIP database fit in a small interned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Order {
    regions: [u16; MAX_REGIONS],
    overridden: u16,
    len: u8,
    located: bool,
}

impl Order {
    /// `None` if a region index does not fit (more than 65,535 regions).
    pub fn of(ranking: &Ranking, located: bool) -> Option<Self> {
        let mut o = Self {
            regions: [0; MAX_REGIONS],
            overridden: 0,
            len: ranking.len() as u8,
            located,
        };
        for (i, r) in ranking.iter().enumerate() {
            o.regions[i] = u16::try_from(r.region).ok()?;
            o.overridden |= u16::from(r.overridden) << i;
        }
        Some(o)
    }

    /// The regions, best first.
    pub fn regions(&self) -> impl Iterator<Item = usize> + '_ {
        self.regions[..usize::from(self.len)]
            .iter()
            .map(|&r| usize::from(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRANKFURT: Coord = Coord {
        lat: 50.11,
        lon: 8.68,
    };
    const ASHBURN: Coord = Coord {
        lat: 39.04,
        lon: -77.49,
    };
    const SINGAPORE: Coord = Coord {
        lat: 1.35,
        lon: 103.82,
    };
    const SAO_PAULO: Coord = Coord {
        lat: -23.55,
        lon: -46.63,
    };
    const REGIONS: [Coord; 4] = [FRANKFURT, ASHBURN, SINGAPORE, SAO_PAULO];
    const ALL: [usize; 4] = [0, 1, 2, 3];

    fn at(lat: f64, lon: f64) -> Option<Coord> {
        Some(Coord { lat, lon })
    }

    /// The decision over a full ranking, as [`Order`] must reproduce it.
    fn decide(ranking: &[Ranked], located: bool, states: &[RegionState]) -> Decision {
        let view = RegionView {
            states: states.to_vec(),
        };
        decide_by(
            ranking.len(),
            |i| (ranking[i].region, ranking[i].overridden),
            located,
            &view,
        )
    }

    fn nearest(client: Option<Coord>) -> usize {
        let ranking = rank(client, &ALL, &REGIONS, &[]);
        decide(&ranking, client.is_some(), &[RegionState::default(); 4]).region
    }

    #[test]
    fn distance_matches_known_city_pairs() {
        // Frankfurt–Singapore is about 10,260 km; Ashburn–São Paulo about 7,600 km.
        let fs = distance_km(FRANKFURT, SINGAPORE);
        assert!((fs - 10_260.0).abs() < 60.0, "{fs}");
        let asp = distance_km(ASHBURN, SAO_PAULO);
        assert!((asp - 7_600.0).abs() < 80.0, "{asp}");
        assert_eq!(distance_km(FRANKFURT, FRANKFURT), 0.0);
    }

    #[test]
    fn distance_is_symmetric_and_handles_antipodes() {
        let a = Coord { lat: 0.0, lon: 0.0 };
        let b = Coord {
            lat: 0.0,
            lon: 180.0,
        };
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((distance_km(a, b) - half).abs() < 1e-6);
        assert_eq!(
            distance_km(FRANKFURT, ASHBURN),
            distance_km(ASHBURN, FRANKFURT)
        );
    }

    #[test]
    fn picks_the_nearest_region_per_continent() {
        assert_eq!(nearest(at(50.83, 4.0)), 0, "Belgium → europe1");
        assert_eq!(nearest(at(38.0, -97.0)), 1, "USA → us1");
        assert_eq!(nearest(at(36.0, 138.0)), 2, "Japan → asia1");
        assert_eq!(nearest(at(-27.0, 133.0)), 2, "Australia → asia1");
        assert_eq!(nearest(at(-34.0, -64.0)), 3, "Argentina → sa1");
        // Great-circle distance, not intuition: São Paulo is ~1,300 km nearer than Frankfurt.
        assert_eq!(nearest(at(-29.0, 24.0)), 3, "South Africa → sa1");
        assert_eq!(nearest(at(27.0, 30.0)), 0, "Egypt → europe1");
    }

    #[test]
    fn unknown_location_keeps_configured_order() {
        let ranking = rank(None, &[2, 0, 1], &REGIONS, &[]);
        let order: Vec<usize> = ranking.iter().map(|r| r.region).collect();
        assert_eq!(order, [2, 0, 1]);
        let d = decide(&ranking, false, &[RegionState::default(); 4]);
        assert_eq!((d.region, d.reason), (2, Reason::NoLocation));
    }

    #[test]
    fn ties_keep_configured_order() {
        let same = [FRANKFURT, FRANKFURT];
        let r = rank(at(0.0, 0.0), &[1, 0], &same, &[]);
        assert_eq!(r[0].region, 1);
        let r = rank(at(0.0, 0.0), &[0, 1], &same, &[]);
        assert_eq!(r[0].region, 0);
    }

    #[test]
    fn failover_skips_regions_not_serving() {
        let ranking = rank(at(50.83, 4.0), &ALL, &REGIONS, &[]);
        let mut states = [RegionState::default(); 4];
        states[0].serving = false;
        let d = decide(&ranking, true, &states);
        assert_eq!((d.region, d.reason), (1, Reason::Failover), "Belgium → us1");
    }

    #[test]
    fn fails_open_to_nearest_when_nothing_serves() {
        let ranking = rank(at(1.3, 103.8), &ALL, &REGIONS, &[]);
        let states = [RegionState { serving: false }; 4];
        let d = decide(&ranking, true, &states);
        assert_eq!((d.region, d.reason), (2, Reason::FailOpen));
    }

    #[test]
    fn overrides_win_over_distance_and_fail_over_by_distance() {
        let ranking = rank(at(50.83, 4.0), &ALL, &REGIONS, &[2]);
        let order: Vec<usize> = ranking.iter().map(|r| r.region).collect();
        assert_eq!(order, [2, 0, 1, 3]);
        let mut states = [RegionState::default(); 4];
        assert_eq!(decide(&ranking, true, &states).reason, Reason::Override);
        states[2].serving = false;
        let d = decide(&ranking, true, &states);
        assert_eq!((d.region, d.reason), (0, Reason::Failover));
    }

    #[test]
    fn overrides_naming_regions_outside_the_geo_name_are_ignored() {
        let ranking = rank(at(50.83, 4.0), &[0, 1], &REGIONS, &[3, 1]);
        let order: Vec<usize> = ranking.iter().map(|r| r.region).collect();
        assert_eq!(order, [1, 0]);
    }

    #[test]
    fn an_order_decides_as_its_ranking_does() {
        let locations = [FRANKFURT, ASHBURN, SINGAPORE, SAO_PAULO];
        let clients = [None, Some(FRANKFURT), Some(SINGAPORE), Some(SAO_PAULO)];
        let preferences: [&[usize]; 4] = [&[], &[2], &[3, 0], &[1, 2, 3, 0]];
        for client in clients {
            for preferred in preferences {
                let ranking = rank(client, &[0, 1, 2, 3], &locations, preferred);
                for located in [false, true] {
                    let order = Order::of(&ranking, located).unwrap();
                    for mask in 0..16u8 {
                        let states: Vec<RegionState> = (0..4)
                            .map(|i| RegionState {
                                serving: mask & (1 << i) != 0,
                            })
                            .collect();
                        let view = RegionView { states };
                        assert_eq!(
                            super::decide(&order, &view),
                            decide(&ranking, located, &view.states),
                            "{client:?} {preferred:?} {mask:04b}"
                        );
                    }
                }
            }
        }
        assert!(std::mem::size_of::<Order>() <= 40);
    }
}
