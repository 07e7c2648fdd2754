//! One association of the MTS transfer protocol, the layers joined: TPDUs in, TPDUs
//! out, and what the MTA has to decide on (the bind, each transferred APDU) as events.
//! Pure: the service moves the octets. `Responder` answers an association, `Initiator`
//! opens one; both modes: normal (1988: presentation contexts, ACSE, RTSE in P-DATA)
//! and X.410-1984 (RTSE in place of the presentation parameters).

use rasn::prelude::*;

use crate::acse;
use crate::cotp::{self, Connect, Tpdu};
use crate::p1;
use crate::ppdu::{self, oid};
use crate::rtse;
use crate::spdu::{self, Spdu};

/// The largest TSDU taken before the association is bound: a connect and its answer
/// (version 2's user data is at most 10,240 octets).
const PRE_BIND_TSDU: usize = 16 * 1024;

/// The presentation context ids an initiator proposes (odd, as X.226 wants).
pub const CTX_ACSE: i64 = 1;
pub const CTX_RTSE: i64 = 3;
pub const CTX_MTSE: i64 = 5;
/// RTORQ's application protocol number for P1 in X.410-1984 mode.
pub const P1_1984: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 1988: id-ac-mts-transfer over ACSE and presentation contexts.
    Normal,
    /// mts-transfer-protocol-1984: RTSE directly in the presentation PPDUs.
    X410,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "1988",
            Mode::X410 => "1984",
        }
    }
}

/// Limits on what a peer can make this side hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest TSDU (and transferred APDU) taken.
    pub max_apdu: usize,
    /// TPDU size code offered (class 0: at most 11, 2,048 octets).
    pub size_code: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_apdu: 64 << 20, size_code: cotp::MAX_SIZE_CODE }
    }
}

/// This side's addresses: transport, session and presentation selectors. Empty ones
/// are not checked on a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub tsel: Vec<u8>,
    pub ssel: Vec<u8>,
    pub psel: Vec<u8>,
}

/// A refusal or failure, named by the layer that saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub layer: &'static str,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.layer, self.what)
    }
}

fn fail(layer: &'static str, what: impl Into<String>) -> Failure {
    Failure { layer, what: what.into() }
}

/// What happened on the association that the MTA decides on or should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The transport connection is up (initiator: CC received).
    TransportConnected,
    /// A peer asks to bind (responder): answer with `accept` or `refuse`.
    Bind { mode: Mode, bind: p1::Bind },
    /// The peer accepted our bind (initiator), with its own credentials.
    Bound { bind: p1::Bind },
    /// The peer refused the association, at the named layer.
    Refused(Failure),
    /// One APDU transferred (responder): `confirm` once it is safely kept.
    Transfer(Vec<u8>),
    /// Our last transfer is confirmed (initiator).
    Confirmed,
    /// The association was released in order.
    Released,
    /// The peer aborted, or the association broke.
    Aborted(Failure),
}

/// TPDUs to send, each one TPKT's payload.
pub type Out = Vec<Vec<u8>>;

/// Reassembly of DT TPDUs into TSDUs.
#[derive(Debug, Default)]
struct Reassembly {
    buf: Vec<u8>,
}

impl Reassembly {
    fn push(&mut self, eot: bool, data: &[u8], max: usize) -> Result<Option<Vec<u8>>, Failure> {
        if self.buf.len() + data.len() > max {
            return Err(fail("transport", format!("a TSDU larger than {max} octets")));
        }
        self.buf.extend_from_slice(data);
        Ok(eot.then(|| std::mem::take(&mut self.buf)))
    }
}

fn data_tpdus(tsdu: &[u8], size_code: u8) -> Out {
    cotp::segment(tsdu, size_code).iter().map(Tpdu::encode).collect()
}

fn spdu_out(s: &Spdu, size_code: u8) -> Out {
    data_tpdus(&spdu::encode_tsdu(s), size_code)
}

/// An RTSE APDU as P-DATA user information in `mode`: in the RTSE context (1988), or
/// simply encoded, there being no contexts (1984).
fn pdata(mode: Mode, apdu: &rtse::Apdu) -> Vec<u8> {
    let bytes = rtse::encode(apdu);
    match mode {
        Mode::X410 => ppdu::encode(&ppdu::UserData::Simple(OctetString::from(bytes))),
        Mode::Normal => ppdu::encode(&ppdu::UserData::one(CTX_RTSE, bytes)),
    }
}

/// The remote operations (X.880) that carry the MTA bind in the 1988 mode: the bind's
/// argument, result and error, each tagged as ROS tags them.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
enum RosBind {
    #[rasn(tag(explicit(context, 16)))]
    Invoke(Any),
    #[rasn(tag(explicit(context, 17)))]
    Result(Any),
    /// MTABindError, an INTEGER, under an implicit tag (as ROS's readers take it).
    #[rasn(tag(context, 18))]
    Error(i64),
}

/// What RTSE's connection data carries of the bind in `mode` (1988: inside ROS).
fn bind_out(mode: Mode, value: Vec<u8>, wrap: fn(Any) -> RosBind) -> Any {
    match mode {
        Mode::X410 => Any::new(value),
        Mode::Normal => Any::new(rasn::ber::encode(&wrap(Any::new(value))).unwrap_or_default()),
    }
}

/// The bind value inside RTSE's connection data, with ROS's wrapping taken off if it
/// has one.
fn bind_in(data: &[u8]) -> Vec<u8> {
    match rasn::ber::decode::<RosBind>(data) {
        Ok(RosBind::Invoke(a) | RosBind::Result(a)) => a.into_bytes(),
        Ok(RosBind::Error(e)) => p1::encode(&e),
        Err(_) => data.to_vec(),
    }
}

/// A transferred APDU as RTSE carries it: an EXTERNAL naming the RTSE context (1988),
/// the APDU itself (1984).
fn transfer_out(mode: Mode, ctx: i64, apdu: &[u8]) -> Vec<u8> {
    match mode {
        Mode::X410 => apdu.to_vec(),
        Mode::Normal => rasn::ber::encode(&acse::External::in_context(ctx, apdu.to_vec())).unwrap_or_default(),
    }
}

/// The APDU out of a transfer's octets: an EXTERNAL's value, or the octets themselves.
fn transfer_in(octets: Vec<u8>) -> Vec<u8> {
    if octets.first() == Some(&0x28)
        && let Ok(e) = rasn::ber::decode::<acse::External>(&octets)
        && let Some(v) = e.value()
    {
        return v.to_vec();
    }
    octets
}

fn cpr_normal(
    results: Option<Vec<ppdu::ContextResult>>,
    reason: Option<i64>,
    user: Option<ppdu::UserData>,
) -> ppdu::Cpr {
    ppdu::Cpr::Normal(ppdu::CprNormal {
        protocol_version: None,
        responding_selector: None,
        results,
        default_context_result: None,
        provider_reason: reason,
        user_data: user,
    })
}

