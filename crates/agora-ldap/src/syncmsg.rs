//! What a sync consumer reads from a provider (RFC 4533), decoded at the BER level:
//! entries with their Sync State control, Sync Info messages, the search's end with its
//! Sync Done control, and the other responses a consumer waits for. Decoded by hand over
//! ldap3_lber's tags because the general decoder drops a Sync Info cookie when the
//! optional flag after it is absent (the usual encoding) and refuses a newcookie sent as
//! RFC 4533 writes it.

use ldap3_lber::structure::{PL, StructureTag};
use ldap3_lber::universal::Types;

/// Sync Info: what the provider says between entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete { cookie: Option<Vec<u8>>, done: bool },
    RefreshPresent { cookie: Option<Vec<u8>>, done: bool },
    IdSet { cookie: Option<Vec<u8>>, refresh_deletes: bool, uuids: Vec<[u8; 16]> },
}

/// A Sync State control's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Add,
    Modify,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
    pub state: State,
    pub uuid: [u8; 16],
    pub cookie: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A search result entry with its Sync State control (None: the control is missing).
    Entry(Option<SyncEntry>),
    Info(SyncInfo),
    /// The end of the search: result code, message, and its Sync Done control's cookie and
    /// refreshDeletes.
    Done {
        code: u32,
        message: String,
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
    },
    /// A bind or extended response: result code and message.
    Result {
        op: u64,
        code: u32,
        message: String,
    },
    /// Anything else (a referral, a Notice of Disconnection's kin): ignored.
    Other(u64),
}

const SYNC_STATE: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.4";

fn parse(bytes: &[u8]) -> Option<StructureTag> {
    let mut parser = ldap3_lber::parse::Parser::new(32);
    let (rest, tag) = parser.parse(bytes).ok()?;
    rest.is_empty().then_some(tag)
}

fn prim(t: StructureTag) -> Option<Vec<u8>> {
    t.expect_primitive()
}

/// A BER INTEGER's content octets (at most eight), as a signed number.
pub(crate) fn int(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut n: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
    for b in bytes {
        n = (n << 8) | *b as i64;
    }
    Some(n)
}

fn boolean(t: StructureTag) -> Option<bool> {
    let v = prim(t)?;
    (v.len() == 1).then(|| v[0] != 0)
}

fn is_universal(t: &StructureTag, ty: Types) -> bool {
    t.class == ldap3_lber::common::TagClass::Universal && t.id == ty as u64
}

fn uuid(v: &[u8]) -> Option<[u8; 16]> {
    v.try_into().ok()
}

