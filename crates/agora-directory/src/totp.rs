//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP: HMAC-SHA1, six digits,
//! 30-second steps, as every authenticator app makes them): the second factor an
//! account may add to webmail sign-in.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::DirectoryError;

/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds a code stands for.
pub const STEP: i64 = 30;

/// A new random secret (160 bits, as RFC 4226 recommends).
pub fn new_secret() -> Result<Vec<u8>, DirectoryError> {
    let mut s = vec![0u8; 20];
    getrandom::fill(&mut s).map_err(|e| DirectoryError::Invalid(format!("no randomness: {e}")))?;
    Ok(s)
}

/// The secret as people type it into an app: base32 without padding.
pub fn encode_secret(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// A secret written in base32, in any case, with spaces or padding; None if it is not.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let clean: String =
        text.chars().filter(|c| !c.is_whitespace() && *c != '=' && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    data_encoding::BASE32_NOPAD.decode(clean.as_bytes()).ok().filter(|s| !s.is_empty())
}

/// HOTP (RFC 4226 §5.3): the `digits`-digit code for `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else { return 0 };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[offset] & 0x7f, h[offset + 1], h[offset + 2], h[offset + 3]]);
    bin % 10u32.pow(digits)
}

/// The step a moment falls in.
pub fn step_of(unix_time: i64) -> i64 {
    unix_time.div_euclid(STEP)
}

/// Checks a code typed at `now`: it may be one step early or late (clocks drift), but
/// never for a step at or before `last_step`, so each code signs in once. Returns the
/// step it matched, to be kept as the new `last_step`.
pub fn verify(secret: &[u8], code: &str, now: i64, last_step: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = code.parse().ok()?;
    let now_step = step_of(now);
    let mut matched = None;
    // Every candidate is computed, whatever matches, so timing says nothing of which did.
    for step in [now_step - 1, now_step, now_step + 1] {
        let ok = step > last_step && step >= 0 && hotp(secret, step as u64, DIGITS) == typed;
        if ok && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` address an app reads from a QR code (Key Uri Format).
pub fn provisioning_uri(secret: &[u8], login: &str, issuer: &str) -> String {
    let label = format!("{}:{}", escape(issuer), escape(login));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        encode_secret(secret),
        escape(issuer)
    )
}

/// Percent-encodes all but unreserved characters (RFC 3986).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (eight digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, step_of(t) as u64, 8), want, "T = {t}");
        }
        // RFC 4226 Appendix D, six digits.
        assert_eq!(hotp(secret, 0, 6), 755224);
        assert_eq!(hotp(secret, 9, 6), 520489);
    }

    #[test]
    fn codes_are_checked_once_within_a_step_of_now() {
        let secret = b"12345678901234567890";
        let now = 1111111111;
        let code = |t: i64| format!("{:06}", hotp(secret, step_of(t) as u64, DIGITS));
        assert_eq!(verify(secret, &code(now), now, 0), Some(step_of(now)));
        assert_eq!(verify(secret, &code(now - 30), now, 0), Some(step_of(now) - 1), "a step late");
        assert_eq!(verify(secret, &code(now + 30), now, 0), Some(step_of(now) + 1), "a step early");
        assert_eq!(verify(secret, &code(now - 90), now, 0), None, "too old");
        assert_eq!(verify(secret, &code(now), now, step_of(now)), None, "used already");
        assert_eq!(verify(secret, "12345", now, 0), None);
        assert_eq!(verify(secret, "abcdef", now, 0), None);
    }

    #[test]
    fn secrets_and_addresses() {
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 20);
        let text = encode_secret(&s);
        assert_eq!(decode_secret(&text.to_lowercase()), Some(s.clone()));
        assert_eq!(decode_secret("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"), Some(b"12345678901234567890".to_vec()));
        assert_eq!(decode_secret("not base32!"), None);
        let uri = provisioning_uri(b"12345678901234567890", "ann@example.org", "Example Mail");
        assert_eq!(
            uri,
            "otpauth://totp/Example%20Mail:ann@example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20Mail&algorithm=SHA1&digits=6&period=30"
        );
    }
}
