//! The NSPI address book (MS-OXNSPI, f5cc5a18-4264-101a-8c59-08002b2f8426 v56.0) over
//! the directory: the Global Address List and one container per hosted domain, rows of
//! the MAPI properties clients show, positions (STAT), explicit tables, restrictions
//! and ambiguous name resolution. Read-only; hidden entries never appear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_service::snapshot::Snapshot;
use agora_store::Store;

use crate::assoc::{BoxFuture, Call, Interface, status};
use crate::mapi::{self, Prop, Restriction, Value};
use crate::ndr::{NdrError, NdrResult, Reader, Writer};
use crate::pdu::{Syntax, Uuid};

pub fn syntax() -> Syntax {
    Syntax { uuid: Uuid::parse("f5cc5a18-4264-101a-8c59-08002b2f8426").unwrap_or_default(), version: 56 }
}

/// Return codes (MS-OXNSPI §2.2.2).
pub mod code {
    pub const SUCCESS: u32 = 0;
    pub const UNBIND_SUCCESS: u32 = 1;
    pub const ERRORS_RETURNED: u32 = 0x0004_0380;
    pub const GENERAL_FAILURE: u32 = 0x8000_4005;
    pub const NOT_FOUND: u32 = 0x8004_010F;
    pub const NO_SUPPORT: u32 = 0x8004_0102;
    pub const INVALID_BOOKMARK: u32 = 0x8004_0405;
    pub const TABLE_TOO_BIG: u32 = 0x8004_0403;
    pub const INVALID_PARAMETER: u32 = 0x8007_0057;
    pub const ACCESS_DENIED: u32 = 0x8007_0005;
    pub const TOO_COMPLEX: u32 = 0x8004_0117;
}

pub const MID_BEGINNING: u32 = 0;
pub const MID_CURRENT: u32 = 1;
pub const MID_END: u32 = 2;
pub const MID_UNRESOLVED: u32 = 0;
pub const MID_AMBIGUOUS: u32 = 1;
pub const MID_RESOLVED: u32 = 2;

pub const CP_WINUNICODE: u32 = 1200;
pub const F_SKIP_OBJECTS: u32 = 1;
pub const F_EPH_ID: u32 = 2;
pub const NSPI_UNICODE_STRINGS: u32 = 4;
pub const NSPI_UNICODE_PROPTYPES: u32 = 0x8000_0000;

/// GUID_NSPI, the provider of permanent entry IDs (wire order).
pub const GUID_NSPI: [u8; 16] =
    [0xdc, 0xa7, 0x40, 0xc8, 0xc0, 0x42, 0x10, 0x1a, 0xb4, 0xb9, 0x08, 0x00, 0x2b, 0x2f, 0xe1, 0x82];

/// Property ids (MS-OXPROPS), without their types.
pub mod pid {
    pub const ENTRYID: u32 = 0x0FFF;
    pub const OBJECT_TYPE: u32 = 0x0FFE;
    pub const INSTANCE_KEY: u32 = 0x0FF6;
    pub const RECORD_KEY: u32 = 0x0FF9;
    pub const MAPPING_SIGNATURE: u32 = 0x0FF8;
    pub const DISPLAY_NAME: u32 = 0x3001;
    pub const ADDRTYPE: u32 = 0x3002;
    pub const EMAIL_ADDRESS: u32 = 0x3003;
    pub const DEPTH: u32 = 0x3005;
    pub const SEARCH_KEY: u32 = 0x300B;
    pub const CONTAINER_FLAGS: u32 = 0x3600;
    pub const ANR: u32 = 0x360C;
    pub const DISPLAY_TYPE: u32 = 0x3900;
    pub const SMTP_ADDRESS: u32 = 0x39FE;
    pub const ACCOUNT: u32 = 0x3A00;
    pub const GIVEN_NAME: u32 = 0x3A06;
    pub const BUSINESS_TELEPHONE_NUMBER: u32 = 0x3A08;
    pub const SURNAME: u32 = 0x3A11;
    pub const COMPANY_NAME: u32 = 0x3A16;
    pub const TITLE: u32 = 0x3A17;
    pub const DEPARTMENT_NAME: u32 = 0x3A18;
    pub const OFFICE_LOCATION: u32 = 0x3A19;
    pub const MOBILE_TELEPHONE_NUMBER: u32 = 0x3A1C;
    pub const TRANSMITABLE_DISPLAY_NAME: u32 = 0x3A20;
    pub const PROXY_ADDRESSES: u32 = 0x800F;
    pub const OBJECT_GUID: u32 = 0x8C6D;
    pub const CONTAINER_ID: u32 = 0xFFFD;
    pub const IS_MASTER: u32 = 0xFFFB;
    pub const PARENT_ENTRYID: u32 = 0xFFFC;
}

/// The display types (MS-OXNSPI §2.2.1.3) and MAPI object types.
const DT_MAILUSER: u32 = 0;
const DT_DISTLIST: u32 = 1;
const DT_REMOTE_MAILUSER: u32 = 6;
const DT_CONTAINER: u32 = 0x100;
const MAPI_MAILUSER: u32 = 6;
const MAPI_DISTLIST: u32 = 8;

/// Rows SeekEntries returns with its answer, at most.
const SEEK_ROWS: usize = 100;
/// Rows one QueryRows returns, at most.
const MAX_ROWS: usize = 10_000;
/// Columns a request may name, names one ResolveNames may carry, and values (rows
/// times columns) one answer may hold: what a client asks cannot make an answer
/// larger than a few tens of megabytes.
const MAX_COLUMNS: usize = 256;
const MAX_NAMES: usize = 1_000;
const MAX_CELLS: usize = 400_000;
/// MAPI_E_TOO_BIG.
const TOO_BIG: u32 = 0x8004_0305;

