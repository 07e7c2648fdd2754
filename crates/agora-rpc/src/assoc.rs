//! One association (a TCP connection) on the server side: presentation contexts
//! negotiated by bind and alter_context, NTLMSSP authentication and per-fragment
//! protection, requests reassembled from fragments and dispatched to the interface
//! the context names, responses cut to the client's fragment size, faults, cancels.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use crate::ntlm::{self, Keys};
use crate::pdu::{self, Auth, Body, Context, ContextResult, Pdu, Syntax};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fault statuses (C706 Appendix E, MS-RPCE §3.1.1.5.5).
pub mod status {
    pub const OP_RNG_ERROR: u32 = 0x1c01_0002;
    pub const UNK_IF: u32 = 0x1c01_0003;
    pub const PROTO_ERROR: u32 = 0x1c01_000b;
    pub const ACCESS_DENIED: u32 = 0x0000_0005;
    pub const CONTEXT_MISMATCH: u32 = 0x1c00_001a;
    pub const CANCEL: u32 = 0x1c00_000d;
    pub const REMOTE_NO_MEMORY: u32 = 0x1c00_0011;
    /// RPC_X_BAD_STUB_DATA, Windows' answer to stub data it cannot read.
    pub const BAD_STUB_DATA: u32 = 0x0000_06f7;
    pub const SEC_PKG_ERROR: u32 = 0x0000_0721;
}

/// The authentication levels (C706 §13.1.2.1).
pub const LEVEL_CONNECT: u8 = 2;
pub const LEVEL_INTEGRITY: u8 = 5;
pub const LEVEL_PRIVACY: u8 = 6;
/// RPC_C_AUTHN_WINNT: NTLMSSP.
pub const AUTHN_WINNT: u8 = 10;

/// Who an authenticated association speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account's login (its primary address); empty for an anonymous NTLM login.
    pub login: String,
    /// The protection every request carries: `LEVEL_INTEGRITY` or `LEVEL_PRIVACY`
    /// (`LEVEL_CONNECT`: authenticated only).
    pub level: u8,
}

/// What one call sees of its association.
pub struct Call<'a> {
    pub opnum: u16,
    pub stub: &'a [u8],
    /// The stub's integers are little-endian.
    pub little: bool,
    pub object: Option<pdu::Uuid>,
    pub caller: Option<&'a Caller>,
    pub group: &'a Arc<Group>,
    pub peer: IpAddr,
    /// The address the client reached us at (what towers name).
    pub local: IpAddr,
}

/// A served interface.
pub trait Interface: Send + Sync {
    fn syntax(&self) -> Syntax;
    /// The endpoint mapper's annotation for it.
    fn annotation(&self) -> &'static str;
    /// Whether it serves unauthenticated associations (only the endpoint mapper does).
    fn anonymous(&self) -> bool {
        false
    }
    /// Runs one call: the response stub, or a fault status.
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Vec<u8>, u32>>;
}

/// Looks up accounts for NTLM.
pub trait Accounts: Send + Sync {
    /// The NT hash (MD4 of the UTF-16 password) of an account that may use NTLM, and
    /// its login; None for an unknown account or one without NTLM.
    fn ntlm_secret<'a>(
        &'a self,
        user: &'a str,
        domain: &'a str,
        peer: IpAddr,
    ) -> BoxFuture<'a, Option<([u8; 16], String)>>;
    /// A login failed: returns after the login throttle's delay.
    fn failed<'a>(&'a self, user: &'a str, peer: IpAddr) -> BoxFuture<'a, ()>;
    /// The names NTLM's challenge announces.
    fn names(&self) -> ntlm::Names;
}

/// State shared by the associations of one group: context handles (C706 §6.1).
#[derive(Default)]
pub struct Group {
    pub id: u32,
    pub handles: Mutex<HashMap<[u8; 16], Box<dyn std::any::Any + Send>>>,
}

/// The most context handles one group holds at once.
pub const MAX_HANDLES: usize = 256;

impl Group {
    /// Keeps a new context handle's state; false when the group holds too many.
    pub fn insert_handle(&self, handle: [u8; 16], state: Box<dyn std::any::Any + Send>) -> bool {
        let mut h = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() >= MAX_HANDLES {
            return false;
        }
        h.insert(handle, state);
        true
    }
}

