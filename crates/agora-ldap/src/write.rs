//! Writes over LDAP — add, modify, delete, modify DN, Password Modify — mapped onto the
//! same directory the mail services use: a person added here is an account that
//! receives mail and logs in at once. Administrators write anything; users change
//! their own password and the configured self-service attributes; the Global Catalog
//! is read-only.

use std::collections::BTreeSet;

use agora_directory::normalize_address;
use agora_store::{AccountUpdate, AddressEntry, Contact, Profile, Role, StoreError};
use ldap3_proto::proto::*;

use crate::dn::Dn;
use crate::filter::{Filter, Truth};
use crate::schema::{self, AttrId};
use crate::session::{Session, result};

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Add,
    Modify,
    Delete,
    ModDn,
}

/// What a DN names, read from its shape (no tree needed, so bulk adds stay fast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Person(String),
    Group(String),
    Contact { address: String, domain: String },
}

type Res = Result<(), LdapResult>;

fn err(code: LdapResultCode, msg: impl AsRef<str>) -> LdapResult {
    result(code, msg.as_ref())
}

fn store_err(e: StoreError) -> LdapResult {
    match e {
        // A replica's directory is written on its provider: say where (RFC 4511 §4.1.10).
        StoreError::ReadOnly(provider) => LdapResult {
            code: LdapResultCode::Referral,
            matcheddn: String::new(),
            message: "this domain's directory is a read-only replica: write on its provider".into(),
            referral: vec![provider],
        },
        StoreError::NotFound(what) => err(LdapResultCode::NoSuchObject, format!("{what} not found")),
        StoreError::Exists(what) => err(LdapResultCode::EntryAlreadyExists, format!("{what} already exists")),
        StoreError::Invalid(why) => err(LdapResultCode::UnwillingToPerform, why),
        other => {
            tracing::error!("ldap: store: {other}");
            err(LdapResultCode::Other, "the store failed; nothing was changed")
        }
    }
}

fn dir_err(e: agora_directory::DirectoryError) -> LdapResult {
    match e {
        agora_directory::DirectoryError::Store(s) => store_err(s),
        other => err(LdapResultCode::UnwillingToPerform, other.to_string()),
    }
}

/// The domain named by the DN's `dc=` components below the unit.
pub(crate) fn domain_of(dn: &Dn, from: usize) -> Option<String> {
    let mut labels = Vec::new();
    for rdn in dn.rdns.iter().skip(from) {
        let [ava] = rdn.as_slice() else { return None };
        if schema::attr(&ava.attr) != Some(schema::id("dc")) {
            return None;
        }
        labels.push(ava.value.to_ascii_lowercase());
    }
    (!labels.is_empty()).then(|| labels.join("."))
}

pub(crate) fn parse_target(text: &str) -> Result<Target, LdapResult> {
    let dn = Dn::parse(text).map_err(|e| err(LdapResultCode::InvalidDNSyntax, e))?;
    let naming = || {
        err(
            LdapResultCode::NamingViolation,
            "entries are uid=NAME,ou=people / cn=NAME,ou=groups / mail=ADDRESS,ou=contacts under a domain's dc= context",
        )
    };
    if dn.rdns.len() < 3 {
        return Err(naming());
    }
    let [first] = dn.rdns[0].as_slice() else { return Err(naming()) };
    if first.value.eq_ignore_ascii_case("routing")
        && schema::attr(&first.attr) == Some(schema::id("cn"))
        && domain_of(&dn, 1).is_some()
    {
        return Err(err(
            LdapResultCode::UnwillingToPerform,
            "the routing table is written with agora routing, not over LDAP",
        ));
    }
    let [unit] = dn.rdns[1].as_slice() else { return Err(naming()) };
    if schema::attr(&unit.attr) != Some(schema::id("ou")) {
        return Err(naming());
    }
    let domain = domain_of(&dn, 2).ok_or_else(naming)?;
    let rdn_attr = schema::attr(&first.attr);
    let addr = |local: &str| {
        normalize_address(&format!("{local}@{domain}"))
            .map_err(|_| err(LdapResultCode::NamingViolation, format!("{local}@{domain} is not a valid address")))
    };
    match unit.value.to_ascii_lowercase().as_str() {
        "people" if rdn_attr == Some(schema::id("uid")) => Ok(Target::Person(addr(&first.value)?)),
        "groups" if rdn_attr == Some(schema::id("cn")) => Ok(Target::Group(addr(&first.value)?)),
        "contacts" if rdn_attr == Some(schema::id("mail")) => {
            let address = normalize_address(&first.value)
                .map_err(|_| err(LdapResultCode::NamingViolation, "a contact is named by its mail address"))?;
            Ok(Target::Contact { address, domain })
        }
        _ => Err(naming()),
    }
}

