//! The fast path: plain geo A/AAAA queries answered from pre-rendered bytes.
//!
//! Nearly all traffic is one question shape (`mgnt.mkcld.io A`, maybe with
//! ECS). For it, the answer and authority sections were rendered at load by
//! hickory's own encoder (see [`Templates::render`]); a query only costs the
//! GeoIP lookup, the routing decision and a few copies into a reused buffer:
//! header (ID, RD, CD patched), the question as received (case echoed), the
//! template, and the OPT record with the cookie and the ECS echo. Anything
//! else — other names and types, odd flags, unknown EDNS options, malformed
//! ECS or COOKIE — returns `None`
//! and goes to the full path in [`super::answer`], which stays the reference:
//! a differential test requires identical bytes from both. Plain queries for
//! other names are answered from [`super::replay`] once the full path has
//! answered them.

use std::net::IpAddr;

use hickory_proto::{
    op::{MessageType, Metadata, OpCode, ResponseCode},
    rr::{Record, RecordType},
    serialize::binary::{BinDecoder, BinEncoder},
};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::{
    Data, GeoTable, RouteCache,
    cookie::{self, Received, Verdict},
    ecs,
    replay::{AnswerCache, Shape},
};
use crate::{
    locate::Client,
    route::{self, RegionView},
};

const OPT: u16 = 41;
const ECS: u16 = 8;
/// EDNS options that need no answer, so ignoring them here answers exactly
/// as the full path does (TCP keepalive, padding).
const OPAQUE_OPTIONS: [u16; 2] = [11, 12];

/// Rendered answer and authority sections of one region for A and AAAA.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    a: Template,
    aaaa: Template,
}

#[derive(Debug, Clone, Default)]
struct Template {
    answers: u16,
    authorities: u16,
    /// Everything after the question, without any OPT record.
    bytes: Vec<u8>,
}

impl Templates {
    /// Renders what the full path would send after the question, for a
    /// question of `name`: the same builder, records and compression state.
    pub fn render(
        name_wire: &[u8],
        sections: impl Fn(RecordType) -> (Vec<Record>, Vec<Record>),
    ) -> Self {
        let one = |qtype: RecordType| {
            let mut question = name_wire.to_vec();
            question.extend_from_slice(&u16::from(qtype).to_be_bytes());
            question.extend_from_slice(&1u16.to_be_bytes());
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&question), 1) else {
                return Template::default();
            };
            let (answers, authorities) = sections(qtype);
            let mut meta = Metadata::new(0, MessageType::Response, OpCode::Query);
            meta.authoritative = true;
            meta.response_code = ResponseCode::NoError;
            let response = MessageResponseBuilder::new(&queries, None).build(
                meta,
                answers.iter(),
                authorities.iter(),
                std::iter::empty(),
                std::iter::empty(),
            );
            let mut buf = Vec::new();
            if response
                .destructive_emit(&mut BinEncoder::new(&mut buf))
                .is_err()
            {
                return Template::default();
            }
            Template {
                answers: u16::from_be_bytes([buf[6], buf[7]]),
                authorities: u16::from_be_bytes([buf[8], buf[9]]),
                bytes: buf[12 + question.len()..].to_vec(),
            }
        };
        Self {
            a: one(RecordType::A),
            aaaa: one(RecordType::AAAA),
        }
    }
}

/// One UDP thread's memos: routes by client, and replayable answers.
#[derive(Default)]
pub struct Caches {
    pub routes: RouteCache,
    pub answers: AnswerCache,
}

/// Where the parts of a fast-path query are (offsets into its bytes).
#[derive(Debug, Clone, Copy)]
struct Parsed {
    /// The question is `raw[12..question_end]`, its name `raw[12..name_end]`.
    question_end: usize,
    name_end: usize,
    qtype: u16,
    /// `None` without EDNS; else the client's UDP payload size.
    payload: Option<u16>,
    dnssec_ok: bool,
    subnet: Option<ecs::ClientSubnet>,
    /// Where the COOKIE option's value is in the query (start, length).
    cookie: Option<(usize, usize)>,
}

impl Parsed {
    fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[12..self.name_end]
    }

    fn shape<'a>(&self, raw: &'a [u8]) -> Shape<'a> {
        Shape {
            raw,
            question: &raw[12..self.question_end],
            edns: self.payload.is_some(),
            dnssec_ok: self.dnssec_ok,
        }
    }
}

/// A query the fast path may answer, parsed once: a batch parses all its
/// queries first and fetches their route-cache entries into the CPU cache
/// together (see [`Query::prefetch`]), then answers them.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    parsed: Parsed,
    /// The geo name asked for, by index; `None` for other names.
    table: Option<usize>,
    /// Who a geo query is located as: the ECS address and source prefix if
    /// there is one, else the sender.
    client: Client,
    /// The sender, whom a server cookie is made for.
    src: IpAddr,
}

