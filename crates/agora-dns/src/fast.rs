//! The hot path for the everyday query: one question of class IN, an uncompressed
//! name, EDNS without options or none. Answers for names that exist come from wire
//! responses the full path (`answer`) made the first time (kept with the zones, so a
//! change starts afresh), patched with the ID, the RD bit and the question as asked;
//! names that do not exist get the zone's SOA after the question. Hand-parsed, because
//! a general decoder allocates per message; anything else takes the full path.

use std::collections::HashMap;
use std::sync::RwLock;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::answer;
use crate::zones::{Zone, Zones};

/// Responses kept per zone build (names × types × EDNS forms); past it the full path
/// answers (a client asking every type at every name cannot grow memory without end).
const MAX_CACHED: usize = 100_000;

/// A request the fast path can answer.
struct Request {
    id: [u8; 2],
    rd: bool,
    /// Where the question's name ends (it starts at 12).
    name_end: usize,
    /// The name in lower case, wire form.
    lower: [u8; 256],
    lower_len: usize,
    qtype: u16,
    /// EDNS: the client's payload size and DO bit.
    edns: Option<(u16, bool)>,
}

fn parse(req: &[u8]) -> Option<Request> {
    if req.len() < 17 || req[2] & 0xf8 != 0 || u16::from_be_bytes([req[4], req[5]]) != 1 || req[6..10] != [0; 4] {
        return None;
    }
    let arcount = u16::from_be_bytes([req[10], req[11]]);
    if arcount > 1 {
        return None;
    }
    let mut lower = [0u8; 256];
    let mut i = 12;
    loop {
        let len = usize::from(*req.get(i)?);
        if len == 0 {
            lower[i - 12] = 0;
            i += 1;
            break;
        }
        // Compression pointers and label types other than plain: the full path.
        if len > 63 || i - 12 + len + 1 >= 255 {
            return None;
        }
        lower[i - 12] = len as u8;
        for (j, b) in req.get(i + 1..i + 1 + len)?.iter().enumerate() {
            // A zero byte would break the canonical sort keys; such names take the full path.
            if *b == 0 {
                return None;
            }
            lower[i - 12 + 1 + j] = b.to_ascii_lowercase();
        }
        i += len + 1;
    }
    let name_end = i;
    let qtype = u16::from_be_bytes([*req.get(i)?, *req.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*req.get(i + 2)?, *req.get(i + 3)?]);
    // Meta types (AXFR, IXFR, ANY...) and type 0: the full path.
    if qclass != 1 || qtype == 0 || (128..=255).contains(&qtype) {
        return None;
    }
    i += 4;
    let edns = if arcount == 1 {
        // OPT: root name, type 41, payload, extended RCODE and version 0, flags, no options.
        let opt = req.get(i..i + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 || opt[9..11] != [0, 0] {
            return None;
        }
        i += 11;
        Some((u16::from_be_bytes([opt[3], opt[4]]), opt[7] & 0x80 != 0))
    } else {
        None
    };
    if i != req.len() {
        return None;
    }
    Some(Request { id: [req[0], req[1]], rd: req[2] & 1 != 0, name_end, lower, lower_len: name_end - 12, qtype, edns })
}

/// Kept responses: lower-case wire name, type and EDNS form -> the whole response
/// (ID 0, RD 0, the question in lower case).
type Kept = HashMap<Box<[u8]>, Box<[u8]>>;

/// Per zone build: the responses made so far, and each zone's negative answer.
#[derive(Default)]
pub struct Cache {
    answers: RwLock<Kept>,
    /// Lower-case wire apex -> zone index.
    apexes: HashMap<Box<[u8]>, usize>,
    /// Per zone: what its negative answers are made of (none for zones with wildcards
    /// or delegations, whose negative answers depend on more than the name).
    negative: Vec<Option<Negative>>,
}

/// A zone's negative answers in wire form, names uncompressed.
struct Negative {
    /// The SOA as a negative answer carries it.
    soa: Vec<u8>,
    signed: Option<Denial>,
}

/// What signed denials are made of (RFC 4035 §3.1.3): the SOA's signatures, and each
/// NSEC with its signatures in canonical order, to find the one spanning a name.
struct Denial {
    soa_sigs: Vec<u8>,
    soa_sig_count: u16,
    /// (canonical sort key of the owner, NSEC and its RRSIGs, how many records).
    chain: Vec<(Vec<u8>, Vec<u8>, u16)>,
    /// Names that exist (owners and empty non-terminals), lower-case wire.
    exists: std::collections::HashSet<Box<[u8]>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fast::Cache")
    }
}

impl Cache {
    pub fn new(zones: &[Zone]) -> Cache {
        let mut apexes = HashMap::new();
        let mut negative = Vec::new();
        for (i, z) in zones.iter().enumerate() {
            apexes.insert(wire(&z.apex_name).into_boxed_slice(), i);
            let has_wildcard = z.names.keys().any(|n| n.starts_with("*."));
            negative.push(if has_wildcard || !z.cuts.is_empty() { None } else { negative_parts(z) });
        }
        Cache { answers: RwLock::new(HashMap::new()), apexes, negative }
    }
}