/// The address a member DN (or an address given as a member) stands for.
fn member_address(value: &[u8]) -> Result<String, LdapResult> {
    let text =
        std::str::from_utf8(value).map_err(|_| err(LdapResultCode::InvalidAttributeSyntax, "member is not text"))?;
    match parse_target(text) {
        Ok(Target::Person(a) | Target::Group(a)) | Ok(Target::Contact { address: a, .. }) => Ok(a),
        Err(_) => {
            Err(err(LdapResultCode::InvalidAttributeSyntax, format!("member {text} is not an entry of this directory")))
        }
    }
}

fn text(v: &[u8]) -> Result<String, LdapResult> {
    String::from_utf8(v.to_vec()).map_err(|_| err(LdapResultCode::InvalidAttributeSyntax, "value is not UTF-8"))
}

/// An entry's writable state, edited attribute by attribute, then stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct State {
    pub display_name: String,
    pub profile: Profile,
    /// A person's extra addresses.
    pub addresses: BTreeSet<String>,
    /// A group's members (addresses).
    pub members: BTreeSet<String>,
    /// A new password (write-only).
    pub password: Option<String>,
    pub primary: String,
    /// The naming attribute's value (uid / cn / mail) for RDN checks.
    pub rdn: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    #[default]
    Person,
    Group,
    Contact,
}

impl State {
    fn field(&mut self, name: &str) -> Option<&mut String> {
        let p = &mut self.profile;
        Some(match name {
            "givenName" => &mut p.given_name,
            "sn" => &mut p.surname,
            "initials" => &mut p.initials,
            "title" => &mut p.title,
            "department" => &mut p.department,
            "company" => &mut p.company,
            "physicalDeliveryOfficeName" => &mut p.office,
            "postalAddress" => &mut p.postal_address,
            "telephoneNumber" => &mut p.phone,
            "mobile" => &mut p.mobile,
            "description" => &mut p.description,
            _ => return None,
        })
    }

    /// The current values of a writable attribute.
    fn get(&mut self, id: AttrId) -> Result<Vec<Vec<u8>>, LdapResult> {
        let name = schema::attr_type(id).name;
        let one = |s: &str| if s.is_empty() { Vec::new() } else { vec![s.as_bytes().to_vec()] };
        if let Some(f) = self.field(name) {
            return Ok(one(f));
        }
        Ok(match name {
            "cn" | "displayName" => {
                let mut v = one(&self.display_name);
                if self.kind == Kind::Group && name == "cn" && !self.rdn.eq_ignore_ascii_case(&self.display_name) {
                    v.insert(0, self.rdn.as_bytes().to_vec());
                }
                v
            }
            "uid" if self.kind == Kind::Person => one(&self.rdn),
            "mail" => one(&self.primary),
            "proxyAddresses" => std::iter::once(format!("SMTP:{}", self.primary))
                .chain(self.addresses.iter().map(|a| format!("smtp:{a}")))
                .map(String::into_bytes)
                .collect(),
            "manager" => match self.profile.manager.as_str() {
                "" => Vec::new(),
                m => vec![crate::tree::person_dn(m).into_bytes()],
            },
            "jpegPhoto" | "thumbnailPhoto" => {
                if self.profile.photo.is_empty() {
                    Vec::new()
                } else {
                    vec![self.profile.photo.clone()]
                }
            }
            "userCertificate" => self.profile.certificates.clone(),
            "msExchHideFromAddressLists" => {
                if self.profile.hidden {
                    vec![b"TRUE".to_vec()]
                } else {
                    Vec::new()
                }
            }
            "member" if self.kind == Kind::Group => {
                self.members.iter().filter_map(|m| m.strip_prefix("dn:")).map(|d| d.as_bytes().to_vec()).collect()
            }
            "mgrpRFC822MailMember" if self.kind == Kind::Group => {
                self.members.iter().filter(|m| !is_dn_member(m)).map(|m| m.as_bytes().to_vec()).collect()
            }
            "userPassword" => Vec::new(),
            "objectClass" => Vec::new(),
            _ => return Err(not_writable(id)),
        })
    }

