//! MTA-STS (RFC 8461): a recipient domain's policy for authenticated TLS to its MX
//! hosts, found through its `_mta-sts` TXT record, fetched over HTTPS, cached (in
//! memory and in a file, so that a restart does not open a downgrade window) and
//! applied by the transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_auth::hickory_resolver::TokioResolver;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest policy body read (RFC 8461 §3.3 suggests 64 KiB).
const MAX_POLICY: usize = 64 * 1024;
/// Longest max_age honoured (RFC 8461 §3.2: up to 31557600 s).
const MAX_AGE: u64 = 31_557_600;
/// Deadline for fetching a policy.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over TLS with a valid certificate.
    Enforce,
    /// Report failures (to the log) but deliver as before.
    Testing,
    /// The domain withdrew its policy.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The TXT record's id the policy was fetched under.
    pub id: String,
    pub mode: Mode,
    /// MX patterns: a host name, or `*.` and a domain for one more leftmost label.
    pub mx: Vec<String>,
    pub max_age: u64,
    /// When it was fetched (Unix seconds).
    pub fetched: i64,
}

impl Policy {
    /// Parses a policy body (RFC 8461 §3.2); unknown keys are ignored.
    pub fn parse(text: &str, id: &str, fetched: i64) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else { return Err(format!("not a key: value line: {line}")) };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other}")),
                    })
                }
                "max_age" => {
                    let n: u64 = value.parse().map_err(|_| format!("bad max_age {value}"))?;
                    max_age = Some(n.min(MAX_AGE));
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("not an STSv1 policy".into());
        }
        let mode = mode.ok_or("policy has no mode")?;
        let max_age = max_age.ok_or("policy has no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("policy names no mx".into());
        }
        Ok(Policy { id: id.to_string(), mode, mx, max_age, fetched })
    }

    /// True while the policy may still be used.
    pub fn fresh(&self, now: i64) -> bool {
        now < self.fetched.saturating_add(self.max_age as i64)
    }

    /// True if `host` is one of the policy's MX hosts (RFC 8461 §4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *p == host,
        })
    }
}

/// The id of an `_mta-sts` TXT record ("v=STSv1; id=..."), None if it is not one.
pub fn txt_id(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let id = fields.find_map(|f| f.strip_prefix("id="))?;
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

/// Finds, fetches and caches policies.
pub struct MtaSts {
    cache: Mutex<HashMap<String, Policy>>,
    file: Option<PathBuf>,
    /// Client TLS that checks certificates against the trusted roots.
    tls: Arc<rustls::ClientConfig>,
    https_port: u16,
}

impl MtaSts {
    /// `file` keeps the cache across restarts.
    pub fn new(file: Option<PathBuf>, tls: Arc<rustls::ClientConfig>, https_port: u16) -> MtaSts {
        let cache = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<HashMap<String, Policy>>(&b).ok())
            .unwrap_or_default();
        MtaSts { cache: Mutex::new(cache), file, tls, https_port }
    }

    fn cached(&self, domain: &str, now: i64) -> Option<Policy> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(domain).filter(|p| p.fresh(now)).cloned()
    }

    fn remember(&self, domain: &str, policy: Policy) {
        let snapshot = {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = agora_store::now();
            cache.retain(|_, p| p.fresh(now));
            cache.insert(domain.to_string(), policy);
            serde_json::to_vec(&*cache).unwrap_or_default()
        };
        if let Some(file) = &self.file {
            let tmp = file.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, snapshot).and_then(|()| std::fs::rename(&tmp, file)) {
                tracing::warn!("mta-sts: cannot save the policy cache {}: {e}", file.display());
            }
        }
    }

    /// The policy in force for `domain`, if it has one (RFC 8461 §3.3, §5.1): the
    /// cached one while its id is current; a new one when the id changed; the cached
    /// one still when DNS or the fetch fails.
    pub async fn policy(&self, resolver: &TokioResolver, domain: &str) -> Option<Policy> {
        let now = agora_store::now();
        let cached = self.cached(domain, now);
        let id = match resolver.txt_lookup(format!("_mta-sts.{domain}.")).await {
            Ok(txt) => {
                let ids: Vec<String> = txt
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        mail_auth::hickory_resolver::proto::rr::RData::TXT(t) => {
                            let text: String =
                                t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect();
                            txt_id(&text)
                        }
                        _ => None,
                    })
                    .collect();
                // More than one record is as good as none (§3.1).
                if ids.len() == 1 { ids.into_iter().next() } else { None }
            }
            Err(_) => None,
        };
        let Some(id) = id else { return cached };
        if cached.as_ref().is_some_and(|p| p.id == id) {
            return cached;
        }
        match self.fetch(resolver, domain).await.and_then(|body| Policy::parse(&body, &id, now)) {
            Ok(policy) => {
                tracing::info!("mta-sts: {domain} policy {id}: {:?}, mx {:?}", policy.mode, policy.mx);
                self.remember(domain, policy.clone());
                Some(policy)
            }
            Err(e) => {
                tracing::warn!("mta-sts: no policy fetched for {domain}: {e}");
                cached
            }
        }
    }

    /// GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt with a checked certificate,
    /// no redirects, a text/plain 200 answer of bounded size (what a sender fetches).
    pub async fn fetch(&self, resolver: &TokioResolver, domain: &str) -> Result<String, String> {
        let host = format!("mta-sts.{domain}");
        let ip = resolver
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .iter()
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let addr = SocketAddr::new(ip, self.https_port);
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = Arc::clone(&self.tls);
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: Agora/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let raw = tokio::time::timeout(FETCH_TIMEOUT, async move {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    // A server that closes without close_notify: what came is all there is.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.to_string()),
                }
                if buf.len() > MAX_POLICY + 16 * 1024 {
                    return Err("policy too large".into());
                }
            }
            Ok(buf)
        })
        .await
        .map_err(|_| "policy fetch timed out".to_string())??;
        http_body(&raw)
    }
}

