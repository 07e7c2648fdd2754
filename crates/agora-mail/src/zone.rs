//! The DNS records a hosted domain needs, built from the server's own state (its host
//! name and addresses, the listeners that are on, the DKIM keys in the store), so the
//! published zone cannot drift from what the server does. Pure: the DNS service
//! serves these records and `agora dns show` prints them.

use std::fmt::Write as _;
use std::net::IpAddr;

use agora_store::{DirectoryStore, DkimKey, DkimState};

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
    Ptr(String),
    /// CAA with an `issue` or `issuewild` tag (RFC 8659).
    Caa {
        critical: bool,
        tag: String,
        value: String,
    },
    Tlsa {
        usage: u8,
        selector: u8,
        matching: u8,
        data: Vec<u8>,
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
            Data::Ptr(_) => "PTR",
            Data::Caa { .. } => "CAA",
            Data::Tlsa { .. } => "TLSA",
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

/// One record set as expected and as a resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    pub rtype: String,
    pub expected: Vec<String>,
    /// What the resolver answered (empty: nothing), or why it could not say.
    pub seen: Result<Vec<String>, String>,
}

impl Finding {
    pub fn matches(&self) -> bool {
        self.seen.as_ref().is_ok_and(|s| *s == self.expected)
    }
}

/// Asks resolvers what they see of a zone's records (the DNS service's check, handed to
/// whoever shows it: `agora dns check`, the admin console).
pub type Checker = std::sync::Arc<
    dyn Fn(Vec<Record>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Finding>> + Send>> + Send + Sync,
>;

/// The SRV locators (RFC 6186, RFC 8314, RFC 5804 and the directory's) by listener key.
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
    ("managesieve", "_sieve._tcp"),
];

/// What every hosted zone is made from besides the store: the server's names,
/// addresses and listeners, and the `[dns]` settings.
#[derive(Debug, Clone, Default)]
pub struct ZoneSettings {
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    pub nameservers: Vec<String>,
    /// Listener keys that are on, with their public ports.
    pub listeners: Vec<(String, u16)>,
    pub dmarc_policy: String,
    pub ttl: u32,
}

/// The MTA-STS policy (RFC 8461 §3.2) for mail to a domain whose MX is `host`.
pub fn mta_sts_policy(host: &str, mode: &str) -> String {
    let mode = if mode == "enforce" || mode == "none" { mode } else { "testing" };
    format!("version: STSv1\nmode: {mode}\nmx: {}\nmax_age: 604800\n", lower(host))
}

/// The policy's id for the `_mta-sts` TXT record: it changes whenever the policy does.
pub fn mta_sts_id(policy: &str) -> String {
    use sha2::Digest;
    agora_store::blob::hex(&sha2::Sha256::digest(policy.as_bytes())[..10])
}

impl ZoneInput {
    /// A hosted domain's input as the store holds it: its DKIM keys and the records an
    /// administrator added (a stored record that no longer checks is left out, logged).
    pub async fn read<S: DirectoryStore + ?Sized>(
        store: &S,
        domain: &str,
        settings: &ZoneSettings,
        serial: u32,
    ) -> agora_store::Result<ZoneInput> {
        let mut extra = Vec::new();
        for r in store.dns_records(domain).await? {
            match parse_extra(domain, &format!("{}.", r.name), &r.rtype, &r.value, r.ttl) {
                Ok(rec) => extra.push(rec),
                Err(e) => tracing::warn!("dns: {} {} {}: not published: {e}", r.name, r.rtype, r.value),
            }
        }
        Ok(ZoneInput {
            domain: domain.to_string(),
            hostname: settings.hostname.clone(),
            addresses: settings.addresses.clone(),
            nameservers: settings.nameservers.clone(),
            dkim: store.dkim_keys(domain).await?,
            listeners: settings.listeners.clone(),
            dmarc_policy: settings.dmarc_policy.clone(),
            mta_sts_mode: store.domain(domain).await?.map_or_else(|| "testing".into(), |d| d.mta_sts_mode),
            tlsa: Vec::new(),
            ttl: settings.ttl,
            serial,
            extra,
        })
    }
}

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
    pub mta_sts_mode: String,
    /// DANE: SHA-256 of the keys the SMTP listener serves (published as TLSA 3 1 1
    /// when the server's name is in this zone; only signed zones get them).
    pub tlsa: Vec<Vec<u8>>,
    pub ttl: u32,
    pub serial: u32,
    /// Records an administrator added (already checked by `parse_extra`).
    pub extra: Vec<Record>,
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
    // DANE for the MX (RFC 7672): the keys the SMTP listener serves, by its port.
    let in_zone = host == domain || host.ends_with(&format!(".{domain}"));
    if let Some((_, port)) = z.listeners.iter().find(|(k, _)| k == "smtp").filter(|_| in_zone) {
        for key in &z.tlsa {
            out.push(rec(
                &format!("_{port}._tcp.{host}"),
                Data::Tlsa { usage: 3, selector: 1, matching: 1, data: key.clone() },
            ));
        }
    }
    // What HTTPS serves: client autoconfiguration and the MTA-STS policy, by name.
    if z.listeners.iter().any(|(k, _)| k == "https") {
        for label in ["autoconfig", "autodiscover", "mta-sts"] {
            let name = format!("{label}.{domain}");
            if name != host {
                out.push(rec(&name, Data::Cname(host.clone())));
            }
        }
        let id = mta_sts_id(&mta_sts_policy(&host, &z.mta_sts_mode));
        out.push(rec(&format!("_mta-sts.{domain}"), Data::Txt(format!("v=STSv1; id={id}"))));
    }
    out.extend(z.extra.iter().cloned());
    out
}

