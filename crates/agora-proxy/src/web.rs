//! What the front-end passes on whole: SMTP on 25 and HTTP on 80 go to a live
//! back-end as they come (behind a PROXY header, so it judges and logs the client);
//! HTTPS is decrypted here and goes on over TLS to the back-end the webmail session's
//! cookie belongs to (its user's home), else to any.

use std::sync::Arc;

use agora_net::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Frontend, join};

/// Largest request head read to find the session cookie.
const HEAD_MAX: usize = 32 * 1024;
/// The webmail's session cookie.
const COOKIE: &str = "__Host-agora";

pub(crate) struct Passthrough(pub Arc<Frontend>, pub &'static str);

#[async_trait::async_trait]
impl agora_net::Service for Passthrough {
    fn busy_reply(&self) -> &'static [u8] {
        if self.1 == "smtp" { b"421 4.3.2 Too many connections, try again later\r\n" } else { b"" }
    }

    async fn serve(&self, mut conn: Conn) {
        let fe = &self.0;
        let Some(node) = fe.backend_for(None).await else {
            if self.1 == "smtp" {
                let _ = conn.send(b"421 4.3.0 No mail server is up; try again later\r\n").await;
            }
            return;
        };
        match fe.connect(&node, self.1, conn.peer, conn.local, false).await {
            Ok(io) => join(conn, b"", io).await,
            Err(e) => {
                tracing::warn!("{} front-end: {e:?}", self.1);
                if self.1 == "smtp" {
                    let _ = conn.send(b"421 4.3.0 No mail server can be reached; try again later\r\n").await;
                }
            }
        }
    }
}

pub(crate) struct Https(pub Arc<Frontend>);

#[async_trait::async_trait]
impl agora_net::Service for Https {
    fn busy_reply(&self) -> &'static [u8] {
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    }

    async fn serve(&self, conn: Conn) {
        let fe = &self.0;
        let (peer, local) = (conn.peer, conn.local);
        let shutdown = conn.shutdown_token();
        let mut client = conn.into_stream();
        // The first request's head, to find whose session it is.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_MAX {
                let n = client.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
            Ok(Ok(())) if !head.is_empty() => {}
            _ => return,
        }
        let account = match session_token(&head) {
            Some(token) => {
                let id = agora_store::blob::sha256_hex(token.as_bytes());
                match fe.store.web_session(&id).await {
                    Ok(Some(s)) => fe.store.account(s.account).await.ok().flatten(),
                    _ => None,
                }
            }
            None => None,
        };
        let Some(node) = fe.backend_for(account.as_ref()).await else {
            let _ = client.write_all(self.busy_reply()).await;
            return;
        };
        let mut backend = match fe.connect(&node, "https", peer, local, true).await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!("https front-end: {e:?}");
                let _ = client.write_all(self.busy_reply()).await;
                return;
            }
        };
        if backend.write_all(&head).await.is_err() {
            return;
        }
        crate::splice(client, backend, shutdown).await;
    }
}

/// The webmail session token in a request head's Cookie headers.
pub(crate) fn session_token(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if !name.trim().eq_ignore_ascii_case("cookie") {
            continue;
        }
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == COOKIE
            {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found() {
        let head = b"GET /mail HTTP/1.1\r\nHost: x\r\nCookie: a=b; __Host-agora=tok123; __Host-agora-pre=p\r\n\r\n";
        assert_eq!(session_token(head).as_deref(), Some("tok123"));
        assert_eq!(session_token(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    }
}