fn too_big(rows: usize, columns: usize) -> bool {
    columns > MAX_COLUMNS || rows.saturating_mul(columns.max(1)) > MAX_CELLS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Person,
    Group,
    Contact,
}

/// One recipient of the address book.
#[derive(Debug, Clone)]
struct Entry {
    mid: u32,
    kind: Kind,
    display: String,
    /// Lower-cased display name, the sort key.
    key: String,
    smtp: String,
    addresses: Vec<String>,
    given: String,
    surname: String,
    title: String,
    department: String,
    company: String,
    office: String,
    phone: String,
    mobile: String,
    legacy_dn: String,
    guid: [u8; 16],
    domain: usize,
    /// Lower case, for ambiguous name resolution: given name, surname, local part.
    anr: [String; 3],
}

/// A snapshot of the address book.
#[derive(Default)]
pub struct Book {
    entries: Vec<Entry>,
    by_mid: HashMap<u32, usize>,
    by_dn: HashMap<String, usize>,
    /// The Global Address List: every entry, by display name.
    gal: Vec<u32>,
    /// Each domain's name, container Mid and rows.
    domains: Vec<(String, u32, Vec<u32>)>,
}

/// Mids handed out in this process: stable while it runs, whatever the snapshots.
#[derive(Default)]
pub struct Mids {
    map: Mutex<(u32, HashMap<Vec<u8>, u32>)>,
}

impl Mids {
    fn of(&self, key: &[u8]) -> u32 {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&v) = m.1.get(key) {
            return v;
        }
        m.0 = m.0.max(0x10) + 1;
        let v = m.0;
        m.1.insert(key.to_vec(), v);
        v
    }
}

fn legacy_dn(org: &str, address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    format!("/o={org}/ou={domain}/cn=Recipients/cn={local}")
}

impl Book {
    async fn read(store: &Arc<dyn Store>, mids: &Mids, org: &str) -> agora_store::Result<Book> {
        let mut domains: Vec<String> = store.domains().await?.into_iter().map(|d| d.name).collect();
        domains.sort();
        let domain_of = |addr: &str| addr.rsplit_once('@').and_then(|(_, d)| domains.iter().position(|x| x == d));
        let mut entries = Vec::new();
        let mut push = |kind: Kind,
                        addr: &str,
                        display: &str,
                        extra: &[String],
                        p: &agora_store::Profile,
                        guid: [u8; 16],
                        domain: Option<usize>| {
            let Some(domain) = domain else { return };
            if p.hidden {
                return;
            }
            let display = if display.is_empty() { addr.to_string() } else { display.to_string() };
            entries.push(Entry {
                mid: mids.of(&guid),
                kind,
                key: display.to_lowercase(),
                display,
                smtp: addr.to_string(),
                addresses: extra.to_vec(),
                given: p.given_name.clone(),
                surname: p.surname.clone(),
                title: p.title.clone(),
                department: p.department.clone(),
                company: p.company.clone(),
                office: p.office.clone(),
                phone: p.phone.clone(),
                mobile: p.mobile.clone(),
                legacy_dn: legacy_dn(org, addr),
                guid,
                domain,
                anr: [
                    p.given_name.to_lowercase(),
                    p.surname.to_lowercase(),
                    addr.split('@').next().unwrap_or_default().to_string(),
                ],
            });
        };
        for a in store.accounts(None).await? {
            push(Kind::Person, &a.login, &a.display_name, &a.addresses, &a.profile, a.uuid, domain_of(&a.login));
        }
        for g in store.groups().await? {
            push(Kind::Group, &g.address, &g.display_name, &[], &g.profile, g.uuid, domain_of(&g.address));
        }
        for c in store.contacts(None).await? {
            let d = domains.iter().position(|x| *x == c.domain);
            push(Kind::Contact, &c.address, &c.display_name, &[], &c.profile, c.uuid, d);
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.smtp.cmp(&b.smtp)));
        let mut book = Book { gal: entries.iter().map(|e| e.mid).collect(), ..Book::default() };
        book.domains = domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let rows = entries.iter().filter(|e| e.domain == i).map(|e| e.mid).collect();
                (d.clone(), mids.of(format!("domain:{d}").as_bytes()), rows)
            })
            .collect();
        for (i, e) in entries.iter().enumerate() {
            book.by_mid.insert(e.mid, i);
            book.by_dn.insert(e.legacy_dn.to_ascii_lowercase(), i);
        }
        book.entries = entries;
        Ok(book)
    }

    fn entry(&self, mid: u32) -> Option<&Entry> {
        self.by_mid.get(&mid).map(|&i| &self.entries[i])
    }

    /// The rows of a container (0: the Global Address List).
    fn container(&self, id: u32) -> Option<&[u32]> {
        if id == 0 {
            return Some(&self.gal);
        }
        self.domains.iter().find(|d| d.1 == id).map(|d| d.2.as_slice())
    }
}

/// STAT (MS-OXNSPI §2.2.8): a position in a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub sort_type: u32,
    pub container: u32,
    pub current: u32,
    pub delta: i32,
    pub num_pos: u32,
    pub total: u32,
    pub code_page: u32,
    pub template_locale: u32,
    pub sort_locale: u32,
}

impl Stat {
    fn read(r: &mut Reader<'_>) -> NdrResult<Stat> {
        Ok(Stat {
            sort_type: r.u32()?,
            container: r.u32()?,
            current: r.u32()?,
            delta: r.i32()?,
            num_pos: r.u32()?,
            total: r.u32()?,
            code_page: r.u32()?,
            template_locale: r.u32()?,
            sort_locale: r.u32()?,
        })
    }
    fn write(&self, w: &mut Writer) {
        for v in [
            self.sort_type,
            self.container,
            self.current,
            self.delta as u32,
            self.num_pos,
            self.total,
            self.code_page,
            self.template_locale,
            self.sort_locale,
        ] {
            w.u32(v);
        }
    }
}