/// The body of a 200 text/plain HTTP answer.
fn http_body(raw: &[u8]) -> Result<String, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("incomplete HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("policy host answered {status}"));
    }
    let mut length = None;
    let mut plain = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-type") {
            plain = v.to_ascii_lowercase().starts_with("text/plain");
        } else if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked policy answers are not read".into());
        }
    }
    if !plain {
        return Err("policy is not text/plain".into());
    }
    let mut body = &raw[end + 4..];
    if let Some(n) = length {
        if body.len() < n {
            return Err("policy cut short".into());
        }
        body = &body[..n];
    }
    if body.len() > MAX_POLICY {
        return Err("policy too large".into());
    }
    String::from_utf8(body.to_vec()).map_err(|_| "policy is not UTF-8".into())
}

/// A certificate verifier over the system's roots (and `extra`, PEM, for a private CA).
pub fn verifier(extra: Option<&[u8]>) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra {
        use rustls_pki_types::pem::PemObject;
        let mut n = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.map_err(|e| format!("CA file: {e}"))?).map_err(|e| format!("CA file: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("CA file holds no certificate".into());
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted CA certificates found: MTA-STS domains cannot be reached");
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())
}

/// Client TLS that checks the server's certificate with `verifier`.
pub fn client_config(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_match() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
            "abc",
            100,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.allows("mail.example.com") && p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net") && !p.allows("a.b.example.net") && !p.allows("example.net"));
        assert!(!p.allows("mail.example.org"));
        assert!(p.fresh(86_499) && !p.fresh(86_500));
        let huge = Policy::parse("version: STSv1\nmode: testing\nmx: m\nmax_age: 99999999999\n", "x", 0).unwrap();
        assert_eq!(huge.max_age, MAX_AGE);
        assert!(Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n", "x", 0).is_ok());
        for bad in [
            "mode: enforce\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a\n",
            "<html>",
        ] {
            assert!(Policy::parse(bad, "x", 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cache_outlives_a_restart_but_not_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mta-sts.json");
        let tls = client_config(verifier(None).unwrap()).unwrap();
        let now = agora_store::now();
        let sts = MtaSts::new(Some(file.clone()), Arc::clone(&tls), 443);
        let policy = Policy::parse("version: STSv1\nmode: enforce\nmx: mx.b.test\nmax_age: 3600\n", "1", now).unwrap();
        sts.remember("b.test", policy.clone());
        sts.remember("old.test", Policy { fetched: now - 7200, ..policy.clone() });
        let again = MtaSts::new(Some(file), tls, 443);
        assert_eq!(again.cached("b.test", now), Some(policy));
        assert_eq!(again.cached("old.test", now), None);
    }

    #[test]
    fn txt_records() {
        assert_eq!(txt_id("v=STSv1; id=20160831085700Z;").as_deref(), Some("20160831085700Z"));
        assert_eq!(txt_id("v=STSv1;id=abc").as_deref(), Some("abc"));
        assert_eq!(txt_id("v=spf1 -all"), None);
        assert_eq!(txt_id("v=STSv1; id=bad-id"), None);
        assert_eq!(txt_id("v=STSv1;"), None);
    }

    #[test]
    fn http_answers() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n\r\nabcdXX";
        assert_eq!(http_body(ok).unwrap(), "abcd");
        assert!(http_body(b"HTTP/1.1 301 Moved\r\nLocation: x\r\n\r\n").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nx").is_err());
    }
}
