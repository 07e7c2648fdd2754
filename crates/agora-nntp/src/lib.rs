//! NNTP for Agora (RFC 3977 and its extensions): the public folders of the information
//! store served as newsgroups to readers, and exchanged with peer news servers.

pub mod article;
pub mod codec;
pub mod expire;
pub mod feed;
pub mod service;
pub mod session;
pub mod transit;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;

pub use session::{NntpConfig, Session};
use transit::Transit;

/// NNTP (119 with STARTTLS, 563 with implicit TLS) as a listener service.
pub struct NntpService {
    cfg: Arc<NntpConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    transit: Arc<Transit>,
    peers: PeerAddresses,
}

impl NntpService {
    /// `peers`: each configured peer's host and the wildmat of the newsgroups it
    /// exchanges with us; `history_days`: how long the history remembers.
    pub fn new(
        cfg: NntpConfig,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        peers: Vec<(String, String)>,
        history_days: u32,
    ) -> NntpService {
        let transit = Arc::new(Transit::new(Arc::clone(&store), cfg.hostname.clone(), cfg.max_article, history_days));
        NntpService { cfg: Arc::new(cfg), dir, store, throttle, transit, peers: PeerAddresses::new(peers) }
    }
}

#[async_trait]
impl Service for NntpService {
    fn busy_reply(&self) -> &'static [u8] {
        b"400 Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        let peer = self.peers.groups_of(conn.peer.ip()).await;
        Session::new(
            Arc::clone(&self.cfg),
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.throttle),
            Arc::clone(&self.transit),
            peer,
        )
        .run(conn)
        .await;
    }
}

/// The configured peers by address (the only clients that may feed articles), host
/// names looked up again every few minutes; a failed lookup keeps the last addresses.
struct PeerAddresses {
    /// (host, wildmat of its newsgroups)
    peers: Vec<(String, String)>,
    resolved: tokio::sync::Mutex<Resolved>,
}

/// When the peers' names were last looked up, and the addresses (with patterns) found.
type Resolved = (Option<Instant>, Vec<(IpAddr, String)>);

impl PeerAddresses {
    fn new(peers: Vec<(String, String)>) -> PeerAddresses {
        PeerAddresses { peers, resolved: tokio::sync::Mutex::new((None, Vec::new())) }
    }

    /// The newsgroups wildmat of the peer at `ip`, if it is one (several entries for
    /// one address: their patterns joined).
    async fn groups_of(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical(ip);
        let mut found: Vec<&str> = self
            .peers
            .iter()
            .filter(|(h, _)| h.parse::<IpAddr>().is_ok_and(|a| canonical(a) == ip))
            .map(|(_, w)| w.as_str())
            .collect();
        let mut named = String::new();
        if self.peers.iter().any(|(h, _)| h.parse::<IpAddr>().is_err()) {
            // One lookup at a time; the others wait for its answer.
            let mut r = self.resolved.lock().await;
            if r.0.is_none_or(|at| at.elapsed() > Duration::from_secs(300)) {
                let mut all = Vec::new();
                let mut failed = false;
                for (h, w) in self.peers.iter().filter(|(h, _)| h.parse::<IpAddr>().is_err()) {
                    match tokio::net::lookup_host((h.as_str(), 119)).await {
                        Ok(addrs) => all.extend(addrs.map(|a| (canonical(a.ip()), w.clone()))),
                        Err(e) => {
                            tracing::warn!("nntp: looking up peer {h}: {e}");
                            failed = true;
                        }
                    }
                }
                if !failed || r.1.is_empty() {
                    r.1 = all;
                }
                r.0 = Some(Instant::now());
            }
            named = r.1.iter().filter(|(a, _)| *a == ip).map(|(_, w)| w.as_str()).collect::<Vec<_>>().join(",");
        }
        if !named.is_empty() {
            found.push(&named);
        }
        (!found.is_empty()).then(|| found.join(","))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
