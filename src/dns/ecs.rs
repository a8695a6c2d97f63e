//! EDNS Client Subnet ([RFC 7871](https://www.rfc-editor.org/rfc/rfc7871)) read from the raw query.
//!
//! hickory-proto parses ECS leniently (extra address octets, bits set past the
//! prefix, several options all pass), so the checks RFC 7871 asks of a server
//! are made here on the wire bytes, before any answer is built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const OPT: u16 = 41;
const ECS_CODE: u16 = 8;

/// A validated client subnet from a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The address, with every bit past `source_prefix` zero.
    pub address: IpAddr,
    pub source_prefix: u8,
}

/// Why a query's ECS option (or the message around it) was rejected; each is FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    #[error("message ends inside a record")]
    Truncated,
    #[error("ECS family {0} is neither 1 (IPv4) nor 2 (IPv6)")]
    Family(u16),
    #[error("ECS source prefix {0} is longer than the address")]
    SourcePrefix(u8),
    /// RFC 7871 §6: "SCOPE PREFIX-LENGTH ... MUST be set to 0 in queries".
    #[error("ECS scope prefix {0} is not 0 in a query")]
    ScopeInQuery(u8),
    /// RFC 7871 §6: too few or too many ADDRESS octets.
    #[error("ECS address has {got} octets, the source prefix needs {want}")]
    AddressLength { got: usize, want: usize },
    /// RFC 7871 §6: "non-zero ADDRESS bits set beyond SOURCE PREFIX-LENGTH".
    #[error("ECS address has bits set past the source prefix")]
    HostBits,
    #[error("more than one ECS option")]
    Duplicate,
}

/// Finds and validates the ECS option of a query that hickory already parsed.
///
/// Returns `Ok(None)` when the query carries no OPT record or no ECS option.
pub fn parse(msg: &[u8]) -> Result<Option<ClientSubnet>, EcsError> {
    let mut found = None;
    for (code, value) in opt_options(msg)? {
        if code == ECS_CODE {
            if found.is_some() {
                return Err(EcsError::Duplicate);
            }
            found = Some(validate(value)?);
        }
    }
    Ok(found)
}

/// The options of a message's OPT records (none without one), in order.
pub fn opt_options(msg: &[u8]) -> Result<Vec<(u16, &[u8])>, EcsError> {
    if msg.len() < 12 {
        return Err(EcsError::Truncated);
    }
    let mut r = Cursor::new(msg, 12);
    let count = |i: usize| u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]);
    for _ in 0..count(0) {
        r.skip_name()?;
        r.take(4)?;
    }
    let records = usize::from(count(1)) + usize::from(count(2)) + usize::from(count(3));
    let mut found = Vec::new();
    for _ in 0..records {
        r.skip_name()?;
        let rtype = r.u16()?;
        r.take(6)?;
        let rdlen = usize::from(r.u16()?);
        let rdata = r.take(rdlen)?;
        if rtype == OPT {
            found.extend(options(rdata)?);
        }
    }
    Ok(found)
}

