//! The TOML configuration: the server's own sections, each registered service's
//! section (read by that service's declaration), the listeners with every default
//! applied, the commented file written on first run, and load errors that name the
//! file, line and key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use agora_mail::TransportSection;
use agora_net::TlsMode;
use agora_service::{Configured, Registration, Timeouts, render_section, section};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::registry::{PLANNED, SERVICES};

/// The server's own sections; services' sections belong to their registrations.
const CORE_SECTIONS: &[&str] =
    &["server", "store", "cluster", "tls", "limits", "auth", "transport", "tracking", "listeners"];

/// Every address family unless told otherwise: IPv4 and IPv6 (two sockets; see `agora_net::bind`).
pub const DEFAULT_BIND: [IpAddr; 2] =
    [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)];

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerSection,
    pub store: StoreSection,
    pub cluster: ClusterSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub transport: TransportSection,
    pub tracking: agora_mail::tracking::TrackingSection,
    pub listeners: BTreeMap<String, ListenerSection>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Accept passwords in the clear (USER/PASS, LOGIN, PLAIN) without TLS.
    pub plaintext_without_tls: bool,
}

/// One address or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    One(IpAddr),
    Many(Vec<IpAddr>),
}

impl Addresses {
    pub fn list(&self) -> Vec<IpAddr> {
        match self {
            Addresses::One(a) => vec![*a],
            Addresses::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Name in greetings and Received headers; defaults to the machine's host name.
    pub hostname: Option<String>,
    /// Mail domain created on first run; defaults to the host name.
    pub domain: Option<String>,
    /// Addresses every listener binds unless it sets its own (default: all, IPv4 and IPv6).
    pub bind: Option<Addresses>,
    pub port_offset: Option<u16>,
}

/// Where the information store is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `postgres://USER@HOST:PORT/DB` (PostgreSQL, shared by every node) or `sqlite:DIR`;
    /// none: SQLite in the data directory.
    pub url: Option<String>,
    /// A file holding the PostgreSQL password, so that it need not be in the URL;
    /// relative to the data directory.
    pub password_file: Option<String>,
    /// The CA (PEM) the PostgreSQL server's certificate must come from; default: the
    /// system's roots. Relative to the data directory.
    pub ca_file: Option<String>,
}

impl StoreSection {
    pub const HELP: &[(&str, &str, &str)] = &[
        (
            "url",
            "\"postgres://agora@db.example.org/agora\"",
            "PostgreSQL (several nodes share it) or sqlite:DIR; default: SQLite in the data directory",
        ),
        ("password_file", "\"pg.password\"", "the PostgreSQL password, kept out of the URL"),
        (
            "ca_file",
            "\"pg-ca.pem\"",
            "the CA of PostgreSQL's certificate (default: the system's); sslmode=disable in the URL for none",
        ),
    ];
}

/// This server as one node of several on a shared store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's name (`agora serve --node NAME`); default: the host name.
    pub node: Option<String>,
    /// Where the other nodes reach this one; default: the first address it binds,
    /// else its host name.
    pub address: Option<String>,
    /// single, back-end or front-end (`agora serve --role`).
    pub role: Option<String>,
}

impl ClusterSection {
    pub const HELP: &[(&str, &str, &str)] = &[
        ("node", "\"mx1\"", "this node's name among those sharing the store (default: the host name)"),
        ("address", "\"10.0.0.11\"", "where the other nodes reach this one (default: its first bound address)"),
        ("role", "\"single\"", "single, back-end (holds mailboxes) or front-end (proxies to each user's home)"),
    ];
}