/// The groups alive on a server, by id.
#[derive(Default)]
pub struct Groups {
    live: Mutex<HashMap<u32, Weak<Group>>>,
}

impl Groups {
    /// The group a bind names (0: a new one). None for an id not alive here.
    pub fn join(&self, id: u32) -> Option<Arc<Group>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, g| g.strong_count() > 0);
        if id != 0 {
            return live.get(&id).and_then(Weak::upgrade);
        }
        loop {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).ok()?;
            let id = u32::from_le_bytes(b) & 0x00ff_ffff;
            if id != 0 && !live.contains_key(&id) {
                let g = Arc::new(Group { id, handles: Mutex::new(HashMap::new()) });
                live.insert(id, Arc::downgrade(&g));
                return Some(g);
            }
        }
    }
}

/// The largest fragment we send or take (MS-RPCE: at least 1432 is negotiable).
pub const OUR_MAX_FRAG: u16 = 5840;
pub const MIN_FRAG: u16 = 1432;

/// What the server gives an association.
pub struct Server {
    pub interfaces: Vec<Arc<dyn Interface>>,
    pub groups: Arc<Groups>,
    pub accounts: Option<Arc<dyn Accounts>>,
    /// The port as the bind_ack's secondary address names it.
    pub port: u16,
    /// Largest request after reassembly.
    pub max_request: usize,
}

struct Pending {
    call_id: u32,
    context: u16,
    opnum: u16,
    object: Option<pdu::Uuid>,
    little: bool,
    stub: Vec<u8>,
}

enum AuthState {
    /// Challenge sent; waiting for auth3 (or alter_context) with the AUTHENTICATE.
    Challenged {
        server: ntlm::Server,
        level: u8,
        context_id: u32,
    },
    Done {
        keys: Box<Keys>,
        level: u8,
        context_id: u32,
        caller: Caller,
    },
    Failed,
}

/// One association's state.
pub struct Association {
    server: Arc<Server>,
    peer: IpAddr,
    local: IpAddr,
    bound: bool,
    contexts: HashMap<u16, Arc<dyn Interface>>,
    /// The fragment size we send (the client's max_recv, capped).
    xmit: usize,
    /// The fragment size we take.
    recv: usize,
    group: Option<Arc<Group>>,
    pending: Option<Pending>,
    auth: Option<AuthState>,
    /// Set once the connection should close (after the replies given).
    pub closed: bool,
}

fn fault(call_id: u32, context: u16, status: u32, did_not_execute: bool) -> Vec<u8> {
    let flags = pdu::PFC_FIRST_FRAG | pdu::PFC_LAST_FRAG | if did_not_execute { pdu::PFC_DID_NOT_EXECUTE } else { 0 };
    let p = Pdu { flags, call_id, body: Body::Fault { alloc_hint: 0, context, cancel_count: 0, status }, auth: None };
    pdu::encode(&p).unwrap_or_default()
}

impl Association {
    pub fn new(server: Arc<Server>, peer: IpAddr, local: IpAddr) -> Self {
        Association {
            server,
            peer,
            local,
            bound: false,
            contexts: HashMap::new(),
            xmit: usize::from(MIN_FRAG),
            recv: usize::from(OUR_MAX_FRAG),
            group: None,
            pending: None,
            auth: None,
            closed: false,
        }
    }

    /// The largest fragment taken now: up to the protocol's limit until bind, then
    /// what was negotiated.
    pub fn max_fragment(&self) -> usize {
        if self.bound { self.recv } else { pdu::MAX_FRAGMENT }
    }

    /// Who the association speaks for, once NTLM succeeded (an empty login: anonymous).
    pub fn caller(&self) -> Option<&Caller> {
        match &self.auth {
            Some(AuthState::Done { caller, .. }) => Some(caller),
            _ => None,
        }
    }

