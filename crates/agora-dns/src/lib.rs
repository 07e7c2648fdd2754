//! DNS for Agora: authoritative answers over UDP and TCP for every hosted domain, the
//! zones built by the mail core from the server's own state and rebuilt when the
//! directory changes (a domain added, a DKIM key rotated), the SOA serial moving with
//! every change.

pub mod answer;
pub mod ratelimit;
pub mod service;
pub mod zones;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use agora_mail::zone::{self, ZoneInput};
use agora_net::{Conn, DatagramService, Service};
use agora_store::Store;
use async_trait::async_trait;

use crate::zones::{Zone, Zones};

/// What the zones are made from, besides the store.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    pub nameservers: Vec<String>,
    pub listening: Vec<(String, u16)>,
    pub dmarc_policy: String,
    pub ttl: u32,
}

/// The zones at one directory version, and each zone's serial by content.
pub struct Shared {
    store: Arc<dyn Store>,
    cfg: DnsConfig,
    current: RwLock<Arc<(u64, Zones)>>,
    rebuilding: tokio::sync::Mutex<()>,
    /// Domain -> (records without the SOA, serial): a serial moves only when they change.
    serials: Mutex<HashMap<String, (Vec<zone::Record>, u32)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, cfg: DnsConfig) -> Arc<Shared> {
        Arc::new(Shared {
            store,
            cfg,
            current: RwLock::new(Arc::new((u64::MAX, Zones::default()))),
            rebuilding: tokio::sync::Mutex::new(()),
            serials: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, version: u64) -> Option<Arc<(u64, Zones)>> {
        let c = self.current.read().ok()?;
        (c.0 == version).then(|| Arc::clone(&c))
    }

    /// The zones at the store's current directory version.
    pub async fn zones(&self) -> Option<Arc<(u64, Zones)>> {
        if let Some(z) = self.cached(self.store.directory_version()) {
            return Some(z);
        }
        let _guard = self.rebuilding.lock().await;
        let version = self.store.directory_version();
        if let Some(z) = self.cached(version) {
            return Some(z);
        }
        let mut zones = Zones::default();
        let domains = match self.store.domains().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("dns: reading the hosted domains: {e}");
                return None;
            }
        };
        for d in domains {
            let dkim = self.store.dkim_keys(&d.name).await.unwrap_or_default();
            let mut extra = Vec::new();
            for r in self.store.dns_records(&d.name).await.unwrap_or_default() {
                match zone::parse_extra(&d.name, &format!("{}.", r.name), &r.rtype, &r.value, r.ttl) {
                    Ok(rec) => extra.push(rec),
                    Err(e) => tracing::warn!("dns: {} {} {}: not published: {e}", r.name, r.rtype, r.value),
                }
            }
            let mut input = ZoneInput {
                domain: d.name.clone(),
                hostname: self.cfg.hostname.clone(),
                addresses: self.cfg.addresses.clone(),
                nameservers: self.cfg.nameservers.clone(),
                dkim,
                listeners: self.cfg.listening.clone(),
                dmarc_policy: self.cfg.dmarc_policy.clone(),
                ttl: self.cfg.ttl,
                serial: 0,
                extra,
            };
            input.serial = self.serial(&d.name, &zone::build(&input));
            if let Some(z) = Zone::new(&d.name, &zone::build(&input)) {
                zones.zones.push(z);
            }
        }
        let built = Arc::new((version, zones));
        if let Ok(mut c) = self.current.write() {
            *c = Arc::clone(&built);
        }
        Some(built)
    }

    /// The serial for a domain's records: unchanged while they are, else the current
    /// time in seconds (and always above the last one).
    fn serial(&self, domain: &str, records: &[zone::Record]) -> u32 {
        let content: Vec<zone::Record> = records.iter().skip(1).cloned().collect();
        let now = agora_store::now().clamp(1, i64::from(u32::MAX)) as u32;
        let Ok(mut map) = self.serials.lock() else { return now };
        match map.get_mut(domain) {
            Some((old, serial)) if *old == content => *serial,
            Some((old, serial)) => {
                *serial = now.max(serial.wrapping_add(1));
                *old = content;
                *serial
            }
            None => {
                map.insert(domain.to_string(), (content, now));
                now
            }
        }
    }
}

/// DNS over UDP (53/udp) and TCP (53/tcp, two-byte length before each message).
pub struct DnsService {
    shared: Arc<Shared>,
    limiter: ratelimit::RateLimiter,
}

impl DnsService {
    pub fn new(shared: Arc<Shared>, limiter: ratelimit::RateLimiter) -> DnsService {
        DnsService { shared, limiter }
    }
}

#[async_trait]
impl DatagramService for DnsService {
    async fn answer(&self, request: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        // Only UDP is limited: a TCP client cannot forge its address.
        match self.limiter.check(peer.ip()) {
            ratelimit::Verdict::Answer => {}
            ratelimit::Verdict::Slip => return answer::slip(request),
            ratelimit::Verdict::Drop => return None,
        }
        let zones = self.shared.zones().await?;
        answer::answer(&zones.1, request, true)
    }
}

/// Largest DNS message over TCP (the two-byte length's limit).
const MAX_TCP_MESSAGE: usize = 65_535;

#[async_trait]
impl Service for DnsService {
    fn busy_reply(&self) -> &'static [u8] {
        // DNS has no greeting to refuse with: a full server just closes.
        b""
    }

    async fn serve(&self, mut conn: Conn) {
        loop {
            let mut len = Vec::with_capacity(2);
            if conn.read_more(2, &mut len).await.is_err() {
                break;
            }
            let n = usize::from(u16::from_be_bytes([len[0], len[1]])).min(MAX_TCP_MESSAGE);
            let mut msg = Vec::with_capacity(n);
            // A timeout, shutdown or hang-up ends the connection (DNS has no goodbye).
            if conn.read_more(n, &mut msg).await.is_err() {
                break;
            }
            let Some(zones) = self.shared.zones().await else { break };
            let Some(answer) = answer::answer(&zones.1, &msg, false) else { break };
            let mut out = Vec::with_capacity(answer.len() + 2);
            out.extend_from_slice(&(answer.len() as u16).to_be_bytes());
            out.extend_from_slice(&answer);
            if conn.send(&out).await.is_err() {
                break;
            }
        }
        conn.close().await;
    }
}

#[cfg(test)]
mod tests;
