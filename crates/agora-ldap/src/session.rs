//! One LDAP connection: BER framing with limits, bind (simple, SASL), search with
//! controls, compare, the extended operations, and dispatch of writes. Operations of a
//! connection run one at a time, in order (RFC 4511 §3.1 allows it), so a client's
//! pipelined requests cost no more than one operation's memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use agora_directory::sasl::{Exchange, Mechanism, Step};
use agora_net::{Conn, Read};
use bytes::BytesMut;
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::*;

use crate::Shared;
use crate::filter::{self, Filter, FilterError, Truth};
use crate::schema::{self, AttrId};
use crate::tree::{Entry, Kind, Tree};

pub const OID_STARTTLS: &str = "1.3.6.1.4.1.1466.20037";
const OID_NOTICE: &str = "1.3.6.1.4.1.1466.20036";
pub const CTRL_PAGED: &str = "1.2.840.113556.1.4.319";
pub const CTRL_SORT: &str = "1.2.840.113556.1.4.473";
const CTRL_SORT_RESULT: &str = "1.2.840.113556.1.4.474";
pub const CTRL_MANAGE_DSA_IT: &str = "2.16.840.1.113730.3.4.2";
pub const CTRL_ASSERTION: &str = "1.3.6.1.1.12";

/// Longest a search may run, whatever the client asks.
const MAX_SEARCH_TIME: Duration = Duration::from_secs(60);
/// Paged searches kept open per connection.
const MAX_PAGED: usize = 8;

#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// This listener is the Global Catalog: every domain from the root, read-only.
    pub gc: bool,
    /// Simple binds and SASL PLAIN without TLS.
    pub allow_plaintext: bool,
    /// Anonymous clients may read the address book (not only the root DSE and schema).
    pub anonymous_read: bool,
    /// Attributes users may change on their own entry (besides userPassword).
    pub self_service: Vec<AttrId>,
    /// The Global Catalog's partial attribute set.
    pub gc_attributes: Vec<AttrId>,
    /// Largest request accepted, in bytes.
    pub max_message: usize,
    /// Most entries one search returns to a non-administrator (per page when paged).
    pub max_results: usize,
    /// The server's own mail domain: the default naming context.
    pub default_domain: String,
    pub hostname: String,
    pub tls_available: bool,
    /// Client certificates are checked against a CA: SASL EXTERNAL is offered.
    pub external: bool,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            gc: false,
            allow_plaintext: false,
            anonymous_read: false,
            self_service: ["telephoneNumber", "mobile", "jpegPhoto", "thumbnailPhoto"]
                .iter()
                .map(|a| schema::id(a))
                .collect(),
            gc_attributes: DEFAULT_GC_ATTRIBUTES.iter().map(|a| schema::id(a)).collect(),
            max_message: 2 * 1024 * 1024,
            max_results: 1000,
            default_domain: String::new(),
            hostname: String::new(),
            tls_available: false,
            external: false,
        }
    }
}

/// The address-book attributes the Global Catalog holds by default.
pub const DEFAULT_GC_ATTRIBUTES: &[&str] = &[
    "objectClass",
    "cn",
    "sn",
    "givenName",
    "initials",
    "displayName",
    "mail",
    "proxyAddresses",
    "uid",
    "userPrincipalName",
    "title",
    "department",
    "company",
    "physicalDeliveryOfficeName",
    "telephoneNumber",
    "mobile",
    "manager",
    "member",
    "memberOf",
    "msExchHideFromAddressLists",
    "objectGUID",
    "entryUUID",
    "whenCreated",
    "whenChanged",
    "dc",
    "o",
    "ou",
];

/// Who the connection is bound as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub login: String,
    pub admin: bool,
    /// May run sync searches and reads everything, like an administrator; writes nothing.
    pub replicator: bool,
    /// The account's naming context (its domain).
    pub domain: String,
}

/// What a search's base and scope span.
pub(crate) struct Scope {
    pub base: Option<usize>,
    pub base_ndn: String,
    pub ctx_limit: Option<usize>,
    pub scope: LdapSearchScope,
}

impl Scope {
    pub fn contains(&self, tree: &Tree, i: usize) -> bool {
        let e = &tree.entries[i];
        if self.ctx_limit.is_some_and(|c| c != e.ctx) {
            return false;
        }
        match (&self.scope, self.base) {
            (LdapSearchScope::Base, Some(b)) => i == b,
            (LdapSearchScope::Base, None) => false,
            (LdapSearchScope::OneLevel, Some(b)) => e.parent == Some(b),
            // From the root, one level down is each naming context.
            (LdapSearchScope::OneLevel, None) => e.kind == Kind::Context,
            (LdapSearchScope::Subtree, _) => crate::dn::is_within(&e.ndn, &self.base_ndn),
            (LdapSearchScope::Children, b) => crate::dn::is_within(&e.ndn, &self.base_ndn) && Some(i) != b,
        }
    }
}

/// A paged search in progress: the matching entries, fixed at its first page.
struct Paged {
    tree: Arc<Tree>,
    hits: Vec<u32>,
    next: usize,
    attrs: Vec<String>,
    types_only: bool,
}

pub struct Session {
    cfg: Arc<LdapConfig>,
    shared: Arc<Shared>,
    pub(crate) identity: Option<Identity>,
    sasl: Option<Exchange>,
    paged: HashMap<Vec<u8>, Paged>,
    peer: IpAddr,
}

/// What a result code answer carries.
pub(crate) fn result(code: LdapResultCode, message: &str) -> LdapResult {
    if !matches!(
        code,
        LdapResultCode::Success
            | LdapResultCode::CompareTrue
            | LdapResultCode::CompareFalse
            | LdapResultCode::SaslBindInProgress
            | LdapResultCode::Referral
    ) {
        metrics::counter!("agora_command_errors_total", "protocol" => "ldap").increment(1);
    }
    LdapResult { code, matcheddn: String::new(), message: message.to_string(), referral: Vec::new() }
}

