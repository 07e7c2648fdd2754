//! O/R addresses as people write them (`/C=GB/ADMD= /PRMD=Acme/O=Sales/S=Lee/G=Ann/`),
//! as P1 carries them, and mapped to and from RFC 822 addresses by RFC 2156 (MIXER):
//! mapping-table entries tie an O/R subtree to a domain, personal names become
//! `given.initials.surname` local parts, anything else travels in the local part as
//! an O/R address, and Internet addresses without a mapping go as the `RFC-822`
//! domain-defined attribute. Hand-written: RFC 2156's rules are text, not a format a
//! library reads.

use crate::p1;

/// An O/R address in its parts (empty: absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrAddress {
    pub c: String,
    pub admd: String,
    pub prmd: String,
    pub o: String,
    pub ous: Vec<String>,
    pub s: String,
    pub g: String,
    pub i: String,
    pub q: String,
    /// Domain-defined attributes (type, value).
    pub dda: Vec<(String, String)>,
}

/// The domain-defined attribute type RFC 2156 carries Internet addresses in.
pub const RFC822_DDA: &str = "RFC-822";

const MAX_OUS: usize = 4;
/// Upper bounds of X.411 (ub-*) on each attribute's length.
const MAX_LEN: usize = 64;

fn bad(what: impl Into<String>) -> String {
    what.into()
}

/// PrintableString's characters.
pub fn printable_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

