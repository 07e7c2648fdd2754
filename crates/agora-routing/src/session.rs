//! One connection on 691: STARTTLS, the two proofs of membership, then digests and
//! tables. A server that cannot prove it holds the organisation's secret learns
//! nothing of the table and changes nothing.

use std::sync::Arc;

use agora_mail::routing::Table;
use agora_net::{Conn, Read, Service};
use agora_store::Store;
use async_trait::async_trait;

use crate::proto::{self, Command, Side};
use crate::table::{self, Identity};

pub struct RoutingService {
    pub store: Arc<dyn Store>,
    /// None: this server is in no organisation (every session is refused).
    pub me: Option<Identity>,
    /// Rung when a merge changed the table (the service pushes it on).
    pub changed: Arc<tokio::sync::Notify>,
}

enum Stage {
    Plain,
    Tls,
    Greeted { client: String, client_nonce: [u8; 16], server_nonce: [u8; 16] },
    Member,
}

#[async_trait]
impl Service for RoutingService {
    fn busy_reply(&self) -> &'static [u8] {
        b"421 too busy, try later\r\n"
    }

    async fn serve(&self, mut conn: Conn) {
        let Some(me) = &self.me else {
            let _ = conn.send(b"554 this server is in no routing organisation\r\n").await;
            return;
        };
        let mut stage = if conn.is_tls() { Stage::Tls } else { Stage::Plain };
        if conn.send(format!("220 {} agora-routing 1\r\n", me.node).as_bytes()).await.is_err() {
            return;
        }
        let mut errors = 0;
        loop {
            let line = match conn.read_line(proto::MAX_LINE).await {
                Read::Line(l) => l,
                Read::TooLong => {
                    let _ = conn.send(b"500 line too long\r\n").await;
                    return;
                }
                Read::Shutdown => {
                    let _ = conn.send(b"421 shutting down\r\n").await;
                    return;
                }
                _ => return,
            };
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let cmd = match proto::parse(line) {
                Ok(c) => c,
                Err(reply) => {
                    errors += 1;
                    // Garbage is not a routing server: a few mistakes, then goodbye.
                    if errors >= 3 || matches!(stage, Stage::Plain | Stage::Tls) && errors >= 1 {
                        let _ = conn.send(format!("{reply}\r\n421 closing\r\n").as_bytes()).await;
                        return;
                    }
                    if conn.send(format!("{reply}\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let reply = match (&stage, cmd) {
                (_, Command::Quit) => {
                    let _ = conn.send(b"221 bye\r\n").await;
                    return;
                }
                (_, Command::Noop) => "250 ok".to_string(),
                (Stage::Plain, Command::StartTls) => {
                    if conn.send(b"220 go ahead\r\n").await.is_err() || conn.start_tls().await.is_err() {
                        return;
                    }
                    stage = Stage::Tls;
                    continue;
                }
                (Stage::Plain, _) => "530 STARTTLS first".to_string(),
                (Stage::Tls, Command::Hello { node, nonce }) => {
                    let Some(cb) = conn.channel_binding().copied() else {
                        let _ = conn.send(b"554 TLS 1.3 is needed\r\n").await;
                        return;
                    };
                    let server_nonce = proto::nonce();
                    let p = proto::proof(&me.secret, Side::Server, &cb, (&node, &nonce), (&me.node, &server_nonce));
                    let r = format!("250 {} {} {}", me.node, proto::hex(&server_nonce), proto::hex(&p));
                    stage = Stage::Greeted { client: node, client_nonce: nonce, server_nonce };
                    r
                }
                (Stage::Greeted { client, client_nonce, server_nonce }, Command::Prove(p)) => {
                    let cb = conn.channel_binding().copied().unwrap_or_default();
                    let want =
                        proto::proof(&me.secret, Side::Client, &cb, (client, client_nonce), (&me.node, server_nonce));
                    if !proto::constant_time_eq(&want, &p) {
                        tracing::warn!("routing: {} from {} is not of this organisation", client, conn.peer.ip());
                        let _ = conn.send(b"535 not of this organisation\r\n").await;
                        return;
                    }
                    conn.set_authenticated();
                    tracing::info!("routing: {client} from {} proved its membership", conn.peer.ip());
                    stage = Stage::Member;
                    "250 welcome".to_string()
                }
                (Stage::Member, Command::Digest { .. }) => match table::load(&self.store).await {
                    Ok((_, t)) => summary(&t),
                    Err(e) => format!("451 {e}"),
                },
                (Stage::Member, Command::Table(len)) => {
                    let mut body = Vec::with_capacity(len);
                    if conn.read_more(len, &mut body).await.is_err() {
                        return;
                    }
                    match std::str::from_utf8(&body)
                        .map_err(|e| e.to_string())
                        .and_then(|s| Table::decode(s).map_err(|e| e.to_string()))
                    {
                        Err(e) => format!("501 {e}"),
                        Ok(theirs) => match table::merge(&self.store, &theirs).await {
                            Ok((t, changed)) => {
                                if changed {
                                    self.changed.notify_one();
                                }
                                summary(&t)
                            }
                            Err(e) => format!("451 {e}"),
                        },
                    }
                }
                (Stage::Member, Command::Get) => match table::load(&self.store).await {
                    Ok((_, t)) => {
                        let text = t.encode();
                        conn.queue(format!("250 {}\r\n", text.len()).as_bytes());
                        conn.queue(text.as_bytes());
                        if conn.flush().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => format!("451 {e}"),
                },
                (Stage::Tls | Stage::Greeted { .. }, _) => "530 prove membership first (HELLO, PROVE)".to_string(),
                (Stage::Member, _) => "503 bad sequence of commands".to_string(),
            };
            if conn.send(format!("{reply}\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// `250 DIGEST MAJOR MINOR`.
fn summary(t: &Table) -> String {
    let (major, minor) = t.versions();
    format!("250 {} {major} {minor}", t.digest())
}
