//! DANE for SMTP (RFC 7672): the TLSA records of an MX host, trusted only when a
//! validating resolver on this machine says they are authentic (the AD bit from a
//! loopback resolver, as Postfix and Exim require), and the certificate check they
//! imply: the server's certificate or key must match a DANE-EE record; names and
//! expiry do not matter (RFC 7672 §3.1.1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// DANE-EE (3) with a known selector and matching type: what this client checks.
    /// DANE-TA and the PKIX usages count as unusable (RFC 7672 §3.1.3).
    pub fn usable(&self) -> bool {
        self.usage == 3 && self.selector <= 1 && self.matching <= 2
    }

    fn matches(&self, cert_der: &[u8]) -> bool {
        use sha2::Digest;
        let selected: Vec<u8> = match self.selector {
            0 => cert_der.to_vec(),
            _ => {
                use x509_parser::prelude::*;
                let Ok((_, cert)) = X509Certificate::from_der(cert_der) else { return false };
                cert.public_key().raw.to_vec()
            }
        };
        let digest = match self.matching {
            0 => selected,
            1 => sha2::Sha256::digest(&selected).to_vec(),
            _ => sha2::Sha512::digest(&selected).to_vec(),
        };
        digest == self.data
    }
}

/// What DNS says of an MX host's TLSA records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Authentic records: TLS with a matching certificate is required.
    Secure(Vec<Tlsa>),
    /// None, unsigned, or no validating resolver to vouch for them: no DANE.
    Insecure,
    /// The resolver could not validate (SERVFAIL): this host must not get the mail.
    Bogus(String),
}

/// The TLSA records of `_PORT._tcp.HOST`, asked of the first of `nameservers` that is
/// on this machine (none there: `Insecure`, the AD bit of a distant resolver proves
/// nothing).
pub async fn tlsa(nameservers: &[SocketAddr], host: &str, port: u16) -> Lookup {
    let Some(resolver) = nameservers.iter().find(|n| n.ip().is_loopback()).copied() else {
        return Lookup::Insecure;
    };
    let Ok(name) = Name::from_ascii(format!("_{port}._tcp.{}.", host.trim_end_matches('.'))) else {
        return Lookup::Insecure;
    };
    match ask(resolver, &name).await {
        Ok(reply) if reply.metadata.response_code == ResponseCode::ServFail => {
            Lookup::Bogus(format!("{resolver} could not validate {name} TLSA"))
        }
        Ok(reply) if reply.metadata.authentic_data && reply.metadata.response_code == ResponseCode::NoError => {
            let records: Vec<Tlsa> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            if records.is_empty() { Lookup::Insecure } else { Lookup::Secure(records) }
        }
        Ok(_) => Lookup::Insecure,
        Err(e) => Lookup::Bogus(e),
    }
}

/// One question with AD set (RFC 6840 §5.7: asks for the AD bit in the answer).
async fn ask(resolver: SocketAddr, name: &Name) -> Result<Message, String> {
    let mut id = [0u8; 2];
    let _ = getrandom::fill(&mut id);
    let mut m = Message::query();
    m.metadata.id = u16::from_be_bytes(id);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(name.clone(), RecordType::TLSA));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let bind = if resolver.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    let reply = exchange(&sock, &bytes, resolver, 2, Duration::from_millis(1500))
        .await
        .ok_or_else(|| format!("{resolver} did not answer for {name} TLSA"))?;
    Message::from_vec(&reply).map_err(|e| e.to_string())
}

/// One DNS message over UDP: sent to `peer` and sent again until a datagram comes
/// back from it with the message's ID, `tries` times `wait` at most.
pub async fn exchange(
    sock: &tokio::net::UdpSocket,
    message: &[u8],
    peer: SocketAddr,
    tries: u32,
    wait: Duration,
) -> Option<Vec<u8>> {
    let id = message.get(..2)?;
    let mut buf = vec![0u8; 65_535];
    for _ in 0..tries {
        sock.send_to(message, peer).await.ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        // Anything else that arrives meanwhile (a stray or late answer) is skipped.
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            if from == peer && n >= 12 && buf[..2] == *id {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

/// Accepts the server's certificate only if it matches one of the DANE-EE records.
#[derive(Debug)]
pub struct Verifier {
    records: Vec<Tlsa>,
}

impl Verifier {
    pub fn new(records: Vec<Tlsa>) -> Arc<Verifier> {
        Arc::new(Verifier { records: records.into_iter().filter(Tlsa::usable).collect() })
    }
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.records.iter().any(|r| r.matches(end_entity)) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("DANE: the certificate matches no TLSA record".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        handshake_signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        handshake_signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        signature_schemes()
    }
}

/// The handshake's signature checked with the server's key, however the certificate
/// itself was judged (every verifier of the transport shares this).
pub fn handshake_signature(
    message: &[u8],
    cert: &rustls_pki_types::CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
    tls13: bool,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }
}

/// The signature schemes those checks accept.
pub fn signature_schemes() -> Vec<rustls::SignatureScheme> {
    rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn dane_ee_records_match_the_key_or_the_certificate() {
        use sha2::Digest;
        let ck = rcgen::generate_simple_self_signed(vec!["mx.example.org".into()]).unwrap();
        let der = ck.cert.der().to_vec();
        let other = rcgen::generate_simple_self_signed(vec!["mx.example.org".into()]).unwrap().cert.der().to_vec();
        use x509_parser::prelude::*;
        let spki = X509Certificate::from_der(&der).unwrap().1.public_key().raw.to_vec();
        let r = |usage, selector, matching, data: Vec<u8>| Tlsa { usage, selector, matching, data };
        for rec in [
            r(3, 1, 1, sha2::Sha256::digest(&spki).to_vec()),
            r(3, 0, 1, sha2::Sha256::digest(&der).to_vec()),
            r(3, 1, 2, sha2::Sha512::digest(&spki).to_vec()),
            r(3, 1, 0, spki.clone()),
        ] {
            assert!(rec.usable() && rec.matches(&der) && !rec.matches(&other), "{rec:?}");
        }
        assert!(!r(2, 1, 1, vec![0; 32]).usable(), "DANE-TA is not checked here");
        let v = Verifier::new(vec![r(3, 1, 1, sha2::Sha256::digest(&spki).to_vec())]);
        let name = rustls_pki_types::ServerName::try_from("mx.example.org").unwrap();
        let now = rustls_pki_types::UnixTime::now();
        let cert = |d: &Vec<u8>| rustls_pki_types::CertificateDer::from(d.clone());
        assert!(v.verify_server_cert(&cert(&der), &[], &name, &[], now).is_ok());
        assert!(v.verify_server_cert(&cert(&other), &[], &name, &[], now).is_err());
    }
}
