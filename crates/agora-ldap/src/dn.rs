//! Distinguished names (RFC 4514): parsing with escapes, and the normalised form used
//! to compare them (type names canonical, values compared as their syntax says).
//! Hand-written: the codec carries DNs as plain strings and no kept crate normalises
//! them against a schema.

use crate::schema;

/// Longest DN accepted, and most RDNs: far above any entry served.
const MAX_DN: usize = 4096;
const MAX_RDNS: usize = 64;

/// One attribute-value assertion of an RDN, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    pub attr: String,
    pub value: String,
}

/// A parsed DN: RDNs from the entry up to the root; each RDN one or more AVAs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn {
    pub rdns: Vec<Vec<Ava>>,
}

impl Dn {
    pub fn parse(text: &str) -> Result<Dn, String> {
        if text.len() > MAX_DN {
            return Err("DN too long".into());
        }
        let mut rdns = Vec::new();
        // Leading spaces go; trailing ones are dropped per value (unless escaped).
        let rest = text.trim_start();
        if rest.trim_end().is_empty() {
            return Ok(Dn::default());
        }
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut rdn = Vec::new();
        loop {
            // attribute type
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                if matches!(bytes[i], b',' | b'+' | b';' | b'\\' | b'"') {
                    return Err(format!("invalid attribute type in DN at {i}"));
                }
                i += 1;
            }
            if i >= bytes.len() {
                return Err("attribute type without a value in DN".into());
            }
            let attr = rest[start..i].trim().to_string();
            if attr.is_empty() || !attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                return Err(format!("invalid attribute type {attr:?} in DN"));
            }
            i += 1;
            // value
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let mut value: Vec<u8> = Vec::new();
            if i < bytes.len() && bytes[i] == b'#' {
                // BER-encoded value: kept as its hex text (never used for names here).
                let s = i;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                    i += 1;
                }
                value.extend_from_slice(&bytes[s..i]);
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                if i < bytes.len() && !matches!(bytes[i], b',' | b'+' | b';') {
                    return Err("a #-value in a DN is hex digits only".into());
                }
            } else {
                let mut trailing_spaces = 0;
                while i < bytes.len() && !matches!(bytes[i], b',' | b'+' | b';') {
                    match bytes[i] {
                        b'\\' => {
                            i += 1;
                            let Some(&c) = bytes.get(i) else { return Err("DN ends in a backslash".into()) };
                            if c.is_ascii_hexdigit() {
                                let hex = rest.get(i..i + 2).ok_or("truncated escape in DN")?;
                                let b = u8::from_str_radix(hex, 16).map_err(|_| "bad hex escape in DN")?;
                                value.push(b);
                                i += 2;
                            } else {
                                value.push(c);
                                i += 1;
                            }
                            trailing_spaces = 0;
                        }
                        b'"' => return Err("quoted values are not allowed in DNs (RFC 4514)".into()),
                        b' ' => {
                            value.push(b' ');
                            trailing_spaces += 1;
                            i += 1;
                        }
                        c => {
                            value.push(c);
                            trailing_spaces = 0;
                            i += 1;
                        }
                    }
                }
                value.truncate(value.len() - trailing_spaces);
            }
            let value = String::from_utf8(value).map_err(|_| "DN value is not UTF-8")?;
            rdn.push(Ava { attr, value });
            if i >= bytes.len() {
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            let sep = bytes[i];
            i += 1;
            if sep != b'+' {
                rdns.push(std::mem::take(&mut rdn));
                if rdns.len() > MAX_RDNS {
                    return Err("too many RDNs".into());
                }
            }
            if i >= bytes.len() {
                return Err("DN ends in a separator".into());
            }
        }
        Ok(Dn { rdns })
    }

    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// The normalised text: canonical lower-case type names, values folded as their
    /// syntax compares them, escaped, multi-valued RDNs sorted.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for (n, rdn) in self.rdns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let mut avas: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let (name, value) = match schema::attr(&a.attr) {
                        Some(id) => {
                            let t = schema::attr_type(id);
                            (t.name.to_ascii_lowercase(), crate::matching::fold_text(t.syntax, &a.value))
                        }
                        None => (a.attr.to_ascii_lowercase(), crate::matching::fold_space_case(&a.value)),
                    };
                    format!("{name}={}", escape(&value))
                })
                .collect();
            avas.sort();
            out.push_str(&avas.join("+"));
        }
        out
    }

    /// The parent DN (root for a one-RDN DN).
    pub fn parent(&self) -> Dn {
        Dn { rdns: self.rdns.iter().skip(1).cloned().collect() }
    }

    /// The first RDN's value of `attr` (e.g. the uid of `uid=ann,ou=people,...`).
    pub fn rdn_value(&self, attr: &str) -> Option<&str> {
        let id = schema::attr(attr)?;
        self.rdns.first()?.iter().find(|a| schema::attr(&a.attr) == Some(id)).map(|a| a.value.as_str())
    }
}

