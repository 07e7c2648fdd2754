//! The endpoint mapper (C706 Appendix O, e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0):
//! ept_lookup with its inquiry types and entry handles, ept_map from a tower to the
//! towers of the interface's TCP endpoints, ept_lookup_handle_free. Towers are the
//! protocol's floors: interface, NDR, connection-oriented RPC, TCP port, IPv4 address.

use std::net::{IpAddr, Ipv4Addr};

use crate::assoc::{BoxFuture, Call, Interface, status};
use crate::ndr::{NdrError, NdrResult, Reader, Writer};
use crate::pdu::{self, Syntax, Uuid};

/// EPT_S_NOT_REGISTERED: nothing matches.
pub const NOT_REGISTERED: u32 = 0x16c9_a0d6;

pub fn syntax() -> Syntax {
    Syntax { uuid: Uuid::parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa").unwrap_or_default(), version: 3 }
}

/// One interface served on one TCP port.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub syntax: Syntax,
    pub annotation: String,
    pub port: u16,
}

/// A tower's floors, as ept_map reads a client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tower {
    pub interface: Syntax,
    pub transfer: Syntax,
    /// 0x0b for connection-oriented RPC.
    pub protocol: u8,
    /// 0x07 for TCP, with its port.
    pub transport: Option<(u8, u16)>,
}

fn floor(out: &mut Vec<u8>, lhs: &[u8], rhs: &[u8]) {
    out.extend_from_slice(&(lhs.len() as u16).to_le_bytes());
    out.extend_from_slice(lhs);
    out.extend_from_slice(&(rhs.len() as u16).to_le_bytes());
    out.extend_from_slice(rhs);
}

fn syntax_floor(out: &mut Vec<u8>, s: &Syntax) {
    let mut lhs = vec![0x0d];
    lhs.extend_from_slice(&s.uuid.0);
    lhs.extend_from_slice(&((s.version & 0xffff) as u16).to_le_bytes());
    floor(out, &lhs, &((s.version >> 16) as u16).to_le_bytes());
}

/// The five floors of ncacn_ip_tcp for `syntax` at `ip`:`port` (towers are always
/// little-endian, except the port and address, which are in network order).
pub fn tower(syntax: &Syntax, ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut t = 5u16.to_le_bytes().to_vec();
    syntax_floor(&mut t, syntax);
    syntax_floor(&mut t, &pdu::ndr());
    floor(&mut t, &[0x0b], &[0, 0]);
    floor(&mut t, &[0x07], &port.to_be_bytes());
    floor(&mut t, &[0x09], &ip.octets());
    t
}

/// Reads a client's tower: the interface, the transfer syntax, the protocol floors.
pub fn parse_tower(t: &[u8]) -> Option<Tower> {
    let n = u16::from_le_bytes(t.get(0..2)?.try_into().ok()?);
    let mut at = 2;
    let mut floors = Vec::new();
    for _ in 0..n.min(8) {
        let l = usize::from(u16::from_le_bytes(t.get(at..at + 2)?.try_into().ok()?));
        let lhs = t.get(at + 2..at + 2 + l)?;
        at += 2 + l;
        let r = usize::from(u16::from_le_bytes(t.get(at..at + 2)?.try_into().ok()?));
        let rhs = t.get(at + 2..at + 2 + r)?;
        at += 2 + r;
        floors.push((lhs, rhs));
    }
    let syn = |(lhs, rhs): (&[u8], &[u8])| -> Option<Syntax> {
        if lhs.len() != 19 || lhs[0] != 0x0d || rhs.len() < 2 {
            return None;
        }
        let uuid = Uuid(lhs[1..17].try_into().ok()?);
        let major = u16::from_le_bytes([lhs[17], lhs[18]]);
        let minor = u16::from_le_bytes([rhs[0], rhs[1]]);
        Some(Syntax { uuid, version: u32::from(major) | u32::from(minor) << 16 })
    };
    let interface = syn(*floors.first()?)?;
    let transfer = syn(*floors.get(1)?)?;
    let protocol = *floors.get(2)?.0.first()?;
    let transport = floors.get(3).and_then(|(lhs, rhs)| {
        let port = u16::from_be_bytes(rhs.get(0..2)?.try_into().ok()?);
        Some((*lhs.first()?, port))
    });
    Some(Tower { interface, transfer, protocol, transport })
}

