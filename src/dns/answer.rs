//! One query's bytes in, one response's bytes out.
//!
//! Geo names are answered here from the pre-rendered [`GeoTable`]s; every other
//! name goes to hickory's [`Catalog`](hickory_server::zone_handler::Catalog),
//! which owns NXDOMAIN/NODATA/referral logic for zone data. The checks that
//! hickory's request handler would make first (EDNS version, opcode, question
//! count) are made here, because we also need ECS validated before either path.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::{Edns, Message, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, LowerName, RData, Record, RecordType,
        rdata::{
            TXT,
            opt::{ClientSubnet as HickorySubnet, EdnsCode, EdnsOption, NSIDPayload},
        },
    },
    serialize::binary::BinEncoder,
};
use hickory_server::{
    net::{NetError, xfer::Protocol},
    server::{Request, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder},
};

use super::{Data, GeoTable, cookie, ecs};
use crate::{
    locate::Client,
    metrics::QueryCounters,
    route::{self, RegionView},
};

/// Answers queries (the full path) and counts them.
///
/// The data and region view are the caller's, taken from one state snapshot,
/// so a query never mixes one load's data with another's view.
#[derive(Default)]
pub struct Responder {
    pub queries: QueryCounters,
    pub tcp: TcpCounters,
    /// Rate limiting and truncation of UDP answers.
    pub guard: super::guard::Guard,
}

/// DNS TCP connections closed by us, by reason.
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Over `tcp_max_connections`.
    pub cap: std::sync::atomic::AtomicU64,
    /// Over `tcp_max_per_source`.
    pub per_source: std::sync::atomic::AtomicU64,
    /// A begun query or a reply not through within `tcp_io_timeout`.
    pub io_timeout: std::sync::atomic::AtomicU64,
}

/// The parts of a query every response needs.
struct Ctx<'a> {
    request: &'a Request,
    /// Largest response this transport and client accept.
    limit: usize,
}

impl Responder {
    /// Builds the response to `raw` from `data` and `view`, or `None` when
    /// nothing must be sent (fewer than 12 bytes, or a message that is itself
    /// a response).
    pub async fn respond(
        &self,
        data: &Data,
        view: &RegionView,
        raw: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        if raw.len() < 12 || raw[2] & 0x80 != 0 {
            self.queries.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let request = match Request::from_bytes(raw.to_vec(), src, protocol) {
            Ok(r) => r,
            Err(_) => {
                self.queries.count(None, ResponseCode::FormErr);
                return Some(header_only(raw, ResponseCode::FormErr));
            }
        };
        let qtype = request.queries.queries().first().map(|q| q.query_type());
        let (bytes, rcode) = answer(data, view, &request, raw, src, protocol).await;
        self.queries.count(qtype, rcode);
        Some(bytes)
    }
}

/// The response to a parsed request, and its RCODE (for the counters).
async fn answer(
    data: &Data,
    view: &RegionView,
    request: &Request,
    raw: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> (Vec<u8>, ResponseCode) {
    let max_udp = usize::from(data.config.dns.max_udp_payload);
    let limit = match protocol {
        Protocol::Udp => request
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload()).clamp(512, max_udp)),
        _ => usize::from(u16::MAX),
    };
    let cx = Ctx { request, limit };
    let mut edns = request.edns.as_ref().map(|asked| {
        let mut e = Edns::new();
        e.set_max_payload(max_udp as u16);
        e.set_version(0);
        // RFC 5001: which node answered, when asked (the query's option is empty).
        if asked.option(EdnsCode::NSID).is_some()
            && let Ok(nsid) = NSIDPayload::new(data.config.node.name.as_bytes().to_vec())
        {
            e.options_mut().insert(EdnsOption::NSID(nsid));
        }
        e
    });
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return (
            error(&cx, ResponseCode::BADVERS, edns.as_ref()),
            ResponseCode::BADVERS,
        );
    }
    if let (Some(asked), Some(e), Some(secrets)) = (&request.edns, &mut edns, &data.cookies) {
        match answer_cookie(asked, secrets, src) {
            Ok(Some(reply)) => e.options_mut().insert(reply),
            Ok(None) => {}
            Err(_) => {
                return (
                    error(&cx, ResponseCode::FormErr, Some(e)),
                    ResponseCode::FormErr,
                );
            }
        }
    }
    let with_edns = |code| (error(&cx, code, edns.as_ref()), code);
    let subnet = match request.edns.is_some().then(|| ecs::parse(raw)).transpose() {
        Ok(s) => s.flatten(),
        Err(_) => return with_edns(ResponseCode::FormErr),
    };
    match request.metadata.op_code {
        OpCode::Query => {}
        OpCode::Update => return with_edns(ResponseCode::Refused),
        _ => return with_edns(ResponseCode::NotImp),
    }
    let Ok(info) = request.request_info() else {
        return with_edns(ResponseCode::FormErr);
    };
    let query = info.query;
    if query.query_class() == DNSClass::CH && is_identity(query.name()) {
        let bytes = identity_answer(&cx, &data.config.node.name, edns.as_ref());
        return (bytes, ResponseCode::NoError);
    }
    if query.query_class() != DNSClass::IN
        || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
    {
        return with_edns(ResponseCode::Refused);
    }
    if let Some(geo) = data.geo_table(query.name()) {
        let client = Client::of(src.ip(), subnet.map(|s| (s.address, s.source_prefix)));
        let at = data.maps.locate(client);
        let decision = route::decide(data.maps.order(at.orders, geo), view);
        if let Some(c) = data.counters.get(decision.region) {
            c.count(decision.reason);
        }
        if let (Some(e), Some(s)) = (edns.as_mut(), subnet) {
            echo_subnet(e, s, at.scope);
        }
        let bytes = geo_answer(&cx, &data.geo[geo], decision.region, edns.as_ref());
        return (bytes, ResponseCode::NoError);
    }
    if let (Some(e), Some(s)) = (edns.as_mut(), subnet) {
        echo_subnet(e, s, 0);
    }
    let bytes = catalog_answer(&cx, data, edns.as_ref()).await;
    let rcode = bytes
        .get(3)
        .map_or(ResponseCode::ServFail, |b| ResponseCode::from(0, b & 0x0F));
    (bytes, rcode)
}

