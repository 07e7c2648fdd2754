//! SASL for every protocol that logs users in: PLAIN and LOGIN (RFC 4616, the LOGIN
//! draft) and SCRAM-SHA-256 (RFC 5802, RFC 7677), as a state machine that protocols
//! drive with the decoded client responses; plus the SCRAM verifier kept per account.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use agora_store::Account;

use crate::{Directory, DirectoryError, normalize_address};

type HmacSha256 = Hmac<Sha256>;

/// PBKDF2 rounds for new SCRAM verifiers (RFC 7677 asks for at least 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Longest client response accepted in one step.
pub const MAX_RESPONSE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    ScramSha256,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// True if the password crosses the wire (so only over TLS, unless configured).
    pub fn sends_password(self) -> bool {
        !matches!(self, Mechanism::ScramSha256)
    }

    /// The mechanisms to offer: all over TLS, SCRAM only in the clear (unless allowed).
    pub fn offered(tls_or_allowed: bool) -> Vec<Mechanism> {
        if tls_or_allowed {
            vec![Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login]
        } else {
            vec![Mechanism::ScramSha256]
        }
    }
}

/// A protocol's side of a SASL exchange: sends one challenge in its own syntax and
/// returns the client's decoded answer; `Ok(None)` when the client cancelled.
#[async_trait::async_trait]
pub trait Challenger: Send {
    async fn challenge(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, &'static str>;

    /// The connection came from one of this cluster's front-ends: only then may PLAIN
    /// log in as the front-end acting for a user.
    fn via_front_end(&self) -> bool {
        false
    }
}

/// Runs a whole exchange: the initial response if any, then challenges until the
/// mechanism succeeds or fails. Cancellation and undecodable answers come back as
/// `Malformed`, a lost connection too (the protocol then closes).
pub async fn run(dir: &Directory, mech: Mechanism, initial: Option<Vec<u8>>, io: &mut dyn Challenger) -> Step {
    let mut ex = Exchange::new(mech);
    ex.front_end = io.via_front_end();
    let mut input = initial;
    loop {
        match ex.step(dir, input.as_deref()).await {
            Step::Challenge(c) => match io.challenge(&c).await {
                Ok(Some(answer)) => input = Some(answer),
                Ok(None) => return Step::Malformed("Authentication cancelled"),
                Err(why) => return Step::Malformed(why),
            },
            done => return done,
        }
    }
}

/// A base64 text line as SASL protocols carry it ("=" is the empty initial response).
pub fn decode_line(text: &str) -> Option<Vec<u8>> {
    match text.trim() {
        "=" => Some(Vec::new()),
        t => B64.decode(t).ok(),
    }
}

/// What the protocol should do after a step.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes (base64-encoded by the protocol) and wait for a response.
    Challenge(Vec<u8>),
    /// Logged in.
    Success(Box<Account>),
    /// Wrong credentials or unknown user: slow down, then refuse.
    Failed { login: Option<String> },
    /// The client's message is not valid for the mechanism.
    Malformed(&'static str),
}

#[derive(Debug)]
enum State {
    Start,
    LoginUser,
    LoginPass(String),
    ScramFirst,
    ScramFinal {
        login: String,
        account: Option<Box<Account>>,
        first_bare: String,
        server_first: String,
        nonce: String,
        gs2: String,
    },
    ScramAck(Box<Account>),
    Done,
}

/// One authentication exchange.
#[derive(Debug)]
pub struct Exchange {
    mech: Mechanism,
    state: State,
    /// The connection came from one of this cluster's front-ends.
    front_end: bool,
}

impl Exchange {
    pub fn new(mech: Mechanism) -> Exchange {
        let state = match mech {
            Mechanism::ScramSha256 => State::ScramFirst,
            _ => State::Start,
        };
        Exchange { mech, state, front_end: false }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Feeds the next client response (`None`: no initial response was given).
    pub async fn step(&mut self, dir: &Directory, input: Option<&[u8]>) -> Step {
        if input.is_some_and(|i| i.len() > MAX_RESPONSE) {
            self.state = State::Done;
            return Step::Malformed("response too long");
        }
        let state = std::mem::replace(&mut self.state, State::Done);
        match (self.mech, state, input) {
            (Mechanism::Plain, State::Start, None) => {
                self.state = State::Start;
                Step::Challenge(Vec::new())
            }
            (Mechanism::Plain, State::Start, Some(data)) => plain(dir, data, self.front_end).await,
            (Mechanism::Login, State::Start, None) => {
                self.state = State::LoginUser;
                Step::Challenge(b"Username:".to_vec())
            }
            (Mechanism::Login, State::Start | State::LoginUser, Some(user)) => match std::str::from_utf8(user) {
                Ok(u) if !u.is_empty() => {
                    self.state = State::LoginPass(u.to_string());
                    Step::Challenge(b"Password:".to_vec())
                }
                _ => Step::Malformed("bad user name"),
            },
            (Mechanism::Login, State::LoginPass(user), Some(pass)) => match std::str::from_utf8(pass) {
                Ok(p) => check_password(dir, &user, p).await,
                Err(_) => Step::Malformed("password is not UTF-8"),
            },
            (Mechanism::ScramSha256, State::ScramFirst, None) => {
                self.state = State::ScramFirst;
                Step::Challenge(Vec::new())
            }
            (Mechanism::ScramSha256, State::ScramFirst, Some(data)) => self.scram_first(dir, data).await,
            (
                Mechanism::ScramSha256,
                State::ScramFinal { login, account, first_bare, server_first, nonce, gs2 },
                Some(data),
            ) => self.scram_final(data, login, account, &first_bare, &server_first, &nonce, &gs2),
            (Mechanism::ScramSha256, State::ScramAck(account), Some(_)) => Step::Success(account),
            _ => Step::Malformed("unexpected response"),
        }
    }

    async fn scram_first(&mut self, dir: &Directory, data: &[u8]) -> Step {
        let Ok(msg) = std::str::from_utf8(data) else { return Step::Malformed("not UTF-8") };
        // gs2-header: channel binding flag, optional authzid.
        let mut parts = msg.splitn(3, ',');
        let (Some(cb), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Step::Malformed("bad client-first-message");
        };
        if cb.starts_with("p=") {
            return Step::Malformed("channel binding is not supported");
        }
        if cb != "n" && cb != "y" {
            return Step::Malformed("bad channel-binding flag");
        }
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Step::Malformed("bad authzid");
        }
        let gs2 = format!("{cb},{authzid},");
        let mut user = None;
        let mut cnonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(v.replace("=2C", ",").replace("=3D", "="));
            } else if let Some(v) = attr.strip_prefix("r=") {
                cnonce = Some(v.to_string());
            } else if attr.starts_with("m=") {
                return Step::Malformed("mandatory extension not supported");
            }
        }
        let (Some(user), Some(cnonce)) = (user, cnonce) else { return Step::Malformed("missing user or nonce") };
        if cnonce.is_empty() || !cnonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            return Step::Malformed("bad nonce");
        }
        let account = match normalize_address(&user) {
            Ok(l) => dir.store().account_by_login(&l).await.ok().flatten(),
            Err(_) => None,
        };
        let verifier = account.as_ref().and_then(|a| ScramVerifier::parse(&a.scram));
        // Unknown users (or accounts without a verifier) get a plausible, stable salt so
        // the exchange does not reveal which logins exist.
        let (iterations, salt) = match &verifier {
            Some(v) => (v.iterations, v.salt.clone()),
            None => (SCRAM_ITERATIONS, fake_salt(&user)),
        };
        let mut rnd = [0u8; 18];
        if getrandom::fill(&mut rnd).is_err() {
            return Step::Malformed("no randomness");
        }
        let nonce = format!("{cnonce}{}", B64.encode(rnd));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let login = normalize_address(&user).unwrap_or(user);
        self.state = State::ScramFinal {
            login,
            account: account.filter(|_| verifier.is_some()).map(Box::new),
            first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            gs2,
        };
        Step::Challenge(server_first.into_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    fn scram_final(
        &mut self,
        data: &[u8],
        login: String,
        account: Option<Box<Account>>,
        first_bare: &str,
        server_first: &str,
        nonce: &str,
        gs2: &str,
    ) -> Step {
        let Ok(msg) = std::str::from_utf8(data) else { return Step::Malformed("not UTF-8") };
        let Some((without_proof, proof)) = msg.rsplit_once(",p=") else { return Step::Malformed("missing proof") };
        let mut cbind = None;
        let mut rnonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                cbind = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                rnonce = Some(v);
            }
        }
        if rnonce != Some(nonce) {
            return Step::Malformed("nonce mismatch");
        }
        if cbind != Some(&B64.encode(gs2)) {
            return Step::Malformed("channel binding mismatch");
        }
        let Ok(proof) = B64.decode(proof) else { return Step::Malformed("bad proof encoding") };
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let Some(account) = account else { return Step::Failed { login: Some(login) } };
        let Some(v) = ScramVerifier::parse(&account.scram) else { return Step::Failed { login: Some(login) } };
        let client_sig = hmac(&v.stored_key, auth_message.as_bytes());
        if proof.len() != client_sig.len() {
            return Step::Failed { login: Some(login) };
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_sig).map(|(a, b)| a ^ b).collect();
        let stored = Sha256::digest(&client_key);
        if !constant_time_eq(&stored, &v.stored_key) {
            return Step::Failed { login: Some(login) };
        }
        let server_sig = hmac(&v.server_key, auth_message.as_bytes());
        self.state = State::ScramAck(account);
        Step::Challenge(format!("v={}", B64.encode(server_sig)).into_bytes())
    }
}