pub(crate) fn encode(msg: LdapMsg, out: &mut BytesMut) {
    let tag: ldap3_lber::structure::StructureTag = msg.into();
    let _ = ldap3_lber::write::encode_into(out, tag);
}

/// The Notice of Disconnection (RFC 4511 §4.4.1) with `code`.
fn notice(code: LdapResultCode, message: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    let op = LdapOp::ExtendedResponse(LdapExtendedResponse {
        res: result(code, message),
        name: Some(OID_NOTICE.to_string()),
        value: None,
    });
    encode(LdapMsg::new(0, op), &mut out);
    out.to_vec()
}

/// The reply to a connection refused because the server is full.
pub fn busy_notice() -> &'static [u8] {
    static BUSY: OnceLock<Vec<u8>> = OnceLock::new();
    BUSY.get_or_init(|| notice(LdapResultCode::Busy, "too many connections, try again later"))
}

/// Why framing stopped.
enum Frame {
    Message(Vec<u8>),
    /// Not an LDAPMessage or too large: say so and close.
    Bad(&'static str),
    Closed,
    Timeout,
    Shutdown,
}

/// Reads one BER-framed LDAPMessage (definite lengths only, RFC 4511 §5.1).
async fn read_frame(conn: &mut Conn, max: usize) -> Frame {
    let stop = |r: Read| match r {
        Read::Timeout => Frame::Timeout,
        Read::Shutdown => Frame::Shutdown,
        _ => Frame::Closed,
    };
    let mut frame = Vec::new();
    if let Err(r) = conn.read_more(2, &mut frame).await {
        return stop(r);
    }
    if frame[0] != 0x30 {
        return Frame::Bad("not an LDAPMessage");
    }
    let len = if frame[1] < 0x80 {
        frame[1] as usize
    } else {
        let n = (frame[1] & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Frame::Bad("indefinite or oversized BER length");
        }
        if let Err(r) = conn.read_more(n, &mut frame).await {
            return stop(r);
        }
        frame[2..].iter().fold(0usize, |acc, x| (acc << 8) | *x as usize)
    };
    if len > max {
        return Frame::Bad("request too large");
    }
    match conn.read_more(len, &mut frame).await {
        Ok(()) => Frame::Message(frame),
        Err(r) => stop(r),
    }
}

/// The next framed message, or None when the connection is done with (a malformed or
/// oversized frame is answered with a Notice of Disconnection first).
pub(crate) async fn read_message(conn: &mut Conn, max: usize) -> Option<Vec<u8>> {
    match read_frame(conn, max).await {
        Frame::Message(f) => Some(f),
        Frame::Bad(why) => {
            let _ = conn.send(&notice(LdapResultCode::ProtocolError, why)).await;
            None
        }
        Frame::Shutdown => {
            let _ = conn.send(&notice(LdapResultCode::Unavailable, "server shutting down")).await;
            None
        }
        Frame::Timeout | Frame::Closed => None,
    }
}

/// Decodes one framed LDAPMessage; None if it is not one (protocolError).
pub fn decode(frame: &[u8]) -> Option<LdapMsg> {
    // Deeper than any filter compile() accepts, so too deep a filter gets its own error.
    let mut parser = ldap3_lber::parse::Parser::new(2 * filter::MAX_DEPTH + 16);
    let (rest, tag) = parser.parse(frame).ok()?;
    if !rest.is_empty() {
        return None;
    }
    LdapMsg::try_from(tag).ok()
}

impl Session {
    pub fn new(cfg: Arc<LdapConfig>, shared: Arc<Shared>) -> Session {
        Session {
            cfg,
            shared,
            identity: None,
            sasl: None,
            paged: HashMap::new(),
            peer: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    pub async fn run(mut self, mut conn: Conn) {
        self.peer = conn.peer.ip();
        // One response buffer for the connection's life.
        let mut out = BytesMut::new();
        let commands = metrics::counter!("agora_commands_total", "protocol" => "ldap");
        loop {
            let frame = match read_frame(&mut conn, self.cfg.max_message).await {
                Frame::Message(f) => f,
                Frame::Bad(why) => {
                    tracing::info!("ldap: {} sent a malformed request ({why}); disconnecting", conn.peer);
                    let _ = conn.send(&notice(LdapResultCode::ProtocolError, why)).await;
                    break;
                }
                Frame::Timeout => {
                    let _ = conn.send(&notice(LdapResultCode::Unavailable, "idle too long")).await;
                    break;
                }
                Frame::Shutdown => {
                    let _ = conn.send(&notice(LdapResultCode::Unavailable, "server shutting down")).await;
                    break;
                }
                Frame::Closed => break,
            };
            let Some(msg) = decode(&frame) else {
                let _ = conn.send(&notice(LdapResultCode::ProtocolError, "malformed LDAP message")).await;
                break;
            };
            out.clear();
            commands.increment(1);
            match self.handle(msg, &mut conn, &mut out).await {
                Next::Continue => {}
                Next::Close => {
                    let _ = conn.send(&out).await;
                    break;
                }
                Next::StartTls => {
                    if conn.send(&out).await.is_err() || conn.start_tls().await.is_err() {
                        break;
                    }
                    continue;
                }
            }
            if !out.is_empty() && conn.send(&out).await.is_err() {
                break;
            }
        }
        conn.close().await;
    }

    /// Handles one request, writing its responses to `out`.
    pub(crate) async fn handle(&mut self, msg: LdapMsg, conn: &mut Conn, out: &mut BytesMut) -> Next {
        let id = msg.msgid;
        // A critical control we do not implement fails the operation (RFC 4511 §4.1.11).
        let critical_unknown = msg.ctrl.iter().find_map(|c| match c {
            LdapControl::Unknown { oid, criticality: true, .. } if oid != CTRL_ASSERTION => Some(oid.clone()),
            LdapControl::SyncRequest { criticality: true, .. }
                if self.cfg.gc || !matches!(msg.op, LdapOp::SearchRequest(_)) =>
            {
                Some(crate::sync::CTRL_SYNC_REQUEST.into())
            }
            LdapControl::PasswordPolicyRequest { criticality: true }
            | LdapControl::SearchOptions { criticality: true, .. }
            | LdapControl::ShowDeleted { criticality: true }
            | LdapControl::SdFlags { criticality: true, .. }
            | LdapControl::ExtendedDn { criticality: true, .. } => Some("(unsupported control)".into()),
            _ => None,
        });
        let assertion = match assertion(&msg.ctrl) {
            Ok(a) => a,
            Err(()) => {
                respond_error(id, &msg.op, result(LdapResultCode::ProtocolError, "malformed assertion control"), out);
                return Next::Continue;
            }
        };
        if let Some(oid) = critical_unknown
            && !matches!(msg.op, LdapOp::UnbindRequest | LdapOp::AbandonRequest(_))
        {
            let r = result(LdapResultCode::UnavailableCriticalExtension, &format!("control {oid} is not supported"));
            respond_error(id, &msg.op, r, out);
            return Next::Continue;
        }
        // The SASL exchange ends with any request other than its next bind.
        if !matches!(msg.op, LdapOp::BindRequest(_)) {
            self.sasl = None;
        }
        match msg.op {
            LdapOp::BindRequest(b) => {
                let resp = self.bind(b, conn).await;
                encode(LdapMsg::new(id, LdapOp::BindResponse(resp)), out);
            }
            LdapOp::UnbindRequest => return Next::Close,
            LdapOp::SearchRequest(s) => match crate::sync::request(&msg.ctrl) {
                Some((mode, cookie)) => return self.sync_search(id, s, mode, cookie, conn, out).await,
                None => self.search(id, s, &msg.ctrl, assertion.as_ref(), out).await,
            },
            LdapOp::CompareRequest(c) => {
                let r = self.compare(c, assertion.as_ref()).await;
                encode(LdapMsg::new(id, LdapOp::CompareResult(r)), out);
            }
            LdapOp::AbandonRequest(_) => {
                // Operations run one at a time: nothing is in flight to abandon.
            }
            LdapOp::ExtendedRequest(x) => return self.extended(id, x, conn, out).await,
            op @ (LdapOp::AddRequest(_)
            | LdapOp::ModifyRequest(_)
            | LdapOp::DelRequest(_)
            | LdapOp::ModifyDNRequest(_)) => {
                let (r, kind) = crate::write::run(self, op, assertion.as_ref()).await;
                let op = match kind {
                    crate::write::Op::Add => LdapOp::AddResponse(r),
                    crate::write::Op::Modify => LdapOp::ModifyResponse(r),
                    crate::write::Op::Delete => LdapOp::DelResponse(r),
                    crate::write::Op::ModDn => LdapOp::ModifyDNResponse(r),
                };
                encode(LdapMsg::new(id, op), out);
            }
            _ => {
                encode(
                    LdapMsg::new(
                        0,
                        LdapOp::ExtendedResponse(LdapExtendedResponse {
                            res: result(LdapResultCode::ProtocolError, "not a request"),
                            name: Some(OID_NOTICE.into()),
                            value: None,
                        }),
                    ),
                    out,
                );
                return Next::Close;
            }
        }
        Next::Continue
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn cfg(&self) -> &LdapConfig {
        &self.cfg
    }

    async fn bind(&mut self, b: LdapBindRequest, conn: &mut Conn) -> LdapBindResponse {
        let plain = |code, msg: &str| LdapBindResponse { res: result(code, msg), saslcreds: None };
        // Any bind starts from anonymous (RFC 4513 §5.1: a failed bind leaves it so).
        self.identity = None;
        if b.version != 3 {
            self.sasl = None;
            return plain(LdapResultCode::ProtocolError, "only LDAP version 3 is supported");
        }
        let secure = conn.is_tls() || self.cfg.allow_plaintext;
        match b.cred {
            LdapBindCred::Simple(pw) => {
                self.sasl = None;
                if b.dn.is_empty() && pw.is_empty() {
                    return plain(LdapResultCode::Success, "");
                }
                if pw.is_empty() {
                    return plain(
                        LdapResultCode::UnwillingToPerform,
                        "unauthenticated bind (a name without a password) is refused",
                    );
                }
                if !secure {
                    return plain(
                        LdapResultCode::ConfidentialityRequired,
                        "use StartTLS or ldaps before sending a password",
                    );
                }
                let login = self.bind_login(&b.dn).await;
                let account = match &login {
                    Some(l) => self.shared.dir.authenticate(l, &pw).await.ok().flatten(),
                    // Unknown names cost the same time as wrong passwords.
                    None => self.shared.dir.authenticate("nobody@invalid.invalid", &pw).await.ok().flatten().and(None),
                };
                match account {
                    Some(acc) => {
                        self.logged_in(&acc, conn);
                        plain(LdapResultCode::Success, "")
                    }
                    None => {
                        let who = login.clone().unwrap_or_else(|| b.dn.clone());
                        agora_service::login::failed(&self.shared.throttle, self.peer, "ldap", Some(&who)).await;
                        plain(LdapResultCode::InvalidCredentials, "invalid credentials")
                    }
                }
            }
            LdapBindCred::SASL(s) if s.mechanism.eq_ignore_ascii_case("EXTERNAL") => {
                self.sasl = None;
                let Some(der) = conn.peer_certificate().map(<[u8]>::to_vec) else {
                    return plain(
                        LdapResultCode::InappropriateAuthentication,
                        "EXTERNAL needs a TLS connection with a client certificate",
                    );
                };
                let authz = String::from_utf8_lossy(&s.credentials).to_string();
                match self.certificate_account(&der, authz.trim()).await {
                    Some(acc) => {
                        self.logged_in(&acc, conn);
                        plain(LdapResultCode::Success, "")
                    }
                    None => {
                        agora_service::login::failed(&self.shared.throttle, self.peer, "ldap", None).await;
                        plain(
                            LdapResultCode::InvalidCredentials,
                            "the certificate names no account this identity may use",
                        )
                    }
                }
            }
            LdapBindCred::SASL(s) => {
                let mech = match Mechanism::parse(&s.mechanism) {
                    Some(m) if m != Mechanism::Login => m,
                    _ => {
                        self.sasl = None;
                        return plain(LdapResultCode::AuthMethodNotSupported, "supported: PLAIN, SCRAM-SHA-256");
                    }
                };
                if mech.sends_password() && !secure {
                    self.sasl = None;
                    return plain(
                        LdapResultCode::ConfidentialityRequired,
                        "use StartTLS or ldaps before sending a password",
                    );
                }
                let mut ex = match self.sasl.take() {
                    Some(ex) if ex.mechanism() == mech => ex,
                    _ => Exchange::new(mech),
                };
                let first = matches!(ex.mechanism(), Mechanism::ScramSha256) || !s.credentials.is_empty();
                let input = if first || !s.credentials.is_empty() { Some(s.credentials.as_slice()) } else { None };
                match ex.step(&self.shared.dir, input).await {
                    Step::Challenge(c) => {
                        self.sasl = Some(ex);
                        LdapBindResponse { res: result(LdapResultCode::SaslBindInProgress, ""), saslcreds: Some(c) }
                    }
                    Step::Success(acc) => {
                        self.logged_in(&acc, conn);
                        plain(LdapResultCode::Success, "")
                    }
                    Step::Failed { login } => {
                        agora_service::login::failed(&self.shared.throttle, self.peer, "ldap", login.as_deref()).await;
                        plain(LdapResultCode::InvalidCredentials, "invalid credentials")
                    }
                    Step::Malformed(why) => plain(LdapResultCode::ProtocolError, why),
                }
            }
            LdapBindCred::Unsupported => {
                self.sasl = None;
                plain(LdapResultCode::AuthMethodNotSupported, "use simple or SASL authentication")
            }
        }
    }

    fn logged_in(&mut self, acc: &agora_store::Account, conn: &mut Conn) {
        agora_service::login::succeeded(&self.shared.throttle, conn, "ldap", &acc.login);
        let domain = acc.login.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        self.identity = Some(Identity {
            login: acc.login.clone(),
            admin: acc.role == agora_store::Role::Admin,
            replicator: acc.role == agora_store::Role::Replicator,
            domain,
        });
    }

    /// The account a verified client certificate stands for: the first of its addresses
    /// that is an account's (login or extra address); an authorization identity, if
    /// given, must name that same account.
    async fn certificate_account(&self, der: &[u8], authz: &str) -> Option<agora_store::Account> {
        let mut found = None;
        for address in agora_net::tls::certificate_addresses(der) {
            if let Ok(agora_store::AddressEntry::Account(a)) = self.shared.store.lookup_address(&address).await {
                found = Some(a);
                break;
            }
        }
        let acc = found?;
        if authz.is_empty() {
            return Some(acc);
        }
        let wanted = authz.strip_prefix("u:").or_else(|| authz.strip_prefix("dn:")).unwrap_or(authz);
        let login = self.bind_login(wanted).await?;
        (login == acc.login).then_some(acc)
    }

    /// The login a bind name stands for: an address (as Active Directory accepts a user
    /// principal name) or the DN of a person.
    async fn bind_login(&self, name: &str) -> Option<String> {
        if name.contains('@') && !name.contains('=') {
            return agora_directory::normalize_address(name).ok();
        }
        let tree = self.shared.tree().await.ok()?;
        let i = tree.entry_by_dn(name)?;
        let e = &tree.entries[i];
        (e.kind == Kind::Person).then(|| e.address.clone())
    }

    /// The naming context a non-GC search is confined to for this identity.
    fn own_context(&self, tree: &Tree) -> Option<usize> {
        let d = &self.identity.as_ref()?.domain;
        tree.contexts.iter().position(|c| &c.domain == d)
    }

    /// May the bound identity see this entry at all?
    pub(crate) fn can_read(&self, tree: &Tree, e: &Entry) -> bool {
        match &self.identity {
            Some(id) if id.admin || id.replicator => true,
            Some(id) => {
                if e.hidden && e.address != id.login {
                    return false;
                }
                self.cfg.gc || Some(e.ctx) == self.own_context(tree)
            }
            None => self.cfg.anonymous_read && !e.hidden,
        }
    }

    /// May the bound identity read (and match on) this attribute?
    pub(crate) fn attr_visible(&self, id: AttrId) -> bool {
        if id == schema::known().user_password || id == schema::known().auth_password {
            return false;
        }
        !self.cfg.gc || self.cfg.gc_attributes.contains(&id) || schema::attr_type(id).operational
    }

    fn root_dse(&self, tree: &Tree) -> Vec<(String, Vec<Vec<u8>>)> {
        let s = |v: &str| v.as_bytes().to_vec();
        let mut mechs: Vec<Vec<u8>> = Vec::new();
        for m in [Mechanism::Plain, Mechanism::ScramSha256] {
            if !m.sends_password() || self.cfg.allow_plaintext || self.cfg.tls_available {
                mechs.push(s(m.name()));
            }
        }
        if self.cfg.external {
            mechs.push(s("EXTERNAL"));
        }
        let mut ext = vec![s(OID_WHOAMI), s(OID_PASSWORD_MODIFY)];
        if self.cfg.tls_available {
            ext.insert(0, s(OID_STARTTLS));
        }
        let default = tree
            .contexts
            .iter()
            .find(|c| c.domain == self.cfg.default_domain)
            .or(tree.contexts.first())
            .map(|c| c.dn.clone())
            .unwrap_or_default();
        let mut attrs = vec![
            ("objectClass".to_string(), vec![s("top")]),
            ("namingContexts".into(), tree.contexts.iter().map(|c| s(&c.dn)).collect()),
            ("defaultNamingContext".into(), vec![s(&default)]),
            ("subschemaSubentry".into(), vec![s(schema::SUBSCHEMA_DN)]),
            ("supportedLDAPVersion".into(), vec![s("3")]),
            (
                "supportedControl".into(),
                [CTRL_PAGED, CTRL_SORT, CTRL_MANAGE_DSA_IT, CTRL_ASSERTION, crate::sync::CTRL_SYNC_REQUEST]
                    .iter()
                    .filter(|c| !self.cfg.gc || **c != crate::sync::CTRL_SYNC_REQUEST)
                    .map(|c| s(c))
                    .collect(),
            ),
            ("supportedExtension".into(), ext),
            ("supportedFeatures".into(), vec![s("1.3.6.1.4.1.4203.1.5.1")]),
            ("supportedSASLMechanisms".into(), mechs),
            ("vendorName".into(), vec![s("Agora")]),
            ("vendorVersion".into(), vec![s(concat!("Agora ", env!("CARGO_PKG_VERSION")))]),
            ("dnsHostName".into(), vec![s(&self.cfg.hostname)]),
        ];
        if self.cfg.gc {
            attrs.push(("isGlobalCatalogReady".into(), vec![s("TRUE")]));
        }
        attrs.retain(|(_, v)| !v.is_empty() && v.iter().all(|x| !x.is_empty()));
        attrs
    }

    async fn search(
        &mut self,
        id: i32,
        s: LdapSearchRequest,
        ctrls: &[LdapControl],
        assertion: Option<&Filter>,
        out: &mut BytesMut,
    ) {
        let done = |r: LdapResult, ctrl: Vec<LdapControl>, out: &mut BytesMut| {
            if ctrl.is_empty() && r.referral.is_empty() {
                crate::ber::search_done(out, id, r.code as u8, &r.matcheddn, &r.message);
            } else {
                encode(LdapMsg::new_with_ctrls(id, LdapOp::SearchResultDone(r), ctrl), out)
            }
        };
        let tree = match self.shared.tree().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("ldap: reading the directory: {e}");
                return done(result(LdapResultCode::Unavailable, "the directory is unavailable"), Vec::new(), out);
            }
        };
        let compiled = match filter::compile(&s.filter) {
            Ok(f) => f,
            Err(FilterError::UnknownRule(r)) => {
                return done(
                    result(LdapResultCode::InappropriateMatching, &format!("unknown matching rule {r}")),
                    Vec::new(),
                    out,
                );
            }
            Err(_) => {
                return done(
                    result(LdapResultCode::AdminLimitExceeded, "filter too deep or too large"),
                    Vec::new(),
                    out,
                );
            }
        };
        let base = s.base.trim();
        // The root DSE and the schema: readable by anyone.
        if base.is_empty() && s.scope == LdapSearchScope::Base {
            let attrs = self.root_dse(&tree);
            let entry_ok = root_matches(&compiled, &attrs);
            if entry_ok && assertion.is_none_or(|a| root_matches(a, &attrs)) {
                let want = Selection::new(&s.attrs);
                let attrs = attrs
                    .into_iter()
                    // The root DSE's attributes are operational: listed by name or `+`.
                    .filter(|(n, _)| want.all_operational || want.named(n) || (want.all_user && n == "objectClass"))
                    .map(|(n, v)| LdapPartialAttribute { atype: n, vals: if s.typesonly { Vec::new() } else { v } })
                    .collect();
                encode(
                    LdapMsg::new(
                        id,
                        LdapOp::SearchResultEntry(LdapSearchResultEntry { dn: String::new(), attributes: attrs }),
                    ),
                    out,
                );
            }
            return done(result(LdapResultCode::Success, ""), Vec::new(), out);
        }
        let base_norm = crate::dn::normalize(base);
        if base_norm.as_deref() == Some("cn=subschema") {
            if s.scope == LdapSearchScope::Base {
                let want = Selection::new(&s.attrs);
                let values = schema::subschema_values();
                let pseudo: Vec<(String, Vec<Vec<u8>>)> = values
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.iter().map(|x| x.as_bytes().to_vec()).collect()))
                    .collect();
                if root_matches(&compiled, &pseudo) {
                    let attributes = values
                        .into_iter()
                        .filter(|(n, _)| {
                            let op = schema::attr(n).is_some_and(|i| schema::attr_type(i).operational);
                            want.named(n) || if op { want.all_operational } else { want.all_user }
                        })
                        .map(|(n, v)| LdapPartialAttribute {
                            atype: n.to_string(),
                            vals: if s.typesonly {
                                Vec::new()
                            } else {
                                v.into_iter().map(String::into_bytes).collect()
                            },
                        })
                        .collect();
                    encode(
                        LdapMsg::new(
                            id,
                            LdapOp::SearchResultEntry(LdapSearchResultEntry {
                                dn: schema::SUBSCHEMA_DN.into(),
                                attributes,
                            }),
                        ),
                        out,
                    );
                }
            }
            return done(result(LdapResultCode::Success, ""), Vec::new(), out);
        }
        if self.identity.is_none() && !self.cfg.anonymous_read {
            return done(
                result(
                    LdapResultCode::InsufficentAccessRights,
                    "bind first: anonymous clients read only the root DSE and the schema",
                ),
                Vec::new(),
                out,
            );
        }
        // Paging: a known cookie continues; size 0 abandons (RFC 2696 §3).
        let paged = ctrls.iter().find_map(|c| match c {
            LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
            _ => None,
        });
        if let Some((size, cookie)) = &paged
            && !cookie.is_empty()
        {
            let Some(mut p) = self.paged.remove(cookie) else {
                return done(
                    result(LdapResultCode::UnwillingToPerform, "unknown or expired paged-results cookie"),
                    Vec::new(),
                    out,
                );
            };
            if *size <= 0 {
                let c = LdapControl::SimplePagedResults { size: 0, cookie: Vec::new() };
                return done(result(LdapResultCode::Success, ""), vec![c], out);
            }
            let page = self.page_size(*size);
            let end = (p.next + page).min(p.hits.len());
            let want = Selection::new(&p.attrs);
            for &i in &p.hits[p.next..end] {
                self.send_entry(id, &p.tree.entries[i as usize], &want, p.types_only, out);
            }
            p.next = end;
            let total = p.hits.len() as i64;
            let next_cookie = if end < p.hits.len() { new_cookie() } else { Vec::new() };
            if !next_cookie.is_empty() {
                self.paged.insert(next_cookie.clone(), p);
            }
            let mut resp = vec![LdapControl::SimplePagedResults { size: total, cookie: next_cookie }];
            if ctrls.iter().any(|c| matches!(c, LdapControl::ServerSort { .. })) {
                // Sorted with the first page; every page says so (RFC 2891 §1.2).
                resp.push(sort_result(LdapResultCode::Success));
            }
            return done(result(LdapResultCode::Success, ""), resp, out);
        }
        let scope = match self.scope(&tree, base, s.scope.clone()) {
            Ok(Some(sc)) => sc,
            Ok(None) => return done(result(LdapResultCode::Success, ""), Vec::new(), out),
            Err(r) => return done(r, Vec::new(), out),
        };
        let base_idx = scope.base;
        let in_scope = |i: usize| scope.contains(&tree, i);
        let admin = self.identity.as_ref().is_some_and(|i| i.admin || i.replicator);
        let server_limit = if admin { usize::MAX } else { self.cfg.max_results };
        let client_limit = if s.sizelimit > 0 { s.sizelimit as usize } else { usize::MAX };
        let time_limit = if s.timelimit > 0 {
            Duration::from_secs(s.timelimit as u64).min(MAX_SEARCH_TIME)
        } else {
            MAX_SEARCH_TIME
        };
        let started = Instant::now();
        let visible = |a: AttrId| self.attr_visible(a);
        let candidates: Box<dyn Iterator<Item = usize>> = match (s.scope.clone(), base_idx) {
            (LdapSearchScope::Base, Some(b)) => Box::new(std::iter::once(b)),
            (LdapSearchScope::OneLevel, Some(b)) => Box::new(tree.children[b].iter().copied()),
            _ => match compiled.candidates(&tree) {
                Some(list) => Box::new(list.iter().map(|&i| i as usize)),
                None => Box::new(0..tree.entries.len()),
            },
        };
        let mut hits: Vec<u32> = Vec::new();
        let mut timed_out = false;
        for (n, i) in candidates.enumerate() {
            if n.is_multiple_of(1024) && started.elapsed() > time_limit {
                timed_out = true;
                break;
            }
            let e = &tree.entries[i];
            if !in_scope(i) || !self.can_read(&tree, e) {
                continue;
            }
            if compiled.eval(&tree, e, &visible) != Truth::True {
                continue;
            }
            if let Some(a) = assertion
                && a.eval(&tree, e, &visible) != Truth::True
            {
                continue;
            }
            hits.push(i as u32);
        }
        // An assertion on the base of a base search that fails is an error (RFC 4528).
        if let (Some(a), LdapSearchScope::Base, Some(b)) = (assertion, s.scope.clone(), base_idx)
            && a.eval(&tree, &tree.entries[b], &visible) != Truth::True
        {
            return done(
                result(LdapResultCode::AssertionFailed, "the assertion control's filter is not true"),
                Vec::new(),
                out,
            );
        }
        let mut resp_ctrls = Vec::new();
        if let Some(keys) = ctrls.iter().find_map(|c| match c {
            LdapControl::ServerSort { sort_requests } => Some(sort_requests),
            _ => None,
        }) {
            let code = sort(&tree, &mut hits, keys);
            resp_ctrls.push(sort_result(code));
        }
        let want = Selection::new(&s.attrs);
        if let Some((size, _)) = paged {
            let page = self.page_size(size);
            let total = hits.len();
            let end = page.min(total);
            for &i in &hits[..end] {
                self.send_entry(id, &tree.entries[i as usize], &want, s.typesonly, out);
            }
            let mut cookie = Vec::new();
            if end < total {
                if self.paged.len() >= MAX_PAGED {
                    // The oldest search a client forgot makes room.
                    if let Some(k) = self.paged.keys().next().cloned() {
                        self.paged.remove(&k);
                    }
                }
                cookie = new_cookie();
                self.paged.insert(
                    cookie.clone(),
                    Paged { tree: Arc::clone(&tree), hits, next: end, attrs: s.attrs.clone(), types_only: s.typesonly },
                );
            }
            resp_ctrls.push(LdapControl::SimplePagedResults { size: total as i64, cookie });
            return done(result(LdapResultCode::Success, ""), resp_ctrls, out);
        }
        let limit = client_limit.min(server_limit);
        for &i in hits.iter().take(limit) {
            self.send_entry(id, &tree.entries[i as usize], &want, s.typesonly, out);
        }
        let r = if timed_out {
            result(LdapResultCode::TimeLimitExceeded, "time limit exceeded")
        } else if hits.len() > limit {
            let why = if limit == server_limit {
                "more entries match than one search returns: use paged results"
            } else {
                "size limit exceeded"
            };
            result(
                if limit == server_limit {
                    LdapResultCode::AdminLimitExceeded
                } else {
                    LdapResultCode::SizeLimitExceeded
                },
                why,
            )
        } else {
            result(LdapResultCode::Success, "")
        };
        // RFC 4511: exceeding the client's own sizelimit is sizeLimitExceeded.
        let r = if hits.len() > limit && limit == client_limit {
            result(LdapResultCode::SizeLimitExceeded, "size limit exceeded")
        } else {
            r
        };
        done(r, resp_ctrls, out)
    }

