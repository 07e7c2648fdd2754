//! Connection-oriented DCE/RPC PDUs (C706 §12.6, MS-RPCE §2.2.2): the common header,
//! bind / bind_ack / bind_nak / alter_context(_resp), request / response / fault,
//! auth3, cancel, orphaned and shutdown, with the security trailer. Pure: bytes in,
//! values out, and back. Integers follow the sender's data representation (little- or
//! big-endian); what we send is little-endian, ASCII, IEEE.

/// The largest fragment taken from a client (MS-RPCE allows up to 65535).
pub const MAX_FRAGMENT: usize = 65535;
/// The common header's length.
pub const HEADER: usize = 16;
/// The security trailer before an auth value.
pub const SEC_TRAILER: usize = 8;

pub const PFC_FIRST_FRAG: u8 = 0x01;
pub const PFC_LAST_FRAG: u8 = 0x02;
pub const PFC_PENDING_CANCEL: u8 = 0x04;
pub const PFC_SUPPORT_HEADER_SIGN: u8 = 0x04;
pub const PFC_CONC_MPX: u8 = 0x10;
pub const PFC_DID_NOT_EXECUTE: u8 = 0x20;
pub const PFC_MAYBE: u8 = 0x40;
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// The data representation we send: little-endian integers, ASCII, IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

/// A 16-byte interface or transfer-syntax identifier, as it travels (NDR: the first
/// three fields in the sender's byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// From the usual text form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (as little-endian
    /// wire bytes).
    pub fn parse(text: &str) -> Option<Uuid> {
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut be = [0u8; 16];
        for (i, b) in be.iter_mut().enumerate() {
            *b = u8::from_str_radix(std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?, 16).ok()?;
        }
        let mut le = be;
        le[0..4].reverse();
        le[4..6].reverse();
        le[6..8].reverse();
        Some(Uuid(le))
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

/// An interface or transfer syntax with its version (major in the low 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Syntax {
    pub uuid: Uuid,
    pub version: u32,
}

/// NDR 2.0 (8a885d04-1ceb-11c9-9fe8-08002b104860 v2).
pub fn ndr() -> Syntax {
    Syntax { uuid: Uuid::parse("8a885d04-1ceb-11c9-9fe8-08002b104860").unwrap_or_default(), version: 2 }
}

/// NDR64 (71710533-beba-4937-8319-b5dbef9ccc36 v1), which we decline.
pub fn ndr64() -> Syntax {
    Syntax { uuid: Uuid::parse("71710533-beba-4937-8319-b5dbef9ccc36").unwrap_or_default(), version: 1 }
}

/// One presentation context a client proposes in a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: u16,
    pub abstract_syntax: Syntax,
    pub transfer_syntaxes: Vec<Syntax>,
}

/// The answer to one proposed context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextResult {
    /// 0 acceptance, 1 user rejection, 2 provider rejection, 3 negotiate ack.
    pub result: u16,
    /// 0 not specified, 1 abstract syntax not supported, 2 transfer syntaxes not supported.
    pub reason: u16,
    pub transfer_syntax: Syntax,
}

/// The security trailer and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// 10: NTLMSSP (RPC_C_AUTHN_WINNT), 9: SPNEGO, 0: none.
    pub auth_type: u8,
    /// 1 none … 5 packet integrity, 6 packet privacy.
    pub level: u8,
    pub pad: u8,
    pub context_id: u32,
    pub value: Vec<u8>,
}

/// What a PDU carries after the common header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Bind {
        max_xmit: u16,
        max_recv: u16,
        assoc_group: u32,
        contexts: Vec<Context>,
    },
    AlterContext {
        max_xmit: u16,
        max_recv: u16,
        assoc_group: u32,
        contexts: Vec<Context>,
    },
    BindAck {
        max_xmit: u16,
        max_recv: u16,
        assoc_group: u32,
        secondary: String,
        results: Vec<ContextResult>,
    },
    AlterContextResp {
        max_xmit: u16,
        max_recv: u16,
        assoc_group: u32,
        secondary: String,
        results: Vec<ContextResult>,
    },
    /// Reason: 0 not specified, 4 protocol version not supported, …; the versions we speak.
    BindNak {
        reason: u16,
    },
    Request {
        alloc_hint: u32,
        context: u16,
        opnum: u16,
        object: Option<Uuid>,
        stub: Vec<u8>,
    },
    Response {
        alloc_hint: u32,
        context: u16,
        cancel_count: u8,
        stub: Vec<u8>,
    },
    Fault {
        alloc_hint: u32,
        context: u16,
        cancel_count: u8,
        status: u32,
    },
    Auth3,
    CoCancel,
    Orphaned,
    Shutdown,
}

