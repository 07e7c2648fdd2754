//! The service registry. A service declares itself once — its listeners (key, default
//! port, TLS mode, role), its configuration section with its defaults and help, its
//! session timeouts — and is built from one shared `Context`. The binary keeps a list
//! of registrations and nothing else per service: adding a service is a crate and one
//! line in that list.

pub mod leases;
pub mod login;
pub mod metrics;
pub mod sasl;
pub mod snapshot;

use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_mail::Mail;
use agora_net::{TlsMode, TlsSettings};
use agora_store::Store;
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use tokio_util::sync::CancellationToken;

pub use agora_net::Timeouts;

/// One listener a service offers.
#[derive(Debug, Clone, Copy)]
pub struct ListenerDecl {
    /// `[listeners.KEY]` in the configuration and the SERVICE column of `agora ports`.
    pub key: &'static str,
    pub port: u16,
    pub tls: TlsMode,
    pub role: &'static str,
    /// The listener also answers datagrams on the same port (UDP beside TCP, as DNS).
    pub datagram: bool,
    /// Bound to loopback unless its own `address` says otherwise (administration).
    pub loopback: bool,
    /// Users log in here (so half the listener's places are kept for sessions that did).
    pub logins: bool,
}

/// Limits every service shares (`[limits]`, `[auth]`).
#[derive(Debug, Clone)]
pub struct SharedLimits {
    pub max_message_size: usize,
    /// Message data all sessions together may hold in memory.
    pub max_message_memory: usize,
    pub max_recipients: usize,
    pub max_sessions_per_user: usize,
    /// Passwords in the clear before TLS.
    pub plaintext_without_tls: bool,
}

/// What every service is built from.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub dir: Directory,
    pub throttle: Arc<Throttle>,
    pub tls: Option<Arc<TlsSettings>>,
    /// The server's name (greetings, trace headers) and its primary mail domain.
    pub hostname: String,
    pub domain: String,
    pub data_dir: PathBuf,
    pub mail: Arc<Mail>,
    pub limits: SharedLimits,
    /// The listeners that are on, by key, with their ports (what DNS publishes).
    pub listening: Vec<(String, u16)>,
    /// The addresses each listener that is on binds (empty: every address).
    pub bound: Vec<(String, Vec<std::net::IpAddr>)>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// `[tls] acme`: certificates from an ACME CA (none: the configured pair only).
    pub acme: Option<AcmeSettings>,
    /// What the hosted zones are made from (the DNS service's settings).
    pub zone: Option<agora_mail::zone::ZoneSettings>,
    /// Asks resolvers what they see of records.
    pub dns_check: Option<agora_mail::zone::Checker>,
}

/// `[tls] acme = { directory, contact, … }`: where and how certificates are obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// The CA's ACME directory URL.
    pub directory: String,
    /// Contact for the account (`mailto:…`); several separated by commas.
    pub contact: String,
    /// PEM root the CA's own HTTPS is checked against, for a private CA (default: the
    /// system's roots). Relative paths are under the data directory.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `http-01` (port 80) or `tls-alpn-01` (port 443); default: http-01 when port 80
    /// is on, else tls-alpn-01.
    #[serde(default)]
    pub challenge: Option<String>,
    /// A certificate is renewed this many days before it expires.
    #[serde(default = "AcmeSettings::default_renew")]
    pub renew_before_days: u32,
    /// After a failed attempt, the next waits this long, doubling with each failure
    /// (up to a day).
    #[serde(default = "AcmeSettings::default_retry")]
    pub retry_secs: u64,
}

impl AcmeSettings {
    fn default_renew() -> u32 {
        30
    }
    fn default_retry() -> u64 {
        600
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("hostname", &self.hostname).field("domain", &self.domain).finish()
    }
}

/// Work a service runs beside its listeners until shutdown (e.g. the outbound queue).
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a service's constructor returns.
#[derive(Default)]
pub struct Built {
    /// The session handler of each listener key it declared.
    pub handlers: Vec<(&'static str, Arc<dyn agora_net::Service>)>,
    /// The datagram handler of each listener key declared with `datagram`.
    pub datagram: Vec<(&'static str, Arc<dyn agora_net::DatagramService>)>,
    pub tasks: Vec<Task>,
}

/// A service's configuration section: serde with defaults, plus help for the file.
pub trait Section: Default + Serialize + DeserializeOwned + Send + 'static {
    /// `(key, example when unset, comment)` for each key, in the order the commented
    /// default file shows them.
    const HELP: &'static [(&'static str, &'static str, &'static str)];
    /// The session timeouts of the service's listeners.
    fn timeouts(&self) -> Timeouts;
}

/// A registered service, as the binary sees it.
pub trait Registration: Sync {
    /// The configuration section, `[NAME]`.
    fn name(&self) -> &'static str;
    fn listeners(&self) -> &'static [ListenerDecl];
    /// The commented section for the default configuration file.
    fn default_section(&self) -> String;
    /// Reads the service's section out of the whole configuration text.
    fn configure(&self, text: &str) -> Result<Box<dyn Configured>, toml::de::Error>;
}

