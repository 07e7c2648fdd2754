//! The schema served: attribute types with their syntax and matching, object classes,
//! and the subschema subentry that publishes both (RFC 4512 §4.2).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Agora's own OID arc: a UUID-derived OID (RFC 4122 §3 / ITU-T X.667), owned by no one
/// else, for the attributes and classes no standard defines.
pub const ARC: &str = "2.25.122214078101701836817197955045618757920";

/// How values of an attribute are written and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Unicode text, compared ignoring case and repeated spaces.
    Text,
    /// ASCII text compared ignoring case (dc, mail addresses).
    Ia5,
    /// A DN, compared after normalising each RDN.
    Dn,
    /// Telephone numbers: spaces and hyphens do not count.
    Phone,
    /// Bytes compared exactly.
    Octets,
    Jpeg,
    Certificate,
    Boolean,
    /// GeneralizedTime, ordered.
    Time,
    Uuid,
    /// Object class names or OIDs, compared ignoring case.
    Oid,
    PostalAddress,
    Integer,
}

impl Syntax {
    pub fn oid(self) -> &'static str {
        match self {
            Syntax::Text => "1.3.6.1.4.1.1466.115.121.1.15",
            Syntax::Ia5 => "1.3.6.1.4.1.1466.115.121.1.26",
            Syntax::Dn => "1.3.6.1.4.1.1466.115.121.1.12",
            Syntax::Phone => "1.3.6.1.4.1.1466.115.121.1.50",
            Syntax::Octets => "1.3.6.1.4.1.1466.115.121.1.40",
            Syntax::Jpeg => "1.3.6.1.4.1.1466.115.121.1.28",
            Syntax::Certificate => "1.3.6.1.4.1.1466.115.121.1.8",
            Syntax::Boolean => "1.3.6.1.4.1.1466.115.121.1.7",
            Syntax::Time => "1.3.6.1.4.1.1466.115.121.1.24",
            Syntax::Uuid => "1.3.6.1.1.16.1",
            Syntax::Oid => "1.3.6.1.4.1.1466.115.121.1.38",
            Syntax::PostalAddress => "1.3.6.1.4.1.1466.115.121.1.41",
            Syntax::Integer => "1.3.6.1.4.1.1466.115.121.1.27",
        }
    }

    fn desc(self) -> &'static str {
        match self {
            Syntax::Text => "Directory String",
            Syntax::Ia5 => "IA5 String",
            Syntax::Dn => "DN",
            Syntax::Phone => "Telephone Number",
            Syntax::Octets => "Octet String",
            Syntax::Jpeg => "JPEG",
            Syntax::Certificate => "Certificate",
            Syntax::Boolean => "Boolean",
            Syntax::Time => "Generalized Time",
            Syntax::Uuid => "UUID",
            Syntax::Oid => "OID",
            Syntax::PostalAddress => "Postal Address",
            Syntax::Integer => "INTEGER",
        }
    }

    /// Equality, substrings and ordering rules by name (None: not supported).
    fn rules(self) -> (Option<&'static str>, Option<&'static str>, Option<&'static str>) {
        match self {
            Syntax::Text | Syntax::PostalAddress => {
                (Some("caseIgnoreMatch"), Some("caseIgnoreSubstringsMatch"), Some("caseIgnoreOrderingMatch"))
            }
            Syntax::Ia5 => (Some("caseIgnoreIA5Match"), Some("caseIgnoreIA5SubstringsMatch"), None),
            Syntax::Dn => (Some("distinguishedNameMatch"), None, None),
            Syntax::Phone => (Some("telephoneNumberMatch"), Some("telephoneNumberSubstringsMatch"), None),
            Syntax::Octets | Syntax::Jpeg => (Some("octetStringMatch"), None, None),
            Syntax::Certificate => (Some("certificateExactMatch"), None, None),
            Syntax::Boolean => (Some("booleanMatch"), None, None),
            Syntax::Time => (Some("generalizedTimeMatch"), None, Some("generalizedTimeOrderingMatch")),
            Syntax::Uuid => (Some("uuidMatch"), None, Some("uuidOrderingMatch")),
            Syntax::Oid => (Some("objectIdentifierMatch"), None, None),
            Syntax::Integer => (Some("integerMatch"), None, Some("integerOrderingMatch")),
        }
    }

    /// Values are bytes, not text: LDIF shows them in base64, substrings do not apply.
    pub fn is_binary(self) -> bool {
        matches!(self, Syntax::Octets | Syntax::Jpeg | Syntax::Certificate)
    }
}

