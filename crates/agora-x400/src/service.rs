//! X.400's registration: the MTA on 102 (RFC 1006), the `[x400]` section with its
//! partners, and the gateway the transport hands partners' mail to.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_net::{Conn, TlsMode};
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::assoc::{Limits, Mode, Selectors};
use crate::gateway::Local;
use crate::mta::{Mta, MtaGateway, Partner};
use crate::oraddr::OrAddress;

pub static SERVICE: Service<X400Section> = Service {
    name: "x400",
    listeners: &[ListenerDecl {
        key: "x400",
        port: 102,
        tls: TlsMode::None,
        role: "X.400 MTA (RFC 1006)",
        datagram: false,
        loopback: false,
        logins: true,
    }],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct X400Section {
    /// This MTA's name in binds (default: the host name's first label, upper-case).
    pub mta_name: String,
    /// This MTA's global domain, `/C=…/ADMD=…/PRMD=…/`: its MTS identifiers and trace,
    /// and where Internet addresses without a mapping are carried.
    pub or_address: String,
    /// This MTA's transport, session and presentation selectors (text, or 0x and hex);
    /// empty: any is taken.
    pub tsel: String,
    pub ssel: String,
    pub psel: String,
    /// Largest P1 APDU taken or sent, in octets.
    pub max_message_size: usize,
    /// How long an association waits for its partner.
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
    /// The MTAs this one exchanges mail with.
    pub partners: BTreeMap<String, PartnerSection>,
}

impl Default for X400Section {
    fn default() -> Self {
        X400Section {
            mta_name: String::new(),
            or_address: String::new(),
            tsel: String::new(),
            ssel: String::new(),
            psel: String::new(),
            max_message_size: 32 << 20,
            timeout_preauth_secs: 60,
            timeout_secs: 300,
            partners: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerSection {
    /// Its MTA name, as it binds and as this MTA names it.
    pub mta_name: String,
    /// The password it presents (one line; relative to the data directory).
    pub password_file: String,
    /// The password this MTA presents to it (default: the same file).
    pub our_password_file: String,
    /// `host` or `host:port` (default port 102).
    pub address: String,
    pub tsel: String,
    pub ssel: String,
    pub psel: String,
    /// "1988" (id-ac-mts-transfer, the default) or "1984" (mts-transfer-protocol-1984).
    pub mode: String,
    /// The RFC 822 domains routed to it, each with the O/R subtree it is, e.g.
    /// `{ "b.example" = "/C=GB/ADMD= /PRMD=Beta/O=B/" }`.
    pub domains: BTreeMap<String, String>,
}

impl Section for X400Section {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("mta_name", "\"AGORA\"", "this MTA's name in binds (default: the host name's first label, upper-case)"),
        (
            "or_address",
            "\"/C=GB/ADMD= /PRMD=Acme/\"",
            "this MTA's global domain (MTS identifiers, trace, unmapped addresses)",
        ),
        ("tsel", "\"\"", "this MTA's transport selector (text, or 0x and hex); empty: any"),
        ("ssel", "\"\"", "this MTA's session selector"),
        ("psel", "\"\"", "this MTA's presentation selector"),
        ("max_message_size", "", "largest P1 APDU taken or sent, in octets"),
        ("timeout_preauth_secs", "", "before a partner binds"),
        ("timeout_secs", "", "waiting on a partner in an association"),
        (
            "partners",
            "{ b = { mta_name = \"MTA-B\", password_file = \"x400-b.secret\", address = \"mta.b.example\", domains = { \"b.example\" = \"/C=GB/ADMD= /PRMD=Beta/O=B/\" } } }",
            "the partner MTAs, by a name of your choice",
        ),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

/// A selector: text, or `0x` and hex digits.
pub fn selector(s: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.len() % 2 != 0 || hex.len() > 128 {
            return Err(format!("selector {s:?}: an even number of hex digits, at most 64 octets"));
        }
        return (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("selector {s:?}: bad hex")))
            .collect();
    }
    if s.len() > 64 {
        return Err(format!("selector {s:?}: at most 64 octets"));
    }
    Ok(s.as_bytes().to_vec())
}

fn read_secret(ctx_dir: &std::path::Path, file: &str, what: &str) -> Result<String, String> {
    let path = ctx_dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    let pw = text.lines().next().unwrap_or_default().trim().to_string();
    if pw.is_empty() || pw.len() > crate::p1::MAX_PASSWORD {
        return Err(format!("{what}: {}: one line of 1 to 62 characters", path.display()));
    }
    Ok(pw)
}

/// The MTA from its section (also for `agora x400 test`).
pub fn mta(
    s: &X400Section,
    data_dir: &std::path::Path,
    hostname: &str,
    mail: Arc<agora_mail::Mail>,
    throttle: Arc<agora_directory::throttle::Throttle>,
) -> Result<Mta, String> {
    let name = if s.mta_name.is_empty() {
        hostname.split('.').next().unwrap_or("AGORA").to_ascii_uppercase()
    } else {
        s.mta_name.clone()
    };
    if name.is_empty() || name.len() > crate::p1::MAX_MTA_NAME || !name.is_ascii() {
        return Err(format!("mta_name {name:?}: 1 to 32 ASCII characters"));
    }
    let domain = if s.or_address.is_empty() {
        OrAddress::default()
    } else {
        OrAddress::parse(&s.or_address).map_err(|e| format!("or_address: {e}"))?
    };
    let mut partners = Vec::new();
    for (key, p) in &s.partners {
        let what = |k: &str| format!("[x400.partners.{key}] {k}");
        if p.mta_name.is_empty() || p.mta_name.len() > crate::p1::MAX_MTA_NAME {
            return Err(format!("{}: 1 to 32 characters", what("mta_name")));
        }
        if p.password_file.is_empty() {
            return Err(format!("{}: the partner's password, in a file", what("password_file")));
        }
        let their = read_secret(data_dir, &p.password_file, &what("password_file"))?;
        let our = if p.our_password_file.is_empty() {
            their.clone()
        } else {
            read_secret(data_dir, &p.our_password_file, &what("our_password_file"))?
        };
        let (host, port) = match p.address.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                port.parse().map_err(|_| format!("{}: bad port", what("address")))?,
            ),
            _ => (p.address.clone(), 102),
        };
        if host.is_empty() {
            return Err(format!("{}: where the partner listens", what("address")));
        }
        let mode = match p.mode.as_str() {
            "" | "1988" => Mode::Normal,
            "1984" => Mode::X410,
            m => return Err(format!("{}: {m:?}: say 1988 or 1984", what("mode"))),
        };
        let mut domains = Vec::new();
        for (d, or) in &p.domains {
            let or = OrAddress::parse(or).map_err(|e| format!("{}: {d}: {e}", what("domains")))?;
            domains.push((d.to_ascii_lowercase(), or));
        }
        partners.push(Partner {
            key: key.clone(),
            mta_name: p.mta_name.clone(),
            their_password: their,
            our_password: our,
            host,
            port,
            selectors: Selectors { tsel: selector(&p.tsel)?, ssel: selector(&p.ssel)?, psel: selector(&p.psel)? },
            mode,
            domains,
        });
    }
    Ok(Mta {
        name: name.clone(),
        ours: Selectors { tsel: selector(&s.tsel)?, ssel: selector(&s.ssel)?, psel: selector(&s.psel)? },
        local: Local { domain, hostname: hostname.to_string(), mta: name.clone() },
        partners,
        mail,
        throttle,
        limits: Limits { max_apdu: s.max_message_size.max(64 << 10), ..Limits::default() },
        timeout: secs(s.timeout_secs.max(1)),
        swept: Default::default(),
    })
}

fn build(ctx: &Context, s: X400Section) -> Result<Built, String> {
    let mta = Arc::new(mta(&s, &ctx.data_dir, &ctx.hostname, Arc::clone(&ctx.mail), Arc::clone(&ctx.throttle))?);
    if !mta.partners.is_empty() {
        if s.or_address.is_empty() {
            return Err("[x400] or_address: this MTA's global domain, e.g. \"/C=GB/ADMD= /PRMD=Acme/\"".into());
        }
        ctx.mail.gateways().add(Arc::new(MtaGateway(Arc::clone(&mta))));
    }
    Ok(Built { handlers: vec![("x400", Arc::new(X400Service { mta }))], ..Built::default() })
}

pub struct X400Service {
    pub mta: Arc<Mta>,
}

#[async_trait::async_trait]
impl agora_net::Service for X400Service {
    fn busy_reply(&self) -> &'static [u8] {
        // A full server refuses at the transport layer: a DR for a CR not yet read.
        b""
    }

    async fn serve(&self, mut conn: Conn) {
        crate::mta::serve(&self.mta, &mut conn).await;
    }
}
