//! LDAP's registrations: the directory on 389 and 390 (StartTLS) and 636 (TLS), the
//! Global Catalog on 3268 (StartTLS) and 3269 (TLS), and the `[ldap]` section; directory
//! replication (RFC 4533) on 379 (StartTLS) with the `[replication]` section.

use std::sync::{Arc, Mutex, Weak};

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::session::DEFAULT_GC_ATTRIBUTES;
use crate::{LdapConfig, LdapService, Shared, schema};

pub static SERVICE: Service<LdapSection> = Service {
    name: "ldap",
    listeners: &[
        ListenerDecl {
            key: "ldap",
            port: 389,
            tls: TlsMode::StartTls,
            role: "LDAP directory",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "ldap-alt",
            port: 390,
            tls: TlsMode::StartTls,
            role: "LDAP (alternate port)",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "ldaps",
            port: 636,
            tls: TlsMode::Implicit,
            role: "LDAP over TLS",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "gc",
            port: 3268,
            tls: TlsMode::StartTls,
            role: "Global Catalog",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "gcs",
            port: 3269,
            tls: TlsMode::Implicit,
            role: "Global Catalog over TLS",
            datagram: false,
            loopback: false,
            logins: false,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapSection {
    /// Anonymous clients read the address book too (by default only the root DSE and schema).
    pub anonymous_read: bool,
    /// Attributes people may change on their own entry, besides their password.
    pub self_service: Vec<String>,
    /// The Global Catalog's partial attribute set.
    pub gc_attributes: Vec<String>,
    pub max_message_bytes: usize,
    /// Entries per search (per page with paged results) for anyone but administrators.
    pub max_results: usize,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for LdapSection {
    fn default() -> Self {
        LdapSection {
            anonymous_read: false,
            self_service: ["telephoneNumber", "mobile", "jpegPhoto", "thumbnailPhoto"].map(String::from).to_vec(),
            gc_attributes: DEFAULT_GC_ATTRIBUTES.iter().map(|s| s.to_string()).collect(),
            max_message_bytes: 2 * 1024 * 1024,
            max_results: 1000,
            timeout_preauth_secs: 120,
            timeout_secs: 900,
        }
    }
}

impl Section for LdapSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("anonymous_read", "", "anonymous clients read the address book (else only the root DSE and schema)"),
        ("self_service", "", "attributes people may change on their own entry, besides userPassword"),
        ("gc_attributes", "", "the Global Catalog's partial attribute set"),
        ("max_message_bytes", "", "largest request accepted"),
        ("max_results", "", "entries per search (or page) for non-administrators"),
        ("timeout_preauth_secs", "", "before a bind"),
        ("timeout_secs", "", "bound, without a request"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

/// Attribute names from the configuration, each a type of the schema.
fn attr_ids(key: &str, names: &[String]) -> Result<Vec<schema::AttrId>, String> {
    names
        .iter()
        .map(|n| schema::attr(n).ok_or_else(|| format!("[ldap] {key}: {n} is not an attribute of the schema")))
        .collect()
}

fn build(ctx: &Context, s: LdapSection) -> Result<Built, String> {
    if s.max_message_bytes < 1024 {
        return Err("[ldap] max_message_bytes must be at least 1024".into());
    }
    let self_service = attr_ids("self_service", &s.self_service)?;
    for id in &self_service {
        let t = schema::attr_type(*id);
        if t.no_user_mod
            || t.name == "userPassword"
            || ["uid", "mail", "proxyAddresses", "objectClass"].contains(&t.name)
        {
            return Err(format!("[ldap] self_service: {} cannot be a self-service attribute", t.name));
        }
    }
    let base = LdapConfig {
        gc: false,
        allow_plaintext: ctx.limits.plaintext_without_tls,
        anonymous_read: s.anonymous_read,
        self_service,
        gc_attributes: attr_ids("gc_attributes", &s.gc_attributes)?,
        max_message: s.max_message_bytes,
        max_results: s.max_results.max(1),
        default_domain: ctx.domain.clone(),
        hostname: ctx.hostname.clone(),
        tls_available: ctx.tls.is_some(),
        external: ctx.tls.as_ref().is_some_and(|t| t.verifies_clients()),
    };
    let shared = shared_for(ctx);
    let ldap: Arc<dyn agora_net::Service> = Arc::new(LdapService::new(base.clone(), Arc::clone(&shared)));
    let gc: Arc<dyn agora_net::Service> = Arc::new(LdapService::new(LdapConfig { gc: true, ..base }, shared));
    Ok(Built {
        handlers: vec![
            ("ldap", Arc::clone(&ldap)),
            ("ldap-alt", Arc::clone(&ldap)),
            ("ldaps", ldap),
            ("gc", Arc::clone(&gc)),
            ("gcs", gc),
        ],
        ..Built::default()
    })
}

/// One `Shared` per store in a process: the LDAP ports and replication see one tree
/// and one replication log, whose CSNs only one keeper may issue.
fn shared_for(ctx: &Context) -> Arc<Shared> {
    static ALL: Mutex<Vec<(usize, Weak<Shared>)>> = Mutex::new(Vec::new());
    let key = Arc::as_ptr(&ctx.store) as *const () as usize;
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(s) = all.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
        return s;
    }
    let s = Shared::new(Arc::clone(&ctx.store), ctx.dir.clone(), Arc::clone(&ctx.throttle));
    all.push((key, Arc::downgrade(&s)));
    s
}

pub static REPLICATION: Service<ReplicationSection> = Service {
    name: "replication",
    listeners: &[ListenerDecl {
        key: "replication",
        port: 379,
        tls: TlsMode::StartTls,
        role: "directory replication (RFC 4533)",
        datagram: false,
        loopback: false,
        logins: false,
    }],
    build: build_replication,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// Be a read-only replica of this directory (`ldap://host:379`, or `ldaps://`).
    pub provider: String,
    /// Who to bind to the provider as (a DN, or an address for an Agora provider).
    pub bind_dn: String,
    pub password: String,
    /// The password's file (first line), relative to the data directory.
    pub password_file: String,
    /// The naming context to copy (empty: every one the provider lists).
    pub base: String,
    /// Only these domains' naming contexts (empty: all).
    pub domains: Vec<String>,
    /// StartTLS on an ldap:// provider (turn off only on a trusted network).
    pub starttls: bool,
    /// PEM certificates to trust for the provider (a private CA or its own certificate),
    /// beside the system's; relative to the data directory.
    pub ca_file: String,
    /// The name the provider's certificate must carry (default: the URL's host).
    pub tls_name: String,
    /// Longest wait between attempts to reach the provider.
    pub retry_max_secs: u64,
    /// This server's id in change sequence numbers (0-4095), unique among the servers
    /// that replicate one directory.
    pub server_id: u16,
    /// Days a deleted entry stays in the change log; a replica away longer gets a full
    /// refresh instead of the changes.
    pub keep_deletes_days: u32,
    pub max_message_bytes: usize,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            provider: String::new(),
            bind_dn: String::new(),
            password: String::new(),
            password_file: String::new(),
            base: String::new(),
            domains: Vec::new(),
            starttls: true,
            ca_file: String::new(),
            tls_name: String::new(),
            retry_max_secs: 60,
            server_id: 0,
            keep_deletes_days: 30,
            max_message_bytes: 1024 * 1024,
            timeout_preauth_secs: 120,
            timeout_secs: 900,
        }
    }
}

impl Section for ReplicationSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("provider", "\"ldap://hub.example.org:379\"", "be a read-only replica of this directory"),
        ("bind_dn", "\"uid=repl,ou=people,dc=example,dc=org\"", "who to bind to the provider as"),
        ("password", "", "the bind password (or password_file)"),
        ("password_file", "\"replication.secret\"", "the bind password's file, relative to the data directory"),
        ("base", "\"dc=example,dc=org\"", "the naming context to copy (empty: all the provider lists)"),
        ("domains", "[\"example.org\"]", "only these domains (empty: all)"),
        ("starttls", "", "StartTLS on an ldap:// provider"),
        ("ca_file", "\"provider-ca.pem\"", "certificates to trust for the provider, beside the system's"),
        ("tls_name", "", "the name on the provider's certificate (default: the URL's host)"),
        ("retry_max_secs", "", "longest wait between attempts to reach the provider"),
        ("server_id", "", "this server's id in change sequence numbers (0-4095), unique among replicating servers"),
        ("keep_deletes_days", "", "days deletes stay in the change log (a replica away longer is refreshed in full)"),
        ("max_message_bytes", "", "largest request accepted"),
        ("timeout_preauth_secs", "", "before a bind"),
        ("timeout_secs", "", "bound, without a request (a persistent sync search waits as long as it lasts)"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build_replication(ctx: &Context, s: ReplicationSection) -> Result<Built, String> {
    if s.server_id > 0xfff {
        return Err("[replication] server_id must be between 0 and 4095".into());
    }
    if s.max_message_bytes < 1024 {
        return Err("[replication] max_message_bytes must be at least 1024".into());
    }
    let shared = shared_for(ctx);
    shared.sync.configure(s.server_id, std::time::Duration::from_secs(u64::from(s.keep_deletes_days.max(1)) * 86_400));
    let cfg = LdapConfig {
        allow_plaintext: ctx.limits.plaintext_without_tls,
        max_message: s.max_message_bytes,
        default_domain: ctx.domain.clone(),
        hostname: ctx.hostname.clone(),
        tls_available: ctx.tls.is_some(),
        external: ctx.tls.as_ref().is_some_and(|t| t.verifies_clients()),
        ..LdapConfig::default()
    };
    let service: Arc<dyn agora_net::Service> = Arc::new(LdapService::new(cfg, Arc::clone(&shared)));
    let keeper: agora_service::Task = Box::pin(Arc::clone(&shared).keep_log(ctx.shutdown.clone()));
    let store = Arc::clone(&ctx.store);
    let replica: agora_service::Task = match replica_config(ctx, &s)? {
        Some(cfg) => Box::pin(crate::replica::run(Arc::new(cfg), store, ctx.shutdown.clone())),
        // Not (or no longer) a replica: the directory is this server's own to write.
        None => Box::pin(async move {
            if let Err(e) = store.set_sync_value("replica.provider", None).await {
                tracing::error!("replication: {e}");
            }
            crate::replica::mark_domains(&store, &[], "").await;
        }),
    };
    Ok(Built { handlers: vec![("replication", service)], tasks: vec![keeper, replica], ..Built::default() })
}

/// The consumer's settings, when `provider` is set.
fn replica_config(ctx: &Context, s: &ReplicationSection) -> Result<Option<crate::replica::ReplicaConfig>, String> {
    if s.provider.trim().is_empty() {
        return Ok(None);
    }
    let provider = s.provider.trim().to_string();
    let (host, port, implicit_tls) = crate::replica::parse_url(&provider).map_err(|e| format!("provider: {e}"))?;
    if s.bind_dn.trim().is_empty() {
        return Err("bind_dn: a replica binds to its provider as an account with the replicator role".into());
    }
    let password = if !s.password_file.is_empty() {
        let path = ctx.data_dir.join(&s.password_file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("password_file {}: {e}", path.display()))?;
        text.lines().next().unwrap_or_default().to_string()
    } else {
        s.password.clone()
    };
    if password.is_empty() {
        return Err("password or password_file: the replica's bind password".into());
    }
    let extra = if s.ca_file.is_empty() {
        None
    } else {
        let path = ctx.data_dir.join(&s.ca_file);
        Some(std::fs::read(&path).map_err(|e| format!("ca_file {}: {e}", path.display()))?)
    };
    let verifier = agora_mail::mtasts::verifier(extra.as_deref()).map_err(|e| format!("ca_file: {e}"))?;
    let tls = agora_mail::mtasts::client_config(verifier)?;
    let name = if s.tls_name.is_empty() { host.clone() } else { s.tls_name.clone() };
    let server_name = rustls_pki_types::ServerName::try_from(name.clone())
        .map_err(|_| format!("tls_name: {name} is not a host name"))?;
    Ok(Some(crate::replica::ReplicaConfig {
        provider,
        host,
        port,
        implicit_tls,
        starttls: s.starttls,
        server_name,
        tls,
        bind_dn: s.bind_dn.trim().to_string(),
        password,
        bases: if s.base.trim().is_empty() { Vec::new() } else { vec![s.base.trim().to_string()] },
        domains: s.domains.clone(),
        retry_max: std::time::Duration::from_secs(s.retry_max_secs.max(1)),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::LdapSection>(<super::LdapSection as agora_service::Section>::HELP)
                .is_empty()
        );
        assert!(
            agora_service::undocumented::<super::ReplicationSection>(
                <super::ReplicationSection as agora_service::Section>::HELP
            )
            .is_empty()
        );
    }
}
