//! TLS server configuration: PEM loading, a self-signed certificate on first run, and
//! reload on SIGHUP without dropping the sessions that use the old one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The server's current TLS configuration, replaceable at run time.
#[derive(Debug)]
pub struct TlsSettings {
    cert: PathBuf,
    key: PathBuf,
    /// CA certificates that client certificates are checked against (optional ones:
    /// a client without a certificate still connects).
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<ServerConfig>>,
    dane: RwLock<Dane>,
}

/// DANE (RFC 7672) keeps the served key and the published TLSA records in step: while
/// DNS publishes TLSA for this server (`hold` set), a certificate with a new key waits
/// `hold` before it is served, its TLSA published meanwhile, and the old key's record
/// stays `hold` after; so no resolver's cached TLSA set ever lacks the served key.
#[derive(Debug, Default)]
struct Dane {
    hold: Option<std::time::Duration>,
    /// The served certificate (leaf, DER).
    leaf: Vec<u8>,
    /// A certificate waiting for its TLSA record: its configuration, leaf and arrival.
    pending: Option<(Arc<ServerConfig>, Vec<u8>, std::time::Instant)>,
    /// The key served before, while its record stays published.
    previous: Option<(Vec<u8>, std::time::Instant)>,
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: the data of a TLSA 3 1 1 record.
pub fn spki_sha256(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(sha2::Sha256::digest(cert.public_key().raw).to_vec())
}

/// What a served certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (subjectAltName), else the subject's common name.
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn of(der: &[u8]) -> Option<CertInfo> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            names.extend(cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).map(str::to_string));
        }
        Some(CertInfo {
            names,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<(ServerConfig, Vec<u8>), TlsError> {
    let file_err = |path: &Path, msg: String| TlsError::File { path: path.to_path_buf(), msg };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no certificate found in PEM file".into()));
    }
    let leaf = certs[0].to_vec();
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e.to_string()))? {
                let c = c.map_err(|e| file_err(ca, e.to_string()))?;
                roots.add(c).map_err(|e| file_err(ca, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(file_err(ca, "no CA certificate found in PEM file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_err(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg =
        builder.with_single_cert(certs, key_der).map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
    cfg.alpn_protocols = Vec::new();
    Ok((cfg, leaf))
}

impl TlsSettings {
    pub fn load(cert: &Path, key: &Path) -> Result<TlsSettings, TlsError> {
        TlsSettings::load_with_client_ca(cert, key, None)
    }

    /// With `client_ca`, clients may present a certificate from that CA (checked during
    /// the handshake) to log in with SASL EXTERNAL.
    pub fn load_with_client_ca(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsSettings, TlsError> {
        let (cfg, leaf) = load(cert, key, client_ca)?;
        Ok(TlsSettings {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(cfg)),
            dane: RwLock::new(Dane { leaf, ..Dane::default() }),
        })
    }

    /// Re-reads the PEM files; on error the old configuration stays in force. While
    /// DANE is published, a new key waits for its record (`promote`).
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cfg, leaf) = load(&self.cert, &self.key, self.client_ca.as_deref())?;
        let cfg = Arc::new(cfg);
        if let Ok(mut d) = self.dane.write()
            && let Some(hold) = d.hold
            && spki_sha256(&leaf) != spki_sha256(&d.leaf)
        {
            tracing::info!(
                "tls: the new certificate has a new key: served in {}s, once its TLSA record is out",
                hold.as_secs()
            );
            d.pending = Some((cfg, leaf, std::time::Instant::now()));
            return Ok(());
        }
        if let Ok(mut d) = self.dane.write() {
            d.leaf = leaf;
            d.pending = None;
        }
        self.set_current(cfg);
        Ok(())
    }

    fn set_current(&self, cfg: Arc<ServerConfig>) {
        if let Ok(mut cur) = self.current.write() {
            *cur = cfg;
        }
    }

    /// DNS publishes TLSA records for this server: new keys wait `hold` (two TTLs and
    /// the time a change takes to be published).
    pub fn set_dane_hold(&self, hold: std::time::Duration) {
        if let Ok(mut d) = self.dane.write() {
            d.hold = Some(hold);
        }
    }

    /// Serves a waiting certificate once its hold has passed; true when it did.
    pub fn promote(&self) -> bool {
        let Ok(mut d) = self.dane.write() else { return false };
        let hold = d.hold.unwrap_or_default();
        if d.pending.as_ref().is_none_or(|(_, _, since)| since.elapsed() < hold) {
            return false;
        }
        let Some((cfg, leaf, _)) = d.pending.take() else { return false };
        let old = std::mem::replace(&mut d.leaf, leaf);
        d.previous = Some((old, std::time::Instant::now()));
        drop(d);
        self.set_current(cfg);
        tracing::info!("tls: now serving the new certificate; the old key's TLSA record goes after the hold");
        true
    }

    /// The TLSA 3 1 1 data to publish: the served key, a waiting one, and the one
    /// served before while its hold lasts.
    pub fn dane_keys(&self) -> Vec<Vec<u8>> {
        let Ok(d) = self.dane.read() else { return Vec::new() };
        let hold = d.hold.unwrap_or_default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let prev = d.previous.as_ref().filter(|(_, since)| since.elapsed() < hold).map(|(l, _)| l);
        for leaf in std::iter::once(&d.leaf).chain(d.pending.as_ref().map(|p| &p.1)).chain(prev) {
            if let Some(h) = spki_sha256(leaf)
                && !out.contains(&h)
            {
                out.push(h);
            }
        }
        out
    }

    /// The certificates being served.
    pub fn certificates(&self) -> Vec<CertInfo> {
        let Ok(d) = self.dane.read() else { return Vec::new() };
        CertInfo::of(&d.leaf).into_iter().collect()
    }

    /// True when client certificates are requested (and checked against a CA).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The current configuration offering these application protocols (ALPN).
    pub fn config_with_alpn(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut cfg = (*self.config()).clone();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }
}

/// Writes a self-signed certificate for `names` unless both files exist. The key file is
/// created readable by the owner only. Returns true when it wrote new files.
pub fn ensure_self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<bool, TlsError> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Config(e.to_string()))?;
    let write = |path: &Path, data: &str, mode: u32| -> Result<(), TlsError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| TlsError::File { path: dir.to_path_buf(), msg: e.to_string() })?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| TlsError::File { path: path.to_path_buf(), msg: e.to_string() })?;
        f.write_all(data.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| TlsError::File { path: path.to_path_buf(), msg: e.to_string() })
    };
    write(key, &ck.signing_key.serialize_pem(), 0o600)?;
    write(cert, &ck.cert.pem(), 0o644)?;
    Ok(true)
}

