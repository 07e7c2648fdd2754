//! TLS server configuration: PEM loading, a self-signed certificate on first run,
//! reload on SIGHUP without dropping the sessions that use the old one, certificates
//! per name (SNI) installed at run time, and ACME's TLS-ALPN-01 answers.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The server's TLS configuration. It is built once; the certificates behind it are
/// chosen per handshake (SNI, ALPN) and replaced at run time: the configured pair on
/// SIGHUP, certificates obtained by ACME, and ACME's TLS-ALPN-01 challenge answers.
#[derive(Debug)]
pub struct TlsSettings {
    cert: PathBuf,
    key: PathBuf,
    /// CA certificates that client certificates are checked against (optional ones:
    /// a client without a certificate still connects).
    client_ca: Option<PathBuf>,
    config: Arc<ServerConfig>,
    /// The configuration with each application-protocol list asked for (ALPN), made once.
    with_alpn: std::sync::Mutex<Vec<AlpnConfig>>,
    certs: Arc<Certs>,
    dane: RwLock<Dane>,
    /// The default certificate came from ACME: a reload of the configured pair leaves it.
    acme_default: std::sync::atomic::AtomicBool,
}

/// A protocol list and the configuration offering it.
type AlpnConfig = (Vec<Vec<u8>>, Arc<ServerConfig>);

/// The application protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What each handshake is answered with.
#[derive(Debug)]
struct Certs {
    /// For clients that name no name served by a certificate of its own (and for the
    /// server's host name): the configured pair, or ACME's for the host name.
    default: RwLock<Arc<CertifiedKey>>,
    /// Certificates by the exact name they are served for (SNI).
    named: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 answers by name, served only to `acme-tls/1` handshakes.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        if hello.alpn().is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN)) {
            // Only the challenge answer, never a real certificate (RFC 8737 §3).
            return self.challenges.read().ok()?.get(name.as_deref()?).cloned();
        }
        if let Some(n) = &name
            && let Some(ck) = self.named.read().ok()?.get(n)
        {
            return Some(Arc::clone(ck));
        }
        self.default.read().ok().map(|d| Arc::clone(&d))
    }
}

/// DANE (RFC 7672) keeps the served key and the published TLSA records in step: while
/// DNS publishes TLSA for this server (`hold` set), a certificate with a new key waits
/// `hold` before it is served, its TLSA published meanwhile, and the old key's record
/// stays `hold` after; so no resolver's cached TLSA set ever lacks the served key.
#[derive(Debug, Default)]
struct Dane {
    hold: Option<std::time::Duration>,
    /// The served default certificate (leaf, DER).
    leaf: Vec<u8>,
    /// A certificate waiting for its TLSA record: its key, leaf and arrival.
    pending: Option<(Arc<CertifiedKey>, Vec<u8>, std::time::Instant)>,
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
    /// Issued by itself (its issuer is its subject): no client trusts it by default.
    pub self_signed: bool,
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
            self_signed: cert.issuer() == cert.subject(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key from PEM text, checked to belong together.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate found in PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    CertifiedKey::from_der(certs, key, &provider()).map(Arc::new).map_err(|e| e.to_string())
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| fs::read(p).map_err(|e| TlsError::File { path: p.to_path_buf(), msg: e.to_string() });
    let (c, k) = (read(cert)?, read(key)?);
    certified_key(&c, &k).map_err(|msg| TlsError::File { path: cert.to_path_buf(), msg })
}

fn build_config(certs: Arc<Certs>, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let file_err = |path: &Path, msg: String| TlsError::File { path: path.to_path_buf(), msg };
    let provider = provider();
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
    let mut cfg = builder.with_cert_resolver(certs);
    cfg.alpn_protocols = Vec::new();
    Ok(cfg)
}

impl TlsSettings {
    pub fn load(cert: &Path, key: &Path) -> Result<TlsSettings, TlsError> {
        TlsSettings::load_with_client_ca(cert, key, None)
    }

