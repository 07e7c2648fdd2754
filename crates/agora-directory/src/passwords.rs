//! Stored password formats: Agora's own argon2id (PHC string), and the schemes other
//! directories export (`{ARGON2}`, `{SSHA}`, `{SHA}`, `{SSHA256}`, `{SSHA512}`,
//! `{CRYPT}` with SHA-256/512-crypt), accepted on import and replaced by argon2id at
//! the first successful login.

use argon2::{Argon2, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Longest password accepted anywhere (argon2 works on any length; this bounds work).
pub const MAX_PASSWORD: usize = 1024;

/// True for a value this server can check a password against.
pub fn known(stored: &str) -> bool {
    let s = stored.trim();
    s.starts_with("$argon2")
        || ["{ARGON2}", "{SSHA}", "{SHA}", "{SSHA256}", "{SSHA512}"].iter().any(|p| starts_with_ci(s, p))
        || (starts_with_ci(s, "{CRYPT}") && (s[7..].starts_with("$5$") || s[7..].starts_with("$6$")))
}

/// True when the value is already Agora's own format (no upgrade at login).
pub fn is_current(stored: &str) -> bool {
    stored.starts_with("$argon2id$")
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Checks a password against a stored value of any known scheme.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let s = stored.trim();
    if s.starts_with("$argon2") {
        return Argon2::default().verify_password(password.as_bytes(), s).is_ok();
    }
    let Some(end) = s.find('}') else { return false };
    let (scheme, rest) = (s[..=end].to_ascii_uppercase(), &s[end + 1..]);
    match scheme.as_str() {
        "{ARGON2}" => {
            rest.starts_with("$argon2") && Argon2::default().verify_password(password.as_bytes(), rest).is_ok()
        }
        "{SHA}" => salted::<Sha1>(password, rest, 20, false),
        "{SSHA}" => salted::<Sha1>(password, rest, 20, true),
        "{SSHA256}" => salted::<Sha256>(password, rest, 32, true),
        "{SSHA512}" => salted::<Sha512>(password, rest, 64, true),
        "{CRYPT}" if rest.starts_with("$6$") => sha_crypt::sha512_check(password, rest).is_ok(),
        "{CRYPT}" if rest.starts_with("$5$") => sha_crypt::sha256_check(password, rest).is_ok(),
        _ => false,
    }
}

/// `{SSHA*}`: base64(digest(password + salt) + salt); `{SHA}`: base64(digest(password)).
fn salted<D: Digest>(password: &str, b64: &str, len: usize, with_salt: bool) -> bool {
    let Ok(raw) = B64.decode(b64.trim()) else { return false };
    if raw.len() < len || (!with_salt && raw.len() != len) {
        return false;
    }
    let (digest, salt) = raw.split_at(len);
    let mut h = D::new();
    h.update(password.as_bytes());
    h.update(salt);
    let got = h.finalize();
    // Constant time: the comparison must not tell how much matched.
    got.len() == digest.len() && got.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_other_directories_export() {
        // {SSHA} of "secret" with salt "salt" (as slappasswd -h {SSHA} makes them).
        let mut h = Sha1::new();
        h.update(b"secretsalt");
        let mut raw = h.finalize().to_vec();
        raw.extend_from_slice(b"salt");
        let ssha = format!("{{SSHA}}{}", B64.encode(&raw));
        assert!(verify("secret", &ssha) && !verify("Secret", &ssha));
        assert!(known(&ssha) && !is_current(&ssha));
        let sha = format!("{{sha}}{}", B64.encode(Sha1::digest(b"pw")));
        assert!(verify("pw", &sha), "scheme names ignore case");
        // As `openssl passwd -6` and `-5` make them.
        let crypt =
            "{CRYPT}$6$saltsalt$JcVDtuB6d1BHhCd5RPBh8g8xX/1CbY8EU2PN0MTaj2/Mypw4P./C6dN4j0HALhzBDTocyW1Jm.gYaTPjFGCV40";
        assert!(known(crypt) && verify("test", crypt) && !verify("tesT", crypt), "sha512-crypt");
        assert!(verify("test", "{CRYPT}$5$saltsalt$q6kNPzk9GPb3dpYKO2TUS45z2kiVxsUVz7eWVJcih.0"), "sha256-crypt");
        let argon = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pw").unwrap().to_string();
        assert!(verify("pw", &format!("{{ARGON2}}{argon}")) && verify("pw", &argon) && is_current(&argon));
        assert!(!known("{MD5}abc") && !verify("x", "{MD5}abc") && !verify("x", "plain"));
    }
}