async fn plain(dir: &Directory, data: &[u8], from_front_end: bool) -> Step {
    let mut it = data.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(pass), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Step::Malformed("PLAIN needs authzid NUL authcid NUL password");
    };
    let (Ok(authzid), Ok(authcid), Ok(pass)) =
        (std::str::from_utf8(authzid), std::str::from_utf8(authcid), std::str::from_utf8(pass))
    else {
        return Step::Malformed("not UTF-8");
    };
    // A front-end of this cluster acting for a user, proven by the cluster's secret.
    if authcid == crate::FRONT_END && !authzid.is_empty() && from_front_end {
        return match dir.front_end_login(authzid, pass).await {
            Ok(Some(account)) => Step::Success(Box::new(account)),
            Ok(None) => Step::Failed { login: Some(authzid.to_string()) },
            Err(e) => {
                tracing::error!("sasl: front-end login for {authzid}: {e}");
                Step::Failed { login: Some(authzid.to_string()) }
            }
        };
    }
    // Acting as another user (proxy authorization) is otherwise not offered.
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
        return Step::Failed { login: Some(authcid.to_string()) };
    }
    check_password(dir, authcid, pass).await
}

async fn check_password(dir: &Directory, login: &str, password: &str) -> Step {
    match dir.authenticate(login, password).await {
        Ok(Some(account)) => Step::Success(Box::new(account)),
        Ok(None) => Step::Failed { login: Some(login.to_string()) },
        Err(e) => {
            tracing::error!("sasl: checking password of {login}: {e}");
            Step::Failed { login: Some(login.to_string()) }
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(&u) {
            *o ^= x;
        }
    }
    out
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn fake_salt(user: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        let _ = getrandom::fill(&mut k);
        k
    });
    hmac(key, user.to_ascii_lowercase().as_bytes())[..16].to_vec()
}