/// The COOKIE option to answer with (RFC 7873 §5.2), if the query had one;
/// `Err` for a malformed option or more than one.
fn answer_cookie(
    asked: &Edns,
    secrets: &cookie::Secrets,
    src: SocketAddr,
) -> Result<Option<EdnsOption>, cookie::Malformed> {
    let mut sent = asked.options().get_all(EdnsCode::Cookie).into_iter();
    let Some(first) = sent.next() else {
        return Ok(None);
    };
    let value = match first {
        EdnsOption::Unknown(_, value) => value.as_slice(),
        _ => &[],
    };
    let received = cookie::Received::parse(value)?;
    if sent.next().is_some() {
        return Err(cookie::Malformed(value.len()));
    }
    let verdict = secrets.judge(&received, src.ip(), cookie::now());
    Ok(Some(EdnsOption::Unknown(
        cookie::CODE,
        verdict.reply.to_vec(),
    )))
}

/// RFC 7871 §7.2.1: the response carries ECS with the query's family, source
/// prefix and address, and the scope the answer is valid for.
fn echo_subnet(edns: &mut Edns, subnet: ecs::ClientSubnet, scope: u8) {
    let echo = HickorySubnet::new(subnet.address, subnet.source_prefix, scope);
    edns.options_mut().insert(EdnsOption::Subnet(echo));
}

fn geo_answer(cx: &Ctx, table: &GeoTable, region: usize, edns: Option<&Edns>) -> Vec<u8> {
    let qtype = cx
        .request
        .request_info()
        .map_or(RecordType::A, |i| i.query.query_type());
    let (cname, data) = table.answer(region, qtype);
    let mut meta = Metadata::response_from_request(&cx.request.metadata);
    meta.authoritative = true;
    meta.response_code = ResponseCode::NoError;
    let soa = table.authority(qtype, cname, data);
    let response = MessageResponseBuilder::new(&cx.request.queries, edns).build(
        meta,
        cname.into_iter().chain(data),
        soa.iter(),
        std::iter::empty(),
        std::iter::empty(),
    );
    encode(cx, response, edns)
}

/// `id.server.` (RFC 4892) and `hostname.bind.` (BIND's name for it), the
/// CHAOS names that tell which server answered; every other CHAOS name
/// (`version.bind.` included) stays REFUSED.
fn is_identity(name: &LowerName) -> bool {
    let name = name.to_string();
    name.eq_ignore_ascii_case("id.server.") || name.eq_ignore_ascii_case("hostname.bind.")
}