#[derive(Debug)]
pub struct AttrType {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// A full OID, or `.N` under Agora's arc.
    pub oid: &'static str,
    pub syntax: Syntax,
    pub single: bool,
    /// Operational (returned for `+` or by name, never for `*`).
    pub operational: bool,
    /// Computed by the server; clients cannot write it.
    pub no_user_mod: bool,
    pub desc: &'static str,
}

pub type AttrId = usize;

macro_rules! attr {
    ($name:expr, [$($alias:expr),*], $oid:expr, $syntax:ident, $single:expr, $op:expr, $nomod:expr, $desc:expr) => {
        AttrType {
            name: $name,
            aliases: &[$($alias),*],
            oid: $oid,
            syntax: Syntax::$syntax,
            single: $single,
            operational: $op,
            no_user_mod: $nomod,
            desc: $desc,
        }
    };
}

/// Every attribute type served. Order is the order attributes appear in entries.
pub static ATTRS: &[AttrType] = &[
    attr!("objectClass", [], "2.5.4.0", Oid, false, false, false, "object classes of the entry"),
    attr!("dc", ["domainComponent"], "0.9.2342.19200300.100.1.25", Ia5, true, false, false, "domain component"),
    attr!("o", ["organizationName"], "2.5.4.10", Text, false, false, false, "organization"),
    attr!("ou", ["organizationalUnitName"], "2.5.4.11", Text, false, false, false, "organizational unit"),
    attr!("uid", ["userid"], "0.9.2342.19200300.100.1.1", Text, false, false, false, "user identifier"),
    attr!("cn", ["commonName"], "2.5.4.3", Text, false, false, false, "common name"),
    attr!("sn", ["surname"], "2.5.4.4", Text, false, false, false, "surname"),
    attr!("givenName", ["gn"], "2.5.4.42", Text, false, false, false, "given name"),
    attr!("initials", [], "2.5.4.43", Text, false, false, false, "initials"),
    attr!("displayName", [], "2.16.840.1.113730.3.1.241", Text, true, false, false, "name shown in lists"),
    attr!("mail", ["rfc822Mailbox"], "0.9.2342.19200300.100.1.3", Ia5, false, false, false, "primary address"),
    attr!("proxyAddresses", [], "1.2.840.113556.1.2.210", Text, false, false, false, "SMTP:primary, smtp:other"),
    attr!("userPrincipalName", [], "1.2.840.113556.1.4.656", Text, true, false, false, "login name"),
    attr!("title", [], "2.5.4.12", Text, false, false, false, "job title"),
    attr!("department", [], "1.2.840.113556.1.2.141", Text, true, false, false, "department"),
    attr!("company", [], "1.2.840.113556.1.2.146", Text, true, false, false, "company"),
    attr!("physicalDeliveryOfficeName", [], "2.5.4.19", Text, false, false, false, "office"),
    attr!("postalAddress", [], "2.5.4.16", PostalAddress, false, false, false, "postal address"),
    attr!("telephoneNumber", [], "2.5.4.20", Phone, false, false, false, "telephone number"),
    attr!("mobile", ["mobileTelephoneNumber"], "0.9.2342.19200300.100.1.41", Phone, false, false, false, "mobile"),
    attr!("description", [], "2.5.4.13", Text, false, false, false, "description"),
    attr!("manager", [], "0.9.2342.19200300.100.1.10", Dn, false, false, false, "the manager's entry"),
    attr!("directReports", [], "1.2.840.113556.1.2.436", Dn, false, false, true, "entries managed by this one"),
    attr!("member", [], "2.5.4.31", Dn, false, false, false, "members of a group"),
    attr!(
        "mgrpRFC822MailMember",
        [],
        ".1.1",
        Ia5,
        false,
        false,
        false,
        "group members outside the directory, by address"
    ),
    attr!("memberOf", [], "1.2.840.113556.1.2.102", Dn, false, false, true, "groups this entry belongs to"),
    attr!("jpegPhoto", [], "0.9.2342.19200300.100.1.60", Jpeg, false, false, false, "photo"),
    attr!("thumbnailPhoto", [], "2.16.840.1.113730.3.1.35", Jpeg, true, false, false, "photo"),
    attr!("userCertificate", [], "2.5.4.36", Certificate, false, false, false, "X.509 certificate (S/MIME)"),
    attr!(
        "msExchHideFromAddressLists",
        [],
        ".1.2",
        Boolean,
        true,
        false,
        false,
        "TRUE: not in address lists (still receives mail)"
    ),
    attr!("userPassword", [], "2.5.4.35", Octets, false, false, false, "password (never readable)"),
    attr!(
        "agoraRoutingTable",
        [],
        ".1.3",
        Text,
        true,
        false,
        true,
        "the organisation's routing table in its canonical text (written by agora routing)"
    ),
    attr!("agoraRoutingVersion", [], ".1.4", Ia5, true, false, true, "the routing table's version, MAJOR.MINOR"),
    attr!("agoraRoutingDigest", [], ".1.5", Ia5, true, false, true, "SHA-256 of the routing table's canonical text"),
    attr!("objectGUID", [], "1.2.840.113556.1.4.2", Octets, true, false, true, "identity, 16 bytes"),
    attr!("whenCreated", [], "1.2.840.113556.1.2.2", Time, true, false, true, "creation time"),
    attr!("whenChanged", [], "1.2.840.113556.1.2.3", Time, true, false, true, "last change"),
    attr!("entryUUID", [], "1.3.6.1.1.16.4", Uuid, true, true, true, "identity (RFC 4530)"),
    attr!("createTimestamp", [], "2.5.18.1", Time, true, true, true, "creation time"),
    attr!("modifyTimestamp", [], "2.5.18.2", Time, true, true, true, "last change"),
    attr!("entryDN", [], "1.3.6.1.1.20", Dn, true, true, true, "the entry's DN (RFC 5020)"),
    attr!("subschemaSubentry", [], "2.5.18.10", Dn, true, true, true, "where the schema is"),
    attr!("hasSubordinates", [], "2.5.18.9", Boolean, true, true, true, "has entries below"),
    attr!("structuralObjectClass", [], "2.5.21.9", Oid, true, true, true, "the structural class"),
    attr!(
        "entryCSN",
        [],
        "1.3.6.1.4.1.4203.666.1.7",
        Ia5,
        true,
        true,
        true,
        "change sequence number of the last change"
    ),
    attr!("authPassword", [], "1.3.6.1.4.1.4203.1.3.4", Octets, false, false, false, "SCRAM verifier (never readable)"),
    // The subschema subentry's own attributes.
    attr!("attributeTypes", [], "2.5.21.5", Text, false, true, false, "attribute types"),
    attr!("objectClasses", [], "2.5.21.6", Text, false, true, false, "object classes"),
    attr!("ldapSyntaxes", [], "1.3.6.1.4.1.1466.101.120.16", Text, false, true, false, "syntaxes"),
    attr!("matchingRules", [], "2.5.21.4", Text, false, true, false, "matching rules"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassKind {
    Abstract,
    Structural,
    Auxiliary,
}

#[derive(Debug)]
pub struct ObjectClass {
    pub name: &'static str,
    pub oid: &'static str,
    pub sup: &'static str,
    pub kind: ClassKind,
    pub must: &'static [&'static str],
    pub may: &'static [&'static str],
}