impl OrAddress {
    /// Reads `/K=V/K=V/`: keys C, ADMD (or A), PRMD (or P), O, OU (repeatable, or
    /// OU1..OU4), S, G, I, Q (or GQ), DDA:TYPE=VALUE. `$` quotes the next character.
    pub fn parse(text: &str) -> Result<OrAddress, String> {
        let text = text.trim();
        if !text.starts_with('/') {
            return Err(bad(format!("{text:?}: an O/R address is written /K=V/K=V/")));
        }
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut chars = text.chars().skip(1);
        while let Some(c) = chars.next() {
            match c {
                '$' => cur.push(chars.next().ok_or_else(|| bad("a $ at the end"))?),
                '/' => parts.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        if !cur.trim().is_empty() {
            parts.push(cur);
        }
        let mut a = OrAddress::default();
        for p in parts.iter().filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').ok_or_else(|| bad(format!("{p:?} is not K=V")))?;
            let key = k.trim().to_ascii_uppercase();
            // A single space is a value (ADMD= means "any"); otherwise trimmed.
            let v = if v == " " { v.to_string() } else { v.trim().to_string() };
            if v.len() > MAX_LEN || !v.chars().all(printable_char) {
                return Err(bad(format!("{k}: {v:?} is not printable string text of at most {MAX_LEN}")));
            }
            let set = |slot: &mut String| {
                if slot.is_empty() {
                    *slot = v.clone();
                    Ok(())
                } else {
                    Err(bad(format!("{k} twice")))
                }
            };
            match key.as_str() {
                "C" => set(&mut a.c)?,
                "ADMD" | "A" => set(&mut a.admd)?,
                "PRMD" | "P" => set(&mut a.prmd)?,
                "O" => set(&mut a.o)?,
                "OU" | "OU1" | "OU2" | "OU3" | "OU4" => {
                    if a.ous.len() == MAX_OUS {
                        return Err(bad("more than four OUs"));
                    }
                    a.ous.push(v.clone());
                }
                "S" => set(&mut a.s)?,
                "G" => set(&mut a.g)?,
                "I" => set(&mut a.i)?,
                "Q" | "GQ" => set(&mut a.q)?,
                _ => match k.trim().strip_prefix("DDA:").or_else(|| k.trim().strip_prefix("dda:")) {
                    // Types are at most 8 characters (ub-domain-defined-attribute-type-length).
                    Some(t) if !t.is_empty() && t.len() <= 8 => {
                        if a.dda.len() == 4 {
                            return Err(bad("more than four domain-defined attributes"));
                        }
                        a.dda.push((t.to_string(), v.clone()));
                    }
                    _ => return Err(bad(format!("{k}: not an O/R address attribute"))),
                },
            }
        }
        if a.c.is_empty() && a.admd.is_empty() && a.prmd.is_empty() && a.o.is_empty() && a.s.is_empty() {
            return Err(bad("an O/R address names at least a country, a domain, an organisation or a surname"));
        }
        if (!a.g.is_empty() || !a.i.is_empty() || !a.q.is_empty()) && a.s.is_empty() {
            return Err(bad("a given name, initials or generation need a surname"));
        }
        Ok(a)
    }

    /// The text form, attributes in hierarchy order.
    pub fn text(&self) -> String {
        let mut out = String::from("/");
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                out.push_str(k);
                out.push('=');
                for c in v.chars() {
                    if c == '/' || c == '$' {
                        out.push('$');
                    }
                    out.push(c);
                }
                out.push('/');
            }
        };
        put("C", &self.c);
        put("ADMD", &self.admd);
        put("PRMD", &self.prmd);
        put("O", &self.o);
        for ou in &self.ous {
            put("OU", ou);
        }
        put("S", &self.s);
        put("G", &self.g);
        put("I", &self.i);
        put("Q", &self.q);
        for (t, v) in &self.dda {
            put(&format!("DDA:{t}"), v);
        }
        out
    }

    /// Whether `prefix`'s hierarchy (C, ADMD, PRMD, O, OUs) starts this address's.
    pub fn under(&self, prefix: &OrAddress) -> bool {
        let eq = |a: &str, b: &str| b.is_empty() || a.trim().eq_ignore_ascii_case(b.trim());
        eq(&self.c, &prefix.c)
            && (prefix.admd.trim().is_empty() || eq(&self.admd, &prefix.admd))
            && eq(&self.prmd, &prefix.prmd)
            && eq(&self.o, &prefix.o)
            && prefix.ous.len() <= self.ous.len()
            && prefix.ous.iter().zip(&self.ous).all(|(p, o)| p.eq_ignore_ascii_case(o))
    }

    /// How much of the hierarchy is given (for choosing the most specific entry).
    fn depth(&self) -> usize {
        [&self.c, &self.admd, &self.prmd, &self.o].iter().filter(|v| !v.trim().is_empty()).count() + self.ous.len()
    }

    /// As P1 carries it.
    pub fn to_p1(&self) -> Result<p1::OrName, String> {
        let pr = |s: &str| p1::printable(s);
        let opt = |s: &str| if s.is_empty() { Ok(None) } else { pr(s).map(Some) };
        let personal = if self.s.is_empty() {
            None
        } else {
            Some(p1::PersonalName {
                surname: pr(&self.s)?,
                given_name: opt(&self.g)?,
                initials: opt(&self.i)?,
                generation: opt(&self.q)?,
            })
        };
        let standard = p1::StandardAttributes {
            country: if self.c.is_empty() {
                None
            } else if self.c.chars().all(|c| c.is_ascii_digit()) {
                Some(p1::Country(p1::CountryName::Numeric(
                    rasn::types::NumericString::try_from(self.c.clone()).map_err(|_| bad("a numeric country code"))?,
                )))
            } else {
                Some(p1::Country(p1::CountryName::Printable(pr(&self.c)?)))
            },
            admd: if self.admd.is_empty() { None } else { Some(p1::Admd(p1::DomainName::Printable(pr(&self.admd)?))) },
            prmd: if self.prmd.is_empty() { None } else { Some(p1::DomainName::Printable(pr(&self.prmd)?)) },
            organization: opt(&self.o)?,
            personal_name: personal,
            organizational_units: if self.ous.is_empty() {
                None
            } else {
                Some(self.ous.iter().map(|o| pr(o)).collect::<Result<_, _>>()?)
            },
            ..p1::StandardAttributes::default()
        };
        let dda = if self.dda.is_empty() {
            None
        } else {
            Some(
                self.dda
                    .iter()
                    .map(|(t, v)| Ok(p1::DomainDefinedAttribute { kind: pr(t)?, value: pr(v)? }))
                    .collect::<Result<Vec<_>, String>>()?,
            )
        };
        Ok(p1::OrName { standard, domain_defined: dda, extensions: None, directory_name: None })
    }

    /// From P1's form (attributes this form has no key for are left out).
    pub fn from_p1(n: &p1::OrName) -> OrAddress {
        let s = &n.standard;
        let text = |v: &rasn::types::PrintableString| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let dn = |d: &p1::DomainName| match d {
            p1::DomainName::Numeric(n) => String::from_utf8_lossy(n.as_bytes()).into_owned(),
            p1::DomainName::Printable(p) => text(p),
        };
        let mut a = OrAddress {
            c: s.country.as_ref().map_or(String::new(), |c| match &c.0 {
                p1::CountryName::Numeric(n) => String::from_utf8_lossy(n.as_bytes()).into_owned(),
                p1::CountryName::Printable(p) => text(p),
            }),
            admd: s.admd.as_ref().map_or(String::new(), |a| dn(&a.0)),
            prmd: s.prmd.as_ref().map_or(String::new(), dn),
            o: s.organization.as_ref().map_or(String::new(), text),
            ous: s.organizational_units.iter().flatten().map(text).collect(),
            ..OrAddress::default()
        };
        if let Some(p) = &s.personal_name {
            a.s = text(&p.surname);
            a.g = p.given_name.as_ref().map_or(String::new(), text);
            a.i = p.initials.as_ref().map_or(String::new(), text);
            a.q = p.generation.as_ref().map_or(String::new(), text);
        }
        a.dda = n.domain_defined.iter().flatten().map(|d| (text(&d.kind), text(&d.value))).collect();
        a
    }
}

