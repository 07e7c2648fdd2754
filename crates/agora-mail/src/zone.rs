//! The DNS records a hosted domain needs, built from the server's own state (its host
//! name and addresses, the listeners that are on, the DKIM keys in the store), so the
//! published zone cannot drift from what the server does. Pure: the DNS service
//! serves these records and `agora dns show` prints them.

use std::fmt::Write as _;
use std::net::IpAddr;

use agora_store::{DkimKey, DkimState};

/// Record data, in the types a hosted zone uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Ns(String),
    Cname(String),
    Mx(u16, String),
    /// One TXT value (split into strings of at most 255 bytes when sent).
    Txt(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

impl Data {
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::A(_) => "A",
            Data::Aaaa(_) => "AAAA",
            Data::Ns(_) => "NS",
            Data::Cname(_) => "CNAME",
            Data::Mx(..) => "MX",
            Data::Txt(_) => "TXT",
            Data::Srv { .. } => "SRV",
            Data::Soa { .. } => "SOA",
        }
    }
}

/// One record: owner name (lower case, fully qualified, no trailing dot), TTL, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: Data,
}

/// The SRV locators (RFC 6186, RFC 8314 and the directory's) by listener key.
pub const LOCATORS: &[(&str, &str)] = &[
    ("submission", "_submission._tcp"),
    ("submissions", "_submissions._tcp"),
    ("imap", "_imap._tcp"),
    ("imaps", "_imaps._tcp"),
    ("pop3", "_pop3._tcp"),
    ("pop3s", "_pop3s._tcp"),
    ("ldap", "_ldap._tcp"),
    ("gc", "_gc._tcp"),
    ("nntp", "_nntp._tcp"),
    ("https", "_autodiscover._tcp"),
];

/// What a domain's zone is made from.
#[derive(Debug, Clone)]
pub struct ZoneInput {
    pub domain: String,
    /// The mail server's host name (MX target, default name server).
    pub hostname: String,
    /// Public addresses of the server, for its host name when that is in the zone.
    pub addresses: Vec<IpAddr>,
    /// Name servers of the zone (default: the host name).
    pub nameservers: Vec<String>,
    pub dkim: Vec<DkimKey>,
    /// Listener keys that are on, with their public ports.
    pub listeners: Vec<(String, u16)>,
    /// DMARC policy: none, quarantine or reject.
    pub dmarc_policy: String,
    pub ttl: u32,
    pub serial: u32,
}