pub static CLASSES: &[ObjectClass] = &[
    ObjectClass { name: "top", oid: "2.5.6.0", sup: "", kind: ClassKind::Abstract, must: &["objectClass"], may: &[] },
    ObjectClass {
        name: "organization",
        oid: "2.5.6.4",
        sup: "top",
        kind: ClassKind::Structural,
        must: &["o"],
        may: &["description", "telephoneNumber", "postalAddress"],
    },
    ObjectClass {
        name: "dcObject",
        oid: "1.3.6.1.4.1.1466.344",
        sup: "top",
        kind: ClassKind::Auxiliary,
        must: &["dc"],
        may: &[],
    },
    ObjectClass {
        name: "organizationalUnit",
        oid: "2.5.6.5",
        sup: "top",
        kind: ClassKind::Structural,
        must: &["ou"],
        may: &["description"],
    },
    ObjectClass {
        name: "person",
        oid: "2.5.6.6",
        sup: "top",
        kind: ClassKind::Structural,
        must: &["sn", "cn"],
        may: &["userPassword", "telephoneNumber", "description"],
    },
    ObjectClass {
        name: "organizationalPerson",
        oid: "2.5.6.7",
        sup: "person",
        kind: ClassKind::Structural,
        must: &[],
        may: &["title", "ou", "physicalDeliveryOfficeName", "postalAddress"],
    },
    ObjectClass {
        name: "inetOrgPerson",
        oid: "2.16.840.1.113730.3.2.2",
        sup: "organizationalPerson",
        kind: ClassKind::Structural,
        must: &[],
        may: &[
            "displayName",
            "givenName",
            "initials",
            "mail",
            "uid",
            "mobile",
            "manager",
            "jpegPhoto",
            "userCertificate",
        ],
    },
    ObjectClass {
        name: "groupOfNames",
        oid: "2.5.6.9",
        sup: "top",
        kind: ClassKind::Structural,
        must: &["cn"],
        may: &["member", "description", "o", "ou"],
    },
    ObjectClass {
        name: "agoraMailRecipient",
        oid: ".2.1",
        sup: "top",
        kind: ClassKind::Auxiliary,
        must: &[],
        may: &[
            "mail",
            "displayName",
            "proxyAddresses",
            "userPrincipalName",
            "department",
            "company",
            "directReports",
            "memberOf",
            "thumbnailPhoto",
            "msExchHideFromAddressLists",
            "mgrpRFC822MailMember",
            "objectGUID",
            "whenCreated",
            "whenChanged",
        ],
    },
    ObjectClass {
        name: "agoraRoutingOrganization",
        oid: ".2.2",
        sup: "top",
        kind: ClassKind::Structural,
        must: &["cn", "agoraRoutingTable"],
        may: &["agoraRoutingVersion", "agoraRoutingDigest", "description"],
    },
    ObjectClass { name: "subentry", oid: "2.5.17.0", sup: "top", kind: ClassKind::Structural, must: &["cn"], may: &[] },
    ObjectClass {
        name: "subschema",
        oid: "2.5.20.1",
        sup: "",
        kind: ClassKind::Auxiliary,
        must: &[],
        may: &["attributeTypes", "objectClasses", "ldapSyntaxes", "matchingRules"],
    },
];

