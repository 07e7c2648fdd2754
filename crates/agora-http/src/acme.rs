//! ACME (RFC 8555): certificates for the server's host name and, per hosted domain,
//! its `autoconfig`, `autodiscover` and `mta-sts` names, obtained with HTTP-01 (port
//! 80) or TLS-ALPN-01 (port 443), kept in the data directory, renewed before they
//! expire and swapped into every TLS listener at once (SNI picks the certificate).
//! A renewal keeps the name set's key, so the TLSA records DNS publishes stay true.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_net::TlsSettings;
use agora_net::tls::CertInfo;
use agora_service::AcmeSettings;
use agora_store::Store;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// HTTP-01 answers being published: token → key authorization.
pub type Tokens = Arc<RwLock<HashMap<String, String>>>;

/// How a set of names stands, kept in `acme/status.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetStatus {
    pub names: Vec<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Unix seconds.
    pub last_attempt: Option<i64>,
    /// No order for this set before this time (backoff after a failure, spacing after
    /// a success).
    pub next_attempt: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    Http01,
    TlsAlpn01,
}

pub struct Acme {
    settings: AcmeSettings,
    dir: PathBuf,
    hostname: String,
    store: Arc<dyn Store>,
    tls: Arc<TlsSettings>,
    tokens: Tokens,
    challenge: Challenge,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Sets whose stored certificate is being served, by first name, with its expiry.
    served: std::sync::Mutex<HashMap<String, i64>>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The name sets certificates are ordered for: the host name alone (the default
/// certificate, what SMTP's DANE record names), then one set per hosted domain.
pub fn wanted(hostname: &str, domains: &[String]) -> Vec<Vec<String>> {
    let mut out = vec![vec![hostname.to_ascii_lowercase()]];
    for d in domains {
        let set: Vec<String> = ["autoconfig", "autodiscover", "mta-sts"]
            .iter()
            .map(|l| format!("{l}.{}", d.to_ascii_lowercase()))
            .filter(|n| !n.eq_ignore_ascii_case(hostname))
            .collect();
        if !set.is_empty() {
            out.push(set);
        }
    }
    out
}

/// Writes `data` to `path` so that a reader sees the old file or the new one, never
/// half of one, and a crash leaves one of them on disk.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The status file of `dir` (`DATA/acme`).
pub fn read_status(dir: &Path) -> BTreeMap<String, SetStatus> {
    std::fs::read(dir.join("status.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// A set's certificate as stored: what it says of itself, the PEM chain and the PEM key.
pub type Stored = (CertInfo, Vec<u8>, Vec<u8>);

/// The certificate stored for a set (by its first name), if any.
pub fn stored(dir: &Path, first: &str) -> Option<Stored> {
    let chain = std::fs::read(dir.join(first).join("cert.pem")).ok()?;
    let key = std::fs::read(dir.join(first).join("key.pem")).ok()?;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&chain).next()?.ok()?;
    Some((CertInfo::of(&der)?, chain, key))
}

use rustls_pki_types::pem::PemObject;

impl Acme {
    pub fn new(
        settings: AcmeSettings,
        data_dir: &Path,
        hostname: &str,
        store: Arc<dyn Store>,
        tls: Arc<TlsSettings>,
        tokens: Tokens,
        (http_on, https_on): (bool, bool),
    ) -> Result<Acme, String> {
        let challenge = match settings.challenge.as_deref() {
            Some("http-01") => Challenge::Http01,
            Some("tls-alpn-01") => Challenge::TlsAlpn01,
            None if http_on => Challenge::Http01,
            None => Challenge::TlsAlpn01,
            Some(other) => return Err(format!("[tls] acme challenge {other:?}: http-01 or tls-alpn-01")),
        };
        match challenge {
            Challenge::Http01 if !http_on => {
                tracing::warn!("acme: HTTP-01 is asked for but the http listener (port 80) is off: orders will fail")
            }
            Challenge::TlsAlpn01 if !https_on => {
                tracing::warn!("acme: TLS-ALPN-01 needs the https listener (port 443), which is off: orders will fail")
            }
            _ => {}
        }
        if !settings.directory.starts_with("https://") {
            return Err(format!("[tls] acme directory {:?} must be an https:// URL", settings.directory));
        }
        Ok(Acme {
            settings,
            dir: data_dir.join("acme"),
            hostname: hostname.to_ascii_lowercase(),
            store,
            tls,
            tokens,
            challenge,
            account: tokio::sync::Mutex::new(None),
            served: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Serves the certificates already obtained (at start, before listeners accept).
    pub fn install_stored(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let first = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir()
                && let Some(cert) = stored(&self.dir, &first)
            {
                self.install(&first, &cert, true);
            }
        }
    }

    /// Serves a set's certificate.
    fn install(&self, first: &str, (info, chain, key): &Stored, at_start: bool) {
        let ck = match agora_net::tls::certified_key(chain, key) {
            Ok(ck) => ck,
            Err(e) => {
                tracing::warn!("acme: stored certificate for {first} is unusable: {e}");
                return;
            }
        };
        let default = first == self.hostname;
        self.tls.install(&info.names, ck, default, at_start);
        if let Ok(mut s) = self.served.lock() {
            s.insert(first.to_string(), info.not_after);
        }
    }

    fn save_status(&self, status: &BTreeMap<String, SetStatus>) {
        if let Ok(json) = serde_json::to_vec_pretty(status)
            && let Err(e) = write_atomic(&self.dir.join("status.json"), &json, 0o644)
        {
            tracing::warn!("acme: cannot write {}: {e}", self.dir.join("status.json").display());
        }
    }

    /// Keeps the certificates current until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.store.subscribe();
        let mut first = true;
        loop {
            let wait = self.pass(std::mem::take(&mut first)).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                r = changes.recv() => match r {
                    // A new domain wants its names: look again soon.
                    Ok(agora_store::Change::DirectoryChanged) | Err(_) => {}
                    Ok(_) => continue,
                },
            }
        }
    }

    /// Orders what is missing or due; returns how long until the next look. The first
    /// pass after a start tries a failing set again at once (the administrator may
    /// have mended what failed; a restart loop is bounded by the supervisor's).
    async fn pass(&self, first_pass: bool) -> Duration {
        let domains = match self.store.domains().await {
            Ok(d) => d.into_iter().map(|d| d.name).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!("acme: cannot read the hosted domains: {e}");
                return Duration::from_secs(60);
            }
        };
        let renew_before = i64::from(self.settings.renew_before_days) * 86_400;
        let mut status = read_status(&self.dir);
        let mut next = now() + 3600;
        for names in wanted(&self.hostname, &domains) {
            let first = names[0].clone();
            let entry = status.entry(first.clone()).or_default();
            entry.names = names.clone();
            if first_pass && entry.failures > 0 {
                entry.next_attempt = entry.next_attempt.min(now());
            }
            let current = stored(&self.dir, &first).filter(|(info, _, _)| names.iter().all(|n| info.names.contains(n)));
            if let Some(cert) = &current {
                let served = self.served.lock().ok().and_then(|s| s.get(&first).copied());
                if served != Some(cert.0.not_after) {
                    self.install(&first, cert, false);
                }
            }
            let due_at =
                current.as_ref().map_or(0, |(info, _, _)| info.not_after - renew_before).max(entry.next_attempt);
            if due_at > now() {
                next = next.min(due_at);
                continue;
            }
            entry.last_attempt = Some(now());
            let key = current.map(|(_, _, k)| k).or_else(|| std::fs::read(self.dir.join(&first).join("key.pem")).ok());
            match self.obtain(&names, key).await {
                Ok(cert) => {
                    tracing::info!("acme: new certificate for {} (until {})", names.join(", "), cert.0.not_after);
                    metrics::counter!("agora_acme_orders_total", "result" => "issued").increment(1);
                    entry.failures = 0;
                    entry.last_error = None;
                    // One order per set per retry interval, whatever the renewal window.
                    entry.next_attempt = now() + self.settings.retry_secs as i64;
                    self.install(&first, &cert, false);
                }
                Err(e) => {
                    metrics::counter!("agora_acme_orders_total", "result" => "failed").increment(1);
                    entry.failures += 1;
                    let backoff =
                        self.settings.retry_secs.saturating_mul(1 << (entry.failures - 1).min(16)).clamp(1, 86_400);
                    entry.next_attempt = now() + backoff as i64;
                    tracing::warn!(
                        "acme: certificate for {} failed (attempt {}), next try in {backoff}s: {e}",
                        names.join(", "),
                        entry.failures
                    );
                    entry.last_error = Some(e);
                }
            }
            next = next.min(entry.next_attempt);
        }
        self.save_status(&status);
        Duration::from_secs((next - now()).clamp(1, 3600) as u64)
    }

    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let builder = || match &self.settings.ca {
            Some(ca) => Account::builder_with_root(ca).map_err(|e| format!("ACME CA root {}: {e}", ca.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        };
        #[derive(Serialize, Deserialize)]
        struct Saved {
            directory: String,
            credentials: AccountCredentials,
        }
        let path = self.dir.join("account.json");
        let saved: Option<Saved> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let account = match saved.filter(|s| s.directory == self.settings.directory) {
            Some(s) => builder()?.from_credentials(s.credentials).await.map_err(|e| format!("ACME account: {e}"))?,
            None => {
                let contact: Vec<&str> =
                    self.settings.contact.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, credentials) = builder()?
                    .create(&new, self.settings.directory.clone(), None)
                    .await
                    .map_err(|e| format!("ACME account at {}: {e}", self.settings.directory))?;
                let json = serde_json::to_vec(&Saved { directory: self.settings.directory.clone(), credentials })
                    .map_err(|e| e.to_string())?;
                write_atomic(&path, &json, 0o600).map_err(|e| format!("{}: {e}", path.display()))?;
                tracing::info!("acme: account created at {}", self.settings.directory);
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// One order for `names`, with the set's key when it has one; stores the chain and
    /// key and returns them.
    async fn obtain(&self, names: &[String], key_pem: Option<Vec<u8>>) -> Result<Stored, String> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("new order: {e}"))?;
        let mut published: Vec<String> = Vec::new();
        let validated = self.validate(&mut order, &mut published).await;
        for p in &published {
            match self.challenge {
                Challenge::Http01 => {
                    if let Ok(mut t) = self.tokens.write() {
                        t.remove(p);
                    }
                }
                Challenge::TlsAlpn01 => {
                    let _ = self.tls.set_acme_challenge(p, None);
                }
            }
        }
        validated?;
        let key = match key_pem.and_then(|k| String::from_utf8(k).ok()).and_then(|k| rcgen::KeyPair::from_pem(&k).ok())
        {
            Some(k) => k,
            None => rcgen::KeyPair::generate().map_err(|e| e.to_string())?,
        };
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order.finalize_csr(csr.der()).await.map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        let key_pem = key.serialize_pem();
        agora_net::tls::certified_key(chain.as_bytes(), key_pem.as_bytes())
            .map_err(|e| format!("the CA's certificate does not fit the key: {e}"))?;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or("the CA sent no certificate")?;
        let info = CertInfo::of(&der).ok_or("the CA's certificate does not parse")?;
        let dir = self.dir.join(&names[0]);
        write_atomic(&dir.join("key.pem"), key_pem.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        write_atomic(&dir.join("cert.pem"), chain.as_bytes(), 0o644).map_err(|e| e.to_string())?;
        Ok((info, chain.into_bytes(), key_pem.into_bytes()))
    }

    /// Answers each pending authorization's challenge and waits for the order to be
    /// ready; what it published is listed in `published` for the caller to withdraw.
    async fn validate(&self, order: &mut instant_acme::Order, published: &mut Vec<String>) -> Result<(), String> {
        let kind = match self.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(format!("authorization is {other:?}")),
            }
            let name = match a.identifier().identifier {
                Identifier::Dns(n) => n.clone(),
                other => return Err(format!("unexpected identifier {other:?}")),
            };
            let mut challenge =
                a.challenge(kind.clone()).ok_or_else(|| format!("the CA offers no {kind:?} challenge for {name}"))?;
            let answer = challenge.key_authorization();
            match self.challenge {
                Challenge::Http01 => {
                    if let Ok(mut t) = self.tokens.write() {
                        t.insert(challenge.token.clone(), answer.as_str().to_string());
                    }
                    published.push(challenge.token.clone());
                }
                Challenge::TlsAlpn01 => {
                    self.tls.set_acme_challenge(&name, Some(answer.digest().as_ref())).map_err(|e| e.to_string())?;
                    published.push(name.clone());
                }
            }
            challenge.set_ready().await.map_err(|e| format!("challenge for {name}: {e}"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(|e| format!("validation: {e}"))?;
        if status == OrderStatus::Ready {
            return Ok(());
        }
        // Say why: the first challenge the CA found wrong.
        let mut why = format!("order is {status:?}");
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut a)) = authorizations.next().await {
            if let Ok(state) = a.refresh().await
                && let Some(p) = state.challenges.iter().find_map(|c| c.error.as_ref())
            {
                let name = match state.identifier().identifier {
                    Identifier::Dns(n) => n.clone(),
                    other => format!("{other:?}"),
                };
                why = format!("{name}: {}", p.detail.clone().unwrap_or_else(|| p.to_string()));
                break;
            }
        }
        Err(why)
    }
}

/// One line of `agora cert status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_after: Option<i64>,
    pub next_renewal: Option<i64>,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// What ACME has obtained and tried, from `DATA/acme`.
pub fn status(data_dir: &Path, renew_before_days: u32) -> Vec<StatusLine> {
    let dir = data_dir.join("acme");
    read_status(&dir)
        .into_iter()
        .map(|(first, s)| {
            let cert = stored(&dir, &first).map(|(info, _, _)| info);
            let renew_at = cert.as_ref().map(|c| c.not_after - i64::from(renew_before_days) * 86_400);
            StatusLine {
                names: if s.names.is_empty() { vec![first] } else { s.names.clone() },
                issuer: cert.as_ref().map(|c| c.issuer.clone()).unwrap_or_default(),
                not_after: cert.as_ref().map(|c| c.not_after),
                next_renewal: Some(renew_at.unwrap_or(0).max(s.next_attempt)),
                failures: s.failures,
                last_error: s.last_error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_sets() {
        let sets = wanted("mx.example.org", &["example.org".into(), "Other.TEST".into()]);
        assert_eq!(sets[0], vec!["mx.example.org"]);
        assert_eq!(sets[1], vec!["autoconfig.example.org", "autodiscover.example.org", "mta-sts.example.org"]);
        assert_eq!(sets[2][2], "mta-sts.other.test");
        // A host name that is one of a domain's names is not ordered twice.
        let sets = wanted("mta-sts.example.org", &["example.org".into()]);
        assert_eq!(sets[1], vec!["autoconfig.example.org", "autodiscover.example.org"]);
    }
}