impl Body {
    fn ptype(&self) -> u8 {
        match self {
            Body::Request { .. } => 0,
            Body::Response { .. } => 2,
            Body::Fault { .. } => 3,
            Body::Bind { .. } => 11,
            Body::BindAck { .. } => 12,
            Body::BindNak { .. } => 13,
            Body::AlterContext { .. } => 14,
            Body::AlterContextResp { .. } => 15,
            Body::Auth3 => 16,
            Body::Shutdown => 17,
            Body::CoCancel => 18,
            Body::Orphaned => 19,
        }
    }
}

/// One PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub flags: u8,
    pub call_id: u32,
    pub body: Body,
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// More bytes are needed for the whole fragment.
    #[error("incomplete PDU")]
    Incomplete,
    #[error("malformed PDU: {0}")]
    Malformed(&'static str),
    /// Version other than 5.0: answered with bind_nak where possible.
    #[error("unsupported RPC version {0}.{1}")]
    Version(u8, u8),
    #[error("PDU type {0} is not taken here")]
    UnknownType(u8),
}

/// A reader in the sender's byte order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PduError> {
        let end = self.pos.checked_add(n).ok_or(PduError::Malformed("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(PduError::Malformed("body shorter than its fields"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PduError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PduError> {
        let b: [u8; 2] = self.take(2)?.try_into().map_err(|_| PduError::Malformed("u16"))?;
        Ok(if self.little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }
    fn u32(&mut self) -> Result<u32, PduError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| PduError::Malformed("u32"))?;
        Ok(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
    fn uuid(&mut self) -> Result<Uuid, PduError> {
        let mut b: [u8; 16] = self.take(16)?.try_into().map_err(|_| PduError::Malformed("uuid"))?;
        if !self.little {
            b[0..4].reverse();
            b[4..6].reverse();
            b[6..8].reverse();
        }
        Ok(Uuid(b))
    }
    fn syntax(&mut self) -> Result<Syntax, PduError> {
        Ok(Syntax { uuid: self.uuid()?, version: self.u32()? })
    }
    fn align(&mut self, n: usize) -> Result<(), PduError> {
        let pad = (n - self.pos % n) % n;
        self.take(pad).map(|_| ())
    }
}

/// How long the fragment at the start of `buf` is, once its header is there.
pub fn fragment_length(buf: &[u8]) -> Result<usize, PduError> {
    if buf.len() < HEADER {
        return Err(PduError::Incomplete);
    }
    let little = buf[4] & 0xF0 == 0x10;
    let b = [buf[8], buf[9]];
    let len = usize::from(if little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) });
    if len < HEADER {
        return Err(PduError::Malformed("fragment shorter than its header"));
    }
    Ok(len)
}