fn options(mut rdata: &[u8]) -> Result<Vec<(u16, &[u8])>, EcsError> {
    let mut out = Vec::new();
    while !rdata.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = rdata else {
            return Err(EcsError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if rest.len() < len {
            return Err(EcsError::Truncated);
        }
        out.push((u16::from_be_bytes([*c0, *c1]), &rest[..len]));
        rdata = &rest[len..];
    }
    Ok(out)
}

/// Checks one ECS option's value (family, prefixes, address) as RFC 7871 §6 asks.
pub fn validate(data: &[u8]) -> Result<ClientSubnet, EcsError> {
    let [f0, f1, source, scope, addr @ ..] = data else {
        return Err(EcsError::Truncated);
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let width = match family {
        1 => 32,
        2 => 128,
        f => return Err(EcsError::Family(f)),
    };
    if *source > width {
        return Err(EcsError::SourcePrefix(*source));
    }
    if *scope != 0 {
        return Err(EcsError::ScopeInQuery(*scope));
    }
    let want = usize::from(source.div_ceil(8));
    if addr.len() != want {
        return Err(EcsError::AddressLength {
            got: addr.len(),
            want,
        });
    }
    let mut octets = [0u8; 16];
    octets[..want].copy_from_slice(addr);
    let spare = want * 8 - usize::from(*source);
    if spare > 0 && addr[want - 1] & ((1u8 << spare) - 1) != 0 {
        return Err(EcsError::HostBits);
    }
    let address = if family == 1 {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(ClientSubnet {
        address,
        source_prefix: *source,
    })
}

/// Reads a message from a position on, never past its end.
pub struct Cursor<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(msg: &'a [u8], pos: usize) -> Self {
        Self { msg, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], EcsError> {
        let end = self.pos.checked_add(n).ok_or(EcsError::Truncated)?;
        let s = self.msg.get(self.pos..end).ok_or(EcsError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub fn u16(&mut self) -> Result<u16, EcsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips a name in place; a compression pointer ends it (we never follow one).
    pub fn skip_name(&mut self) -> Result<(), EcsError> {
        loop {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & 0xC0 == 0xC0 => {
                    self.take(1)?;
                    return Ok(());
                }
                l => {
                    self.take(usize::from(l & 0x3F))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.` with one OPT record carrying `opts`.
    fn query(opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0]);
        m.extend_from_slice(&(opts.len() as u16).to_be_bytes());
        m.extend_from_slice(opts);
        m
    }

    fn ecs(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
        let mut o = vec![0, 8];
        o.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
        o.extend_from_slice(&family.to_be_bytes());
        o.extend_from_slice(&[source, scope]);
        o.extend_from_slice(addr);
        o
    }

    #[test]
    fn reads_ipv4_and_ipv6_subnets() {
        let got = parse(&query(&ecs(1, 16, 0, &[81, 240]))).unwrap().unwrap();
        assert_eq!(got.address, IpAddr::from([81, 240, 0, 0]));
        assert_eq!(got.source_prefix, 16);
        let got = parse(&query(&ecs(2, 33, 0, &[0x20, 1, 0x0d, 0xb8, 0x80])))
            .unwrap()
            .unwrap();
        assert_eq!(got.address, "2001:db8:8000::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn zero_prefix_and_no_option_are_fine() {
        let got = parse(&query(&ecs(1, 0, 0, &[]))).unwrap().unwrap();
        assert_eq!(got.source_prefix, 0);
        assert_eq!(parse(&query(&[])).unwrap(), None);
        assert_eq!(parse(&query(&[0, 10, 0, 0])).unwrap(), None, "other option");
    }

    #[test]
    fn rejects_what_rfc7871_rejects() {
        let bad = |o: Vec<u8>| parse(&query(&o)).unwrap_err();
        assert_eq!(bad(ecs(3, 8, 0, &[1])), EcsError::Family(3));
        assert_eq!(
            bad(ecs(1, 33, 0, &[1, 2, 3, 4, 5])),
            EcsError::SourcePrefix(33)
        );
        assert_eq!(bad(ecs(1, 24, 24, &[1, 2, 3])), EcsError::ScopeInQuery(24));
        assert!(matches!(
            bad(ecs(1, 24, 0, &[1, 2, 3, 4])),
            EcsError::AddressLength { .. }
        ));
        assert!(matches!(
            bad(ecs(1, 24, 0, &[1, 2])),
            EcsError::AddressLength { .. }
        ));
        assert_eq!(bad(ecs(1, 12, 0, &[10, 0x1f])), EcsError::HostBits);
        let mut two = ecs(1, 8, 0, &[10]);
        two.extend(ecs(1, 8, 0, &[11]));
        assert_eq!(bad(two), EcsError::Duplicate);
        assert_eq!(bad(vec![0, 8, 0, 9, 0]), EcsError::Truncated);
    }

    #[test]
    fn never_panics_on_cut_messages() {
        let full = query(&ecs(1, 24, 0, &[1, 2, 3]));
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
    }
}
