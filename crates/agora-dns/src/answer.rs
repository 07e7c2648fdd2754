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
    // The question comes back when there is one; a request with many gets FORMERR
    // without them (echoing them would amplify).
    if msg.queries.len() == 1 {
        resp.queries = msg.queries.clone();
    }
    let dnssec_ok = msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    if msg.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e.set_dnssec_ok(dnssec_ok);
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
    if qtype == RecordType::AXFR || (qtype == RecordType::IXFR && udp) {
        // Transfers run over TCP (`transfer`); over UDP an IXFR gets the SOA alone,
        // which sends the secondary to TCP (RFC 1995 §2), and an AXFR is refused.
        if qtype == RecordType::IXFR {
            resp.add_answer(zone.soa.clone());
        } else {
            resp.metadata.response_code = ResponseCode::Refused;
        }
        return resp.to_vec().ok();
    }
    resolve(zone, q.name(), &qname, qtype, dnssec_ok && zone.signed, &mut resp);
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

/// Fills the answer for `qname` in `zone`; with `sec` (DO set, zone signed) the RRSIGs
/// and the NSEC records that prove what does not exist (RFC 4035 §3.1).
fn resolve(zone: &Zone, asked: &Name, qname: &str, qtype: RecordType, sec: bool, resp: &mut Message) {
    let mut name = qname.to_string();
    let mut owner = asked.clone();
    for _ in 0..MAX_CHAIN {
        // At or below a delegation the child's servers answer (a DS at the cut is ours).
        if let Some(cut) = zone.cut_of(&name)
            && !(cut == name && qtype == RecordType::DS)
        {
            if resp.answers.is_empty() {
                referral(zone, cut, sec, resp);
            }
            return;
        }
        let (key, records, wild) = match zone.names.get(&name) {
            Some(r) => (name.clone(), r, false),
            None if zone.nonterminals.contains(&name) => {
                nodata(zone, resp, sec);
                if sec {
                    prove_absent(zone, resp, &name);
                }
                return;
            }
            None => match wildcard(zone, &name) {
                // A wildcard's records answer under the name asked (RFC 4592 §3.3.1).
                Ok((star, r)) => (star, r, true),
                Err(closest) => {
                    // NXDOMAIN only for the name asked; after a CNAME the answer stands.
                    if resp.answers.is_empty() {
                        resp.metadata.response_code = ResponseCode::NXDomain;
                    }
                    resp.add_authority(soa_for_negative(zone));
                    if sec {
                        add_sigs(zone, resp, &zone.apex, RecordType::SOA, None, true);
                        // No such name, and no wildcard that could have made one.
                        prove_absent(zone, resp, &name);
                        prove_absent(zone, resp, &format!("*.{closest}"));
                    }
                    return;
                }
            },
        };
        let matching: Vec<&Record> =
            records.iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype).collect();
        if !matching.is_empty() {
            for r in &matching {
                let mut r = (*r).clone();
                // The owner as asked: its case, and the query name for a wildcard.
                r.name = owner.clone();
                resp.add_answer(r);
            }
            if sec {
                let mut types: Vec<RecordType> = matching.iter().map(|r| r.record_type()).collect();
                types.dedup();
                for t in types {
                    add_sigs(zone, resp, &key, t, Some(&owner), false);
                }
                if wild {
                    prove_absent(zone, resp, &name);
                }
            }
            return;
        }
        let cname = records.iter().find(|r| r.record_type() == RecordType::CNAME);
        match cname {
            Some(c) => {
                let RData::CNAME(target) = &c.data else { return };
                let target = target.0.clone();
                let mut r = c.clone();
                r.name = owner.clone();
                resp.add_answer(r);
                if sec {
                    add_sigs(zone, resp, &key, RecordType::CNAME, Some(&owner), false);
                    if wild {
                        prove_absent(zone, resp, &name);
                    }
                }
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
                nodata(zone, resp, sec);
                if sec {
                    // The name's own NSEC shows the type is not there.
                    add_nsec(zone, resp, &key);
                    if wild {
                        prove_absent(zone, resp, &name);
                    }
                }
                return;
            }
        }
    }
}