/// RFC 2156 §3.4: an Internet address in printable string characters.
pub fn encode_822(addr: &str) -> String {
    let mut out = String::new();
    for c in addr.chars() {
        match c {
            '@' => out.push_str("(a)"),
            '%' => out.push_str("(p)"),
            '!' => out.push_str("(b)"),
            '"' => out.push_str("(q)"),
            '_' => out.push_str("(u)"),
            '(' => out.push_str("(l)"),
            ')' => out.push_str("(r)"),
            c if printable_char(c) => out.push(c),
            c if c.is_ascii() => out.push_str(&format!("({:03})", c as u32)),
            // Beyond ASCII: its UTF-8 octets, each as a decimal escape.
            c => {
                let mut b = [0u8; 4];
                for o in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("({o:03})"));
                }
            }
        }
    }
    out
}

/// The reverse of `encode_822`.
pub fn decode_822(s: &str) -> Result<String, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' {
            let end = s[i..].find(')').map(|e| i + e).ok_or_else(|| bad("an unclosed ( in an RFC-822 attribute"))?;
            let code = &s[i + 1..end];
            match code {
                "a" => out.push(b'@'),
                "p" => out.push(b'%'),
                "b" => out.push(b'!'),
                "q" => out.push(b'"'),
                "u" => out.push(b'_'),
                "l" => out.push(b'('),
                "r" => out.push(b')'),
                d if d.len() == 3 && d.bytes().all(|c| c.is_ascii_digit()) => {
                    let o = d.parse::<u8>().map_err(|_| bad(format!("({d}) is not an octet")))?;
                    // No control characters: what this yields goes into headers and
                    // SMTP commands.
                    if o < 0x20 || o == 0x7f {
                        return Err(bad(format!("({d}) is a control character")));
                    }
                    out.push(o)
                }
                other => return Err(bad(format!("({other}) is not an RFC 2156 escape"))),
            }
            i = end + 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("an RFC-822 attribute that is not UTF-8"))
}

/// One mapping-table entry: an O/R subtree and the domain it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub or: OrAddress,
    pub domain: String,
}

/// The gateway's mapping tables and its own O/R address (where Internet addresses
/// without a mapping are put, as the RFC-822 attribute).
#[derive(Debug, Clone, Default)]
pub struct Mapper {
    pub entries: Vec<Mapping>,
    pub gateway: OrAddress,
}

fn local_of_name(a: &OrAddress) -> Option<String> {
    if a.s.is_empty() || !a.q.is_empty() || !a.dda.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    if !a.g.is_empty() {
        parts.push(&a.g);
    }
    if !a.i.is_empty() {
        parts.push(&a.i);
    }
    parts.push(&a.s);
    let local = parts.join(".").replace(' ', "_");
    local.chars().all(|c| c.is_ascii_alphanumeric() || "._-'+".contains(c)).then(|| local.to_ascii_lowercase())
}

