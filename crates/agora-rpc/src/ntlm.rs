//! NTLMSSP on the server side (MS-NLMP): CHALLENGE for a NEGOTIATE, the NTLMv2 check
//! of an AUTHENTICATE against the account's NT hash (NTLMv1 is refused), its MIC, and
//! the session's signing and sealing with extended session security. Hand-written:
//! no Rust crate serves NTLM; the hashes and RC4 come from RustCrypto.

use agora_directory::sasl::constant_time_eq;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher, consts::U16};

pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
pub const REQUEST_TARGET: u32 = 0x0000_0004;
pub const NEGOTIATE_SIGN: u32 = 0x0000_0010;
pub const NEGOTIATE_SEAL: u32 = 0x0000_0020;
pub const NEGOTIATE_NTLM: u32 = 0x0000_0200;
pub const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
pub const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;
pub const NEGOTIATE_128: u32 = 0x2000_0000;
pub const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
pub const NEGOTIATE_56: u32 = 0x8000_0000;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// The names a CHALLENGE announces (NetBIOS names upper-case, at most 15 characters).
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub netbios_domain: String,
    pub netbios_computer: String,
    pub dns_domain: String,
    pub dns_computer: String,
}

/// The message type of an NTLMSSP token (1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE).
pub fn message_type(token: &[u8]) -> Option<u32> {
    if token.len() < 12 || &token[..8] != SIGNATURE {
        return None;
    }
    Some(u32::from_le_bytes(token[8..12].try_into().ok()?))
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// One field descriptor's bytes (length, max length, offset) inside a message.
fn field(msg: &[u8], at: usize) -> Option<&[u8]> {
    let d = msg.get(at..at + 8)?;
    let len = usize::from(u16::from_le_bytes([d[0], d[1]]));
    let off = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
    if len == 0 {
        return Some(&[]);
    }
    msg.get(off..off.checked_add(len)?)
}

/// A server's side of one NTLM exchange, after its CHALLENGE.
pub struct Server {
    flags: u32,
    challenge: [u8; 8],
    negotiate: Vec<u8>,
    challenge_msg: Vec<u8>,
}

/// A parsed AUTHENTICATE.
#[derive(Debug, Clone)]
pub struct Authenticate {
    pub user: String,
    pub domain: String,
    pub flags: u32,
    nt_response: Vec<u8>,
    session_key: Vec<u8>,
    raw: Vec<u8>,
}

impl Authenticate {
    pub fn parse(msg: &[u8]) -> Option<Authenticate> {
        if message_type(msg)? != 3 || msg.len() < 64 {
            return None;
        }
        let flags = u32::from_le_bytes(msg[60..64].try_into().ok()?);
        let text = |b: &[u8]| -> Option<String> {
            if flags & NEGOTIATE_UNICODE != 0 {
                if !b.len().is_multiple_of(2) {
                    return None;
                }
                let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                String::from_utf16(&units).ok()
            } else {
                Some(b.iter().map(|&c| char::from(c)).collect())
            }
        };
        Some(Authenticate {
            nt_response: field(msg, 20)?.to_vec(),
            domain: text(field(msg, 28)?)?,
            user: text(field(msg, 36)?)?,
            session_key: field(msg, 52)?.to_vec(),
            flags,
            raw: msg.to_vec(),
        })
    }
}

impl Server {
    /// Answers a NEGOTIATE; None when it asks for what we refuse (no extended session
    /// security, no Unicode).
    pub fn challenge(negotiate: &[u8], names: &Names) -> Option<(Server, Vec<u8>)> {
        if message_type(negotiate)? != 1 || negotiate.len() < 16 {
            return None;
        }
        let asked = u32::from_le_bytes(negotiate[12..16].try_into().ok()?);
        if asked & EXTENDED_SESSIONSECURITY == 0 || asked & NEGOTIATE_UNICODE == 0 {
            return None;
        }
        let offered = NEGOTIATE_UNICODE
            | REQUEST_TARGET
            | NEGOTIATE_NTLM
            | NEGOTIATE_ALWAYS_SIGN
            | TARGET_TYPE_DOMAIN
            | EXTENDED_SESSIONSECURITY
            | NEGOTIATE_TARGET_INFO
            | NEGOTIATE_VERSION
            | (asked & (NEGOTIATE_SIGN | NEGOTIATE_SEAL | NEGOTIATE_128 | NEGOTIATE_56 | NEGOTIATE_KEY_EXCH));
        let mut challenge = [0u8; 8];
        getrandom::fill(&mut challenge).ok()?;
        let target = utf16(&names.netbios_domain);
        let mut info = Vec::new();
        let mut av = |id: u16, value: &[u8]| {
            info.extend_from_slice(&id.to_le_bytes());
            info.extend_from_slice(&(value.len() as u16).to_le_bytes());
            info.extend_from_slice(value);
        };
        av(2, &utf16(&names.netbios_domain));
        av(1, &utf16(&names.netbios_computer));
        av(4, &utf16(&names.dns_domain));
        av(3, &utf16(&names.dns_computer));
        av(7, &filetime_now().to_le_bytes());
        av(0, &[]);
        let mut m = Vec::with_capacity(56 + target.len() + info.len());
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&2u32.to_le_bytes());
        let target_at = 56u32;
        m.extend_from_slice(&(target.len() as u16).to_le_bytes());
        m.extend_from_slice(&(target.len() as u16).to_le_bytes());
        m.extend_from_slice(&target_at.to_le_bytes());
        m.extend_from_slice(&offered.to_le_bytes());
        m.extend_from_slice(&challenge);
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&(target_at + target.len() as u32).to_le_bytes());
        // Version: 10.0 build 20348, NTLM revision 15.
        m.extend_from_slice(&[10, 0, 0x7c, 0x4f, 0, 0, 0, 15]);
        m.extend_from_slice(&target);
        m.extend_from_slice(&info);
        Some((Server { flags: offered, challenge, negotiate: negotiate.to_vec(), challenge_msg: m.clone() }, m))
    }

    /// Whether an AUTHENTICATE is anonymous (MS-NLMP §3.2.5.1.2: no user name, no
    /// responses).
    pub fn is_anonymous(msg: &Authenticate) -> bool {
        msg.user.is_empty() && msg.nt_response.is_empty()
    }

    /// The keys of an anonymous session: its key exchange key is all zeros.
    pub fn anonymous(&self, msg: &Authenticate) -> Option<Keys> {
        let flags = self.flags & msg.flags | (self.flags & (NEGOTIATE_VERSION | TARGET_TYPE_DOMAIN));
        let mut key = [0u8; 16];
        if flags & NEGOTIATE_KEY_EXCH != 0 {
            let mut k: [u8; 16] = msg.session_key.as_slice().try_into().ok()?;
            rc4(&[0; 16]).apply_keystream(&mut k);
            key = k;
        }
        Some(Keys::new(flags, &key))
    }

    /// Checks an AUTHENTICATE's NTLMv2 response against the account's NT hash; the
    /// session's keys when it holds.
    pub fn verify(&self, msg: &Authenticate, nt_hash: &[u8; 16]) -> Option<Keys> {
        // NTLMv2 only: an NTProofStr and a blob of at least its fixed part.
        if msg.nt_response.len() < 16 + 28 || msg.user.is_empty() {
            return None;
        }
        let (proof, blob) = msg.nt_response.split_at(16);
        let who = [utf16(&upper(&msg.user)), utf16(&msg.domain)].concat();
        let key = hmac_md5(nt_hash, &[&who]);
        let expected = hmac_md5(&key, &[&self.challenge, blob]);
        if !constant_time_eq(&expected, proof) {
            return None;
        }
        let base = hmac_md5(&key, &[proof]);
        let flags = self.flags & msg.flags | (self.flags & (NEGOTIATE_VERSION | TARGET_TYPE_DOMAIN));
        let exported = if flags & NEGOTIATE_KEY_EXCH != 0 {
            let mut k: [u8; 16] = msg.session_key.as_slice().try_into().ok()?;
            rc4(&base).apply_keystream(&mut k);
            k
        } else {
            base
        };
        // A MIC over the three messages, when the blob says one is there.
        if av_flags(&blob[28..]).is_some_and(|f| f & 2 != 0) {
            let at = 72;
            let mic = msg.raw.get(at..at + 16)?;
            let mut zeroed = msg.raw.clone();
            zeroed[at..at + 16].fill(0);
            let want = hmac_md5(&exported, &[&self.negotiate, &self.challenge_msg, &zeroed]);
            if !constant_time_eq(&want, mic) {
                return None;
            }
        }
        Some(Keys::new(flags, &exported))
    }
}