/// A service with its configuration read, ready to be built.
pub trait Configured: Send {
    fn timeouts(&self) -> Timeouts;
    fn build(self: Box<Self>, ctx: &Context) -> Result<Built, String>;
}

/// The usual registration: a section type and a constructor.
pub struct Service<S: Section> {
    pub name: &'static str,
    pub listeners: &'static [ListenerDecl],
    pub build: fn(&Context, S) -> Result<Built, String>,
}

struct Ready<S: Section> {
    section: S,
    build: fn(&Context, S) -> Result<Built, String>,
}

impl<S: Section> Configured for Ready<S> {
    fn timeouts(&self) -> Timeouts {
        self.section.timeouts()
    }
    fn build(self: Box<Self>, ctx: &Context) -> Result<Built, String> {
        (self.build)(ctx, self.section)
    }
}

impl<S: Section> Registration for Service<S> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn listeners(&self) -> &'static [ListenerDecl] {
        self.listeners
    }
    fn default_section(&self) -> String {
        render_section(self.name, &S::default(), S::HELP)
    }
    fn configure(&self, text: &str) -> Result<Box<dyn Configured>, toml::de::Error> {
        let section: S = section(text, self.name)?;
        Ok(Box::new(Ready { section, build: self.build }))
    }
}

/// Reads `[name]` out of the whole configuration text (its default when absent).
/// Parsing the whole text keeps positions, so errors can name the line.
pub fn section<S: DeserializeOwned + Default>(text: &str, name: &str) -> Result<S, toml::de::Error> {
    let de = toml::Deserializer::parse(text)?;
    OneSection::<S> { name, _s: PhantomData }.deserialize(de)
}

struct OneSection<'n, S> {
    name: &'n str,
    _s: PhantomData<S>,
}

impl<'de, S: DeserializeOwned + Default> DeserializeSeed<'de> for OneSection<'_, S> {
    type Value = S;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<S, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeOwned + Default> Visitor<'de> for OneSection<'_, S> {
    type Value = S;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a configuration table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                found = Some(map.next_value::<S>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or_default())
    }
}

/// A section of the commented default file: `[name]`, then every key at its default
/// (or an example, when unset by default) with its comment, all commented out.
pub fn render_section<S: Serialize>(name: &str, defaults: &S, help: &[(&str, &str, &str)]) -> String {
    let table = toml::Table::try_from(defaults).unwrap_or_default();
    let mut out = format!("[{name}]\n");
    for (key, example, comment) in help {
        let value = match table.get(*key) {
            Some(toml::Value::Array(a)) if a.is_empty() && !example.is_empty() => example.to_string(),
            Some(toml::Value::Table(t)) if t.is_empty() && !example.is_empty() => example.to_string(),
            Some(v) => v.to_string(),
            None => example.to_string(),
        };
        let line = format!("# {key} = {value}");
        if comment.is_empty() {
            out.push_str(&line);
        } else {
            out.push_str(&format!("{line:<40}# {comment}"));
        }
        out.push('\n');
    }
    out
}

/// The keys a section's defaults have that its help does not describe (a test of each
/// section asks for none, so the default file never leaves a setting out).
pub fn undocumented<S: Serialize + Default>(help: &[(&str, &str, &str)]) -> Vec<String> {
    let table = toml::Table::try_from(S::default()).unwrap_or_default();
    let mut keys: Vec<String> = table.keys().filter(|k| !help.iter().any(|(h, _, _)| h == k)).cloned().collect();
    // Keys unset by default do not serialize: the struct's own field list is the check
    // for those, through `deny_unknown_fields` on every section.
    keys.sort();
    keys
}

/// Seconds as a duration, at least one.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        port: u16,
        names: Vec<String>,
        secret: Option<String>,
    }
    impl Default for Demo {
        fn default() -> Self {
            Demo { port: 7, names: Vec::new(), secret: None }
        }
    }

    #[test]
    fn a_section_is_read_from_the_whole_text_with_positions() {
        let text = "[server]\nhostname = \"x\"\n\n[demo]\nport = 9\n";
        assert_eq!(section::<Demo>(text, "demo").unwrap().port, 9);
        assert_eq!(section::<Demo>("[other]\nx = 1\n", "demo").unwrap(), Demo::default());
        let e = section::<Demo>("[demo]\nport = 9\nprot = 1\n", "demo").unwrap_err();
        let span = e.span().expect("errors keep their position");
        assert_eq!("[demo]\nport = 9\nprot = 1\n"[..span.start].matches('\n').count() + 1, 3);
    }

    #[test]
    fn sections_render_defaults_and_examples() {
        let help = [("port", "", "the port"), ("names", "[\"a\"]", ""), ("secret", "\"...\"", "")];
        let s = render_section("demo", &Demo::default(), &help);
        assert!(s.starts_with("[demo]\n# port = 7"), "{s}");
        assert!(s.contains("# the port") && s.contains("# names = [\"a\"]") && s.contains("# secret = \"...\""), "{s}");
        assert!(undocumented::<Demo>(&help).is_empty());
        assert_eq!(undocumented::<Demo>(&help[..1]), ["names"]);
    }
}