/// The roles a node can have.
pub const ROLES: &[&str] = &["single", "back-end", "front-end"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain; relative paths are under the data directory.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// PEM CA certificates for client certificates (SASL EXTERNAL); none by default.
    pub client_ca: Option<String>,
    /// Certificates from an ACME CA for the server's names (none: the pair above).
    pub acme: Option<agora_service::AcmeSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_network: usize,
    pub network_prefix_v4: u8,
    pub network_prefix_v6: u8,
    pub max_message_size: usize,
    /// Message data all SMTP sessions may hold in memory at once.
    pub max_message_memory: usize,
    pub max_recipients: usize,
    /// IMAP sessions one user may hold at once.
    pub max_sessions_per_user: usize,
    pub shutdown_drain_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 4000,
            max_connections_per_ip: 50,
            max_connections_per_network: 256,
            network_prefix_v4: 24,
            network_prefix_v6: 64,
            max_message_size: 50 * 1024 * 1024,
            max_message_memory: 512 * 1024 * 1024,
            max_recipients: 100,
            max_sessions_per_user: 100,
            shutdown_drain_secs: 10,
        }
    }
}

const LIMITS_HELP: &[(&str, &str, &str)] = &[
    (
        "max_connections",
        "",
        "sessions at once, all listeners together (guards the process; each listener has its own budget)",
    ),
    ("max_connections_per_ip", "", ""),
    ("max_connections_per_network", "", "from one network: IPv4 /network_prefix_v4, IPv6 /network_prefix_v6"),
    ("network_prefix_v4", "", ""),
    ("network_prefix_v6", "", ""),
    ("max_message_size", "", "bytes"),
    ("max_message_memory", "", "bytes of message data all SMTP sessions hold at once"),
    ("max_recipients", "", "per message"),
    ("max_sessions_per_user", "", "IMAP sessions one user may hold at once"),
    ("shutdown_drain_secs", "", "how long sessions may take to finish at shutdown"),
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSection {
    pub enabled: Option<bool>,
    pub address: Option<Addresses>,
    pub port: Option<u16>,
    /// A range instead of one port, `"FIRST-LAST"`: the first port of it free on every
    /// address is taken (dynamic RPC endpoints; firewall plans name the whole range).
    pub ports: Option<String>,
    pub tls: Option<TlsModeSetting>,
    pub proxy_protocol: Option<bool>,
    /// Sessions this listener may hold at once (its own budget).
    pub max_connections: Option<usize>,
    /// Of those, sessions not logged in yet.
    pub max_unauthenticated: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsModeSetting {
    None,
    Starttls,
    Implicit,
}

impl TlsModeSetting {
    pub fn net(self) -> TlsMode {
        match self {
            TlsModeSetting::None => TlsMode::None,
            TlsModeSetting::Starttls => TlsMode::StartTls,
            TlsModeSetting::Implicit => TlsMode::Implicit,
        }
    }
}

/// A listener with every default applied.
#[derive(Debug, Clone)]
pub struct EffectiveListener {
    pub key: &'static str,
    pub role: &'static str,
    /// False for a service of the port map that is not built yet.
    pub built: bool,
    pub enabled: bool,
    pub addresses: Vec<IpAddr>,
    /// The port; with a range, its first port until binding takes one.
    pub port: u16,
    /// The range's last port (`port` itself when there is no range).
    pub port_last: u16,
    pub tls: TlsMode,
    pub proxy_protocol: bool,
    pub timeouts: Timeouts,
    /// Also answers datagrams (UDP) on the same addresses and port.
    pub datagram: bool,
    pub admission: agora_net::Admission,
}

/// Each listener's own budget unless `[listeners.NAME] max_connections` says otherwise;
/// where users log in, half of it is kept for sessions that did.
pub const LISTENER_CONNECTIONS: usize = 1000;

/// The configuration and every registered service's own section, read.
pub struct Loaded {
    pub config: Config,
    pub services: Vec<(&'static dyn Registration, Box<dyn Configured>)>,
}

impl Loaded {
    pub fn listeners(&self, port_offset: u16, bind: &[IpAddr]) -> Result<Vec<EffectiveListener>> {
        let cfg = &self.config;
        let default_addrs = if !bind.is_empty() {
            bind.to_vec()
        } else {
            cfg.server.bind.as_ref().map_or(DEFAULT_BIND.to_vec(), Addresses::list)
        };
        let mut out = Vec::new();
        // Administration listens on loopback unless told otherwise: an address given on
        // the command line only when it is a loopback one (tests), never `[server] bind`.
        let loopback: Vec<IpAddr> = if !bind.is_empty() && bind.iter().all(IpAddr::is_loopback) {
            bind.to_vec()
        } else {
            vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)]
        };
        let planned = PLANNED.iter().map(|&(key, port, tls, role)| (key, port, tls, role, None, false, false, false));
        let built = self.services.iter().flat_map(|(reg, conf)| {
            let t = conf.timeouts();
            reg.listeners()
                .iter()
                .map(move |l| (l.key, l.port, l.tls, l.role, Some(t), l.datagram, l.loopback, l.logins))
        });
        for (key, default_port, tls, role, timeouts, datagram, local, logins) in built.chain(planned) {
            let l = cfg.listeners.get(key).cloned().unwrap_or_default();
            let (port, port_last) = match (l.port, &l.ports) {
                (Some(_), Some(_)) => bail!("[listeners.{key}]: say port or ports, not both"),
                (None, Some(range)) => port_range(range).with_context(|| format!("[listeners.{key}] ports"))?,
                (Some(p), None) => (p, p),
                (None, None) => {
                    let p = default_port.checked_add(port_offset).with_context(|| {
                        format!("--port-offset {port_offset} moves {key} port {default_port} past 65535")
                    })?;
                    (p, p)
                }
            };
            out.push(EffectiveListener {
                key,
                role,
                built: timeouts.is_some(),
                enabled: l.enabled.unwrap_or(true),
                addresses: l
                    .address
                    .as_ref()
                    .map_or_else(|| if local { loopback.clone() } else { default_addrs.clone() }, Addresses::list),
                port,
                port_last,
                tls: l.tls.map_or(tls, TlsModeSetting::net),
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
                timeouts: timeouts.unwrap_or_default(),
                datagram,
                admission: {
                    let max = l.max_connections.unwrap_or(LISTENER_CONNECTIONS).max(1);
                    let share = if logins { max.div_ceil(2) } else { max };
                    agora_net::Admission {
                        max_connections: max,
                        max_unauthenticated: l.max_unauthenticated.unwrap_or(share).clamp(1, max),
                    }
                },
            });
        }
        Ok(out)
    }
}

/// `"FIRST-LAST"` (or one port) as the ports it spans.
fn port_range(text: &str) -> Result<(u16, u16)> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b): (u16, u16) = match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => bail!("{text:?} is not a port range like \"6004-6010\""),
    };
    if a == 0 || b < a {
        bail!("{text:?}: the first port must be above 0 and not after the last");
    }
    Ok((a, b))
}