/// Whether negotiated flags give the protection a level needs: 128-bit keys exchanged,
/// signing, and sealing for privacy (weaker sessions are refused, not downgraded).
pub fn strong_enough(flags: u32, protect: bool, seal: bool) -> bool {
    let need = if protect { NEGOTIATE_128 | NEGOTIATE_KEY_EXCH | NEGOTIATE_SIGN | EXTENDED_SESSIONSECURITY } else { 0 };
    let need = need | if seal { NEGOTIATE_SEAL } else { 0 };
    flags & need == need
}

/// Windows' upper case for NTOWFv2: character by character, a character whose upper
/// case is more than one character kept as it is (the length never changes).
fn upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

/// MsvAvFlags from a blob's AV pairs.
fn av_flags(mut pairs: &[u8]) -> Option<u32> {
    while pairs.len() >= 4 {
        let id = u16::from_le_bytes([pairs[0], pairs[1]]);
        let len = usize::from(u16::from_le_bytes([pairs[2], pairs[3]]));
        let value = pairs.get(4..4 + len)?;
        match id {
            0 => return None,
            6 if len == 4 => return Some(u32::from_le_bytes(value.try_into().ok()?)),
            _ => pairs = &pairs[4 + len..],
        }
    }
    None
}

fn rc4(key: &[u8; 16]) -> Rc4<U16> {
    Rc4::new(key.into())
}