    /// The base of a search and what its scope spans; None when nothing can match (a
    /// search from the root by an identity with no naming context).
    pub(crate) fn scope(&self, tree: &Tree, base: &str, scope: LdapSearchScope) -> Result<Option<Scope>, LdapResult> {
        let root = base.is_empty();
        let (base_idx, base_ctx) = if root {
            (None, None)
        } else {
            let Some(ndn) = crate::dn::normalize(base) else {
                return Err(result(LdapResultCode::InvalidDNSyntax, "invalid base DN"));
            };
            match tree.by_ndn.get(&ndn) {
                Some(&i) if self.can_read(tree, &tree.entries[i]) => (Some(i), Some(tree.entries[i].ctx)),
                _ => {
                    let mut r = result(LdapResultCode::NoSuchObject, "no such entry");
                    r.matcheddn = self.matched(tree, &ndn);
                    return Err(r);
                }
            }
        };
        // On the directory ports a search stays in one naming context; from the root, the
        // bound identity's own. The Global Catalog spans them all.
        let ctx_limit = if self.cfg.gc {
            None
        } else if root {
            match self.own_context(tree) {
                Some(c) => Some(c),
                None => return Ok(None),
            }
        } else {
            base_ctx
        };
        let base_ndn = base_idx.map(|i| tree.entries[i].ndn.clone()).unwrap_or_default();
        Ok(Some(Scope { base: base_idx, base_ndn, ctx_limit, scope }))
    }