pub fn full_oid(oid: &str) -> String {
    if oid.starts_with('.') { format!("{ARC}{oid}") } else { oid.to_string() }
}

fn by_name() -> &'static HashMap<String, AttrId> {
    static MAP: OnceLock<HashMap<String, AttrId>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = HashMap::new();
        for (i, a) in ATTRS.iter().enumerate() {
            m.insert(a.name.to_ascii_lowercase(), i);
            m.insert(full_oid(a.oid), i);
            for alias in a.aliases {
                m.insert(alias.to_ascii_lowercase(), i);
            }
        }
        m
    })
}

/// An attribute description split into its type and options (`userCertificate;binary`).
pub fn split_options(desc: &str) -> (&str, Vec<&str>) {
    let mut parts = desc.split(';');
    let base = parts.next().unwrap_or_default();
    (base, parts.filter(|o| !o.is_empty()).collect())
}

/// Finds an attribute type by name, alias or OID (options ignored), case-insensitively.
pub fn attr(desc: &str) -> Option<AttrId> {
    let (base, _) = split_options(desc);
    by_name().get(&base.to_ascii_lowercase()).copied()
}

pub fn attr_type(id: AttrId) -> &'static AttrType {
    &ATTRS[id]
}

/// The named attribute's id: for the table's own names, which always exist (looked up
/// as written first, without lower-casing: the tree's builder calls this per value).
pub fn id(name: &str) -> AttrId {
    static EXACT: OnceLock<HashMap<&'static str, AttrId>> = OnceLock::new();
    let exact = EXACT.get_or_init(|| ATTRS.iter().enumerate().map(|(i, a)| (a.name, i)).collect());
    exact.get(name).copied().or_else(|| attr(name)).unwrap_or(0)
}

/// Ids the hot paths test against, looked up once.
#[derive(Debug)]
pub struct Known {
    pub object_class: AttrId,
    pub user_password: AttrId,
    pub auth_password: AttrId,
}

pub fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| Known {
        object_class: id("objectClass"),
        user_password: id("userPassword"),
        auth_password: id("authPassword"),
    })
}

pub fn class(name: &str) -> Option<&'static ObjectClass> {
    let lower = name.to_ascii_lowercase();
    CLASSES.iter().find(|c| c.name.eq_ignore_ascii_case(&lower) || full_oid(c.oid) == lower)
}

pub const SUBSCHEMA_DN: &str = "cn=Subschema";

