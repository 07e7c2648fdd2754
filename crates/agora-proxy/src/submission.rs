//! Message submission at the front-end (587 with STARTTLS, 465 over TLS): EHLO,
//! STARTTLS and AUTH (PLAIN, LOGIN) here; after a login the session is the home
//! back-end's (greeted with the client's EHLO name, logged in as the front-end for the
//! user), and the client is told its AUTH succeeded.

use std::sync::Arc;

use agora_net::Conn;
use agora_net::conn::Read;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use crate::{Frontend, Handover, backend_line, join};

const LINE_MAX: usize = 2048;

pub(crate) struct Submission(pub Arc<Frontend>);

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &str) -> Option<String> {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?).ok()
}

#[async_trait::async_trait]
impl agora_net::Service for Submission {
    fn busy_reply(&self) -> &'static [u8] {
        b"421 4.3.2 Too many connections, try again later\r\n"
    }

    async fn serve(&self, mut conn: Conn) {
        let fe = &self.0;
        if conn.send(format!("220 {} ESMTP Agora\r\n", fe.hostname()).as_bytes()).await.is_err() {
            return;
        }
        let mut helo: Option<String> = None;
        loop {
            let said = crate::Goodbyes {
                too_long: b"500 5.5.2 Line too long\r\n",
                timeout: b"421 4.4.2 Idle for too long, closing\r\n",
                shutdown: b"421 4.3.2 Server shutting down\r\n",
            };
            let Some(line) = crate::next_line(&mut conn, LINE_MAX, &said).await else { return };
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
            let reply: String = match verb.to_ascii_uppercase().as_str() {
                "EHLO" | "HELO" if arg.trim().is_empty() => "501 5.5.4 A name is needed\r\n".into(),
                "EHLO" => {
                    helo = Some(arg.trim().to_string());
                    let mut lines = vec![
                        fe.hostname().to_string(),
                        "PIPELINING".into(),
                        "SIZE".into(),
                        "ENHANCEDSTATUSCODES".into(),
                        "8BITMIME".into(),
                        "SMTPUTF8".into(),
                        "CHUNKING".into(),
                        "DSN".into(),
                    ];
                    if conn.can_starttls() {
                        lines.push("STARTTLS".into());
                    }
                    if fe.plaintext_ok(&conn) {
                        lines.push("AUTH PLAIN LOGIN".into());
                    }
                    let n = lines.len();
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' }))
                        .collect()
                }
                "HELO" => {
                    helo = Some(arg.trim().to_string());
                    format!("250 {}\r\n", fe.hostname())
                }
                "STARTTLS" if conn.can_starttls() => {
                    if conn.send(b"220 2.0.0 Ready to start TLS\r\n").await.is_err() || conn.start_tls().await.is_err()
                    {
                        return;
                    }
                    helo = None;
                    continue;
                }
                "NOOP" | "RSET" => "250 2.0.0 OK\r\n".into(),
                "QUIT" => {
                    let _ = conn.send(b"221 2.0.0 Bye\r\n").await;
                    return;
                }
                "AUTH" if !fe.plaintext_ok(&conn) => "530 5.7.0 Must issue a STARTTLS command first\r\n".into(),
                "AUTH" if helo.is_none() => "503 5.5.1 EHLO first\r\n".into(),
                "AUTH" => {
                    let mut parts = arg.split_whitespace();
                    let mech = parts.next().unwrap_or_default().to_ascii_uppercase();
                    let initial = parts.next().map(str::to_string);
                    let creds = match mech.as_str() {
                        "PLAIN" => {
                            let data = match initial {
                                Some(d) => Some(d),
                                None => ask(&mut conn, "").await,
                            };
                            data.and_then(|d| crate::imap::plain(&d))
                        }
                        "LOGIN" => {
                            let user = match initial {
                                Some(d) => unb64(&d),
                                None => ask(&mut conn, &b64("Username:")).await.and_then(|d| unb64(&d)),
                            };
                            match user {
                                Some(u) => {
                                    ask(&mut conn, &b64("Password:")).await.and_then(|d| unb64(&d)).map(|p| (u, p))
                                }
                                None => None,
                            }
                        }
                        _ => {
                            if conn.send(b"504 5.5.4 Unrecognized authentication type\r\n").await.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    let Some((user, pass)) = creds else {
                        if conn.send(b"501 5.5.2 Cannot decode the response\r\n").await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let name = helo.clone().unwrap_or_default();
                    match login(fe, conn, &name, &user, &pass).await {
                        Some(c) => {
                            conn = c;
                            continue;
                        }
                        None => return,
                    }
                }
                "MAIL" | "RCPT" | "DATA" | "BDAT" | "BURL" => "530 5.7.0 Authentication required\r\n".into(),
                _ => "502 5.5.2 Command not recognized\r\n".into(),
            };
            if conn.send(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// A SASL challenge (`334`), and the client's base64 answer; None when it cancels or goes.
async fn ask(conn: &mut Conn, challenge: &str) -> Option<String> {
    conn.send(format!("334 {challenge}\r\n").as_bytes()).await.ok()?;
    match conn.read_line(LINE_MAX).await {
        Read::Line(l) => {
            let s = String::from_utf8_lossy(&l).trim_end().to_string();
            (s != "*").then_some(s)
        }
        _ => None,
    }
}

/// Checks the password and hands the session over; the connection back when the
/// client may go on here (it was told why).
async fn login(fe: &Frontend, mut conn: Conn, helo: &str, user: &str, pass: &str) -> Option<Conn> {
    let Some(account) = fe.login(&mut conn, "submission", user, pass).await else {
        return conn.send(b"535 5.7.8 Authentication credentials invalid\r\n").await.ok().map(|_| conn);
    };
    let node = fe.backend_for(Some(&account)).await;
    let handed = async {
        let node = node.ok_or(Handover::NoBackend)?;
        let mut io = fe.connect(&node, "submissions", conn.peer, conn.local, true).await?;
        expect(&mut io, b"220").await?;
        io.write_all(format!("EHLO {helo}\r\n").as_bytes()).await.map_err(|e| Handover::Failed(e.to_string()))?;
        expect(&mut io, b"250").await?;
        let plain = fe.front_end_plain(&account.login).await?;
        io.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
            .await
            .map_err(|e| Handover::Failed(e.to_string()))?;
        let answer = expect(&mut io, b"235").await?;
        Ok((answer, io))
    };
    match handed.await {
        Ok((answer, io)) => {
            join(conn, &answer, io).await;
            None
        }
        Err(e) => {
            let why = match e {
                Handover::NoBackend => "no mail server is up".to_string(),
                Handover::Failed(w) => w,
            };
            tracing::warn!("submission front-end: {}: {why}", account.login);
            conn.send(b"454 4.7.0 Your mail server cannot be reached; try again later\r\n").await.ok().map(|_| conn)
        }
    }
}

/// Reads a reply (every line of it) and checks its code; returns its text.
async fn expect(io: &mut Box<dyn agora_net::conn::Io>, code: &[u8]) -> Result<Vec<u8>, Handover> {
    let mut all = Vec::new();
    loop {
        let line = backend_line(io).await?;
        all.extend_from_slice(&line);
        if !line.starts_with(code) {
            return Err(Handover::Failed(format!("the back-end said {}", String::from_utf8_lossy(&line).trim_end())));
        }
        if line.get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}
