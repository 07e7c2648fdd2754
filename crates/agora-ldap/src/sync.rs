//! Content synchronisation (RFC 4533), the provider's side: the replication log kept
//! from the directory tree (each entry's CSN, deletes remembered for a while), cookies
//! in OpenLDAP's form, and a sync search's refresh and persist phases.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_net::Conn;
use agora_store::{Store, StoreError, SyncRecord};
use bytes::BytesMut;
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::*;
use sha2::Digest;
use tokio::sync::{Mutex, watch};

use crate::Shared;
use crate::filter::{self, Filter, FilterError, Truth};
use crate::schema::{self, AttrId};
use crate::session::{Next, Scope, Session, encode, read_message, result};
use crate::tree::{Entry, Tree};

pub const CTRL_SYNC_REQUEST: &str = "1.3.6.1.4.1.4203.1.9.1.1";
const OID_SYNC_INFO: &str = "1.3.6.1.4.1.4203.1.9.1.4";
const OID_CANCEL: &str = "1.3.6.1.1.8";
/// How often a persistent search looks for changes made by another process (the CLI).
const PERSIST_TICK: Duration = Duration::from_millis(250);
/// A persisting consumer is sent its cookie again this often, so that a dead link ends.
const HEARTBEAT: Duration = Duration::from_secs(300);
/// A consumer's state is written to the store at most this often while it persists.
const NOTE_EVERY: Duration = Duration::from_secs(2);
/// Longer cookies are not ones this server or OpenLDAP makes.
pub const MAX_COOKIE: usize = 1024;
/// Responses are sent once this much is waiting, so a large refresh streams.
const FLUSH_AT: usize = 256 * 1024;

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A change sequence number as OpenLDAP writes it,
/// `YYYYmmddHHMMSS.uuuuuuZ#count#sid#mod`; ordered by time, then count, then server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Csn {
    pub micros: i64,
    pub count: u32,
    pub sid: u16,
}

impl Csn {
    pub fn parse(s: &str) -> Option<Csn> {
        let b = s.as_bytes();
        if b.len() != 40 || b[14] != b'.' || b[21] != b'Z' || b[22] != b'#' || b[29] != b'#' || b[33] != b'#' {
            return None;
        }
        let dec = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = &b[r];
            t.iter().all(u8::is_ascii_digit).then(|| t.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
        };
        let hex = |r: std::ops::Range<usize>| -> Option<u32> {
            let t = s.get(r)?;
            t.bytes().all(|c| c.is_ascii_hexdigit()).then(|| u32::from_str_radix(t, 16).ok())?
        };
        let (y, mo, d) = (dec(0..4)?, dec(4..6)?, dec(6..8)?);
        let (h, mi, se, us) = (dec(8..10)?, dec(10..12)?, dec(12..14)?, dec(15..21)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let (count, sid) = (hex(23..29)?, hex(30..33)?);
        hex(34..40)?;
        let days = agora_store::time::days_from_civil(y, mo as u32, d as u32);
        let secs = days * 86_400 + h * 3600 + mi * 60 + se;
        Some(Csn { micros: secs * 1_000_000 + us, count, sid: sid as u16 })
    }

    pub fn text(&self) -> String {
        let (secs, us) = (self.micros.div_euclid(1_000_000), self.micros.rem_euclid(1_000_000));
        let (y, mo, d, h, mi, s) = agora_store::time::split(secs);
        format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}.{us:06}Z#{:06x}#{:03x}#000000", self.count, self.sid)
    }

    /// Seconds since the epoch.
    pub fn secs(&self) -> i64 {
        self.micros.div_euclid(1_000_000)
    }

    /// The next CSN after `last`: now, or just after `last` when the clock has not
    /// passed it (CSNs strictly increase; consumers drop a change that is not newer).
    fn next(last: Option<Csn>, sid: u16) -> Csn {
        let now = now_micros();
        match last {
            Some(l) if l.micros >= now && l.count < 0xff_ffff => Csn { micros: l.micros, count: l.count + 1, sid },
            Some(l) if l.micros >= now => Csn { micros: l.micros + 1, count: 0, sid },
            _ => Csn { micros: now, count: 0, sid },
        }
    }
}

/// A sync cookie: OpenLDAP's `rid=NNN[,sid=SSS],csn=CSN[;CSN…]`, which this server
/// also sends. Anything else (or nothing) reads as a cookie with no CSN.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub rid: Option<String>,
    pub csns: Vec<Csn>,
}

impl Cookie {
    pub fn parse(raw: &[u8]) -> Cookie {
        let mut c = Cookie::default();
        let Some(text) = std::str::from_utf8(raw).ok().filter(|_| raw.len() <= MAX_COOKIE) else {
            return c;
        };
        for part in text.split(',') {
            if let Some(r) = part.strip_prefix("rid=") {
                if !r.is_empty() && r.len() <= 3 && r.bytes().all(|b| b.is_ascii_digit()) {
                    c.rid = Some(r.to_string());
                }
            } else if let Some(list) = part.strip_prefix("csn=") {
                c.csns.extend(list.split(';').filter_map(Csn::parse));
            }
        }
        c
    }