/// What an NspiBind handle keeps.
struct Session {
    code_page: u32,
}

/// The address book interface.
pub struct AddressBook {
    pub store: Arc<dyn Store>,
    /// The organisation name in legacy DNs (`/o=…`).
    pub organization: String,
    pub server_guid: [u8; 16],
    pub book: Snapshot<Book>,
    pub mids: Mids,
}

/// The columns QueryRows shows when the client names none (MS-OXNSPI §3.1.4.1.8).
fn default_columns(unicode: bool) -> Vec<u32> {
    let s = if unicode { mapi::PT_UNICODE } else { mapi::PT_STRING8 };
    vec![
        pid::CONTAINER_ID << 16 | mapi::PT_LONG,
        pid::OBJECT_TYPE << 16 | mapi::PT_LONG,
        pid::DISPLAY_TYPE << 16 | mapi::PT_LONG,
        pid::DISPLAY_NAME << 16 | s,
        0x3A1A << 16 | s,
        pid::DEPARTMENT_NAME << 16 | s,
        pid::OFFICE_LOCATION << 16 | s,
    ]
}

/// Every property a recipient may have, for GetPropList and QueryColumns.
fn all_props(unicode: bool) -> Vec<u32> {
    let s = if unicode { mapi::PT_UNICODE } else { mapi::PT_STRING8 };
    vec![
        pid::ENTRYID << 16 | mapi::PT_BINARY,
        pid::RECORD_KEY << 16 | mapi::PT_BINARY,
        pid::INSTANCE_KEY << 16 | mapi::PT_BINARY,
        pid::MAPPING_SIGNATURE << 16 | mapi::PT_BINARY,
        pid::SEARCH_KEY << 16 | mapi::PT_BINARY,
        pid::OBJECT_TYPE << 16 | mapi::PT_LONG,
        pid::DISPLAY_TYPE << 16 | mapi::PT_LONG,
        pid::DISPLAY_NAME << 16 | s,
        pid::TRANSMITABLE_DISPLAY_NAME << 16 | s,
        pid::ADDRTYPE << 16 | s,
        pid::EMAIL_ADDRESS << 16 | s,
        pid::SMTP_ADDRESS << 16 | s,
        pid::ACCOUNT << 16 | s,
        pid::GIVEN_NAME << 16 | s,
        pid::SURNAME << 16 | s,
        pid::TITLE << 16 | s,
        pid::DEPARTMENT_NAME << 16 | s,
        pid::COMPANY_NAME << 16 | s,
        pid::OFFICE_LOCATION << 16 | s,
        pid::BUSINESS_TELEPHONE_NUMBER << 16 | s,
        pid::MOBILE_TELEPHONE_NUMBER << 16 | s,
        pid::PROXY_ADDRESSES << 16 | if unicode { mapi::PT_MV_UNICODE } else { mapi::PT_MV_STRING8 },
        pid::OBJECT_GUID << 16 | mapi::PT_BINARY,
    ]
}

impl AddressBook {
    async fn snapshot(&self) -> Result<Arc<Book>, u32> {
        let store = Arc::clone(&self.store);
        self.book
            .get(self.store.as_ref(), || async move { Book::read(&store, &self.mids, &self.organization).await })
            .await
            .map_err(|e: agora_store::StoreError| {
                tracing::warn!("nspi: reading the directory: {e}");
                code::GENERAL_FAILURE
            })
    }

    fn session(&self, call: &Call<'_>, handle: &[u8; 16]) -> Option<u32> {
        let handles = call.group.handles.lock().unwrap_or_else(|p| p.into_inner());
        handles.get(handle).and_then(|h| h.downcast_ref::<Session>()).map(|s| s.code_page)
    }

    fn permanent_id(&self, e: &Entry) -> Vec<u8> {
        let dt = display_type(e.kind);
        let mut id = vec![0, 0, 0, 0];
        id.extend_from_slice(&GUID_NSPI);
        id.extend_from_slice(&1u32.to_le_bytes());
        id.extend_from_slice(&dt.to_le_bytes());
        id.extend_from_slice(e.legacy_dn.as_bytes());
        id.push(0);
        id
    }

    fn ephemeral_id(&self, mid: u32, dt: u32) -> Vec<u8> {
        let mut id = vec![0x87, 0, 0, 0];
        id.extend_from_slice(&self.server_guid);
        id.extend_from_slice(&1u32.to_le_bytes());
        id.extend_from_slice(&dt.to_le_bytes());
        id.extend_from_slice(&mid.to_le_bytes());
        id
    }