impl Query {
    /// Parses `raw`, sent from `src`; `None` sends it to the full path.
    pub fn parse(data: &Data, raw: &[u8], src: IpAddr) -> Option<Self> {
        let parsed = parse(raw)?;
        let table = geo_table(data, parsed.name(raw));
        let subnet = parsed.subnet.map(|s| (s.address, s.source_prefix));
        Some(Self {
            parsed,
            table,
            client: Client::of(src, subnet),
            src,
        })
    }

    /// Starts loading the route-cache entries this query will read, so that
    /// the memory latency of a batch's lookups overlaps.
    pub fn prefetch(&self, caches: &Caches) {
        if self.table.is_some() {
            caches.routes.prefetch(self.client.addr);
        }
    }
}

/// Query types the fast path never answers: meta types and zone transfers.
const NEVER: [u16; 6] = [41, 251, 252, 253, 254, 255];

/// Answers `raw` into `out` if it is a plain geo A/AAAA query over UDP, or a
/// plain query the full path answered before (see [`replay`]); returns its
/// type and rcode. `None` (with `out` in any state) hands it to the full path.
pub fn answer(
    data: &Data,
    view: &RegionView,
    raw: &[u8],
    src: IpAddr,
    out: &mut Vec<u8>,
    caches: &mut Caches,
) -> Option<(RecordType, ResponseCode)> {
    let q = Query::parse(data, raw, src)?;
    answer_parsed(data, view, raw, &q, out, caches)
}

/// [`answer`] for a query already parsed from `raw`.
pub fn answer_parsed(
    data: &Data,
    view: &RegionView,
    raw: &[u8],
    query: &Query,
    out: &mut Vec<u8>,
    caches: &mut Caches,
) -> Option<(RecordType, ResponseCode)> {
    let q = &query.parsed;
    let max_udp = data.config.dns.max_udp_payload;
    let limit = q.payload.map_or(512, |p| p.clamp(512, max_udp));
    let cookie = judge_cookie(data, raw, q, query.src).ok()?;
    let reply_cookie = cookie.as_ref().map(|v| &v.reply);
    let Some(table_index) = query.table else {
        let replayed = caches.answers.replay(data, &q.shape(raw), out)?;
        if q.payload.is_some() {
            push_opt(out, max_udp, reply_cookie, q.subnet, 0);
        }
        return (out.len() <= usize::from(limit)).then_some(replayed);
    };
    if q.qtype != u16::from(RecordType::A) && q.qtype != u16::from(RecordType::AAAA) {
        return None;
    }
    let table = &data.geo[table_index];
    let routed = caches
        .routes
        .locate(&data.maps, data.generation, query.client);
    let decision = route::decide(data.maps.order(routed.orders, table_index), view);
    let region = decision.region;
    let templates = table.templates.get(region)?.as_ref()?;
    let (qtype, t) = if q.qtype == u16::from(RecordType::A) {
        (RecordType::A, &templates.a)
    } else {
        (RecordType::AAAA, &templates.aaaa)
    };
    if t.bytes.is_empty() {
        return None;
    }
    out.clear();
    out.extend_from_slice(&raw[..2]);
    out.push(0x80 | 0x04 | (raw[2] & 0x01));
    out.push(raw[3] & 0x10);
    for count in [1, t.answers, t.authorities, u16::from(q.payload.is_some())] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&raw[12..q.question_end]);
    out.extend_from_slice(&t.bytes);
    if q.payload.is_some() {
        push_opt(out, max_udp, reply_cookie, q.subnet, routed.scope);
    }
    if out.len() > usize::from(limit) {
        return None;
    }
    if let Some(c) = data.counters.get(region) {
        c.count(decision.reason);
    }
    Some((qtype, ResponseCode::NoError))
}

fn geo_table(data: &Data, name: &[u8]) -> Option<usize> {
    data.geo
        .iter()
        .position(|t| t.name_wire.eq_ignore_ascii_case(name))
}

/// Keeps the full path's `answer` to `raw` (from `src`) for replay, if
/// `raw` is a plain query outside the geo names.
pub fn learn(data: &Data, raw: &[u8], src: IpAddr, answer: &[u8], answers: &mut AnswerCache) {
    let Some(q) = parse(raw) else { return };
    if geo_table(data, q.name(raw)).is_some() {
        return;
    }
    let Ok(cookie) = judge_cookie(data, raw, &q, src) else {
        return;
    };
    let mut opt = Vec::new();
    if q.payload.is_some() {
        let reply = cookie.as_ref().map(|v| &v.reply);
        push_opt(
            &mut opt,
            data.config.dns.max_udp_payload,
            reply,
            q.subnet,
            0,
        );
    }
    answers.learn(data, &q.shape(raw), RecordType::from(q.qtype), answer, &opt);
}

/// The query's cookie judged, when it has one and cookies are on; `Err`
/// for a malformed one, which the full path answers (FORMERR).
fn judge_cookie(data: &Data, raw: &[u8], q: &Parsed, src: IpAddr) -> Result<Option<Verdict>, ()> {
    let (Some(secrets), Some((at, len))) = (&data.cookies, q.cookie) else {
        return Ok(None);
    };
    let received = Received::parse(&raw[at..at + len]).map_err(|_| ())?;
    Ok(Some(secrets.judge(&received, src, cookie::now())))
}