/// The node's name as a CH TXT answer (TXT or ANY; other types: no data).
fn identity_answer(cx: &Ctx, node: &str, edns: Option<&Edns>) -> Vec<u8> {
    let query = &cx.request.queries.queries()[0];
    let mut meta = Metadata::response_from_request(&cx.request.metadata);
    meta.authoritative = true;
    meta.response_code = ResponseCode::NoError;
    let answer = matches!(query.query_type(), RecordType::TXT | RecordType::ANY).then(|| {
        let mut r = Record::from_rdata(
            query.original().name().clone(),
            0,
            RData::TXT(TXT::new(vec![node.to_owned()])),
        );
        r.dns_class = DNSClass::CH;
        r
    });
    let response = MessageResponseBuilder::new(&cx.request.queries, edns).build(
        meta,
        answer.iter(),
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
    );
    encode(cx, response, edns)
}

fn error(cx: &Ctx, code: ResponseCode, edns: Option<&Edns>) -> Vec<u8> {
    let response = MessageResponseBuilder::new(&cx.request.queries, edns)
        .error_msg(&cx.request.metadata, code);
    encode(cx, response, edns)
}

async fn catalog_answer(cx: &Ctx<'_>, data: &Data, edns: Option<&Edns>) -> Vec<u8> {
    let capture = Capture::default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    data.zones
        .catalog
        .lookup(cx.request, edns, now, capture.clone())
        .await;
    let taken = capture.0.lock().map(|mut g| g.take()).ok().flatten();
    let taken = taken.map(|(bytes, meta)| (cap_negative_ttl(bytes), meta));
    match taken {
        Some((bytes, _)) if bytes.len() <= cx.limit => bytes,
        Some((_, meta)) => truncated(cx, meta, edns),
        None => error(cx, ResponseCode::ServFail, edns),
    }
}

/// RFC 2308 §3: the SOA of a negative answer carries min(SOA TTL, SOA MINIMUM).
/// hickory's catalog sends the SOA record as stored, so negative answers are
/// rewritten here; positive answers pass untouched.
fn cap_negative_ttl(bytes: Vec<u8>) -> Vec<u8> {
    let negative = bytes.len() >= 12 && bytes[6..8] == [0, 0] && bytes[8..10] != [0, 0];
    if !negative {
        return bytes;
    }
    let Ok(mut message) = Message::from_vec(&bytes) else {
        return bytes;
    };
    for record in &mut message.authorities {
        if let RData::SOA(soa) = &record.data {
            record.ttl = record.ttl.min(soa.minimum);
        }
    }
    message.to_vec().unwrap_or(bytes)
}

/// Emits `response`; when it is larger than the client accepts, sends the
/// header, question and OPT alone with TC=1 so the client retries over TCP,
/// rather than a partial RRset.
fn encode<'a>(
    cx: &Ctx,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    edns: Option<&Edns>,
) -> Vec<u8> {
    let meta = *response.metadata();
    match emit(response) {
        Some(bytes) if bytes.len() <= cx.limit => bytes,
        Some(_) => truncated(cx, meta, edns),
        None => header_only(cx.request.as_slice(), ResponseCode::ServFail),
    }
}

fn truncated(cx: &Ctx, mut meta: Metadata, edns: Option<&Edns>) -> Vec<u8> {
    meta.truncation = true;
    let response = MessageResponseBuilder::new(&cx.request.queries, edns).build_no_records(meta);
    match emit(response) {
        Some(bytes) if bytes.len() <= cx.limit => bytes,
        _ => header_only(cx.request.as_slice(), ResponseCode::ServFail),
    }
}

fn emit<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    response.destructive_emit(&mut encoder).ok()?;
    Some(buf)
}

/// A 12-byte response header echoing the query's ID, opcode and RD bit, with
/// no sections: the answer when the question itself cannot be read.
fn header_only(raw: &[u8], code: ResponseCode) -> Vec<u8> {
    let opcode_rd = raw[2] & 0x79;
    vec![
        raw[0],
        raw[1],
        0x80 | opcode_rd,
        code.low() & 0x0F,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Keeps the catalog's response as bytes instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Captured>>>);

/// An encoded response and its header, kept to rebuild it truncated.
type Captured = (Vec<u8>, Metadata);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let meta = *response.metadata();
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        let info = response.destructive_emit(&mut encoder)?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((buf, meta));
        }
        Ok(info)
    }
}