    /// With `client_ca`, clients may present a certificate from that CA (checked during
    /// the handshake) to log in with SASL EXTERNAL.
    pub fn load_with_client_ca(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsSettings, TlsError> {
        let ck = load_pair(cert, key)?;
        let leaf = ck.cert[0].to_vec();
        let certs = Arc::new(Certs {
            default: RwLock::new(ck),
            named: RwLock::new(HashMap::new()),
            challenges: RwLock::new(HashMap::new()),
        });
        let config = Arc::new(build_config(Arc::clone(&certs), client_ca)?);
        Ok(TlsSettings {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            config,
            with_alpn: std::sync::Mutex::new(Vec::new()),
            certs,
            dane: RwLock::new(Dane { leaf, ..Dane::default() }),
            acme_default: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Re-reads the PEM files; on error the old certificate stays in force. While
    /// DANE is published, a new key waits for its record (`promote`).
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load_pair(&self.cert, &self.key)?;
        if self.acme_default.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("tls: the host name's certificate comes from ACME; the configured pair stays unserved");
            return Ok(());
        }
        self.offer_default(ck, false);
        Ok(())
    }

    /// Serves `ck` to clients that name no name of their own (and for the host name);
    /// while DANE is published and `at_start` is false, a new key waits its hold.
    fn offer_default(&self, ck: Arc<CertifiedKey>, at_start: bool) {
        let leaf = ck.cert[0].to_vec();
        if let Ok(mut d) = self.dane.write() {
            let key = spki_sha256(&leaf);
            if !at_start
                && let Some(hold) = d.hold
                && key != spki_sha256(&d.leaf)
            {
                // A newer certificate for a key already waiting keeps that key's place.
                let since = match &d.pending {
                    Some((_, l, since)) if spki_sha256(l) == key => *since,
                    _ => {
                        tracing::info!(
                            "tls: the new certificate has a new key: served in {}s, once its TLSA record is out",
                            hold.as_secs()
                        );
                        std::time::Instant::now()
                    }
                };
                d.pending = Some((ck, leaf, since));
                return;
            }
            d.leaf = leaf;
            d.pending = None;
        }
        self.set_default(ck);
    }

    fn set_default(&self, ck: Arc<CertifiedKey>) {
        if let Ok(mut cur) = self.certs.default.write() {
            *cur = ck;
        }
    }

    /// Serves a certificate obtained at run time (ACME) for `names`. With `default`, it
    /// becomes the default certificate (the server's host name: what DANE publishes),
    /// subject to the DANE hold unless `at_start`; otherwise each name serves it by SNI.
    pub fn install(&self, names: &[String], ck: Arc<CertifiedKey>, default: bool, at_start: bool) {
        if default {
            self.acme_default.store(true, std::sync::atomic::Ordering::Relaxed);
            self.offer_default(ck, at_start);
            return;
        }
        if let Ok(mut named) = self.certs.named.write() {
            for n in names {
                named.insert(n.to_ascii_lowercase(), Arc::clone(&ck));
            }
        }
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with a certificate carrying the
    /// challenge's digest (`None`: stops answering them).
    pub fn set_acme_challenge(&self, name: &str, digest: Option<&[u8]>) -> Result<(), TlsError> {
        let name = name.to_ascii_lowercase();
        let Ok(mut map) = self.certs.challenges.write() else { return Ok(()) };
        let Some(digest) = digest else {
            map.remove(&name);
            return Ok(());
        };
        let cfg = |e: rcgen::Error| TlsError::Config(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(cfg)?;
        let mut params = rcgen::CertificateParams::new(vec![name.clone()]).map_err(cfg)?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key).map_err(cfg)?;
        // Not `certified_key`: its check parses the certificate, which refuses the
        // critical acmeIdentifier extension this certificate exists to carry.
        let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::Config(e.to_string()))?;
        let signer = provider().key_provider.load_private_key(der).map_err(|e| TlsError::Config(e.to_string()))?;
        map.insert(name, Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)));
        Ok(())
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
        let Some((ck, leaf, _)) = d.pending.take() else { return false };
        let old = std::mem::replace(&mut d.leaf, leaf);
        d.previous = Some((old, std::time::Instant::now()));
        drop(d);
        self.set_default(ck);
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

    /// The certificates being served: the default one first, then those served by name.
    pub fn certificates(&self) -> Vec<CertInfo> {
        let mut leaves: Vec<Vec<u8>> = self.certs.default.read().map(|d| vec![d.cert[0].to_vec()]).unwrap_or_default();
        if let Ok(named) = self.certs.named.read() {
            for ck in named.values() {
                if !leaves.iter().any(|l| l.as_slice() == ck.cert[0].as_ref()) {
                    leaves.push(ck.cert[0].to_vec());
                }
            }
        }
        leaves.iter().filter_map(|l| CertInfo::of(l)).collect()
    }

    /// True when client certificates are requested (and checked against a CA).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The configuration offering these application protocols (ALPN).
    pub fn config_with_alpn(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let Ok(mut cache) = self.with_alpn.lock() else { return self.config() };
        if let Some((_, cfg)) = cache.iter().find(|(k, _)| k.iter().map(Vec::as_slice).eq(alpn.iter().copied())) {
            return Arc::clone(cfg);
        }
        let mut cfg = (*self.config).clone();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let cfg = Arc::new(cfg);
        cache.push((cfg.alpn_protocols.clone(), Arc::clone(&cfg)));
        cfg
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
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

/// Client settings for reaching another node of this installation: its certificate must
/// carry one of `pins` (SHA-256 of its public key, as it registered them in the shared
/// store), whoever issued it and whatever names it has; self-signed back-ends are
/// reached safely with nothing to configure.
pub fn pinned_client_config(pins: Vec<Vec<u8>>) -> Arc<rustls::ClientConfig> {
    client_config(Some(pins), false)
}

/// A TLS 1.3 client that takes any certificate: for peers that prove who they are
/// inside the session with a proof bound to it (`channel_binding`), as the servers of
/// one routing organisation do with their shared secret.
pub fn bound_client_config() -> Arc<rustls::ClientConfig> {
    client_config(None, true)
}

fn client_config(pins: Option<Vec<Vec<u8>>>, tls13_only: bool) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(Pinned { pins, provider: Arc::clone(&provider) });
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let config = builder.map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        // The default versions always suit the default provider.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

/// The tls-exporter channel binding of a TLS session (RFC 9266: 32 octets under the
/// label "EXPORTER-Channel-Binding"); None before TLS 1.3.
pub fn channel_binding<D>(conn: &rustls::ConnectionCommon<D>) -> Option<[u8; 32]> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None).ok()
}

#[derive(Debug)]
struct Pinned {
    /// None: any certificate (the peer proves itself inside the session).
    pins: Option<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(pins) = &self.pins else { return Ok(rustls::client::danger::ServerCertVerified::assertion()) };
        match spki_sha256(end_entity) {
            Some(h) if pins.contains(&h) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General("the node's certificate is not the one it registered".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