impl Mapper {
    /// The most specific entry `a` is under.
    fn entry_for(&self, a: &OrAddress) -> Option<&Mapping> {
        self.entries.iter().filter(|m| a.under(&m.or)).max_by_key(|m| m.or.depth())
    }

    /// RFC 2156 §4.3: an O/R address as an RFC 822 address, or None when it cannot be.
    pub fn to_822(&self, a: &OrAddress) -> Option<String> {
        // An Internet address carried through X.400 comes back as itself.
        if let Some((_, v)) = a.dda.iter().find(|(t, _)| t.eq_ignore_ascii_case(RFC822_DDA)) {
            return decode_822(v).ok().and_then(|s| agora_directory::normalize_address(&s).ok());
        }
        let m = self.entry_for(a)?;
        let mut domain = m.domain.clone();
        // Organisational units below the entry's become labels of the domain.
        for ou in a.ous.iter().skip(m.or.ous.len()) {
            let label = ou.to_ascii_lowercase().replace(' ', "-");
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return None;
            }
            domain = format!("{label}.{domain}");
        }
        let local = match local_of_name(a) {
            Some(l) => l,
            None => {
                // The rest goes in the local part as an O/R address.
                let rest = OrAddress {
                    s: a.s.clone(),
                    g: a.g.clone(),
                    i: a.i.clone(),
                    q: a.q.clone(),
                    dda: a.dda.clone(),
                    ..OrAddress::default()
                };
                if rest.s.is_empty() && rest.dda.is_empty() {
                    return None;
                }
                format!("\"{}\"", rest.text())
            }
        };
        Some(format!("{local}@{domain}"))
    }

    /// RFC 2156 §4.2: an RFC 822 address as an O/R address. A domain in the tables maps
    /// by its entry; any other is carried as the RFC-822 attribute at the gateway.
    pub fn to_or(&self, addr: &str) -> Result<OrAddress, String> {
        let (local, domain) = addr.rsplit_once('@').ok_or_else(|| bad(format!("{addr} is not an address")))?;
        let domain = domain.to_ascii_lowercase();
        let entry = self
            .entries
            .iter()
            .filter(|m| domain == m.domain || domain.ends_with(&format!(".{}", m.domain)))
            .max_by_key(|m| m.domain.len());
        let Some(m) = entry else {
            let mut a = self.gateway.clone();
            if a.c.is_empty() && a.prmd.is_empty() && a.o.is_empty() {
                return Err(bad("no O/R address is configured for the gateway"));
            }
            a.dda = vec![(RFC822_DDA.to_string(), encode_822(addr))];
            return Ok(a);
        };
        let mut a = m.or.clone();
        let extra = domain.strip_suffix(&m.domain).unwrap_or("").trim_end_matches('.');
        if !extra.is_empty() {
            for label in extra.split('.').rev() {
                if a.ous.len() == MAX_OUS {
                    return Err(bad(format!("{domain}: too many labels for organisational units")));
                }
                a.ous.push(label.to_string());
            }
        }
        let local = local.trim_matches('"');
        if local.starts_with('/') {
            let inner = OrAddress::parse(local)?;
            (a.s, a.g, a.i, a.q, a.dda) = (inner.s, inner.g, inner.i, inner.q, inner.dda);
        } else {
            let parts: Vec<&str> = local.split('.').filter(|p| !p.is_empty()).collect();
            let clean = |s: &str| s.replace('_', " ");
            match parts.as_slice() {
                [] => return Err(bad(format!("{addr}: no local part"))),
                [s] => a.s = clean(s),
                [g, rest @ .., s] => {
                    a.g = clean(g);
                    a.i = rest.iter().map(|p| clean(p)).collect::<Vec<_>>().join(".");
                    a.s = clean(s);
                }
            }
            if ![&a.s, &a.g, &a.i].iter().all(|v| v.len() <= MAX_LEN && v.chars().all(printable_char)) {
                // Characters a personal name cannot hold: the address as the RFC-822 attribute.
                let mut g = self.gateway.clone();
                g.dda = vec![(RFC822_DDA.to_string(), encode_822(addr))];
                return Ok(g);
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> Mapper {
        Mapper {
            entries: vec![
                Mapping { or: OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=UCL/").unwrap(), domain: "ucl.ac.uk".into() },
                Mapping {
                    or: OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=UCL/OU=CS/").unwrap(),
                    domain: "cs.ucl.ac.uk".into(),
                },
            ],
            gateway: OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=Gateway/").unwrap(),
        }
    }

    #[test]
    fn text_form() {
        let a = OrAddress::parse("/C=GB/ADMD= /PRMD=Acme/O=Sales/OU=East/S=Lee/G=Ann/DDA:X=1/").unwrap();
        assert_eq!((a.c.as_str(), a.admd.as_str(), a.s.as_str(), a.g.as_str()), ("GB", " ", "Lee", "Ann"));
        assert_eq!(a.ous, ["East"]);
        assert_eq!(a.text(), "/C=GB/ADMD= /PRMD=Acme/O=Sales/OU=East/S=Lee/G=Ann/DDA:X=1/");
        assert_eq!(OrAddress::parse(&a.text()).unwrap(), a);
        for bad in ["C=GB", "/C=GB/C=FR/", "/X=1/", "/G=Ann/", "/S=caf\u{e9}/", "/O=a$"] {
            assert!(OrAddress::parse(bad).is_err(), "{bad}");
        }
        // Through P1 and back.
        assert_eq!(OrAddress::from_p1(&a.to_p1().unwrap()), a);
    }

    #[test]
    fn rfc2156_mappings() {
        let m = mapper();
        // Personal names become given.surname at the entry's domain; the most specific
        // entry wins, deeper OUs become labels.
        let a = OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=UCL/OU=CS/S=Kille/G=Steve/").unwrap();
        assert_eq!(m.to_822(&a).as_deref(), Some("steve.kille@cs.ucl.ac.uk"));
        let a = OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=UCL/OU=CS/OU=Research/S=Kille/").unwrap();
        assert_eq!(m.to_822(&a).as_deref(), Some("kille@research.cs.ucl.ac.uk"));
        // Back again.
        let back = m.to_or("steve.kille@cs.ucl.ac.uk").unwrap();
        assert_eq!(back.text(), "/C=GB/ADMD= /PRMD=UK.AC/O=UCL/OU=CS/S=kille/G=steve/");
        let back = m.to_or("kille@research.cs.ucl.ac.uk").unwrap();
        assert_eq!(back.ous, ["CS", "research"]);
        // What a name cannot hold travels as an O/R address in the local part.
        let a = OrAddress::parse("/C=GB/ADMD= /PRMD=UK.AC/O=UCL/S=Kille/Q=III/").unwrap();
        let mapped = m.to_822(&a).unwrap();
        assert_eq!(mapped, "\"/S=Kille/Q=III/\"@ucl.ac.uk");
        assert_eq!(m.to_or(&mapped).unwrap(), a);
        // No entry: not mappable here.
        assert_eq!(m.to_822(&OrAddress::parse("/C=FR/ADMD=ATLAS/S=Dupont/").unwrap()), None);
        // An Internet address without a mapping goes as RFC-822 at the gateway, and back.
        let o = m.to_or("j_smith@example.com").unwrap();
        assert_eq!(o.dda, [("RFC-822".to_string(), "j(u)smith(a)example.com".to_string())]);
        assert_eq!(m.to_822(&o).as_deref(), Some("j_smith@example.com"));
    }

    #[test]
    fn rfc822_attribute_escapes() {
        for s in ["a@b.c", "x%y!z\"w(v)", "caf\u{e9}@b.c"] {
            let e = encode_822(s);
            assert!(e.chars().all(printable_char), "{e}");
            assert_eq!(decode_822(&e).unwrap(), s);
        }
        assert!(decode_822("(zz)").is_err());
        // No control characters, so nothing breaks a header or an SMTP command.
        assert!(decode_822("a(a)b.c(013)(010)RCPT TO:(l)x(a)y(r)").is_err());
        let m = mapper();
        let sneaky = OrAddress { dda: vec![(RFC822_DDA.into(), "a(a)b.c>(032)x".into())], ..m.gateway.clone() };
        assert_eq!(m.to_822(&sneaky), None, "not an address");
        assert!(decode_822("(a").is_err());
    }
}