/// A referral (RFC 1034 §4.3.2): not authoritative, the delegation's NS in the
/// authority section with their addresses when they live below it (glue), and with
/// DNSSEC the cut's NSEC showing there is no DS (an unsigned child).
fn referral(zone: &Zone, cut: &str, sec: bool, resp: &mut Message) {
    resp.metadata.authoritative = false;
    let Some(records) = zone.names.get(cut) else { return };
    let ns: Vec<&Record> = records.iter().filter(|r| r.record_type() == RecordType::NS).collect();
    for r in &ns {
        resp.add_authority((*r).clone());
    }
    if sec {
        add_nsec(zone, resp, cut);
    }
    for r in ns {
        let RData::NS(target) = &r.data else { continue };
        let t = target.0.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        if t != cut && !t.ends_with(&format!(".{cut}")) {
            continue;
        }
        for glue in zone.names.get(&t).into_iter().flatten() {
            if matches!(glue.record_type(), RecordType::A | RecordType::AAAA) {
                resp.add_additional(glue.clone());
            }
        }
    }
}

fn zones_contains(zone: &Zone, name: &str) -> bool {
    name == zone.apex || name.ends_with(&format!(".{}", zone.apex))
}

/// NODATA: no error, no answer, the SOA in the authority section.
fn nodata(zone: &Zone, resp: &mut Message, sec: bool) {
    resp.add_authority(soa_for_negative(zone));
    if sec {
        add_sigs(zone, resp, &zone.apex, RecordType::SOA, None, true);
    }
}

/// The RRSIGs of an RRset (renamed to the owner asked), to the answer or authority.
fn add_sigs(zone: &Zone, resp: &mut Message, key: &str, t: RecordType, owner: Option<&Name>, authority: bool) {
    for sig in zone.sigs_of(key, t) {
        let mut sig = sig.clone();
        if let Some(o) = owner {
            sig.name = o.clone();
        }
        if authority {
            resp.add_authority(sig);
        } else {
            resp.add_answer(sig);
        }
    }
}

/// The NSEC owned by `key` and its RRSIG, to the authority section once.
fn add_nsec(zone: &Zone, resp: &mut Message, key: &str) {
    let Some(nsec) = zone.names.get(key).and_then(|r| r.iter().find(|r| r.record_type() == RecordType::NSEC)) else {
        return;
    };
    if resp.authorities.iter().any(|r| r.record_type() == RecordType::NSEC && r.name == nsec.name) {
        return;
    }
    resp.add_authority(nsec.clone());
    add_sigs(zone, resp, key, RecordType::NSEC, None, true);
}

/// The NSEC whose span covers `name` (which does not exist).
fn prove_absent(zone: &Zone, resp: &mut Message, name: &str) {
    let Ok(n) = Name::from_ascii(format!("{name}.")) else { return };
    if let Some(key) = zone.covering(&n) {
        let key = key.to_string();
        add_nsec(zone, resp, &key);
    }
}

/// The SOA for a negative answer, its TTL the smaller of its own and its minimum
/// (RFC 2308 §3).
pub(crate) fn soa_for_negative(zone: &Zone) -> Record {
    let mut soa = zone.soa.clone();
    if let RData::SOA(s) = &soa.data {
        soa.ttl = soa.ttl.min(s.minimum);
    }
    soa
}

/// The closest wildcard `*.<closest encloser>` for a missing name, with its records;
/// without one, the closest encloser (the nearest ancestor that exists).
fn wildcard<'z>(zone: &'z Zone, name: &str) -> Result<(String, &'z Vec<Record>), String> {
    let mut cur = name;
    while let Some((_, parent)) = cur.split_once('.') {
        if parent.len() < zone.apex.len() {
            break;
        }
        // The closest encloser is the first existing ancestor; only its wildcard applies.
        if zone.names.contains_key(parent) || zone.nonterminals.contains(parent) {
            let star = format!("*.{parent}");
            return match zone.names.get(&star) {
                Some(r) => Ok((star, r)),
                None => Err(parent.to_string()),
            };
        }
        cur = parent;
    }
    Err(zone.apex.clone())
}