    /// Replaces a writable attribute's values.
    pub(crate) fn set(&mut self, id: AttrId, values: Vec<Vec<u8>>) -> Res {
        let t = schema::attr_type(id);
        let name = t.name;
        let single = |values: &[Vec<u8>]| -> Result<String, LdapResult> {
            match values {
                [] => Ok(String::new()),
                [one] => text(one),
                _ => Err(err(LdapResultCode::ConstraintViolation, format!("{name} holds one value here"))),
            }
        };
        if let Some(f) = self.field(name) {
            *f = single(&values)?.trim().to_string();
            return Ok(());
        }
        match name {
            "cn" | "displayName" => {
                let mut vals: Vec<String> = values.iter().map(|v| text(v)).collect::<Result<_, _>>()?;
                if self.kind == Kind::Group && name == "cn" {
                    vals.retain(|v| !v.eq_ignore_ascii_case(&self.rdn));
                }
                match vals.as_slice() {
                    [] if self.kind == Kind::Person && name == "cn" => {
                        return Err(err(LdapResultCode::ObjectClassViolation, "a person must have a cn"));
                    }
                    [] => self.display_name.clear(),
                    [one] => self.display_name = one.trim().to_string(),
                    _ => return Err(err(LdapResultCode::ConstraintViolation, format!("{name} holds one name here"))),
                }
            }
            "uid" | "mail" => {
                let vals: Vec<String> = values.iter().map(|v| text(v)).collect::<Result<_, _>>()?;
                let want = if name == "uid" { &self.rdn } else { &self.primary };
                if vals.len() != 1 || !vals[0].eq_ignore_ascii_case(want) {
                    return Err(err(
                        LdapResultCode::NotALlowedOnRDN,
                        format!(
                            "{name} is the entry's name: rename the entry (modrdn) instead; extra addresses go in proxyAddresses"
                        ),
                    ));
                }
            }
            "proxyAddresses" => {
                if self.kind != Kind::Person {
                    return Err(not_writable(id));
                }
                let mut extra = BTreeSet::new();
                for v in &values {
                    let v = text(v)?;
                    let Some((kind, addr)) = v.split_once(':') else {
                        return Err(err(
                            LdapResultCode::InvalidAttributeSyntax,
                            "proxyAddresses values are smtp:ADDRESS",
                        ));
                    };
                    if !kind.eq_ignore_ascii_case("smtp") {
                        return Err(err(
                            LdapResultCode::UnwillingToPerform,
                            format!("only SMTP addresses are served, not {kind}"),
                        ));
                    }
                    let addr = normalize_address(addr).map_err(|_| {
                        err(LdapResultCode::InvalidAttributeSyntax, format!("{addr} is not an address"))
                    })?;
                    if addr == self.primary {
                        // The login stays primary whether or not the list repeats it.
                    } else if kind == "SMTP" {
                        return Err(err(
                            LdapResultCode::UnwillingToPerform,
                            "the primary (SMTP:) address is the entry's name: rename it instead",
                        ));
                    } else {
                        extra.insert(addr);
                    }
                }
                self.addresses = extra;
            }
            "manager" => {
                self.profile.manager = match single(&values)?.as_str() {
                    "" => String::new(),
                    m => match parse_target(m) {
                        Ok(Target::Person(a)) => a,
                        _ => return Err(err(LdapResultCode::InvalidAttributeSyntax, "manager must be a person's DN")),
                    },
                };
            }
            "jpegPhoto" | "thumbnailPhoto" => match values.as_slice() {
                [] => self.profile.photo.clear(),
                [one] if one.starts_with(&[0xff, 0xd8]) && one.len() <= MAX_PHOTO => self.profile.photo = one.clone(),
                [_] => {
                    return Err(err(
                        LdapResultCode::ConstraintViolation,
                        format!("a photo is one JPEG of at most {MAX_PHOTO} bytes"),
                    ));
                }
                _ => return Err(err(LdapResultCode::ConstraintViolation, "one photo per entry")),
            },
            "userCertificate" => {
                if values.len() > 16 || values.iter().any(|v| v.len() > 64 * 1024 || !v.starts_with(&[0x30])) {
                    return Err(err(
                        LdapResultCode::ConstraintViolation,
                        "up to 16 DER certificates of at most 64 KiB",
                    ));
                }
                self.profile.certificates = values;
            }
            "msExchHideFromAddressLists" => {
                self.profile.hidden = match single(&values)?.to_ascii_uppercase().as_str() {
                    "" | "FALSE" => false,
                    "TRUE" => true,
                    _ => return Err(err(LdapResultCode::InvalidAttributeSyntax, "TRUE or FALSE")),
                };
            }
            "member" | "mgrpRFC822MailMember" if self.kind == Kind::Group => {
                // Members of the other kind stay; this attribute's set is replaced.
                let dn_kind = name == "member";
                self.members.retain(|m| is_dn_member(m) != dn_kind);
                for v in &values {
                    let a = if dn_kind {
                        member_address(v)?;
                        format!("dn:{}", text(v)?)
                    } else {
                        normalize_address(&text(v)?)
                            .map_err(|_| err(LdapResultCode::InvalidAttributeSyntax, "not an address"))?
                    };
                    self.members.insert(a);
                }
            }
            "userPassword" => {
                let pw = single(&values)?;
                if pw.is_empty() {
                    return Err(err(LdapResultCode::UnwillingToPerform, "a password cannot be removed, only replaced"));
                }
                if pw.starts_with('{') {
                    return Err(err(
                        LdapResultCode::UnwillingToPerform,
                        "send the password itself; pre-hashed values are taken by `agora user import`",
                    ));
                }
                self.password = Some(pw);
            }
            "objectClass" => {}
            _ => return Err(not_writable(id)),
        }
        Ok(())
    }
}