    /// One property of an entry; PtypErrorCode NOT_FOUND when it has none.
    fn prop(&self, book: &Book, e: &Entry, tag: u32, flags: u32, unicode_cp: bool) -> Prop {
        let mut ty = tag & 0xffff;
        // PT_UNSPECIFIED asks for the property in its own type.
        if ty == mapi::PT_UNSPECIFIED {
            ty = all_props(unicode_cp).iter().find(|t| *t >> 16 == tag >> 16).map_or(mapi::PT_ERROR, |t| t & 0xffff);
        }
        // A Unicode session gets PT_UNICODE for the 8-bit types it asks for.
        if unicode_cp && ty == mapi::PT_STRING8 {
            ty = mapi::PT_UNICODE;
        } else if unicode_cp && ty == mapi::PT_MV_STRING8 {
            ty = mapi::PT_MV_UNICODE;
        }
        let id = tag >> 16;
        let text = |s: &str| if s.is_empty() { None } else { Some(Value::Str(s.to_string())) };
        let string_type = matches!(ty, mapi::PT_STRING8 | mapi::PT_UNICODE);
        let (ty, value) = match id {
            pid::DISPLAY_NAME | pid::TRANSMITABLE_DISPLAY_NAME if string_type => (ty, text(&e.display)),
            pid::ADDRTYPE if string_type => (ty, Some(Value::Str("EX".into()))),
            pid::EMAIL_ADDRESS if string_type => (ty, Some(Value::Str(e.legacy_dn.clone()))),
            pid::SMTP_ADDRESS if string_type => (ty, Some(Value::Str(e.smtp.clone()))),
            pid::ACCOUNT if string_type => (ty, e.smtp.split('@').next().map(|l| Value::Str(l.to_string()))),
            pid::GIVEN_NAME if string_type => (ty, text(&e.given)),
            pid::SURNAME if string_type => (ty, text(&e.surname)),
            pid::TITLE if string_type => (ty, text(&e.title)),
            pid::DEPARTMENT_NAME if string_type => (ty, text(&e.department)),
            pid::COMPANY_NAME if string_type => (ty, text(&e.company)),
            pid::OFFICE_LOCATION if string_type => (ty, text(&e.office)),
            pid::BUSINESS_TELEPHONE_NUMBER if string_type => (ty, text(&e.phone)),
            pid::MOBILE_TELEPHONE_NUMBER if string_type => (ty, text(&e.mobile)),
            pid::PROXY_ADDRESSES if matches!(ty, mapi::PT_MV_STRING8 | mapi::PT_MV_UNICODE) => {
                let mut v = vec![format!("SMTP:{}", e.smtp)];
                v.extend(e.addresses.iter().map(|a| format!("smtp:{a}")));
                (ty, Some(Value::MvStr(v)))
            }
            pid::OBJECT_TYPE if ty == mapi::PT_LONG => (ty, Some(Value::Long(object_type(e.kind)))),
            pid::DISPLAY_TYPE if ty == mapi::PT_LONG => (ty, Some(Value::Long(display_type(e.kind)))),
            pid::CONTAINER_ID if ty == mapi::PT_LONG => {
                (ty, Some(Value::Long(book.domains.get(e.domain).map_or(0, |d| d.1))))
            }
            pid::ENTRYID if ty == mapi::PT_BINARY => {
                let id = if flags & F_EPH_ID != 0 {
                    self.ephemeral_id(e.mid, display_type(e.kind))
                } else {
                    self.permanent_id(e)
                };
                (ty, Some(Value::Bin(id)))
            }
            pid::RECORD_KEY if ty == mapi::PT_BINARY => (ty, Some(Value::Bin(self.permanent_id(e)))),
            pid::INSTANCE_KEY if ty == mapi::PT_BINARY => (ty, Some(Value::Bin(e.mid.to_le_bytes().to_vec()))),
            pid::MAPPING_SIGNATURE if ty == mapi::PT_BINARY => (ty, Some(Value::Bin(GUID_NSPI.to_vec()))),
            pid::OBJECT_GUID if ty == mapi::PT_BINARY => (ty, Some(Value::Bin(e.guid.to_vec()))),
            pid::SEARCH_KEY if ty == mapi::PT_BINARY => {
                let mut k = format!("EX:{}", e.legacy_dn.to_ascii_uppercase()).into_bytes();
                k.push(0);
                (ty, Some(Value::Bin(k)))
            }
            _ => (ty, None),
        };
        match value {
            Some(v) => Prop { tag: id << 16 | ty, value: v },
            None => Prop { tag: id << 16 | mapi::PT_ERROR, value: Value::Error(code::NOT_FOUND) },
        }
    }

    fn row(&self, book: &Book, e: &Entry, tags: &[u32], flags: u32, unicode_cp: bool) -> Vec<Prop> {
        tags.iter().map(|&t| self.prop(book, e, t, flags, unicode_cp)).collect()
    }

    /// A row for a Mid that names nothing (an explicit table's stale entry).
    fn missing_row(tags: &[u32]) -> Vec<Prop> {
        tags.iter()
            .map(|&t| Prop { tag: (t & 0xffff_0000) | mapi::PT_ERROR, value: Value::Error(code::NOT_FOUND) })
            .collect()
    }

    /// The position a STAT names in `rows`, after its Delta: (index, moved by).
    fn position(rows: &[u32], stat: &Stat) -> Result<(usize, i32), u32> {
        let start = match stat.current {
            MID_BEGINNING => 0,
            MID_END => rows.len(),
            MID_CURRENT => (stat.num_pos as usize).min(rows.len()),
            mid => rows.iter().position(|&m| m == mid).ok_or(code::NOT_FOUND)?,
        };
        let target = (start as i64 + i64::from(stat.delta)).clamp(0, rows.len() as i64) as usize;
        Ok((target, (target as i64 - start as i64) as i32))
    }

    fn set_position(rows: &[u32], stat: &mut Stat, at: usize) {
        stat.current = rows.get(at).copied().unwrap_or(MID_END);
        stat.num_pos = at as u32;
        stat.total = rows.len() as u32;
        stat.delta = 0;
    }

