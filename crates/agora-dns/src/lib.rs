//! DNS for Agora: authoritative answers over UDP and TCP for every hosted domain, the
//! zones built by the mail core from the server's own state and rebuilt when the
//! directory changes (a domain added, a DKIM key rotated), the SOA serial moving with
//! every change.

pub mod answer;
pub mod check;
pub mod dnssec;
pub mod fast;
pub mod ratelimit;
pub mod service;
pub mod transfer;
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
pub use agora_mail::zone::ZoneSettings;

/// The DNS service's settings: the zones' contents and how they are signed.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zone: ZoneSettings,
    /// DNSSEC: sign every hosted zone.
    pub dnssec: bool,
    /// Algorithm number of new zones' keys.
    pub algorithm: u8,
    /// A zone-signing key is replaced after this many seconds (0: never).
    pub zsk_lifetime: i64,
    /// DANE: the served certificate, whose keys signed zones publish as TLSA.
    pub tls: Option<Arc<agora_net::TlsSettings>>,
}

/// The zones at one directory version, and each zone's serial by content.
pub struct Shared {
    pub(crate) store: Arc<dyn Store>,
    cfg: DnsConfig,
    pub(crate) zones: Snapshot<Zones>,
    /// Domain -> (hash of its records and signatures without the SOA, serial): a serial
    /// moves only when they change.
    serials: Mutex<HashMap<String, (u64, u32)>>,
    /// Signatures of the last build, reused while their RRsets are unchanged.
    sig_cache: Mutex<dnssec::SigCache>,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, cfg: DnsConfig) -> Arc<Shared> {
        Arc::new(Shared {
            store,
            cfg,
            zones: Snapshot::default(),
            serials: Mutex::new(HashMap::new()),
            sig_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The zones at the store's current directory version.
    pub async fn zones(&self) -> Option<Arc<Zones>> {
        let built = self.zones.get(&*self.store, || self.build()).await;
        match built {
            Ok(z) => Some(z),
            Err(e) => {
                tracing::error!("dns: reading the hosted zones: {e}");
                None
            }
        }
    }

    async fn build(&self) -> Result<Zones, agora_store::StoreError> {
        let now = agora_store::now();
        let mut zones = Zones { built: now, ..Zones::default() };
        if let Some(tls) = &self.cfg.tls {
            zones.tlsa = tls.dane_keys();
        }
        let old = self.sig_cache.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
        let mut cache = dnssec::SigCache::new();
        for d in self.store.domains().await? {
            let mut input = ZoneInput::read(&*self.store, &d.name, &self.cfg.zone, 0).await?;
            // DANE only where DNSSEC vouches for it.
            if self.cfg.dnssec {
                input.tlsa = zones.tlsa.clone();
            }
            let records = zone::build(&input);
            let Some(mut z) = Zone::new(&d.name, &records) else { continue };
            let keys = if self.cfg.dnssec { self.keys(&d.name).await? } else { Vec::new() };
            let mut signer = dnssec::ZoneSigner {
                keys: &keys,
                now: now.clamp(0, i64::from(u32::MAX)) as u32,
                old: &old,
                new: &mut cache,
                fresh: false,
            };
            if !keys.is_empty() {
                signer.sign(&mut z);
            }
            let serial = self.serial(&d.name, content_hash(&z), signer.fresh);
            z.set_serial(serial);
            if z.signed {
                signer.sign_soa(&mut z);
            }
            zones.zones.push(z);
        }
        if let Ok(mut c) = self.sig_cache.lock() {
            *c = cache;
        }
        zones.fast = Some(fast::Cache::new(&zones.zones));
        Ok(zones)
    }

    /// A zone's keys ready to sign; a zone without keys gets its first ones here.
    async fn keys(&self, domain: &str) -> Result<Vec<dnssec::Key>, agora_store::StoreError> {
        let mut stored = self.store.dnssec_keys(domain).await?;
        if stored.is_empty() {
            self.maintain(domain).await?;
            stored = self.store.dnssec_keys(domain).await?;
        }
        Ok(stored
            .iter()
            .filter_map(|k| dnssec::Key::load(k).map_err(|e| tracing::error!("dns: {domain}: {e}")).ok())
            .collect())
    }

    /// Moves a zone's keys along their rollover as time passes (and makes a new
    /// zone's first keys); returns whether anything changed.
    pub async fn maintain(&self, domain: &str) -> Result<bool, agora_store::StoreError> {
        let keys = self.store.dnssec_keys(domain).await?;
        let now = agora_store::now();
        // Resolvers may hold a DNSKEY set or a signature for a TTL; twice the zone's
        // longest is the wait.
        let longest = match self.zones.current() {
            Some(z) => z.zones.iter().find(|z| z.apex == domain).map_or(0, |z| z.max_ttl),
            None => 0,
        };
        let wait = i64::from(self.cfg.zone.ttl.max(longest).max(1)) * 2;
        let plan = dnssec::rollover(domain, &keys, self.cfg.algorithm, wait, self.cfg.zsk_lifetime, now)
            .map_err(agora_store::StoreError::Invalid)?;
        let changed = !plan.create.is_empty() || !plan.changes.is_empty();
        for k in plan.create {
            tracing::info!(
                "dns: {domain}: new {} {} key ({})",
                dnssec::algorithm_name(k.algorithm),
                if k.ksk { "key-signing" } else { "zone-signing" },
                k.state.as_str()
            );
            self.store.add_dnssec_key(k).await?;
        }
        for (id, state) in plan.changes {
            tracing::info!("dns: {domain}: key {id} {}", state.map_or("removed", |s| s.as_str()));
            self.store.set_dnssec_key_state(id, state).await?;
        }
        Ok(changed)
    }

    /// Keeps every signed zone's keys on schedule and its signatures fresh: runs once a
    /// minute (more often with short TTLs) until shutdown.
    pub async fn maintenance(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let every = std::time::Duration::from_secs(u64::from(self.cfg.zone.ttl).clamp(1, 60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if !self.cfg.dnssec {
                continue;
            }
            let domains = match self.store.domains().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("dns: key maintenance: {e}");
                    continue;
                }
            };
            for d in domains {
                if let Err(e) = self.maintain(&d.name).await {
                    tracing::error!("dns: key maintenance of {}: {e}", d.name);
                }
            }
            // A certificate waiting for its TLSA record is served once the hold is over.
            if let Some(tls) = &self.cfg.tls {
                tls.promote();
            }
            // Signatures are remade a week before they expire (rebuild daily); TLSA
            // records follow the served keys.
            if let Some(z) = self.zones().await {
                let keys = self.cfg.tls.as_ref().map(|t| t.dane_keys()).unwrap_or_default();
                if agora_store::now() - z.built > 86_400 || keys != z.tlsa {
                    self.zones.invalidate();
                }
            }
        }
    }

    /// The serial for a domain's content: unchanged while it is, else the current
    /// time in seconds (and always above the last one).
    fn serial(&self, domain: &str, content: u64, force: bool) -> u32 {
        let now = agora_store::now().clamp(1, i64::from(u32::MAX)) as u32;
        let Ok(mut map) = self.serials.lock() else { return now };
        match map.get_mut(domain) {
            Some((old, serial)) if *old == content && !force => *serial,
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

/// A random message ID for the queries this server sends (NOTIFY, checks).
pub(crate) fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return (agora_store::now() & 0xffff) as u16;
    }
    u16::from_be_bytes(b)
}

/// A domain as a DNS name (for the command line's DS and key output).
pub fn hickory_name(domain: &str) -> Result<hickory_proto::rr::Name, String> {
    hickory_proto::rr::Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
        .map_err(|e| format!("{domain}: {e}"))
}

/// A hash of a zone's records other than the SOA, in a stable order.
fn content_hash(z: &Zone) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<&String> = z.names.keys().collect();
    names.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in names {
        n.hash(&mut h);
        for r in z.names[n].iter().filter(|r| r.record_type() != hickory_proto::rr::RecordType::SOA) {
            r.to_string().hash(&mut h);
        }
    }
    h.finish()
}

type Kept = (usize, u64, u64, Arc<Zones>);

thread_local! {
    /// The zones a datagram thread last answered from: (service, directory version,
    /// snapshot generation, zones).
    static KEPT: std::cell::RefCell<Option<Kept>> = const { std::cell::RefCell::new(None) };
}

/// DNS over UDP (53/udp) and TCP (53/tcp, two-byte length before each message).
pub struct DnsService {
    shared: Arc<Shared>,
    limiter: ratelimit::RateLimiter,
    transfers: Arc<transfer::Transfers>,
}

impl DnsService {
    pub fn new(
        shared: Arc<Shared>,
        limiter: ratelimit::RateLimiter,
        transfers: Arc<transfer::Transfers>,
    ) -> DnsService {
        DnsService { shared, limiter, transfers }
    }
}

/// Whether a request asks for a zone transfer (AXFR or IXFR), from its question's type.
fn is_transfer(request: &[u8]) -> bool {
    let Ok(m) = hickory_proto::op::Message::from_vec(request) else { return false };
    m.metadata.message_type == hickory_proto::op::MessageType::Query
        && m.queries.iter().any(|q| {
            matches!(q.query_type(), hickory_proto::rr::RecordType::AXFR | hickory_proto::rr::RecordType::IXFR)
        })
}

#[async_trait]
impl DatagramService for DnsService {
    fn answer_now(&self, request: &[u8], peer: SocketAddr) -> Option<Option<Vec<u8>>> {
        // Only what the kept zones answer at once: no rebuild is due, the limiter lets
        // it through, and the hot path has it.
        let version = self.shared.store.directory_version();
        let generation = self.shared.zones.generation();
        let me = Arc::as_ptr(&self.shared) as usize;
        KEPT.with_borrow_mut(|kept| {
            // Each thread keeps its own reference: no shared counter touched per query.
            if !matches!(kept, Some((m, v, g, _)) if *m == me && *v == version && *g == generation) {
                *kept = Some((me, version, generation, self.shared.zones.fresh(version)?));
            }
            let zones = &kept.as_ref()?.3;
            Some(match self.limited(request, peer) {
                Some(instead) => instead,
                None => reply(zones, request, true),
            })
        })
    }

    async fn answer(&self, request: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        if let Some(instead) = self.limited(request, peer) {
            return instead;
        }
        reply(&*self.shared.zones().await?, request, true)
    }
}

impl DnsService {
    /// Response rate limiting (UDP only: a TCP client cannot forge its address): None
    /// to answer, else what goes out instead (an empty truncated answer, or nothing).
    fn limited(&self, request: &[u8], peer: SocketAddr) -> Option<Option<Vec<u8>>> {
        match self.limiter.check(peer.ip()) {
            ratelimit::Verdict::Answer => None,
            ratelimit::Verdict::Slip => Some(answer::slip(request)),
            ratelimit::Verdict::Drop => Some(None),
        }
    }
}

/// The answer from the hot path, else from the full one; counted, and counted as an
/// error when it says FORMERR, SERVFAIL, NOTIMP or REFUSED.
fn reply(zones: &Zones, request: &[u8], udp: bool) -> Option<Vec<u8>> {
    static COUNTERS: std::sync::OnceLock<(metrics::Counter, metrics::Counter)> = std::sync::OnceLock::new();
    let (queries, errors) = COUNTERS.get_or_init(|| {
        (
            metrics::counter!("agora_commands_total", "protocol" => "dns"),
            metrics::counter!("agora_command_errors_total", "protocol" => "dns"),
        )
    });
    let out = fast::answer(zones, request, udp).or_else(|| answer::answer(zones, request, udp));
    queries.increment(1);
    if out.as_ref().is_some_and(|a| a.len() >= 4 && matches!(a[3] & 0x0f, 1 | 2 | 4 | 5)) {
        errors.increment(1);
    }
    out
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
            let answers = if is_transfer(&msg) {
                transfer::respond(&zones, &msg, conn.peer.ip(), &self.transfers)
            } else {
                reply(&zones, &msg, false).into_iter().collect()
            };
            // Nothing to say, or more than the two-byte length can frame: hang up.
            if answers.is_empty() || answers.iter().any(|a| a.len() > MAX_TCP_MESSAGE) {
                break;
            }
            let mut out = Vec::with_capacity(answers.iter().map(|a| a.len() + 2).sum());
            for a in &answers {
                out.extend_from_slice(&(a.len() as u16).to_be_bytes());
                out.extend_from_slice(a);
            }
            if conn.send(&out).await.is_err() {
                break;
            }
        }
        conn.close().await;
    }
}

#[cfg(test)]
mod tests;
