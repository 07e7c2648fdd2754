//! The consumer's side of replication (RFC 4533): this server's directory kept as a
//! read-only copy of a provider's (another Agora, or OpenLDAP with syncprov). One
//! refreshAndPersist sync search per naming context, its entries applied to the store
//! as replication writes, each cookie kept in the store once what it covers is
//! applied, reconnection with doubling delays.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_store::{AccountUpdate, AddressEntry, Contact, NewAccount, Role, Store, StoreError};
use bytes::BytesMut;
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::syncmsg::{Message, State, SyncEntry, SyncInfo};
use crate::write::{Kind, Target};

/// Largest message accepted from a provider (entries carry photos and certificates).
const MAX_FRAME: usize = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an answer to StartTLS, a bind or the root DSE.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A session that lasted this long was healthy: the next failure starts the delays over.
const HEALTHY: Duration = Duration::from_secs(60);
/// Silence after which the link to the provider is probed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// The result code a provider sends when the consumer must start over (RFC 4533 §3.4).
const REFRESH_REQUIRED: u32 = 4096;

/// `[replication] provider = …` and how to reach it.
pub struct ReplicaConfig {
    pub provider: String,
    pub host: String,
    pub port: u16,
    pub implicit_tls: bool,
    pub starttls: bool,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    pub bind_dn: String,
    pub password: String,
    /// Naming contexts to copy (empty: every one the provider lists).
    pub bases: Vec<String>,
    /// Only these domains' naming contexts (empty: all).
    pub domains: Vec<String>,
    pub retry_max: Duration,
}

/// `ldap://host[:port]` or `ldaps://host[:port]`: (host, port, implicit TLS).
pub fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (implicit, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (false, r)
    } else {
        return Err(format!("{url}: the provider is an ldap:// or ldaps:// URL"));
    };
    let hostport = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
        None if implicit => 636,
        None => 389,
    };
    Ok((host, port, implicit))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn read_frame<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.map_err(|e| format!("reading from the provider: {e}"))?;
    if head[0] != 0x30 {
        return Err("the provider sent something that is not an LDAP message".into());
    }
    let mut frame = head.to_vec();
    let len = if head[1] < 0x80 {
        head[1] as usize
    } else {
        let n = (head[1] & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err("the provider sent an indefinite or oversized length".into());
        }
        let mut l = vec![0u8; n];
        s.read_exact(&mut l).await.map_err(|e| format!("reading from the provider: {e}"))?;
        frame.extend_from_slice(&l);
        l.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
    };
    if len > MAX_FRAME {
        return Err(format!("the provider sent a message of {len} bytes"));
    }
    let start = frame.len();
    frame.resize(start + len, 0);
    s.read_exact(&mut frame[start..]).await.map_err(|e| format!("reading from the provider: {e}"))?;
    Ok(frame)
}

async fn write_msg<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, msg: LdapMsg) -> Result<(), String> {
    let mut out = BytesMut::new();
    crate::session::encode(msg, &mut out);
    s.write_all(&out).await.map_err(|e| format!("writing to the provider: {e}"))?;
    s.flush().await.map_err(|e| format!("writing to the provider: {e}"))
}

/// Sends a request and waits for its result: (code, message).
async fn request<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    id: i32,
    op: LdapOp,
) -> Result<(u32, String), String> {
    write_msg(s, LdapMsg::new(id, op)).await?;
    loop {
        let frame = read_frame(s).await?;
        match crate::syncmsg::decode(&frame) {
            Some((got, Message::Result { code, message, .. })) if got == id => return Ok((code, message)),
            Some(_) => {}
            None => return Err("the provider sent a malformed message".into()),
        }
    }
}

