//! The front-end role: a node that stores no mail and takes the clients' connections.
//! IMAP, POP3 and submission log in here (the password checked against the shared
//! directory, failures throttled), then a session is opened to the user's home
//! back-end over TLS (its certificate checked against the keys it registered), with a
//! PROXY header naming the client and a login as this cluster's front-end for the user
//! (the user's password never goes on), and the two are joined. SMTP on 25 and HTTP(S)
//! go to a back-end as they come (the webmail's session cookie picks the user's home).

mod imap;
mod pop3;
mod submission;
mod web;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::conn::Io;
use agora_net::{Conn, Service};
use agora_store::{Account, HEARTBEAT_TTL, NodeInfo, Store};
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

/// The front-end's listeners and the back-end listener each reaches (over TLS; SMTP
/// and HTTP as they are).
pub const ROUTES: &[(&str, &str)] = &[
    ("smtp", "smtp"),
    ("submission", "submissions"),
    ("submissions", "submissions"),
    ("imap", "imaps"),
    ("imaps", "imaps"),
    ("pop3", "pop3s"),
    ("pop3s", "pop3s"),
    ("http", "http"),
    ("https", "https"),
];

/// How long a back-end may take to answer while a session is handed over.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the node list is reused before the store is asked again.
const NODES_FRESH: Duration = Duration::from_secs(2);

/// What every front-end session shares.
pub struct Frontend {
    store: Arc<dyn Store>,
    dir: Directory,
    throttle: Arc<Throttle>,
    hostname: String,
    /// This node's own address: connections to back-ends leave from it, so that they
    /// know it for one of the cluster's front-ends.
    source: Option<IpAddr>,
    /// Listener key → port, the same on every node.
    ports: HashMap<String, u16>,
    plaintext: bool,
    nodes: Mutex<Option<(Instant, Vec<NodeInfo>)>>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend").field("hostname", &self.hostname).finish()
    }
}

/// What the front-end is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: String,
    pub source: Option<IpAddr>,
    pub ports: HashMap<String, u16>,
    pub plaintext_without_tls: bool,
}

