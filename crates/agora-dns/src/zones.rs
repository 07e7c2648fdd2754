//! The hosted zones as the server answers from them: the mail core's records per
//! domain, turned into DNS records and indexed by owner name, with the names that
//! exist only as parents of others (empty non-terminals, RFC 4592 §2.2.2).

use std::collections::{HashMap, HashSet};

use agora_mail::zone::{Data, Record as ZoneRecord};
use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, MX, NS, PTR, SOA, SRV, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

#[derive(Debug)]
pub struct Zone {
    /// Lower case, no trailing dot.
    pub apex: String,
    pub soa: Record,
    /// Owner name (lower case, no trailing dot) -> its records.
    pub names: HashMap<String, Vec<Record>>,
    /// Names below the apex that own nothing but have names below them.
    pub nonterminals: HashSet<String>,
    pub apex_name: Name,
    /// Signed zones: RRSIGs by owner and covered type.
    pub sigs: HashMap<(String, RecordType), Vec<Record>>,
    /// Signed zones: the owners in canonical order (the NSEC chain).
    pub nsec: Vec<(Name, String)>,
    pub signed: bool,
    /// The longest TTL in the zone (how long a resolver may hold any of it).
    pub max_ttl: u32,
    /// Delegation points: names below the apex with NS records (lower case).
    pub cuts: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct Zones {
    pub zones: Vec<Zone>,
    /// When they were built (signatures are remade by rebuilding).
    pub built: i64,
    /// Responses for the hot path, made as they are first asked for.
    pub fast: Option<crate::fast::Cache>,
    /// The served keys published as TLSA when these were built.
    pub tlsa: Vec<Vec<u8>>,
}

fn name(n: &str) -> Option<Name> {
    Name::from_ascii(format!("{n}.")).ok()
}

/// The DNS form of one record; None for a name the DNS cannot carry.
pub fn to_record(r: &ZoneRecord) -> Option<Record> {
    let rdata = match &r.data {
        Data::A(a) => RData::A(A(*a)),
        Data::Aaaa(a) => RData::AAAA(AAAA(*a)),
        Data::Ns(n) => RData::NS(NS(name(n)?)),
        Data::Cname(n) => RData::CNAME(CNAME(name(n)?)),
        Data::Mx(p, n) => RData::MX(MX::new(*p, name(n)?)),
        // TXT character-strings hold 255 bytes each (RFC 1035 §3.3.14).
        Data::Txt(t) => {
            RData::TXT(TXT::new(t.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect()))
        }
        Data::Srv { priority, weight, port, target } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        Data::Ptr(n) => RData::PTR(PTR(name(n)?)),
        Data::Caa { critical, tag, value } => {
            // The issuer's domain is written without a final dot (RFC 8659 §4.2).
            if tag == "iodef" {
                RData::CAA(CAA::new_iodef(*critical, url::Url::parse(value).ok()?))
            } else {
                let ca = if value == ";" { None } else { Some(Name::from_ascii(value).ok()?) };
                RData::CAA(if tag == "issuewild" {
                    CAA::new_issuewild(*critical, ca, Vec::new())
                } else {
                    CAA::new_issue(*critical, ca, Vec::new())
                })
            }
        }
        Data::Tlsa { usage, selector, matching, data } => {
            RData::TLSA(TLSA::new((*usage).into(), (*selector).into(), (*matching).into(), data.clone()))
        }
        Data::Soa { mname, rname, serial, refresh, retry, expire, minimum } => RData::SOA(SOA::new(
            name(mname)?,
            name(rname)?,
            *serial,
            *refresh as i32,
            *retry as i32,
            *expire as i32,
            *minimum,
        )),
    };
    Some(Record::from_rdata(name(&r.name)?, r.ttl, rdata))
}

impl Zone {
    /// A zone from the mail core's records (the first must be the SOA).
    pub fn new(apex: &str, records: &[ZoneRecord]) -> Option<Zone> {
        let apex = apex.trim_end_matches('.').to_ascii_lowercase();
        let mut names: HashMap<String, Vec<Record>> = HashMap::new();
        let mut soa = None;
        for r in records {
            let Some(rec) = to_record(r) else {
                tracing::warn!("dns: {} {} cannot be published: not a valid name", r.name, r.data.type_name());
                continue;
            };
            if matches!(r.data, Data::Soa { .. }) {
                soa = Some(rec.clone());
            }
            names.entry(r.name.clone()).or_default().push(rec);
        }
        let mut nonterminals = HashSet::new();
        for n in names.keys() {
            let mut cur = n.as_str();
            while let Some((_, parent)) = cur.split_once('.') {
                if parent.len() <= apex.len() {
                    break;
                }
                if !names.contains_key(parent) {
                    nonterminals.insert(parent.to_string());
                }
                cur = parent;
            }
        }
        let apex_name = name(&apex)?;
        let cuts: HashSet<String> = names
            .iter()
            .filter(|(n, recs)| **n != apex && recs.iter().any(|r| r.record_type() == RecordType::NS))
            .map(|(n, _)| n.clone())
            .collect();
        let max_ttl = records.iter().map(|r| r.ttl).max().unwrap_or(0);
        Some(Zone {
            apex,
            soa: soa?,
            names,
            nonterminals,
            apex_name,
            sigs: HashMap::new(),
            nsec: Vec::new(),
            signed: false,
            max_ttl,
            cuts,
        })
    }

    /// Sets the SOA's serial (in the SOA kept apart and in the apex's records).
    pub fn set_serial(&mut self, serial: u32) {
        let set = |r: &mut Record| {
            if let RData::SOA(s) = &mut r.data {
                s.serial = serial;
            }
        };
        set(&mut self.soa);
        if let Some(recs) = self.names.get_mut(&self.apex) {
            recs.iter_mut().filter(|r| r.record_type() == RecordType::SOA).for_each(set);
        }
    }

    /// The delegation point at or above `name` (below the apex), if any: the data
    /// there and below belongs to the delegated zone.
    pub fn cut_of(&self, name: &str) -> Option<&str> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut found = None;
        let mut cur = name;
        loop {
            if cur.len() <= self.apex.len() {
                return found;
            }
            if let Some(c) = self.cuts.get(cur) {
                // The highest cut wins: a delegation inside a delegation is not ours.
                found = Some(c.as_str());
            }
            match cur.split_once('.') {
                Some((_, parent)) => cur = parent,
                None => return found,
            }
        }
    }

    /// The RRSIGs of an RRset (none when the zone is unsigned).
    pub fn sigs_of(&self, owner: &str, rtype: RecordType) -> &[Record] {
        self.sigs.get(&(owner.to_string(), rtype)).map_or(&[], Vec::as_slice)
    }

    /// The owner (lower case) of the NSEC whose span holds `name`: the last owner
    /// not after it in canonical order (the apex is first, so there always is one).
    pub fn covering(&self, name: &Name) -> Option<&str> {
        let i = self.nsec.partition_point(|(n, _)| n <= name);
        self.nsec.get(i.checked_sub(1)?).map(|(_, k)| k.as_str())
    }
}

impl Zones {
    /// The zone a (lower case) name falls in: the longest apex that is a suffix.
    pub fn find(&self, qname: &str) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| qname == z.apex || (qname.len() > z.apex.len() && qname.ends_with(&format!(".{}", z.apex))))
            .max_by_key(|z| z.apex.len())
    }
}
