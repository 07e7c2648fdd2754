//! The mail core, below every protocol: the intake pipeline that every way of putting
//! mail into Agora calls (checks, signing, delivery to local mailboxes, queueing of
//! remote recipients, tracking), the DNS resolver, MTA-STS policies, delivery status
//! notifications and the transport's settings. Protocol crates use it; it knows no wire.

pub mod auth;
pub mod automatic;
pub mod dane;
pub mod dsn;
pub mod filter;
pub mod gateway;
pub mod intake;
pub mod mtasts;
pub mod routing;
pub mod settings;
pub mod tlsrpt;
pub mod tracking;
pub mod zone;

use std::path::PathBuf;
use std::sync::Arc;

use agora_directory::Directory;
use agora_store::Store;

pub use intake::{Intake, IntakeError, Origin, Policy, Rcpt};
pub use settings::TransportSection;

/// How the mail core is set up.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The name in trace headers, Authentication-Results and reports.
    pub hostname: String,
    /// Check incoming mail (SPF, DKIM, ARC, DMARC) through `transport.nameservers`
    /// (the system's resolver when that is empty).
    pub checks: bool,
    /// Where tracking events go (`tracking.log`); none: not tracked.
    pub tracking_log: Option<PathBuf>,
    /// When the tracking log is renamed and begun anew (`[tracking]`).
    pub tracking: tracking::TrackingSection,
    /// The outbound transport's settings (`[transport]`).
    pub transport: TransportSection,
    /// Where Sieve's `include :global` finds scripts (NAME.sieve); none: no global scripts.
    pub sieve_global: Option<PathBuf>,
    /// This server in its routing organisation (`[routing]`); none: in none.
    pub routing: Option<routing::Identity>,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            hostname: "localhost".into(),
            checks: false,
            tracking_log: None,
            tracking: tracking::TrackingSection::default(),
            transport: TransportSection::default(),
            sieve_global: None,
            routing: None,
        }
    }
}

/// The mail core one server shares among its protocols.
pub struct Mail {
    cfg: MailConfig,
    store: Arc<dyn Store>,
    dir: Directory,
    verifier: Option<auth::Verifier>,
    tracker: Option<Arc<tracking::Tracker>>,
    /// Rung when mail for remote recipients was queued, so the transport looks at once.
    wake: Arc<tokio::sync::Notify>,
    /// Forwarding and vacation settings, read when first needed after a change.
    automatic: std::sync::RwLock<Option<Arc<automatic::Automatic>>>,
    /// The accounts' active Sieve scripts, read when first needed after a change.
    sieve: std::sync::RwLock<Option<Arc<filter::Scripts>>>,
    /// Counts changes of anyone's scripts, so a cache read during one is not kept.
    sieve_generation: std::sync::atomic::AtomicU64,
    /// For routing members given by name, made when first needed.
    resolver: std::sync::OnceLock<Option<auth::TokioResolver>>,
    /// Gateways to other mail systems, registered by their services.
    gateways: Arc<gateway::Gateways>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("hostname", &self.cfg.hostname).finish()
    }
}

impl Mail {
    pub fn new(cfg: MailConfig, store: Arc<dyn Store>, dir: Directory) -> Mail {
        let verifier = if cfg.checks {
            let v = auth::Verifier::new(&cfg.hostname, &cfg.transport.nameservers);
            if v.is_none() {
                tracing::warn!("no DNS resolver: incoming mail is not checked for SPF, DKIM and DMARC");
            }
            v
        } else {
            None
        };
        let tracker =
            cfg.tracking_log.as_deref().map(|p| Arc::new(tracking::Tracker::with_rotation(p, cfg.tracking.clone())));
        Mail {
            cfg,
            store,
            dir,
            verifier,
            tracker,
            wake: Arc::new(tokio::sync::Notify::new()),
            automatic: Default::default(),
            sieve: Default::default(),
            sieve_generation: Default::default(),
            resolver: Default::default(),
            gateways: Default::default(),
        }
    }

    pub fn hostname(&self) -> &str {
        &self.cfg.hostname
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
    pub fn directory(&self) -> &Directory {
        &self.dir
    }
    pub fn tracker(&self) -> Option<&Arc<tracking::Tracker>> {
        self.tracker.as_ref()
    }
    pub fn config(&self) -> &MailConfig {
        &self.cfg
    }
    /// Gateways to other mail systems (the transport hands them what they claim).
    pub fn gateways(&self) -> &Arc<gateway::Gateways> {
        &self.gateways
    }
    /// What the transport waits on besides its poll interval.
    pub fn wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    /// The routing organisation's table, when this server is in one (None otherwise,
    /// or when it cannot be read).
    pub async fn routing_table(&self) -> Option<routing::Table> {
        self.cfg.routing.as_ref()?;
        match routing::load(&self.store).await {
            Ok((_, t)) => Some(t),
            Err(e) => {
                tracing::warn!("routing: the table cannot be read: {e}");
                None
            }
        }
    }

    /// Whether a server of this routing organisation at `ip` may hand over mail for
    /// `domain` (once it proved its membership in the session): the domain's mailboxes
    /// are in one of the organisation's groups, or a connector out carries it.
    pub async fn org_relay(&self, domain: &str, ip: std::net::IpAddr) -> bool {
        let Some(t) = self.routing_table().await else { return false };
        (t.group_of_domain(domain).is_some() || t.carries_outside(domain)) && self.is_org_server(&t, ip).await
    }

    /// Whether `ip` is one of the table's servers: a member given by address, or one
    /// given by name that resolves (through `[transport] nameservers`) to it.
    pub async fn is_org_server(&self, t: &routing::Table, ip: std::net::IpAddr) -> bool {
        if t.is_member_ip(ip) {
            return true;
        }
        let names: Vec<&str> = t.member_names().collect();
        if names.is_empty() {
            return false;
        }
        let Some(resolver) = self.resolver.get_or_init(|| auth::resolver(&self.cfg.transport.nameservers)) else {
            return false;
        };
        for name in names {
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            if let Ok(found) = resolver.lookup_ip(fqdn).await
                && found.iter().any(|a| a == ip)
            {
                return true;
            }
        }
        false
    }
}

/// A short unique id for logs and trace headers: a random per-process start, then a
/// counter, so that no message pays for a system call to get one.
pub fn queue_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            b = ((agora_store::now() as u64) << 20 ^ u64::from(std::process::id())).to_le_bytes();
        }
        AtomicU64::new(u64::from_le_bytes(b))
    });
    format!("{:016X}", next.fetch_add(1, Ordering::Relaxed))
}