async fn connect(cfg: &ReplicaConfig) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)))
        .await
        .map_err(|_| format!("connecting to {}: timed out", cfg.provider))?
        .map_err(|e| format!("connecting to {}: {e}", cfg.provider))?;
    let _ = tcp.set_nodelay(true);
    // A persist search is silent while nothing changes: keepalives find a link that died
    // without a word (a cut, not a close), so the consumer reconnects instead of waiting.
    let keepalive =
        socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(Duration::from_secs(10)).with_retries(3);
    if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!("replication: TCP keepalive: {e}");
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&cfg.tls));
    let tls = |tcp| connector.connect(cfg.server_name.clone(), tcp);
    let mut io: Box<dyn Io> = if cfg.implicit_tls {
        let handshake = tokio::time::timeout(STEP_TIMEOUT, tls(tcp))
            .await
            .map_err(|_| format!("TLS with {}: timed out", cfg.provider))?;
        Box::new(handshake.map_err(|e| format!("TLS with {}: {e}", cfg.provider))?)
    } else if cfg.starttls {
        let mut tcp = tcp;
        let op =
            LdapOp::ExtendedRequest(LdapExtendedRequest { name: crate::session::OID_STARTTLS.into(), value: None });
        let (code, message) = request(&mut tcp, 1, op).await?;
        if code != 0 {
            return Err(format!("{} refused StartTLS ({code}): {message}", cfg.provider));
        }
        let handshake = tokio::time::timeout(STEP_TIMEOUT, tls(tcp))
            .await
            .map_err(|_| format!("TLS with {}: timed out", cfg.provider))?;
        Box::new(handshake.map_err(|e| format!("TLS with {}: {e}", cfg.provider))?)
    } else {
        Box::new(tcp)
    };
    let bind = LdapOp::BindRequest(LdapBindRequest {
        version: 3,
        dn: cfg.bind_dn.clone(),
        cred: LdapBindCred::Simple(cfg.password.clone()),
    });
    let (code, message) = request(&mut io, 2, bind).await?;
    if code != 0 {
        return Err(format!("{} refused the bind as {} ({code}): {message}", cfg.provider, cfg.bind_dn));
    }
    Ok(io)
}

/// The naming contexts to copy: configured, or those the provider lists.
async fn bases(cfg: &ReplicaConfig) -> Result<Vec<String>, String> {
    tokio::time::timeout(STEP_TIMEOUT * 2, bases_untimed(cfg))
        .await
        .map_err(|_| format!("{} did not list its naming contexts in time", cfg.provider))?
}

async fn bases_untimed(cfg: &ReplicaConfig) -> Result<Vec<String>, String> {
    let mut list = cfg.bases.clone();
    if list.is_empty() {
        let mut io = connect(cfg).await?;
        let search = LdapOp::SearchRequest(LdapSearchRequest {
            base: String::new(),
            scope: LdapSearchScope::Base,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: LdapFilter::Present("objectClass".into()),
            attrs: vec!["namingContexts".into()],
        });
        write_msg(&mut io, LdapMsg::new(3, search)).await?;
        loop {
            let frame = read_frame(&mut io).await?;
            match crate::syncmsg::decode(&frame) {
                Some((3, Message::Entry(_))) => {
                    // The root DSE carries no Sync State control: read it as an entry.
                    if let Some(LdapOp::SearchResultEntry(e)) = crate::session::decode(&frame).map(|m| m.op) {
                        for a in e.attributes.into_iter().filter(|a| a.atype.eq_ignore_ascii_case("namingContexts")) {
                            list.extend(a.vals.into_iter().filter_map(|v| String::from_utf8(v).ok()));
                        }
                    }
                }
                Some((3, Message::Done { .. })) => break,
                Some(_) => {}
                None => return Err("the provider sent a malformed message".into()),
            }
        }
    }
    if !cfg.domains.is_empty() {
        list.retain(|b| domain_of_base(b).is_some_and(|d| cfg.domains.iter().any(|w| w.eq_ignore_ascii_case(&d))));
    }
    Ok(list)
}

/// The domain a `dc=` naming context stands for.
fn domain_of_base(base: &str) -> Option<String> {
    crate::write::domain_of(&crate::dn::Dn::parse(base).ok()?, 0)
}

/// Makes exactly `domains` the read-only ones, copied from `provider` (none: clears).
pub async fn mark_domains(store: &Arc<dyn Store>, domains: &[String], provider: &str) {
    let result = async {
        for (key, _) in store.sync_values("replica.domain.").await? {
            if !domains.iter().any(|d| key == format!("replica.domain.{d}")) {
                store.set_sync_value(&key, None).await?;
            }
        }
        for d in domains {
            store.set_sync_value(&format!("replica.domain.{d}"), Some(provider.to_string())).await?;
        }
        Ok::<(), StoreError>(())
    };
    if let Err(e) = result.await {
        tracing::error!("replication: marking the copied domains: {e}");
    }
}