fn aare(result: i64, diagnostic: acse::SourceDiagnostic, rtse_ctx: i64, inner: &rtse::Apdu) -> Vec<u8> {
    let user = vec![acse::External::in_context(rtse_ctx, rtse::encode(inner))];
    acse::encode(&acse::Apdu::Aare(acse::Aare::new(oid(oid::MTS_TRANSFER), result, diagnostic, user)))
}

/// The session version bit kept: 2 when both have it.
fn version_bit(v: u8) -> u8 {
    if v == 2 { 2 } else { 1 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    /// Waiting for CR.
    Transport,
    /// Waiting for CN.
    Session,
    /// CN taken; the MTA decides on the bind.
    Binding,
    /// Bound: transfers.
    Data,
    Closed,
}

/// The called side of an association.
#[derive(Debug)]
pub struct Responder {
    limits: Limits,
    ours: Selectors,
    state: RState,
    size_code: u8,
    peer_ref: u16,
    mode: Mode,
    version: u8,
    requirements: u16,
    /// Normal mode: the contexts the initiator chose for ACSE and RTSE, and the result
    /// of each it proposed.
    ctx_acse: i64,
    ctx_rtse: i64,
    results: Vec<ppdu::ContextResult>,
    tsdu: Reassembly,
    /// The APDU of the transfer under way (activity), when one is.
    transfer: Option<Vec<u8>>,
    serial: u64,
}

impl Responder {
    pub fn new(ours: Selectors, limits: Limits) -> Responder {
        Responder {
            limits,
            ours,
            state: RState::Transport,
            size_code: cotp::DEFAULT_SIZE_CODE,
            peer_ref: 0,
            mode: Mode::Normal,
            version: 2,
            requirements: 0,
            ctx_acse: CTX_ACSE,
            ctx_rtse: CTX_RTSE,
            results: Vec::new(),
            tsdu: Reassembly::default(),
            transfer: None,
            serial: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn is_closed(&self) -> bool {
        self.state == RState::Closed
    }

    /// Takes one TPDU; what to send and what happened. A failure is answered in the
    /// failing layer's own terms (ER, DR, RF, AB) in the returned octets, and ends the
    /// association.
    pub fn receive(&mut self, tpdu: &[u8]) -> (Out, Vec<Event>) {
        match self.receive_inner(tpdu) {
            Ok(x) => x,
            Err((out, f)) => {
                self.state = RState::Closed;
                (out, vec![Event::Aborted(f)])
            }
        }
    }

    fn receive_inner(&mut self, tpdu: &[u8]) -> Result<(Out, Vec<Event>), (Out, Failure)> {
        let t = match Tpdu::decode(tpdu) {
            Ok(t) => t,
            Err(e) => {
                let er = Tpdu::Er { dst_ref: self.peer_ref, cause: e.cause(), invalid: tpdu.to_vec() };
                return Err((vec![er.encode()], fail("transport", e.to_string())));
            }
        };
        match (self.state, t) {
            (RState::Transport, Tpdu::Cr(c)) => {
                self.peer_ref = c.src_ref;
                if !self.ours.tsel.is_empty() && c.called != self.ours.tsel {
                    let dr = Tpdu::Dr { dst_ref: c.src_ref, src_ref: 0, reason: cotp::DR_ADDRESS_UNKNOWN };
                    return Err((vec![dr.encode()], fail("transport", "called TSAP selector unknown")));
                }
                self.size_code = cotp::negotiate(c.size_code, self.limits.size_code);
                let cc = Tpdu::Cc(Connect {
                    dst_ref: c.src_ref,
                    src_ref: 0x4147,
                    class: 0,
                    size_code: Some(self.size_code),
                    calling: c.calling,
                    called: c.called,
                });
                self.state = RState::Session;
                Ok((vec![cc.encode()], vec![Event::TransportConnected]))
            }
            (RState::Transport, _) => {
                let er = Tpdu::Er { dst_ref: 0, cause: cotp::ER_INVALID_CODE, invalid: tpdu.to_vec() };
                Err((vec![er.encode()], fail("transport", "a TPDU before the connection request")))
            }
            (RState::Closed, _) => Ok((Vec::new(), Vec::new())),
            (_, Tpdu::Dt { eot, data }) => {
                // Before the bind a peer gets no more than a connect needs.
                let max = if self.state == RState::Data { self.limits.max_apdu + 4096 } else { PRE_BIND_TSDU };
                let pushed = self.tsdu.push(eot, &data, max);
                let Some(tsdu) = pushed.map_err(|f| (self.abort_out(), f))? else {
                    return Ok((Vec::new(), Vec::new()));
                };
                self.on_tsdu(&tsdu)
            }
            (_, Tpdu::Dr { .. }) => {
                self.state = RState::Closed;
                Ok((Vec::new(), vec![Event::Aborted(fail("transport", "the peer disconnected"))]))
            }
            (_, Tpdu::Er { cause, .. }) => {
                self.state = RState::Closed;
                Ok((Vec::new(), vec![Event::Aborted(fail("transport", format!("the peer reported error {cause}")))]))
            }
            (_, Tpdu::Cr(_) | Tpdu::Cc(_)) => {
                let er = Tpdu::Er { dst_ref: self.peer_ref, cause: cotp::ER_INVALID_CODE, invalid: tpdu.to_vec() };
                Err((vec![er.encode()], fail("transport", "a connection TPDU on a connection")))
            }
        }
    }

    /// An AB SPDU that ends the association, the mode's provider abort inside.
    fn abort_out(&self) -> Out {
        let mut ab = Spdu::new(spdu::SI_AB);
        ab.transport_disconnect = Some(spdu::TD_RELEASE | spdu::TD_PROTOCOL_ERROR);
        ab.user_data = match self.mode {
            Mode::Normal => {
                ppdu::encode(&ppdu::Abort::Provider(ppdu::Arp { reason: Some(ppdu::ARP_UNEXPECTED_PPDU), event: None }))
            }
            Mode::X410 => ppdu::encode(&ppdu::Abort::X410(rtse::Rtab {
                abort_reason: Some(rtse::AB_PROTOCOL_ERROR),
                reflected_parameter: None,
                user_data: None,
            })),
        };
        spdu_out(&ab, self.size_code)
    }

    fn on_tsdu(&mut self, tsdu: &[u8]) -> Result<(Out, Vec<Event>), (Out, Failure)> {
        let s = match spdu::decode_tsdu(tsdu) {
            Ok(s) => s,
            Err(e) => return Err((self.abort_out(), fail("session", e.to_string()))),
        };
        match (self.state, s.si) {
            (RState::Session, spdu::SI_CN) => self.on_connect(s),
            (RState::Data, spdu::SI_AS) => {
                self.transfer = Some(Vec::new());
                self.serial = 1;
                Ok((Vec::new(), Vec::new()))
            }
            (RState::Data, spdu::SI_DT) => self.on_data(&s.info),
            (RState::Data, spdu::SI_MAP) => {
                let Some(apdu) = self.transfer.take() else {
                    return Err((self.abort_out(), fail("session", "a sync point outside an activity")));
                };
                self.serial = s.serial.unwrap_or(self.serial);
                if !s.end_of_activity {
                    // A major sync inside the activity: confirmed, the transfer goes on.
                    self.transfer = Some(apdu);
                    return Ok((self.sync_ack(), Vec::new()));
                }
                if apdu.is_empty() {
                    return Ok((self.sync_ack(), Vec::new()));
                }
                Ok((Vec::new(), vec![Event::Transfer(transfer_in(apdu))]))
            }
            (RState::Data | RState::Binding, spdu::SI_FN) => {
                // Normal mode carries RLRQ; answered with RLRE.
                let mut dn = Spdu::new(spdu::SI_DN);
                if self.mode == Mode::Normal {
                    let rlre = acse::encode(&acse::Apdu::Rlre(acse::Rlre { reason: Some(0), user_information: None }));
                    dn.user_data = ppdu::encode(&ppdu::UserData::one(self.ctx_acse, rlre));
                }
                self.state = RState::Closed;
                Ok((spdu_out(&dn, self.size_code), vec![Event::Released]))
            }
            (_, spdu::SI_AB) => {
                self.state = RState::Closed;
                let aa = Spdu::new(spdu::SI_AA);
                Ok((spdu_out(&aa, self.size_code), vec![Event::Aborted(fail("session", "the peer aborted"))]))
            }
            (_, si) => Err((self.abort_out(), fail("session", format!("SPDU {si} out of place")))),
        }
    }

    fn on_data(&mut self, info: &[u8]) -> Result<(Out, Vec<Event>), (Out, Failure)> {
        let apdu = self.rtse_in(info).map_err(|f| (self.abort_out(), f))?;
        match apdu {
            rtse::Apdu::Rttr(octets) => {
                if self.requirements & spdu::FU_ACTIVITY == 0 {
                    // Without activities each transfer stands alone.
                    return Ok((Vec::new(), vec![Event::Transfer(transfer_in(octets.to_vec()))]));
                }
                let max = self.limits.max_apdu;
                let Some(buf) = self.transfer.as_mut() else {
                    return Err((self.abort_out(), fail("RTSE", "data outside an activity")));
                };
                if buf.len() + octets.len() > max {
                    return Err((self.abort_out(), fail("RTSE", format!("an APDU larger than {max} octets"))));
                }
                buf.extend_from_slice(&octets);
                Ok((Vec::new(), Vec::new()))
            }
            // The turn asked for: this side never sends (monologue).
            rtse::Apdu::Rttp(_) => Ok((Vec::new(), Vec::new())),
            rtse::Apdu::Rtab(_) => {
                self.state = RState::Closed;
                Ok((Vec::new(), vec![Event::Aborted(fail("RTSE", "the peer aborted"))]))
            }
            _ => Err((self.abort_out(), fail("RTSE", "an APDU out of place"))),
        }
    }

    /// The RTSE APDU of a P-DATA.
    fn rtse_in(&self, info: &[u8]) -> Result<rtse::Apdu, Failure> {
        let bytes = match self.mode {
            // Simply encoded; taken bare too.
            Mode::X410 => match ppdu::decode::<ppdu::UserData>(info) {
                Ok(ppdu::UserData::Simple(o)) => o.to_vec(),
                _ => info.to_vec(),
            },
            Mode::Normal => {
                let ud: ppdu::UserData = ppdu::decode(info).map_err(|e| fail("presentation", e))?;
                let values = ud.values();
                let [(ctx, v)] = values.as_slice() else {
                    return Err(fail("presentation", "P-DATA without exactly one value"));
                };
                if *ctx != self.ctx_rtse {
                    return Err(fail("presentation", format!("data in context {ctx}, not RTSE's")));
                }
                v.to_vec()
            }
        };
        rtse::decode(&bytes).map_err(|e| fail("RTSE", e))
    }

    fn refuse_session(&self, reason: u8, why: &str) -> (Out, Failure) {
        let mut rf = Spdu::new(spdu::SI_RF);
        rf.transport_disconnect = Some(spdu::TD_RELEASE);
        rf.reason = Some(reason);
        (spdu_out(&rf, self.size_code), fail("session", why))
    }

    fn refuse_presentation(&self, cpr: ppdu::Cpr, layer: &'static str, why: &str) -> (Out, Failure) {
        let mut rf = Spdu::new(spdu::SI_RF);
        rf.transport_disconnect = Some(spdu::TD_RELEASE);
        rf.reason = Some(spdu::RF_BY_USER);
        rf.user_data = ppdu::encode(&cpr);
        (spdu_out(&rf, self.size_code), fail(layer, why))
    }

    /// RTORJ, with the MTA bind error inside when there is one, in the mode's wrapping.
    fn refuse_rtse(&self, reason: i64, bind_error: Option<i64>, why: &str) -> (Out, Failure) {
        let rj = rtse::Rtorj {
            refuse_reason: Some(reason),
            user_data: bind_error.map(|e| match self.mode {
                Mode::X410 => Any::new(p1::encode(&e)),
                Mode::Normal => Any::new(rasn::ber::encode(&RosBind::Error(e)).unwrap_or_default()),
            }),
        };
        let cpr = match self.mode {
            Mode::X410 => ppdu::Cpr::X410(rj),
            Mode::Normal => {
                let aare = aare(
                    acse::REJECTED_PERMANENT,
                    acse::SourceDiagnostic::User(acse::DIAG_NO_REASON),
                    self.ctx_rtse,
                    &rtse::Apdu::Rtorj(rj),
                );
                cpr_normal(Some(self.results.clone()), None, Some(ppdu::UserData::one(self.ctx_acse, aare)))
            }
        };
        let layer = if bind_error.is_some() { "P1 bind" } else { "RTSE" };
        self.refuse_presentation(cpr, layer, why)
    }

    fn on_connect(&mut self, s: Spdu) -> Result<(Out, Vec<Event>), (Out, Failure)> {
        let version = s.version.unwrap_or(1);
        self.version = if version & 2 != 0 {
            2
        } else if version & 1 != 0 {
            1
        } else {
            return Err(self.refuse_session(spdu::RF_VERSION, "no session version in common"));
        };
        if !self.ours.ssel.is_empty() && s.called_ssel.as_deref() != Some(self.ours.ssel.as_slice()) {
            return Err(self.refuse_session(spdu::RF_SSAP_UNKNOWN, "called SSAP selector unknown"));
        }
        // Functional units: what was proposed of those RTSE uses.
        // Absent, the requirements are X.225's default (RTSE's set).
        self.requirements =
            s.requirements.unwrap_or(spdu::RTSE_REQUIREMENTS) & (spdu::RTSE_REQUIREMENTS | spdu::FU_DUPLEX);
        let cp: ppdu::Cp = match ppdu::decode(&s.user_data) {
            Ok(cp) => cp,
            Err(e) => {
                let cpr = cpr_normal(None, Some(ppdu::CPR_USER_DATA_NOT_READABLE), None);
                return Err(self.refuse_presentation(cpr, "presentation", &e));
            }
        };
        let rtorq = match (cp.mode.mode_value, cp.x410, cp.normal) {
            (ppdu::X410_MODE, Some(rq), _) => {
                self.mode = Mode::X410;
                if rq.application_protocol.is_some_and(|p| p != P1_1984) {
                    return Err(self.refuse_rtse(
                        rtse::RJ_VALIDATION_FAILURE,
                        None,
                        "an application protocol other than P1",
                    ));
                }
                rq
            }
            (ppdu::NORMAL_MODE, _, Some(n)) => {
                self.mode = Mode::Normal;
                self.normal_connect(n)?
            }
            _ => {
                let cpr = cpr_normal(None, Some(ppdu::CPR_NOT_SPECIFIED), None);
                return Err(self.refuse_presentation(cpr, "presentation", "a CP without the parameters of its mode"));
            }
        };
        if rtorq.dialogue_mode.unwrap_or(0) != 0 {
            return Err(self.refuse_rtse(
                rtse::RJ_UNACCEPTABLE_DIALOGUE_MODE,
                Some(p1::BIND_UNACCEPTABLE_DIALOGUE_MODE),
                "two-way alternate dialogue",
            ));
        }
        let bind = match rtorq.connection_data {
            rtse::ConnectionData::Open(any) => match p1::decode::<p1::Bind>(&bind_in(any.as_bytes())) {
                Ok(b) => b,
                Err(e) => return Err(self.refuse_rtse(rtse::RJ_VALIDATION_FAILURE, None, &e)),
            },
            // Checkpointing is off: nothing to recover; the sender sends again.
            rtse::ConnectionData::Recover(_) => {
                return Err(self.refuse_rtse(rtse::RJ_CANNOT_RECOVER, None, "recovery asked with checkpointing off"));
            }
        };
        self.state = RState::Binding;
        Ok((Vec::new(), vec![Event::Bind { mode: self.mode, bind }]))
    }

    /// Normal mode: the contexts (ACSE and MTA-RTSE in BER accepted, others not) and
    /// the AARQ with the RTORQ in its user information.
    fn normal_connect(&mut self, n: ppdu::CpNormal) -> Result<rtse::Rtorq, (Out, Failure)> {
        if !self.ours.psel.is_empty() && n.called_selector.as_deref() != Some(self.ours.psel.as_slice()) {
            let cpr = cpr_normal(None, Some(ppdu::CPR_ADDRESS_UNKNOWN), None);
            return Err(self.refuse_presentation(cpr, "presentation", "called PSAP selector unknown"));
        }
        let ber = oid(oid::BER);
        let (mut acse_ctx, mut rtse_ctx) = (None, None);
        self.results.clear();
        for c in n.contexts.unwrap_or_default().iter().take(32) {
            let known = [oid::ACSE, oid::MTA_RTSE, oid::MTSE].iter().any(|o| c.abstract_syntax == oid(o));
            let result = if !known {
                ppdu::ContextResult {
                    result: ppdu::CONTEXT_PROVIDER_REJECTION,
                    transfer_syntax: None,
                    provider_reason: Some(ppdu::REASON_ABSTRACT_SYNTAX),
                }
            } else if !c.transfer_syntaxes.contains(&ber) {
                ppdu::ContextResult {
                    result: ppdu::CONTEXT_PROVIDER_REJECTION,
                    transfer_syntax: None,
                    provider_reason: Some(ppdu::REASON_TRANSFER_SYNTAX),
                }
            } else {
                if c.abstract_syntax == oid(oid::ACSE) {
                    acse_ctx = Some(c.id);
                } else if c.abstract_syntax == oid(oid::MTA_RTSE) {
                    rtse_ctx = Some(c.id);
                }
                ppdu::ContextResult {
                    result: ppdu::CONTEXT_ACCEPTED,
                    transfer_syntax: Some(ber.clone()),
                    provider_reason: None,
                }
            };
            self.results.push(result);
        }
        let (Some(a), Some(r)) = (acse_ctx, rtse_ctx) else {
            let cpr = cpr_normal(Some(self.results.clone()), Some(ppdu::CPR_NOT_SPECIFIED), None);
            return Err(self.refuse_presentation(cpr, "presentation", "no ACSE and MTA-RTSE contexts in BER"));
        };
        (self.ctx_acse, self.ctx_rtse) = (a, r);
        let user = n.user_data.as_ref().map(|u| u.values()).unwrap_or_default();
        let Some((_, aarq)) = user.iter().find(|(c, _)| *c == a) else {
            let cpr = cpr_normal(Some(self.results.clone()), Some(ppdu::CPR_USER_DATA_NOT_READABLE), None);
            return Err(self.refuse_presentation(cpr, "presentation", "no AARQ in the ACSE context"));
        };
        let aarq = match acse::decode(aarq) {
            Ok(acse::Apdu::Aarq(q)) => q,
            Ok(_) => return Err(self.refuse_acse(acse::DIAG_NO_REASON, "an ACSE APDU other than AARQ")),
            Err(e) => return Err(self.refuse_acse(acse::DIAG_NO_REASON, &e)),
        };
        if aarq.application_context_name != oid(oid::MTS_TRANSFER) {
            return Err(
                self.refuse_acse(acse::DIAG_CONTEXT_NOT_SUPPORTED, "an application context other than MTS transfer")
            );
        }
        let inner = aarq
            .user_information
            .iter()
            .flatten()
            .find(|e| e.indirect_reference == Some(r))
            .and_then(|e| e.value())
            .map(rtse::decode);
        match inner {
            Some(Ok(rtse::Apdu::Rtorq(rq))) => Ok(rq),
            _ => Err(self.refuse_rtse(rtse::RJ_VALIDATION_FAILURE, None, "no RTORQ in the AARQ")),
        }
    }

    fn refuse_acse(&self, diagnostic: i64, why: &str) -> (Out, Failure) {
        let rj = rtse::Apdu::Rtorj(rtse::Rtorj { refuse_reason: Some(rtse::RJ_VALIDATION_FAILURE), user_data: None });
        let aare = aare(acse::REJECTED_PERMANENT, acse::SourceDiagnostic::User(diagnostic), self.ctx_rtse, &rj);
        let cpr = cpr_normal(Some(self.results.clone()), None, Some(ppdu::UserData::one(self.ctx_acse, aare)));
        self.refuse_presentation(cpr, "ACSE", why)
    }

    /// Accepts the bind, answering with this MTA's own.
    pub fn accept(&mut self, ours: &p1::Bind) -> Out {
        let rtoac = rtse::Rtoac {
            checkpoint_size: None,
            window_size: None,
            connection_data: rtse::ConnectionData::Open(bind_out(self.mode, p1::encode(ours), RosBind::Result)),
        };
        let cpa = match self.mode {
            Mode::X410 => {
                ppdu::Cpa { mode: ppdu::ModeSelector { mode_value: ppdu::X410_MODE }, x410: Some(rtoac), normal: None }
            }
            Mode::Normal => {
                let aare = aare(
                    acse::ACCEPTED,
                    acse::SourceDiagnostic::User(acse::DIAG_NULL),
                    self.ctx_rtse,
                    &rtse::Apdu::Rtoac(rtoac),
                );
                ppdu::Cpa {
                    mode: ppdu::ModeSelector { mode_value: ppdu::NORMAL_MODE },
                    x410: None,
                    normal: Some(ppdu::CpaNormal {
                        protocol_version: None,
                        responding_selector: (!self.ours.psel.is_empty())
                            .then(|| OctetString::from(self.ours.psel.clone())),
                        results: Some(self.results.clone()),
                        presentation_requirements: None,
                        user_session_requirements: None,
                        user_data: Some(ppdu::UserData::one(self.ctx_acse, aare)),
                    }),
                }
            }
        };
        let mut ac = Spdu::new(spdu::SI_AC);
        ac.version = Some(version_bit(self.version));
        ac.requirements = Some(self.requirements);
        if !self.ours.ssel.is_empty() {
            ac.called_ssel = Some(self.ours.ssel.clone());
        }
        ac.user_data = ppdu::encode(&cpa);
        self.state = RState::Data;
        spdu_out(&ac, self.size_code)
    }

    /// Refuses the bind with an MTABindError (authentication-error, busy, ...).
    pub fn refuse(&mut self, error: i64, why: &str) -> (Out, Failure) {
        self.state = RState::Closed;
        self.refuse_rtse(rtse::RJ_VALIDATION_FAILURE, Some(error), why)
    }

    /// Confirms the transfer just received: it is kept, the sender may forget it.
    pub fn confirm(&mut self) -> Out {
        if self.requirements & spdu::FU_ACTIVITY == 0 {
            return Vec::new();
        }
        self.sync_ack()
    }

    /// Aborts the association (the MTA cannot go on).
    pub fn abort(&mut self) -> Out {
        self.state = RState::Closed;
        self.abort_out()
    }

    fn sync_ack(&self) -> Out {
        let mut maa = Spdu::new(spdu::SI_MAA);
        maa.serial = Some(self.serial);
        spdu_out(&maa, self.size_code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IState {
    Transport,
    Session,
    Data,
    /// A transfer sent, its confirmation awaited.
    Transfer,
    Releasing,
    Closed,
}

/// The calling side of an association.
#[derive(Debug)]
pub struct Initiator {
    limits: Limits,
    mode: Mode,
    ours: Selectors,
    theirs: Selectors,
    bind: p1::Bind,
    state: IState,
    size_code: u8,
    requirements: u16,
    tsdu: Reassembly,
    activity: u32,
    /// The context transfers name: the MTS APDUs' own when the peer took it, else RTSE's.
    transfer_ctx: i64,
}

impl Initiator {
    /// A new association: the CR to send first.
    pub fn new(mode: Mode, ours: Selectors, theirs: Selectors, bind: p1::Bind, limits: Limits) -> (Initiator, Out) {
        let cr = Tpdu::Cr(Connect {
            dst_ref: 0,
            src_ref: 0x4147,
            class: 0,
            size_code: Some(limits.size_code),
            calling: ours.tsel.clone(),
            called: theirs.tsel.clone(),
        });
        let i = Initiator {
            limits,
            mode,
            ours,
            theirs,
            bind,
            state: IState::Transport,
            size_code: cotp::DEFAULT_SIZE_CODE,
            requirements: 0,
            tsdu: Reassembly::default(),
            activity: 0,
            transfer_ctx: CTX_RTSE,
        };
        (i, vec![cr.encode()])
    }

    pub fn is_closed(&self) -> bool {
        self.state == IState::Closed
    }

    fn connect_spdu(&self) -> Spdu {
        let rtorq = rtse::Rtorq {
            checkpoint_size: None,
            window_size: None,
            dialogue_mode: None,
            connection_data: rtse::ConnectionData::Open(bind_out(self.mode, p1::encode(&self.bind), RosBind::Invoke)),
            application_protocol: (self.mode == Mode::X410).then_some(P1_1984),
        };
        let cp = match self.mode {
            Mode::X410 => {
                ppdu::Cp { mode: ppdu::ModeSelector { mode_value: ppdu::X410_MODE }, x410: Some(rtorq), normal: None }
            }
            Mode::Normal => {
                let user = vec![acse::External::in_context(CTX_RTSE, rtse::encode(&rtse::Apdu::Rtorq(rtorq)))];
                let aarq = acse::encode(&acse::Apdu::Aarq(acse::Aarq::new(oid(oid::MTS_TRANSFER), user)));
                let sel = |s: &Vec<u8>| (!s.is_empty()).then(|| OctetString::from(s.clone()));
                ppdu::Cp {
                    mode: ppdu::ModeSelector { mode_value: ppdu::NORMAL_MODE },
                    x410: None,
                    normal: Some(ppdu::CpNormal {
                        protocol_version: None,
                        calling_selector: sel(&self.ours.psel),
                        called_selector: sel(&self.theirs.psel),
                        contexts: Some(vec![
                            ppdu::ContextDefinition {
                                id: CTX_ACSE,
                                abstract_syntax: oid(oid::ACSE),
                                transfer_syntaxes: vec![oid(oid::BER)],
                            },
                            ppdu::ContextDefinition {
                                id: CTX_RTSE,
                                abstract_syntax: oid(oid::MTA_RTSE),
                                transfer_syntaxes: vec![oid(oid::BER)],
                            },
                            // The MTS APDUs that transfers carry, named as such.
                            ppdu::ContextDefinition {
                                id: CTX_MTSE,
                                abstract_syntax: oid(oid::MTSE),
                                transfer_syntaxes: vec![oid(oid::BER)],
                            },
                        ]),
                        default_context: None,
                        presentation_requirements: None,
                        user_session_requirements: None,
                        user_data: Some(ppdu::UserData::one(CTX_ACSE, aarq)),
                    }),
                }
            }
        };
        let mut cn = Spdu::new(spdu::SI_CN);
        cn.protocol_options = Some(0);
        cn.version = Some(2);
        cn.serial = Some(0);
        cn.requirements = Some(spdu::RTSE_REQUIREMENTS);
        if !self.ours.ssel.is_empty() {
            cn.calling_ssel = Some(self.ours.ssel.clone());
        }
        if !self.theirs.ssel.is_empty() {
            cn.called_ssel = Some(self.theirs.ssel.clone());
        }
        cn.user_data = ppdu::encode(&cp);
        cn
    }

    /// Takes one TPDU from the peer: what to send and what happened.
    pub fn receive(&mut self, tpdu: &[u8]) -> (Out, Vec<Event>) {
        let t = match Tpdu::decode(tpdu) {
            Ok(t) => t,
            Err(e) => {
                self.state = IState::Closed;
                let er = Tpdu::Er { dst_ref: 0, cause: e.cause(), invalid: tpdu.to_vec() };
                return (vec![er.encode()], vec![Event::Aborted(fail("transport", e.to_string()))]);
            }
        };
        match (self.state, t) {
            (IState::Transport, Tpdu::Cc(c)) => {
                self.size_code = cotp::negotiate(c.size_code, self.limits.size_code);
                self.state = IState::Session;
                (spdu_out(&self.connect_spdu(), self.size_code), vec![Event::TransportConnected])
            }
            (IState::Transport, Tpdu::Dr { reason, .. }) => {
                self.state = IState::Closed;
                let why = if reason == cotp::DR_ADDRESS_UNKNOWN {
                    "called TSAP selector unknown".into()
                } else {
                    format!("refused, reason {reason}")
                };
                (Vec::new(), vec![Event::Refused(fail("transport", why))])
            }
            (IState::Closed, _) => (Vec::new(), Vec::new()),
            (_, Tpdu::Dt { eot, data }) => match self.tsdu.push(eot, &data, {
                if self.state == IState::Session { PRE_BIND_TSDU } else { self.limits.max_apdu + 4096 }
            }) {
                Ok(Some(tsdu)) => self.on_tsdu(&tsdu),
                Ok(None) => (Vec::new(), Vec::new()),
                Err(f) => {
                    self.state = IState::Closed;
                    (Vec::new(), vec![Event::Aborted(f)])
                }
            },
            (_, Tpdu::Er { cause, .. }) => {
                self.state = IState::Closed;
                (Vec::new(), vec![Event::Aborted(fail("transport", format!("the peer reported error {cause}")))])
            }
            (_, _) => {
                self.state = IState::Closed;
                (Vec::new(), vec![Event::Aborted(fail("transport", "a TPDU out of place"))])
            }
        }
    }

    fn on_tsdu(&mut self, tsdu: &[u8]) -> (Out, Vec<Event>) {
        let s = match spdu::decode_tsdu(tsdu) {
            Ok(s) => s,
            Err(e) => {
                self.state = IState::Closed;
                return (Vec::new(), vec![Event::Aborted(fail("session", e.to_string()))]);
            }
        };
        let close = |me: &mut Initiator, e: Event| {
            me.state = IState::Closed;
            (Vec::new(), vec![e])
        };
        match (self.state, s.si) {
            (IState::Session, spdu::SI_AC) => {
                self.requirements = s.requirements.unwrap_or(spdu::RTSE_REQUIREMENTS);
                match self.accepted(&s.user_data) {
                    Ok(bind) => {
                        self.state = IState::Data;
                        (Vec::new(), vec![Event::Bound { bind }])
                    }
                    Err(f) => close(self, Event::Refused(f)),
                }
            }
            (IState::Session, spdu::SI_RF) => {
                let f = self.refusal(&s);
                close(self, Event::Refused(f))
            }
            (IState::Transfer, spdu::SI_MAA) => {
                self.state = IState::Data;
                (Vec::new(), vec![Event::Confirmed])
            }
            (IState::Releasing, spdu::SI_DN) => close(self, Event::Released),
            (_, spdu::SI_AB) => close(self, Event::Aborted(fail("session", "the peer aborted"))),
            (_, si) => close(self, Event::Aborted(fail("session", format!("SPDU {si} out of place")))),
        }
    }

    /// The peer's bind result from an accepting CPA.
    fn accepted(&mut self, user_data: &[u8]) -> Result<p1::Bind, Failure> {
        let cpa: ppdu::Cpa = ppdu::decode(user_data).map_err(|e| fail("presentation", e))?;
        let rtoac = match (self.mode, cpa.x410, cpa.normal) {
            (Mode::X410, Some(ac), _) => ac,
            (Mode::Normal, _, Some(n)) => {
                // ACSE and RTSE must be taken; the MTS APDUs' own context may not be.
                let results = n.results.clone().unwrap_or_default();
                if results.iter().take(2).any(|r| r.result != ppdu::CONTEXT_ACCEPTED) {
                    return Err(fail("presentation", "a context was not accepted"));
                }
                if results.get(2).is_some_and(|r| r.result == ppdu::CONTEXT_ACCEPTED) {
                    self.transfer_ctx = CTX_MTSE;
                }
                let values = n.user_data.as_ref().map(|u| u.values()).unwrap_or_default();
                let aare = values.iter().find(|(c, _)| *c == CTX_ACSE).ok_or_else(|| fail("ACSE", "no AARE"))?;
                let aare = match acse::decode(aare.1).map_err(|e| fail("ACSE", e))? {
                    acse::Apdu::Aare(a) => a,
                    _ => return Err(fail("ACSE", "an ACSE APDU other than AARE")),
                };
                if aare.result != acse::ACCEPTED {
                    return Err(fail("ACSE", format!("association rejected ({})", aare.result)));
                }
                let inner = aare.user_information.iter().flatten().find_map(|e| e.value().map(rtse::decode));
                match inner {
                    Some(Ok(rtse::Apdu::Rtoac(ac))) => ac,
                    _ => return Err(fail("RTSE", "no RTOAC in the AARE")),
                }
            }
            _ => return Err(fail("presentation", "a CPA of the other mode")),
        };
        match rtoac.connection_data {
            rtse::ConnectionData::Open(any) => p1::decode(&bind_in(any.as_bytes())).map_err(|e| fail("P1 bind", e)),
            rtse::ConnectionData::Recover(_) => Err(fail("RTSE", "a recovery answer to an open")),
        }
    }

    /// What an RF says, layer by layer.
    fn refusal(&self, s: &Spdu) -> Failure {
        let reason = s.reason.unwrap_or(0);
        if reason != spdu::RF_BY_USER || s.user_data.is_empty() {
            let what = match reason {
                spdu::RF_SSAP_UNKNOWN => "called SSAP selector unknown".to_string(),
                spdu::RF_VERSION => "no session version in common".to_string(),
                spdu::RF_CONGESTION => "congestion".to_string(),
                r => format!("refused, reason {r}"),
            };
            return fail("session", what);
        }
        let cpr: ppdu::Cpr = match ppdu::decode(&s.user_data) {
            Ok(c) => c,
            Err(e) => return fail("presentation", format!("an unreadable refusal: {e}")),
        };
        let rj = match cpr {
            ppdu::Cpr::X410(rj) => rj,
            ppdu::Cpr::Normal(n) => {
                let values = n.user_data.as_ref().map(|u| u.values()).unwrap_or_default();
                let Some((_, aare)) = values.iter().find(|(c, _)| *c == CTX_ACSE) else {
                    let what = match n.provider_reason {
                        Some(ppdu::CPR_ADDRESS_UNKNOWN) => "called PSAP selector unknown".to_string(),
                        Some(r) => format!("refused, reason {r}"),
                        None => "refused".to_string(),
                    };
                    return fail("presentation", what);
                };
                let aare = match acse::decode(aare) {
                    Ok(acse::Apdu::Aare(a)) => a,
                    _ => return fail("ACSE", "refused without a readable AARE"),
                };
                if aare.result_source_diagnostic == acse::SourceDiagnostic::User(acse::DIAG_CONTEXT_NOT_SUPPORTED) {
                    return fail("ACSE", "application context not supported");
                }
                let inner = aare.user_information.iter().flatten().find_map(|e| e.value().map(rtse::decode));
                match inner {
                    Some(Ok(rtse::Apdu::Rtorj(rj))) => rj,
                    _ => return fail("ACSE", format!("association rejected ({})", aare.result)),
                }
            }
        };
        if let Some(e) = rj.user_data.as_ref().and_then(|a| p1::decode::<i64>(&bind_in(a.as_bytes())).ok()) {
            let what = match e {
                p1::BIND_AUTHENTICATION_ERROR => "authentication error".to_string(),
                p1::BIND_BUSY => "busy".to_string(),
                p1::BIND_UNACCEPTABLE_DIALOGUE_MODE => "unacceptable dialogue mode".to_string(),
                e => format!("bind error {e}"),
            };
            return fail("P1 bind", what);
        }
        fail("RTSE", format!("refused, reason {}", rj.refuse_reason.unwrap_or(-1)))
    }

    /// Sends one APDU (an MTS APDU's encoding) as one transfer; `Confirmed` follows.
    pub fn transfer(&mut self, apdu: &[u8]) -> Out {
        let dt = |mode: Mode, a: &rtse::Apdu| {
            let mut d = Spdu::new(spdu::SI_DT);
            d.info = pdata(mode, a);
            d
        };
        let rttr = rtse::Apdu::Rttr(OctetString::from(transfer_out(self.mode, self.transfer_ctx, apdu)));
        if self.requirements & spdu::FU_ACTIVITY == 0 {
            // Without activities nothing confirms a transfer but its arrival.
            return spdu_out(&dt(self.mode, &rttr), self.size_code);
        }
        self.activity = self.activity.wrapping_add(1) % 1_000_000;
        let mut start = Spdu::new(spdu::SI_AS);
        start.activity_id = Some(self.activity.to_string().into_bytes());
        let mut end = Spdu::new(spdu::SI_MAP);
        end.end_of_activity = true;
        end.serial = Some(1);
        let mut out = spdu_out(&start, self.size_code);
        out.extend(spdu_out(&dt(self.mode, &rttr), self.size_code));
        out.extend(spdu_out(&end, self.size_code));
        self.state = IState::Transfer;
        out
    }

    /// Whether transfers are confirmed (activities agreed).
    pub fn confirms(&self) -> bool {
        self.requirements & spdu::FU_ACTIVITY != 0
    }

    /// Aborts the association (the partner did not prove itself).
    pub fn abort(&mut self) -> Out {
        self.state = IState::Closed;
        let mut ab = Spdu::new(spdu::SI_AB);
        ab.transport_disconnect = Some(spdu::TD_RELEASE | spdu::TD_USER_ABORT);
        spdu_out(&ab, self.size_code)
    }

    /// Releases the association in order; `Released` follows.
    pub fn release(&mut self) -> Out {
        let mut fin = Spdu::new(spdu::SI_FN);
        fin.transport_disconnect = Some(spdu::TD_RELEASE);
        if self.mode == Mode::Normal {
            let rlrq = acse::encode(&acse::Apdu::Rlrq(acse::Rlrq { reason: Some(0), user_information: None }));
            fin.user_data = ppdu::encode(&ppdu::UserData::one(CTX_ACSE, rlrq));
        }
        self.state = IState::Releasing;
        spdu_out(&fin, self.size_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs octets between the two sides until neither has more to say.
    fn pump(i: &mut Initiator, r: &mut Responder, mut to_r: Out) -> (Vec<Event>, Vec<Event>) {
        let (mut ie, mut re) = (Vec::new(), Vec::new());
        let mut to_i: Out = Vec::new();
        while !to_r.is_empty() || !to_i.is_empty() {
            for t in std::mem::take(&mut to_r) {
                let (out, ev) = r.receive(&t);
                to_i.extend(out);
                for e in ev {
                    if let Event::Bind { bind, .. } = &e {
                        let ok = bind.name_and_password() == Some(("MTA-A".into(), b"pw-a".to_vec()));
                        let out = if ok {
                            r.accept(&p1::Bind::new("MTA-B", "pw-b").unwrap())
                        } else {
                            r.refuse(p1::BIND_AUTHENTICATION_ERROR, "wrong password").0
                        };
                        to_i.extend(out);
                    }
                    if let Event::Transfer(_) = &e {
                        to_i.extend(r.confirm());
                    }
                    re.push(e);
                }
            }
            for t in std::mem::take(&mut to_i) {
                let (out, ev) = i.receive(&t);
                to_r.extend(out);
                ie.extend(ev);
            }
        }
        (ie, re)
    }

    fn run(mode: Mode, password: &str) -> (Vec<Event>, Vec<Event>) {
        let (mut i, out) = Initiator::new(
            mode,
            Selectors::default(),
            Selectors::default(),
            p1::Bind::new("MTA-A", password).unwrap(),
            Limits::default(),
        );
        let mut r = Responder::new(Selectors::default(), Limits::default());
        let (mut ie, mut re) = pump(&mut i, &mut r, out);
        if i.is_closed() {
            return (ie, re);
        }
        let big = rasn::ber::encode(&OctetString::from(vec![0x5a; 10_000])).unwrap();
        let out = i.transfer(&big);
        let (a, b) = pump(&mut i, &mut r, out);
        ie.extend(a);
        re.extend(b);
        let out = i.release();
        let (a, b) = pump(&mut i, &mut r, out);
        ie.extend(a);
        re.extend(b);
        (ie, re)
    }

    #[test]
    fn both_modes_bind_transfer_and_release() {
        for mode in [Mode::Normal, Mode::X410] {
            let (ie, re) = run(mode, "pw-a");
            assert!(matches!(&re[1], Event::Bind { mode: m, .. } if *m == mode), "{re:?}");
            assert!(
                ie.iter().any(|e| matches!(e, Event::Bound { bind } if bind.name_and_password().unwrap().0 == "MTA-B")),
                "{ie:?}"
            );
            let big = rasn::ber::encode(&OctetString::from(vec![0x5a; 10_000])).unwrap();
            assert!(re.contains(&Event::Transfer(big)), "{mode:?}");
            assert!(ie.contains(&Event::Confirmed) && ie.contains(&Event::Released), "{ie:?}");
            assert!(re.contains(&Event::Released));
        }
    }

    #[test]
    fn a_wrong_password_is_refused_as_a_bind_error() {
        for mode in [Mode::Normal, Mode::X410] {
            let (ie, _) = run(mode, "wrong");
            assert!(
                ie.iter().any(
                    |e| matches!(e, Event::Refused(f) if f.layer == "P1 bind" && f.what == "authentication error")
                ),
                "{mode:?}: {ie:?}"
            );
        }
    }

    #[test]
    fn each_layer_refuses_in_its_own_terms() {
        let mut r = Responder::new(Selectors { tsel: b"X400".to_vec(), ..Selectors::default() }, Limits::default());
        let cr = Tpdu::Cr(Connect {
            dst_ref: 0,
            src_ref: 1,
            class: 0,
            size_code: None,
            calling: vec![],
            called: b"nope".to_vec(),
        });
        let (out, ev) = r.receive(&cr.encode());
        assert!(matches!(Tpdu::decode(&out[0]), Ok(Tpdu::Dr { reason: cotp::DR_ADDRESS_UNKNOWN, .. })));
        assert!(matches!(&ev[0], Event::Aborted(f) if f.layer == "transport"));
        // Garbage TPDU: an ER.
        let mut r = Responder::new(Selectors::default(), Limits::default());
        let (out, _) = r.receive(&[2, 0x10, 0]);
        assert!(matches!(Tpdu::decode(&out[0]), Ok(Tpdu::Er { cause: cotp::ER_INVALID_CODE, .. })));
        // A bad SPDU after a good CR: an AB.
        let mut r = Responder::new(Selectors::default(), Limits::default());
        let cr =
            Tpdu::Cr(Connect { dst_ref: 0, src_ref: 1, class: 0, size_code: None, calling: vec![], called: vec![] });
        r.receive(&cr.encode());
        let (out, ev) = r.receive(&Tpdu::Dt { eot: true, data: vec![77, 0] }.encode());
        let Ok(Tpdu::Dt { data, .. }) = Tpdu::decode(&out[0]) else { panic!("{out:?}") };
        assert_eq!(data[0], spdu::SI_AB);
        assert!(matches!(&ev[0], Event::Aborted(f) if f.layer == "session"));
        // A CN whose user data is no presentation PPDU: an RF with a CPR.
        let mut r = Responder::new(Selectors::default(), Limits::default());
        r.receive(&cr.encode());
        let mut cn = Spdu::new(spdu::SI_CN);
        cn.version = Some(2);
        cn.user_data = vec![1, 2, 3];
        let (out, ev) = r.receive(&Tpdu::Dt { eot: true, data: spdu::encode_tsdu(&cn) }.encode());
        let Ok(Tpdu::Dt { data, .. }) = Tpdu::decode(&out[0]) else { panic!("{out:?}") };
        let rf = spdu::decode_tsdu(&data).unwrap();
        assert_eq!((rf.si, rf.reason), (spdu::SI_RF, Some(spdu::RF_BY_USER)));
        assert!(matches!(ppdu::decode::<ppdu::Cpr>(&rf.user_data), Ok(ppdu::Cpr::Normal(_))));
        assert!(matches!(&ev[0], Event::Aborted(f) if f.layer == "presentation"));
        // A CP proposing only a context this MTA does not serve: a CPR saying which.
        let mut r = Responder::new(Selectors::default(), Limits::default());
        r.receive(&cr.encode());
        let cp = ppdu::Cp {
            mode: ppdu::ModeSelector { mode_value: ppdu::NORMAL_MODE },
            x410: None,
            normal: Some(ppdu::CpNormal {
                protocol_version: None,
                calling_selector: None,
                called_selector: None,
                contexts: Some(vec![ppdu::ContextDefinition {
                    id: 1,
                    abstract_syntax: ObjectIdentifier::new(vec![1, 2, 3]).unwrap(),
                    transfer_syntaxes: vec![oid(oid::BER)],
                }]),
                default_context: None,
                presentation_requirements: None,
                user_session_requirements: None,
                user_data: None,
            }),
        };
        let mut cn = Spdu::new(spdu::SI_CN);
        cn.version = Some(2);
        cn.user_data = ppdu::encode(&cp);
        let (out, ev) = r.receive(&Tpdu::Dt { eot: true, data: spdu::encode_tsdu(&cn) }.encode());
        let Ok(Tpdu::Dt { data, .. }) = Tpdu::decode(&out[0]) else { panic!("{out:?}") };
        let rf = spdu::decode_tsdu(&data).unwrap();
        let Ok(ppdu::Cpr::Normal(n)) = ppdu::decode::<ppdu::Cpr>(&rf.user_data) else { panic!("{rf:?}") };
        let results = n.results.unwrap();
        assert_eq!(results[0].result, ppdu::CONTEXT_PROVIDER_REJECTION);
        assert_eq!(results[0].provider_reason, Some(ppdu::REASON_ABSTRACT_SYNTAX));
        assert!(matches!(&ev[0], Event::Aborted(f) if f.layer == "presentation"));
        // Truncated BER in the AARQ: refused in ACSE's terms (a rejected AARE).
        let mut r = Responder::new(Selectors::default(), Limits::default());
        r.receive(&cr.encode());
        let mut cp = cp;
        if let Some(n) = cp.normal.as_mut() {
            n.contexts = Some(vec![
                ppdu::ContextDefinition {
                    id: 1,
                    abstract_syntax: oid(oid::ACSE),
                    transfer_syntaxes: vec![oid(oid::BER)],
                },
                ppdu::ContextDefinition {
                    id: 3,
                    abstract_syntax: oid(oid::MTA_RTSE),
                    transfer_syntaxes: vec![oid(oid::BER)],
                },
            ]);
            n.user_data = Some(ppdu::UserData::Full(vec![ppdu::PdvList {
                transfer_syntax: None,
                context: 1,
                values: ppdu::PdvValues::Octets(OctetString::from_static(&[0x60, 0x10, 0xa1])),
            }]));
        }
        cn.user_data = ppdu::encode(&cp);
        let (out, ev) = r.receive(&Tpdu::Dt { eot: true, data: spdu::encode_tsdu(&cn) }.encode());
        let Ok(Tpdu::Dt { data, .. }) = Tpdu::decode(&out[0]) else { panic!("{out:?}") };
        let rf = spdu::decode_tsdu(&data).unwrap();
        let Ok(ppdu::Cpr::Normal(n)) = ppdu::decode::<ppdu::Cpr>(&rf.user_data) else { panic!("{rf:?}") };
        let values = n.user_data.as_ref().unwrap().values();
        assert!(matches!(acse::decode(values[0].1), Ok(acse::Apdu::Aare(a)) if a.result == acse::REJECTED_PERMANENT));
        assert!(matches!(&ev[0], Event::Aborted(f) if f.layer == "ACSE"));
    }
}
