//! Message authentication on the mail-auth crate: DKIM keys (RSA-2048 and Ed25519)
//! and signing of outgoing mail; SPF, DKIM, DMARC and ARC checks of incoming mail,
//! written into an Authentication-Results header (RFC 8601); the DNS resolver both
//! these and MX lookups use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_store::{DkimKey, DkimState};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::dmarc::verify::DmarcParameters;
pub use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// Per-query timeout and tries: a dead or slow DNS server must cost seconds, not the
/// resolver's default of two 5-second tries per server and name.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);
const QUERY_ATTEMPTS: usize = 2;

/// The resolver configuration: the given servers ("ip:port"), else the system's.
fn config(nameservers: &[SocketAddr]) -> Option<(ResolverConfig, ResolverOpts)> {
    let (cfg, mut opts) = if nameservers.is_empty() {
        mail_auth::hickory_resolver::system_conf::read_system_conf().ok()?
    } else {
        let servers = nameservers
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        (ResolverConfig::from_name_servers(servers), ResolverOpts::default())
    };
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = QUERY_ATTEMPTS;
    // Answers and "no such record" are both cached (hickory's cache, by TTL and SOA).
    opts.cache_size = opts.cache_size.max(4096);
    Some((cfg, opts))
}

/// A resolver for MX lookups.
pub fn resolver(nameservers: &[SocketAddr]) -> Option<TokioResolver> {
    let (cfg, opts) = config(nameservers)?;
    TokioResolver::builder_with_config(cfg, mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .ok()
}

pub use mail_auth::hickory_resolver::proto::rr::RData;

/// DKIM selectors of the keys made for each domain.
pub const RSA_SELECTOR: &str = "agora-rsa";
pub const ED25519_SELECTOR: &str = "agora-ed";

/// A new RSA-2048 and Ed25519 key pair for a domain (RFC 6376, RFC 8463), signing
/// from the start, under the first selectors.
pub fn generate_keys(domain: &str) -> Result<Vec<DkimKey>, String> {
    generate_keys_as(domain, "", DkimState::Active)
}

/// Keys for a rotation: selectors with `suffix` (e.g. "-20261128"), pending until
/// their records are published.
pub fn rotation_keys(domain: &str, suffix: &str) -> Result<Vec<DkimKey>, String> {
    generate_keys_as(domain, suffix, DkimState::Pending)
}

fn generate_keys_as(domain: &str, suffix: &str, state: DkimState) -> Result<Vec<DkimKey>, String> {
    let rsa = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048).map_err(|e| e.to_string())?;
    let ed = mail_auth::dkim::generate::DkimKeyPair::generate_ed25519().map_err(|e| e.to_string())?;
    let now = agora_store::now();
    Ok(vec![
        DkimKey {
            domain: domain.to_string(),
            selector: format!("{RSA_SELECTOR}{suffix}"),
            algorithm: "rsa".into(),
            private_key: rsa.private_key().to_vec(),
            public_key: rsa.public_key().to_vec(),
            created: now,
            state,
        },
        DkimKey {
            domain: domain.to_string(),
            selector: format!("{ED25519_SELECTOR}{suffix}"),
            algorithm: "ed25519".into(),
            private_key: ed.private_key().to_vec(),
            public_key: ed.public_key().to_vec(),
            created: now,
            state,
        },
    ])
}

/// The TXT records to publish: `selector._domainkey.domain` -> `v=DKIM1; k=...; p=...`.
pub fn dns_records(keys: &[DkimKey]) -> Vec<(String, String)> {
    use base64::Engine;
    keys.iter()
        .map(|k| {
            let p = base64::engine::general_purpose::STANDARD.encode(&k.public_key);
            (format!("{}._domainkey.{}", k.selector, k.domain), format!("v=DKIM1; k={}; p={p}", k.algorithm))
        })
        .collect()
}

/// A key ready to sign: parsing (and for RSA, checking) a private key costs about as
/// much as a signature, so each key is prepared once and kept.
enum Prepared {
    Rsa(DkimSigner<RsaKey<Sha256>, mail_auth::dkim::Done>),
    Ed25519(DkimSigner<Ed25519Key, mail_auth::dkim::Done>),
}

/// Prepared signers by (domain, selector, algorithm), with the key bytes they came from.
type SignerCache = std::collections::HashMap<(String, String, String), (Vec<u8>, Arc<Prepared>)>;