/// The mail addresses a (verified) client certificate names: its subjectAltName
/// rfc822Name entries, then any emailAddress in its subject, lower-cased.
pub fn certificate_addresses(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::RFC822Name(a) = name {
                out.push(a.to_ascii_lowercase());
            }
        }
    }
    for attr in cert.subject().iter_email() {
        if let Ok(a) = attr.as_str() {
            out.push(a.to_ascii_lowercase());
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_and_reloads() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("c.pem"), d.path().join("k.pem"));
        assert!(ensure_self_signed(&c, &k, &["mail.example.org".into()]).unwrap());
        assert!(!ensure_self_signed(&c, &k, &["mail.example.org".into()]).unwrap());
        let mode = fs::metadata(&k).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0, "key must be private");
        let s = TlsSettings::load(&c, &k).unwrap();
        s.reload().unwrap();
        fs::write(&c, "garbage").unwrap();
        assert!(s.reload().is_err());
        let _still = s.config();
        // DANE: a new key waits its hold before it is served, both keys published.
        fs::remove_file(&c).unwrap();
        fs::remove_file(&k).unwrap();
        ensure_self_signed(&c, &k, &["mail.example.org".into()]).unwrap();
        let s = TlsSettings::load(&c, &k).unwrap();
        let first = s.dane_keys();
        assert_eq!(first.len(), 1);
        s.set_dane_hold(std::time::Duration::from_millis(300));
        fs::remove_file(&c).unwrap();
        fs::remove_file(&k).unwrap();
        ensure_self_signed(&c, &k, &["mail.example.org".into()]).unwrap();
        s.reload().unwrap();
        assert_eq!(s.dane_keys().len(), 2, "the waiting key is published beside the served one");
        assert!(!s.promote(), "too early");
        std::thread::sleep(std::time::Duration::from_millis(350));
        assert!(s.promote());
        let after = s.dane_keys();
        assert_eq!((after.len(), after[1] == first[0]), (2, true), "the old key stays published a while");
        std::thread::sleep(std::time::Duration::from_millis(350));
        assert_eq!(s.dane_keys().len(), 1);
    }
}