/// A record's owner from what an administrator typed: `@` is the apex, a name ending
/// in `.` is absolute, anything else is relative to the domain.
pub fn owner(domain: &str, name: &str) -> Result<String, String> {
    let domain = lower(domain);
    let n = name.trim();
    let full = if n == "@" || n.is_empty() {
        domain.clone()
    } else if let Some(abs) = n.strip_suffix('.') {
        abs.to_ascii_lowercase()
    } else {
        format!("{}.{domain}", n.to_ascii_lowercase())
    };
    if full != domain && !full.ends_with(&format!(".{domain}")) {
        return Err(format!("{full} is outside the zone {domain}"));
    }
    let labels_ok = full.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
    });
    if !labels_ok || full.len() > 253 || (full.contains('*') && !full.starts_with("*.")) {
        return Err(format!("{full} is not a valid DNS name"));
    }
    Ok(full)
}

fn target(v: &str) -> Result<String, String> {
    let t = lower(v);
    if t.is_empty() || t.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("{v} is not a host name"));
    }
    Ok(t)
}

/// Parses and checks an extra record: type and value in zone-file syntax.
pub fn parse_extra(domain: &str, name: &str, rtype: &str, value: &str, ttl: u32) -> Result<Record, String> {
    let name = owner(domain, name)?;
    let v = value.trim();
    let words: Vec<&str> = v.split_whitespace().collect();
    let num = |s: &str, what: &str| s.parse::<u16>().map_err(|_| format!("{what} {s} is not a number"));
    let data = match rtype.to_ascii_uppercase().as_str() {
        "A" => Data::A(v.parse().map_err(|_| format!("{v} is not an IPv4 address"))?),
        "AAAA" => Data::Aaaa(v.parse().map_err(|_| format!("{v} is not an IPv6 address"))?),
        "CNAME" => Data::Cname(target(v)?),
        "NS" => Data::Ns(target(v)?),
        "PTR" => Data::Ptr(target(v)?),
        "MX" => match words.as_slice() {
            [p, host] => Data::Mx(num(p, "preference")?, target(host)?),
            _ => return Err("MX takes PREFERENCE HOST".into()),
        },
        "SRV" => match words.as_slice() {
            [p, w, port, host] => Data::Srv {
                priority: num(p, "priority")?,
                weight: num(w, "weight")?,
                port: num(port, "port")?,
                target: target(host)?,
            },
            _ => return Err("SRV takes PRIORITY WEIGHT PORT TARGET".into()),
        },
        "TXT" => {
            let t = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
            if t.len() > 4000 {
                return Err("a TXT value may have at most 4,000 bytes".into());
            }
            Data::Txt(t.to_string())
        }
        "CAA" => match words.as_slice() {
            [flags, tag, val] if ["issue", "issuewild"].contains(&tag.to_ascii_lowercase().as_str()) => {
                let flags: u8 = flags.parse().map_err(|_| format!("CAA flags {flags} is not a number"))?;
                let val = val.trim_matches('"');
                if val != ";" && target(val).is_err() {
                    return Err(format!("CAA {tag} takes a CA's domain (or \";\" for none)"));
                }
                Data::Caa { critical: flags & 0x80 != 0, tag: tag.to_ascii_lowercase(), value: val.to_string() }
            }
            [flags, tag, val] if tag.eq_ignore_ascii_case("iodef") => {
                let flags: u8 = flags.parse().map_err(|_| format!("CAA flags {flags} is not a number"))?;
                let val = val.trim_matches('"');
                if !(val.starts_with("mailto:") || val.starts_with("https://") || val.starts_with("http://")) {
                    return Err("CAA iodef takes a mailto: or https: URL".into());
                }
                Data::Caa { critical: flags & 0x80 != 0, tag: "iodef".into(), value: val.to_string() }
            }
            _ => return Err("CAA takes FLAGS issue|issuewild CA-DOMAIN, or FLAGS iodef URL".into()),
        },
        "TLSA" => match words.as_slice() {
            [u, sel, m, hex] => {
                let byte = |s: &str, what: &str, max: u8| {
                    s.parse::<u8>().ok().filter(|x| *x <= max).ok_or_else(|| format!("TLSA {what} {s} is out of range"))
                };
                if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("TLSA data is hex".into());
                }
                let data =
                    (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
                Data::Tlsa {
                    usage: byte(u, "usage", 3)?,
                    selector: byte(sel, "selector", 1)?,
                    matching: byte(m, "matching type", 2)?,
                    data,
                }
            }
            _ => return Err("TLSA takes USAGE SELECTOR MATCHING HEX".into()),
        },
        other => {
            return Err(format!(
                "record type {other} is not supported (A, AAAA, CNAME, MX, TXT, SRV, CAA, TLSA, NS, PTR are)"
            ));
        }
    };
    if ttl == 0 || ttl > 604_800 {
        return Err("a TTL is 1 to 604800 seconds".into());
    }
    Ok(Record { name, ttl, data })
}