/// The OPT record hickory emits for our response EDNS: root owner, our
/// payload size, version 0, no flags; then the COOKIE option if there is a
/// cookie to send, and the ECS echo with `scope` if the query had one (the
/// order in which the full path adds them).
fn push_opt(
    out: &mut Vec<u8>,
    payload: u16,
    cookie: Option<&[u8; 8 + cookie::SERVER_BYTES]>,
    subnet: Option<ecs::ClientSubnet>,
    scope: u8,
) {
    out.push(0);
    out.extend_from_slice(&OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    if let Some(c) = cookie {
        out.extend_from_slice(&cookie::CODE.to_be_bytes());
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
    if let Some(s) = subnet {
        let octets = usize::from(s.source_prefix.div_ceil(8));
        let (family, addr): (u16, [u8; 16]) = match s.address {
            IpAddr::V4(a) => {
                let mut b = [0; 16];
                b[..4].copy_from_slice(&a.octets());
                (1, b)
            }
            IpAddr::V6(a) => (2, a.octets()),
        };
        out.extend_from_slice(&ECS.to_be_bytes());
        out.extend_from_slice(&(4 + octets as u16).to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.push(s.source_prefix);
        out.push(scope);
        out.extend_from_slice(&addr[..octets]);
    }
    let rdlen = (out.len() - rdlen_at - 2) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Accepts only the query shape the templates answer; `None` means "full path".
fn parse(raw: &[u8]) -> Option<Parsed> {
    // QR=0, opcode QUERY, TC=0; Z=0.
    if raw.len() < 17 || raw[2] & 0xFA != 0 || raw[3] & 0x40 != 0 {
        return None;
    }
    let counts = (be16(raw, 4)?, be16(raw, 6)?, be16(raw, 8)?, be16(raw, 10)?);
    let with_opt = match counts {
        (1, 0, 0, 0) => false,
        (1, 0, 0, 1) => true,
        _ => return None,
    };
    let mut pos = 12;
    loop {
        let len = usize::from(*raw.get(pos)?);
        if len == 0 {
            break;
        }
        if len > 63 || pos + 1 + len - 12 > 254 {
            return None;
        }
        pos += 1 + len;
    }
    let name_end = pos + 1;
    let qtype = be16(raw, pos + 1)?;
    if be16(raw, pos + 3)? != 1 || NEVER.contains(&qtype) {
        return None;
    }
    let question_end = pos + 5;
    raw.get(12..question_end)?;
    let (payload, dnssec_ok, options) = if with_opt {
        let opt = raw.get(question_end..)?;
        let (payload, options) = parse_opt(opt)?;
        (Some(payload), opt[7] & 0x80 != 0, options)
    } else if raw.len() == question_end {
        (None, false, Options::default())
    } else {
        return None;
    };
    Some(Parsed {
        question_end,
        name_end,
        qtype,
        payload,
        dnssec_ok,
        subnet: options.subnet,
        cookie: options
            .cookie
            .map(|(at, len)| (question_end + 11 + at, len)),
    })
}

/// The options of a query's OPT record that shape the answer.
#[derive(Default)]
struct Options {
    subnet: Option<ecs::ClientSubnet>,
    /// The COOKIE value's offset in the OPT RDATA, and its length.
    cookie: Option<(usize, usize)>,
}

/// The OPT record, which must be the rest of the message exactly; a second
/// ECS or COOKIE option goes to the full path.
fn parse_opt(opt: &[u8]) -> Option<(u16, Options)> {
    // Root owner, type OPT, version 0 (byte 6 of the TTL field).
    if opt.len() < 11 || opt[0] != 0 || be16(opt, 1)? != OPT || opt[6] != 0 {
        return None;
    }
    let payload = be16(opt, 3)?;
    let rdlen = usize::from(be16(opt, 9)?);
    let all = opt.get(11..)?;
    if all.len() != rdlen {
        return None;
    }
    let mut options = Options::default();
    let mut at = 0;
    while at < all.len() {
        let code = be16(all, at)?;
        let len = usize::from(be16(all, at + 2)?);
        let value = all.get(at + 4..at + 4 + len)?;
        match code {
            ECS if options.subnet.is_none() => options.subnet = Some(ecs::validate(value).ok()?),
            cookie::CODE if options.cookie.is_none() => options.cookie = Some((at + 4, len)),
            c if OPAQUE_OPTIONS.contains(&c) => {}
            _ => return None,
        }
        at += 4 + len;
    }
    Some((payload, options))
}

impl GeoTable {
    /// The geo name in lower-case wire form, for matching questions.
    pub fn wire_name(name: &hickory_proto::rr::Name) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for label in name.iter() {
            out.push(label.len() as u8);
            out.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        out.push(0);
        out
    }
}