/// Decodes the fragment at the start of `buf`; returns it and its length.
pub fn decode(buf: &[u8]) -> Result<(Pdu, usize), PduError> {
    let len = fragment_length(buf)?;
    if buf.len() < len {
        return Err(PduError::Incomplete);
    }
    let frag = &buf[..len];
    let (vers, minor) = (frag[0], frag[1]);
    if vers != 5 || minor > 1 {
        return Err(PduError::Version(vers, minor));
    }
    let (ptype, flags) = (frag[2], frag[3]);
    let little = frag[4] & 0xF0 == 0x10;
    let mut r = Reader { buf: frag, pos: 10, little };
    let auth_length = usize::from(r.u16()?);
    let call_id = r.u32()?;
    // The security trailer sits before the auth value at the fragment's end.
    let (body_end, auth) = if auth_length > 0 {
        let start = len
            .checked_sub(auth_length + SEC_TRAILER)
            .filter(|s| *s >= HEADER)
            .ok_or(PduError::Malformed("auth value longer than the fragment"))?;
        let mut t = Reader { buf: frag, pos: start, little };
        let (auth_type, level, pad, _reserved) = (t.u8()?, t.u8()?, t.u8()?, t.u8()?);
        let context_id = t.u32()?;
        let value = t.take(auth_length)?.to_vec();
        let body_end =
            start.checked_sub(usize::from(pad)).filter(|e| *e >= HEADER).ok_or(PduError::Malformed("auth padding"))?;
        (body_end, Some(Auth { auth_type, level, pad, context_id, value }))
    } else {
        (len, None)
    };
    let mut r = Reader { buf: &frag[..body_end], pos: HEADER, little };
    let contexts = |r: &mut Reader<'_>| -> Result<Vec<Context>, PduError> {
        let n = r.u8()?;
        r.take(3)?;
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let id = r.u16()?;
            let n_syn = r.u8()?;
            r.take(1)?;
            let abstract_syntax = r.syntax()?;
            let mut transfer_syntaxes = Vec::with_capacity(usize::from(n_syn));
            for _ in 0..n_syn {
                transfer_syntaxes.push(r.syntax()?);
            }
            out.push(Context { id, abstract_syntax, transfer_syntaxes });
        }
        Ok(out)
    };
    let results = |r: &mut Reader<'_>| -> Result<(String, Vec<ContextResult>), PduError> {
        let n = usize::from(r.u16()?);
        let sec = r.take(n)?;
        let secondary = String::from_utf8_lossy(sec.strip_suffix(&[0]).unwrap_or(sec)).into_owned();
        r.align(4)?;
        let count = r.u8()?;
        r.take(3)?;
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(ContextResult { result: r.u16()?, reason: r.u16()?, transfer_syntax: r.syntax()? });
        }
        Ok((secondary, out))
    };
    let body = match ptype {
        0 => {
            let (alloc_hint, context, opnum) = (r.u32()?, r.u16()?, r.u16()?);
            let object = if flags & PFC_OBJECT_UUID != 0 { Some(r.uuid()?) } else { None };
            Body::Request { alloc_hint, context, opnum, object, stub: r.buf[r.pos..].to_vec() }
        }
        2 => {
            let (alloc_hint, context, cancel_count) = (r.u32()?, r.u16()?, r.u8()?);
            r.take(1)?;
            Body::Response { alloc_hint, context, cancel_count, stub: r.buf[r.pos..].to_vec() }
        }
        3 => {
            let (alloc_hint, context, cancel_count) = (r.u32()?, r.u16()?, r.u8()?);
            r.take(1)?;
            Body::Fault { alloc_hint, context, cancel_count, status: r.u32()? }
        }
        11 | 14 => {
            let (max_xmit, max_recv, assoc_group) = (r.u16()?, r.u16()?, r.u32()?);
            let contexts = contexts(&mut r)?;
            if ptype == 11 {
                Body::Bind { max_xmit, max_recv, assoc_group, contexts }
            } else {
                Body::AlterContext { max_xmit, max_recv, assoc_group, contexts }
            }
        }
        12 | 15 => {
            let (max_xmit, max_recv, assoc_group) = (r.u16()?, r.u16()?, r.u32()?);
            let (secondary, results) = results(&mut r)?;
            if ptype == 12 {
                Body::BindAck { max_xmit, max_recv, assoc_group, secondary, results }
            } else {
                Body::AlterContextResp { max_xmit, max_recv, assoc_group, secondary, results }
            }
        }
        13 => Body::BindNak { reason: r.u16()? },
        16 => Body::Auth3,
        17 => Body::Shutdown,
        18 => Body::CoCancel,
        19 => Body::Orphaned,
        other => return Err(PduError::UnknownType(other)),
    };
    Ok((Pdu { flags, call_id, body, auth }, len))
}

/// Little-endian writer.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn syntax(&mut self, s: &Syntax) {
        self.0.extend_from_slice(&s.uuid.0);
        self.u32(s.version);
    }
    fn align(&mut self, n: usize) {
        while !self.0.len().is_multiple_of(n) {
            self.0.push(0);
        }
    }
}

