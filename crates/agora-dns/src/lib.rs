//! DNS for Agora: authoritative answers over UDP and TCP for every hosted domain, the
//! zones built by the mail core from the server's own state and rebuilt when the
//! directory changes (a domain added, a DKIM key rotated), the SOA serial moving with
//! every change.

pub mod answer;
pub mod ratelimit;
pub mod service;
pub mod zones;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agora_mail::zone::{self, ZoneInput};
use agora_net::{Conn, DatagramService, Service};
use agora_service::snapshot::Snapshot;
use agora_store::Store;
use async_trait::async_trait;

use crate::zones::{Zone, Zones};

/// What the zones are made from besides the store.
pub use agora_mail::zone::ZoneSettings as DnsConfig;

/// The zones at one directory version, and each zone's serial by content.
pub struct Shared {
    store: Arc<dyn Store>,
    cfg: DnsConfig,
    zones: Snapshot<Zones>,
    /// Domain -> (records without the SOA, serial): a serial moves only when they change.
    serials: Mutex<HashMap<String, (Vec<zone::Record>, u32)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, cfg: DnsConfig) -> Arc<Shared> {
        Arc::new(Shared { store, cfg, zones: Snapshot::default(), serials: Mutex::new(HashMap::new()) })
    }

    /// The zones at the store's current directory version.
    pub async fn zones(&self) -> Option<Arc<Zones>> {
        let built = self
            .zones
            .get(&*self.store, || async {
                let mut zones = Zones::default();
                for d in self.store.domains().await? {
                    let input = ZoneInput::read(&*self.store, &d.name, &self.cfg, 0).await?;
                    let mut records = zone::build(&input);
                    let serial = self.serial(&d.name, &records);
                    if let Some(zone::Record { data: zone::Data::Soa { serial: s, .. }, .. }) = records.first_mut() {
                        *s = serial;
                    }
                    if let Some(z) = Zone::new(&d.name, &records) {
                        zones.zones.push(z);
                    }
                }
                Ok::<_, agora_store::StoreError>(zones)
            })
            .await;
        match built {
            Ok(z) => Some(z),
            Err(e) => {
                tracing::error!("dns: reading the hosted zones: {e}");
                None
            }
        }
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
        answer::answer(&zones, request, true)
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
            let Some(answer) = answer::answer(&zones, &msg, false) else { break };
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