    /// The CSN this server issued, if the cookie carries one.
    pub fn ours(&self, sid: u16) -> Option<Csn> {
        self.csns.iter().filter(|c| c.sid == sid).max().copied()
    }

    pub fn make(rid: Option<&str>, csn: Csn) -> Vec<u8> {
        match rid {
            Some(r) => format!("rid={r},csn={}", csn.text()).into_bytes(),
            None => format!("csn={}", csn.text()).into_bytes(),
        }
    }
}

/// Computed from other entries or by the server: each side makes its own, so replicas
/// are not sent them and they do not make an entry change.
fn replicated(id: AttrId) -> bool {
    !matches!(
        schema::attr_type(id).name,
        "memberOf" | "directReports" | "entryDN" | "subschemaSubentry" | "hasSubordinates" | "structuralObjectClass"
    )
}

/// What a replica receives of an entry, hashed: when it moves, the entry changed.
fn content_hash(e: &Entry) -> [u8; 16] {
    let mut h = sha2::Sha256::new();
    h.update(e.dn.as_bytes());
    h.update([0]);
    for a in e.attrs.iter().filter(|a| replicated(a.id)) {
        // By name: ids are positions in this release's table.
        h.update(schema::attr_type(a.id).name.as_bytes());
        h.update([0]);
        h.update((a.values.len() as u32).to_be_bytes());
        for v in &a.values {
            h.update((v.len() as u32).to_be_bytes());
            h.update(v);
        }
    }
    if let Some((hash, scram)) = &e.secret {
        h.update([1]);
        h.update(hash.as_bytes());
        h.update([0]);
        h.update(scram.as_bytes());
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// An entry gone from the directory, remembered so that replicas learn of it.
#[derive(Debug, Clone)]
pub struct Tomb {
    pub uuid: [u8; 16],
    pub dn: String,
    pub ndn: String,
    pub csn: Csn,
}

/// The tree with each entry's CSN and the deletes still remembered.
pub struct SyncIndex {
    pub tree: Arc<Tree>,
    /// Per entry of the tree, the CSN of its last change.
    pub csns: Vec<Csn>,
    /// Deleted entries, oldest first.
    pub tombs: Vec<Tomb>,
    /// The newest CSN issued: a cookie beyond it was not issued here.
    pub newest: Csn,
    /// Deletes before this are forgotten: an older cookie gets a present phase.
    pub horizon: Csn,
}

#[derive(Clone)]
struct Rec {
    dn: String,
    ndn: String,
    csn: Csn,
    hash: [u8; 16],
    deleted: bool,
}

#[derive(Default)]
struct Keeper {
    loaded: bool,
    records: HashMap<[u8; 16], Rec>,
    newest: Option<Csn>,
    horizon: Option<Csn>,
}

/// The replication log of one store, shared by every listener of the process.
pub struct SyncLog {
    keeper: Mutex<Keeper>,
    current: watch::Sender<Option<Arc<SyncIndex>>>,
    sid: AtomicU64,
    keep_deletes_secs: AtomicU64,
}

impl Default for SyncLog {
    fn default() -> Self {
        SyncLog {
            keeper: Mutex::new(Keeper::default()),
            current: watch::channel(None).0,
            sid: AtomicU64::new(0),
            keep_deletes_secs: AtomicU64::new(30 * 86_400),
        }
    }
}

impl SyncLog {
    pub fn configure(&self, sid: u16, keep_deletes: Duration) {
        self.sid.store(sid as u64, Ordering::Relaxed);
        self.keep_deletes_secs.store(keep_deletes.as_secs().max(60), Ordering::Relaxed);
    }

    pub fn sid(&self) -> u16 {
        self.sid.load(Ordering::Relaxed) as u16
    }

    fn latest(&self) -> Option<Arc<SyncIndex>> {
        self.current.borrow().clone()
    }
}

impl Keeper {
    async fn load(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        for r in store.sync_log().await? {
            let Some(csn) = Csn::parse(&r.csn) else { continue };
            self.newest = self.newest.max(Some(csn));
            let ndn = crate::dn::normalize(&r.dn).unwrap_or_default();
            self.records.insert(r.uuid, Rec { dn: r.dn, ndn, csn, hash: r.hash, deleted: r.deleted });
        }
        self.horizon = store
            .sync_values("horizon")
            .await?
            .into_iter()
            .find(|(k, _)| k == "horizon")
            .and_then(|(_, v)| Csn::parse(&v));
        self.loaded = true;
        Ok(())
    }

    /// Compares the tree with the log, records what changed under new CSNs, forgets old
    /// deletes, and returns the index of this tree.
    async fn advance(
        &mut self,
        store: &dyn Store,
        tree: Arc<Tree>,
        sid: u16,
        keep: Duration,
    ) -> Result<SyncIndex, StoreError> {
        if !self.loaded {
            self.load(store).await?;
        }
        let mut clock = self.newest;
        let mut horizon = match self.horizon {
            Some(h) => h,
            None => {
                // A new log: every cookie from before it is unknown.
                let h = Csn::next(clock, sid);
                clock = Some(h);
                h
            }
        };
        let mut changes: Vec<([u8; 16], Rec)> = Vec::new();
        let present: HashSet<[u8; 16]> = tree.entries.iter().map(|e| e.uuid).collect();
        // Deletes first: an entry deleted and made again under its old name (a new
        // identity) reaches consumers in that order.
        let mut gone: Vec<(&[u8; 16], &Rec)> =
            self.records.iter().filter(|(u, r)| !r.deleted && !present.contains(*u)).collect();
        gone.sort_by(|a, b| a.1.dn.cmp(&b.1.dn));
        for (u, r) in gone {
            let csn = Csn::next(clock, sid);
            clock = Some(csn);
            changes.push((*u, Rec { csn, deleted: true, ..r.clone() }));
        }
        let mut csns = Vec::with_capacity(tree.entries.len());
        for e in &tree.entries {
            let hash = content_hash(e);
            match self.records.get(&e.uuid) {
                Some(r) if !r.deleted && r.hash == hash && r.dn == e.dn => csns.push(r.csn),
                _ => {
                    let csn = Csn::next(clock, sid);
                    clock = Some(csn);
                    csns.push(csn);
                    changes.push((e.uuid, Rec { dn: e.dn.clone(), ndn: e.ndn.clone(), csn, hash, deleted: false }));
                }
            }
        }
        let cutoff = Csn { micros: now_micros() - keep.as_micros() as i64, count: 0, sid: 0 };
        let forget = self.records.values().any(|r| r.deleted && r.csn < cutoff);
        if forget {
            horizon = horizon.max(cutoff);
        }
        // The newest CSN never falls behind the horizon (forgotten deletes take their
        // CSNs with them): else every up-to-date cookie would read as too old.
        if clock < Some(horizon) {
            clock = Some(Csn::next(Some(horizon), sid));
        }
        if !changes.is_empty() || Some(horizon) != self.horizon {
            let rows = changes
                .iter()
                .map(|(u, r)| SyncRecord {
                    uuid: *u,
                    dn: r.dn.clone(),
                    csn: r.csn.text(),
                    hash: r.hash,
                    deleted: r.deleted,
                })
                .collect();
            store.record_sync(rows, Some(horizon.text())).await?;
            if !changes.is_empty() {
                tracing::debug!("replication: {} directory entries changed", changes.len());
            }
        }
        for (u, r) in changes {
            self.records.insert(u, r);
        }
        self.records.retain(|_, r| !(r.deleted && r.csn < horizon));
        self.newest = clock;
        self.horizon = Some(horizon);
        let mut tombs: Vec<Tomb> = self
            .records
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(u, r)| Tomb { uuid: *u, dn: r.dn.clone(), ndn: r.ndn.clone(), csn: r.csn })
            .collect();
        tombs.sort_by_key(|t| t.csn);
        Ok(SyncIndex { tree, csns, tombs, newest: clock.unwrap_or(horizon), horizon })
    }
}

impl Shared {
    /// The tree with its replication index, the log brought up to date first.
    pub async fn synced(&self) -> Result<Arc<SyncIndex>, StoreError> {
        // Nothing changed since the last index: no rebuild, no lock.
        if let Some(ix) = self.sync.latest()
            && let Some(tree) = self.tree.fresh(self.store.directory_version())
            && Arc::ptr_eq(&ix.tree, &tree)
        {
            return Ok(ix);
        }
        let mut keeper = self.sync.keeper.lock().await;
        // The newest tree, read under the lock: an older one must never follow it.
        let tree = self.tree().await?;
        if let Some(ix) = self.sync.latest().filter(|ix| Arc::ptr_eq(&ix.tree, &tree)) {
            return Ok(ix);
        }
        let keep = Duration::from_secs(self.sync.keep_deletes_secs.load(Ordering::Relaxed));
        let started = std::time::Instant::now();
        let ix = Arc::new(keeper.advance(&*self.store, tree, self.sync.sid(), keep).await?);
        tracing::debug!("replication: change log at {} after {:?}", ix.newest.text(), started.elapsed());
        self.sync.current.send_replace(Some(Arc::clone(&ix)));
        Ok(ix)
    }

    /// Keeps the log current while the server runs, so that CSNs follow changes closely
    /// whoever made them (LDAP, the CLI, the admin console).
    pub async fn keep_log(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut pruned = tokio::time::Instant::now();
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.synced().await {
                tracing::warn!("replication: keeping the change log: {e}");
            }
            // Without consumers waiting, at most a tenth of the time goes to keeping the
            // log of a large directory that keeps changing (an import, say).
            let pause = Duration::from_secs(1).max(started.elapsed() * 10);
            if pruned.elapsed() > Duration::from_secs(3600) {
                pruned = tokio::time::Instant::now();
                self.forget_consumers().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

impl Shared {
    /// Consumers gone for longer than deletes are kept are not shown any more.
    async fn forget_consumers(&self) {
        let keep = self.sync.keep_deletes_secs.load(Ordering::Relaxed) as i64;
        let Ok(list) = self.store.sync_values("consumer.").await else { return };
        for (key, value) in list {
            let f: Vec<&str> = value.split('\t').collect();
            let seen: i64 = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            if f.get(4) != Some(&"connected") && agora_store::now() - seen > keep {
                let _ = self.store.set_sync_value(&key, None).await;
            }
        }
    }
}

/// The Sync Request control of a request, if any: (mode, cookie).
pub fn request(ctrls: &[LdapControl]) -> Option<(SyncRequestMode, Option<Vec<u8>>)> {
    ctrls.iter().find_map(|c| match c {
        LdapControl::SyncRequest { mode, cookie, .. } => Some((mode.clone(), cookie.clone())),
        _ => None,
    })
}

/// The attributes a sync search asked for, of those that replicate.
struct Wanted {
    all_user: bool,
    all_operational: bool,
    named: Vec<AttrId>,
    csn: bool,
    /// Password hash and SCRAM verifier: an Agora replica over TLS that named userPassword.
    secrets: bool,
}

impl Wanted {
    fn new(attrs: &[String], secrets_allowed: bool) -> Wanted {
        let has = |n: &str| attrs.iter().any(|a| a.eq_ignore_ascii_case(n));
        let all_operational = has("+");
        Wanted {
            all_user: attrs.is_empty() || has("*"),
            all_operational,
            named: attrs.iter().filter_map(|a| schema::attr(a)).collect(),
            csn: all_operational || has("entryCSN"),
            secrets: secrets_allowed && has("userPassword"),
        }
    }

    fn attributes(&self, e: &Entry, csn: Csn) -> Vec<LdapPartialAttribute> {
        let mut out = Vec::with_capacity(e.attrs.len() + 3);
        for a in e.attrs.iter().filter(|a| replicated(a.id)) {
            let t = schema::attr_type(a.id);
            let selected = if t.operational { self.all_operational } else { self.all_user };
            if !selected && !self.named.contains(&a.id) {
                continue;
            }
            let atype = if t.name == "userCertificate" { "userCertificate;binary".into() } else { t.name.to_string() };
            out.push(LdapPartialAttribute { atype, vals: a.values.clone() });
        }
        if self.csn {
            out.push(LdapPartialAttribute { atype: "entryCSN".into(), vals: vec![csn.text().into_bytes()] });
        }
        if self.secrets
            && let Some((hash, scram)) = &e.secret
        {
            if !hash.is_empty() {
                // Agora's argon2id hashes as OpenLDAP's argon2 module writes them; hashes
                // imported in another scheme ({SSHA}, {CRYPT}) already say theirs.
                let value = if hash.starts_with("$argon2") { format!("{{ARGON2}}{hash}") } else { hash.clone() };
                out.push(LdapPartialAttribute { atype: "userPassword".into(), vals: vec![value.into_bytes()] });
            }
            if let Some(v) = scram_auth_password(scram) {
                out.push(LdapPartialAttribute { atype: "authPassword".into(), vals: vec![v.into_bytes()] });
            }
        }
        out
    }
}

/// The store's SCRAM verifier (`iterations:salt:stored:server`) as an RFC 5803
/// authPassword value (`SCRAM-SHA-256$iterations:salt$stored:server`).
pub fn scram_auth_password(scram: &str) -> Option<String> {
    let mut p = scram.split(':');
    let (i, salt, stored, server) = (p.next()?, p.next()?, p.next()?, p.next()?);
    Some(format!("SCRAM-SHA-256${i}:{salt}${stored}:{server}"))
}

/// The reverse of `scram_auth_password`.
pub fn scram_from_auth_password(v: &str) -> Option<String> {
    let rest = v.strip_prefix("SCRAM-SHA-256$")?;
    let (info, value) = rest.split_once('$')?;
    let (i, salt) = info.split_once(':')?;
    let (stored, server) = value.split_once(':')?;
    Some(format!("{i}:{salt}:{stored}:{server}"))
}

fn entry_msg(
    id: i32,
    dn: &str,
    attributes: Vec<LdapPartialAttribute>,
    state: SyncStateValue,
    uuid: [u8; 16],
    cookie: Option<Vec<u8>>,
) -> LdapMsg {
    LdapMsg::new_with_ctrls(
        id,
        LdapOp::SearchResultEntry(LdapSearchResultEntry { dn: dn.to_string(), attributes }),
        vec![LdapControl::SyncState { state, entry_uuid: uuid::Uuid::from_bytes(uuid), cookie }],
    )
}

fn info_msg(id: i32, info: LdapIntermediateResponse) -> LdapMsg {
    LdapMsg::new(id, LdapOp::IntermediateResponse(info))
}

/// One search's view of the tree: which entries it covers.
struct View<'a> {
    session: &'a Session,
    filter: &'a Filter,
    base: &'a str,
    scope: LdapSearchScope,
}

impl View<'_> {
    fn scope(&self, tree: &Tree) -> Result<Option<Scope>, LdapResult> {
        self.session.scope(tree, self.base, self.scope.clone())
    }

    fn matches(&self, tree: &Tree, scope: &Scope, i: usize) -> bool {
        let e = &tree.entries[i];
        let visible = |a: AttrId| self.session.attr_visible(a);
        scope.contains(tree, i) && self.session.can_read(tree, e) && self.filter.eval(tree, e, &visible) == Truth::True
    }
}

impl Session {
    /// A search with the Sync Request control: the refresh, then for refreshAndPersist
    /// each change as it happens until the client abandons or cancels it.
    pub(crate) async fn sync_search(
        &mut self,
        id: i32,
        s: LdapSearchRequest,
        mode: SyncRequestMode,
        cookie: Option<Vec<u8>>,
        conn: &mut Conn,
        out: &mut BytesMut,
    ) -> Next {
        let done = |r: LdapResult, out: &mut BytesMut| encode(LdapMsg::new(id, LdapOp::SearchResultDone(r)), out);
        let Some(me) = self.identity.clone().filter(|i| i.admin || i.replicator) else {
            done(
                result(
                    LdapResultCode::InsufficentAccessRights,
                    "replication needs an administrator or an account with the replicator role",
                ),
                out,
            );
            return Next::Continue;
        };
        if self.cfg().gc {
            done(result(LdapResultCode::UnwillingToPerform, "the Global Catalog does not replicate"), out);
            return Next::Continue;
        }
        let compiled = match filter::compile(&s.filter) {
            Ok(f) => f,
            Err(FilterError::UnknownRule(r)) => {
                done(result(LdapResultCode::InappropriateMatching, &format!("unknown matching rule {r}")), out);
                return Next::Continue;
            }
            Err(_) => {
                done(result(LdapResultCode::AdminLimitExceeded, "filter too deep or too large"), out);
                return Next::Continue;
            }
        };
        let shared = Arc::clone(self.shared());
        let ix = match shared.synced().await {
            Ok(ix) => ix,
            Err(e) => {
                tracing::error!("ldap: reading the directory for a sync search: {e}");
                done(result(LdapResultCode::Unavailable, "the directory is unavailable"), out);
                return Next::Continue;
            }
        };
        let sid = shared.sync.sid();
        let cookie = Cookie::parse(cookie.as_deref().unwrap_or_default());
        let rid = cookie.rid.clone();
        // A CSN of ours that this log has not reached is not a real one: start over.
        let since = cookie.ours(sid).filter(|c| *c <= ix.newest);
        let incremental = since.filter(|c| *c >= ix.horizon);
        let want = Wanted::new(&s.attrs, me.replicator && conn.is_tls());
        let base = s.base.trim().to_string();
        let view = View { session: self, filter: &compiled, base: &base, scope: s.scope.clone() };
        let scope = match view.scope(&ix.tree) {
            Ok(Some(sc)) => sc,
            Ok(None) => {
                done(result(LdapResultCode::Success, ""), out);
                return Next::Continue;
            }
            Err(r) => {
                done(r, out);
                return Next::Continue;
            }
        };
        let tree = &ix.tree;
        let mut members: HashSet<[u8; 16]> = HashSet::new();
        // Changed since the cookie but not in this view (deleted, moved out of scope, no
        // longer matching): deletes for the consumer, sent before the adds so that an
        // entry deleted and made again under its old name arrives in that order.
        // Deleting what a consumer does not hold is harmless.
        let mut left: Vec<uuid::Uuid> = Vec::new();
        if let Some(c) = incremental {
            for (i, e) in tree.entries.iter().enumerate() {
                if ix.csns[i] > c && !view.matches(tree, &scope, i) {
                    left.push(uuid::Uuid::from_bytes(e.uuid));
                }
            }
            left.extend(ix.tombs.iter().filter(|t| t.csn > c).map(|t| uuid::Uuid::from_bytes(t.uuid)));
            if !left.is_empty() {
                let info = LdapIntermediateResponse::SyncInfoIdSet {
                    cookie: None,
                    refresh_deletes: true,
                    syncuuids: left.clone(),
                };
                encode(info_msg(id, info), out);
            }
        }
        let (mut sent, mut present) = (0usize, 0usize);
        for i in 0..tree.entries.len() {
            if !scope.contains(tree, i) {
                continue;
            }
            let e = &tree.entries[i];
            let csn = ix.csns[i];
            let m = view.matches(tree, &scope, i);
            if m {
                members.insert(e.uuid);
            }
            match incremental {
                Some(c) if csn > c && m => {
                    encode(entry_msg(id, &e.dn, want.attributes(e, csn), SyncStateValue::Add, e.uuid, None), out);
                    sent += 1;
                }
                Some(_) => {}
                None if !m => {}
                // An entry unchanged since an old cookie is only named present.
                None if since.is_some_and(|c| csn <= c) => {
                    encode(entry_msg(id, &e.dn, Vec::new(), SyncStateValue::Present, e.uuid, None), out);
                    present += 1;
                }
                None => {
                    encode(entry_msg(id, &e.dn, want.attributes(e, csn), SyncStateValue::Add, e.uuid, None), out);
                    sent += 1;
                }
            }
            if out.len() >= FLUSH_AT {
                if conn.send(out).await.is_err() {
                    return Next::Close;
                }
                out.clear();
            }
        }
        let cookie_now = Cookie::make(rid.as_deref(), ix.newest);
        let deletes = incremental.is_some();
        let how = match incremental {
            Some(_) => "since its cookie",
            None if since.is_some() => "present phase: its cookie is older than the change log",
            None => "full",
        };
        let refresh = format!("{sent} entries, {present} present, {} deleted ({how})", left.len());
        tracing::info!("ldap: sync refresh for {} from {}: {refresh}", me.login, conn.peer);
        let persist = matches!(mode, SyncRequestMode::RefreshAndPersist);
        let state = if persist { "connected" } else { "refreshed" };
        let peer = conn.peer;
        let key = format!(
            "consumer.{}.{}",
            me.login,
            rid.as_ref().map_or_else(|| peer.ip().to_string(), |r| format!("rid{r}"))
        );
        let consumer = Consumer { key, peer, persist, refresh };
        consumer.note(&shared, ix.newest, state).await;
        if !persist {
            let ctrl = LdapControl::SyncDone { cookie: Some(cookie_now), refresh_deletes: deletes };
            encode(
                LdapMsg::new_with_ctrls(id, LdapOp::SearchResultDone(result(LdapResultCode::Success, "")), vec![ctrl]),
                out,
            );
            return Next::Continue;
        }
        let info = if deletes {
            LdapIntermediateResponse::SyncInfoRefreshDelete { cookie: Some(cookie_now), done: true }
        } else {
            LdapIntermediateResponse::SyncInfoRefreshPresent { cookie: Some(cookie_now), done: true }
        };
        encode(info_msg(id, info), out);
        if conn.send(out).await.is_err() {
            return Next::Close;
        }
        out.clear();
        let (next, reached) = self
            .persist(
                id,
                &(base.clone(), s.scope.clone()),
                &compiled,
                &want,
                rid.as_deref(),
                ix,
                members,
                &consumer,
                conn,
                out,
            )
            .await;
        consumer.note(&shared, reached, "disconnected").await;
        next
    }

    /// The persist phase: changes pushed as they are logged; ends with Abandon, Cancel,
    /// Unbind, a closed connection or shutdown.
    #[allow(clippy::too_many_arguments)]
    async fn persist(
        &mut self,
        id: i32,
        (base, scope_kind): &(String, LdapSearchScope),
        compiled: &Filter,
        want: &Wanted,
        rid: Option<&str>,
        mut last: Arc<SyncIndex>,
        mut members: HashSet<[u8; 16]>,
        consumer: &Consumer,
        conn: &mut Conn,
        out: &mut BytesMut,
    ) -> (Next, Csn) {
        let shared = Arc::clone(self.shared());
        let mut rx = shared.sync.current.subscribe();
        // An index published while the refresh was being sent is looked at at once.
        rx.mark_changed();
        let mut tick = tokio::time::interval(PERSIST_TICK);
        // A consumer gone without a word is found when a write to it fails.
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let stop = conn.shutdown_token();
        let mut noted = tokio::time::Instant::now();
        // A persistent search outlasts the session's idle timeout.
        conn.set_wait(Some(Duration::from_secs(366 * 86_400)));
        let next = loop {
            tokio::select! {
                r = conn.wait_input() => {
                    if r.is_err() {
                        break Next::Close;
                    }
                    let Some(frame) = read_message(conn, self.cfg().max_message).await else { break Next::Close };
                    let Some(msg) = crate::session::decode(&frame) else { break Next::Close };
                    match msg.op {
                        LdapOp::AbandonRequest(a) if a == id => break Next::Continue,
                        LdapOp::AbandonRequest(_) => {}
                        LdapOp::UnbindRequest => break Next::Close,
                        LdapOp::ExtendedRequest(x) if x.name == OID_CANCEL => {
                            let target = x.value.as_deref().and_then(cancel_target);
                            let code = if target == Some(id) { LdapResultCode::Success } else { LdapResultCode::Other };
                            if target == Some(id) {
                                encode(LdapMsg::new(id, LdapOp::SearchResultDone(result(LdapResultCode::Canceled, "sync search cancelled"))), out);
                            }
                            encode(LdapMsg::new(msg.msgid, LdapOp::ExtendedResponse(LdapExtendedResponse { res: result(code, if target == Some(id) { "" } else { "no such operation" }), name: None, value: None })), out);
                            if target == Some(id) {
                                break Next::Continue;
                            }
                        }
                        op => {
                            let r = result(LdapResultCode::Busy, "a persistent sync search holds this connection: use another one");
                            crate::session::respond_error(msg.msgid, &op, r, out);
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let cookie = Cookie::make(rid, last.newest);
                    let value = new_cookie_value(&cookie);
                    encode(info_msg(id, LdapIntermediateResponse::Raw { name: Some(OID_SYNC_INFO.into()), value: Some(value) }), out);
                }
                _ = tick.tick() => {
                    if let Err(e) = shared.synced().await {
                        tracing::warn!("ldap: sync search: {e}");
                    }
                    continue;
                }
                r = rx.changed() => {
                    if r.is_err() {
                        break Next::Close;
                    }
                    let Some(now) = rx.borrow_and_update().clone() else { continue };
                    if Arc::ptr_eq(&now, &last) || now.newest <= last.newest {
                        last = now;
                        continue;
                    }
                    let view = View { session: self, filter: compiled, base, scope: scope_kind.clone() };
                    let scope = match view.scope(&now.tree) {
                        Ok(Some(s)) => s,
                        Ok(None) => continue,
                        Err(r) => {
                            encode(LdapMsg::new(id, LdapOp::SearchResultDone(r)), out);
                            break Next::Continue;
                        }
                    };
                    push_changes(id, &view, &scope, want, rid, &last, &now, &mut members, out);
                    if tokio::time::Instant::now() >= noted + NOTE_EVERY {
                        consumer.note(&shared, now.newest, "connected").await;
                        noted = tokio::time::Instant::now();
                    }
                    last = now;
                }
                _ = stop.cancelled() => break Next::Close,
            }
            if !out.is_empty() {
                if conn.send(out).await.is_err() {
                    break Next::Close;
                }
                out.clear();
            }
        };
        conn.set_wait(None);
        (next, last.newest)
    }
}

/// The message id a Cancel request names (RFC 3909: `SEQUENCE { cancelID MessageID }`).
fn cancel_target(value: &[u8]) -> Option<i32> {
    let mut parser = ldap3_lber::parse::Parser::new(4);
    let (_, tag) = parser.parse(value).ok()?;
    let inner = tag.expect_constructed()?;
    let first = inner.into_iter().next()?;
    let bytes = first.expect_primitive()?;
    if bytes.len() > 4 {
        return None;
    }
    i32::try_from(crate::syncmsg::int(&bytes)?).ok()
}

/// Sends what changed between two indexes, oldest change first, each with its cookie.
#[allow(clippy::too_many_arguments)]
fn push_changes(
    id: i32,
    view: &View<'_>,
    scope: &Scope,
    want: &Wanted,
    rid: Option<&str>,
    last: &SyncIndex,
    now: &SyncIndex,
    members: &mut HashSet<[u8; 16]>,
    out: &mut BytesMut,
) {
    let since = last.newest;
    let tree = &now.tree;
    let mut msgs: Vec<(Csn, LdapMsg)> = Vec::new();
    for (i, e) in tree.entries.iter().enumerate() {
        let csn = now.csns[i];
        if csn <= since {
            continue;
        }
        let cookie = Some(Cookie::make(rid, csn));
        if view.matches(tree, scope, i) {
            let state = if members.insert(e.uuid) { SyncStateValue::Add } else { SyncStateValue::Modify };
            msgs.push((csn, entry_msg(id, &e.dn, want.attributes(e, csn), state, e.uuid, cookie)));
        } else if members.remove(&e.uuid) {
            msgs.push((csn, entry_msg(id, &e.dn, Vec::new(), SyncStateValue::Delete, e.uuid, cookie)));
        }
    }
    for t in now.tombs.iter().filter(|t| t.csn > since) {
        if members.remove(&t.uuid) {
            let cookie = Some(Cookie::make(rid, t.csn));
            msgs.push((t.csn, entry_msg(id, &t.dn, Vec::new(), SyncStateValue::Delete, t.uuid, cookie)));
        }
    }
    msgs.sort_by_key(|(c, _)| *c);
    let n = msgs.len();
    for (_, m) in msgs {
        encode(m, out);
    }
    if n == 0 {
        // Nothing in this search's view changed: the consumer's cookie still moves on.
        let cookie = Cookie::make(rid, now.newest);
        encode(
            info_msg(
                id,
                LdapIntermediateResponse::Raw {
                    name: Some(OID_SYNC_INFO.into()),
                    value: Some(new_cookie_value(&cookie)),
                },
            ),
            out,
        );
    }
}

/// `syncInfoValue` of the newcookie choice: `[0] syncCookie`, an implicitly tagged
/// OCTET STRING (primitive, context 0).
fn new_cookie_value(cookie: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80];
    let n = cookie.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(cookie);
    v
}

/// A consumer as `agora replication status` shows it.
struct Consumer {
    key: String,
    peer: std::net::SocketAddr,
    persist: bool,
    /// What its refresh sent.
    refresh: String,
}

impl Consumer {
    async fn note(&self, shared: &Shared, csn: Csn, state: &str) {
        let value = format!(
            "{}\t{}\t{}\t{}\t{state}\t{}",
            self.peer,
            if self.persist { "refreshAndPersist" } else { "refreshOnly" },
            csn.text(),
            agora_store::now(),
            self.refresh,
        );
        if let Err(e) = shared.store.set_sync_value(&self.key, Some(value)).await {
            tracing::warn!("replication: noting consumer {}: {e}", self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csns_round_trip_and_order() {
        let c = Csn::parse("20261203063558.123456Z#000001#00a#000000").unwrap();
        assert_eq!(c.sid, 10);
        assert_eq!(c.count, 1);
        assert_eq!(c.text(), "20261203063558.123456Z#000001#00a#000000");
        let d = Csn::next(Some(c), 10);
        assert!(d > c);
        assert!(d.text() > c.text(), "text order is CSN order");
        for bad in [
            "",
            "2026",
            "20261203063558.123456Z#000001#00a#00000g",
            "20261303063558.123456Z#000001#00a#000000",
            "2026120306355+.123456Z#000001#00a#000000",
            "20261203063558.123456Z#+00001#00a#000000",
        ] {
            assert!(Csn::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn csns_increase_when_the_clock_does_not() {
        let future = Csn { micros: now_micros() + 10_000_000, count: 0xff_ffff, sid: 0 };
        let n = Csn::next(Some(future), 0);
        assert!(n > future);
        let m = Csn::next(Some(n), 0);
        assert!(m > n);
    }

    #[test]
    fn cookies_of_openldap_and_garbage() {
        let c = Cookie::parse(
            b"rid=001,sid=002,csn=20261203063558.123456Z#000000#002#000000;20261203063558.123456Z#000000#001#000000",
        );
        assert_eq!(c.rid.as_deref(), Some("001"));
        assert_eq!(c.csns.len(), 2);
        assert_eq!(c.ours(1).unwrap().sid, 1);
        assert!(c.ours(3).is_none());
        assert_eq!(Cookie::parse(b"rid=123"), Cookie { rid: Some("123".into()), csns: vec![] });
        for junk in [&b"\xff\xfe"[..], b"csn=nonsense", b"rid=12345", &[b'a'; 5000][..]] {
            assert!(Cookie::parse(junk).csns.is_empty());
        }
        let made = Cookie::make(Some("007"), Csn { micros: 1_700_000_000_000_000, count: 3, sid: 1 });
        let back = Cookie::parse(&made);
        assert_eq!(back.rid.as_deref(), Some("007"));
        assert_eq!(back.ours(1).map(|c| c.count), Some(3));
    }

    #[test]
    fn scram_values_travel_as_auth_password() {
        let v = scram_auth_password("4096:c2FsdA==:c3RvcmVk:c2VydmVy").unwrap();
        assert_eq!(v, "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy");
        assert_eq!(scram_from_auth_password(&v).as_deref(), Some("4096:c2FsdA==:c3RvcmVk:c2VydmVy"));
        assert!(scram_auth_password("").is_none());
        assert!(scram_from_auth_password("{SSHA}x").is_none());
    }

    #[test]
    fn cancel_names_its_operation() {
        assert_eq!(cancel_target(&[0x30, 0x03, 0x02, 0x01, 0x05]), Some(5));
        assert_eq!(cancel_target(&[0x30, 0x04, 0x02, 0x02, 0x01, 0x00]), Some(256));
        assert_eq!(cancel_target(&[0x30, 0x00]), None);
        assert_eq!(cancel_target(b"junk"), None);
    }

    #[test]
    fn new_cookie_is_a_primitive_context_tag() {
        assert_eq!(new_cookie_value(b"ab"), vec![0x80, 2, b'a', b'b']);
        assert_eq!(new_cookie_value(&[0u8; 200])[..3], [0x80, 0x81, 200]);
    }
}
