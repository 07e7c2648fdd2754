//! POP3 at the front-end: the authorization state (CAPA, STLS, USER/PASS, AUTH PLAIN,
//! QUIT); after a login the session is the home back-end's, whose answer to the
//! hand-over login (which takes the maildrop lock there) is the client's.

use std::sync::Arc;

use agora_net::Conn;
use agora_net::conn::Read;
use tokio::io::AsyncWriteExt;

use crate::{Frontend, Handover, backend_line, join};

const LINE_MAX: usize = 1024;

pub(crate) struct Pop3(pub Arc<Frontend>);

#[async_trait::async_trait]
impl agora_net::Service for Pop3 {
    fn busy_reply(&self) -> &'static [u8] {
        b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
    }

    async fn serve(&self, mut conn: Conn) {
        let fe = &self.0;
        if conn.send(format!("+OK {} POP3 ready\r\n", fe.hostname()).as_bytes()).await.is_err() {
            return;
        }
        let mut user: Option<String> = None;
        loop {
            let said = crate::Goodbyes {
                too_long: b"-ERR Line too long\r\n",
                timeout: b"",
                shutdown: b"-ERR [SYS/TEMP] Server shutting down\r\n",
            };
            let Some(line) = crate::next_line(&mut conn, LINE_MAX, &said).await else { return };
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            let (cmd, arg) = text.split_once(' ').unwrap_or((&text, ""));
            let reply: Vec<u8> = match cmd.to_ascii_uppercase().as_str() {
                "CAPA" => {
                    let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UTF8"];
                    if conn.can_starttls() {
                        caps.push("STLS");
                    }
                    if fe.plaintext_ok(&conn) {
                        caps.extend(["USER", "SASL PLAIN"]);
                    }
                    format!("+OK Capability list follows\r\n{}\r\n.\r\n", caps.join("\r\n")).into_bytes()
                }
                "STLS" if conn.can_starttls() => {
                    if conn.send(b"+OK Begin TLS negotiation\r\n").await.is_err() || conn.start_tls().await.is_err() {
                        return;
                    }
                    user = None;
                    continue;
                }
                "QUIT" => {
                    let _ = conn.send(b"+OK Bye\r\n").await;
                    return;
                }
                "NOOP" => b"+OK\r\n".to_vec(),
                "USER" | "PASS" | "AUTH" if !fe.plaintext_ok(&conn) => {
                    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections (use STLS)\r\n".to_vec()
                }
                "USER" if !arg.is_empty() => {
                    user = Some(arg.to_string());
                    b"+OK\r\n".to_vec()
                }
                "PASS" => match user.take() {
                    Some(u) => match login(fe, conn, &u, arg).await {
                        Some(c) => {
                            conn = c;
                            continue;
                        }
                        None => return,
                    },
                    None => b"-ERR USER first\r\n".to_vec(),
                },
                "AUTH" => {
                    let mut parts = arg.split_whitespace();
                    let mech = parts.next().unwrap_or_default().to_ascii_uppercase();
                    if mech != "PLAIN" {
                        b"-ERR [AUTH] Only PLAIN here\r\n".to_vec()
                    } else {
                        let data = match parts.next() {
                            Some(ir) => ir.to_string(),
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
                        match crate::imap::plain(&data) {
                            Some((u, p)) => match login(fe, conn, &u, &p).await {
                                Some(c) => {
                                    conn = c;
                                    continue;
                                }
                                None => return,
                            },
                            None => b"-ERR Malformed PLAIN response\r\n".to_vec(),
                        }
                    }
                }
                _ => b"-ERR Log in first\r\n".to_vec(),
            };
            if conn.send(&reply).await.is_err() {
                return;
            }
        }
    }
}

/// Checks the password and hands the session over; the connection back when the
/// client may go on here (it was told why).
async fn login(fe: &Frontend, mut conn: Conn, user: &str, pass: &str) -> Option<Conn> {
    let Some(account) = fe.login(&mut conn, "pop3", user, pass).await else {
        return conn.send(b"-ERR [AUTH] Authentication failed\r\n").await.ok().map(|_| conn);
    };
    let node = fe.backend_for(Some(&account)).await;
    let handed = async {
        let node = node.ok_or(Handover::NoBackend)?;
        let mut io = fe.connect(&node, "pop3s", conn.peer, conn.local, true).await?;
        let greeting = backend_line(&mut io).await?;
        if !greeting.starts_with(b"+OK") {
            return Err(Handover::Failed(format!("greeting {:?}", String::from_utf8_lossy(&greeting))));
        }
        let plain = fe.front_end_plain(&account.login).await?;
        io.write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
            .await
            .map_err(|e| Handover::Failed(e.to_string()))?;
        let answer = backend_line(&mut io).await?;
        Ok((answer, io))
    };
    match handed.await {
        // The back-end's answer either way: "+OK", or "-ERR [IN-USE]" when the
        // maildrop is locked by another session anywhere in the cluster.
        Ok((answer, io)) if answer.starts_with(b"+OK") => {
            join(conn, &answer, io).await;
            None
        }
        Ok((answer, _)) => conn.send(&answer).await.ok().map(|_| conn),
        Err(e) => {
            let why = match e {
                Handover::NoBackend => "no mail server is up".to_string(),
                Handover::Failed(w) => w,
            };
            tracing::warn!("pop3 front-end: {}: {why}", account.login);
            conn.send(b"-ERR [SYS/TEMP] Your mail server cannot be reached; try again later\r\n")
                .await
                .ok()
                .map(|_| conn)
        }
    }
}