/// The configuration at `path`, or the defaults when there is no file.
pub fn load_or_default(path: &Path) -> Result<Loaded> {
    if path.exists() { load(path) } else { parse("").map_err(|m| anyhow::anyhow!(m)) }
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).map_err(|msg| anyhow::anyhow!("{}: {msg}", path.display()))
}

/// Parses configuration text; an error says the line and key.
pub fn parse(text: &str) -> std::result::Result<Loaded, String> {
    let describe = |e: toml::de::Error| describe(text, &e);
    // Unknown sections first: a typo in a section name must not pass silently.
    let table: toml::Table = toml::from_str(text).map_err(describe)?;
    for key in table.keys() {
        if !CORE_SECTIONS.contains(&key.as_str()) && !SERVICES.iter().any(|s| s.name() == key) {
            let mut known: Vec<&str> = CORE_SECTIONS.to_vec();
            known.extend(SERVICES.iter().map(|s| s.name()));
            let line = text.lines().position(|l| l.trim_start().trim_start_matches('[').starts_with(key.as_str()));
            let at = line.map_or(String::new(), |n| format!("line {}: ", n + 1));
            return Err(format!("{at}unknown section [{key}]; known: {}", known.join(", ")));
        }
    }
    let config = Config {
        server: section(text, "server").map_err(describe)?,
        store: section(text, "store").map_err(describe)?,
        cluster: section(text, "cluster").map_err(describe)?,
        tls: section(text, "tls").map_err(describe)?,
        limits: section(text, "limits").map_err(|e| {
            let m = describe(e);
            if m.contains("timeout_") {
                format!(
                    "{m} (session timeouts are set per service now: timeout_secs and timeout_preauth_secs in [smtp], [imap], [pop3])"
                )
            } else {
                m
            }
        })?,
        auth: section(text, "auth").map_err(describe)?,
        transport: section(text, "transport").map_err(describe)?,
        tracking: section(text, "tracking").map_err(describe)?,
        listeners: section(text, "listeners").map_err(describe)?,
    };
    for key in config.listeners.keys() {
        let declared =
            SERVICES.iter().flat_map(|s| s.listeners().iter().map(|l| l.key)).chain(PLANNED.iter().map(|p| p.0));
        if !declared.clone().any(|k| k == key) {
            let known: Vec<&str> = declared.collect();
            return Err(format!("unknown listener [listeners.{key}]; known: {}", known.join(", ")));
        }
    }
    let mut services = Vec::new();
    for reg in SERVICES {
        services.push((*reg, reg.configure(text).map_err(describe)?));
    }
    Ok(Loaded { config, services })
}