fn prepared(k: &DkimKey) -> Option<Arc<Prepared>> {
    const HEADERS: [&str; 9] =
        ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "MIME-Version"];
    static CACHE: std::sync::OnceLock<std::sync::Mutex<SignerCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (k.domain.clone(), k.selector.clone(), k.algorithm.clone());
    if let Some((der, p)) = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id)
        && *der == k.private_key
    {
        return Some(Arc::clone(p));
    }
    let p = Arc::new(match k.algorithm.as_str() {
        "rsa" => Prepared::Rsa(
            DkimSigner::from_key(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(
                    k.private_key.as_slice(),
                )))
                .ok()?,
            )
            .domain(&k.domain)
            .selector(&k.selector)
            .headers(HEADERS),
        ),
        "ed25519" => Prepared::Ed25519(
            DkimSigner::from_key(Ed25519Key::from_pkcs8_der(&k.private_key).ok()?)
                .domain(&k.domain)
                .selector(&k.selector)
                .headers(HEADERS),
        ),
        _ => return None,
    });
    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (k.private_key.clone(), Arc::clone(&p)));
    Some(p)
}

/// DKIM-Signature header fields for `message` (one per active key), to put in front of it.
pub fn sign(message: &[u8], keys: &[DkimKey]) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys.iter().filter(|k| k.state == DkimState::Active) {
        let signature = prepared(k).and_then(|p| match &*p {
            Prepared::Rsa(s) => s.sign(message).ok(),
            Prepared::Ed25519(s) => s.sign(message).ok(),
        });
        match signature {
            Some(s) => out.extend_from_slice(s.to_header().as_bytes()),
            None => tracing::warn!("dkim: cannot sign with {} key {} of {}", k.algorithm, k.selector, k.domain),
        }
    }
    out
}

/// Checks incoming mail: SPF (HELO and MAIL FROM), DKIM, ARC, DMARC, all within one
/// time budget per message.
pub struct Verifier {
    auth: MessageAuthenticator,
    hostname: String,
    /// Sender domains whose checks ran out of time lately, and until when they are
    /// skipped: during a DNS outage each message costs nothing, not a whole budget.
    slow: Mutex<HashMap<String, Instant>>,
}

/// How long a domain whose checks timed out is answered with `temperror` at once.
const SLOW_DOMAIN_HOLD: Duration = Duration::from_secs(60);
/// Domains remembered as slow, at most.
const SLOW_DOMAINS: usize = 10_000;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("hostname", &self.hostname).finish()
    }
}

/// What the checks found.
pub struct Verdict {
    /// The Authentication-Results header field (after any ARC set), CRLF included.
    pub header: String,
    /// DMARC failed and the sender domain's policy is p=reject.
    pub reject_under_policy: bool,
}

fn timed_out_err() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver("time budget exhausted".into()))
}

impl Verifier {
    pub fn new(hostname: &str, nameservers: &[SocketAddr]) -> Option<Verifier> {
        let (cfg, opts) = config(nameservers)?;
        let auth = MessageAuthenticator::new(cfg, opts).ok()?;
        Some(Verifier { auth, hostname: hostname.to_string(), slow: Mutex::new(HashMap::new()) })
    }

    fn held_slow(&self, domain: &str) -> bool {
        let mut slow = self.slow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match slow.get(domain) {
            Some(&until) if until > Instant::now() => true,
            Some(_) => {
                slow.remove(domain);
                false
            }
            None => false,
        }
    }

    fn mark_slow(&self, domain: &str) {
        let mut slow = self.slow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slow.len() >= SLOW_DOMAINS {
            let now = Instant::now();
            slow.retain(|_, until| *until > now);
            if slow.len() >= SLOW_DOMAINS {
                slow.clear();
            }
        }
        slow.insert(domain.to_ascii_lowercase(), Instant::now() + SLOW_DOMAIN_HOLD);
    }

