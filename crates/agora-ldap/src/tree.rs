//! The directory as LDAP sees it: a snapshot of the store's domains, accounts, groups,
//! aliases and contacts laid out as entries under one naming context per domain, with
//! folded values and an equality index. Rebuilt when the store's directory version
//! moves, so every write by any service or the CLI shows at the next operation.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

/// The tree's maps hash with foldhash (seeded per process): a rebuild makes hundreds of
/// thousands of lookups, and SipHash was a tenth of its time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use agora_store::{Account, Contact, Group, Profile, Store};

use crate::dn;
use crate::matching;
use crate::schema::{self, AttrId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A domain's naming context (`dc=example,dc=com`).
    Context,
    /// `ou=people`, `ou=groups`, `ou=contacts`.
    Unit,
    Person,
    Group,
    Contact,
    /// `cn=routing` under each naming context: the organisation's routing table, so it
    /// replicates with the directory. Only administrators and replicators see it.
    Routing,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub id: AttrId,
    pub values: Vec<Vec<u8>>,
    /// The values prepared for equality (matching::prepare), same order.
    pub folded: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub dn: String,
    pub ndn: String,
    pub kind: Kind,
    pub ctx: usize,
    pub parent: Option<usize>,
    pub hidden: bool,
    /// The address the entry stands for: an account's login, a group's or contact's address.
    pub address: String,
    /// An account with the administrator role.
    pub admin: bool,
    /// Its entryUUID: the store's for accounts, groups and contacts, one made from the DN
    /// for naming contexts and units (which are never renamed).
    pub uuid: [u8; 16],
    /// An account's password hash and SCRAM verifier: never an attribute; only a sync
    /// search by a replicating Agora over TLS carries them.
    pub secret: Option<(String, String)>,
    /// Sorted by attribute id.
    pub attrs: Vec<Attr>,
}

impl Entry {
    pub fn get(&self, id: AttrId) -> Option<&Attr> {
        self.attrs.binary_search_by_key(&id, |a| a.id).ok().map(|i| &self.attrs[i])
    }
}

#[derive(Debug, Clone)]
pub struct NamingContext {
    pub domain: String,
    pub dn: String,
    pub ndn: String,
    pub entry: usize,
}

#[derive(Debug, Default)]
pub struct Tree {
    pub contexts: Vec<NamingContext>,
    pub entries: Vec<Entry>,
    pub by_ndn: HashMap<String, usize>,
    /// Every address that names an entry: logins, extra addresses, aliases of one target.
    pub by_address: HashMap<String, usize>,
    pub children: Vec<Vec<usize>>,
    /// Per attribute: the hash of a folded value -> entries holding a value of that hash
    /// (candidates: a search checks each against its filter).
    index: Vec<HashMap<u64, Vec<u32>>>,
    hasher: foldhash::fast::RandomState,
}

/// The store's directory, as one operation reads it.
pub struct Source {
    pub domains: Vec<String>,
    pub accounts: Vec<Account>,
    pub groups: Vec<Group>,
    pub aliases: Vec<(String, Vec<String>)>,
    pub contacts: Vec<Contact>,
    /// The routing table's canonical text, when the organisation has one.
    pub routing: Option<String>,
}

impl Source {
    pub async fn read(store: &Arc<dyn Store>) -> agora_store::Result<Source> {
        Ok(Source {
            domains: store.domains().await?.into_iter().map(|d| d.name).collect(),
            accounts: store.accounts(None).await?,
            groups: store.groups().await?,
            aliases: store.aliases().await?,
            contacts: store.contacts(None).await?,
            routing: store.routing_table().await?,
        })
    }
}

/// The organisational units under each naming context.
pub const UNITS: [(&str, Kind); 3] = [("people", Kind::Person), ("groups", Kind::Group), ("contacts", Kind::Contact)];

pub fn person_dn(login: &str) -> String {
    let (local, domain) = login.rsplit_once('@').unwrap_or((login, ""));
    format!("uid={},ou=people,{}", dn::escape(local), dn::domain_dn(domain))
}

pub fn group_dn(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    format!("cn={},ou=groups,{}", dn::escape(local), dn::domain_dn(domain))
}

/// Where a naming context keeps the routing table.
pub fn routing_dn(domain: &str) -> String {
    format!("cn=routing,{}", dn::domain_dn(domain))
}

pub fn contact_dn(address: &str, domain: &str) -> String {
    format!("mail={},ou=contacts,{}", dn::escape(address), dn::domain_dn(domain))
}

/// `YYYYMMDDHHMMSSZ` (RFC 4517 GeneralizedTime).
pub fn generalized_time(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = agora_store::time::split(secs);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z")
}