/// Decodes one LDAPMessage a provider sent; None when it is not one.
pub fn decode(frame: &[u8]) -> Option<(i32, Message)> {
    let top = parse(frame)?.expect_constructed()?;
    let mut parts = top.into_iter();
    let id = int(&prim(parts.next()?)?)?;
    let op = parts.next()?;
    let controls: Vec<(Vec<u8>, Option<Vec<u8>>)> = match parts.next() {
        Some(t) if t.class == ldap3_lber::common::TagClass::Context && t.id == 0 => {
            let mut out = Vec::new();
            for c in t.expect_constructed()? {
                let mut f = c.expect_constructed()?.into_iter();
                let oid = prim(f.next()?)?;
                let mut value = None;
                for rest in f {
                    if is_universal(&rest, Types::OctetString) {
                        value = prim(rest);
                    }
                }
                out.push((oid, value));
            }
            out
        }
        _ => Vec::new(),
    };
    let control = |oid: &[u8]| controls.iter().find(|(o, _)| o == oid).and_then(|(_, v)| v.clone());
    if op.class != ldap3_lber::common::TagClass::Application {
        return None;
    }
    let opid = op.id;
    let id = i32::try_from(id).ok()?;
    let msg = match opid {
        4 => {
            let mut f = op.expect_constructed()?.into_iter();
            let dn = String::from_utf8(prim(f.next()?)?).ok()?;
            let mut attrs = Vec::new();
            for a in f.next()?.expect_constructed()? {
                let mut af = a.expect_constructed()?.into_iter();
                let name = String::from_utf8(prim(af.next()?)?).ok()?;
                let values = af.next()?.expect_constructed()?.into_iter().map(prim).collect::<Option<Vec<_>>>()?;
                attrs.push((name, values));
            }
            let state = control(SYNC_STATE).and_then(|v| sync_state(&v));
            Message::Entry(state.map(|(state, uuid, cookie)| SyncEntry { dn, attrs, state, uuid, cookie }))
        }
        25 => {
            let mut name = None;
            let mut value = None;
            for t in op.expect_constructed()? {
                match (t.class, t.id) {
                    (ldap3_lber::common::TagClass::Context, 0) => name = prim(t),
                    (ldap3_lber::common::TagClass::Context, 1) => value = prim(t),
                    _ => {}
                }
            }
            match (name.as_deref(), value) {
                (Some(SYNC_INFO), Some(v)) => Message::Info(sync_info(&v)?),
                _ => Message::Other(opid),
            }
        }
        5 | 1 | 24 => {
            let mut f = op.expect_constructed()?.into_iter();
            let code = int(&prim(f.next()?)?)?;
            let _matched = prim(f.next()?)?;
            let message = String::from_utf8_lossy(&prim(f.next()?)?).into_owned();
            let code = u32::try_from(code).ok()?;
            if opid == 5 {
                let (cookie, refresh_deletes) = control(SYNC_DONE).and_then(|v| sync_done(&v)).unwrap_or((None, false));
                Message::Done { code, message, cookie, refresh_deletes }
            } else {
                Message::Result { op: opid, code, message }
            }
        }
        other => Message::Other(other),
    };
    Some((id, msg))
}

/// `syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID OCTET STRING, cookie OCTET STRING OPTIONAL }`
fn sync_state(v: &[u8]) -> Option<(State, [u8; 16], Option<Vec<u8>>)> {
    let mut f = parse(v)?.expect_constructed()?.into_iter();
    let state = match int(&prim(f.next()?)?)? {
        0 => State::Present,
        1 => State::Add,
        2 => State::Modify,
        3 => State::Delete,
        _ => return None,
    };
    let id = uuid(&prim(f.next()?)?)?;
    let cookie = f.next().and_then(prim);
    Some((state, id, cookie))
}

/// `syncDoneValue ::= SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }`
fn sync_done(v: &[u8]) -> Option<(Option<Vec<u8>>, bool)> {
    let mut cookie = None;
    let mut deletes = false;
    for t in parse(v)?.expect_constructed()? {
        if is_universal(&t, Types::OctetString) {
            cookie = prim(t);
        } else if is_universal(&t, Types::Boolean) {
            deletes = boolean(t)?;
        }
    }
    Some((cookie, deletes))
}

