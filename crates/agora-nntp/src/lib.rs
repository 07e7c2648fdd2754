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
use std::sync::{Arc, Mutex};
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
    pub fn new(
        cfg: NntpConfig,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        peer_hosts: Vec<String>,
    ) -> NntpService {
        let transit = Arc::new(Transit::new(Arc::clone(&store), cfg.hostname.clone(), cfg.max_article));
        NntpService { cfg: Arc::new(cfg), dir, store, throttle, transit, peers: PeerAddresses::new(peer_hosts) }
    }
}

#[async_trait]
impl Service for NntpService {
    fn busy_reply(&self) -> &'static [u8] {
        b"400 Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        let peer = self.peers.contains(conn.peer.ip()).await;
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

/// The addresses of the configured peers (the only clients that may feed articles),
/// host names looked up again every few minutes.
struct PeerAddresses {
    hosts: Vec<String>,
    resolved: Mutex<Option<(Instant, Vec<IpAddr>)>>,
}

impl PeerAddresses {
    fn new(hosts: Vec<String>) -> PeerAddresses {
        PeerAddresses { hosts, resolved: Mutex::new(None) }
    }

    async fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.hosts.iter().any(|h| h.parse::<IpAddr>().is_ok_and(|a| canonical(a) == ip)) {
            return true;
        }
        if self.hosts.iter().all(|h| h.parse::<IpAddr>().is_ok()) {
            return false;
        }
        let fresh =
            self.resolved.lock().ok().and_then(|r| {
                r.as_ref().filter(|(at, _)| at.elapsed() < Duration::from_secs(300)).map(|(_, a)| a.clone())
            });
        let addresses = match fresh {
            Some(a) => a,
            None => {
                let mut all = Vec::new();
                for h in self.hosts.iter().filter(|h| h.parse::<IpAddr>().is_err()) {
                    if let Ok(found) = tokio::net::lookup_host((h.as_str(), 119)).await {
                        all.extend(found.map(|s| canonical(s.ip())));
                    }
                }
                if let Ok(mut r) = self.resolved.lock() {
                    *r = Some((Instant::now(), all.clone()));
                }
                all
            }
        };
        addresses.contains(&ip)
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