    /// Ambiguous name resolution (MS-OXNSPI §3.1.4.7): the entries whose display name,
    /// given name, surname, account or address begins with the text (any of its words),
    /// or whose address is the text.
    fn anr<'b>(book: &'b Book, rows: &[u32], text: &str) -> Vec<&'b Entry> {
        let t = text.trim().to_lowercase();
        if t.is_empty() {
            return Vec::new();
        }
        rows.iter()
            .filter_map(|m| book.entry(*m))
            .filter(|e| {
                e.smtp == t
                    || e.key.starts_with(&t)
                    || e.key.split_whitespace().any(|w| w.starts_with(&t))
                    || e.anr.iter().any(|f| f.starts_with(&t))
                    || e.addresses.contains(&t)
            })
            .collect()
    }

    fn matches(&self, book: &Book, e: &Entry, r: &Restriction) -> bool {
        match r {
            Restriction::And(l) => l.iter().all(|x| self.matches(book, e, x)),
            Restriction::Or(l) => l.iter().any(|x| self.matches(book, e, x)),
            Restriction::Not(x) => !self.matches(book, e, x),
            Restriction::Exist(tag) => !matches!(self.prop(book, e, *tag, 0, true).value, Value::Error(_)),
            Restriction::Property(relop, tag, Some(v)) if *tag >> 16 == pid::ANR => match &v.value {
                Value::Str(s) if *relop == 4 => Self::anr(book, &[e.mid], s).len() == 1,
                _ => false,
            },
            Restriction::Property(relop, tag, Some(v)) => {
                let have = self.prop(book, e, *tag, 0, true).value;
                let ord = match (&have, &v.value) {
                    (Value::Str(a), Value::Str(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
                    (Value::Long(a), Value::Long(b)) => a.cmp(b),
                    (Value::Bin(a), Value::Bin(b)) => a.cmp(b),
                    _ => return false,
                };
                use std::cmp::Ordering::*;
                match relop {
                    0 => ord == Less,
                    1 => ord != Greater,
                    2 => ord == Greater,
                    3 => ord != Less,
                    4 => ord == Equal,
                    5 => ord != Equal,
                    _ => false,
                }
            }
            Restriction::Content(fuzzy, tag, Some(v)) => {
                let needle = match &v.value {
                    Value::Str(s) => s.clone(),
                    _ => return false,
                };
                let haystacks: Vec<String> = match self.prop(book, e, *tag, 0, true).value {
                    Value::Str(s) => vec![s],
                    Value::MvStr(v) => v,
                    _ => return false,
                };
                let fold = fuzzy & 0x0001_0000 != 0 || fuzzy & 0x0004_0000 != 0;
                let (needle, haystacks) = if fold {
                    (needle.to_lowercase(), haystacks.iter().map(|h| h.to_lowercase()).collect())
                } else {
                    (needle, haystacks)
                };
                haystacks.iter().any(|h| match fuzzy & 0xffff {
                    0 => *h == needle,
                    1 => h.contains(&needle),
                    2 => h.starts_with(&needle),
                    _ => false,
                })
            }
            _ => false,
        }
    }

    async fn dispatch(&self, call: &Call<'_>) -> Result<Vec<u8>, u32> {
        let mut r = Reader::new(call.stub, call.little);
        let bad = |_: NdrError| status::BAD_STUB_DATA;
        let mut w = Writer::default();
        match call.opnum {
            // NspiBind
            0 => {
                let _flags = r.u32().map_err(bad)?;
                let stat = Stat::read(&mut r).map_err(bad)?;
                let want_guid = r.pointer().map_err(bad)?.is_some();
                if want_guid {
                    r.uuid().map_err(bad)?;
                }
                // Anonymous NSPI is not served: the association is authenticated here.
                let mut handle = [0u8; 16];
                getrandom::fill(&mut handle).map_err(|_| status::REMOTE_NO_MEMORY)?;
                if !call.group.insert_handle(handle, Box::new(Session { code_page: stat.code_page })) {
                    w.pointer(false);
                    w.context_handle(None);
                    w.u32(code::GENERAL_FAILURE);
                    return Ok(w.into_bytes());
                }
                w.pointer(want_guid);
                if want_guid {
                    w.uuid(&Uuid(self.server_guid));
                }
                w.context_handle(Some(handle));
                w.u32(code::SUCCESS);
            }
            // NspiUnbind
            1 => {
                let h = r.context_handle().map_err(bad)?;
                call.group.handles.lock().unwrap_or_else(|p| p.into_inner()).remove(&h);
                w.context_handle(None);
                w.u32(code::UNBIND_SUCCESS);
            }
            _ => {
                let h = r.context_handle().map_err(bad)?;
                let Some(code_page) = self.session(call, &h) else {
                    // A handle this group never made: the context handle fault.
                    return Err(status::CONTEXT_MISMATCH);
                };
                let book = match self.snapshot().await {
                    Ok(b) => b,
                    Err(c) => return Ok(failure(call.opnum, c)),
                };
                self.call_with(call.opnum, &mut r, &mut w, &book, code_page).map_err(bad)?;
            }
        }
        Ok(w.into_bytes())
    }

    /// The calls that run on a session's handle.
    fn call_with(&self, opnum: u16, r: &mut Reader<'_>, w: &mut Writer, book: &Book, session_cp: u32) -> NdrResult<()> {
        match opnum {
            // NspiUpdateStat
            2 => {
                let _reserved = r.u32()?;
                let mut stat = Stat::read(r)?;
                let want_delta = r.pointer()?.is_some();
                if want_delta {
                    r.i32()?;
                }
                let Some(rows) = book.container(stat.container) else {
                    stat.write(w);
                    w.pointer(want_delta);
                    if want_delta {
                        w.i32(0);
                    }
                    w.u32(code::INVALID_BOOKMARK);
                    return Ok(());
                };
                let result = Self::position(rows, &stat);
                let (code, moved) = match result {
                    Ok((at, moved)) => {
                        Self::set_position(rows, &mut stat, at);
                        (code::SUCCESS, moved)
                    }
                    Err(c) => (c, 0),
                };
                stat.write(w);
                w.pointer(want_delta);
                if want_delta {
                    w.i32(moved);
                }
                w.u32(code);
            }
            // NspiQueryRows
            3 => {
                let flags = r.u32()?;
                let mut stat = Stat::read(r)?;
                let etable_count = r.u32()? as usize;
                let etable = if r.pointer()?.is_some() {
                    let n = r.count(4)?;
                    if n != etable_count {
                        return Err(NdrError("explicit table count"));
                    }
                    Some((0..n).map(|_| r.u32()).collect::<NdrResult<Vec<u32>>>()?)
                } else {
                    None
                };
                let count = (r.u32()? as usize).min(MAX_ROWS);
                let tags = mapi::read_tags_ptr(r)?;
                let unicode = stat.code_page == CP_WINUNICODE;
                let tags = tags.unwrap_or_else(|| default_columns(unicode));
                let rows: Vec<Vec<Prop>>;
                let code;
                let wanted = etable.as_ref().map_or(count, |m| m.len().min(count));
                if too_big(wanted, tags.len()) {
                    rows = Vec::new();
                    code = TOO_BIG;
                } else if let Some(mids) = etable {
                    rows = mids
                        .iter()
                        .take(count)
                        .map(|m| match book.entry(*m) {
                            Some(e) => self.row(book, e, &tags, flags, unicode),
                            None => Self::missing_row(&tags),
                        })
                        .collect();
                    code = code::SUCCESS;
                } else if let Some(table) = book.container(stat.container) {
                    match Self::position(table, &stat) {
                        Ok((at, _)) => {
                            let end = (at + count).min(table.len());
                            rows = table[at..end]
                                .iter()
                                .filter_map(|m| book.entry(*m))
                                .map(|e| self.row(book, e, &tags, flags, unicode))
                                .collect();
                            Self::set_position(table, &mut stat, end);
                            code = code::SUCCESS;
                        }
                        Err(c) => {
                            rows = Vec::new();
                            code = c;
                        }
                    }
                } else {
                    rows = Vec::new();
                    code = code::INVALID_BOOKMARK;
                }
                stat.write(w);
                mapi::write_rowset_ptr(w, (code == code::SUCCESS).then_some(rows.as_slice()));
                w.u32(code);
            }
            // NspiSeekEntries
            4 => {
                let _reserved = r.u32()?;
                let mut stat = Stat::read(r)?;
                let target = mapi::read_value(r)?;
                let etable = mapi::read_tags_ptr(r)?;
                let tags = mapi::read_tags_ptr(r)?;
                if tags.as_ref().is_some_and(|t| too_big(SEEK_ROWS, t.len())) {
                    stat.write(w);
                    mapi::write_rowset_ptr(w, None);
                    w.u32(TOO_BIG);
                    return Ok(());
                }
                let unicode = stat.code_page == CP_WINUNICODE;
                let sought = match (&target.value, target.tag >> 16) {
                    (Value::Str(s), pid::DISPLAY_NAME) if stat.sort_type == 0 => Some(s.to_lowercase()),
                    _ => None,
                };
                let table: Vec<u32> = match &etable {
                    Some(m) => m.clone(),
                    None => book.container(stat.container).map(<[u32]>::to_vec).unwrap_or_default(),
                };
                let found = sought.as_ref().and_then(|s| {
                    table.iter().position(|m| book.entry(*m).is_some_and(|e| e.key.as_str() >= s.as_str()))
                });
                match (sought, found) {
                    (None, _) => {
                        stat.write(w);
                        mapi::write_rowset_ptr(w, None);
                        w.u32(code::GENERAL_FAILURE);
                    }
                    (Some(_), None) => {
                        stat.write(w);
                        mapi::write_rowset_ptr(w, None);
                        w.u32(code::NOT_FOUND);
                    }
                    (Some(_), Some(at)) => {
                        Self::set_position(&table, &mut stat, at);
                        let rows: Option<Vec<Vec<Prop>>> = tags.map(|t| {
                            table[at..]
                                .iter()
                                .take(SEEK_ROWS)
                                .filter_map(|m| book.entry(*m))
                                .map(|e| self.row(book, e, &t, 0, unicode))
                                .collect()
                        });
                        stat.write(w);
                        mapi::write_rowset_ptr(w, rows.as_deref());
                        w.u32(code::SUCCESS);
                    }
                }
            }
            // NspiGetMatches
            5 => {
                let _reserved1 = r.u32()?;
                let mut stat = Stat::read(r)?;
                let _reserved = mapi::read_tags_ptr(r)?;
                let _reserved2 = r.u32()?;
                let filter = mapi::read_restriction_ptr(r)?;
                let prop_name = r.pointer()?.is_some();
                if prop_name {
                    if r.pointer()?.is_some() {
                        r.uuid()?;
                    }
                    r.u32()?;
                    r.u32()?;
                }
                let requested = r.u32()? as usize;
                let tags = mapi::read_tags_ptr(r)?;
                let unicode = stat.code_page == CP_WINUNICODE;
                let columns = tags.as_ref().map_or(0, Vec::len);
                let out = match (filter, book.container(stat.container)) {
                    _ if too_big(requested.min(MAX_ROWS), columns) => Err(TOO_BIG),
                    (Some(f), Some(table)) if !prop_name => {
                        let hits: Vec<u32> = table
                            .iter()
                            .copied()
                            .filter(|m| book.entry(*m).is_some_and(|e| self.matches(book, e, &f)))
                            .collect();
                        if hits.len() > requested.min(MAX_ROWS) { Err(code::TABLE_TOO_BIG) } else { Ok(hits) }
                    }
                    // Link attributes (lpPropName) are not kept: nothing to open.
                    (_, Some(_)) if prop_name => Err(code::NOT_FOUND),
                    (None, Some(_)) => Err(code::TOO_COMPLEX),
                    _ => Err(code::INVALID_BOOKMARK),
                };
                match out {
                    Ok(mids) => {
                        stat.total = mids.len() as u32;
                        stat.current = mids.first().copied().unwrap_or(MID_END);
                        stat.num_pos = 0;
                        stat.write(w);
                        mapi::write_tags_ptr(w, Some(&mids));
                        let rows: Option<Vec<Vec<Prop>>> = tags.map(|t| {
                            mids.iter()
                                .filter_map(|m| book.entry(*m))
                                .map(|e| self.row(book, e, &t, 0, unicode))
                                .collect()
                        });
                        mapi::write_rowset_ptr(w, rows.as_deref());
                        w.u32(code::SUCCESS);
                    }
                    Err(c) => {
                        stat.write(w);
                        mapi::write_tags_ptr(w, None);
                        mapi::write_rowset_ptr(w, None);
                        w.u32(c);
                    }
                }
            }
            // NspiResortRestriction
            6 => {
                let _reserved = r.u32()?;
                let mut stat = Stat::read(r)?;
                let input = mapi::read_tags(r)?;
                let _out = mapi::read_tags_ptr(r)?;
                let mut mids: Vec<&Entry> = input.iter().filter_map(|m| book.entry(*m)).collect();
                mids.sort_by(|a, b| a.key.cmp(&b.key).then(a.mid.cmp(&b.mid)));
                mids.dedup_by_key(|e| e.mid);
                let mids: Vec<u32> = mids.iter().map(|e| e.mid).collect();
                stat.total = mids.len() as u32;
                if !mids.contains(&stat.current) {
                    stat.current = mids.first().copied().unwrap_or(MID_END);
                }
                stat.num_pos = mids.iter().position(|m| *m == stat.current).unwrap_or(0) as u32;
                stat.write(w);
                mapi::write_tags_ptr(w, Some(&mids));
                w.u32(code::SUCCESS);
            }
            // NspiDNToMId
            7 => {
                let _reserved = r.u32()?;
                let names = mapi::read_strings(r, false)?;
                if names.len() > MAX_ROWS {
                    mapi::write_tags_ptr(w, None);
                    w.u32(TOO_BIG);
                    return Ok(());
                }
                let mids: Vec<u32> = names
                    .iter()
                    .map(|n| book.by_dn.get(&n.to_ascii_lowercase()).map_or(0, |&i| book.entries[i].mid))
                    .collect();
                mapi::write_tags_ptr(w, Some(&mids));
                w.u32(code::SUCCESS);
            }
            // NspiGetPropList
            8 => {
                let flags = r.u32()?;
                let mid = r.u32()?;
                let cp = r.u32()?;
                match book.entry(mid) {
                    Some(e) => {
                        let tags: Vec<u32> = all_props(cp == CP_WINUNICODE)
                            .into_iter()
                            .filter(|&t| !matches!(self.prop(book, e, t, flags, false).value, Value::Error(_)))
                            .collect();
                        mapi::write_tags_ptr(w, Some(&tags));
                        w.u32(code::SUCCESS);
                    }
                    None => {
                        mapi::write_tags_ptr(w, None);
                        w.u32(code::INVALID_PARAMETER);
                    }
                }
            }
            // NspiGetProps
            9 => {
                let flags = r.u32()?;
                // `[in] STAT* pStat`: a reference pointer, so the STAT itself (MS-OXNSPI).
                let stat = Stat::read(r)?;
                let tags = mapi::read_tags_ptr(r)?;
                if tags.as_ref().is_some_and(|t| too_big(1, t.len())) {
                    mapi::write_row_ptr(w, None);
                    w.u32(TOO_BIG);
                    return Ok(());
                }
                let unicode = stat.code_page == CP_WINUNICODE || (stat.code_page == 0 && session_cp == CP_WINUNICODE);
                match book.entry(stat.current) {
                    Some(e) => {
                        let tags = tags.unwrap_or_else(|| all_props(unicode));
                        let row = self.row(book, e, &tags, flags, unicode);
                        let partial = row.iter().any(|p| matches!(p.value, Value::Error(_)));
                        mapi::write_row_ptr(w, Some(&row));
                        w.u32(if partial { code::ERRORS_RETURNED } else { code::SUCCESS });
                    }
                    None => {
                        mapi::write_row_ptr(w, None);
                        w.u32(code::NOT_FOUND);
                    }
                }
            }
            // NspiCompareMIds
            10 => {
                let _reserved = r.u32()?;
                let stat = Stat::read(r)?;
                let (a, b) = (r.u32()?, r.u32()?);
                let table = book.container(stat.container).unwrap_or(&[]);
                let pa = table.iter().position(|m| *m == a);
                let pb = table.iter().position(|m| *m == b);
                match (pa, pb) {
                    (Some(x), Some(y)) => {
                        w.i32(x as i32 - y as i32);
                        w.u32(code::SUCCESS);
                    }
                    _ => {
                        w.i32(0);
                        w.u32(code::GENERAL_FAILURE);
                    }
                }
            }
            // NspiModProps, NspiModLinkAtt: the address book is read-only here.
            11 | 14 => w.u32(code::ACCESS_DENIED),
            // NspiGetSpecialTable
            12 => {
                let flags = r.u32()?;
                // `[in] STAT* pStat` and `[in, out] DWORD* lpVersion`: references, inline.
                let stat = Stat::read(r)?;
                let version = r.u32()?;
                let unicode = flags & NSPI_UNICODE_STRINGS != 0 || stat.code_page == CP_WINUNICODE;
                if flags & 2 != 0 {
                    // Address creation templates: none are offered.
                    w.u32(version);
                    mapi::write_rowset_ptr(w, Some(&[]));
                    w.u32(code::SUCCESS);
                    return Ok(());
                }
                let rows = self.hierarchy(book, unicode);
                w.u32(version);
                mapi::write_rowset_ptr(w, Some(&rows));
                w.u32(code::SUCCESS);
            }
            // NspiGetTemplateInfo: no display templates are kept.
            13 => {
                mapi::write_row_ptr(w, None);
                w.u32(code::NOT_FOUND);
            }
            // NspiQueryColumns
            16 => {
                let _reserved = r.u32()?;
                let flags = r.u32()?;
                mapi::write_tags_ptr(w, Some(&all_props(flags & NSPI_UNICODE_PROPTYPES != 0)));
                w.u32(code::SUCCESS);
            }
            // NspiGetNamesFromIDs, NspiGetIDsFromNames: no named properties here.
            17 => {
                mapi::write_tags_ptr(w, None);
                w.pointer(false);
                w.u32(code::NO_SUPPORT);
            }
            18 => {
                mapi::write_tags_ptr(w, None);
                w.u32(code::NO_SUPPORT);
            }
            // NspiResolveNames, NspiResolveNamesW
            19 | 20 => {
                let _reserved = r.u32()?;
                let stat = Stat::read(r)?;
                let tags = mapi::read_tags_ptr(r)?;
                let names = mapi::read_strings(r, opnum == 20)?;
                if names.len() > MAX_NAMES || too_big(names.len(), tags.as_ref().map_or(0, Vec::len)) {
                    mapi::write_tags_ptr(w, None);
                    mapi::write_rowset_ptr(w, None);
                    w.u32(TOO_BIG);
                    return Ok(());
                }
                let unicode = opnum == 20 || stat.code_page == CP_WINUNICODE;
                let table = book.container(stat.container).unwrap_or(&book.gal);
                let mut mids = Vec::with_capacity(names.len());
                let mut rows = Vec::new();
                for n in &names {
                    let hits = Self::anr(book, table, n);
                    match hits.as_slice() {
                        [one] => {
                            mids.push(one.mid);
                            if let Some(t) = &tags {
                                rows.push(self.row(book, one, t, 0, unicode));
                            }
                        }
                        [] => mids.push(MID_UNRESOLVED),
                        _ => mids.push(MID_AMBIGUOUS),
                    }
                }
                mapi::write_tags_ptr(w, Some(&mids));
                mapi::write_rowset_ptr(w, tags.as_ref().map(|_| rows.as_slice()));
                w.u32(code::SUCCESS);
            }
            _ => return Err(NdrError("opnum")),
        }
        Ok(())
    }

    /// The address book hierarchy: the Global Address List, then each domain.
    fn hierarchy(&self, book: &Book, unicode: bool) -> Vec<Vec<Prop>> {
        let s = if unicode { mapi::PT_UNICODE } else { mapi::PT_STRING8 };
        let container_id = |dn: &str| {
            let mut id = vec![0, 0, 0, 0];
            id.extend_from_slice(&GUID_NSPI);
            id.extend_from_slice(&1u32.to_le_bytes());
            id.extend_from_slice(&DT_CONTAINER.to_le_bytes());
            id.extend_from_slice(dn.as_bytes());
            id.push(0);
            id
        };
        let gal_dn = "/";
        let mut rows = vec![vec![
            Prop { tag: pid::ENTRYID << 16 | mapi::PT_BINARY, value: Value::Bin(container_id(gal_dn)) },
            Prop { tag: pid::CONTAINER_FLAGS << 16 | mapi::PT_LONG, value: Value::Long(1 | 2) },
            Prop { tag: pid::DEPTH << 16 | mapi::PT_LONG, value: Value::Long(0) },
            Prop { tag: pid::CONTAINER_ID << 16 | mapi::PT_LONG, value: Value::Long(0) },
            Prop { tag: pid::DISPLAY_NAME << 16 | s, value: Value::Str("Global Address List".into()) },
            Prop { tag: pid::IS_MASTER << 16 | mapi::PT_BOOLEAN, value: Value::Bool(false) },
        ]];
        for (name, mid, _) in &book.domains {
            let dn = format!("/o={}/ou={name}/cn=Recipients", self.organization);
            rows.push(vec![
                Prop { tag: pid::ENTRYID << 16 | mapi::PT_BINARY, value: Value::Bin(container_id(&dn)) },
                Prop { tag: pid::CONTAINER_FLAGS << 16 | mapi::PT_LONG, value: Value::Long(1) },
                Prop { tag: pid::DEPTH << 16 | mapi::PT_LONG, value: Value::Long(1) },
                Prop { tag: pid::CONTAINER_ID << 16 | mapi::PT_LONG, value: Value::Long(*mid) },
                Prop { tag: pid::DISPLAY_NAME << 16 | s, value: Value::Str(name.clone()) },
                Prop { tag: pid::IS_MASTER << 16 | mapi::PT_BOOLEAN, value: Value::Bool(false) },
                Prop { tag: pid::PARENT_ENTRYID << 16 | mapi::PT_BINARY, value: Value::Bin(container_id(gal_dn)) },
            ]);
        }
        rows
    }
}

fn object_type(k: Kind) -> u32 {
    match k {
        Kind::Group => MAPI_DISTLIST,
        _ => MAPI_MAILUSER,
    }
}

fn display_type(k: Kind) -> u32 {
    match k {
        Kind::Person => DT_MAILUSER,
        Kind::Group => DT_DISTLIST,
        Kind::Contact => DT_REMOTE_MAILUSER,
    }
}

/// A response that only says `code` (its out pointers NULL), for a failure before the
/// call's own work: the shape depends on the call.
fn failure(opnum: u16, code: u32) -> Vec<u8> {
    let mut w = Writer::default();
    match opnum {
        2 | 3 | 4 | 6 => {
            Stat::default().write(&mut w);
            w.pointer(false);
        }
        5 => {
            Stat::default().write(&mut w);
            w.pointer(false);
            w.pointer(false);
        }
        7 | 8 | 9 | 13 | 16 | 18 => w.pointer(false),
        10 => w.i32(0),
        12 => {
            w.u32(0);
            w.pointer(false);
        }
        17 | 19 | 20 => {
            w.pointer(false);
            w.pointer(false);
        }
        _ => {}
    }
    w.u32(code);
    w.into_bytes()
}

impl Interface for AddressBook {
    fn syntax(&self) -> Syntax {
        syntax()
    }
    fn annotation(&self) -> &'static str {
        "Address book (NSPI)"
    }
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Vec<u8>, u32>> {
        Box::pin(async move {
            if call.opnum > 20 || call.opnum == 15 {
                return Err(status::OP_RNG_ERROR);
            }
            self.dispatch(&call).await
        })
    }
}
