//! The one response written without the codec: SearchResultEntry, the bulk of what a
//! directory sends. Its shape is fixed (RFC 4511 §4.5.2), so it is encoded straight
//! into the output buffer instead of through the codec's tree of owned tags; a test
//! holds it byte for byte to the codec's encoding.

use bytes::{BufMut, BytesMut};

fn len_octets(n: usize) -> usize {
    match n {
        0..0x80 => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xff_ffff => 4,
        _ => 5,
    }
}

fn put_len(out: &mut BytesMut, n: usize) {
    match len_octets(n) {
        1 => out.put_u8(n as u8),
        k => {
            out.put_u8(0x80 | (k - 1) as u8);
            for i in (0..k - 1).rev() {
                out.put_u8((n >> (8 * i)) as u8);
            }
        }
    }
}

/// Size of a whole TLV with `n` content octets.
fn tlv(n: usize) -> usize {
    1 + len_octets(n) + n
}

/// Minimal two's-complement content octets of a non-negative message ID.
fn int_content(v: i32) -> ([u8; 4], usize) {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 3 && b[start] == 0 && b[start + 1] & 0x80 == 0 {
        start += 1;
    }
    (b, start)
}

/// LDAPMessage's SEQUENCE, its messageID, and the protocolOp's tag and length, for an
/// operation of `op` content octets; reserves room for the whole message.
fn message_head(out: &mut BytesMut, msgid: i32, op_tag: u8, op: usize) {
    let (id, start) = int_content(msgid);
    let id_len = 4 - start;
    let msg = tlv(id_len) + tlv(op);
    out.reserve(tlv(msg));
    out.put_u8(0x30);
    put_len(out, msg);
    out.put_u8(0x02);
    put_len(out, id_len);
    out.put_slice(&id[start..]);
    out.put_u8(op_tag);
    put_len(out, op);
}

/// One attribute of an entry: its description and values (empty for typesOnly).
pub struct Attribute<'a> {
    pub name: &'a str,
    pub values: &'a [Vec<u8>],
}

/// Appends `SearchResultEntry` for message `msgid`.
pub fn search_entry(out: &mut BytesMut, msgid: i32, dn: &str, attrs: &[Attribute<'_>]) {
    let set_len = |a: &Attribute<'_>| a.values.iter().map(|v| tlv(v.len())).sum::<usize>();
    let attr_len = |a: &Attribute<'_>| tlv(a.name.len()) + tlv(set_len(a));
    let list: usize = attrs.iter().map(|a| tlv(attr_len(a))).sum();
    let op = tlv(dn.len()) + tlv(list);
    message_head(out, msgid, 0x64, op); // [APPLICATION 4], constructed
    out.put_u8(0x04);
    put_len(out, dn.len());
    out.put_slice(dn.as_bytes());
    out.put_u8(0x30);
    put_len(out, list);
    for a in attrs {
        out.put_u8(0x30);
        put_len(out, attr_len(a));
        out.put_u8(0x04);
        put_len(out, a.name.len());
        out.put_slice(a.name.as_bytes());
        out.put_u8(0x31);
        put_len(out, set_len(a));
        for v in a.values {
            out.put_u8(0x04);
            put_len(out, v.len());
            out.put_slice(v);
        }
    }
}

/// Appends `SearchResultDone` without controls or referrals (result codes below 128).
pub fn search_done(out: &mut BytesMut, msgid: i32, code: u8, matched: &str, message: &str) {
    let op = 3 + tlv(matched.len()) + tlv(message.len());
    message_head(out, msgid, 0x65, op); // [APPLICATION 5], constructed
    out.put_slice(&[0x0a, 0x01, code]);
    out.put_u8(0x04);
    put_len(out, matched.len());
    out.put_slice(matched.as_bytes());
    out.put_u8(0x04);
    put_len(out, message.len());
    out.put_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::proto::{
        LdapMsg, LdapOp, LdapPartialAttribute, LdapResult, LdapResultCode, LdapSearchResultEntry,
    };

    #[test]
    fn search_done_matches_the_codec() {
        for (id, code, matched, message) in [
            (1, LdapResultCode::Success, "", ""),
            (300, LdapResultCode::NoSuchObject, "dc=x", "no such entry"),
            (7, LdapResultCode::AdminLimitExceeded, "", &"m".repeat(300)[..]),
        ] {
            let mut mine = BytesMut::new();
            search_done(&mut mine, id, code.clone() as u8, matched, message);
            let r = LdapResult { code, matcheddn: matched.into(), message: message.into(), referral: Vec::new() };
            let tag: ldap3_lber::structure::StructureTag = LdapMsg::new(id, LdapOp::SearchResultDone(r)).into();
            let mut theirs = BytesMut::new();
            ldap3_lber::write::encode_into(&mut theirs, tag).unwrap_or_default();
            assert_eq!(mine, theirs);
        }
    }

    fn by_codec(msgid: i32, dn: &str, attrs: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
        let attributes =
            attrs.iter().map(|(n, v)| LdapPartialAttribute { atype: n.to_string(), vals: v.clone() }).collect();
        let msg = LdapMsg::new(msgid, LdapOp::SearchResultEntry(LdapSearchResultEntry { dn: dn.into(), attributes }));
        let tag: ldap3_lber::structure::StructureTag = msg.into();
        let mut out = BytesMut::new();
        ldap3_lber::write::encode_into(&mut out, tag).unwrap_or_default();
        out.to_vec()
    }

    #[test]
    fn matches_the_codec_byte_for_byte() {
        let big = vec![0xabu8; 70_000];
        type Case<'a> = (i32, &'a str, Vec<(&'a str, Vec<Vec<u8>>)>);
        let cases: Vec<Case<'_>> = vec![
            (
                1,
                "uid=ann,ou=people,dc=example,dc=org",
                vec![("cn", vec![b"Ann Lee".to_vec()]), ("objectClass", vec![b"top".to_vec(), b"person".to_vec()])],
            ),
            (127, "", vec![]),
            (128, "x", vec![("typesOnly", vec![])]),
            (65_536, "cn=photo", vec![("jpegPhoto", vec![big.clone()]), ("mail", vec![vec![b'a'; 200]])]),
            (i32::MAX, "dc=x", vec![("a", vec![vec![]])]),
        ];
        for (id, dn, attrs) in cases {
            let mut mine = BytesMut::new();
            let list: Vec<Attribute<'_>> = attrs.iter().map(|(n, v)| Attribute { name: n, values: v }).collect();
            search_entry(&mut mine, id, dn, &list);
            assert_eq!(mine.to_vec(), by_codec(id, dn, &attrs), "message {id}");
            assert!(crate::session::decode(&mine).is_some());
        }
    }
}