    /// With `seal` (the forwarding domain's RSA key, for mail we pass on to other
    /// servers), the verdict also carries an ARC set (RFC 8617) over the results.
    /// `budget` is the most the checks may take, all lookups together. Never takes
    /// much longer than that: what is not known by then is
    /// `temperror`, and the message goes on.
    pub async fn check(
        &self,
        message: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        seal: Option<&DkimKey>,
        budget: Duration,
    ) -> Verdict {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Verdict {
                header: format!("Authentication-Results: {}; none\r\n", self.hostname),
                reject_under_policy: false,
            };
        };
        let from_domain = if mail_from.is_empty() {
            helo.to_ascii_lowercase()
        } else {
            mail_from.rsplit_once('@').map_or(mail_from, |(_, d)| d).to_ascii_lowercase()
        };
        // A domain that just timed out gets no new lookups for a while.
        let budget = if self.held_slow(&from_domain) { Duration::ZERO } else { budget };
        let deadline = tokio::time::Instant::now() + budget;
        // Lookups of the four checks run side by side.
        let (dkim, arc, spf_helo, spf_from) = tokio::join!(
            tokio::time::timeout_at(deadline, self.auth.verify_dkim(&parsed)),
            tokio::time::timeout_at(deadline, self.auth.verify_arc(&parsed)),
            tokio::time::timeout_at(
                deadline,
                self.auth.verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
            ),
            async {
                if mail_from.is_empty() {
                    None
                } else {
                    Some(
                        tokio::time::timeout_at(
                            deadline,
                            self.auth.verify_spf(SpfParameters::verify_mail_from(ip, helo, &self.hostname, mail_from)),
                        )
                        .await,
                    )
                }
            },
        );
        let mut timed_out =
            dkim.is_err() || arc.is_err() || spf_helo.is_err() || spf_from.as_ref().is_some_and(Result::is_err);
        let dkim = dkim.unwrap_or_else(|_| vec![DkimOutput::temp_err(timed_out_err())]);
        let arc = arc.unwrap_or_else(|_| ArcOutput::default().with_result(DkimResult::TempError(timed_out_err())));
        let spf_helo = spf_helo.unwrap_or_else(|_| SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError));
        // The null sender: SPF of the HELO identity stands in (RFC 7208 §2.4).
        let spf = match spf_from {
            None => spf_helo.clone(),
            Some(r) => r.unwrap_or_else(|_| SpfOutput::new(from_domain.clone()).with_result(SpfResult::TempError)),
        };
        let dmarc = match tokio::time::timeout_at(
            deadline,
            self.auth.verify_dmarc(DmarcParameters::new(&parsed, &dkim, &from_domain, &spf)),
        )
        .await
        {
            Ok(d) => d,
            Err(_) => {
                timed_out = true;
                let domain = parsed.from.first().and_then(|f| f.rsplit_once('@')).map_or("", |(_, d)| d);
                DmarcOutput::new(domain.to_string())
                    .with_dkim_result(DmarcResult::TempError(timed_out_err()))
                    .with_spf_result(DmarcResult::TempError(timed_out_err()))
            }
        };
        if timed_out && budget > Duration::ZERO {
            tracing::warn!("checks of mail from {from_domain} ran out of their {budget:?}: temperror");
            self.mark_slow(&from_domain);
        }
        let header_from = parsed.from.first().map(String::as_str).unwrap_or("");
        let results = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&dkim, header_from)
            .with_spf_ehlo_result(&spf_helo, ip, helo)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_arc_result(&arc, ip)
            .with_dmarc_result(&dmarc);
        let failed = dmarc.dkim_result() != &DmarcResult::Pass && dmarc.spf_result() != &DmarcResult::Pass;
        let reject_under_policy = failed
            && !matches!(dmarc.dkim_result(), DmarcResult::TempError(_))
            && dmarc.policy() == mail_auth::dmarc::Policy::Reject;
        let mut header = String::new();
        if let Some(k) = seal.filter(|_| !reject_under_policy) {
            match arc_seal(k, &parsed, &results, &arc) {
                Ok(set) => header.push_str(&set),
                Err(e) => tracing::debug!("arc: not sealed for {}: {e}", k.domain),
            }
        }
        header.push_str(&results.to_header());
        Verdict { header, reject_under_policy }
    }
}

/// The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) a
/// forwarder adds; none when an earlier sealer's chain already failed.
fn arc_seal(
    key: &DkimKey,
    message: &AuthenticatedMessage<'_>,
    results: &AuthenticationResults<'_>,
    arc: &mail_auth::ArcOutput<'_>,
) -> Result<String, String> {
    const HEADERS: [&str; 8] = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "DKIM-Signature"];
    if !arc.can_be_sealed() {
        return Err("the ARC chain has failed".into());
    }
    let rsa =
        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key.private_key.as_slice())))
            .map_err(|e| e.to_string())?;
    let set = mail_auth::arc::ArcSealer::from_key(rsa)
        .domain(&key.domain)
        .selector(&key.selector)
        .headers(HEADERS)
        .seal(message, results, arc)
        .map_err(|e| e.to_string())?;
    Ok(set.to_header())
}