/// `syncInfoValue` (RFC 4533 §2.5): the four choices by their context tags.
pub fn sync_info(v: &[u8]) -> Option<SyncInfo> {
    let t = parse(v)?;
    if t.class != ldap3_lber::common::TagClass::Context {
        return None;
    }
    match (t.id, t.payload) {
        (0, PL::P(cookie)) => Some(SyncInfo::NewCookie(cookie)),
        // Some providers wrap the cookie in a constructed [0].
        (0, PL::C(inner)) => Some(SyncInfo::NewCookie(prim(inner.into_iter().next()?)?)),
        (id @ (1 | 2), PL::C(inner)) => {
            let mut cookie = None;
            let mut done = true;
            for f in inner {
                if is_universal(&f, Types::OctetString) {
                    cookie = prim(f);
                } else if is_universal(&f, Types::Boolean) {
                    done = boolean(f)?;
                }
            }
            Some(if id == 1 {
                SyncInfo::RefreshDelete { cookie, done }
            } else {
                SyncInfo::RefreshPresent { cookie, done }
            })
        }
        (3, PL::C(inner)) => {
            let mut cookie = None;
            let mut refresh_deletes = false;
            let mut uuids = None;
            for f in inner {
                if is_universal(&f, Types::OctetString) {
                    cookie = prim(f);
                } else if is_universal(&f, Types::Boolean) {
                    refresh_deletes = boolean(f)?;
                } else if is_universal(&f, Types::Set) {
                    let set = f.expect_constructed()?;
                    uuids = Some(set.into_iter().map(|u| uuid(&prim(u)?)).collect::<Option<Vec<_>>>()?);
                }
            }
            Some(SyncInfo::IdSet { cookie, refresh_deletes, uuids: uuids? })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use ldap3_proto::control::LdapControl;
    use ldap3_proto::proto::*;

    fn wire(msg: LdapMsg) -> Vec<u8> {
        let mut out = BytesMut::new();
        crate::session::encode(msg, &mut out);
        out.to_vec()
    }

    #[test]
    fn entries_with_their_state() {
        let msg = LdapMsg::new_with_ctrls(
            7,
            LdapOp::SearchResultEntry(LdapSearchResultEntry {
                dn: "uid=a,ou=people,dc=example,dc=org".into(),
                attributes: vec![LdapPartialAttribute { atype: "cn".into(), vals: vec![b"A".to_vec(), b"B".to_vec()] }],
            }),
            vec![LdapControl::SyncState {
                state: SyncStateValue::Modify,
                entry_uuid: uuid::Uuid::from_bytes([9; 16]),
                cookie: Some(b"csn=x".to_vec()),
            }],
        );
        let (id, m) = decode(&wire(msg)).unwrap();
        assert_eq!(id, 7);
        let Message::Entry(Some(e)) = m else { panic!("{m:?}") };
        assert_eq!(e.state, State::Modify);
        assert_eq!(e.uuid, [9; 16]);
        assert_eq!(e.cookie.as_deref(), Some(&b"csn=x"[..]));
        assert_eq!(e.attrs, vec![("cn".to_string(), vec![b"A".to_vec(), b"B".to_vec()])]);
    }

    #[test]
    fn sync_info_in_every_form() {
        // newcookie as RFC 4533 writes it: a primitive [0].
        assert_eq!(sync_info(&[0x80, 2, b'c', b'1']), Some(SyncInfo::NewCookie(b"c1".to_vec())));
        // refreshPresent with a cookie and refreshDone left out (TRUE).
        assert_eq!(
            sync_info(&[0xa2, 4, 0x04, 2, b'c', b'2']),
            Some(SyncInfo::RefreshPresent { cookie: Some(b"c2".to_vec()), done: true })
        );
        assert_eq!(sync_info(&[0xa1, 3, 0x01, 1, 0]), Some(SyncInfo::RefreshDelete { cookie: None, done: false }));
        let mut idset = vec![0xa3, 23, 0x01, 1, 0xff, 0x31, 18, 0x04, 16];
        idset.extend([5u8; 16]);
        assert_eq!(
            sync_info(&idset),
            Some(SyncInfo::IdSet { cookie: None, refresh_deletes: true, uuids: vec![[5; 16]] })
        );
        // Ours, as the provider encodes them, read back.
        let done = LdapMsg::new_with_ctrls(
            3,
            LdapOp::SearchResultDone(crate::session::result(LdapResultCode::Success, "")),
            vec![LdapControl::SyncDone { cookie: Some(b"k".to_vec()), refresh_deletes: true }],
        );
        assert_eq!(
            decode(&wire(done)).unwrap().1,
            Message::Done { code: 0, message: String::new(), cookie: Some(b"k".to_vec()), refresh_deletes: true }
        );
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for junk in [&b""[..], b"\x30\x03\x02\x01", b"\x30\x05\x02\x01\x01\x61\x00", &[0xa3, 3, 0x31, 1, 0x04][..]] {
            let _ = decode(junk);
            let _ = sync_info(junk);
        }
        assert!(sync_info(&[0xa3, 4, 0x31, 2, 0x04, 0]).is_none(), "a UUID is 16 bytes");
    }
}
