//! The TOML configuration: defaults, the commented file written on first run, and load
//! errors that name the file, line and key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One row of the port map: every service of DESIGN's §1, built or not.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDef {
    pub key: &'static str,
    pub port: u16,
    pub tls: &'static str,
    pub what: &'static str,
    pub built: bool,
}

pub const SERVICES: &[ServiceDef] = &[
    ServiceDef { key: "smtp", port: 25, tls: "starttls", what: "SMTP inbound", built: true },
    ServiceDef { key: "submission", port: 587, tls: "starttls", what: "SMTP submission", built: true },
    ServiceDef { key: "submissions", port: 465, tls: "implicit", what: "SMTP submission over TLS", built: true },
    ServiceDef { key: "imap", port: 143, tls: "starttls", what: "IMAP4", built: true },
    ServiceDef { key: "imaps", port: 993, tls: "implicit", what: "IMAP4 over TLS", built: true },
    ServiceDef { key: "pop3", port: 110, tls: "starttls", what: "POP3", built: true },
    ServiceDef { key: "pop3s", port: 995, tls: "implicit", what: "POP3 over TLS", built: true },
    ServiceDef { key: "nntp", port: 119, tls: "starttls", what: "NNTP public folders", built: false },
    ServiceDef { key: "nntps", port: 563, tls: "implicit", what: "NNTP over TLS", built: false },
    ServiceDef { key: "http", port: 80, tls: "none", what: "webmail, admin, autoconfig", built: false },
    ServiceDef { key: "https", port: 443, tls: "implicit", what: "webmail over TLS", built: false },
    ServiceDef { key: "ldap", port: 389, tls: "starttls", what: "LDAP directory", built: false },
    ServiceDef { key: "ldap-alt", port: 390, tls: "starttls", what: "LDAP (alternate port)", built: false },
    ServiceDef { key: "ldaps", port: 636, tls: "implicit", what: "LDAP over TLS", built: false },
    ServiceDef { key: "gc", port: 3268, tls: "starttls", what: "Global Catalog", built: false },
    ServiceDef { key: "gcs", port: 3269, tls: "implicit", what: "Global Catalog over TLS", built: false },
    ServiceDef { key: "replication", port: 379, tls: "starttls", what: "directory replication", built: false },
    ServiceDef { key: "routing", port: 691, tls: "starttls", what: "link-state routing", built: false },
    ServiceDef { key: "x400", port: 102, tls: "none", what: "X.400 MTA (RFC 1006)", built: false },
    ServiceDef { key: "rpc", port: 135, tls: "none", what: "DCE/RPC endpoint mapper", built: false },
    ServiceDef { key: "dns", port: 53, tls: "none", what: "authoritative DNS", built: false },
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub pop3: Pop3Section,
    pub transport: TransportSection,
    pub smtp: SmtpSection,
    pub listeners: BTreeMap<String, ListenerSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    /// Networks ("10.0.0.0/8", "2001:db8::/32", or one address) whose clients may
    /// relay through port 25 without AUTH: internal applications and servers.
    pub trusted_networks: Vec<String>,
    /// Refuse mail failing DMARC when its domain asks for p=reject.
    pub dmarc_reject: bool,
    /// DKIM-sign mail from authenticated users and trusted networks.
    pub dkim_sign: bool,
    /// ARC-seal mail forwarded to other servers (aliases and groups with outside members).
    pub arc_seal: bool,
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection { trusted_networks: Vec::new(), dmarc_reject: true, dkim_sign: true, arc_seal: true }
    }
}