/// Records in wire form, names uncompressed (they are placed anywhere in a response).
fn records_wire<'a>(records: impl IntoIterator<Item = &'a hickory_proto::rr::Record>) -> Option<(Vec<u8>, u16)> {
    let mut buf = Vec::new();
    let mut n = 0u16;
    {
        let mut enc = BinEncoder::new(&mut buf);
        let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
        for r in records {
            r.emit(&mut enc).ok()?;
            n += 1;
        }
    }
    Some((buf, n))
}

/// The canonical order's sort key of a lower-case wire name (RFC 4034 §6.1): labels
/// from the right, each closed by a zero byte, which sorts before any label byte.
fn sort_key(name: &[u8]) -> Vec<u8> {
    let mut labels = Vec::new();
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        if len == 0 {
            break;
        }
        labels.push(&name[i + 1..(i + 1 + usize::from(len)).min(name.len())]);
        i += usize::from(len) + 1;
    }
    let mut key = Vec::with_capacity(name.len() + 1);
    for l in labels.iter().rev() {
        key.extend_from_slice(l);
        key.push(0);
    }
    key
}

fn negative_parts(z: &Zone) -> Option<Negative> {
    let (soa, _) = records_wire([&answer::soa_for_negative(z)])?;
    let signed = if z.signed {
        let (soa_sigs, soa_sig_count) = records_wire(z.sigs_of(&z.apex, RecordType::SOA))?;
        let mut chain = Vec::new();
        for (name, key) in &z.nsec {
            let nsec = z.names.get(key)?.iter().filter(|r| r.record_type() == RecordType::NSEC);
            let (bytes, n) = records_wire(nsec.chain(z.sigs_of(key, RecordType::NSEC)))?;
            chain.push((sort_key(&wire(name)), bytes, n));
        }
        let exists = z
            .names
            .keys()
            .chain(z.nonterminals.iter())
            .filter_map(|n| Name::from_ascii(format!("{n}.")).ok())
            .map(|n| wire(&n).into_boxed_slice())
            .collect();
        Some(Denial { soa_sigs, soa_sig_count, chain, exists })
    } else {
        None
    };
    Some(Negative { soa, signed })
}

impl Denial {
    /// The NSEC (with signatures) whose span holds `name`.
    fn covering(&self, name: &[u8]) -> Option<&(Vec<u8>, Vec<u8>, u16)> {
        let key = sort_key(name);
        let i = self.chain.partition_point(|(k, _, _)| *k <= key);
        self.chain.get(i.checked_sub(1)?)
    }

    /// The nearest ancestor of `name` that exists (the zone's apex at worst).
    fn closest_encloser<'n>(&self, name: &'n [u8]) -> Option<&'n [u8]> {
        let mut i = usize::from(*name.first()?) + 1;
        while i < name.len() {
            if self.exists.contains(&name[i..]) {
                return Some(&name[i..]);
            }
            i += usize::from(name[i]) + 1;
        }
        None
    }
}