/// The session handlers, by listener key.
pub fn build(
    store: Arc<dyn Store>,
    dir: Directory,
    throttle: Arc<Throttle>,
    settings: Settings,
) -> Vec<(&'static str, Arc<dyn Service>)> {
    let fe = Arc::new(Frontend {
        store,
        dir,
        throttle,
        hostname: settings.hostname,
        source: settings.source,
        ports: settings.ports,
        plaintext: settings.plaintext_without_tls,
        nodes: Mutex::new(None),
    });
    let mut out: Vec<(&'static str, Arc<dyn Service>)> = Vec::new();
    for (key, _) in ROUTES {
        let svc: Arc<dyn Service> = match *key {
            "imap" | "imaps" => Arc::new(imap::Imap(Arc::clone(&fe))),
            "pop3" | "pop3s" => Arc::new(pop3::Pop3(Arc::clone(&fe))),
            "submission" | "submissions" => Arc::new(submission::Submission(Arc::clone(&fe))),
            "https" => Arc::new(web::Https(Arc::clone(&fe))),
            other => Arc::new(web::Passthrough(Arc::clone(&fe), other)),
        };
        out.push((key, svc));
    }
    out
}

/// What went wrong handing a session over.
#[derive(Debug)]
pub(crate) enum Handover {
    /// No back-end is alive (or the home's address is unusable).
    NoBackend,
    /// The back-end could not be reached or refused the front-end.
    Failed(String),
}

impl Frontend {
    /// The live back-ends (alive by their heartbeat), from the store at most every
    /// `NODES_FRESH`.
    async fn backends(&self) -> Vec<NodeInfo> {
        if let Ok(g) = self.nodes.lock()
            && let Some((at, nodes)) = g.as_ref()
            && at.elapsed() < NODES_FRESH
        {
            return nodes.clone();
        }
        let now = agora_store::now();
        let nodes: Vec<NodeInfo> = match self.store.nodes().await {
            Ok(n) => n.into_iter().filter(|n| n.role != "front-end" && now - n.heartbeat <= HEARTBEAT_TTL).collect(),
            Err(e) => {
                tracing::warn!("front-end: reading the nodes: {e}");
                Vec::new()
            }
        };
        if let Ok(mut g) = self.nodes.lock() {
            *g = Some((Instant::now(), nodes.clone()));
        }
        nodes
    }

    /// The back-end for an account: its home while that is alive; else (no home, or
    /// the home down) one of the live back-ends, the same one for the same account —
    /// every back-end reaches every mailbox, since they share the store.
    pub(crate) async fn backend_for(&self, account: Option<&Account>) -> Option<NodeInfo> {
        let live = self.backends().await;
        if let Some(home) = account.and_then(|a| a.home.as_deref()) {
            if let Some(n) = live.iter().find(|n| n.name == home) {
                return Some(n.clone());
            }
            tracing::warn!("front-end: home node {home} is down; another back-end serves the session");
        }
        if live.is_empty() {
            return None;
        }
        let k = match account {
            Some(a) => a.id.unsigned_abs() as usize,
            None => {
                let mut b = [0u8; 2];
                let _ = getrandom_fill(&mut b);
                usize::from(u16::from_le_bytes(b))
            }
        };
        Some(live[k % live.len()].clone())
    }

    /// A connection to `node`'s listener `key`: from this node's address, a PROXY
    /// header naming `client` (and `local`, where it came in), then TLS checked against
    /// the node's registered keys when `tls`.
    pub(crate) async fn connect(
        &self,
        node: &NodeInfo,
        key: &str,
        client: SocketAddr,
        local: SocketAddr,
        tls: bool,
    ) -> Result<Box<dyn Io>, Handover> {
        let port = *self.ports.get(key).ok_or_else(|| Handover::Failed(format!("no port for {key}")))?;
        let ip: IpAddr = match node.address.parse() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((node.address.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or(Handover::NoBackend)?,
        };
        let target = SocketAddr::new(ip, port);
        let work = async {
            let sock = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .map_err(|e| e.to_string())?;
            if let Some(src) = self.source.filter(|s| s.is_ipv4() == ip.is_ipv4()) {
                sock.bind(SocketAddr::new(src, 0)).map_err(|e| format!("binding {src}: {e}"))?;
            }
            let mut tcp = sock.connect(target).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            tcp.write_all(proxy_header(client, local).as_bytes()).await.map_err(|e| e.to_string())?;
            if !tls {
                return Ok::<Box<dyn Io>, String>(Box::new(tcp));
            }
            let pins: Vec<Vec<u8>> = node.tls_pin.split(',').filter_map(unhex).collect();
            if pins.is_empty() {
                return Err(format!("node {} registered no TLS key", node.name));
            }
            let connector = tokio_rustls::TlsConnector::from(agora_net::tls::pinned_client_config(pins));
            let name = rustls_pki_types::ServerName::IpAddress(ip.into());
            let stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            Ok(Box::new(stream))
        };
        match tokio::time::timeout(BACKEND_TIMEOUT, work).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(Handover::Failed(format!("{} ({target}): {e}", node.name))),
            Err(_) => Err(Handover::Failed(format!("{} ({target}): timed out", node.name))),
        }
    }

    /// SASL PLAIN as this cluster's front-end acting for `login`, base64.
    pub(crate) async fn front_end_plain(&self, login: &str) -> Result<String, Handover> {
        let secret = self.dir.cluster_secret().await.map_err(|e| Handover::Failed(format!("cluster secret: {e}")))?;
        let raw = format!("{login}\0{}\0{secret}", agora_directory::FRONT_END);
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// Checks a password; a failure waits the throttle's delay.
    pub(crate) async fn login(&self, conn: &mut Conn, protocol: &str, login: &str, password: &str) -> Option<Account> {
        match self.dir.authenticate(login, password).await {
            Ok(Some(a)) => {
                agora_service::login::succeeded(&self.throttle, conn, protocol, &a.login);
                Some(a)
            }
            Ok(None) => {
                agora_service::login::failed(&self.throttle, conn.peer.ip(), protocol, Some(login)).await;
                None
            }
            Err(e) => {
                tracing::error!("{protocol}: checking {login}: {e}");
                agora_service::login::failed(&self.throttle, conn.peer.ip(), protocol, Some(login)).await;
                None
            }
        }
    }

    pub(crate) fn hostname(&self) -> &str {
        &self.hostname
    }

    pub(crate) fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.plaintext
    }
}

/// For the fuzz target: what the front-end makes of bytes a client sends before it
/// logs in (IMAP words, SASL PLAIN responses, an HTTP request head's session cookie).
#[doc(hidden)]
pub fn fuzz_preauth(data: &[u8]) {
    for line in data.split_inclusive(|&b| b == b'\n') {
        let mut words = imap::Words::of(line);
        let mut n = 0;
        loop {
            match words.next_token() {
                imap::Token::End | imap::Token::Invalid | imap::Token::Literal { .. } => break,
                imap::Token::Word(w) => assert!(!w.is_empty() || line.contains(&b'"')),
            }
            n += 1;
            assert!(n <= line.len(), "every word takes at least a byte");
        }
        if let Ok(text) = std::str::from_utf8(line)
            && let Some((user, pass)) = imap::plain(text)
        {
            let again = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
            assert_eq!(imap::plain(&again), Some((user, pass)));
        }
    }
    let _ = web::session_token(data);
}

/// The first line of a PROXY v1 header.
fn proxy_header(client: SocketAddr, local: SocketAddr) -> String {
    let (c, l) = (client.ip().to_canonical(), local.ip().to_canonical());
    match (c, l) {
        (IpAddr::V4(_), IpAddr::V4(_)) => format!("PROXY TCP4 {c} {l} {} {}\r\n", client.port(), local.port()),
        (IpAddr::V6(_), IpAddr::V6(_)) => format!("PROXY TCP6 {c} {l} {} {}\r\n", client.port(), local.port()),
        (IpAddr::V4(_), IpAddr::V6(_)) => format!("PROXY TCP4 {c} 0.0.0.0 {} {}\r\n", client.port(), local.port()),
        (IpAddr::V6(_), IpAddr::V4(_)) => format!("PROXY TCP6 {c} :: {} {}\r\n", client.port(), local.port()),
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn getrandom_fill(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// Joins the client's session to the back-end's until either ends (or the server shuts
/// down); `first` is sent to the client first (the back-end's answer to the login).
pub(crate) async fn join(conn: Conn, first: &[u8], backend: Box<dyn Io>) {
    let shutdown = conn.shutdown_token();
    let mut client = conn.into_stream();
    if client.write_all(first).await.is_err() || client.flush().await.is_err() {
        return;
    }
    splice(client, backend, shutdown).await;
}

/// Copies both ways until one side ends; the other then has `HALF_CLOSED` to finish
/// (a client that vanished does not hold the task once the back-end has closed).
pub(crate) async fn splice<C, B>(client: C, backend: B, shutdown: tokio_util::sync::CancellationToken)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => {
            let _ = tokio::time::timeout(HALF_CLOSED, &mut down).await;
        }
        _ = &mut down => {
            let _ = tokio::time::timeout(HALF_CLOSED, &mut up).await;
        }
        _ = shutdown.cancelled() => {}
    }
}

/// How long one direction may go on after the other ended.
const HALF_CLOSED: Duration = Duration::from_secs(30);

/// What a protocol says when a line is too long (and goes on), or when the session
/// idled too long or the server shuts down (and ends); empty says nothing.
pub(crate) struct Goodbyes {
    pub too_long: &'static [u8],
    pub timeout: &'static [u8],
    pub shutdown: &'static [u8],
}

/// The client's next command line before login; None when the session is over (the
/// client was told why, if it is still there).
pub(crate) async fn next_line(conn: &mut Conn, max: usize, said: &Goodbyes) -> Option<Vec<u8>> {
    use agora_net::conn::Read;
    loop {
        let goodbye = match conn.read_line(max).await {
            Read::Line(l) => return Some(l),
            Read::TooLong => {
                conn.send(said.too_long).await.ok()?;
                continue;
            }
            Read::Timeout => said.timeout,
            Read::Shutdown => said.shutdown,
            _ => b"",
        };
        if !goodbye.is_empty() {
            let _ = conn.send(goodbye).await;
        }
        return None;
    }
}

/// Reads one line from the back-end (a hand-over answer), at most 64 KiB.
pub(crate) async fn backend_line(io: &mut Box<dyn Io>) -> Result<Vec<u8>, Handover> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    let work = async {
        loop {
            match io.read(&mut b).await {
                Ok(0) => return Err(Handover::Failed("the back-end closed the connection".into())),
                Ok(_) => {
                    line.push(b[0]);
                    if b[0] == b'\n' {
                        return Ok(());
                    }
                    if line.len() > 65536 {
                        return Err(Handover::Failed("the back-end sent an overlong line".into()));
                    }
                }
                Err(e) => return Err(Handover::Failed(e.to_string())),
            }
        }
    };
    match tokio::time::timeout(BACKEND_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(line),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Handover::Failed("the back-end did not answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_name_the_client() {
        let c: SocketAddr = "192.0.2.7:50000".parse().unwrap_or_else(|_| unreachable!());
        let l: SocketAddr = "198.51.100.1:993".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(proxy_header(c, l), "PROXY TCP4 192.0.2.7 198.51.100.1 50000 993\r\n");
        let decoded = agora_net::proxy::decode(proxy_header(c, l).as_bytes());
        assert!(matches!(decoded, Ok(agora_net::proxy::Decoded::Done { source: Some(s), .. }) if s == c));
    }

    #[test]
    fn pins_are_hex() {
        assert_eq!(unhex("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex(""), None);
    }
}