/// CNAME rules (RFC 1034 §3.6.2, RFC 2181 §10.1): a CNAME is alone at its name and
/// never at the apex; NS below the apex only as a delegation.
pub fn check(domain: &str, records: &[Record]) -> Result<(), String> {
    let domain = lower(domain);
    for r in records.iter().filter(|r| matches!(r.data, Data::Cname(_))) {
        if r.name == domain {
            return Err(format!("a CNAME cannot be at the zone's apex ({domain})"));
        }
        if records.iter().any(|o| o.name == r.name && o != r) {
            return Err(format!("{} has a CNAME and other data: a CNAME must be alone at its name", r.name));
        }
    }
    // A delegation (NS below the apex) hands the name and all below it to other
    // servers: only its NS records there, and below it only their addresses (glue).
    for cut in records.iter().filter(|r| matches!(r.data, Data::Ns(_)) && r.name != domain) {
        for o in records {
            let below = o.name.ends_with(&format!(".{}", cut.name));
            if o.name == cut.name && !matches!(o.data, Data::Ns(_)) {
                return Err(format!(
                    "{} is delegated (NS): it can have no {} record here",
                    cut.name,
                    o.data.type_name()
                ));
            }
            if below && !matches!(o.data, Data::A(_) | Data::Aaaa(_)) {
                return Err(format!(
                    "{} is below the delegation {}: only its A/AAAA (glue) can be here",
                    o.name, cut.name
                ));
            }
        }
    }
    Ok(())
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
            Data::Ptr(n) => format!("{n}."),
            Data::Caa { critical, tag, value } => format!("{} {tag} \"{value}\"", if *critical { 128 } else { 0 }),
            Data::Tlsa { usage, selector, matching, data } => {
                format!("{usage} {selector} {matching} {}", agora_store::blob::hex(data))
            }
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
            listeners: vec![
                ("smtp".into(), 25),
                ("submission".into(), 587),
                ("imaps".into(), 993),
                ("managesieve".into(), 4190),
            ],
            dmarc_policy: "reject".into(),
            mta_sts_mode: String::new(),
            tlsa: vec![vec![0xab; 32]],
            ttl: 3600,
            serial: 7,
            extra: vec![parse_extra("example.org", "www", "CNAME", "mx.example.org.", 300).unwrap()],
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
            ("_sieve._tcp.example.org", "SRV"),
            ("_25._tcp.mx.example.org", "TLSA"),
        ] {
            assert!(names.contains(&want), "{want:?} missing from {names:?}");
        }
        assert!(!names.iter().any(|(n, _)| n.starts_with("old.")), "retired keys are removed");
        assert!(!names.iter().any(|(n, _)| n.starts_with("_pop3")), "listeners that are off have no record");
        let text = zone_file("example.org", &r);
        assert!(text.contains("_dmarc.example.org.\t3600\tIN\tTXT\t\"v=DMARC1; p=reject;"), "{text}");
        assert!(text.contains("example.org.\t3600\tIN\tMX\t10 mx.example.org."));
        assert!(text.contains("www.example.org.\t300\tIN\tCNAME\tmx.example.org."));
        assert!(check("example.org", &r).is_ok());
    }

    #[test]
    fn extra_records_are_checked() {
        let ok = |n: &str, t: &str, v: &str| parse_extra("example.org", n, t, v, 300).unwrap();
        assert_eq!(ok("@", "A", "192.0.2.1").name, "example.org");
        assert_eq!(ok("host.example.org.", "AAAA", "2001:db8::1").name, "host.example.org");
        assert!(matches!(ok("_sip._tcp", "SRV", "10 5 5060 sip.example.org.").data, Data::Srv { port: 5060, .. }));
        assert!(matches!(ok("@", "CAA", "0 issue letsencrypt.org").data, Data::Caa { .. }));
        assert!(matches!(ok("_25._tcp.mx", "TLSA", "3 1 1 AB12").data, Data::Tlsa { usage: 3, .. }));
        assert_eq!(ok("*.wild", "TXT", "\"hello\"").data, Data::Txt("hello".into()));
        for (n, t, v) in [
            ("x", "A", "300.1.1.1"),
            ("x", "MX", "mail.example.org"),
            ("other.test.", "A", "192.0.2.1"),
            ("bad_label!", "A", "192.0.2.1"),
            ("x", "TLSA", "4 1 1 ab"),
            ("x", "CAA", "0 iodef ftp://x"),
            ("x", "HINFO", "a b"),
        ] {
            assert!(parse_extra("example.org", n, t, v, 300).is_err(), "{n} {t} {v}");
        }
        let cname = ok("www", "CNAME", "mx.example.org.");
        assert!(check("example.org", &[cname.clone(), ok("www", "TXT", "x")]).unwrap_err().contains("alone"));
        assert!(check("example.org", &[ok("@", "CNAME", "x.example.org.")]).unwrap_err().contains("apex"));
        assert!(check("example.org", &[cname]).is_ok());
        assert_eq!(
            ok("@", "CAA", "0 iodef mailto:security@example.org").data,
            Data::Caa { critical: false, tag: "iodef".into(), value: "mailto:security@example.org".into() }
        );
        // Delegations: NS alone at the cut, only glue below it.
        let (ns, glue) = (ok("sub", "NS", "ns1.sub.example.org."), ok("ns1.sub", "A", "192.0.2.53"));
        assert!(check("example.org", &[ns.clone(), glue.clone()]).is_ok());
        assert!(check("example.org", &[ns.clone(), ok("sub", "TXT", "x")]).unwrap_err().contains("delegated"));
        assert!(check("example.org", &[ns, ok("x.sub", "TXT", "x")]).unwrap_err().contains("glue"));
    }

    #[test]
    fn web_names_and_the_mta_sts_id_follow_https() {
        let mut z = ZoneInput {
            domain: "example.org".into(),
            hostname: "mx.example.org".into(),
            addresses: Vec::new(),
            nameservers: Vec::new(),
            dkim: Vec::new(),
            listeners: Vec::new(),
            dmarc_policy: "none".into(),
            mta_sts_mode: "testing".into(),
            tlsa: Vec::new(),
            ttl: 300,
            serial: 1,
            extra: Vec::new(),
        };
        assert!(!build(&z).iter().any(|r| r.name.starts_with("mta-sts.") || r.name.starts_with("_mta-sts.")));
        z.listeners.push(("https".into(), 443));
        let r = build(&z);
        for n in ["autoconfig.example.org", "autodiscover.example.org", "mta-sts.example.org"] {
            assert!(r.iter().any(|x| x.name == n && x.data == Data::Cname("mx.example.org".into())), "{n}");
        }
        let id = |r: &[Record]| r.iter().find(|x| x.name == "_mta-sts.example.org").map(|x| x.data.clone());
        let testing = id(&r);
        assert!(matches!(&testing, Some(Data::Txt(t)) if t.starts_with("v=STSv1; id=")));
        z.mta_sts_mode = "enforce".into();
        assert_ne!(id(&build(&z)), testing, "a new policy, a new id");
        assert!(mta_sts_policy("MX.example.org", "enforce").contains("mode: enforce\nmx: mx.example.org\n"));
    }
}