/// The SCRAM-SHA-256 verifier stored per account: enough to check a proof, not to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramVerifier {
    pub fn new(password: &str) -> Result<ScramVerifier, DirectoryError> {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| DirectoryError::Invalid(format!("no randomness: {e}")))?;
        Ok(ScramVerifier::derive(password, &salt, SCRAM_ITERATIONS))
    }

    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let salted = pbkdf2_sha256(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    pub fn parse(s: &str) -> Option<ScramVerifier> {
        let mut it = s.split(':');
        let iterations = it.next()?.parse().ok()?;
        let salt = B64.decode(it.next()?).ok()?;
        let stored_key = B64.decode(it.next()?).ok()?;
        let server_key = B64.decode(it.next()?).ok()?;
        (stored_key.len() == 32 && server_key.len() == 32).then_some(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn directory() -> (tempfile::TempDir, Directory) {
        let t = tempfile::tempdir().unwrap();
        let store = agora_store::sql::SqlStore::open(t.path()).unwrap();
        let d = Directory::new(std::sync::Arc::new(store));
        d.add_domain("example.org").await.unwrap();
        d.add_user("u@example.org", "U", "pencil", 0, agora_store::Role::User).await.unwrap();
        (t, d)
    }

    #[tokio::test]
    async fn plain_and_login() {
        let (_t, d) = directory().await;
        let mut x = Exchange::new(Mechanism::Plain);
        assert!(matches!(x.step(&d, None).await, Step::Challenge(c) if c.is_empty()));
        assert!(matches!(x.step(&d, Some(b"\0u@example.org\0pencil")).await, Step::Success(_)));
        let mut x = Exchange::new(Mechanism::Plain);
        assert!(matches!(x.step(&d, Some(b"\0u@example.org\0wrong")).await, Step::Failed { .. }));
        let mut x = Exchange::new(Mechanism::Plain);
        assert!(matches!(x.step(&d, Some(b"garbage")).await, Step::Malformed(_)));
        let mut x = Exchange::new(Mechanism::Login);
        assert!(matches!(x.step(&d, None).await, Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(x.step(&d, Some(b"u@example.org")).await, Step::Challenge(c) if c == b"Password:"));
        assert!(matches!(x.step(&d, Some(b"pencil")).await, Step::Success(_)));
    }

    /// A client that answers LOGIN's two prompts, or cancels.
    struct Scripted(Vec<Option<&'static str>>);

    #[async_trait::async_trait]
    impl Challenger for Scripted {
        async fn challenge(&mut self, _data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
            match self.0.remove(0) {
                Some(s) => Ok(Some(s.as_bytes().to_vec())),
                None => Ok(None),
            }
        }
    }

    #[tokio::test]
    async fn run_drives_a_whole_exchange() {
        let (_t, d) = directory().await;
        let ok = run(&d, Mechanism::Login, None, &mut Scripted(vec![Some("u@example.org"), Some("pencil")])).await;
        assert!(matches!(ok, Step::Success(_)));
        let bad = run(&d, Mechanism::Login, None, &mut Scripted(vec![Some("u@example.org"), Some("crayon")])).await;
        assert!(matches!(bad, Step::Failed { .. }));
        let cancelled = run(&d, Mechanism::Login, None, &mut Scripted(vec![None])).await;
        assert!(matches!(cancelled, Step::Malformed("Authentication cancelled")));
        assert_eq!(decode_line("="), Some(Vec::new()));
        assert_eq!(decode_line("cGVuY2ls\r\n"), Some(b"pencil".to_vec()));
        assert_eq!(decode_line("!!"), None);
    }

    /// Plays the client side of SCRAM-SHA-256 with `password`.
    async fn scram_login(d: &Directory, user: &str, password: &str) -> Step {
        let mut x = Exchange::new(Mechanism::ScramSha256);
        let first_bare = format!("n={user},r=clientnonce123");
        let Step::Challenge(sf) = x.step(d, Some(format!("n,,{first_bare}").as_bytes())).await else { panic!() };
        let server_first = String::from_utf8(sf).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iter = 0;
        for a in server_first.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = v;
            }
            if let Some(v) = a.strip_prefix("s=") {
                salt = B64.decode(v).unwrap();
            }
            if let Some(v) = a.strip_prefix("i=") {
                iter = v.parse().unwrap();
            }
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let salted = pbkdf2_sha256(password.as_bytes(), &salt, iter);
        let client_key = hmac(&salted, b"Client Key");
        let stored = Sha256::digest(&client_key);
        let sig = hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let fin = format!("{without_proof},p={}", B64.encode(proof));
        match x.step(d, Some(fin.as_bytes())).await {
            Step::Challenge(v) => {
                let expect = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
                assert_eq!(v, format!("v={}", B64.encode(expect)).into_bytes(), "server signature");
                x.step(d, Some(b"")).await
            }
            other => other,
        }
    }

    #[tokio::test]
    async fn scram_exchange() {
        let (_t, d) = directory().await;
        assert!(matches!(scram_login(&d, "u@example.org", "pencil").await, Step::Success(_)));
        assert!(matches!(scram_login(&d, "u@example.org", "crayon").await, Step::Failed { .. }));
        assert!(matches!(scram_login(&d, "ghost@example.org", "pencil").await, Step::Failed { .. }));
        let mut x = Exchange::new(Mechanism::ScramSha256);
        assert!(matches!(x.step(&d, Some(b"p=tls-unique,,n=u,r=abc")).await, Step::Malformed(_)));
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::derive("pencil", &salt, 4096);
        let first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let server_sig = hmac(&v.server_key, auth.as_bytes());
        assert_eq!(B64.encode(server_sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let salted = pbkdf2_sha256(b"pencil", &salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let client_sig = hmac(&v.stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(B64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(ScramVerifier::parse(&v.encode()), Some(v));
    }
}
