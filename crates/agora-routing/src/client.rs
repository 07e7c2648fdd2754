//! Speaking the routing protocol to another server: STARTTLS (any certificate: the
//! peer proves itself with the organisation's secret, bound to this TLS session),
//! both proofs, then tables exchanged when the digests differ and merged here.

use std::sync::Arc;
use std::time::Duration;

use agora_mail::routing::{MAX_TABLE, Table};
use agora_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::proto::{self, Side};
use crate::table::{self, Identity};

/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What one exchange did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The peer's node name, as it proved it.
    pub peer: String,
    /// The tables differed (each side merged the other's).
    pub exchanged: bool,
    /// Our table changed.
    pub changed: bool,
}

async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<String, String> {
    let mut l = String::new();
    let n = (&mut *r).take(proto::MAX_LINE as u64).read_line(&mut l).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(l.trim_end().to_string())
}

fn expect(l: &str, code: &str) -> Result<(), String> {
    if l.starts_with(code) { Ok(()) } else { Err(format!("answered {l:?}")) }
}

/// Exchanges tables with the server at `host:port`.
pub async fn sync(store: &Arc<dyn Store>, me: &Identity, host: &str, port: u16) -> Result<Synced, String> {
    tokio::time::timeout(TIMEOUT, sync_inner(store, me, host, port)).await.map_err(|_| "timed out".to_string())?
}

async fn sync_inner(store: &Arc<dyn Store>, me: &Identity, host: &str, port: u16) -> Result<Synced, String> {
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let mut plain = BufReader::new(tcp);
    expect(&line(&mut plain).await?, "220")?;
    plain.get_mut().write_all(b"STARTTLS\r\n").await.map_err(|e| e.to_string())?;
    expect(&line(&mut plain).await?, "220")?;
    let connector = tokio_rustls::TlsConnector::from(agora_net::tls::bound_client_config());
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        rustls_pki_types::ServerName::try_from("agora-routing".to_string()).unwrap_or_else(|_| unreachable!())
    });
    let tls = connector.connect(name, plain.into_inner()).await.map_err(|e| format!("TLS: {e}"))?;
    let cb = agora_net::tls::channel_binding(tls.get_ref().1).ok_or("no TLS 1.3 channel binding")?;
    let mut s = BufReader::new(tls);
    let nonce = proto::nonce();
    s.get_mut()
        .write_all(format!("HELLO {} {}\r\n", me.node, proto::hex(&nonce)).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let hello = line(&mut s).await?;
    let w: Vec<&str> = hello.split(' ').collect();
    let (peer, server_nonce, their_proof) = match w.as_slice() {
        ["250", peer, n, p] => {
            (peer.to_string(), proto::unhex::<16>(n).ok_or("bad nonce")?, proto::unhex::<32>(p).ok_or("bad proof")?)
        }
        _ => return Err(format!("answered {hello:?}")),
    };
    let want = proto::proof(&me.secret, Side::Server, &cb, (&me.node, &nonce), (&peer, &server_nonce));
    if !proto::constant_time_eq(&want, &their_proof) {
        return Err(format!("{peer} at {host}:{port} is not of this organisation"));
    }
    let mine = proto::proof(&me.secret, Side::Client, &cb, (&me.node, &nonce), (&peer, &server_nonce));
    s.get_mut().write_all(format!("PROVE {}\r\n", proto::hex(&mine)).as_bytes()).await.map_err(|e| e.to_string())?;
    expect(&line(&mut s).await?, "250")?;
    let (_, ours) = table::load(store).await?;
    let (major, minor) = ours.versions();
    let digest = ours.digest();
    s.get_mut()
        .write_all(format!("DIGEST {digest} {major} {minor}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let theirs = line(&mut s).await?;
    expect(&theirs, "250")?;
    if theirs.split(' ').nth(1) == Some(digest.as_str()) {
        let _ = s.get_mut().write_all(b"QUIT\r\n").await;
        return Ok(Synced { peer, exchanged: false, changed: false });
    }
    // Ours to them (they merge), then theirs to us.
    let text = ours.encode();
    s.get_mut().write_all(format!("TABLE {}\r\n{text}", text.len()).as_bytes()).await.map_err(|e| e.to_string())?;
    expect(&line(&mut s).await?, "250")?;
    s.get_mut().write_all(b"GET\r\n").await.map_err(|e| e.to_string())?;
    let got = line(&mut s).await?;
    let len: usize = got.strip_prefix("250 ").and_then(|n| n.parse().ok()).ok_or(format!("answered {got:?}"))?;
    if len > MAX_TABLE {
        return Err("their table is too large".into());
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    let theirs = Table::decode(std::str::from_utf8(&body).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let (_, changed) = table::merge(store, &theirs).await?;
    Ok(Synced { peer, exchanged: true, changed })
}