fn is_dn_member(m: &str) -> bool {
    m.starts_with("dn:")
}

/// The address a member key (`dn:DN` or an address) stands for.
pub(crate) fn member_key_address(key: &str) -> Result<String, LdapResult> {
    match key.strip_prefix("dn:") {
        Some(dn) => member_address(dn.as_bytes()),
        None => Ok(key.to_string()),
    }
}

const MAX_PHOTO: usize = 100 * 1024;

fn not_writable(id: AttrId) -> LdapResult {
    let t = schema::attr_type(id);
    if t.no_user_mod {
        err(LdapResultCode::ConstraintViolation, format!("{} is kept by the server", t.name))
    } else {
        err(LdapResultCode::ObjectClassViolation, format!("{} is not an attribute of this kind of entry", t.name))
    }
}

/// Applies one LDAP modification with its semantics (RFC 4511 §4.6).
fn apply(state: &mut State, m: &LdapModify) -> Res {
    let desc = &m.modification.atype;
    let id = schema::attr(desc)
        .ok_or_else(|| err(LdapResultCode::UndefinedAttributeType, format!("unknown attribute {desc}")))?;
    let syntax = schema::attr_type(id).syntax;
    let mut cur = state.get(id)?;
    let vals = &m.modification.vals;
    let same = |a: &[u8], b: &[u8]| crate::matching::equal(syntax, a, b);
    match m.operation {
        LdapModifyType::Add => {
            if id == schema::id("userPassword") {
                return state.set(id, vals.clone());
            }
            for v in vals {
                if cur.iter().any(|c| same(c, v)) {
                    return Err(err(LdapResultCode::AttributeOrValueExists, format!("{desc} already has that value")));
                }
                cur.push(v.clone());
            }
        }
        LdapModifyType::Delete => {
            if vals.is_empty() {
                if cur.is_empty() && id != schema::id("objectClass") {
                    return Err(err(LdapResultCode::NoSuchAttribute, format!("the entry has no {desc}")));
                }
                cur.clear();
            } else {
                for v in vals {
                    let before = cur.len();
                    cur.retain(|c| !same(c, v));
                    if cur.len() == before {
                        return Err(err(LdapResultCode::NoSuchAttribute, format!("{desc} has no such value")));
                    }
                }
            }
        }
        LdapModifyType::Replace => cur = vals.clone(),
        LdapModifyType::Increment => {
            return Err(err(LdapResultCode::ConstraintViolation, format!("{desc} is not a number")));
        }
    }
    state.set(id, cur)
}

/// Runs a write request; every store change is durable before the answer.
pub async fn run(s: &mut Session, op: LdapOp, assertion: Option<&Filter>) -> (LdapResult, Op) {
    let kind = match &op {
        LdapOp::AddRequest(_) => Op::Add,
        LdapOp::ModifyRequest(_) => Op::Modify,
        LdapOp::DelRequest(_) => Op::Delete,
        _ => Op::ModDn,
    };
    if s.cfg().gc {
        return (err(LdapResultCode::UnwillingToPerform, "the Global Catalog is read-only: write on port 389"), kind);
    }
    let Some(me) = s.identity.clone() else {
        return (err(LdapResultCode::InsufficentAccessRights, "bind first"), kind);
    };
    let target_dn = match &op {
        LdapOp::AddRequest(a) => a.dn.clone(),
        LdapOp::ModifyRequest(m) => m.dn.clone(),
        LdapOp::DelRequest(d) => d.clone(),
        LdapOp::ModifyDNRequest(m) => m.dn.clone(),
        _ => String::new(),
    };
    let target = match parse_target(&target_dn) {
        Ok(t) => t,
        Err(e) => return (e, kind),
    };
    let own = matches!(&target, Target::Person(l) if *l == me.login);
    if !(me.admin || own && matches!(kind, Op::Modify)) {
        return (err(LdapResultCode::InsufficentAccessRights, "only administrators change other entries"), kind);
    }
    if let Some(a) = assertion
        && let Err(e) = check_assertion(s, &target_dn, a).await
    {
        return (e, kind);
    }
    let r = match op {
        LdapOp::AddRequest(a) => add(s, target, a).await,
        LdapOp::ModifyRequest(m) => modify(s, target, m, me.admin).await,
        LdapOp::DelRequest(_) => delete(s, target).await,
        LdapOp::ModifyDNRequest(m) => modify_dn(s, target, m).await,
        _ => Ok(()),
    };
    (r.err().unwrap_or_else(|| result(LdapResultCode::Success, "")), kind)
}