/// A name's lower-case wire form.
fn wire(n: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// The answer from the fast path, or None for the full path.
pub fn answer(zones: &Zones, req: &[u8], udp: bool) -> Option<Vec<u8>> {
    let r = parse(req)?;
    let cache = zones.fast.as_ref()?;
    let form: u8 = match r.edns {
        None => 0,
        Some((_, false)) => 1,
        Some((_, true)) => 2,
    };
    let limit = match (udp, r.edns) {
        (false, _) => 65_535,
        (true, None) => 512,
        (true, Some((p, _))) => usize::from(p.clamp(512, 4096)),
    };
    let mut key = [0u8; 259];
    let klen = r.lower_len + 3;
    key[..r.lower_len].copy_from_slice(&r.lower[..r.lower_len]);
    key[r.lower_len..r.lower_len + 2].copy_from_slice(&r.qtype.to_be_bytes());
    key[r.lower_len + 2] = form;
    let key = &key[..klen];
    let hit = cache.answers.read().ok().and_then(|m| m.get(key).map(|b| patch(b, &r, req)));
    if let Some(out) = hit {
        return (out.len() <= limit).then_some(out);
    }
    let name = &r.lower[..r.lower_len];
    let dotted = dotted(name)?;
    let zone_i = zone_of(cache, name)?;
    let zone = zones.zones.get(zone_i)?;
    if zone.names.contains_key(&dotted) && !dotted.starts_with("*.") {
        // A name that exists: the full path makes the response once, for the name in
        // lower case, and it is kept.
        let full = canonical_response(zones, &dotted, r.qtype, r.edns.map(|e| e.1))?;
        let out = patch(&full, &r, req);
        if let Ok(mut m) = cache.answers.write()
            && m.len() < MAX_CACHED
        {
            m.insert(key.into(), full.into_boxed_slice());
        }
        return (out.len() <= limit).then_some(out);
    }
    // Not there: NXDOMAIN (NODATA for an empty non-terminal) with the SOA, and with
    // DNSSEC the NSEC records that prove it.
    let neg = cache.negative.get(zone_i)?.as_ref()?;
    let ent = zone.nonterminals.contains(&dotted);
    let mut proofs: Vec<&(Vec<u8>, Vec<u8>, u16)> = Vec::new();
    let mut count = 1u16;
    let denial = if form == 2 { Some(neg.signed.as_ref()?) } else { None };
    if let Some(d) = denial {
        count += d.soa_sig_count;
        proofs.push(d.covering(name)?);
        if !ent {
            // And no wildcard at the closest encloser that could have made the name.
            let mut star = vec![1, b'*'];
            star.extend_from_slice(d.closest_encloser(name)?);
            let w = d.covering(&star)?;
            if !std::ptr::eq(w, proofs[0]) {
                proofs.push(w);
            }
        }
        count += proofs.iter().map(|p| p.2).sum::<u16>();
    }
    let mut out =
        Vec::with_capacity(r.name_end + 4 + neg.soa.len() + 11 + proofs.iter().map(|p| p.1.len()).sum::<usize>());
    out.extend_from_slice(&r.id);
    // QR, AA, RD as asked; RCODE.
    out.push(0x84 | u8::from(r.rd));
    out.push(if ent { 0 } else { 3 });
    out.extend_from_slice(&[0, 1, 0, 0]);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, u8::from(r.edns.is_some())]);
    out.extend_from_slice(&req[12..r.name_end + 4]);
    out.extend_from_slice(&neg.soa);
    if let Some(d) = denial {
        out.extend_from_slice(&d.soa_sigs);
        for p in &proofs {
            out.extend_from_slice(&p.1);
        }
    }
    if r.edns.is_some() {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&answer::EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, if form == 2 { 0x80 } else { 0 }, 0, 0, 0]);
    }
    (out.len() <= limit).then_some(out)
}

/// The zone a lower-case wire name falls in: its longest suffix that is an apex.
fn zone_of(cache: &Cache, name: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < name.len() {
        if let Some(z) = cache.apexes.get(&name[i..]) {
            return Some(*z);
        }
        if name[i] == 0 {
            break;
        }
        i += usize::from(name[i]) + 1;
    }
    None
}

/// A wire name as the zones key it: dotted, lower case, no final dot.
fn dotted(name: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        if len == 0 {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(std::str::from_utf8(name.get(i + 1..i + 1 + usize::from(len))?).ok()?);
        i += usize::from(len) + 1;
    }
    Some(out)
}

/// The full path's response to a lower-case question (ID 0, RD clear).
fn canonical_response(zones: &Zones, dotted: &str, qtype: u16, edns: Option<bool>) -> Option<Vec<u8>> {
    let name = Name::from_ascii(format!("{dotted}.")).ok()?;
    let mut m = Message::query();
    m.metadata.id = 0;
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(name, RecordType::from(qtype)));
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    answer::answer(zones, &m.to_vec().ok()?, false)
}

/// A kept response made the client's: its ID, RD bit and question (the case it asked).
fn patch(full: &[u8], r: &Request, req: &[u8]) -> Vec<u8> {
    let mut out = full.to_vec();
    out[0] = r.id[0];
    out[1] = r.id[1];
    out[2] = (out[2] & !1) | u8::from(r.rd);
    out[12..r.name_end].copy_from_slice(&req[12..r.name_end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_queries_are_parsed() {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii("Mx.Example.ORG.").unwrap(), RecordType::MX));
        let q = m.to_vec().unwrap();
        let r = parse(&q).expect("plain");
        assert_eq!((&r.lower[..r.lower_len], r.qtype, r.edns), (&b"\x02mx\x07example\x03org\x00"[..], 15, None));
        let mut e = Edns::new();
        e.set_dnssec_ok(true);
        e.set_max_payload(1400);
        m.set_edns(e);
        assert_eq!(parse(&m.to_vec().unwrap()).expect("edns").edns, Some((1400, true)));
        // Trailing bytes, a response, a second question, AXFR: the full path.
        let mut long = q.clone();
        long.push(0);
        assert!(parse(&long).is_none());
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(parse(&resp).is_none());
        m.add_query(Query::query(Name::from_ascii("a.example.org.").unwrap(), RecordType::A));
        assert!(parse(&m.to_vec().unwrap()).is_none());
        let mut x = Message::query();
        x.add_query(Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::AXFR));
        assert!(parse(&x.to_vec().unwrap()).is_none());
        assert!(parse(&q[..q.len() - 1]).is_none());
    }
}