fn lower(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Every record of the zone, SOA first.
pub fn build(z: &ZoneInput) -> Vec<Record> {
    let domain = lower(&z.domain);
    let host = lower(&z.hostname);
    let ttl = z.ttl;
    let mut out = Vec::new();
    let rec = |name: &str, data: Data| Record { name: name.to_string(), ttl, data };
    let nameservers: Vec<String> =
        if z.nameservers.is_empty() { vec![host.clone()] } else { z.nameservers.iter().map(|n| lower(n)).collect() };
    out.push(rec(
        &domain,
        Data::Soa {
            mname: nameservers[0].clone(),
            rname: format!("hostmaster.{domain}"),
            serial: z.serial,
            refresh: 3600,
            retry: 900,
            expire: 1_209_600,
            minimum: 300,
        },
    ));
    for ns in &nameservers {
        out.push(rec(&domain, Data::Ns(ns.clone())));
    }
    out.push(rec(&domain, Data::Mx(10, host.clone())));
    out.push(rec(&domain, Data::Txt("v=spf1 mx -all".into())));
    // The server's own name, when it lives in this zone.
    if host == domain || host.ends_with(&format!(".{domain}")) {
        for a in &z.addresses {
            out.push(rec(
                &host,
                match a {
                    IpAddr::V4(v4) => Data::A(*v4),
                    IpAddr::V6(v6) => Data::Aaaa(*v6),
                },
            ));
        }
    }
    // Pending keys are published before they sign, active ones while they do;
    // retired keys are gone from the zone.
    let published: Vec<DkimKey> = z.dkim.iter().filter(|k| k.state != DkimState::Retired).cloned().collect();
    for (owner, text) in crate::auth::dns_records(&published) {
        out.push(rec(&lower(&owner), Data::Txt(text)));
    }
    out.push(rec(
        &format!("_dmarc.{domain}"),
        Data::Txt(format!("v=DMARC1; p={}; adkim=r; aspf=r; rua=mailto:postmaster@{domain}", z.dmarc_policy)),
    ));
    out.push(rec(&format!("_smtp._tls.{domain}"), Data::Txt(format!("v=TLSRPTv1; rua=mailto:postmaster@{domain}"))));
    for (key, label) in LOCATORS {
        if let Some((_, port)) = z.listeners.iter().find(|(k, _)| k == key) {
            out.push(rec(
                &format!("{label}.{domain}"),
                Data::Srv { priority: 0, weight: 1, port: *port, target: host.clone() },
            ));
        }
    }
    out
}

/// The records in zone-file format (RFC 1035 §5), for publishing elsewhere.
pub fn zone_file(domain: &str, records: &[Record]) -> String {
    let mut s = format!("$ORIGIN {}.\n", lower(domain));
    for r in records {
        let data = match &r.data {
            Data::A(a) => a.to_string(),
            Data::Aaaa(a) => a.to_string(),
            Data::Ns(n) | Data::Cname(n) => format!("{n}."),
            Data::Mx(p, n) => format!("{p} {n}."),
            Data::Txt(t) => {
                let parts: Vec<String> = t
                    .as_bytes()
                    .chunks(255)
                    .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect();
                if parts.len() > 1 { format!("( {} )", parts.join(" ")) } else { parts.concat() }
            }
            Data::Srv { priority, weight, port, target } => format!("{priority} {weight} {port} {target}."),
            Data::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
                format!("{mname}. {rname}. {serial} {refresh} {retry} {expire} {minimum}")
            }
        };
        let _ = writeln!(s, "{}.\t{}\tIN\t{}\t{data}", r.name, r.ttl, r.data.type_name());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(selector: &str, state: DkimState) -> DkimKey {
        DkimKey {
            domain: "example.org".into(),
            selector: selector.into(),
            algorithm: "ed25519".into(),
            private_key: Vec::new(),
            public_key: vec![1, 2, 3],
            created: 0,
            state,
        }
    }

    #[test]
    fn the_zone_follows_the_server() {
        let z = ZoneInput {
            domain: "Example.ORG".into(),
            hostname: "mx.example.org".into(),
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            nameservers: Vec::new(),
            dkim: vec![key("a", DkimState::Active), key("b", DkimState::Pending), key("old", DkimState::Retired)],
            listeners: vec![("submission".into(), 587), ("imaps".into(), 993)],
            dmarc_policy: "reject".into(),
            ttl: 3600,
            serial: 7,
        };
        let r = build(&z);
        assert!(matches!(&r[0].data, Data::Soa { serial: 7, mname, .. } if mname == "mx.example.org"));
        let names: Vec<(&str, &str)> = r.iter().map(|x| (x.name.as_str(), x.data.type_name())).collect();
        for want in [
            ("example.org", "NS"),
            ("example.org", "MX"),
            ("mx.example.org", "A"),
            ("mx.example.org", "AAAA"),
            ("a._domainkey.example.org", "TXT"),
            ("b._domainkey.example.org", "TXT"),
            ("_dmarc.example.org", "TXT"),
            ("_smtp._tls.example.org", "TXT"),
            ("_submission._tcp.example.org", "SRV"),
            ("_imaps._tcp.example.org", "SRV"),
        ] {
            assert!(names.contains(&want), "{want:?} missing from {names:?}");
        }
        assert!(!names.iter().any(|(n, _)| n.starts_with("old.")), "retired keys are removed");
        assert!(!names.iter().any(|(n, _)| n.starts_with("_pop3")), "listeners that are off have no record");
        let text = zone_file("example.org", &r);
        assert!(text.contains("_dmarc.example.org.\t3600\tIN\tTXT\t\"v=DMARC1; p=reject;"), "{text}");
        assert!(text.contains("example.org.\t3600\tIN\tMX\t10 mx.example.org."));
    }
}
