//! `[transport]`: how mail leaves for other servers (routes, smarthost, DNS servers,
//! retries, MTA-STS). The mail core owns it; whichever crate runs the transport reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Delivery to other mail servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    /// Domain = "host:port" routes tried before DNS (internal relays, tests).
    pub routes: BTreeMap<String, String>,
    /// Send everything else through this server ("host:port") instead of MX hosts.
    pub smarthost: Option<String>,
    /// Log in to the smarthost (AUTH PLAIN, only after STARTTLS).
    pub smarthost_user: Option<String>,
    pub smarthost_password: Option<String>,
    /// DNS servers for MX lookups ("ip:port"); empty for the system's resolver.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Port of the MX hosts.
    pub mx_port: u16,
    /// First retry after this many seconds, doubling up to four hours.
    pub retry_secs: u64,
    /// Return a message to its sender after this many seconds in the queue.
    pub max_lifetime_secs: u64,
    /// Tell the sender of a delay after this many seconds, once.
    pub delay_warning_secs: u64,
    /// How often the queue is looked at.
    pub poll_secs: u64,
    /// Honour recipient domains' MTA-STS policies (RFC 8461).
    pub mta_sts: bool,
    /// Honour MX hosts' TLSA records (DANE, RFC 7672) when a validating resolver on
    /// this machine (a loopback `nameservers` entry) vouches for them.
    pub dane: bool,
    /// HTTPS port of MTA-STS policy hosts.
    pub mta_sts_port: u16,
    /// Extra CA certificates (PEM) trusted when checking other servers; relative
    /// paths are under the data directory.
    pub ca_file: Option<String>,
    /// Send TLS reports (RFC 8460) to the domains that ask for them in `_smtp._tls`.
    pub tls_reports: bool,
    /// The period a TLS report covers, seconds: a day, as RFC 8460 asks (shorter only
    /// for tests).
    pub tls_report_period_secs: u64,
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            routes: BTreeMap::new(),
            smarthost: None,
            smarthost_user: None,
            smarthost_password: None,
            nameservers: Vec::new(),
            mx_port: 25,
            retry_secs: 300,
            max_lifetime_secs: 5 * 86_400,
            delay_warning_secs: 4 * 3600,
            poll_secs: 5,
            mta_sts: true,
            dane: true,
            mta_sts_port: 443,
            ca_file: None,
            tls_reports: true,
            tls_report_period_secs: 86_400,
        }
    }
}

impl TransportSection {
    /// Each key with an example for unset ones and its comment, for the commented
    /// default configuration file.
    pub const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("smarthost", "\"relay.example.net:587\"", "send everything through this server (default: MX lookup)"),
        ("smarthost_user", "\"me@example.net\"", "and log in to it (only over STARTTLS)"),
        ("smarthost_password", "\"...\"", ""),
        ("nameservers", "[\"127.0.0.1:53\"]", "DNS servers for MX lookups and checks (default: the system's)"),
        ("mx_port", "", "port of other mail servers"),
        ("retry_secs", "", "first retry; doubles up to four hours"),
        ("max_lifetime_secs", "", "return undeliverable mail to its sender after this long"),
        ("delay_warning_secs", "", "tell the sender of a delay after this long, once"),
        ("poll_secs", "", "how often the queue is looked at"),
        ("mta_sts", "", "deliver only as recipient domains' MTA-STS policies say"),
        ("mta_sts_port", "", "HTTPS port of MTA-STS policy hosts"),
        (
            "dane",
            "",
            "deliver only as MX hosts' TLSA records say (DANE), when a validating resolver on this machine is among the nameservers",
        ),
        ("ca_file", "\"private-ca.pem\"", "CAs trusted beside the system's when checking servers"),
        ("routes", "{ \"partner.example\" = \"10.0.0.5:25\" }", "fixed routes, tried before DNS"),
        ("tls_reports", "", "send TLS reports (RFC 8460) to domains that ask for them in _smtp._tls"),
        ("tls_report_period_secs", "", "what one TLS report covers (a day; shorter only for tests)"),
    ];
}