/// 100 ns intervals since 1601, as Windows counts time.
fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (unix.as_nanos() / 100) as u64 + 116_444_736_000_000_000
}

/// The signing and sealing state of an authenticated session (server's view).
pub struct Keys {
    flags: u32,
    client_sign: [u8; 16],
    server_sign: [u8; 16],
    client_seal: Rc4<U16>,
    server_seal: Rc4<U16>,
    send_seq: u32,
    recv_seq: u32,
}

impl Keys {
    fn new(flags: u32, exported: &[u8; 16]) -> Keys {
        let seal_key = |dir: &[u8]| -> [u8; 16] {
            let n = if flags & NEGOTIATE_128 != 0 {
                16
            } else if flags & NEGOTIATE_56 != 0 {
                7
            } else {
                5
            };
            md5(&[&exported[..n], dir])
        };
        Keys {
            flags,
            client_sign: md5(&[exported, b"session key to client-to-server signing key magic constant\0"]),
            server_sign: md5(&[exported, b"session key to server-to-client signing key magic constant\0"]),
            client_seal: rc4(&seal_key(b"session key to client-to-server sealing key magic constant\0")),
            server_seal: rc4(&seal_key(b"session key to server-to-client sealing key magic constant\0")),
            send_seq: 0,
            recv_seq: 0,
        }
    }

