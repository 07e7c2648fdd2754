//! IMAP at the front-end: the not-authenticated state (CAPABILITY, NOOP, ID, STARTTLS,
//! LOGIN, AUTHENTICATE PLAIN, LOGOUT); after a login the session is the home
//! back-end's, whose answer to the hand-over login is the client's tagged OK.

use std::sync::Arc;

use agora_net::Conn;
use agora_net::conn::Read;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use crate::{Frontend, Handover, backend_line, join};

/// Longest command line before login (literals counted apart).
const LINE_MAX: usize = 8192;
/// Longest literal before login (a user name or password).
const LITERAL_MAX: usize = 1024;

pub(crate) struct Imap(pub Arc<Frontend>);

#[async_trait::async_trait]
impl agora_net::Service for Imap {
    fn busy_reply(&self) -> &'static [u8] {
        b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    }

    async fn serve(&self, mut conn: Conn) {
        let fe = &self.0;
        let greeting = format!("* OK [CAPABILITY {}] {} ready\r\n", capabilities(fe, &conn), fe.hostname());
        if conn.send(greeting.as_bytes()).await.is_err() {
            return;
        }
        loop {
            let said = crate::Goodbyes {
                too_long: b"* BAD Command line too long\r\n",
                timeout: b"* BYE Autologout; idle for too long\r\n",
                shutdown: b"* BYE [UNAVAILABLE] Server shutting down\r\n",
            };
            let Some(line) = crate::next_line(&mut conn, LINE_MAX, &said).await else { return };
            let mut words = Words::of(&line);
            let (Some(tag), Some(cmd)) = (words.next_atom(), words.next_atom()) else {
                let _ = conn.send(b"* BAD Missing tag or command\r\n").await;
                continue;
            };
            if !valid_tag(&tag) {
                let _ = conn.send(b"* BAD Invalid tag\r\n").await;
                continue;
            }
            let cmd = cmd.to_ascii_uppercase();
            let reply = |text: &str| format!("{tag} {text}\r\n");
            match cmd.as_str() {
                "CAPABILITY" => {
                    let caps =
                        format!("* CAPABILITY {}\r\n{}", capabilities(fe, &conn), reply("OK CAPABILITY completed"));
                    if conn.send(caps.as_bytes()).await.is_err() {
                        return;
                    }
                }
                "NOOP" => {
                    if conn.send(reply("OK NOOP completed").as_bytes()).await.is_err() {
                        return;
                    }
                }
                "ID" => {
                    if conn.send(format!("* ID NIL\r\n{}", reply("OK ID completed")).as_bytes()).await.is_err() {
                        return;
                    }
                }
                "LOGOUT" => {
                    let _ =
                        conn.send(format!("* BYE Logging out\r\n{}", reply("OK LOGOUT completed")).as_bytes()).await;
                    return;
                }
                "STARTTLS" if conn.can_starttls() => {
                    if conn.send(reply("OK Begin TLS negotiation now").as_bytes()).await.is_err()
                        || conn.start_tls().await.is_err()
                    {
                        return;
                    }
                }
                "LOGIN" | "AUTHENTICATE" if !fe.plaintext_ok(&conn) => {
                    let r = reply("NO [PRIVACYREQUIRED] Use STARTTLS first");
                    if conn.send(r.as_bytes()).await.is_err() {
                        return;
                    }
                }
                "LOGIN" => {
                    let (Some(user), Some(pass)) =
                        (words.next_astring(&mut conn).await, words.next_astring(&mut conn).await)
                    else {
                        if conn.send(reply("BAD LOGIN needs a user name and a password").as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    match login(fe, conn, &tag, &user, &pass).await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
                "AUTHENTICATE" => {
                    let mech = words.next_atom().unwrap_or_default().to_ascii_uppercase();
                    if mech != "PLAIN" {
                        if conn.send(reply("NO [CANNOT] Only PLAIN here").as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let data = match words.next_atom() {
                        Some(ir) => ir,
                        None => {
                            if conn.send(b"+ \r\n").await.is_err() {
                                return;
                            }
                            match conn.read_line(LINE_MAX).await {
                                Read::Line(l) => String::from_utf8_lossy(&l).trim_end().to_string(),
                                _ => return,
                            }
                        }
                    };
                    if data == "*" {
                        if conn.send(reply("BAD Authentication cancelled").as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let Some((user, pass)) = plain(&data) else {
                        if conn.send(reply("BAD Malformed PLAIN response").as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    match login(fe, conn, &tag, &user, &pass).await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
                "SELECT" | "EXAMINE" | "LIST" | "LSUB" | "STATUS" | "APPEND" | "CREATE" | "DELETE" | "RENAME"
                | "SUBSCRIBE" | "UNSUBSCRIBE" | "ENABLE" | "IDLE" | "NAMESPACE" | "FETCH" | "STORE" | "SEARCH" => {
                    if conn.send(reply("BAD Log in first").as_bytes()).await.is_err() {
                        return;
                    }
                }
                _ => {
                    if conn.send(reply("BAD Unknown command").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A tag as RFC 9051 allows one: ASTRING-CHARs but `+`.
fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b))
}

fn capabilities(fe: &Frontend, conn: &Conn) -> String {
    let mut caps = vec!["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID"];
    if conn.can_starttls() {
        caps.push("STARTTLS");
    }
    if fe.plaintext_ok(conn) {
        caps.push("AUTH=PLAIN");
    } else {
        caps.push("LOGINDISABLED");
    }
    caps.join(" ")
}

/// The user and password of a SASL PLAIN response (base64).
pub(crate) fn plain(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let mut it = raw.split(|&b| b == 0);
    let (authzid, authcid, pass) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || (!authzid.is_empty() && authzid != authcid) {
        return None;
    }
    Some((String::from_utf8(authcid.to_vec()).ok()?, String::from_utf8(pass.to_vec()).ok()?))
}

/// Checks the password, then hands the session to the user's home back-end. Returns
/// the connection when the session is over here (the client is told why).
async fn login(fe: &Frontend, mut conn: Conn, tag: &str, user: &str, pass: &str) -> Option<Conn> {
    let Some(account) = fe.login(&mut conn, "imap", user, pass).await else {
        // The client may try again on this connection, after the throttle's delay.
        return conn
            .send(format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n").as_bytes())
            .await
            .ok()
            .map(|_| conn);
    };
    match handover(fe, conn.peer, conn.local, tag, &account).await {
        Ok((first, backend)) => {
            join(conn, &first, backend).await;
            None
        }
        Err(e) => {
            let why = match e {
                Handover::NoBackend => "no mail server is up".to_string(),
                Handover::Failed(w) => w,
            };
            tracing::warn!("imap front-end: {}: {why}", account.login);
            let _ = conn
                .send(
                    format!("{tag} NO [UNAVAILABLE] Your mail server cannot be reached; try again later\r\n")
                        .as_bytes(),
                )
                .await;
            Some(conn)
        }
    }
}

/// Opens the back-end session and logs in there as the front-end for the user; returns
/// the back-end's answer (tagged with the client's tag) and the connection.
async fn handover(
    fe: &Frontend,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    tag: &str,
    account: &agora_store::Account,
) -> Result<(Vec<u8>, Box<dyn agora_net::conn::Io>), Handover> {
    let node = fe.backend_for(Some(account)).await.ok_or(Handover::NoBackend)?;
    let mut io = fe.connect(&node, "imaps", peer, local, true).await?;
    let greeting = backend_line(&mut io).await?;
    if !greeting.starts_with(b"* OK") {
        return Err(Handover::Failed(format!("greeting {:?}", String::from_utf8_lossy(&greeting))));
    }
    let plain = fe.front_end_plain(&account.login).await?;
    io.write_all(format!("{tag} AUTHENTICATE PLAIN {plain}\r\n").as_bytes())
        .await
        .map_err(|e| Handover::Failed(e.to_string()))?;
    let mut first = Vec::new();
    loop {
        let line = backend_line(&mut io).await?;
        let tagged = line.starts_with(format!("{tag} ").as_bytes());
        if tagged && !line[tag.len() + 1..].starts_with(b"OK") {
            return Err(Handover::Failed(format!("login refused: {}", String::from_utf8_lossy(&line).trim_end())));
        }
        first.extend_from_slice(&line);
        if tagged {
            return Ok((first, io));
        }
    }
}

/// The words of a command line: atoms, quoted strings and literals (read from the
/// connection as they are announced).
pub(crate) struct Words {
    rest: Vec<u8>,
    pos: usize,
}

impl Words {
    /// The words of one line (its line end left out).
    pub(crate) fn of(line: &[u8]) -> Words {
        let mut rest = line.to_vec();
        while rest.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            rest.pop();
        }
        Words { rest, pos: 0 }
    }

    fn skip_space(&mut self) {
        while self.rest.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    pub(crate) fn next_atom(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.pos;
        while self.pos < self.rest.len() && self.rest[self.pos] != b' ' {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.rest[start..self.pos]).into_owned())
    }

    /// The next word as it stands in the line: an atom or a quoted string, or the
    /// announcement of a literal that follows the line.
    pub(crate) fn next_token(&mut self) -> Token {
        self.skip_space();
        match self.rest.get(self.pos) {
            None => Token::End,
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                while let Some(&b) = self.rest.get(self.pos) {
                    self.pos += 1;
                    match b {
                        b'\\' => match self.rest.get(self.pos) {
                            Some(&c) => {
                                out.push(c);
                                self.pos += 1;
                            }
                            None => return Token::Invalid,
                        },
                        b'"' => return String::from_utf8(out).map_or(Token::Invalid, Token::Word),
                        _ => out.push(b),
                    }
                }
                Token::Invalid
            }
            Some(b'{') => {
                let Some(close) = self.rest[self.pos..].iter().position(|&b| b == b'}').map(|c| c + self.pos) else {
                    return Token::Invalid;
                };
                let spec = std::str::from_utf8(&self.rest[self.pos + 1..close]).unwrap_or("");
                let (n, sync) = match spec.strip_suffix('+') {
                    Some(n) => (n.parse::<usize>().ok(), false),
                    None => (spec.parse::<usize>().ok(), true),
                };
                match n {
                    Some(len) if close + 1 == self.rest.len() && len <= LITERAL_MAX => {
                        self.pos = self.rest.len();
                        Token::Literal { len, sync }
                    }
                    _ => Token::Invalid,
                }
            }
            Some(_) => self.next_atom().map_or(Token::End, Token::Word),
        }
    }

    /// An atom, a quoted string or a literal (`{n}` answered with a continuation,
    /// `{n+}` not); a literal's bytes and the rest of its line are read here.
    async fn next_astring(&mut self, conn: &mut Conn) -> Option<String> {
        match self.next_token() {
            Token::Word(w) => Some(w),
            Token::Literal { len, sync } => {
                if sync && conn.send(b"+ Ready for literal data\r\n").await.is_err() {
                    return None;
                }
                let Read::Bytes(data) = conn.read_exact(len).await else { return None };
                let Read::Line(more) = conn.read_line(LINE_MAX).await else { return None };
                *self = Words::of(&more);
                String::from_utf8(data).ok()
            }
            Token::End | Token::Invalid => None,
        }
    }
}

/// A word of a command line before login.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Word(String),
    /// `{len}` or `{len+}` ends the line; the literal's bytes come next.
    Literal {
        len: usize,
        sync: bool,
    },
    End,
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_before_login() {
        let mut w = Words::of(b"a1 LOGIN \"ann\\\"s\" {6}\r\n");
        assert_eq!(w.next_token(), Token::Word("a1".into()));
        assert_eq!(w.next_token(), Token::Word("LOGIN".into()));
        assert_eq!(w.next_token(), Token::Word("ann\"s".into()));
        assert_eq!(w.next_token(), Token::Literal { len: 6, sync: true });
        assert_eq!(w.next_token(), Token::End);
        assert_eq!(Words::of(b"a {5+}").next_token(), Token::Word("a".into()));
        let mut w = Words::of(b"{99999}");
        assert_eq!(w.next_token(), Token::Invalid, "literals before login are small");
        assert_eq!(Words::of(b"\"open").next_token(), Token::Invalid);
    }

    #[test]
    fn plain_responses() {
        let b = base64::engine::general_purpose::STANDARD.encode("\0ann@example.org\0pw");
        assert_eq!(plain(&b), Some(("ann@example.org".into(), "pw".into())));
        let other = base64::engine::general_purpose::STANDARD.encode("bob\0ann\0pw");
        assert_eq!(plain(&other), None, "acting for another user is not offered");
        assert_eq!(plain("!!"), None);
    }
}