    /// Takes one whole fragment as received; returns the fragments to send back.
    pub async fn fragment(&mut self, mut raw: Vec<u8>) -> Vec<Vec<u8>> {
        let (pdu, _) = match pdu::decode(&raw) {
            Ok(d) => d,
            Err(pdu::PduError::Version(..)) if raw.get(2) == Some(&11) => {
                self.closed = true;
                let nak = Pdu { flags: 3, call_id: call_id_of(&raw), body: Body::BindNak { reason: 4 }, auth: None };
                return vec![pdu::encode(&nak).unwrap_or_default()];
            }
            Err(_) => {
                // C706: a PDU that cannot be read ends the association.
                self.closed = true;
                return vec![fault(call_id_of(&raw), 0, status::PROTO_ERROR, true)];
            }
        };
        if raw.len() > self.max_fragment() {
            self.closed = true;
            return vec![fault(pdu.call_id, 0, status::PROTO_ERROR, true)];
        }
        match pdu.body {
            Body::Bind { max_xmit, max_recv, assoc_group, contexts } => {
                if self.bound {
                    self.closed = true;
                    return vec![fault(pdu.call_id, 0, status::PROTO_ERROR, true)];
                }
                self.bind(pdu.call_id, max_xmit, max_recv, assoc_group, &contexts, pdu.auth, true).await
            }
            Body::AlterContext { max_xmit, max_recv, assoc_group, contexts } => {
                if !self.bound {
                    self.closed = true;
                    return vec![fault(pdu.call_id, 0, status::PROTO_ERROR, true)];
                }
                self.bind(pdu.call_id, max_xmit, max_recv, assoc_group, &contexts, pdu.auth, false).await
            }
            Body::Auth3 => {
                if let Some(a) = pdu.auth {
                    self.authenticate(&a).await;
                }
                Vec::new()
            }
            Body::Request { context, opnum, object, .. } => {
                if !self.bound {
                    self.closed = true;
                    return vec![fault(pdu.call_id, context, status::PROTO_ERROR, true)];
                }
                let little = raw[4] & 0xF0 == 0x10;
                let stub = match self.unprotect(&mut raw, &pdu) {
                    Ok(s) => s,
                    Err(st) => {
                        // The session's sequence numbers and RC4 state are lost with it.
                        self.pending = None;
                        self.closed = true;
                        return vec![fault(pdu.call_id, context, st, true)];
                    }
                };
                let frag = Pending { call_id: pdu.call_id, context, opnum, object, little, stub };
                self.request(pdu.flags, frag).await
            }
            Body::CoCancel => match &self.pending {
                Some(p) if p.call_id == pdu.call_id => {
                    let context = p.context;
                    self.pending = None;
                    vec![fault(pdu.call_id, context, status::CANCEL, true)]
                }
                _ => Vec::new(),
            },
            Body::Orphaned => {
                if self.pending.as_ref().is_some_and(|p| p.call_id == pdu.call_id) {
                    self.pending = None;
                }
                Vec::new()
            }
            Body::Shutdown => {
                self.closed = true;
                Vec::new()
            }
            // What only a server sends.
            Body::Response { .. }
            | Body::Fault { .. }
            | Body::BindAck { .. }
            | Body::BindNak { .. }
            | Body::AlterContextResp { .. } => {
                self.closed = true;
                vec![fault(pdu.call_id, 0, status::PROTO_ERROR, true)]
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn bind(
        &mut self,
        call_id: u32,
        max_xmit: u16,
        max_recv: u16,
        assoc_group: u32,
        contexts: &[Context],
        auth: Option<Auth>,
        first: bool,
    ) -> Vec<Vec<u8>> {
        let nak = |reason: u16| {
            let p = Pdu { flags: 3, call_id, body: Body::BindNak { reason }, auth: None };
            vec![pdu::encode(&p).unwrap_or_default()]
        };
        if first {
            if max_xmit < MIN_FRAG || max_recv < MIN_FRAG {
                self.closed = true;
                return nak(0);
            }
            let Some(group) = self.server.groups.join(assoc_group) else {
                self.closed = true;
                return nak(0);
            };
            self.group = Some(group);
            self.xmit = usize::from(max_recv.min(OUR_MAX_FRAG));
            self.recv = usize::from(max_xmit.min(OUR_MAX_FRAG));
            self.bound = true;
        }
        let mut results = Vec::with_capacity(contexts.len());
        for c in contexts {
            results.push(self.negotiate(c));
        }
        // Security: a NEGOTIATE starts NTLM; an AUTHENTICATE in an alter_context ends it.
        let mut reply_auth = None;
        if let Some(a) = auth {
            if a.auth_type != AUTHN_WINNT || ![LEVEL_CONNECT, LEVEL_INTEGRITY, LEVEL_PRIVACY].contains(&a.level) {
                if first {
                    self.closed = true;
                    // 8: authentication type not recognized.
                    return nak(8);
                }
                return vec![fault(call_id, 0, status::SEC_PKG_ERROR, true)];
            }
            match ntlm::message_type(&a.value) {
                Some(1) if self.server.accounts.is_some() && self.auth.is_none() => {
                    let names = self.server.accounts.as_ref().map(|x| x.names()).unwrap_or_default();
                    match ntlm::Server::challenge(&a.value, &names) {
                        Some((server, token)) => {
                            self.auth =
                                Some(AuthState::Challenged { server, level: a.level, context_id: a.context_id });
                            reply_auth = Some(Auth {
                                auth_type: AUTHN_WINNT,
                                level: a.level,
                                pad: 0,
                                context_id: a.context_id,
                                value: token,
                            });
                        }
                        None => self.auth = Some(AuthState::Failed),
                    }
                }
                Some(3) => self.authenticate(&a).await,
                _ => self.auth = Some(AuthState::Failed),
            }
        }
        let secondary = if first { self.server.port.to_string() } else { String::new() };
        let (x, r) = (self.xmit as u16, self.recv as u16);
        let group = self.group.as_ref().map_or(0, |g| g.id);
        let body = if first {
            Body::BindAck { max_xmit: x, max_recv: r, assoc_group: group, secondary, results }
        } else {
            Body::AlterContextResp { max_xmit: x, max_recv: r, assoc_group: group, secondary, results }
        };
        let p = Pdu { flags: 3, call_id, body, auth: reply_auth };
        vec![pdu::encode(&p).unwrap_or_default()]
    }

    fn negotiate(&mut self, c: &Context) -> ContextResult {
        let reject = |reason| ContextResult { result: 2, reason, transfer_syntax: Syntax::default() };
        // Bind time feature negotiation (MS-RPCE §3.3.1.5.3): the syntax's UUID starts
        // 6cb71c2c-9812-4540; answered "negotiate ack" with no features.
        if c.transfer_syntaxes.len() == 1 && c.transfer_syntaxes[0].uuid.0[..8] == BTFN_PREFIX {
            return ContextResult { result: 3, reason: 0, transfer_syntax: Syntax::default() };
        }
        let want = c.abstract_syntax;
        let Some(iface) = self.server.interfaces.iter().find(|i| {
            let s = i.syntax();
            s.uuid == want.uuid && s.version & 0xffff == want.version & 0xffff && want.version >> 16 <= s.version >> 16
        }) else {
            return reject(1);
        };
        let ndr = pdu::ndr();
        if !c.transfer_syntaxes.contains(&ndr) {
            // NDR64 alone: refused, so that the client proposes NDR 2.0 again.
            return reject(2);
        }
        self.contexts.insert(c.id, Arc::clone(iface));
        ContextResult { result: 0, reason: 0, transfer_syntax: ndr }
    }

    async fn authenticate(&mut self, a: &Auth) {
        // A call begun before the login does not finish under it.
        self.pending = None;
        let Some(AuthState::Challenged { server, level, context_id }) = self.auth.take() else {
            self.auth = Some(AuthState::Failed);
            return;
        };
        let Some(accounts) = self.server.accounts.clone() else {
            self.auth = Some(AuthState::Failed);
            return;
        };
        let Some(msg) = ntlm::Authenticate::parse(&a.value) else {
            self.auth = Some(AuthState::Failed);
            return;
        };
        // Anonymous NTLM: protected, but no one; only anonymous interfaces serve it.
        if ntlm::Server::is_anonymous(&msg) {
            self.auth = Some(match server.anonymous(&msg) {
                Some(keys) => AuthState::Done {
                    keys: Box::new(keys),
                    level,
                    context_id,
                    caller: Caller { login: String::new(), level },
                },
                None => AuthState::Failed,
            });
            return;
        }
        if !ntlm::strong_enough(msg.flags, level >= LEVEL_INTEGRITY, level == LEVEL_PRIVACY) {
            self.auth = Some(AuthState::Failed);
            return;
        }
        let found = accounts.ntlm_secret(&msg.user, &msg.domain, self.peer).await;
        let keys = found.as_ref().and_then(|(hash, _)| server.verify(&msg, hash));
        match (keys, found) {
            (Some(keys), Some((_, login))) => {
                self.auth =
                    Some(AuthState::Done { keys: Box::new(keys), level, context_id, caller: Caller { login, level } })
            }
            (_, found) => {
                // Counted under the account's login when the name resolves, so that
                // "ann" and "ann@example.org" share one count with every other protocol.
                let who = found.map_or(msg.user.clone(), |(_, login)| login);
                accounts.failed(&who, self.peer).await;
                self.auth = Some(AuthState::Failed);
            }
        }
    }

    /// Checks and unseals a request fragment's stub per the association's level.
    fn unprotect(&mut self, raw: &mut [u8], pdu: &Pdu) -> Result<Vec<u8>, u32> {
        let Body::Request { stub, object, .. } = &pdu.body else { return Err(status::PROTO_ERROR) };
        let Some(auth) = &pdu.auth else {
            return match &self.auth {
                Some(AuthState::Done { level, .. }) if *level >= LEVEL_INTEGRITY => Err(status::ACCESS_DENIED),
                _ => Ok(stub.clone()),
            };
        };
        let Some(AuthState::Done { keys, level, context_id, .. }) = &mut self.auth else {
            return Err(status::ACCESS_DENIED);
        };
        if auth.context_id != *context_id || auth.level != *level {
            return Err(status::ACCESS_DENIED);
        }
        if *level < LEVEL_INTEGRITY {
            return Ok(stub.clone());
        }
        let len = raw.len();
        let sig_at = len - auth.value.len();
        let trailer_at = sig_at - pdu::SEC_TRAILER;
        let stub_at = pdu::HEADER + 8 + if object.is_some() { 16 } else { 0 };
        if stub_at > trailer_at || auth.value.len() != 16 {
            return Err(status::PROTO_ERROR);
        }
        if *level == LEVEL_PRIVACY {
            keys.unseal(&mut raw[stub_at..trailer_at]);
        }
        let signature: [u8; 16] = raw[sig_at..].try_into().map_err(|_| status::PROTO_ERROR)?;
        if !keys.verify(&raw[..sig_at], &signature) {
            return Err(status::ACCESS_DENIED);
        }
        let stub_end = trailer_at - usize::from(auth.pad);
        Ok(raw[stub_at..stub_end.max(stub_at)].to_vec())
    }

    /// One request fragment (its stub checked already): kept until the call's last.
    async fn request(&mut self, flags: u8, frag: Pending) -> Vec<Vec<u8>> {
        let Pending { call_id, context, stub, .. } = frag;
        if flags & pdu::PFC_FIRST_FRAG != 0 {
            if self.pending.is_some() {
                // A new call before the last one's final fragment.
                self.pending = None;
                self.closed = true;
                return vec![fault(call_id, context, status::PROTO_ERROR, true)];
            }
            self.pending = Some(Pending { stub: Vec::new(), ..frag });
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.call_id == call_id && p.context == context) else {
            self.pending = None;
            self.closed = true;
            return vec![fault(call_id, context, status::PROTO_ERROR, true)];
        };
        if p.stub.len() + stub.len() > self.server.max_request {
            self.pending = None;
            return vec![fault(call_id, context, status::REMOTE_NO_MEMORY, true)];
        }
        p.stub.extend_from_slice(&stub);
        if flags & pdu::PFC_PENDING_CANCEL != 0 {
            self.pending = None;
            return vec![fault(call_id, context, status::CANCEL, true)];
        }
        if flags & pdu::PFC_LAST_FRAG == 0 {
            return Vec::new();
        }
        let Some(call) = self.pending.take() else { return Vec::new() };
        let Some(iface) = self.contexts.get(&call.context).cloned() else {
            return vec![fault(call_id, context, status::UNK_IF, true)];
        };
        let caller = self.caller().cloned();
        if !iface.anonymous() && caller.as_ref().is_none_or(|c| c.login.is_empty() || c.level < LEVEL_INTEGRITY) {
            return vec![fault(call_id, context, status::ACCESS_DENIED, true)];
        }
        let Some(group) = self.group.clone() else { return vec![fault(call_id, context, status::PROTO_ERROR, true)] };
        let result = iface
            .call(Call {
                opnum: call.opnum,
                stub: &call.stub,
                little: call.little,
                object: call.object,
                caller: caller.as_ref(),
                group: &group,
                peer: self.peer,
                local: self.local,
            })
            .await;
        match result {
            Ok(out) => self.respond(call_id, context, &out),
            Err(st) => vec![fault(call_id, context, st, st == status::OP_RNG_ERROR)],
        }
    }

    /// The response stub cut into fragments of the negotiated size, each protected.
    fn respond(&mut self, call_id: u32, context: u16, stub: &[u8]) -> Vec<Vec<u8>> {
        let protect = matches!(&self.auth, Some(AuthState::Done { level, .. }) if *level >= LEVEL_INTEGRITY);
        // Header 16, response fields 8; with protection the padding (up to 15), the
        // trailer 8 and the signature 16. Chunks of 8 keep the sealed part aligned.
        let overhead = 24 + if protect { 16 + 8 + 16 } else { 0 };
        let room = (self.xmit.saturating_sub(overhead) / 8 * 8).max(8);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let end = (at + room).min(stub.len());
            let mut flags = 0;
            if at == 0 {
                flags |= pdu::PFC_FIRST_FRAG;
            }
            if end == stub.len() {
                flags |= pdu::PFC_LAST_FRAG;
            }
            let chunk = &stub[at..end];
            let body =
                Body::Response { alloc_hint: (stub.len() - at) as u32, context, cancel_count: 0, stub: chunk.to_vec() };
            let frag = if protect {
                self.protected(flags, call_id, body, chunk.len())
            } else {
                pdu::encode(&Pdu { flags, call_id, body, auth: None })
            };
            out.push(frag.unwrap_or_default());
            at = end;
            if at >= stub.len() {
                break;
            }
        }
        out
    }

    fn protected(&mut self, flags: u8, call_id: u32, body: Body, stub_len: usize) -> Option<Vec<u8>> {
        let Some(AuthState::Done { keys, level, context_id, .. }) = &mut self.auth else { return None };
        // The stub plus its padding to 16 (MS-RPCE §2.2.2.11), then the trailer.
        let pad = (16 - stub_len % 16) % 16;
        let auth =
            Auth { auth_type: AUTHN_WINNT, level: *level, pad: pad as u8, context_id: *context_id, value: vec![0; 16] };
        let Body::Response { alloc_hint, context, cancel_count, stub } = body else { return None };
        let mut stub = stub;
        stub.extend(std::iter::repeat_n(0, pad));
        let mut raw = pdu::encode(&Pdu {
            flags,
            call_id,
            body: Body::Response { alloc_hint, context, cancel_count, stub },
            auth: Some(Auth { pad: 0, ..auth.clone() }),
        })?;
        // encode wrote no padding of its own (the stub is already 4-aligned): set ours.
        let len = raw.len();
        raw[len - 16 - pdu::SEC_TRAILER + 2] = pad as u8;
        let sig_at = len - 16;
        let signature = keys.sign(&raw[..sig_at]);
        if *level == LEVEL_PRIVACY {
            keys.seal(&mut raw[24..sig_at - pdu::SEC_TRAILER]);
        }
        let signature = keys.finish_signature(signature);
        raw[sig_at..].copy_from_slice(&signature);
        Some(raw)
    }
}

/// MS-RPCE's bind time feature negotiation syntax begins with these bytes.
const BTFN_PREFIX: [u8; 8] = [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45];

fn call_id_of(raw: &[u8]) -> u32 {
    raw.get(12..16).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}