/// A TOML error as "line N (key `section.key`): message".
fn describe(text: &str, e: &toml::de::Error) -> String {
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
}

/// The file written on first run: every setting, commented out, at its default.
/// The default file with the host name and domain left to the first run (each shown
/// commented when not given): what a package installs.
pub fn template(hostname: Option<&str>, domain: Option<&str>) -> String {
    let text = default_file(hostname.unwrap_or("mail.example.org"), domain.unwrap_or("example.org"));
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        let unset = (line.starts_with("hostname = ") && hostname.is_none())
            || (line.starts_with("domain = ") && domain.is_none());
        if unset {
            out.push_str("# ");
        }
        out.push_str(line);
    }
    out
}

pub fn default_file(hostname: &str, domain: &str) -> String {
    let mut s = format!(
        "# Agora configuration. Every commented line shows the default.\n\
         # Send SIGHUP to reload the TLS certificate and key.\n\n\
         [server]\n\
         hostname = \"{hostname}\"   # name in greetings and Received headers\n\
         domain = \"{domain}\"       # mail domain created on first run\n\
         # bind = [\"0.0.0.0\", \"::\"]  # addresses for every listener without its own (IPv4 and IPv6)\n\
         # port_offset = 0           # added to every default port (e.g. 10000: 25 -> 10025)\n\n\
         [tls]\n\
         # cert = \"tls/cert.pem\"    # PEM chain; relative to the data directory\n\
         # key = \"tls/key.pem\"      # PEM private key\n\
         # client_ca = \"tls/clients.pem\"  # CA of client certificates for SASL EXTERNAL (default: none)\n\
         # ACME (RFC 8555): certificates for the host name and each domain's autoconfig,\n\
         # autodiscover and mta-sts names, renewed renew_before_days (30) before expiry;\n\
         # Other keys: challenge (http-01 or tls-alpn-01), ca (a private CA's root), retry_secs (600).\n\
         # acme = {{ directory = \"https://acme-v02.api.letsencrypt.org/directory\", contact = \"mailto:postmaster@{domain}\" }}\n\n"
    );
    s.push_str(&render_section("store", &StoreSection::default(), StoreSection::HELP));
    s.push('\n');
    s.push_str(&render_section("cluster", &ClusterSection::default(), ClusterSection::HELP));
    s.push('\n');
    s.push_str(&render_section("limits", &LimitsSection::default(), LIMITS_HELP));
    s.push('\n');
    s.push_str(&render_section(
        "auth",
        &AuthSection::default(),
        &[("plaintext_without_tls", "", "allow USER/PASS, LOGIN, PLAIN and LDAP simple binds before TLS")],
    ));
    s.push('\n');
    s.push_str(&render_section("transport", &TransportSection::default(), TransportSection::HELP));
    s.push('\n');
    s.push_str(&render_section(
        "tracking",
        &agora_mail::tracking::TrackingSection::default(),
        agora_mail::tracking::TrackingSection::HELP,
    ));
    for reg in SERVICES {
        s.push('\n');
        s.push_str(&reg.default_section());
    }
    s.push_str(
        "\n# Listeners: enabled, address (one or a list), port (or ports = \"FIRST-LAST\": the first free one of a range),\n\
         # tls (\"none\", \"starttls\" or \"implicit\"), proxy_protocol,\n\
         # max_connections and max_unauthenticated (a flood on one listener never takes another's places,\n\
         # and sessions that logged in never lose theirs to connections that did not).\n",
    );
    let built =
        SERVICES.iter().flat_map(|r| r.listeners().iter().map(|l| (l.key, l.port, l.tls, l.role, true, l.logins)));
    let planned = PLANNED.iter().map(|&(k, p, t, r)| (k, p, t, r, false, false));
    for (key, port, tls, role, is_built, logins) in built.chain(planned) {
        let note = if is_built { "" } else { "   (not available yet)" };
        let share = if logins { LISTENER_CONNECTIONS.div_ceil(2) } else { LISTENER_CONNECTIONS };
        s.push_str(&format!(
            "\n# [listeners.{key}]   # {role}{note}\n# enabled = true\n# port = {port}\n# tls = \"{}\"\n# proxy_protocol = false\n\
             # max_connections = {LISTENER_CONNECTIONS}      # this listener's own budget\n\
             # max_unauthenticated = {share}  # of those, sessions not logged in yet\n",
            tls.as_str()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_says_every_default() {
        let text = default_file("mx.example.org", "example.org");
        let c = parse(&text).unwrap();
        assert_eq!(c.config.server.domain.as_deref(), Some("example.org"));
        let ls = c.listeners(10000, &[]).unwrap();
        let smtp = ls.iter().find(|l| l.key == "smtp").unwrap();
        assert_eq!(smtp.port, 10025);
        assert_eq!(smtp.tls, TlsMode::StartTls);
        assert_eq!(smtp.addresses, DEFAULT_BIND, "IPv4 and IPv6 by default");
        // Uncommenting every line gives a file that still parses (examples included).
        let all: String = text
            .lines()
            .map(|l| {
                let setting = |r: &&str| {
                    r.starts_with("[listeners.")
                        || r.split_once(" = ")
                            .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                };
                l.strip_prefix("# ").filter(setting).unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        parse(&all).unwrap_or_else(|e| panic!("{e}\n{all}"));
        // Per-service timeouts come from each registration, RFC-conformant by default.
        let imap = ls.iter().find(|l| l.key == "imaps").unwrap();
        assert!(imap.timeouts.idle.as_secs() >= 1800, "RFC 9051 §5.4");
        assert!(text.contains("# timeout_secs = 1800"));
        let pop3 = ls.iter().find(|l| l.key == "pop3").unwrap();
        assert!(pop3.timeouts.idle.as_secs() >= 600, "RFC 1939");
        assert!(smtp.timeouts.preauth.as_secs() >= 300, "RFC 5321 §4.5.3.2");
        assert!(ls.iter().any(|l| l.key == "ldap" && l.built) && ls.iter().any(|l| l.key == "gcs" && l.built));
        assert!(ls.iter().any(|l| l.key == "replication" && l.built));
        assert!(ls.iter().any(|l| l.key == "x400" && l.built && l.port == 10102));
        let nntp = ls.iter().find(|l| l.key == "nntp" && l.built).unwrap();
        assert!(nntp.timeouts.preauth.as_secs() >= 180, "RFC 3977 §3.1");
        assert!(text.contains("[ldap]") && text.contains("# max_results = 1000"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("[server]\nhostname = \"x\"\n\n[limits]\nmax_connections = \"many\"\n").err().unwrap();
        assert!(e.contains("line 5") && e.contains("limits.max_connections"), "{e}");
        let e = parse("[limits]\nmax_conections = 5\n").err().unwrap();
        assert!(e.contains("line 2") && e.contains("unknown field"), "{e}");
        let e = parse("[listeners.smtp]\ntls = \"sometimes\"\n").err().unwrap();
        assert!(e.contains("listeners.smtp.tls"), "{e}");
        assert!(parse("[listeners.smtpp]\nport = 1\n").err().unwrap().contains("smtpp"));
        // A service's own section is checked by its registration, with the line.
        let e = parse("[imap]\n\ntimeout_secs = \"long\"\n").err().unwrap();
        assert!(e.contains("line 3") && e.contains("imap.timeout_secs"), "{e}");
        let e = parse("\n[imapp]\n").err().unwrap();
        assert!(e.contains("line 2") && e.contains("unknown section [imapp]"), "{e}");
        let e = parse("[limits]\ntimeout_idle_secs = 5\n").err().unwrap();
        assert!(e.contains("per service"), "{e}");
    }

    #[test]
    fn addresses_one_or_many() {
        let c =
            parse("[server]\nbind = \"127.0.0.1\"\n[listeners.imap]\naddress = [\"::1\", \"127.0.0.2\"]\n").unwrap();
        let ls = c.listeners(0, &[]).unwrap();
        assert_eq!(ls.iter().find(|l| l.key == "smtp").unwrap().addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(ls.iter().find(|l| l.key == "imap").unwrap().addresses.len(), 2);
        let cli: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(c.listeners(0, &[cli]).unwrap()[0].addresses, [cli]);
    }

    #[test]
    fn administration_stays_on_loopback() {
        let admin = |c: &Loaded, bind: &[IpAddr]| {
            c.listeners(0, bind).unwrap().into_iter().find(|l| l.key == "admin").unwrap().addresses
        };
        let open = parse("[server]\nbind = \"0.0.0.0\"\n").unwrap();
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(admin(&open, &[]), local, "[server] bind does not expose it");
        assert_eq!(admin(&open, &["192.0.2.7".parse().unwrap()]), local, "nor a public --bind");
        assert_eq!(admin(&open, &["127.0.0.9".parse().unwrap()]), ["127.0.0.9".parse::<IpAddr>().unwrap()]);
        let chosen = parse("[listeners.admin]\naddress = \"10.0.0.5\"\n").unwrap();
        assert_eq!(admin(&chosen, &[]), ["10.0.0.5".parse::<IpAddr>().unwrap()], "its own address wins");
    }

    #[test]
    fn offset_overflow_is_an_error() {
        assert!(parse("").unwrap().listeners(65000, &[]).is_err());
    }

    #[test]
    fn a_listener_may_take_a_range_of_ports() {
        let l = parse("[listeners.nspi]\nports = \"6010-6020\"\n").unwrap().listeners(0, &[]).unwrap();
        let nspi = l.iter().find(|l| l.key == "nspi").unwrap();
        assert_eq!((nspi.port, nspi.port_last), (6010, 6020));
        let smtp = l.iter().find(|l| l.key == "smtp").unwrap();
        assert_eq!((smtp.port, smtp.port_last), (25, 25));
        for bad in ["\"6020-6010\"", "\"0-5\"", "\"a-b\""] {
            let text = format!("[listeners.nspi]\nports = {bad}\n");
            assert!(parse(&text).unwrap().listeners(0, &[]).is_err(), "{bad}");
        }
        let both = "[listeners.nspi]\nport = 6004\nports = \"6004-6005\"\n";
        assert!(parse(both).unwrap().listeners(0, &[]).is_err());
    }
}