/// The endpoint mapper over the server's endpoints.
pub struct Mapper {
    pub endpoints: Vec<Endpoint>,
}

/// A lookup's position, kept under its entry handle.
struct Position(usize);

fn new_handle() -> [u8; 16] {
    let mut h = [0u8; 16];
    while h == [0; 16] {
        let _ = getrandom::fill(&mut h);
    }
    h
}

/// Whether `have` answers a request for `want` under `vers_option` (C706 O.2.2).
fn version_matches(have: u32, want: u32, option: u32) -> bool {
    let (hm, hn) = (have & 0xffff, have >> 16);
    let (wm, wn) = (want & 0xffff, want >> 16);
    match option {
        1 => true,
        2 => hm == wm && hn >= wn,
        3 => hm == wm && hn == wn,
        4 => hm == wm,
        5 => (hm, hn) <= (wm, wn),
        _ => false,
    }
}

impl Mapper {
    fn local_v4(call: &Call<'_>) -> Ipv4Addr {
        match call.local {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => {
                a.to_ipv4_mapped().unwrap_or(if a.is_loopback() { Ipv4Addr::LOCALHOST } else { Ipv4Addr::UNSPECIFIED })
            }
        }
    }

    fn lookup(&self, call: &Call<'_>) -> NdrResult<Vec<u8>> {
        let mut r = Reader::new(call.stub, call.little);
        let inquiry = r.u32()?;
        let object = match r.pointer()? {
            Some(_) => Some(r.uuid()?),
            None => None,
        };
        let ifid = match r.pointer()? {
            Some(_) => {
                let uuid = r.uuid()?;
                let (major, minor) = (r.u16()?, r.u16()?);
                Some(Syntax { uuid, version: u32::from(major) | u32::from(minor) << 16 })
            }
            None => None,
        };
        let vers_option = r.u32()?;
        let handle = r.context_handle()?;
        let asked = r.u32()?;
        let max = (asked as usize).clamp(1, 500);
        // Our interfaces have no objects: an object-only inquiry matches the nil one.
        let nil_object = object.is_none_or(|o| o == Uuid::default());
        let matches: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| match inquiry {
                0 => true,
                1 => ifid.is_some_and(|i| {
                    i.uuid == e.syntax.uuid && version_matches(e.syntax.version, i.version, vers_option)
                }),
                2 => nil_object,
                3 => {
                    nil_object
                        && ifid.is_some_and(|i| {
                            i.uuid == e.syntax.uuid && version_matches(e.syntax.version, i.version, vers_option)
                        })
                }
                _ => false,
            })
            .collect();
        let start = if handle == [0; 16] {
            0
        } else {
            let mut handles = call.group.handles.lock().unwrap_or_else(|p| p.into_inner());
            // Only a lookup's own handle is taken (another interface's stays).
            let at = handles.get(&handle).and_then(|b| b.downcast_ref::<Position>()).map(|p| p.0);
            match at {
                Some(at) => {
                    handles.remove(&handle);
                    at
                }
                None => return Err(NdrError("unknown entry handle")),
            }
        };
        let batch: Vec<&Endpoint> = matches.iter().skip(start).take(max).copied().collect();
        let next = start + batch.len();
        let handle_out = if next < matches.len() {
            let h = new_handle();
            if !call.group.insert_handle(h, Box::new(Position(next))) {
                return Err(NdrError("too many lookups in progress"));
            }
            Some(h)
        } else {
            None
        };
        let ip = Self::local_v4(call);
        let mut w = Writer::default();
        w.context_handle(handle_out);
        w.u32(batch.len() as u32);
        // The array's size is the client's max_ents, as its IDL says.
        w.u32(asked);
        w.u32(0);
        w.u32(batch.len() as u32);
        for e in &batch {
            w.uuid(&Uuid::default());
            w.pointer(true);
            let mut a = e.annotation.as_bytes()[..e.annotation.len().min(63)].to_vec();
            a.push(0);
            w.u32(0);
            w.u32(a.len() as u32);
            w.bytes(&a);
        }
        for e in &batch {
            let t = tower(&e.syntax, ip, e.port);
            w.u32(t.len() as u32);
            w.u32(t.len() as u32);
            w.bytes(&t);
        }
        w.u32(if batch.is_empty() { NOT_REGISTERED } else { 0 });
        Ok(w.into_bytes())
    }

    fn map(&self, call: &Call<'_>) -> NdrResult<Vec<u8>> {
        let mut r = Reader::new(call.stub, call.little);
        if r.pointer()?.is_some() {
            r.uuid()?;
        }
        let tower_in = match r.pointer()? {
            Some(_) => {
                let n = r.count(1)?;
                let len = r.u32()? as usize;
                if len != n {
                    return Err(NdrError("tower length"));
                }
                parse_tower(r.take(len)?)
            }
            None => None,
        };
        r.align(4)?;
        let _handle = r.context_handle()?;
        let asked = r.u32()?;
        let max = (asked as usize).clamp(1, 500);
        let ip = Self::local_v4(call);
        let towers: Vec<Vec<u8>> = match &tower_in {
            Some(t) if t.transfer == pdu::ndr() && t.protocol == 0x0b && t.transport.is_none_or(|(p, _)| p == 0x07) => {
                self.endpoints
                    .iter()
                    .filter(|e| {
                        e.syntax.uuid == t.interface.uuid && version_matches(e.syntax.version, t.interface.version, 2)
                    })
                    .take(max)
                    .map(|e| tower(&e.syntax, ip, e.port))
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut w = Writer::default();
        w.context_handle(None);
        w.u32(towers.len() as u32);
        w.u32(asked);
        w.u32(0);
        w.u32(towers.len() as u32);
        for _ in &towers {
            w.pointer(true);
        }
        for t in &towers {
            w.u32(t.len() as u32);
            w.u32(t.len() as u32);
            w.bytes(t);
        }
        w.u32(if towers.is_empty() { NOT_REGISTERED } else { 0 });
        Ok(w.into_bytes())
    }

    fn free(&self, call: &Call<'_>) -> NdrResult<Vec<u8>> {
        let mut r = Reader::new(call.stub, call.little);
        let handle = r.context_handle()?;
        call.group.handles.lock().unwrap_or_else(|p| p.into_inner()).remove(&handle);
        let mut w = Writer::default();
        w.context_handle(None);
        w.u32(0);
        Ok(w.into_bytes())
    }
}

impl Interface for Mapper {
    fn syntax(&self) -> Syntax {
        syntax()
    }
    fn annotation(&self) -> &'static str {
        "Endpoint mapper"
    }
    fn anonymous(&self) -> bool {
        true
    }
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Vec<u8>, u32>> {
        Box::pin(async move {
            let out = match call.opnum {
                2 => self.lookup(&call),
                3 => self.map(&call),
                4 => self.free(&call),
                // insert, delete, lookup/map via other calls, management: not offered.
                0 | 1 | 5 | 6 => return Err(status::ACCESS_DENIED),
                _ => return Err(status::OP_RNG_ERROR),
            };
            out.map_err(|_| status::BAD_STUB_DATA)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn towers_read_back() {
        let nspi = Syntax { uuid: Uuid::parse("f5cc5a18-4264-101a-8c59-08002b2f8426").expect("uuid"), version: 56 };
        let t = tower(&nspi, Ipv4Addr::new(127, 0, 0, 1), 6004);
        let back = parse_tower(&t).expect("parses");
        assert_eq!(back.interface, nspi);
        assert_eq!(back.transfer, pdu::ndr());
        assert_eq!(back.protocol, 0x0b);
        assert_eq!(back.transport, Some((0x07, 6004)));
        let mut four = t[..t.len() - 9].to_vec();
        four[0] = 4;
        assert!(parse_tower(&four).is_some(), "the address floor is not needed to map");
        assert!(parse_tower(&t[..t.len() - 3]).is_none(), "a cut floor is not read");
        assert!(parse_tower(&t[..20]).is_none());
    }

    #[test]
    fn version_options() {
        assert!(version_matches(56, 56, 3));
        assert!(version_matches(56 | 1 << 16, 56, 2));
        assert!(!version_matches(56, 56 | 1 << 16, 2));
        assert!(!version_matches(57, 56, 4));
        assert!(version_matches(1, 2, 5));
    }
}
