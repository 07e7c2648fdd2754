//! Authoritative answers (RFC 1034 §4.3.2): AA set, NXDOMAIN or NODATA with the zone's
//! SOA in the authority section, CNAMEs followed within the zone, wildcards (RFC 4592),
//! the question echoed as asked (case kept), EDNS(0) with the client's buffer size and
//! TC over UDP when an answer does not fit, REFUSED outside the hosted zones (never a
//! resolver), FORMERR for what does not parse.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zones::{Zone, Zones};

/// The EDNS payload size this server offers (the 2020 DNS flag day's value).
pub const EDNS_PAYLOAD: u16 = 1232;
/// CNAMEs followed in one answer.
const MAX_CHAIN: usize = 8;

/// The answer to one request, or None to send nothing (a response, or too short to
/// carry an ID).
pub fn answer(zones: &Zones, request: &[u8], udp: bool) -> Option<Vec<u8>> {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([request[0], request[1]]);
    let Ok(msg) = Message::from_vec(request) else {
        let op = OpCode::from_u8((request[2] >> 3) & 0x0f);
        return Message::error_msg(id, op, ResponseCode::FormErr).to_vec().ok();
    };
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.queries = msg.queries.clone();
    if msg.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(e);
    }
    let limit = if udp { usize::from(msg.max_payload().clamp(512, 4096)) } else { 65_535 };
    if msg.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    }
    let [q] = msg.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp.to_vec().ok();
    };
    let qname = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let Some(zone) = zones.find(&qname).filter(|_| q.query_class() == DNSClass::IN || q.query_class() == DNSClass::ANY)
    else {
        resp.metadata.response_code = ResponseCode::Refused;
        return resp.to_vec().ok();
    };
    resp.metadata.authoritative = true;
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers go only to configured secondaries; none are configured yet.
        resp.metadata.response_code = ResponseCode::Refused;
        return resp.to_vec().ok();
    }
    resolve(zone, q.name(), &qname, qtype, &mut resp);
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too big for the client's buffer: the question alone, TC set (RFC 2181 §9).
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    resp.to_vec().ok()
}

/// The empty truncated answer a rate-limited client gets instead (RRL's "slip"): it
/// carries nothing worth amplifying and tells a real client to ask over TCP.
pub fn slip(request: &[u8]) -> Option<Vec<u8>> {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let msg = Message::from_vec(request).ok()?;
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.truncation = true;
    resp.queries = msg.queries;
    resp.to_vec().ok()
}

/// Fills the answer for `qname` in `zone`.
fn resolve(zone: &Zone, asked: &Name, qname: &str, qtype: RecordType, resp: &mut Message) {
    let mut name = qname.to_string();
    let mut owner = asked.clone();
    for _ in 0..MAX_CHAIN {
        let records = match zone.names.get(&name) {
            Some(r) => r,
            None if zone.nonterminals.contains(&name) => {
                nodata(zone, resp);
                return;
            }
            None => match wildcard(zone, &name) {
                // A wildcard's records answer under the name asked (RFC 4592 §3.3.1).
                Some(r) => r,
                None => {
                    // NXDOMAIN only for the name asked; after a CNAME the answer stands.
                    if resp.answers.is_empty() {
                        resp.metadata.response_code = ResponseCode::NXDomain;
                    }
                    resp.add_authority(soa_for_negative(zone));
                    return;
                }
            },
        };
        let matching: Vec<&Record> =
            records.iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype).collect();
        if !matching.is_empty() {
            for r in matching {
                let mut r = r.clone();
                // The owner as asked: its case, and the query name for a wildcard.
                r.name = owner.clone();
                resp.add_answer(r);
            }
            return;
        }
        let cname = records.iter().find_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        });
        match cname {
            Some(target) => {
                let mut r =
                    records.iter().find(|r| r.record_type() == RecordType::CNAME).cloned().unwrap_or_else(|| {
                        Record::from_rdata(
                            owner.clone(),
                            0,
                            RData::CNAME(hickory_proto::rr::rdata::CNAME(target.clone())),
                        )
                    });
                r.name = owner.clone();
                resp.add_answer(r);
                let t = target.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                // A target outside this zone is for the client's resolver to follow.
                if zones_contains(zone, &t) {
                    name = t;
                    owner = target;
                    continue;
                }
                return;
            }
            None => {
                nodata(zone, resp);
                return;
            }
        }
    }
}

fn zones_contains(zone: &Zone, name: &str) -> bool {
    name == zone.apex || name.ends_with(&format!(".{}", zone.apex))
}

/// NODATA: no error, no answer, the SOA in the authority section.
fn nodata(zone: &Zone, resp: &mut Message) {
    resp.add_authority(soa_for_negative(zone));
}

/// The SOA for a negative answer, its TTL the smaller of its own and its minimum
/// (RFC 2308 §3).
fn soa_for_negative(zone: &Zone) -> Record {
    let mut soa = zone.soa.clone();
    if let RData::SOA(s) = &soa.data {
        soa.ttl = soa.ttl.min(s.minimum);
    }
    soa
}

/// The records of the closest wildcard `*.<closest encloser>` for a missing name.
fn wildcard<'z>(zone: &'z Zone, name: &str) -> Option<&'z Vec<Record>> {
    let mut cur = name;
    while let Some((_, parent)) = cur.split_once('.') {
        if parent.len() < zone.apex.len() {
            return None;
        }
        // The closest encloser is the first existing ancestor; only its wildcard applies.
        if zone.names.contains_key(parent) || zone.nonterminals.contains(parent) {
            return zone.names.get(&format!("*.{parent}"));
        }
        cur = parent;
    }
    None
}