    /// The checksum of what we send (first half of the signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 8] {
        let mac = hmac_md5(&self.server_sign, &[&self.send_seq.to_le_bytes(), message]);
        mac[..8].try_into().unwrap_or_default()
    }

    /// The 16-byte signature: version, checksum (encrypted after any sealing, as
    /// MS-NLMP orders the RC4 stream), sequence number.
    pub fn finish_signature(&mut self, mut checksum: [u8; 8]) -> [u8; 16] {
        if self.flags & NEGOTIATE_KEY_EXCH != 0 {
            self.server_seal.apply_keystream(&mut checksum);
        }
        let mut sig = [0u8; 16];
        sig[..4].copy_from_slice(&1u32.to_le_bytes());
        sig[4..12].copy_from_slice(&checksum);
        sig[12..].copy_from_slice(&self.send_seq.to_le_bytes());
        self.send_seq = self.send_seq.wrapping_add(1);
        sig
    }

    pub fn seal(&mut self, data: &mut [u8]) {
        self.server_seal.apply_keystream(data);
    }

    pub fn unseal(&mut self, data: &mut [u8]) {
        self.client_seal.apply_keystream(data);
    }

    /// Checks a received signature over `message` (already unsealed).
    pub fn verify(&mut self, message: &[u8], signature: &[u8; 16]) -> bool {
        let mac = hmac_md5(&self.client_sign, &[&self.recv_seq.to_le_bytes(), message]);
        let mut checksum: [u8; 8] = mac[..8].try_into().unwrap_or_default();
        if self.flags & NEGOTIATE_KEY_EXCH != 0 {
            self.client_seal.apply_keystream(&mut checksum);
        }
        let ok = signature[..4] == 1u32.to_le_bytes()
            && constant_time_eq(&signature[4..12], &checksum)
            && signature[12..] == self.recv_seq.to_le_bytes();
        self.recv_seq = self.recv_seq.wrapping_add(1);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the directory keeps for an account with NTLM on.
    fn nt_hash(password: &str) -> [u8; 16] {
        md4::Md4::digest(utf16(password)).into()
    }

    #[test]
    fn nt_hash_matches_ms_nlmp() {
        // MS-NLMP §4.2.4.1.1: NTOWFv2's input for "Password" is MD4 of its UTF-16.
        let h = nt_hash("Password");
        assert_eq!(h, [0xa4, 0xf4, 0x9c, 0x40, 0x65, 0x10, 0xbd, 0xca, 0xb6, 0x82, 0x4e, 0xe7, 0xc3, 0x0f, 0xd8, 0x52]);
    }

    /// MS-NLMP §4.2.4: ResponseKeyNT for User/Domain/Password.
    #[test]
    fn ntowfv2_matches_ms_nlmp() {
        let key = hmac_md5(&nt_hash("Password"), &[&utf16("USER"), &utf16("Domain")]);
        assert_eq!(
            key,
            [0x0c, 0x86, 0x8a, 0x40, 0x3b, 0xfd, 0x7a, 0x93, 0xa3, 0x00, 0x1e, 0xf2, 0x2e, 0xf0, 0x2e, 0x3f]
        );
    }

    /// A client computed the way MS-NLMP §3.3.2 says, against our CHALLENGE.
    fn client_authenticate(challenge: &[u8], user: &str, domain: &str, password: &str, flags: u32) -> Vec<u8> {
        let server_challenge = &challenge[24..32];
        let info = field(challenge, 40).expect("target info").to_vec();
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&filetime_now().to_le_bytes());
        blob.extend_from_slice(&[7; 8]);
        blob.extend_from_slice(&[0; 4]);
        blob.extend_from_slice(&info);
        blob.extend_from_slice(&[0; 4]);
        let key = hmac_md5(&nt_hash(password), &[&utf16(&user.to_uppercase()), &utf16(domain)]);
        let proof = hmac_md5(&key, &[server_challenge, &blob]);
        let base = hmac_md5(&key, &[&proof]);
        let mut session = [0x55u8; 16];
        rc4(&base).apply_keystream(&mut session);
        let nt = [&proof[..], &blob].concat();
        let (d, u) = (utf16(domain), utf16(user));
        let mut m = Vec::new();
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&3u32.to_le_bytes());
        let mut at = 64u32;
        let mut payload = Vec::new();
        for part in [&[][..], &nt, &d, &u, &[], &session] {
            m.extend_from_slice(&(part.len() as u16).to_le_bytes());
            m.extend_from_slice(&(part.len() as u16).to_le_bytes());
            m.extend_from_slice(&at.to_le_bytes());
            at += part.len() as u32;
            payload.extend_from_slice(part);
        }
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn ntlmv2_logs_in_and_signs_both_ways() {
        let flags = NEGOTIATE_UNICODE
            | EXTENDED_SESSIONSECURITY
            | NEGOTIATE_SIGN
            | NEGOTIATE_SEAL
            | NEGOTIATE_128
            | NEGOTIATE_KEY_EXCH
            | NEGOTIATE_NTLM;
        let mut negotiate = SIGNATURE.to_vec();
        negotiate.extend_from_slice(&1u32.to_le_bytes());
        negotiate.extend_from_slice(&flags.to_le_bytes());
        negotiate.extend_from_slice(&[0; 16]);
        let names = Names { netbios_domain: "EXAMPLE".into(), ..Names::default() };
        let (server, challenge) = Server::challenge(&negotiate, &names).expect("challenge");
        assert_eq!(message_type(&challenge), Some(2));
        let auth = client_authenticate(&challenge, "Alice", "EXAMPLE", "s3cret pass", flags);
        let msg = Authenticate::parse(&auth).expect("parses");
        assert_eq!((msg.user.as_str(), msg.domain.as_str()), ("Alice", "EXAMPLE"));
        assert!(server.verify(&msg, &nt_hash("wrong")).is_none(), "a wrong password fails");
        let mut keys = server.verify(&msg, &nt_hash("s3cret pass")).expect("the right one holds");
        // The client's side of the same session, from the exported key 0x55…
        let mut client = Keys::new(keys.flags, &[0x55; 16]);
        std::mem::swap(&mut client.client_sign, &mut client.server_sign);
        std::mem::swap(&mut client.client_seal, &mut client.server_seal);
        // Client → server: sealed and signed.
        let mut data = b"a request stub".to_vec();
        let sig = client.sign(&data);
        client.seal(&mut data);
        let sig = client.finish_signature(sig);
        keys.unseal(&mut data);
        assert_eq!(data, b"a request stub");
        assert!(keys.verify(&data, &sig));
        assert!(!keys.verify(&data, &sig), "a replayed sequence number fails");
    }

    #[test]
    fn upper_case_keeps_the_length() {
        assert_eq!(upper("straße"), "STRAßE");
        assert_eq!(upper("ann"), "ANN");
        assert!(strong_enough(
            NEGOTIATE_128 | NEGOTIATE_KEY_EXCH | NEGOTIATE_SIGN | EXTENDED_SESSIONSECURITY,
            true,
            false
        ));
        assert!(
            !strong_enough(NEGOTIATE_KEY_EXCH | NEGOTIATE_SIGN | EXTENDED_SESSIONSECURITY, true, false),
            "40-bit keys"
        );
        assert!(!strong_enough(
            NEGOTIATE_128 | NEGOTIATE_KEY_EXCH | NEGOTIATE_SIGN | EXTENDED_SESSIONSECURITY,
            true,
            true
        ));
    }

    #[test]
    fn negotiate_without_extended_security_is_refused() {
        let mut negotiate = SIGNATURE.to_vec();
        negotiate.extend_from_slice(&1u32.to_le_bytes());
        negotiate.extend_from_slice(&NEGOTIATE_UNICODE.to_le_bytes());
        assert!(Server::challenge(&negotiate, &Names::default()).is_none());
        assert!(Authenticate::parse(b"NTLMSSP\0\x03\0\0\0short").is_none());
    }
}