/// An attribute type as RFC 4512 §4.1.2 writes it; `strict` for this server's own
/// subschema, else as OpenLDAP accepts it in a schema file.
fn attr_description(a: &AttrType, strict: bool) -> String {
    let names = std::iter::once(a.name).chain(a.aliases.iter().copied());
    let names: Vec<String> = names.map(|n| format!("'{n}'")).collect();
    let names = if names.len() == 1 { names[0].clone() } else { format!("( {} )", names.join(" ")) };
    let (mut eq, sub, ord) = a.syntax.rules();
    if !strict && a.syntax == Syntax::Jpeg {
        // OpenLDAP has no equality rule for JPEG values (its own jpegPhoto has none).
        eq = None;
    }
    let mut d = format!("( {} NAME {names} DESC '{}'", full_oid(a.oid), a.desc);
    for (k, v) in [("EQUALITY", eq), ("ORDERING", ord), ("SUBSTR", sub)] {
        if let Some(v) = v {
            d.push_str(&format!(" {k} {v}"));
        }
    }
    d.push_str(&format!(" SYNTAX {}", a.syntax.oid()));
    if a.single {
        d.push_str(" SINGLE-VALUE");
    }
    if a.no_user_mod && strict {
        d.push_str(" NO-USER-MODIFICATION");
    }
    if a.operational {
        d.push_str(" USAGE directoryOperation");
    }
    d.push_str(" )");
    d
}

/// An object class as RFC 4512 §4.1.1 writes it, without the attributes in `skip`.
fn class_description(c: &ObjectClass, skip: &[&str]) -> String {
    let mut d = format!("( {} NAME '{}'", full_oid(c.oid), c.name);
    if !c.sup.is_empty() {
        d.push_str(&format!(" SUP {}", c.sup));
    }
    d.push_str(match c.kind {
        ClassKind::Abstract => " ABSTRACT",
        ClassKind::Structural => " STRUCTURAL",
        ClassKind::Auxiliary => " AUXILIARY",
    });
    for (k, list) in [("MUST", c.must), ("MAY", c.may)] {
        let list: Vec<&str> = list.iter().copied().filter(|a| !skip.contains(a)).collect();
        match list.as_slice() {
            [] => {}
            [one] => d.push_str(&format!(" {k} {one}")),
            many => d.push_str(&format!(" {k} ( {} )", many.join(" $ "))),
        }
    }
    d.push_str(" )");
    d
}

/// What a replica receives that OpenLDAP's core, cosine and inetorgperson schemas lack.
const OPENLDAP_LACKS: &[&str] = &[
    "proxyAddresses",
    "userPrincipalName",
    "department",
    "company",
    "mgrpRFC822MailMember",
    "thumbnailPhoto",
    "msExchHideFromAddressLists",
    "objectGUID",
    "whenCreated",
    "whenChanged",
];

/// Agora's own attribute types and classes in OpenLDAP's schema file format, for an
/// OpenLDAP replica to load (`include` in slapd.conf). Computed attributes (memberOf,
/// directReports) are not replicated, so they are left out.
pub fn openldap_schema() -> String {
    let mut out =
        String::from("# Agora's directory schema for an OpenLDAP replica (after core, cosine, inetorgperson)\n");
    let (types, classes) = openldap_parts();
    for t in types {
        out.push_str(&format!("attributetype {t}\n"));
    }
    for c in classes {
        out.push_str(&format!("objectclass {c}\n"));
    }
    out
}

/// The same as an LDIF entry for OpenLDAP's cn=config (`ldapadd -Y EXTERNAL -H ldapi:///`).
pub fn openldap_ldif() -> String {
    let mut out = String::from("dn: cn=agora,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: agora\n");
    let (types, classes) = openldap_parts();
    for t in types {
        out.push_str(&format!("olcAttributeTypes: {t}\n"));
    }
    for c in classes {
        out.push_str(&format!("olcObjectClasses: {c}\n"));
    }
    out
}

fn openldap_parts() -> (Vec<String>, Vec<String>) {
    let types = ATTRS.iter().filter(|a| OPENLDAP_LACKS.contains(&a.name)).map(|a| attr_description(a, false)).collect();
    let classes = CLASSES
        .iter()
        .filter(|c| c.name == "agoraMailRecipient")
        .map(|c| class_description(c, &["memberOf", "directReports"]))
        .collect();
    (types, classes)
}