async fn check_assertion(s: &Session, dn: &str, a: &Filter) -> Res {
    let tree = s.shared().tree().await.map_err(store_err)?;
    let Some(i) = tree.entry_by_dn(dn) else {
        return Err(err(LdapResultCode::NoSuchObject, "no such entry"));
    };
    let visible = |id: AttrId| s.attr_visible(id);
    if a.eval(&tree, &tree.entries[i], &visible) != Truth::True {
        return Err(err(LdapResultCode::AssertionFailed, "the assertion control's filter is not true"));
    }
    Ok(())
}

fn classes_fit(kind: Kind, classes: &[String]) -> bool {
    let people = ["top", "person", "organizationalperson", "inetorgperson", "agoramailrecipient"];
    let groups = ["top", "groupofnames", "agoramailrecipient"];
    let allowed: &[&str] = if kind == Kind::Group { &groups } else { &people };
    !classes.is_empty() && classes.iter().all(|c| allowed.contains(&c.to_ascii_lowercase().as_str()))
}

impl Target {
    /// A new entry's empty state: its kind, primary address and naming value.
    pub(crate) fn blank(&self) -> State {
        let (kind, primary, rdn) = match self {
            Target::Person(l) => {
                (Kind::Person, l.clone(), l.rsplit_once('@').map(|(x, _)| x.to_string()).unwrap_or_default())
            }
            Target::Group(g) => {
                (Kind::Group, g.clone(), g.rsplit_once('@').map(|(x, _)| x.to_string()).unwrap_or_default())
            }
            Target::Contact { address, .. } => (Kind::Contact, address.clone(), address.clone()),
        };
        State { kind, primary, rdn, ..State::default() }
    }
}

async fn add(s: &Session, target: Target, a: LdapAddRequest) -> Res {
    let mut state = target.blank();
    let (kind, primary, rdn) = (state.kind, state.primary.clone(), state.rdn.clone());
    let mut classes = Vec::new();
    let mut extra_mail = Vec::new();
    for attr in &a.attributes {
        let id = schema::attr(&attr.atype)
            .ok_or_else(|| err(LdapResultCode::UndefinedAttributeType, format!("unknown attribute {}", attr.atype)))?;
        let name = schema::attr_type(id).name;
        match name {
            "objectClass" => {
                classes = attr.vals.iter().map(|v| text(v)).collect::<Result<_, _>>()?;
            }
            "uid" | "mail" => {
                // The naming value; other mail values of a person become extra addresses.
                for v in &attr.vals {
                    let v = text(v)?;
                    let same =
                        if name == "uid" { v.eq_ignore_ascii_case(&rdn) } else { v.eq_ignore_ascii_case(&primary) };
                    if same {
                        continue;
                    }
                    if name == "mail" && kind == Kind::Person {
                        extra_mail.push(normalize_address(&v).map_err(|_| {
                            err(LdapResultCode::InvalidAttributeSyntax, format!("{v} is not an address"))
                        })?);
                    } else {
                        return Err(err(
                            LdapResultCode::NamingViolation,
                            format!("{name}: {v} differs from the entry's name"),
                        ));
                    }
                }
            }
            "cn" if kind != Kind::Group && attr.vals.len() > 1 => {
                state.set(id, attr.vals[..1].to_vec())?;
            }
            _ => {
                // Values given twice over (cn and displayName) both land; the last wins.
                let mut cur = if name == "cn" || name == "displayName" { Vec::new() } else { state.get(id)? };
                cur.extend(attr.vals.iter().cloned());
                state.set(id, cur)?;
            }
        }
    }
    if !classes_fit(kind, &classes) {
        return Err(err(
            LdapResultCode::ObjectClassViolation,
            if kind == Kind::Group {
                "a group is a groupOfNames"
            } else {
                "people and contacts are inetOrgPerson entries"
            },
        ));
    }
    if kind != Kind::Group && state.display_name.is_empty() {
        return Err(err(LdapResultCode::ObjectClassViolation, "cn is required"));
    }
    let dir = &s.shared().dir;
    let store = &s.shared().store;
    match target {
        Target::Person(login) => {
            // Extra addresses are checked first, so a refused one leaves no half-made account.
            for extra in extra_mail.iter().chain(state.addresses.iter()) {
                check_new_address(s, extra, LdapResultCode::EntryAlreadyExists).await?;
            }
            let generated;
            let pw = match &state.password {
                Some(p) => p.as_str(),
                None => {
                    // No password given: a random one nobody knows until an administrator sets one.
                    generated = agora_directory::generate_password().map_err(dir_err)?;
                    generated.as_str()
                }
            };
            dir.add_user_with(&login, &state.display_name, pw, 0, Role::User, state.profile.clone())
                .await
                .map_err(dir_err)?;
            for extra in extra_mail.iter().chain(state.addresses.iter()) {
                store.add_account_address(&login, extra).await.map_err(store_err)?;
            }
        }
        Target::Group(address) => {
            dir.add_group(&address, &state.display_name).await.map_err(dir_err)?;
            if state.profile != Profile::default() {
                store.update_group(&address, None, Some(state.profile.clone())).await.map_err(store_err)?;
            }
            for m in &state.members {
                dir.add_group_member(&address, &member_key_address(m)?).await.map_err(dir_err)?;
            }
        }
        Target::Contact { address, domain } => {
            let mut profile = state.profile.clone();
            agora_directory::derive_names(&state.display_name, &mut profile);
            store
                .add_contact(Contact {
                    address,
                    domain,
                    display_name: state.display_name.clone(),
                    profile,
                    ..Contact::default()
                })
                .await
                .map_err(store_err)?;
        }
    }
    Ok(())
}