/// A stable name-based UUID (version 8) for entries the store keeps no identity for.
pub fn uuid_of_dn(ndn: &str) -> [u8; 16] {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("agora-entry:{ndn}").as_bytes());
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

pub fn uuid_text(u: &[u8; 16]) -> String {
    let h = agora_store::blob::hex(u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Collects one entry's attributes before they are sorted and folded.
#[derive(Default)]
struct Builder {
    attrs: Vec<(AttrId, Vec<Vec<u8>>)>,
}

impl Builder {
    fn add(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        if value.is_empty() {
            return;
        }
        let id = schema::id(name);
        match self.attrs.iter_mut().find(|(i, _)| *i == id) {
            Some((_, vals)) => {
                if !vals.contains(&value) {
                    vals.push(value)
                }
            }
            None => self.attrs.push((id, vec![value])),
        }
    }

    fn add_all<I: IntoIterator<Item = S>, S: Into<Vec<u8>>>(&mut self, name: &str, values: I) {
        for v in values {
            self.add(name, v);
        }
    }

    fn finish(mut self) -> Vec<Attr> {
        self.attrs.sort_by_key(|(id, _)| *id);
        self.attrs
            .into_iter()
            .map(|(id, values)| {
                let syntax = schema::attr_type(id).syntax;
                let folded = values.iter().map(|v| matching::prepare(syntax, v).unwrap_or_default()).collect();
                Attr { id, values, folded }
            })
            .collect()
    }
}

fn profile_attrs(b: &mut Builder, p: &Profile) {
    b.add("givenName", p.given_name.as_str());
    b.add("initials", p.initials.as_str());
    b.add("title", p.title.as_str());
    b.add("department", p.department.as_str());
    b.add("company", p.company.as_str());
    b.add("physicalDeliveryOfficeName", p.office.as_str());
    b.add("postalAddress", p.postal_address.as_str());
    b.add("telephoneNumber", p.phone.as_str());
    b.add("mobile", p.mobile.as_str());
    b.add("description", p.description.as_str());
    if !p.photo.is_empty() {
        b.add("jpegPhoto", p.photo.clone());
        b.add("thumbnailPhoto", p.photo.clone());
    }
    b.add_all("userCertificate", p.certificates.iter().cloned());
    if p.hidden {
        b.add("msExchHideFromAddressLists", "TRUE");
    }
}

fn stamps(b: &mut Builder, uuid: &[u8; 16], created: i64, changed: i64) {
    let changed = changed.max(created);
    b.add("objectGUID", uuid.to_vec());
    b.add("entryUUID", uuid_text(uuid));
    let (c, m) = (generalized_time(created), generalized_time(changed));
    b.add("whenCreated", format!("{}.0Z", &c[..14]));
    b.add("whenChanged", format!("{}.0Z", &m[..14]));
    b.add("createTimestamp", c);
    b.add("modifyTimestamp", m);
}

impl Tree {
    pub fn build(src: Source) -> Tree {
        let mut t = Tree::default();
        let mut domains = src.domains.clone();
        domains.sort();
        // Pass 1: DNs and addresses of every entry, so references can be resolved.
        struct Pending {
            dn: String,
            kind: Kind,
            ctx: usize,
            address: String,
            hidden: bool,
            admin: bool,
            uuid: Option<[u8; 16]>,
            secret: Option<(String, String)>,
            item: Item,
        }
        enum Item {
            Context(String),
            Unit(&'static str),
            Person(usize),
            Group(usize),
            Contact(usize),
            Routing,
        }
        let mut pending: Vec<Pending> = Vec::new();
        let mut ctx_of: HashMap<String, usize> = HashMap::default();
        for d in &domains {
            let ctx = t.contexts.len();
            let cdn = dn::domain_dn(d);
            t.contexts.push(NamingContext {
                domain: d.clone(),
                ndn: dn::normalize(&cdn).unwrap_or_default(),
                dn: cdn.clone(),
                entry: pending.len(),
            });
            ctx_of.insert(d.clone(), ctx);
            pending.push(Pending {
                dn: cdn.clone(),
                kind: Kind::Context,
                ctx,
                address: String::new(),
                hidden: false,
                admin: false,
                uuid: None,
                secret: None,
                item: Item::Context(d.clone()),
            });
            for (unit, _) in UNITS {
                pending.push(Pending {
                    dn: format!("ou={unit},{cdn}"),
                    kind: Kind::Unit,
                    ctx,
                    address: String::new(),
                    hidden: false,
                    admin: false,
                    uuid: None,
                    secret: None,
                    item: Item::Unit(unit),
                });
            }
        }
        // The routing table under every context: a replica of some domains gets it too.
        let routing = src.routing.as_deref().and_then(|t| agora_mail::routing::Table::decode(t).ok());
        if routing.is_some() {
            for (ctx, c) in t.contexts.iter().enumerate() {
                pending.push(Pending {
                    dn: routing_dn(&c.domain),
                    kind: Kind::Routing,
                    ctx,
                    address: String::new(),
                    hidden: true,
                    admin: false,
                    uuid: None,
                    secret: None,
                    item: Item::Routing,
                });
            }
        }
        let domain_ctx = |addr: &str| addr.rsplit_once('@').and_then(|(_, d)| ctx_of.get(d).copied());
        for (i, a) in src.accounts.iter().enumerate() {
            let Some(ctx) = domain_ctx(&a.login) else { continue };
            pending.push(Pending {
                dn: person_dn(&a.login),
                kind: Kind::Person,
                ctx,
                address: a.login.clone(),
                hidden: a.profile.hidden,
                admin: a.role == agora_store::Role::Admin,
                uuid: Some(a.uuid),
                secret: Some((a.password_hash.clone(), a.scram.clone())),
                item: Item::Person(i),
            });
        }
        for (i, g) in src.groups.iter().enumerate() {
            let Some(ctx) = domain_ctx(&g.address) else { continue };
            pending.push(Pending {
                dn: group_dn(&g.address),
                kind: Kind::Group,
                ctx,
                address: g.address.clone(),
                hidden: g.profile.hidden,
                admin: false,
                uuid: Some(g.uuid),
                secret: None,
                item: Item::Group(i),
            });
        }
        for (i, c) in src.contacts.iter().enumerate() {
            let Some(&ctx) = ctx_of.get(&c.domain) else { continue };
            pending.push(Pending {
                dn: contact_dn(&c.address, &c.domain),
                kind: Kind::Contact,
                ctx,
                address: c.address.clone(),
                hidden: c.profile.hidden,
                admin: false,
                uuid: Some(c.uuid),
                secret: None,
                item: Item::Contact(i),
            });
        }
        for (i, p) in pending.iter().enumerate() {
            if !p.address.is_empty() {
                t.by_address.insert(p.address.clone(), i);
            }
        }
        for a in &src.accounts {
            if let Some(&i) = t.by_address.get(&a.login) {
                for extra in &a.addresses {
                    t.by_address.insert(extra.clone(), i);
                }
            }
        }
        // Aliases of exactly one target are another address of that target.
        let mut alias_of: HashMap<usize, Vec<String>> = HashMap::default();
        for (alias, targets) in &src.aliases {
            if let [one] = targets.as_slice()
                && let Some(&i) = t.by_address.get(one)
            {
                alias_of.entry(i).or_default().push(alias.clone());
            }
        }
        for (i, aliases) in &alias_of {
            for a in aliases {
                t.by_address.entry(a.clone()).or_insert(*i);
            }
        }
        // Group membership, direct then transitive (nested groups resolved).
        let mut direct_groups: HashMap<usize, Vec<usize>> = HashMap::default();
        let group_entry = |g: &Group| t.by_address.get(&g.address).copied();
        for g in &src.groups {
            let Some(gi) = group_entry(g) else { continue };
            for m in &g.members {
                if let Some(&mi) = t.by_address.get(m) {
                    let list = direct_groups.entry(mi).or_default();
                    if !list.contains(&gi) {
                        list.push(gi);
                    }
                }
            }
        }
        let member_of = |start: usize| -> Vec<usize> {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            let mut queue: VecDeque<usize> = direct_groups.get(&start).cloned().unwrap_or_default().into();
            while let Some(g) = queue.pop_front() {
                if g == start || !seen.insert(g) {
                    continue;
                }
                out.push(g);
                if let Some(up) = direct_groups.get(&g) {
                    queue.extend(up.iter().copied());
                }
            }
            out
        };
        let mut reports: HashMap<usize, Vec<usize>> = HashMap::default();
        for (i, p) in pending.iter().enumerate() {
            let manager = match p.item {
                Item::Person(a) => &src.accounts[a].profile.manager,
                Item::Contact(c) => &src.contacts[c].profile.manager,
                _ => continue,
            };
            if let Some(&m) = t.by_address.get(manager) {
                reports.entry(m).or_default().push(i);
            }
        }
        // Pass 2: attributes.
        let dns: Vec<String> = pending.iter().map(|p| p.dn.clone()).collect();
        let mut has_children = vec![false; pending.len()];
        let ndns: Vec<String> = dns.iter().map(|d| dn::normalize(d).unwrap_or_default()).collect();
        let mut by_ndn = HashMap::default();
        for (i, n) in ndns.iter().enumerate() {
            by_ndn.insert(n.clone(), i);
        }
        let mut parents = vec![None; pending.len()];
        for (i, n) in ndns.iter().enumerate() {
            if let Some((_, parent)) = n.split_once(',')
                && let Some(&pi) = by_ndn.get(parent)
            {
                parents[i] = Some(pi);
                has_children[pi] = true;
            }
        }
        for (i, p) in pending.iter().enumerate() {
            let mut b = Builder::default();
            let proxy = |b: &mut Builder, primary: &str, others: &[String]| {
                b.add("mail", primary);
                b.add("proxyAddresses", format!("SMTP:{primary}"));
                for o in others {
                    b.add("proxyAddresses", format!("smtp:{o}"));
                }
            };
            let aliases = alias_of.get(&i).cloned().unwrap_or_default();
            let uuid = p.uuid.unwrap_or_else(|| uuid_of_dn(&ndns[i]));
            let structural;
            match &p.item {
                Item::Context(d) => {
                    structural = "organization";
                    b.add_all("objectClass", ["top", "dcObject", "organization"]);
                    b.add("dc", d.split('.').next().unwrap_or_default());
                    b.add("o", d.as_str());
                    b.add("entryUUID", uuid_text(&uuid));
                }
                Item::Unit(u) => {
                    structural = "organizationalUnit";
                    b.add_all("objectClass", ["top", "organizationalUnit"]);
                    b.add("ou", *u);
                    b.add("entryUUID", uuid_text(&uuid));
                }
                Item::Person(ai) => {
                    let a = &src.accounts[*ai];
                    structural = "inetOrgPerson";
                    b.add_all(
                        "objectClass",
                        ["top", "person", "organizationalPerson", "inetOrgPerson", "agoraMailRecipient"],
                    );
                    let local = a.login.rsplit_once('@').map_or(a.login.as_str(), |(l, _)| l);
                    b.add("uid", local);
                    let cn = if a.display_name.trim().is_empty() { local } else { a.display_name.trim() };
                    b.add("cn", cn);
                    b.add("displayName", cn);
                    b.add("sn", if a.profile.surname.is_empty() { cn } else { a.profile.surname.as_str() });
                    let mut others = a.addresses.clone();
                    others.extend(aliases);
                    proxy(&mut b, &a.login, &others);
                    b.add("userPrincipalName", a.login.as_str());
                    profile_attrs(&mut b, &a.profile);
                    if let Some(&m) = t.by_address.get(&a.profile.manager) {
                        b.add("manager", dns[m].as_str());
                    }
                    stamps(&mut b, &a.uuid, a.created, a.changed);
                }
                Item::Group(gi) => {
                    let g = &src.groups[*gi];
                    structural = "groupOfNames";
                    b.add_all("objectClass", ["top", "groupOfNames", "agoraMailRecipient"]);
                    let local = g.address.rsplit_once('@').map_or(g.address.as_str(), |(l, _)| l);
                    b.add("cn", local);
                    if !g.display_name.trim().is_empty() {
                        b.add("cn", g.display_name.trim());
                        b.add("displayName", g.display_name.trim());
                    }
                    proxy(&mut b, &g.address, &aliases);
                    for m in &g.members {
                        match t.by_address.get(m) {
                            Some(&mi) => b.add("member", dns[mi].as_str()),
                            None => b.add("mgrpRFC822MailMember", m.as_str()),
                        }
                    }
                    profile_attrs(&mut b, &g.profile);
                    stamps(&mut b, &g.uuid, g.created, g.changed);
                }
                Item::Contact(ci) => {
                    let c = &src.contacts[*ci];
                    structural = "inetOrgPerson";
                    b.add_all(
                        "objectClass",
                        ["top", "person", "organizationalPerson", "inetOrgPerson", "agoraMailRecipient"],
                    );
                    let cn = if c.display_name.trim().is_empty() { c.address.as_str() } else { c.display_name.trim() };
                    b.add("cn", cn);
                    b.add("displayName", cn);
                    b.add("sn", if c.profile.surname.is_empty() { cn } else { c.profile.surname.as_str() });
                    proxy(&mut b, &c.address, &[]);
                    profile_attrs(&mut b, &c.profile);
                    if let Some(&m) = t.by_address.get(&c.profile.manager) {
                        b.add("manager", dns[m].as_str());
                    }
                    stamps(&mut b, &c.uuid, c.created, c.changed);
                }
                Item::Routing => {
                    structural = "agoraRoutingOrganization";
                    b.add_all("objectClass", ["top", "agoraRoutingOrganization"]);
                    b.add("cn", "routing");
                    if let (Some(table), Some(text)) = (&routing, &src.routing) {
                        if !table.org.is_empty() {
                            b.add("description", table.org.as_str());
                        }
                        b.add("agoraRoutingTable", text.as_str());
                        let (major, minor) = table.versions();
                        b.add("agoraRoutingVersion", format!("{major}.{minor}"));
                        b.add("agoraRoutingDigest", table.digest());
                    }
                    b.add("entryUUID", uuid_text(&uuid));
                }
            }
            if matches!(p.kind, Kind::Person | Kind::Group | Kind::Contact) {
                for g in member_of(i) {
                    b.add("memberOf", dns[g].as_str());
                }
            }
            for r in reports.get(&i).into_iter().flatten() {
                b.add("directReports", dns[*r].as_str());
            }
            b.add("structuralObjectClass", structural);
            b.add("entryDN", p.dn.as_str());
            b.add("subschemaSubentry", schema::SUBSCHEMA_DN);
            b.add("hasSubordinates", if has_children[i] { "TRUE" } else { "FALSE" });
            t.entries.push(Entry {
                dn: p.dn.clone(),
                ndn: ndns[i].clone(),
                kind: p.kind,
                ctx: p.ctx,
                parent: parents[i],
                hidden: p.hidden,
                address: p.address.clone(),
                admin: p.admin,
                uuid,
                secret: p.secret.clone(),
                attrs: b.finish(),
            });
        }
        t.by_ndn = by_ndn;
        t.children = vec![Vec::new(); t.entries.len()];
        for (i, p) in parents.iter().enumerate() {
            if let Some(p) = p {
                t.children[*p].push(i);
            }
        }
        t.index = vec![HashMap::default(); schema::ATTRS.len()];
        for (i, e) in t.entries.iter().enumerate() {
            for a in &e.attrs {
                if schema::attr_type(a.id).syntax.is_binary() {
                    continue;
                }
                for f in &a.folded {
                    let key = t.hasher.hash_one(f.as_slice());
                    let list = t.index[a.id].entry(key).or_default();
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
            }
        }
        t
    }

    /// Entries that may have a value of `id` equal to the prepared `folded` value (a
    /// superset: the caller checks each).
    pub fn lookup(&self, id: AttrId, folded: &[u8]) -> &[u32] {
        let key = self.hasher.hash_one(folded);
        self.index.get(id).and_then(|m| m.get(&key)).map_or(&[], |v| v.as_slice())
    }

    pub fn entry_by_dn(&self, text: &str) -> Option<usize> {
        self.by_ndn.get(&dn::normalize(text)?).copied()
    }

    /// The naming context holding a normalised DN (the longest suffix match).
    pub fn context_of(&self, ndn: &str) -> Option<usize> {
        self.contexts
            .iter()
            .enumerate()
            .filter(|(_, c)| dn::is_within(ndn, &c.ndn))
            .max_by_key(|(_, c)| c.ndn.len())
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a tree of 10,000 people takes to build (run with --release --ignored).
    #[test]
    #[ignore]
    fn build_timing() {
        let accounts: Vec<Account> = (0..10_000)
            .map(|i| Account {
                id: i,
                login: format!("user{i:05}@example.org"),
                display_name: format!("User {i:05}"),
                addresses: Vec::new(),
                password_hash: "{SSHA}abcdefghijklmnopqrstuvwxyz0123456789".into(),
                scram: String::new(),
                quota: 0,
                used: 0,
                role: agora_store::Role::User,
                created: 1_700_000_000,
                profile: Profile {
                    surname: format!("Number{i:05}"),
                    given_name: "User".into(),
                    title: "Engineer".into(),
                    phone: format!("+1 555 {i:05}"),
                    ..Profile::default()
                },
                uuid: [(i % 251) as u8; 16],
                changed: 1_700_000_000,
                home: None,
            })
            .collect();
        for _ in 0..3 {
            let src = Source {
                domains: vec!["example.org".into()],
                accounts: accounts.clone(),
                groups: Vec::new(),
                aliases: Vec::new(),
                contacts: Vec::new(),
                routing: None,
            };
            let t = std::time::Instant::now();
            let tree = Tree::build(src);
            let built = t.elapsed();
            drop(tree);
            eprintln!("10,000 people: built in {built:?}, dropped after {:?}", t.elapsed());
        }
    }
}
