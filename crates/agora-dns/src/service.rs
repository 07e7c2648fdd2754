//! DNS's registration: 53 over UDP and TCP, and the `[dns]` section.

use std::net::IpAddr;
use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::transfer::{self, Transfers};
use crate::{DnsConfig, DnsService, Shared, ZoneSettings};

pub static SERVICE: Service<DnsSection> = Service {
    name: "dns",
    listeners: &[ListenerDecl {
        key: "dns",
        port: 53,
        tls: TlsMode::None,
        role: "authoritative DNS",
        datagram: true,
        loopback: false,
        logins: false,
    }],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// Public addresses of this server: A and AAAA of its host name when that is in a
    /// hosted zone.
    pub addresses: Vec<IpAddr>,
    /// The zones' name servers (default: the host name).
    pub nameservers: Vec<String>,
    pub ttl: u32,
    /// DMARC policy published for every hosted domain: none, quarantine or reject.
    pub dmarc_policy: String,
    /// Answers per second to one client network (IPv4 /24, IPv6 /56) over UDP; 0: off.
    pub rate_limit: u32,
    /// Every this many answers over the limit, one goes out empty and truncated.
    pub rate_limit_slip: u32,
    /// Networks never limited (CIDR).
    pub rate_limit_exempt: Vec<String>,
    /// A TCP connection without a query for this long is closed.
    pub timeout_secs: u64,
    /// Sign every hosted zone (DNSSEC).
    pub dnssec: bool,
    /// Algorithm of new zones' keys: ecdsap256sha256 or ed25519.
    pub dnssec_algorithm: String,
    /// Zone-signing keys are rolled over after this many days (0: never).
    pub zsk_lifetime_days: u32,
    /// Publish TLSA records (DANE) for the SMTP listener's keys in signed zones.
    pub dane: bool,
    /// Secondary servers (IP, IP:port): they may transfer the zones and get NOTIFY.
    pub secondaries: Vec<String>,
    /// TSIG key that transfers and NOTIFY are signed with (empty: none).
    pub tsig_name: String,
    pub tsig_algorithm: String,
    /// Base64.
    pub tsig_secret: String,
    /// Address NOTIFY is sent from (default: chosen by the system).
    pub notify_source: Option<IpAddr>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            addresses: Vec::new(),
            nameservers: Vec::new(),
            ttl: 3600,
            dmarc_policy: "quarantine".into(),
            rate_limit: 200,
            rate_limit_slip: 2,
            rate_limit_exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            timeout_secs: 10,
            dnssec: true,
            dnssec_algorithm: "ecdsap256sha256".into(),
            zsk_lifetime_days: 90,
            dane: true,
            secondaries: Vec::new(),
            tsig_name: String::new(),
            tsig_algorithm: "hmac-sha256".into(),
            tsig_secret: String::new(),
            notify_source: None,
        }
    }
}

impl Section for DnsSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("addresses", "[\"192.0.2.1\", \"2001:db8::1\"]", "public addresses: A/AAAA of the host name (default: none)"),
        ("nameservers", "[\"ns1.example.org\"]", "NS of every hosted zone (default: the host name)"),
        ("ttl", "", "TTL of the published records"),
        ("dmarc_policy", "", "none, quarantine or reject"),
        ("rate_limit", "", "UDP answers per second to one client network (/24, /56); 0 turns limiting off"),
        ("rate_limit_slip", "", "every Nth answer over the limit goes out empty with TC set (0: drop all)"),
        ("rate_limit_exempt", "", "networks never limited"),
        ("timeout_secs", "", "idle TCP connections are closed after this"),
        ("dnssec", "", "sign every hosted zone (give the parent zone the DS from `agora dns ds DOMAIN`)"),
        ("dnssec_algorithm", "", "algorithm of new zones' keys: ecdsap256sha256 or ed25519"),
        ("zsk_lifetime_days", "", "zone-signing keys roll over after this many days, without a gap (0: never)"),
        (
            "dane",
            "",
            "publish TLSA (DANE) for the SMTP listener's key in signed zones; a new key is served only once its record is out",
        ),
        (
            "secondaries",
            "[\"192.0.2.53\", \"198.51.100.7:5353\"]",
            "secondary servers: they may transfer the zones (AXFR/IXFR) and get NOTIFY on every change",
        ),
        ("tsig_name", "\"transfer-key\"", "TSIG key transfers and NOTIFY must be signed with (empty: none)"),
        ("tsig_algorithm", "", "hmac-sha256, hmac-sha384 or hmac-sha512"),
        ("tsig_secret", "\"base64 from `openssl rand -base64 32`\"", "the TSIG key's secret, base64"),
        (
            "notify_source",
            "\"192.0.2.1\"",
            "address NOTIFY is sent from (default: the DNS listener's address if it has one, else chosen by the system)",
        ),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: DnsSection) -> Result<Built, String> {
    if !["none", "quarantine", "reject"].contains(&s.dmarc_policy.as_str()) {
        return Err(format!("dmarc_policy {:?}: say none, quarantine or reject", s.dmarc_policy));
    }
    let zone = ZoneSettings {
        hostname: ctx.hostname.clone(),
        addresses: s.addresses,
        nameservers: s.nameservers,
        listeners: ctx.listening.clone(),
        dmarc_policy: s.dmarc_policy,
        ttl: s.ttl,
    };
    let cfg = DnsConfig {
        zone,
        dnssec: s.dnssec,
        algorithm: crate::dnssec::algorithm_number(&s.dnssec_algorithm)?,
        zsk_lifetime: i64::from(s.zsk_lifetime_days) * 86_400,
        tls: if s.dnssec && s.dane { ctx.tls.clone() } else { None },
    };
    if let Some(tls) = &cfg.tls {
        // Two TTLs for caches, and one maintenance round for the record to go out.
        let round = u64::from(s.ttl).clamp(1, 60);
        tls.set_dane_hold(std::time::Duration::from_secs(u64::from(s.ttl) * 2 + round));
    }
    let exempt = s
        .rate_limit_exempt
        .iter()
        .map(|n| crate::ratelimit::Net::parse(n).map_err(|e| format!("rate_limit_exempt: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let limiter = crate::ratelimit::RateLimiter::new(s.rate_limit, s.rate_limit_slip, exempt);
    let transfers = Arc::new(Transfers {
        secondaries: s.secondaries.iter().map(|x| transfer::parse_secondary(x)).collect::<Result<_, _>>()?,
        key: transfer::tsig_key(&s.tsig_name, &s.tsig_algorithm, &s.tsig_secret)?,
        // By default NOTIFY leaves from the address DNS listens on, where the
        // secondaries expect their primary (when it listens on one).
        notify_source: s.notify_source.or_else(|| match ctx.bound.iter().find(|(k, _)| k == "dns") {
            Some((_, a)) if a.len() == 1 => Some(a[0]),
            _ => None,
        }),
    });
    let shared = Shared::new(Arc::clone(&ctx.store), cfg);
    let maintenance = Arc::clone(&shared).maintenance(ctx.shutdown.clone());
    let notifier = transfer::notifier(Arc::clone(&shared), Arc::clone(&transfers), ctx.shutdown.clone());
    let dns = Arc::new(DnsService::new(shared, limiter, transfers));
    Ok(Built {
        handlers: vec![("dns", dns.clone())],
        datagram: vec![("dns", dns)],
        tasks: vec![Box::pin(maintenance), Box::pin(notifier)],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::DnsSection>(<super::DnsSection as agora_service::Section>::HELP)
                .is_empty()
        );
    }
}