/// The values of the subschema subentry: (attribute, values).
pub fn subschema_values() -> Vec<(&'static str, Vec<String>)> {
    let types = ATTRS.iter().map(|a| attr_description(a, true)).collect();
    let classes = CLASSES.iter().map(|c| class_description(c, &[])).collect();
    let mut syntaxes: Vec<Syntax> = Vec::new();
    let mut rules: Vec<(&str, Syntax)> = Vec::new();
    for a in ATTRS {
        if !syntaxes.contains(&a.syntax) {
            syntaxes.push(a.syntax);
            let (eq, sub, ord) = a.syntax.rules();
            for r in [eq, sub, ord].into_iter().flatten() {
                if !rules.iter().any(|(n, _)| *n == r) {
                    rules.push((r, a.syntax));
                }
            }
        }
    }
    let syntaxes = syntaxes.iter().map(|s| format!("( {} DESC '{}' )", s.oid(), s.desc())).collect();
    let rules = rules
        .iter()
        .filter_map(|(name, syntax)| {
            let oid = rule_oid(name)?;
            // Substring rules assert substrings, whatever the attribute's syntax.
            let syn = if name.contains("Substrings") { "1.3.6.1.4.1.1466.115.121.1.58" } else { syntax.oid() };
            Some(format!("( {oid} NAME '{name}' SYNTAX {syn} )"))
        })
        .collect();
    vec![
        ("objectClass", vec!["top".into(), "subentry".into(), "subschema".into()]),
        ("cn", vec!["Subschema".into()]),
        ("attributeTypes", types),
        ("objectClasses", classes),
        ("ldapSyntaxes", syntaxes),
        ("matchingRules", rules),
    ]
}

/// Matching rules by name and OID, for the subschema and extensible matches.
pub const RULES: &[(&str, &str)] = &[
    ("caseIgnoreMatch", "2.5.13.2"),
    ("caseIgnoreOrderingMatch", "2.5.13.3"),
    ("caseIgnoreSubstringsMatch", "2.5.13.4"),
    ("caseExactMatch", "2.5.13.5"),
    ("caseExactOrderingMatch", "2.5.13.6"),
    ("caseExactSubstringsMatch", "2.5.13.7"),
    ("caseIgnoreIA5Match", "1.3.6.1.4.1.1466.109.114.2"),
    ("caseExactIA5Match", "1.3.6.1.4.1.1466.109.114.1"),
    ("caseIgnoreIA5SubstringsMatch", "1.3.6.1.4.1.1466.109.114.3"),
    ("distinguishedNameMatch", "2.5.13.1"),
    ("telephoneNumberMatch", "2.5.13.20"),
    ("telephoneNumberSubstringsMatch", "2.5.13.21"),
    ("octetStringMatch", "2.5.13.17"),
    ("certificateExactMatch", "2.5.13.34"),
    ("booleanMatch", "2.5.13.13"),
    ("generalizedTimeMatch", "2.5.13.27"),
    ("generalizedTimeOrderingMatch", "2.5.13.28"),
    ("uuidMatch", "1.3.6.1.1.16.2"),
    ("uuidOrderingMatch", "1.3.6.1.1.16.3"),
    ("objectIdentifierMatch", "2.5.13.0"),
    ("integerMatch", "2.5.13.14"),
    ("integerOrderingMatch", "2.5.13.15"),
];

pub fn rule_oid(name: &str) -> Option<&'static str> {
    RULES.iter().find(|(n, _)| *n == name).map(|(_, o)| *o)
}

/// A matching rule given by name or OID, as its canonical name.
pub fn rule(name_or_oid: &str) -> Option<&'static str> {
    RULES.iter().find(|(n, o)| n.eq_ignore_ascii_case(name_or_oid) || *o == name_or_oid).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_oids_find_the_same_type() {
        assert_eq!(attr("SN"), attr("surname"));
        assert_eq!(attr("2.5.4.4"), attr("sn"));
        assert_eq!(attr("userCertificate;binary"), attr("usercertificate"));
        assert!(attr("nonsense").is_none());
        assert_eq!(attr(&format!("{ARC}.1.2")), attr("msExchHideFromAddressLists"));
    }

    #[test]
    fn every_class_names_only_known_attributes() {
        for c in CLASSES {
            for a in c.must.iter().chain(c.may) {
                assert!(attr(a).is_some(), "{} names unknown {a}", c.name);
            }
        }
    }

    #[test]
    fn subschema_descriptions_are_well_formed() {
        for (_, values) in subschema_values() {
            for v in values {
                assert_eq!(v.matches('(').count(), v.matches(')').count(), "{v}");
            }
        }
    }
}