    fn page_size(&self, asked: i64) -> usize {
        let admin = self.identity.as_ref().is_some_and(|i| i.admin || i.replicator);
        let asked = asked.max(1) as usize;
        if admin { asked } else { asked.min(self.cfg.max_results) }
    }

    /// The deepest existing, readable ancestor of a missing entry (matchedDN).
    fn matched(&self, tree: &Tree, ndn: &str) -> String {
        let mut rest = ndn;
        while let Some((_, parent)) = rest.split_once(',') {
            if let Some(&i) = tree.by_ndn.get(parent)
                && self.can_read(tree, &tree.entries[i])
            {
                return tree.entries[i].dn.clone();
            }
            rest = parent;
        }
        String::new()
    }

    fn send_entry(&self, id: i32, e: &Entry, want: &Selection, types_only: bool, out: &mut BytesMut) {
        let mut names: Vec<(std::borrow::Cow<'static, str>, &[Vec<u8>])> = Vec::with_capacity(e.attrs.len());
        for a in &e.attrs {
            if !self.attr_visible(a.id) {
                continue;
            }
            let t = schema::attr_type(a.id);
            let Some(name) = want.includes(a.id, t) else { continue };
            names.push((name, if types_only { &[] } else { a.values.as_slice() }));
        }
        let attrs: Vec<crate::ber::Attribute<'_>> =
            names.iter().map(|(n, v)| crate::ber::Attribute { name: n, values: v }).collect();
        crate::ber::search_entry(out, id, &e.dn, &attrs);
    }

    async fn compare(&mut self, c: LdapCompareRequest, assertion: Option<&Filter>) -> LdapResult {
        let tree = match self.shared.tree().await {
            Ok(t) => t,
            Err(_) => return result(LdapResultCode::Unavailable, "the directory is unavailable"),
        };
        if self.identity.is_none() && !self.cfg.anonymous_read {
            return result(LdapResultCode::InsufficentAccessRights, "bind first");
        }
        let Some(i) = tree.entry_by_dn(&c.dn).filter(|&i| self.can_read(&tree, &tree.entries[i])) else {
            return result(LdapResultCode::NoSuchObject, "no such entry");
        };
        let e = &tree.entries[i];
        let visible = |a: AttrId| self.attr_visible(a);
        if let Some(a) = assertion
            && a.eval(&tree, e, &visible) != Truth::True
        {
            return result(LdapResultCode::AssertionFailed, "the assertion control's filter is not true");
        }
        let Some(aid) = schema::attr(&c.atype) else {
            return result(LdapResultCode::UndefinedAttributeType, "unknown attribute type");
        };
        if !self.attr_visible(aid) {
            return result(LdapResultCode::InsufficentAccessRights, "that attribute cannot be compared");
        }
        let Some(a) = e.get(aid) else {
            return result(LdapResultCode::NoSuchAttribute, "the entry has no such attribute");
        };
        let syntax = schema::attr_type(aid).syntax;
        let hit = a.values.iter().any(|v| crate::matching::equal(syntax, v, &c.val));
        result(if hit { LdapResultCode::CompareTrue } else { LdapResultCode::CompareFalse }, "")
    }

    async fn extended(&mut self, id: i32, x: LdapExtendedRequest, conn: &mut Conn, out: &mut BytesMut) -> Next {
        let reply = |r: LdapResult, name: Option<String>, value: Option<Vec<u8>>, out: &mut BytesMut| {
            encode(LdapMsg::new(id, LdapOp::ExtendedResponse(LdapExtendedResponse { res: r, name, value })), out)
        };
        match x.name.as_str() {
            OID_STARTTLS => {
                if conn.is_tls() {
                    reply(result(LdapResultCode::OperationsError, "TLS is already on"), Some(x.name), None, out);
                } else if !conn.can_starttls() {
                    reply(result(LdapResultCode::Unavailable, "no certificate is configured"), Some(x.name), None, out);
                } else if self.sasl.is_some() {
                    reply(
                        result(LdapResultCode::OperationsError, "a SASL bind is in progress"),
                        Some(x.name),
                        None,
                        out,
                    );
                } else {
                    reply(result(LdapResultCode::Success, ""), Some(x.name), None, out);
                    return Next::StartTls;
                }
            }
            OID_WHOAMI => {
                let authz = match &self.identity {
                    Some(i) => format!("u:{}", i.login),
                    None => String::new(),
                };
                reply(result(LdapResultCode::Success, ""), None, Some(authz.into_bytes()), out);
            }
            OID_PASSWORD_MODIFY => {
                let (res, gen_password) = crate::write::password_modify(self, &x, conn.is_tls()).await;
                let resp: LdapExtendedResponse = LdapPasswordModifyResponse { res, gen_password }.into();
                encode(LdapMsg::new(id, LdapOp::ExtendedResponse(resp)), out);
            }
            _ => reply(result(LdapResultCode::ProtocolError, "unsupported extended operation"), None, None, out),
        }
        Next::Continue
    }
}

pub enum Next {
    Continue,
    Close,
    StartTls,
}

/// The error response that matches a request's type.
pub(crate) fn respond_error(id: i32, op: &LdapOp, r: LdapResult, out: &mut BytesMut) {
    let op = match op {
        LdapOp::BindRequest(_) => LdapOp::BindResponse(LdapBindResponse { res: r, saslcreds: None }),
        LdapOp::SearchRequest(_) => LdapOp::SearchResultDone(r),
        LdapOp::ModifyRequest(_) => LdapOp::ModifyResponse(r),
        LdapOp::AddRequest(_) => LdapOp::AddResponse(r),
        LdapOp::DelRequest(_) => LdapOp::DelResponse(r),
        LdapOp::ModifyDNRequest(_) => LdapOp::ModifyDNResponse(r),
        LdapOp::CompareRequest(_) => LdapOp::CompareResult(r),
        LdapOp::ExtendedRequest(_) => {
            LdapOp::ExtendedResponse(LdapExtendedResponse { res: r, name: None, value: None })
        }
        _ => return,
    };
    encode(LdapMsg::new(id, op), out);
}

/// The Assertion control's filter (RFC 4528), if one was sent.
fn assertion(ctrls: &[LdapControl]) -> Result<Option<Filter>, ()> {
    for c in ctrls {
        if let LdapControl::Unknown { oid, value, .. } = c
            && oid == CTRL_ASSERTION
        {
            let v = value.as_ref().ok_or(())?;
            let mut parser = ldap3_lber::parse::Parser::new(filter::MAX_DEPTH + 2);
            let (_, tag) = parser.parse(v).map_err(|_| ())?;
            let f = LdapFilter::try_from(tag).map_err(|_| ())?;
            return filter::compile(&f).map(Some).map_err(|_| ());
        }
    }
    Ok(None)
}

/// Whether a pseudo-entry (root DSE, subschema) matches: presence and equality only.
fn root_matches(f: &Filter, attrs: &[(String, Vec<Vec<u8>>)]) -> bool {
    let get = |id: AttrId| {
        let name = schema::attr_type(id).name;
        attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    match f {
        Filter::Present(id) => *id == schema::known().object_class || get(*id).is_some(),
        Filter::Eq(id, v) => get(*id)
            .is_some_and(|(_, vals)| vals.iter().any(|x| crate::matching::equal(schema::attr_type(*id).syntax, x, v))),
        Filter::And(l) => l.iter().all(|x| root_matches(x, attrs)),
        Filter::Or(l) => l.iter().any(|x| root_matches(x, attrs)),
        Filter::Not(x) => !root_matches(x, attrs),
        _ => false,
    }
}

/// Sorts hits by the requested keys (RFC 2891); returns the sortResult code.
fn sort(tree: &Tree, hits: &mut [u32], keys: &[ldap3_proto::control::ServerSortRequet]) -> LdapResultCode {
    let mut resolved = Vec::new();
    for k in keys {
        let Some(id) = schema::attr(&k.attribute_name) else { return LdapResultCode::NoSuchAttribute };
        if let Some(rule) = &k.ordering_rule
            && schema::rule(rule).is_none()
        {
            return LdapResultCode::InappropriateMatching;
        }
        resolved.push((id, k.reverse_order));
    }
    hits.sort_by(|&a, &b| {
        let (ea, eb) = (&tree.entries[a as usize], &tree.entries[b as usize]);
        for (id, reverse) in &resolved {
            // The smallest value represents a multi-valued attribute; entries without it last.
            let va = ea.get(*id).and_then(|x| x.folded.iter().min());
            let vb = eb.get(*id).and_then(|x| x.folded.iter().min());
            let o = match (va, vb) {
                (Some(x), Some(y)) => {
                    if *reverse {
                        y.cmp(x)
                    } else {
                        x.cmp(y)
                    }
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    LdapResultCode::Success
}

/// SortResult ::= SEQUENCE { sortResult ENUMERATED, attributeType [0] OPTIONAL }
/// (RFC 2891 §1.2), encoded here: the codec's own form adds a stray string.
fn sort_result(code: LdapResultCode) -> LdapControl {
    LdapControl::Unknown {
        oid: CTRL_SORT_RESULT.into(),
        criticality: false,
        value: Some(vec![0x30, 0x03, 0x0a, 0x01, code as u8]),
    }
}

fn new_cookie() -> Vec<u8> {
    let mut c = vec![0u8; 12];
    if getrandom::fill(&mut c).is_err() {
        // Unique within the connection is all a cookie must be.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        c = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes().to_vec();
    }
    c
}

/// The attributes a search asked for (RFC 4511 §4.5.1.8).
struct Selection {
    all_user: bool,
    all_operational: bool,
    /// Requested names (lower case base name, the name as to return).
    named: Vec<(AttrId, String)>,
    plain_names: Vec<String>,
}

impl Selection {
    fn new(attrs: &[String]) -> Selection {
        let mut s = Selection {
            all_user: attrs.is_empty(),
            all_operational: false,
            named: Vec::new(),
            plain_names: Vec::new(),
        };
        for a in attrs {
            match a.as_str() {
                "*" => s.all_user = true,
                "+" => s.all_operational = true,
                "1.1" => {}
                other => {
                    s.plain_names.push(other.to_ascii_lowercase());
                    if let Some(id) = schema::attr(other) {
                        let (_, opts) = schema::split_options(other);
                        let t = schema::attr_type(id);
                        let mut name = t.name.to_string();
                        for o in opts {
                            name.push(';');
                            name.push_str(o);
                        }
                        s.named.push((id, name));
                    }
                }
            }
        }
        if attrs.len() == 1 && attrs[0] == "1.1" {
            s.all_user = false;
        }
        s
    }

    fn named(&self, name: &str) -> bool {
        self.plain_names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The name to return the attribute under, if it is selected.
    fn includes(&self, id: AttrId, t: &'static schema::AttrType) -> Option<std::borrow::Cow<'static, str>> {
        use std::borrow::Cow;
        // Certificates travel with the ;binary option (RFC 4523 §2.1).
        let binary = t.name == "userCertificate";
        if let Some((_, n)) = self.named.iter().find(|(i, _)| *i == id) {
            return Some(Cow::Owned(if binary && !n.contains(';') { format!("{n};binary") } else { n.clone() }));
        }
        let selected = if t.operational { self.all_operational } else { self.all_user };
        selected.then_some(if binary { Cow::Borrowed("userCertificate;binary") } else { Cow::Borrowed(t.name) })
    }
}