/// Normalises DN text; None when it does not parse.
pub fn normalize(text: &str) -> Option<String> {
    Dn::parse(text).ok().map(|d| d.normalized())
}

/// Escapes a value for use in a DN string (RFC 4514 §2.4).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `dc=example,dc=com` for `example.com`.
pub fn domain_dn(domain: &str) -> String {
    domain.split('.').map(|l| format!("dc={}", escape(l))).collect::<Vec<_>>().join(",")
}

/// True if `ndn` is `base` or below it (both normalised).
pub fn is_within(ndn: &str, base: &str) -> bool {
    base.is_empty()
        || ndn == base
        || (ndn.len() > base.len() && ndn.ends_with(base) && ndn.as_bytes()[ndn.len() - base.len() - 1] == b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_multivalued_rdns() {
        let d = Dn::parse("cn=Lee\\, Ann+uid=ann , ou=People,DC=example,dc=com").unwrap();
        assert_eq!(d.rdns.len(), 4);
        assert_eq!(d.rdns[0][0].value, "Lee, Ann");
        assert_eq!(d.rdns[0][1], Ava { attr: "uid".into(), value: "ann".into() });
        assert_eq!(Dn::parse("cn=\\41b\\c3\\a9").unwrap().rdns[0][0].value, "Abé");
        assert_eq!(Dn::parse("").unwrap(), Dn::default());
    }

    #[test]
    fn normalised_forms_compare_as_ldap_does() {
        assert_eq!(
            normalize("UID=Ann,  OU=People, dc=Example,dc=COM"),
            normalize("uid=ann,ou=people,dc=example,dc=com")
        );
        assert_eq!(normalize("userid=ann,dc=x"), normalize("uid=ann,dc=x"));
        assert_eq!(normalize("cn=A  B,dc=x"), normalize("cn=a b,dc=x"));
        assert_ne!(normalize("cn=a,dc=x"), normalize("cn=b,dc=x"));
        assert_eq!(normalize("cn=b+uid=a,dc=x"), normalize("uid=a+cn=b,dc=x"));
    }

    #[test]
    fn rejects_malformed_dns() {
        for bad in ["cn", "=x", "cn=a,", "cn=a\\", "cn=\"q\"", "c n=x", "cn=a,,dc=x", "cn=\\4z", "o=#e\u{696}"] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for v in [" lead", "trail ", "#hash", "a,b+c=d", "back\\slash"] {
            let dn = format!("cn={}", escape(v));
            assert_eq!(Dn::parse(&dn).unwrap().rdns[0][0].value, v, "{dn}");
        }
        assert!(is_within("uid=a,dc=x,dc=y", "dc=x,dc=y") && !is_within("uid=a,dc=xx,dc=y", "dc=x,dc=y"));
        assert_eq!(domain_dn("example.com"), "dc=example,dc=com");
    }
}