async fn modify(s: &Session, target: Target, m: LdapModifyRequest, admin: bool) -> Res {
    let store = &s.shared().store;
    // A group member's key (its DN, or its address) to the address as stored.
    let mut stored_as = std::collections::HashMap::new();
    let mut state = match &target {
        Target::Person(login) => {
            let a = store
                .account_by_login(login)
                .await
                .map_err(store_err)?
                .ok_or_else(|| err(LdapResultCode::NoSuchObject, "no such entry"))?;
            State {
                kind: Kind::Person,
                display_name: a.display_name.clone(),
                profile: a.profile.clone(),
                addresses: a.addresses.iter().cloned().collect(),
                primary: a.login.clone(),
                rdn: a.login.rsplit_once('@').map(|(l, _)| l.to_string()).unwrap_or_default(),
                ..State::default()
            }
        }
        Target::Group(address) => {
            let AddressEntry::Group(g) = store.lookup_address(address).await.map_err(store_err)? else {
                return Err(err(LdapResultCode::NoSuchObject, "no such entry"));
            };
            let mut members = BTreeSet::new();
            let contacts = store.contacts(None).await.map_err(store_err)?;
            for mem in &g.members {
                // Members that are entries here are DN members; the rest are by address.
                let key = match store.lookup_address(mem).await.map_err(store_err)? {
                    AddressEntry::Account(a) => format!("dn:{}", crate::tree::person_dn(&a.login)),
                    AddressEntry::Group(g) => format!("dn:{}", crate::tree::group_dn(&g.address)),
                    _ => match contacts.iter().find(|c| &c.address == mem) {
                        Some(c) => format!("dn:{}", crate::tree::contact_dn(&c.address, &c.domain)),
                        None => mem.clone(),
                    },
                };
                stored_as.insert(key.clone(), mem.clone());
                members.insert(key);
            }
            State {
                kind: Kind::Group,
                display_name: g.display_name.clone(),
                profile: g.profile.clone(),
                members,
                primary: g.address.clone(),
                rdn: g.address.rsplit_once('@').map(|(l, _)| l.to_string()).unwrap_or_default(),
                ..State::default()
            }
        }
        Target::Contact { address, .. } => {
            let c = store
                .contacts(None)
                .await
                .map_err(store_err)?
                .into_iter()
                .find(|c| &c.address == address)
                .ok_or_else(|| err(LdapResultCode::NoSuchObject, "no such entry"))?;
            State {
                kind: Kind::Contact,
                display_name: c.display_name.clone(),
                profile: c.profile.clone(),
                primary: c.address.clone(),
                rdn: c.address.clone(),
                ..State::default()
            }
        }
    };
    let before = state.clone();
    for change in &m.changes {
        if !admin {
            let id = schema::attr(&change.modification.atype);
            let allowed = id.is_some_and(|i| i == schema::id("userPassword") || s.cfg().self_service.contains(&i));
            if !allowed {
                return Err(err(
                    LdapResultCode::InsufficentAccessRights,
                    format!("you may change only your password and {}", self_service_names(s)),
                ));
            }
        }
        apply(&mut state, change)?;
    }
    // All changes applied in memory first, and new addresses checked before anything is
    // written: a request that fails changes nothing.
    match &target {
        Target::Person(login) => {
            for new in state.addresses.difference(&before.addresses) {
                check_new_address(s, new, LdapResultCode::AttributeOrValueExists).await?;
            }
            if let Some(pw) = &state.password {
                s.shared().dir.set_password(login, pw).await.map_err(dir_err)?;
            }
            if state.display_name != before.display_name || state.profile != before.profile {
                let update = AccountUpdate {
                    display_name: Some(state.display_name.clone()),
                    profile: Some(state.profile.clone()),
                    role: None,
                };
                store.update_account(login, update).await.map_err(store_err)?;
            }
            for gone in before.addresses.difference(&state.addresses) {
                store.remove_account_address(login, gone).await.map_err(store_err)?;
            }
            for new in state.addresses.difference(&before.addresses) {
                store.add_account_address(login, new).await.map_err(store_err)?;
            }
        }
        Target::Group(address) => {
            if state.display_name != before.display_name || state.profile != before.profile {
                store
                    .update_group(address, Some(state.display_name.clone()), Some(state.profile.clone()))
                    .await
                    .map_err(store_err)?;
            }
            for gone in before.members.difference(&state.members) {
                let stored = match stored_as.get(gone) {
                    Some(a) => a.clone(),
                    None => member_key_address(gone)?,
                };
                store.remove_group_member(address, &stored).await.map_err(store_err)?;
            }
            for new in state.members.difference(&before.members) {
                s.shared().dir.add_group_member(address, &member_key_address(new)?).await.map_err(dir_err)?;
            }
        }
        Target::Contact { address, .. } => {
            if state.password.is_some() {
                return Err(err(LdapResultCode::ObjectClassViolation, "a contact has no password"));
            }
            if state != before {
                store
                    .update_contact(address, Some(state.display_name.clone()), Some(state.profile.clone()))
                    .await
                    .map_err(store_err)?;
            }
        }
    }
    Ok(())
}