impl SmtpSection {
    pub fn networks(&self) -> Result<Vec<(std::net::IpAddr, u8)>, String> {
        self.trusted_networks
            .iter()
            .map(|n| {
                let (addr, len) = n.split_once('/').unwrap_or((n, ""));
                let ip: std::net::IpAddr =
                    addr.trim().parse().map_err(|_| format!("smtp.trusted_networks: {n:?} is not a network"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = if len.is_empty() {
                    max
                } else {
                    len.trim().parse().map_err(|_| format!("smtp.trusted_networks: bad prefix in {n:?}"))?
                };
                if len > max {
                    return Err(format!("smtp.trusted_networks: prefix too long in {n:?}"));
                }
                Ok((ip, len))
            })
            .collect()
    }
}

/// Delivery to other mail servers.
#[derive(Debug, Clone, Deserialize)]
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
    /// HTTPS port of MTA-STS policy hosts.
    pub mta_sts_port: u16,
    /// Extra CA certificates (PEM) trusted when checking other servers; relative
    /// paths are under the data directory.
    pub ca_file: Option<String>,
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
            mta_sts_port: 443,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Accept passwords in the clear (USER/PASS, LOGIN, PLAIN) without TLS.
    pub plaintext_without_tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Section {
    /// Mark messages retrieved over POP3 as \Seen.
    pub mark_seen: bool,
    /// Delete retrieved messages older than this many days at QUIT (leave-on-server
    /// policy for clients that never delete); unset: never.
    pub expire_days: Option<u32>,
}

impl Default for Pop3Section {
    fn default() -> Self {
        Pop3Section { mark_seen: true, expire_days: None }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Name in greetings and Received headers; defaults to the machine's host name.
    pub hostname: Option<String>,
    /// Mail domain created on first run; defaults to the host name.
    pub domain: Option<String>,
    /// Address every listener binds unless it sets its own.
    pub bind: Option<IpAddr>,
    pub port_offset: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain; relative paths are under the data directory.
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_size: usize,
    /// Message data all SMTP sessions may hold in memory at once.
    pub max_message_memory: usize,
    pub max_recipients: usize,
    /// IMAP sessions one user may hold at once.
    pub max_sessions_per_user: usize,
    pub timeout_preauth_secs: u64,
    pub timeout_idle_secs: u64,
    pub shutdown_drain_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_message_size: 50 * 1024 * 1024,
            max_message_memory: 512 * 1024 * 1024,
            max_recipients: 100,
            max_sessions_per_user: 100,
            timeout_preauth_secs: 60,
            timeout_idle_secs: 300,
            shutdown_drain_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSection {
    pub enabled: Option<bool>,
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub tls: Option<TlsModeSetting>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsModeSetting {
    None,
    Starttls,
    Implicit,
}

impl TlsModeSetting {
    pub fn parse(s: &str) -> Option<TlsModeSetting> {
        match s {
            "none" => Some(TlsModeSetting::None),
            "starttls" => Some(TlsModeSetting::Starttls),
            "implicit" => Some(TlsModeSetting::Implicit),
            _ => None,
        }
    }
    pub fn net(self) -> agora_net::TlsMode {
        match self {
            TlsModeSetting::None => agora_net::TlsMode::None,
            TlsModeSetting::Starttls => agora_net::TlsMode::StartTls,
            TlsModeSetting::Implicit => agora_net::TlsMode::Implicit,
        }
    }
}

/// A listener with every default applied.
#[derive(Debug, Clone)]
pub struct EffectiveListener {
    pub def: ServiceDef,
    pub enabled: bool,
    pub address: IpAddr,
    pub port: u16,
    pub tls: TlsModeSetting,
    pub proxy_protocol: bool,
}

impl Config {
    pub fn listeners(&self, port_offset: u16, bind: Option<IpAddr>) -> Result<Vec<EffectiveListener>> {
        let default_addr = bind.or(self.server.bind).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for key in self.listeners.keys() {
            if !SERVICES.iter().any(|s| s.key == key) {
                let known: Vec<&str> = SERVICES.iter().map(|s| s.key).collect();
                bail!("configuration: unknown listener [listeners.{key}]; known: {}", known.join(", "));
            }
        }
        let mut out = Vec::new();
        for def in SERVICES {
            let l = self.listeners.get(def.key).cloned().unwrap_or_default();
            let port = match l.port {
                Some(p) => p,
                None => def.port.checked_add(port_offset).with_context(|| {
                    format!("--port-offset {port_offset} moves {} port {} past 65535", def.key, def.port)
                })?,
            };
            out.push(EffectiveListener {
                def: *def,
                enabled: l.enabled.unwrap_or(true),
                address: l.address.unwrap_or(default_addr),
                port,
                tls: l.tls.or_else(|| TlsModeSetting::parse(def.tls)).unwrap_or(TlsModeSetting::None),
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            });
        }
        Ok(out)
    }
}

/// Reads and checks a configuration file.
/// The configuration at `path`, or the defaults when there is no file.
pub fn load_or_default(path: &Path) -> Result<Config> {
    if path.exists() { load(path) } else { Ok(Config::default()) }
}

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).map_err(|msg| anyhow::anyhow!("{}: {msg}", path.display()))
}

/// Parses configuration text; an error says the line and key.
pub fn parse(text: &str) -> std::result::Result<Config, String> {
    toml::from_str::<Config>(text).map_err(|e| {
        let Some(span) = e.span() else { return e.message().to_string() };
        let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
        let mut section = String::new();
        let mut key = None;
        for (i, l) in text.lines().enumerate() {
            let t = l.trim();
            if i + 1 > line_no {
                break;
            }
            if t.starts_with('[') {
                section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            }
            if i + 1 == line_no {
                key = t.split_once('=').map(|(k, _)| k.trim().to_string());
            }
        }
        let where_ = match key {
            Some(k) if section.is_empty() => format!(" (key `{k}`)"),
            Some(k) => format!(" (key `{section}.{k}`)"),
            None if !section.is_empty() => format!(" (section [{section}])"),
            None => String::new(),
        };
        format!("line {line_no}{where_}: {}", e.message())
    })
}

/// The file written on first run: every setting, commented out, at its default.
pub fn default_file(hostname: &str, domain: &str) -> String {
    let l = LimitsSection::default();
    let mut s = format!(
        "# Agora configuration. Every commented line shows the default.\n\
         # Send SIGHUP to reload the TLS certificate and key.\n\n\
         [server]\n\
         hostname = \"{hostname}\"   # name in greetings and Received headers\n\
         domain = \"{domain}\"       # mail domain created on first run\n\
         # bind = \"0.0.0.0\"         # address for every listener without its own\n\
         # port_offset = 0           # added to every default port (e.g. 10000: 25 -> 10025)\n\n\
         [tls]\n\
         # cert = \"tls/cert.pem\"    # PEM chain; relative to the data directory\n\
         # key = \"tls/key.pem\"      # PEM private key\n\n\
         [limits]\n\
         # max_connections = {}\n\
         # max_connections_per_ip = {}\n\
         # max_message_size = {}   # bytes\n\
         # max_message_memory = {}   # bytes of message data all SMTP sessions hold at once\n\
         # max_recipients = {}\n\
         # max_sessions_per_user = {}   # IMAP sessions one user may hold at once\n\
         # timeout_preauth_secs = {}\n\
         # timeout_idle_secs = {}\n\
         # shutdown_drain_secs = {}\n\n\
         [auth]\n\
         # plaintext_without_tls = false   # allow USER/PASS, LOGIN and PLAIN before TLS\n\n\
         [pop3]\n\
         # mark_seen = true          # retrieved messages get the Seen flag\n\
         # expire_days = 30          # delete retrieved mail older than this at QUIT (default: never)\n\n\
         [smtp]\n\
         # trusted_networks = [\"10.0.0.0/8\"]   # may relay through port 25 without AUTH (default: none)\n\
         # dmarc_reject = true         # refuse mail failing DMARC under p=reject\n\
         # dkim_sign = true            # sign mail from users and trusted networks (DKIM)\n\
         # arc_seal = true             # ARC-seal mail forwarded to outside addresses\n\n\
         [transport]\n\
         # smarthost = \"relay.example.net:587\"   # send everything through this server (default: MX lookup)\n\
         # smarthost_user = \"me@example.net\"      # and log in to it (only over STARTTLS)\n\
         # smarthost_password = \"...\"\n\
         # nameservers = [\"127.0.0.1:53\"]        # DNS servers for MX lookups (default: the system's)\n\
         # retry_secs = 300            # first retry; doubles up to four hours\n\
         # max_lifetime_secs = 432000  # return undeliverable mail to its sender after five days\n\
         # delay_warning_secs = 14400  # tell the sender of a delay after four hours\n\
         # mta_sts = true              # deliver only as recipient domains' MTA-STS policies say\n\
         # ca_file = \"private-ca.pem\" # CAs trusted beside the system's when checking servers\n\
         # [transport.routes]          # fixed routes, tried before DNS\n\
         # \"partner.example\" = \"10.0.0.5:25\"\n",
        l.max_connections,
        l.max_connections_per_ip,
        l.max_message_size,
        l.max_message_memory,
        l.max_recipients,
        l.max_sessions_per_user,
        l.timeout_preauth_secs,
        l.timeout_idle_secs,
        l.shutdown_drain_secs
    );
    s.push_str(
        "\n# Listeners: enabled, address, port, tls = \"none\" | \"starttls\" | \"implicit\", proxy_protocol.\n",
    );
    for d in SERVICES {
        let note = if d.built { "" } else { "   (not available yet)" };
        s.push_str(&format!(
            "\n# [listeners.{}]   # {}{note}\n# enabled = true\n# port = {}\n# tls = \"{}\"\n# proxy_protocol = false\n",
            d.key, d.what, d.port, d.tls
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses() {
        let c = parse(&default_file("mx.example.org", "example.org")).unwrap();
        assert_eq!(c.server.domain.as_deref(), Some("example.org"));
        let ls = c.listeners(10000, None).unwrap();
        let smtp = ls.iter().find(|l| l.def.key == "smtp").unwrap();
        assert_eq!(smtp.port, 10025);
        assert_eq!(smtp.tls, TlsModeSetting::Starttls);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("[server]\nhostname = \"x\"\n\n[limits]\nmax_connections = \"many\"\n").unwrap_err();
        assert!(e.contains("line 5") && e.contains("limits.max_connections"), "{e}");
        let e = parse("[limits]\nmax_conections = 5\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("unknown field"), "{e}");
        let e = parse("[listeners.smtp]\ntls = \"sometimes\"\n").unwrap_err();
        assert!(e.contains("listeners.smtp.tls"), "{e}");
        let c = parse("[listeners.smtpp]\nport = 1\n").unwrap();
        assert!(c.listeners(0, None).unwrap_err().to_string().contains("smtpp"));
    }

    #[test]
    fn trusted_networks_parse() {
        let c = parse("[smtp]\ntrusted_networks = [\"10.0.0.0/8\", \"::1\", \"192.0.2.0/24\"]\n").unwrap();
        let n = c.smtp.networks().unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!(n[1].1, 128, "a single address is a full-length prefix");
        for bad in ["banana", "10.0.0.0/33", "10.0.0.0/x"] {
            let c = parse(&format!("[smtp]\ntrusted_networks = [\"{bad}\"]\n")).unwrap();
            assert!(c.smtp.networks().is_err(), "{bad}");
        }
    }

    #[test]
    fn offset_overflow_is_an_error() {
        assert!(Config::default().listeners(65000, None).is_err());
    }
}