/// Encodes a PDU (little-endian) as one fragment. None when it would not fit in one.
pub fn encode(pdu: &Pdu) -> Option<Vec<u8>> {
    let mut w = Writer::default();
    w.0.extend_from_slice(&[5, 0, pdu.body.ptype(), pdu.flags]);
    w.0.extend_from_slice(&DREP_LE);
    w.u16(0); // frag_length, set below
    w.u16(pdu.auth.as_ref().map_or(0, |a| a.value.len() as u16));
    w.u32(pdu.call_id);
    let contexts = |w: &mut Writer, contexts: &[Context]| {
        w.u8(contexts.len() as u8);
        w.0.extend_from_slice(&[0; 3]);
        for c in contexts {
            w.u16(c.id);
            w.u8(c.transfer_syntaxes.len() as u8);
            w.u8(0);
            w.syntax(&c.abstract_syntax);
            for t in &c.transfer_syntaxes {
                w.syntax(t);
            }
        }
    };
    let results = |w: &mut Writer, secondary: &str, results: &[ContextResult]| {
        let sec = if secondary.is_empty() { Vec::new() } else { [secondary.as_bytes(), &[0]].concat() };
        w.u16(sec.len() as u16);
        w.0.extend_from_slice(&sec);
        w.align(4);
        w.u8(results.len() as u8);
        w.0.extend_from_slice(&[0; 3]);
        for r in results {
            w.u16(r.result);
            w.u16(r.reason);
            w.syntax(&r.transfer_syntax);
        }
    };
    match &pdu.body {
        Body::Request { alloc_hint, context, opnum, object, stub } => {
            w.u32(*alloc_hint);
            w.u16(*context);
            w.u16(*opnum);
            if let Some(o) = object {
                w.0.extend_from_slice(&o.0);
            }
            w.0.extend_from_slice(stub);
        }
        Body::Response { alloc_hint, context, cancel_count, stub } => {
            w.u32(*alloc_hint);
            w.u16(*context);
            w.u8(*cancel_count);
            w.u8(0);
            w.0.extend_from_slice(stub);
        }
        Body::Fault { alloc_hint, context, cancel_count, status } => {
            w.u32(*alloc_hint);
            w.u16(*context);
            w.u8(*cancel_count);
            w.u8(0);
            w.u32(*status);
            w.u32(0);
        }
        Body::Bind { max_xmit, max_recv, assoc_group, contexts: c }
        | Body::AlterContext { max_xmit, max_recv, assoc_group, contexts: c } => {
            w.u16(*max_xmit);
            w.u16(*max_recv);
            w.u32(*assoc_group);
            contexts(&mut w, c);
        }
        Body::BindAck { max_xmit, max_recv, assoc_group, secondary, results: r }
        | Body::AlterContextResp { max_xmit, max_recv, assoc_group, secondary, results: r } => {
            w.u16(*max_xmit);
            w.u16(*max_recv);
            w.u32(*assoc_group);
            results(&mut w, secondary, r);
        }
        Body::BindNak { reason } => {
            w.u16(*reason);
            // The protocol versions supported: one, 5.0.
            w.u8(1);
            w.u8(5);
            w.u8(0);
        }
        Body::Auth3 => w.u32(0),
        Body::CoCancel | Body::Orphaned | Body::Shutdown => {}
    }
    if let Some(a) = &pdu.auth {
        let pad = (4 - w.0.len() % 4) % 4;
        w.0.extend(std::iter::repeat_n(0, pad));
        w.u8(a.auth_type);
        w.u8(a.level);
        w.u8(pad as u8);
        w.u8(0);
        w.u32(a.context_id);
        w.0.extend_from_slice(&a.value);
    }
    let len = u16::try_from(w.0.len()).ok()?;
    w.0[8..10].copy_from_slice(&len.to_le_bytes());
    Some(w.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epm() -> Syntax {
        Syntax { uuid: Uuid::parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa").expect("uuid"), version: 3 }
    }

    #[test]
    fn uuids_print_as_they_parse() {
        let text = "e1af8308-5d1f-11c9-91a4-08002b14a0fa";
        let u = Uuid::parse(text).expect("uuid");
        assert_eq!(u.to_string(), text);
        assert_eq!(u.0[..4], [0x08, 0x83, 0xaf, 0xe1], "the first field little-endian on the wire");
        assert!(Uuid::parse("e1af8308-5d1f-11c9-91a4-08002b14a0f").is_none());
    }

    #[test]
    fn bind_and_ack_round_trip() {
        let bind = Pdu {
            flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
            call_id: 7,
            body: Body::Bind {
                max_xmit: 4280,
                max_recv: 4280,
                assoc_group: 0,
                contexts: vec![
                    Context { id: 0, abstract_syntax: epm(), transfer_syntaxes: vec![ndr()] },
                    Context { id: 1, abstract_syntax: epm(), transfer_syntaxes: vec![ndr64()] },
                ],
            },
            auth: None,
        };
        let bytes = encode(&bind).expect("fits");
        assert_eq!(fragment_length(&bytes), Ok(bytes.len()));
        assert_eq!(decode(&bytes), Ok((bind, bytes.len())));
        let ack = Pdu {
            flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
            call_id: 7,
            body: Body::BindAck {
                max_xmit: 4280,
                max_recv: 4280,
                assoc_group: 0x1234,
                secondary: "135".into(),
                results: vec![
                    ContextResult { result: 0, reason: 0, transfer_syntax: ndr() },
                    ContextResult { result: 2, reason: 2, transfer_syntax: Syntax::default() },
                ],
            },
            auth: None,
        };
        let bytes = encode(&ack).expect("fits");
        assert_eq!(decode(&bytes).map(|d| d.0), Ok(ack));
    }

    #[test]
    fn requests_with_auth_and_object() {
        let req = Pdu {
            flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_OBJECT_UUID,
            call_id: 2,
            body: Body::Request {
                alloc_hint: 3,
                context: 0,
                opnum: 3,
                object: Some(Uuid([9; 16])),
                stub: vec![1, 2, 3],
            },
            auth: Some(Auth { auth_type: 10, level: 6, pad: 1, context_id: 0, value: vec![0xAA; 16] }),
        };
        let bytes = encode(&req).expect("fits");
        let (back, n) = decode(&bytes).expect("decodes");
        assert_eq!(n, bytes.len());
        assert_eq!(back, req, "the padding before the trailer is not stub data");
    }

    #[test]
    fn big_endian_headers_are_read() {
        let mut bytes = encode(&Pdu { flags: 3, call_id: 1, body: Body::Shutdown, auth: None }).expect("fits");
        bytes[4] = 0x00;
        bytes[8..10].copy_from_slice(&(16u16).to_be_bytes());
        bytes[12..16].copy_from_slice(&(0x0102_0304u32).to_be_bytes());
        assert_eq!(decode(&bytes).map(|d| d.0.call_id), Ok(0x0102_0304));
    }

    #[test]
    fn bad_pdus_are_refused_not_panicked_on() {
        assert_eq!(decode(&[5, 0, 0]), Err(PduError::Incomplete));
        let mut short = encode(&Pdu { flags: 3, call_id: 1, body: Body::Shutdown, auth: None }).expect("fits");
        short[8] = 4;
        assert_eq!(decode(&short), Err(PduError::Malformed("fragment shorter than its header")));
        let mut v4 = encode(&Pdu { flags: 3, call_id: 1, body: Body::Shutdown, auth: None }).expect("fits");
        v4[0] = 4;
        assert_eq!(decode(&v4), Err(PduError::Version(4, 0)));
        let mut auth = encode(&Pdu { flags: 3, call_id: 1, body: Body::Shutdown, auth: None }).expect("fits");
        auth[10] = 200;
        assert!(matches!(decode(&auth), Err(PduError::Malformed(_))));
        let req = encode(&Pdu {
            flags: 3,
            call_id: 1,
            body: Body::Request { alloc_hint: 0, context: 0, opnum: 0, object: None, stub: Vec::new() },
            auth: None,
        })
        .expect("fits");
        let mut cut = req.clone();
        cut.truncate(20);
        cut[8..10].copy_from_slice(&20u16.to_le_bytes());
        assert!(matches!(decode(&cut), Err(PduError::Malformed(_))));
        let mut unknown = req;
        unknown[2] = 99;
        assert_eq!(decode(&unknown), Err(PduError::UnknownType(99)));
    }
}