/// An address about to be given to a person: in a hosted domain and not in use (`taken`
/// is the result code a clash gets).
async fn check_new_address(s: &Session, address: &str, taken: LdapResultCode) -> Res {
    let store = &s.shared().store;
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if store.domain(domain).await.map_err(store_err)?.is_none() {
        return Err(err(LdapResultCode::UnwillingToPerform, format!("{address}: {domain} is not a hosted domain")));
    }
    if !matches!(store.lookup_address(address).await.map_err(store_err)?, AddressEntry::None) {
        return Err(err(taken, format!("{address} is already in use")));
    }
    Ok(())
}

fn self_service_names(s: &Session) -> String {
    s.cfg().self_service.iter().map(|i| schema::attr_type(*i).name).collect::<Vec<_>>().join(", ")
}

async fn delete(s: &Session, target: Target) -> Res {
    let store = &s.shared().store;
    match target {
        Target::Person(login) => store.remove_account(&login).await.map_err(store_err),
        Target::Group(address) => store.remove_group(&address).await.map_err(store_err),
        Target::Contact { address, .. } => store.remove_contact(&address).await.map_err(store_err),
    }
}

async fn modify_dn(s: &Session, target: Target, m: LdapModifyDNRequest) -> Res {
    let Target::Person(login) = target else {
        return Err(err(
            LdapResultCode::UnwillingToPerform,
            "only people can be renamed; remove and add groups and contacts",
        ));
    };
    let parent = match &m.new_superior {
        Some(p) => p.clone(),
        None => {
            let dn = Dn::parse(&crate::tree::person_dn(&login)).map_err(|e| err(LdapResultCode::InvalidDNSyntax, e))?;
            let parent = dn.parent();
            parent
                .rdns
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|a| format!("{}={}", a.attr, crate::dn::escape(&a.value)))
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let new_dn = format!("{},{parent}", m.newrdn);
    let Target::Person(new_login) = parse_target(&new_dn)? else {
        return Err(err(LdapResultCode::NamingViolation, "a person stays under ou=people, named by uid"));
    };
    let store = &s.shared().store;
    store.rename_account(&login, &new_login).await.map_err(store_err)?;
    if !m.deleteoldrdn && new_login != login {
        // The old name stays an attribute value: the old address keeps delivering.
        store.add_account_address(&new_login, &login).await.map_err(store_err)?;
    }
    Ok(())
}

/// Password Modify (RFC 3062): the bound user's own password, or any by an
/// administrator; a missing new password is generated and returned.
pub async fn password_modify(s: &mut Session, x: &LdapExtendedRequest, tls: bool) -> (LdapResult, Option<String>) {
    let Some(me) = s.identity.clone() else {
        return (err(LdapResultCode::InsufficentAccessRights, "bind first"), None);
    };
    if s.cfg().gc {
        return (err(LdapResultCode::UnwillingToPerform, "the Global Catalog is read-only"), None);
    }
    if !tls && !s.cfg().allow_plaintext {
        return (err(LdapResultCode::ConfidentialityRequired, "use StartTLS or ldaps to change a password"), None);
    }
    let req = if x.value.is_none() {
        LdapPasswordModifyRequest { user_identity: None, old_password: None, new_password: None }
    } else {
        match LdapPasswordModifyRequest::try_from(x) {
            Ok(r) => r,
            Err(_) => return (err(LdapResultCode::ProtocolError, "malformed password modify request"), None),
        }
    };
    let login = match req.user_identity.as_deref() {
        None | Some("") => me.login.clone(),
        Some(who) => {
            let who = who.strip_prefix("u:").unwrap_or(who).strip_prefix("dn:").unwrap_or(who);
            if who.contains('=') {
                match parse_target(who) {
                    Ok(Target::Person(l)) => l,
                    _ => return (err(LdapResultCode::NoSuchObject, "no such person"), None),
                }
            } else {
                match normalize_address(who) {
                    Ok(l) => l,
                    Err(_) => return (err(LdapResultCode::NoSuchObject, "no such person"), None),
                }
            }
        }
    };
    if login != me.login && !me.admin {
        return (
            err(LdapResultCode::InsufficentAccessRights, "only administrators change other people's passwords"),
            None,
        );
    }
    let dir = &s.shared().dir;
    if let Some(old) = &req.old_password
        && login == me.login
        && !matches!(dir.authenticate(&login, old).await, Ok(Some(_)))
    {
        return (err(LdapResultCode::InvalidCredentials, "the old password is wrong"), None);
    }
    let (new, generated) = match req.new_password {
        Some(p) if !p.is_empty() => (p, None),
        _ => match agora_directory::generate_password() {
            Ok(p) => (p.clone(), Some(p)),
            Err(e) => return (dir_err(e), None),
        },
    };
    match dir.set_password(&login, &new).await {
        Ok(()) => (result(LdapResultCode::Success, ""), generated),
        Err(e) => (dir_err(e), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_dn_shape() {
        assert_eq!(
            parse_target("uid=Ann,ou=People,dc=Example,dc=com").unwrap(),
            Target::Person("ann@example.com".into())
        );
        assert_eq!(
            parse_target("cn=sales,ou=groups,dc=example,dc=com").unwrap(),
            Target::Group("sales@example.com".into())
        );
        assert_eq!(
            parse_target("mail=Bob@Else.org,ou=contacts,dc=example,dc=com").unwrap(),
            Target::Contact { address: "bob@else.org".into(), domain: "example.com".into() }
        );
        for bad in ["cn=Ann,ou=people,dc=x,dc=y", "uid=a,dc=x", "uid=a,ou=other,dc=x", "uid=a,ou=people,o=x"] {
            assert_eq!(parse_target(bad).unwrap_err().code, LdapResultCode::NamingViolation, "{bad}");
        }
    }

    #[test]
    fn modifications_follow_ldap_semantics() {
        let mut st = State {
            kind: Kind::Person,
            primary: "a@x.org".into(),
            rdn: "a".into(),
            display_name: "A".into(),
            ..State::default()
        };
        let m = |op, name: &str, vals: &[&str]| LdapModify {
            operation: op,
            modification: LdapPartialAttribute {
                atype: name.into(),
                vals: vals.iter().map(|v| v.as_bytes().to_vec()).collect(),
            },
        };
        apply(&mut st, &m(LdapModifyType::Add, "telephoneNumber", &["+1 555"])).unwrap();
        assert_eq!(st.profile.phone, "+1 555");
        let e = apply(&mut st, &m(LdapModifyType::Add, "telephoneNumber", &["+1555"])).unwrap_err();
        assert_eq!(e.code, LdapResultCode::AttributeOrValueExists, "telephone numbers compare without spaces");
        let e = apply(&mut st, &m(LdapModifyType::Delete, "title", &[])).unwrap_err();
        assert_eq!(e.code, LdapResultCode::NoSuchAttribute);
        apply(&mut st, &m(LdapModifyType::Replace, "proxyAddresses", &["SMTP:a@x.org", "smtp:b@x.org"])).unwrap();
        assert!(st.addresses.contains("b@x.org"));
        let e = apply(&mut st, &m(LdapModifyType::Replace, "mail", &["c@x.org"])).unwrap_err();
        assert_eq!(e.code, LdapResultCode::NotALlowedOnRDN);
        let e = apply(&mut st, &m(LdapModifyType::Replace, "memberOf", &["cn=g"])).unwrap_err();
        assert_eq!(e.code, LdapResultCode::ConstraintViolation, "computed attributes are not written");
        let e = apply(&mut st, &m(LdapModifyType::Replace, "cn", &[])).unwrap_err();
        assert_eq!(e.code, LdapResultCode::ObjectClassViolation);
    }
}