fn note_key(base: &str) -> String {
    format!("replica.{}", crate::dn::normalize(base).unwrap_or_else(|| base.to_ascii_lowercase()))
}

fn cookie_key(base: &str) -> String {
    format!("replica-cookie.{}", crate::dn::normalize(base).unwrap_or_else(|| base.to_ascii_lowercase()))
}

/// Keeps this server's directory a copy of the provider's until shutdown.
pub async fn run(cfg: Arc<ReplicaConfig>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    // Cookies are the provider's CSNs: another provider starts from nothing.
    let before = stored_cookie(&store, "replica.provider").await.ok().flatten();
    if before.as_deref().is_some_and(|p| p != cfg.provider) {
        for (key, _) in store.sync_values("replica-cookie.").await.unwrap_or_default() {
            let _ = store.set_sync_value(&key, None).await;
        }
        tracing::info!("replication: the provider is now {}: copying afresh", cfg.provider);
    }
    if let Err(e) = store.set_sync_value("replica.provider", Some(cfg.provider.clone())).await {
        tracing::error!("replication: marking this directory a replica: {e}");
    }
    let mut delay = Duration::from_secs(1);
    let list = loop {
        match bases(&cfg).await {
            Ok(l) if !l.is_empty() => break l,
            Ok(_) => tracing::warn!("replication: {} lists no naming context to copy", cfg.provider),
            Err(e) => tracing::warn!("replication: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(cfg.retry_max);
    };
    tracing::info!("replication: copying {} from {}", list.join("; "), cfg.provider);
    // The domains copied are read-only here (the store refuses other writers); the
    // rest stay this server's own.
    let copied: Vec<String> = list.iter().filter_map(|b| domain_of_base(b)).collect();
    mark_domains(&store, &copied, &cfg.provider).await;
    let tasks: Vec<_> = list
        .into_iter()
        .map(|base| tokio::spawn(follow(Arc::clone(&cfg), Arc::clone(&store), base, shutdown.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One naming context, followed for good: sessions, and delays between them.
async fn follow(cfg: Arc<ReplicaConfig>, store: Arc<dyn Store>, base: String, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            r = agora_store::as_replication(session(&cfg, &store, &base)) => r,
            _ = shutdown.cancelled() => return,
        };
        let why = match outcome {
            Ok(()) => "the provider ended the search".to_string(),
            Err(e) => e,
        };
        tracing::warn!("replication: {base} from {}: {why}; trying again", cfg.provider);
        note(&store, &cfg, &base, "disconnected", &why).await;
        if started.elapsed() > HEALTHY {
            delay = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(cfg.retry_max);
    }
}

async fn note(store: &Arc<dyn Store>, cfg: &ReplicaConfig, base: &str, state: &str, detail: &str) {
    let cookie = stored_cookie(store, &cookie_key(base)).await.ok().flatten().unwrap_or_default();
    let value = format!("{}\t{state}\t{}\t{}\t{}", cfg.provider, cookie, agora_store::now(), detail.replace('\t', " "));
    let _ = store.set_sync_value(&note_key(base), Some(value)).await;
}

/// One connection: bind, the sync search, its refresh and then its changes as they come.
async fn session(cfg: &ReplicaConfig, store: &Arc<dyn Store>, base: &str) -> Result<(), String> {
    let domain = domain_of_base(base).ok_or_else(|| format!("{base} is not a dc= naming context"))?;
    let mut io = connect(cfg).await?;
    let cookie_key = cookie_key(base);
    let cookie = stored_cookie(store, &cookie_key).await.map_err(|e| e.to_string())?;
    let search = LdapOp::SearchRequest(LdapSearchRequest {
        base: base.to_string(),
        scope: LdapSearchScope::Subtree,
        aliases: LdapDerefAliases::Never,
        sizelimit: 0,
        timelimit: 0,
        typesonly: false,
        filter: LdapFilter::Present("objectClass".into()),
        attrs: ["*", "+", "userPassword", "authPassword"].map(String::from).to_vec(),
    });
    let ctrl = LdapControl::SyncRequest {
        criticality: true,
        mode: SyncRequestMode::RefreshAndPersist,
        cookie: cookie.clone().map(String::into_bytes),
        reload_hint: false,
    };
    let id = 4;
    write_msg(&mut io, LdapMsg::new_with_ctrls(id, search, vec![ctrl])).await?;
    let mut copy = Copy::load(Arc::clone(store), &domain, base).await.map_err(|e| e.to_string())?;
    tracing::info!(
        "replication: {base} from {}: {}",
        cfg.provider,
        if cookie.is_some() { "catching up from its cookie" } else { "first copy" }
    );
    note(store, cfg, base, "refreshing", "").await;
    let full = cookie.is_none();
    // The entries a present phase named, until its end says to delete the rest.
    let mut present: HashSet<[u8; 16]> = HashSet::new();
    let mut applied = 0usize;
    loop {
        let frame = read_frame(&mut io).await?;
        let Some((got, msg)) = crate::syncmsg::decode(&frame) else {
            return Err("the provider sent a malformed message".into());
        };
        if got != id && got != 0 {
            continue;
        }
        match msg {
            Message::Entry(None) => tracing::warn!("replication: an entry without a Sync State control; skipped"),
            Message::Entry(Some(e)) => {
                present.insert(e.uuid);
                let cookie = e.cookie.clone();
                match e.state {
                    State::Present => {}
                    State::Add | State::Modify => {
                        copy.apply(&e).await;
                        applied += 1;
                    }
                    State::Delete => {
                        present.remove(&e.uuid);
                        copy.delete(&e.uuid).await;
                        applied += 1;
                    }
                }
                copy.failure()?;
                if let Some(c) = cookie {
                    save_cookie(store, &cookie_key, c).await?;
                }
            }
            Message::Info(info) => {
                let (cookie, ended) = match info {
                    SyncInfo::NewCookie(c) => (Some(c), None),
                    SyncInfo::RefreshDelete { cookie, .. } if full => {
                        // A first copy (no cookie) is the whole directory, whatever the
                        // phase is called (slapd calls it a delete phase): what this
                        // server held besides is not the provider's.
                        let gone = if present.is_empty() { 0 } else { copy.delete_absent(&present).await };
                        present.clear();
                        (cookie, Some(format!("refreshed in full: {applied} changes, {gone} gone")))
                    }
                    SyncInfo::RefreshDelete { cookie, .. } => {
                        present.clear();
                        (cookie, Some(format!("refreshed: {applied} changes")))
                    }
                    SyncInfo::RefreshPresent { cookie, .. } => {
                        // What the present phase did not name is gone from the provider. A
                        // real one names at least the naming context itself.
                        let gone = if present.is_empty() { 0 } else { copy.delete_absent(&present).await };
                        present.clear();
                        (cookie, Some(format!("refreshed: {applied} changes, {gone} gone")))
                    }
                    SyncInfo::IdSet { cookie, refresh_deletes, uuids } => {
                        for u in uuids {
                            if refresh_deletes {
                                copy.delete(&u).await;
                                applied += 1;
                            } else {
                                present.insert(u);
                            }
                        }
                        copy.failure()?;
                        (cookie, None)
                    }
                };
                copy.failure()?;
                if let Some(c) = cookie {
                    save_cookie(store, &cookie_key, c).await?;
                }
                if let Some(detail) = ended {
                    note(store, cfg, base, "following", &detail).await;
                }
            }
            Message::Done { code: 0, cookie, .. } => {
                if let Some(c) = cookie {
                    save_cookie(store, &cookie_key, c).await?;
                }
                return Ok(());
            }
            Message::Done { code: REFRESH_REQUIRED, .. } => {
                let _ = store.set_sync_value(&cookie_key, None).await;
                return Err("the provider asks for a full refresh".into());
            }
            Message::Done { code, message, .. } => {
                return Err(format!("the provider ended the search ({code}): {message}"));
            }
            Message::Result { .. } | Message::Other(_) => {}
        }
    }
}

/// The cookie kept under exactly `key` (the store lists by prefix).
async fn stored_cookie(store: &Arc<dyn Store>, key: &str) -> Result<Option<String>, StoreError> {
    Ok(store.sync_values(key).await?.into_iter().find(|(k, _)| k == key).map(|(_, c)| c))
}

/// Keeps a cookie once what it covers is applied.
async fn save_cookie(store: &Arc<dyn Store>, key: &str, c: Vec<u8>) -> Result<(), String> {
    let text = String::from_utf8(c).map_err(|_| "the provider sent a cookie that is not text".to_string())?;
    store.set_sync_value(key, Some(text)).await.map_err(|e| e.to_string())
}

/// What this server holds of one domain, by entryUUID.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Person(String),
    Group(String),
    Contact(String),
}

struct Copy {
    store: Arc<dyn Store>,
    domain: String,
    base_ndn: String,
    by_uuid: HashMap<[u8; 16], Local>,
    /// A write that failed for a reason other than the entry itself: the session ends
    /// before the cookie covering it is kept, and the next one tries again.
    failed: Option<String>,
}

impl Copy {
    async fn load(store: Arc<dyn Store>, domain: &str, base: &str) -> Result<Copy, StoreError> {
        let mut by_uuid = HashMap::new();
        for a in store.accounts(Some(domain)).await? {
            by_uuid.insert(a.uuid, Local::Person(a.login));
        }
        let suffix = format!("@{domain}");
        for g in store.groups().await?.into_iter().filter(|g| g.address.ends_with(&suffix)) {
            by_uuid.insert(g.uuid, Local::Group(g.address));
        }
        for c in store.contacts(Some(domain)).await? {
            by_uuid.insert(c.uuid, Local::Contact(c.address));
        }
        let base_ndn = crate::dn::normalize(base).unwrap_or_default();
        Ok(Copy { store, domain: domain.to_string(), base_ndn, by_uuid, failed: None })
    }

    /// Logs a write the entry itself made fail (one entry refused must not stop the
    /// rest); any other failure ends the session.
    fn check(&mut self, what: &str, r: Result<(), StoreError>) {
        match r {
            Ok(()) | Err(StoreError::Exists(_)) => {}
            Err(e @ (StoreError::NotFound(_) | StoreError::Invalid(_))) => {
                tracing::warn!("replication: {what}: {e}")
            }
            Err(e) => {
                self.failed.get_or_insert(format!("{what}: {e}"));
            }
        }
    }

    /// The failure that ends the session, if any.
    fn failure(&mut self) -> Result<(), String> {
        self.failed.take().map_or(Ok(()), Err)
    }

    async fn ensure_domain(&mut self) {
        if matches!(self.store.domain(&self.domain).await, Ok(None)) {
            let r = self.store.add_domain(&self.domain).await.map(|_| ());
            self.check(&format!("adding domain {}", self.domain), r);
        }
    }

    async fn apply(&mut self, e: &SyncEntry) {
        let ndn = crate::dn::normalize(&e.dn).unwrap_or_default();
        if ndn == self.base_ndn {
            return self.ensure_domain().await;
        }
        if !crate::dn::is_within(&ndn, &self.base_ndn) {
            return tracing::warn!("replication: {} is outside {}; skipped", e.dn, self.base_ndn);
        }
        if crate::dn::normalize(&crate::tree::routing_dn(&self.domain)).is_some_and(|r| r == ndn) {
            return self.routing(e).await;
        }
        let Ok(target) = crate::write::parse_target(&e.dn) else {
            // Units and anything else this directory does not keep.
            return;
        };
        // Only this naming context's domain: a nested dc= context is another domain.
        let domain = match &target {
            Target::Person(a) | Target::Group(a) => a.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
            Target::Contact { domain, .. } => domain.clone(),
        };
        if domain != self.domain {
            return tracing::warn!("replication: {} is not in {}; skipped", e.dn, self.domain);
        }
        let (state, secret) = replicated_state(&target, &e.attrs);
        match target {
            Target::Person(login) => self.person(&login, state, secret, e.uuid).await,
            Target::Group(address) => self.group(&address, state, e.uuid).await,
            Target::Contact { address, domain } => self.contact(&address, &domain, state, e.uuid).await,
        }
    }

    async fn person(&mut self, login: &str, state: crate::write::State, secret: (String, String), uuid: [u8; 16]) {
        let store = Arc::clone(&self.store);
        // The same entry under a new name: a rename here too (mail stays with it).
        if let Some(Local::Person(old)) = self.by_uuid.get(&uuid).cloned()
            && old != login
        {
            let r = store.rename_account(&old, login).await;
            self.check(&format!("renaming {old} to {login}"), r);
        }
        let (hash, scram) = secret;
        match store.account_by_login(login).await {
            Ok(Some(a)) => {
                if a.display_name != state.display_name || a.profile != state.profile {
                    let update = AccountUpdate {
                        display_name: Some(state.display_name.clone()),
                        profile: Some(state.profile.clone()),
                        role: None,
                    };
                    let r = store.update_account(login, update).await;
                    self.check(&format!("updating {login}"), r);
                }
                let have: BTreeSet<String> = a.addresses.iter().cloned().collect();
                for gone in have.difference(&state.addresses) {
                    let r = store.remove_account_address(login, gone).await;
                    self.check(&format!("removing {gone} from {login}"), r);
                }
                for new in state.addresses.difference(&have) {
                    let r = store.add_account_address(login, new).await;
                    self.check(&format!("adding {new} to {login}"), r);
                }
                if !hash.is_empty() && (hash != a.password_hash || scram != a.scram) {
                    let r = store.set_password(login, &hash, &scram).await;
                    self.check(&format!("password of {login}"), r);
                }
                if a.uuid != uuid {
                    let r = store.set_directory_uuid(login, uuid).await;
                    self.check(&format!("identity of {login}"), r);
                }
            }
            Ok(None) => {
                self.ensure_domain().await;
                let new = NewAccount {
                    login: login.to_string(),
                    display_name: state.display_name.clone(),
                    password_hash: hash,
                    scram,
                    quota: 0,
                    role: Role::User,
                    profile: state.profile.clone(),
                    addresses: state.addresses.iter().cloned().collect(),
                };
                let r = store.create_account(new).await.map(|_| ());
                self.check(&format!("adding {login}"), r);
                let r = store.set_directory_uuid(login, uuid).await;
                self.check(&format!("identity of {login}"), r);
            }
            Err(e) => tracing::warn!("replication: reading {login}: {e}"),
        }
        self.claim(uuid, Local::Person(login.to_string()));
    }

    async fn group(&mut self, address: &str, state: crate::write::State, uuid: [u8; 16]) {
        let store = Arc::clone(&self.store);
        if let Some(Local::Group(old)) = self.by_uuid.get(&uuid).cloned()
            && old != address
        {
            // Groups are not renamed in place: the old one goes, the new one comes.
            let r = store.remove_group(&old).await;
            self.check(&format!("removing group {old}"), r);
        }
        let current = match store.lookup_address(address).await {
            Ok(AddressEntry::Group(g)) => Some(g),
            Ok(_) => None,
            Err(e) => return tracing::warn!("replication: reading {address}: {e}"),
        };
        let have: BTreeSet<String> = match &current {
            Some(g) => g.members.iter().cloned().collect(),
            None => {
                self.ensure_domain().await;
                let r = store.create_group(address, &state.display_name).await;
                self.check(&format!("adding group {address}"), r);
                BTreeSet::new()
            }
        };
        if current.as_ref().is_none_or(|g| g.display_name != state.display_name || g.profile != state.profile) {
            let r = store.update_group(address, Some(state.display_name.clone()), Some(state.profile.clone())).await;
            self.check(&format!("updating group {address}"), r);
        }
        let want: BTreeSet<String> =
            state.members.iter().filter_map(|m| crate::write::member_key_address(m).ok()).collect();
        for gone in have.difference(&want) {
            let r = store.remove_group_member(address, gone).await;
            self.check(&format!("removing {gone} from {address}"), r);
        }
        for new in want.difference(&have) {
            let r = store.add_group_member(address, new).await;
            self.check(&format!("adding {new} to {address}"), r);
        }
        if current.as_ref().is_none_or(|g| g.uuid != uuid) {
            let r = store.set_directory_uuid(address, uuid).await;
            self.check(&format!("identity of {address}"), r);
        }
        self.claim(uuid, Local::Group(address.to_string()));
    }

    async fn contact(&mut self, address: &str, domain: &str, state: crate::write::State, uuid: [u8; 16]) {
        let store = Arc::clone(&self.store);
        if let Some(Local::Contact(old)) = self.by_uuid.get(&uuid).cloned()
            && old != address
        {
            let r = store.remove_contact(&old).await;
            self.check(&format!("removing contact {old}"), r);
        }
        let existing = match store.contacts(Some(domain)).await {
            Ok(list) => list.into_iter().find(|c| c.address == address),
            Err(e) => return tracing::warn!("replication: reading contacts: {e}"),
        };
        match existing {
            Some(c) => {
                if c.display_name != state.display_name || c.profile != state.profile {
                    let r = store
                        .update_contact(address, Some(state.display_name.clone()), Some(state.profile.clone()))
                        .await;
                    self.check(&format!("updating contact {address}"), r);
                }
                if c.uuid != uuid {
                    let r = store.set_directory_uuid(address, uuid).await;
                    self.check(&format!("identity of {address}"), r);
                }
            }
            None => {
                self.ensure_domain().await;
                let c = Contact {
                    address: address.to_string(),
                    domain: domain.to_string(),
                    display_name: state.display_name.clone(),
                    profile: state.profile.clone(),
                    ..Contact::default()
                };
                let r = store.add_contact(c).await.map(|_| ());
                self.check(&format!("adding contact {address}"), r);
                let r = store.set_directory_uuid(address, uuid).await;
                self.check(&format!("identity of {address}"), r);
            }
        }
        self.claim(uuid, Local::Contact(address.to_string()));
    }

    /// The provider's routing table, merged into this server's (never replaced: this
    /// server's own observations of its connectors stay until newer ones arrive).
    async fn routing(&mut self, e: &SyncEntry) {
        let Some((_, values)) = e.attrs.iter().find(|(a, _)| a.eq_ignore_ascii_case("agoraRoutingTable")) else {
            return;
        };
        let Some(text) = values.first().and_then(|v| std::str::from_utf8(v).ok()) else {
            return tracing::warn!("replication: {}: the routing table is not text; skipped", e.dn);
        };
        let table = match agora_mail::routing::Table::decode(text) {
            Ok(t) => t,
            Err(err) => return tracing::warn!("replication: {}: {err}; skipped", e.dn),
        };
        if let Err(err) = agora_mail::routing::merge_stored(&self.store, &table).await {
            self.failed.get_or_insert(format!("merging the routing table: {err}"));
        }
    }

    /// The object is now known by the provider's identity, not by any it had here.
    fn claim(&mut self, uuid: [u8; 16], local: Local) {
        self.by_uuid.retain(|u, l| *u == uuid || *l != local);
        self.by_uuid.insert(uuid, local);
    }

    async fn delete(&mut self, uuid: &[u8; 16]) {
        let Some(local) = self.by_uuid.remove(uuid) else { return };
        let r = match &local {
            Local::Person(l) => self.store.remove_account(l).await,
            Local::Group(g) => self.store.remove_group(g).await,
            Local::Contact(c) => self.store.remove_contact(c).await,
        };
        self.check(
            &format!("removing {local:?}"),
            r.or_else(|e| if matches!(e, StoreError::NotFound(_)) { Ok(()) } else { Err(e) }),
        );
    }

    /// After a present phase: removes what the provider no longer has.
    async fn delete_absent(&mut self, present: &HashSet<[u8; 16]>) -> usize {
        let gone: Vec<[u8; 16]> = self.by_uuid.keys().filter(|u| !present.contains(*u)).copied().collect();
        for u in &gone {
            self.delete(u).await;
        }
        gone.len()
    }
}

/// A replicated entry as this directory keeps it: its state (attributes this server
/// does not keep are skipped) and its password hash and SCRAM verifier (empty: none).
fn replicated_state(target: &Target, attrs: &[(String, Vec<Vec<u8>>)]) -> (crate::write::State, (String, String)) {
    let mut state = target.blank();
    let (mut hash, mut scram) = (String::new(), String::new());
    let mut names = Vec::new();
    for (desc, values) in attrs {
        let Some(id) = crate::schema::attr(desc) else { continue };
        let name = crate::schema::attr_type(id).name;
        let text = |v: &Vec<u8>| String::from_utf8_lossy(v).trim().to_string();
        match name {
            "userPassword" => {
                if let Some(v) = values.first().map(text) {
                    // Agora's own argon2id hash travels as {ARGON2}; other schemes the
                    // directory checks (SSHA, SHA-crypt) are kept as they are.
                    let v = v.strip_prefix("{ARGON2}").map(str::to_string).unwrap_or(v);
                    if agora_directory::passwords::known(&v) {
                        hash = v;
                    }
                }
            }
            "authPassword" => {
                if let Some(s) = values.iter().map(text).find_map(|v| crate::sync::scram_from_auth_password(&v)) {
                    scram = s;
                }
            }
            "uid" => {}
            "mail" => {
                // The naming value; a person's other mail values are more addresses.
                if state.kind == Kind::Person {
                    for v in values.iter().map(text) {
                        if let Ok(a) = agora_directory::normalize_address(&v)
                            && a != state.primary
                        {
                            state.addresses.insert(a);
                        }
                    }
                }
            }
            "cn" | "displayName" => names.push((name, values.clone())),
            "member" => {
                let ok: Vec<Vec<u8>> = values
                    .iter()
                    .filter(|v| std::str::from_utf8(v).is_ok_and(|t| crate::write::parse_target(t).is_ok()))
                    .cloned()
                    .collect();
                let _ = state.set(id, ok);
            }
            "proxyAddresses" => {
                let extra = state.addresses.clone();
                if state.set(id, values.clone()).is_ok() {
                    state.addresses.extend(extra);
                } else {
                    state.addresses = extra;
                }
            }
            _ => {
                let _ = state.set(id, values.clone());
            }
        }
    }
    // displayName wins over cn; a person's several cn values give their first.
    names.sort_by_key(|(n, _)| *n == "displayName");
    for (name, values) in names {
        let Some(id) = crate::schema::attr(name) else { continue };
        let vals = if state.kind != Kind::Group { values.into_iter().take(1).collect() } else { values };
        let _ = state.set(id, vals);
    }
    if state.kind == Kind::Person && state.display_name.is_empty() {
        state.display_name = state.rdn.clone();
    }
    (state, (hash, scram))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls() {
        assert_eq!(parse_url("ldap://hub.example.org:379").unwrap(), ("hub.example.org".into(), 379, false));
        assert_eq!(parse_url("ldaps://hub.example.org").unwrap(), ("hub.example.org".into(), 636, true));
        assert_eq!(parse_url("ldap://[::1]:379/").unwrap(), ("::1".into(), 379, false));
        assert_eq!(parse_url("ldap://127.0.0.1").unwrap(), ("127.0.0.1".into(), 389, false));
        for bad in ["http://x", "ldap://", "ldap://h:port", "ldap://[::1"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bases_name_domains() {
        assert_eq!(domain_of_base("dc=Example,dc=org").as_deref(), Some("example.org"));
        assert_eq!(domain_of_base("ou=x,dc=example,dc=org"), None);
    }

    #[test]
    fn entries_become_people_with_their_secrets() {
        let t = crate::write::parse_target("uid=ann,ou=people,dc=example,dc=org").unwrap();
        let attrs = vec![
            ("objectClass".to_string(), vec![b"inetOrgPerson".to_vec()]),
            ("cn".to_string(), vec![b"Ann Lee".to_vec(), b"Annie".to_vec()]),
            ("sn".to_string(), vec![b"Lee".to_vec()]),
            ("mail".to_string(), vec![b"ann@example.org".to_vec(), b"a.lee@example.org".to_vec()]),
            ("proxyAddresses".to_string(), vec![b"SMTP:ann@example.org".to_vec(), b"smtp:al@example.org".to_vec()]),
            ("userPassword".to_string(), vec![b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_vec()]),
            ("authPassword".to_string(), vec![b"SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==".to_vec()]),
            ("objectGUID".to_string(), vec![vec![1; 16]]),
            ("entryCSN".to_string(), vec![b"x".to_vec()]),
        ];
        let (s, (hash, scram)) = replicated_state(&t, &attrs);
        assert_eq!(s.display_name, "Ann Lee");
        assert_eq!(s.profile.surname, "Lee");
        assert!(
            s.addresses.contains("a.lee@example.org") && s.addresses.contains("al@example.org"),
            "{:?}",
            s.addresses
        );
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert_eq!(scram, "4096:c2FsdA==:YQ==:Yg==");
        let (_, (hash, _)) = replicated_state(&t, &[("userPassword".to_string(), vec![b"plain text".to_vec()])]);
        assert!(hash.is_empty(), "a password in clear is not a hash to keep");
    }
}
