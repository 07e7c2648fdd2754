//! `agora serve` and `agora ports`: first-run setup, binding every listener before any
//! starts, the service table, signals (SIGHUP reloads TLS; SIGTERM/SIGINT drain and exit).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_directory::throttle::Throttle;
use agora_directory::{Directory, generate_password, normalize_domain};
use agora_mail::{Mail, MailConfig};
use agora_net::{Limits, ListenerSpec, Server, TlsSettings};
use agora_service::{Context as ServiceContext, SharedLimits};
use agora_store::ClusterStore;
use agora_store::sql::SqlStore;
use agora_store::{Role, Store};
use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, EffectiveListener, Loaded};
use crate::{Cli, ListenArgs};

pub(crate) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(|| cli.data.join("agora.toml"))
}

pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn print_table(listeners: &[EffectiveListener], status: impl Fn(&EffectiveListener) -> &'static str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<12} {:<28} {:<9} {:<34} STATUS", "SERVICE", "ADDRESS", "TLS", "ROLE");
    for l in listeners {
        // One row per address: IPv4 and IPv6 each show.
        for (i, a) in l.addresses.iter().enumerate() {
            let mut addr = std::net::SocketAddr::new(*a, l.port).to_string();
            if l.port_last > l.port {
                addr = format!("{addr}-{}", l.port_last);
            }
            let role = if l.datagram { format!("{} (UDP and TCP)", l.role) } else { l.role.to_string() };
            let (key, role) = if i == 0 { (l.key, role.as_str()) } else { ("", "") };
            let _ = writeln!(out, "{key:<12} {addr:<28} {:<9} {role:<34} {}", l.tls.as_str(), status(l));
        }
    }
    let _ = out.flush();
}

pub(crate) fn effective(cli: &Cli, listen: &ListenArgs) -> Result<(Loaded, Vec<EffectiveListener>)> {
    let path = config_path(cli);
    let loaded = config::load_or_default(&path)?;
    let offset = listen.port_offset.or(loaded.config.server.port_offset).unwrap_or(0);
    let listeners = loaded.listeners(offset, &listen.bind)?;
    Ok((loaded, listeners))
}

/// The zone input of a hosted domain as the running server would build it.
pub(crate) async fn zone_input(
    cli: &Cli,
    store: &Arc<SqlStore>,
    domain: &str,
    hostname: Option<String>,
    listen: &ListenArgs,
) -> Result<agora_mail::zone::ZoneInput> {
    use agora_store::DirectoryStore;
    let (loaded, listeners) = effective(cli, listen)?;
    let dns = dns_section(cli)?;
    if store.domain(domain).await?.is_none() {
        bail!("{domain} is not a hosted domain");
    }
    let settings = agora_mail::zone::ZoneSettings {
        hostname: hostname.or(loaded.config.server.hostname.clone()).unwrap_or_else(system_hostname),
        addresses: dns.addresses.clone(),
        nameservers: dns.nameservers.clone(),
        listeners: listeners.iter().filter(|l| l.built && l.enabled).map(|l| (l.key.to_string(), l.port)).collect(),
        dmarc_policy: dns.dmarc_policy.clone(),
        ttl: dns.ttl,
    };
    let serial = agora_store::now().clamp(1, i64::from(u32::MAX)) as u32;
    Ok(agora_mail::zone::ZoneInput::read(store, domain, &settings, serial).await?)
}

/// The `[dns]` section of the configuration file (its defaults when there is none).
/// This server in its routing organisation, from `[routing]`: its node name (default:
/// `hostname`) and the shared secret; None when no secret file is set.
pub(crate) fn routing_identity(cli: &Cli, hostname: &str) -> Result<(String, Option<agora_mail::routing::Identity>)> {
    let text = std::fs::read_to_string(config_path(cli)).unwrap_or_default();
    let s: agora_routing::service::RoutingSection = agora_service::section(&text, "routing")
        .map_err(|e| anyhow::anyhow!("{}: [routing] {e}", config_path(cli).display()))?;
    let node = if s.node.is_empty() { hostname.to_string() } else { s.node.clone() };
    if !agora_mail::routing::valid_name(&node) {
        bail!("[routing] node {node:?}: letters, digits, '.', '-' and '_' only");
    }
    if s.secret_file.is_empty() {
        return Ok((node, None));
    }
    let path = resolve(&cli.data, &s.secret_file);
    let secret = std::fs::read_to_string(&path).with_context(|| format!("[routing] secret_file {}", path.display()))?;
    let secret = secret.trim().as_bytes().to_vec();
    // Proofs can be tested offline against guesses: the secret must be a random one
    // (`openssl rand -hex 32`), not a phrase.
    if secret.len() < 32 {
        bail!(
            "[routing] secret_file {}: at least 32 characters (make one with `openssl rand -hex 32`)",
            path.display()
        );
    }
    let interval = Duration::from_secs(s.sync_interval_secs.max(1));
    Ok((node.clone(), Some(agora_mail::routing::Identity { node, secret: Arc::new(secret), interval })))
}

pub(crate) fn dns_section(cli: &Cli) -> Result<agora_dns::service::DnsSection> {
    let text = std::fs::read_to_string(config_path(cli)).unwrap_or_default();
    agora_service::section(&text, "dns").map_err(|e| anyhow::anyhow!("{}: [dns] {e}", config_path(cli).display()))
}

/// The system's resolvers (`nameserver` lines of /etc/resolv.conf).
fn system_resolvers() -> Vec<std::net::SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .collect()
}

/// The resolvers to ask about published records: those given, else the configured
type Bound = (Vec<(ListenerSpec, tokio::net::TcpListener)>, Vec<(ListenerSpec, std::net::UdpSocket)>);

/// Binds one listener's addresses on `port` (all or none).
fn bind_listener(l: &crate::config::EffectiveListener, port: u16) -> Result<Bound, agora_net::BindError> {
    let (mut streams, mut datagrams) = (Vec::new(), Vec::new());
    for &addr in &l.addresses {
        let spec = ListenerSpec {
            service: l.key.to_string(),
            addr: std::net::SocketAddr::new(addr, port),
            tls: l.tls,
            proxy_protocol: l.proxy_protocol,
            timeouts: l.timeouts,
            admission: l.admission,
        };
        match agora_net::bind(&spec) {
            Ok(listener) => {
                if l.datagram {
                    datagrams.push((spec.clone(), agora_net::bind_datagram(&spec)?));
                }
                streams.push((spec, listener))
            }
            // The default includes IPv6; a machine without it serves IPv4 alone.
            Err(e) if addr.is_ipv6() && addr.is_unspecified() && e.family_unsupported() => {
                tracing::warn!("{}: no IPv6 on this machine; IPv4 only", l.key);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((streams, datagrams))
}

/// `[transport] nameservers`, else the system's.
pub(crate) fn resolvers_for<S: AsRef<str>>(
    cli: &Cli,
    given: impl IntoIterator<Item = S>,
) -> Result<Vec<std::net::SocketAddr>> {
    let mut resolvers: Vec<std::net::SocketAddr> = given
        .into_iter()
        .map(|r| {
            let r = r.as_ref();
            agora_dns::transfer::parse_secondary(r)
                .map_err(|_| anyhow::anyhow!("resolver {r:?}: say an address or address:port"))
        })
        .collect::<Result<_>>()?;
    if resolvers.is_empty() {
        let cfg = crate::config::load_or_default(&config_path(cli))?;
        resolvers = cfg.config.transport.nameservers.clone();
    }
    if resolvers.is_empty() {
        resolvers = system_resolvers();
    }
    Ok(resolvers)
}

/// A zone's DNSSEC keys, made first (with the configured algorithm) if the server has
/// not signed it yet.
async fn dnssec_keys(cli: &Cli, store: &Arc<SqlStore>, domain: &str) -> Result<Vec<agora_dns::dnssec::Key>> {
    use agora_store::DirectoryStore;
    if store.domain(domain).await?.is_none() {
        bail!("{domain} is not a hosted domain");
    }
    let dns = dns_section(cli)?;
    if !dns.dnssec {
        bail!("DNSSEC is off ([dns] dnssec = false)");
    }
    let mut keys = store.dnssec_keys(domain).await?;
    if keys.is_empty() {
        let alg = agora_dns::dnssec::algorithm_number(&dns.dnssec_algorithm).map_err(anyhow::Error::msg)?;
        let plan =
            agora_dns::dnssec::rollover(domain, &[], alg, 0, 0, agora_store::now()).map_err(anyhow::Error::msg)?;
        for k in plan.create {
            store.add_dnssec_key(k).await?;
        }
        keys = store.dnssec_keys(domain).await?;
    }
    keys.iter().map(|k| agora_dns::dnssec::Key::load(k).map_err(anyhow::Error::msg)).collect()
}

/// `agora dns show|record|ds|key`: the zones this server publishes, their extra records and keys.
pub async fn dns(cli: &Cli, cmd: &crate::DnsCmd) -> Result<()> {
    use crate::{DnsCmd, KeyCmd, RecordCmd};
    use agora_store::DirectoryStore;
    let (store, _dir) = crate::admin::open_store(cli).await?;
    let result = async {
        match cmd {
            DnsCmd::Show { domain, hostname, listen } => {
                let domain = normalize_domain(domain)?;
                let input = zone_input(cli, &store, &domain, hostname.clone(), listen).await?;
                print!("{}", agora_mail::zone::zone_file(&domain, &agora_mail::zone::build(&input)));
            }
            DnsCmd::Record(RecordCmd::Add { domain, name, rtype, value, ttl, hostname, listen }) => {
                let domain = normalize_domain(domain)?;
                let rec =
                    agora_mail::zone::parse_extra(&domain, name, rtype, value, *ttl).map_err(anyhow::Error::msg)?;
                let mut input = zone_input(cli, &store, &domain, hostname.clone(), listen).await?;
                input.extra.push(rec.clone());
                agora_mail::zone::check(&domain, &agora_mail::zone::build(&input)).map_err(anyhow::Error::msg)?;
                store
                    .add_dns_record(agora_store::DnsRecord {
                        domain: domain.clone(),
                        name: rec.name.clone(),
                        rtype: rec.data.type_name().to_string(),
                        value: value.trim().to_string(),
                        ttl: *ttl,
                    })
                    .await?;
                println!("{} {} {} added to {domain}", rec.name, rec.data.type_name(), value.trim());
            }
            DnsCmd::Record(RecordCmd::Remove { domain, name, rtype, value }) => {
                let domain = normalize_domain(domain)?;
                let owner = agora_mail::zone::owner(&domain, name).map_err(anyhow::Error::msg)?;
                let n = store.remove_dns_records(&domain, &owner, rtype, value.as_deref()).await?;
                println!("{n} record(s) removed from {domain}");
            }
            DnsCmd::Record(RecordCmd::List { domain }) => {
                let domain = normalize_domain(domain)?;
                for r in store.dns_records(&domain).await? {
                    println!("{}.\t{}\tIN\t{}\t{}", r.name, r.ttl, r.rtype, r.value);
                }
            }
            DnsCmd::Check { domain, resolver, hostname, listen } => {
                let domain = normalize_domain(domain)?;
                let input = zone_input(cli, &store, &domain, hostname.clone(), listen).await?;
                let records = agora_mail::zone::build(&input);
                let resolvers = resolvers_for(cli, resolver)?;
                if resolvers.is_empty() {
                    bail!("no resolver to ask: give --resolver");
                }
                let mut differ = 0;
                for r in &resolvers {
                    println!("; what {r} sees of {domain}");
                    for f in agora_dns::check::check(&records, *r).await {
                        let show = |v: &[String]| if v.is_empty() { "nothing".to_string() } else { v.join(" | ") };
                        match &f.seen {
                            _ if f.matches() => println!("ok       {} {}", f.name, f.rtype),
                            Ok(seen) => {
                                differ += 1;
                                println!(
                                    "DIFFERS  {} {}: publish {}; it sees {}",
                                    f.name,
                                    f.rtype,
                                    show(&f.expected),
                                    show(seen)
                                );
                            }
                            Err(e) => {
                                differ += 1;
                                println!("UNKNOWN  {} {}: {e}", f.name, f.rtype);
                            }
                        }
                    }
                }
                if differ > 0 {
                    bail!("{differ} record set(s) differ from what Agora publishes for {domain}");
                }
            }
            DnsCmd::Ds { domain } => {
                let domain = normalize_domain(domain)?;
                let keys = dnssec_keys(cli, &store, &domain).await?;
                let apex = agora_dns::hickory_name(&domain).map_err(anyhow::Error::msg)?;
                println!("; DS records for the parent zone of {domain} (give it one of these; SHA-256)");
                for k in keys.iter().filter(|k| k.stored.ksk && k.stored.state == agora_store::DnssecKeyState::Active) {
                    let ds = k.ds(&apex, agora_dns::dnssec::DigestType::SHA256).map_err(anyhow::Error::msg)?;
                    println!("{domain}. IN DS {ds}");
                }
                println!("; the same keys as DNSKEY, for registries that take those");
                for k in keys.iter().filter(|k| k.stored.ksk && k.stored.state == agora_store::DnssecKeyState::Active) {
                    println!("{domain}. IN DNSKEY {}", k.dnskey);
                }
            }
            DnsCmd::Key(KeyCmd::List { domain }) => {
                let domain = normalize_domain(domain)?;
                println!("{:<7} {:<5} {:<16} {:<10} since", "tag", "role", "algorithm", "state");
                for k in dnssec_keys(cli, &store, &domain).await? {
                    println!(
                        "{:<7} {:<5} {:<16} {:<10} {}",
                        k.tag,
                        if k.stored.ksk { "KSK" } else { "ZSK" },
                        agora_dns::dnssec::algorithm_name(k.stored.algorithm),
                        k.stored.state.as_str(),
                        agora_store::time::rfc3339(k.stored.since)
                    );
                }
            }
            DnsCmd::Key(KeyCmd::Rotate { domain, ksk }) => {
                let domain = normalize_domain(domain)?;
                dnssec_keys(cli, &store, &domain).await?;
                let keys = store.dnssec_keys(&domain).await?;
                let new =
                    agora_dns::dnssec::rotate(&domain, &keys, *ksk, agora_store::now()).map_err(anyhow::Error::msg)?;
                let tag = agora_dns::dnssec::Key::load(&new).map_err(anyhow::Error::msg)?.tag;
                store.add_dnssec_key(new).await?;
                if *ksk {
                    println!(
                        "new key-signing key {tag} signs from now on beside the old one: give the parent its DS \
                         (`agora dns ds {domain}`), then `agora dns key retire {domain} OLD-TAG`"
                    );
                } else {
                    println!(
                        "new zone-signing key {tag} published; it signs after two TTLs and the old one then retires"
                    );
                }
            }
            DnsCmd::Key(KeyCmd::Retire { domain, tag }) => {
                let domain = normalize_domain(domain)?;
                let keys = dnssec_keys(cli, &store, &domain).await?;
                let k = keys
                    .iter()
                    .find(|k| k.tag == *tag && k.stored.state != agora_store::DnssecKeyState::Retired)
                    .with_context(|| format!("{domain} has no key {tag} in use"))?;
                let same = |o: &&agora_dns::dnssec::Key| {
                    o.stored.ksk == k.stored.ksk
                        && o.stored.state == agora_store::DnssecKeyState::Active
                        && o.tag != *tag
                };
                if !keys.iter().any(|o| same(&o)) {
                    bail!(
                        "key {tag} is the only active {} of {domain}: rotate first",
                        if k.stored.ksk { "KSK" } else { "ZSK" }
                    );
                }
                store.set_dnssec_key_state(k.stored.id, Some(agora_store::DnssecKeyState::Retired)).await?;
                println!("key {tag} of {domain} retired: it stays published two TTLs, then goes");
            }
        }
        Ok(())
    }
    .await;
    store.close();
    result
}

pub fn ports(cli: &Cli, listen: &ListenArgs) -> Result<()> {
    let (_, listeners) = effective(cli, listen)?;
    print_table(&listeners, |l| match (l.built, l.enabled) {
        (false, _) => "not available yet",
        (true, true) => "enabled",
        (true, false) => "disabled",
    });
    Ok(())
}

/// `agora cert status`: the configured (or self-signed) pair, then what ACME manages.
pub fn cert_status(cli: &Cli) -> Result<()> {
    let loaded = config::load_or_default(&config_path(cli))?;
    let tls = &loaded.config.tls;
    let day = |t: i64| agora_store::time::rfc3339(t).chars().take(10).collect::<String>();
    println!("{:<44} {:<36} {:<11} RENEWAL", "NAMES", "ISSUER", "EXPIRES");
    let cert = tls.cert.as_deref().map_or_else(|| cli.data.join("tls/cert.pem"), |c| resolve(&cli.data, c));
    match std::fs::read(&cert).ok().and_then(|pem| {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
        agora_net::tls::CertInfo::of(&der)
    }) {
        Some(info) => println!(
            "{:<44} {:<36} {:<11} {}",
            info.names.join(","),
            info.issuer,
            day(info.not_after),
            if tls.acme.is_some() {
                "(configured pair; ACME serves the host name)"
            } else {
                "manual (configured pair)"
            }
        ),
        None => println!("{:<44} (not readable)", cert.display()),
    }
    let Some(acme) = &tls.acme else {
        println!("ACME is off ([tls] acme)");
        return Ok(());
    };
    let lines = agora_http::acme::status(&cli.data, acme.renew_before_days);
    if lines.is_empty() {
        println!("ACME ({}): nothing obtained or tried yet", acme.directory);
    }
    for l in lines {
        println!(
            "{:<44} {:<36} {:<11} {}",
            l.names.join(","),
            if l.issuer.is_empty() { "-" } else { &l.issuer },
            l.not_after.map_or("-".to_string(), day),
            l.next_renewal.map_or("-".to_string(), agora_store::time::rfc3339)
        );
        if let Some(e) = &l.last_error {
            println!("    {} failed attempt(s); last: {e}", l.failures);
        }
    }
    Ok(())
}

/// A host name without a dot ("vm") is no mail domain: never taken as one silently.
fn dotted(host: &str, config: Option<&Path>) -> Result<()> {
    if host.contains('.') {
        return Ok(());
    }
    let or_config = config.map(|c| format!(" (or domain = \"example.org\" under [server] in {})", c.display()));
    bail!(
        "the host name {host:?} has no dot, so it cannot be the mail domain: say which domain to host, e.g. `agora serve --domain example.org --hostname mail.example.org`{}",
        or_config.unwrap_or_default()
    )
}

/// Every session is an open file: the soft limit goes up to the hard one (a service
/// manager that forbids it, as the unit does after setting its own, is no error).
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    if limit.current.is_some_and(|c| c < want) {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: limit.maximum });
    }
}

/// `--node` and `--role` of `agora serve`.
#[derive(Debug, Clone, Default)]
pub struct NodeArgs {
    pub name: Option<String>,
    pub role: Option<String>,
}

/// This node as it registers itself: name, role and the address others reach it at.
fn node_info(
    args: &NodeArgs,
    cfg: &config::ClusterSection,
    hostname: &str,
    listeners: &[config::EffectiveListener],
) -> Result<agora_store::NodeInfo> {
    let role = args.role.clone().or(cfg.role.clone()).unwrap_or_else(|| "single".into());
    if !config::ROLES.contains(&role.as_str()) {
        bail!("unknown role {role}: one of {}", config::ROLES.join(", "));
    }
    let bound = listeners.iter().flat_map(|l| l.addresses.iter()).find(|a| !a.is_unspecified());
    let address = cfg.address.clone().or(bound.map(|a| a.to_string())).unwrap_or_else(|| hostname.to_string());
    Ok(agora_store::NodeInfo {
        name: args.name.clone().or(cfg.node.clone()).unwrap_or_else(|| hostname.to_string()),
        address,
        role,
        started: agora_store::now(),
        heartbeat: 0,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tls_pin: String::new(),
    })
}

/// The keys this node's TLS certificates have (SHA-256 of each SPKI, hex, comma-separated):
/// front-ends check the back-end they reach against them.
fn tls_pins(tls: &agora_net::tls::TlsSettings) -> String {
    tls.dane_keys().iter().map(|k| agora_store::blob::hex(k)).collect::<Vec<_>>().join(",")
}

/// Says every few seconds that this node lives: its registration, and the queue
/// claims and leases it holds, stay fresh for `HEARTBEAT_TTL`.
/// The cluster's front-ends name their clients in a PROXY header on every listener of
/// a back-end: which addresses they are, from the store every two seconds (a new
/// front-end is trusted that soon after it registers).
async fn trust_front_ends(store: Arc<SqlStore>, server: Arc<Server>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.nodes().await {
            Ok(nodes) => server.set_trusted_proxies(
                nodes.iter().filter(|n| n.role == "front-end").filter_map(|n| n.address.parse().ok()),
            ),
            Err(e) => tracing::warn!("reading the nodes: {e}"),
        }
    }
}

async fn heartbeat(store: Arc<SqlStore>, mut node: agora_store::NodeInfo, tls: Arc<agora_net::tls::TlsSettings>) {
    let every = Duration::from_secs((agora_store::HEARTBEAT_TTL / 3).max(1) as u64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.tls_pin = tls_pins(&tls);
        if let Err(e) = store.heartbeat(node.clone()).await {
            tracing::warn!("node {}: heartbeat: {e}", node.name);
        }
    }
}

pub async fn run(
    cli: &Cli,
    domain: Option<String>,
    hostname: Option<String>,
    node: NodeArgs,
    listen: ListenArgs,
) -> Result<()> {
    raise_open_files();
    let data = &cli.data;
    if !data.exists() {
        std::fs::create_dir_all(data).with_context(|| format!("creating data directory {}", data.display()))?;
        // The store holds password hashes and mail: owner only.
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing {}", data.display()))?;
    }
    let path = config_path(cli);
    if !path.exists() {
        if cli.config.is_some() {
            bail!("configuration file {} does not exist", path.display());
        }
        let host = hostname.clone().unwrap_or_else(system_hostname);
        if domain.is_none() {
            dotted(&host, None)?;
        }
        let dom = domain.clone().unwrap_or_else(|| host.clone());
        std::fs::write(&path, config::default_file(&host, &dom))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("agora: wrote default configuration to {}", path.display());
    }
    let (loaded, listeners) = effective(cli, &listen)?;
    let cfg = &loaded.config;
    let hostname = hostname.or(cfg.server.hostname.clone()).unwrap_or_else(system_hostname);
    let named = domain.or(cfg.server.domain.clone());
    if named.is_none() && !data.join("agora.db").exists() {
        dotted(&hostname, Some(&path))?;
    }
    let domain = normalize_domain(&named.unwrap_or_else(|| hostname.clone()))?;
    let node = node_info(&node, &cfg.cluster, &hostname, &listeners)?;
    let front_end = node.role == "front-end";
    let shared = crate::admin::store_url(cli)?.is_some_and(|(u, _)| agora_store::sql::is_postgres_url(&u));
    if node.role != "single" && !shared {
        bail!(
            "a {} shares its store with other nodes: set [store] url (or --store) to the PostgreSQL database",
            node.role
        );
    }
    if shared && node.address.parse::<std::net::IpAddr>().is_err() {
        bail!(
            "the other nodes reach and trust this one by its address, and {} is not one: set [cluster] address, or --bind an address",
            node.address
        );
    }
    let mut listeners = listeners;
    if front_end {
        // A front-end takes only what it passes on to the back-ends, and keeps its
        // administration listener (health and metrics for supervisors).
        for l in listeners.iter_mut().filter(|l| l.key != "admin" && !agora_proxy::ROUTES.iter().any(|r| r.0 == l.key))
        {
            l.enabled = false;
        }
    }

    if !agora_service::metrics::install() {
        tracing::warn!("metrics: another recorder is installed; /metrics stays empty");
    }

    // TLS: a configured pair must load; with none configured, a self-signed pair is made.
    let (cert, key) = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => (resolve(data, c), resolve(data, k)),
        (None, None) => {
            let (c, k) = (data.join("tls/cert.pem"), data.join("tls/key.pem"));
            if agora_net::tls::ensure_self_signed(&c, &k, std::slice::from_ref(&hostname))? {
                eprintln!("agora: created a self-signed certificate for {hostname} in {}", data.join("tls").display());
            }
            (c, k)
        }
        _ => bail!("{}: [tls] needs both cert and key, or neither", path.display()),
    };
    let client_ca = cfg.tls.client_ca.as_deref().map(|c| resolve(data, c));
    let tls = Arc::new(TlsSettings::load_with_client_ca(&cert, &key, client_ca.as_deref())?);

    // Bind everything first: a port that cannot be had stops the start, nothing half-up.
    // A listener with a range of ports takes the first one free on all its addresses.
    let mut bound = Vec::new();
    let mut bound_datagram = Vec::new();
    for l in listeners.iter_mut().filter(|l| l.built && l.enabled) {
        let mut port = l.port;
        loop {
            match bind_listener(l, port) {
                Ok((mut streams, mut datagrams)) => {
                    bound.append(&mut streams);
                    bound_datagram.append(&mut datagrams);
                    (l.port, l.port_last) = (port, port);
                    break;
                }
                Err(e) if port < l.port_last && e.cause.kind() == std::io::ErrorKind::AddrInUse => port += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    let store = match crate::admin::open_configured(cli).await? {
        Some(store) => store,
        None => SqlStore::open(data).with_context(|| format!("opening the store in {}", data.display()))?,
    };
    let dyn_store: Arc<dyn Store> = Arc::new(Arc::clone(&store));
    let dir = Directory::new(Arc::clone(&dyn_store));
    let first = first_run(&dyn_store, &dir, &domain).await?;
    // Every hosted domain signs its mail: keys for any that has none yet.
    for d in dyn_store.domains().await? {
        crate::admin::ensure_dkim_keys(&store, &d.name).await?;
    }

    let limits = Limits {
        max_connections: cfg.limits.max_connections.max(1),
        max_per_ip: cfg.limits.max_connections_per_ip.max(1),
        max_per_network: cfg.limits.max_connections_per_network.max(1),
        network_v4: cfg.limits.network_prefix_v4.min(32),
        network_v6: cfg.limits.network_prefix_v6.min(128),
        drain: Duration::from_secs(cfg.limits.shutdown_drain_secs),
    };
    let server = Server::new(limits, Some(Arc::clone(&tls)));
    let mail = Arc::new(Mail::new(
        MailConfig {
            hostname: hostname.clone(),
            checks: true,
            tracking_log: Some(data.join("tracking.log")),
            tracking: cfg.tracking.clone(),
            transport: cfg.transport.clone(),
            sieve_global: Some(data.join("sieve")),
            routing: routing_identity(cli, &hostname)?.1,
        },
        Arc::clone(&dyn_store),
        dir.clone(),
    ));
    // What DNS publishes for each domain, and a way to ask resolvers whether they agree
    // (the admin console shows both).
    let dns = dns_section(cli)?;
    let zone = agora_mail::zone::ZoneSettings {
        hostname: hostname.clone(),
        addresses: dns.addresses.clone(),
        nameservers: dns.nameservers.clone(),
        listeners: listeners.iter().filter(|l| l.built && l.enabled).map(|l| (l.key.to_string(), l.port)).collect(),
        dmarc_policy: dns.dmarc_policy.clone(),
        ttl: dns.ttl,
    };
    let resolvers =
        if cfg.transport.nameservers.is_empty() { system_resolvers() } else { cfg.transport.nameservers.clone() };
    let dns_check: agora_mail::zone::Checker = Arc::new(move |records| {
        let resolver = resolvers.first().copied();
        Box::pin(async move {
            match resolver {
                Some(r) => agora_dns::check::check(&records, r).await,
                None => Vec::new(),
            }
        })
    });
    let ctx = ServiceContext {
        store: Arc::clone(&dyn_store),
        dir: dir.clone(),
        throttle: Arc::new(Throttle::new()),
        tls: Some(Arc::clone(&tls)),
        hostname: hostname.clone(),
        domain: domain.clone(),
        data_dir: data.clone(),
        mail,
        limits: SharedLimits {
            max_message_size: cfg.limits.max_message_size,
            max_message_memory: cfg.limits.max_message_memory,
            max_recipients: cfg.limits.max_recipients,
            max_sessions_per_user: cfg.limits.max_sessions_per_user,
            plaintext_without_tls: cfg.auth.plaintext_without_tls,
        },
        listening: listeners.iter().filter(|l| l.built && l.enabled).map(|l| (l.key.to_string(), l.port)).collect(),
        bound: listeners
            .iter()
            .filter(|l| l.built && l.enabled)
            .map(|l| (l.key.to_string(), l.addresses.iter().copied().filter(|a| !a.is_unspecified()).collect()))
            .collect(),
        shutdown: server.shutdown_token(),
        zone: Some(zone),
        dns_check: Some(dns_check),
        acme: cfg.tls.acme.clone().map(|mut a| {
            a.ca = a.ca.map(|c| if c.is_relative() { data.join(c) } else { c });
            a
        }),
    };
    // Every registered service is built, even with its listeners off: its background
    // work (the outbound queue) serves the others.
    let mut handlers = std::collections::HashMap::new();
    let mut datagram_handlers = std::collections::HashMap::new();
    let mut tasks = Vec::new();
    if front_end {
        // No service of its own runs here (no mail is kept, no queue delivered): each
        // session goes to a back-end.
        let settings = agora_proxy::Settings {
            hostname: hostname.clone(),
            source: node.address.parse().ok(),
            ports: listeners.iter().map(|l| (l.key.to_string(), l.port)).collect(),
            plaintext_without_tls: cfg.auth.plaintext_without_tls,
        };
        handlers.extend(agora_proxy::build(Arc::clone(&dyn_store), dir.clone(), Arc::clone(&ctx.throttle), settings));
        // Of the services, only the administration listener's answers (its tasks stay off).
        for (reg, conf) in loaded.services.into_iter().filter(|(reg, _)| reg.name() == "http") {
            let built = conf.build(&ctx).map_err(|e| anyhow::anyhow!("{}: [{}] {e}", path.display(), reg.name()))?;
            handlers.extend(built.handlers.into_iter().filter(|(key, _)| *key == "admin"));
        }
    } else {
        for (reg, conf) in loaded.services {
            let built = conf.build(&ctx).map_err(|e| anyhow::anyhow!("{}: [{}] {e}", path.display(), reg.name()))?;
            handlers.extend(built.handlers);
            datagram_handlers.extend(built.datagram);
            tasks.extend(built.tasks.into_iter().map(tokio::spawn));
        }
    }
    for (spec, socket) in bound_datagram {
        let Some(h) = datagram_handlers.get(spec.service.as_str()) else {
            bail!("internal: service for listener {} built no datagram handler", spec.service);
        };
        server.spawn_datagram(socket, spec, Arc::clone(h));
    }
    for (spec, listener) in bound {
        let Some(h) = handlers.get(spec.service.as_str()) else {
            bail!("internal: service for listener {} built no handler", spec.service);
        };
        server.spawn_listener(listener, spec, Arc::clone(h));
    }

    println!("Agora {} on {hostname}; data in {}; mail domain {domain}", env!("CARGO_PKG_VERSION"), data.display());
    print_table(&listeners, |l| match (l.built, l.enabled) {
        (false, _) => "not available yet",
        (true, true) => "listening",
        (true, false) => "disabled",
    });
    // Handlers before "ready": a supervisor may signal the moment it reads that line.
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    if first {
        let smtp = listeners.iter().find(|l| l.key == "smtp" && l.enabled).map_or(25, |l| l.port);
        let data_arg = if cli.data == std::path::Path::new("./agora-data") {
            String::new()
        } else {
            format!(" --data {}", cli.data.display())
        };
        println!("Next steps:");
        println!("  1. add a user:       agora{data_arg} user add alice@{domain} --name \"Alice\" --password-stdin");
        println!("  2. the configuration: {} (every setting, commented; restart after changes)", path.display());
        println!(
            "  3. a test message:   swaks --server {hostname}:{smtp} --from you@example.net --to alice@{domain} (or any mail client)"
        );
    }
    let mut node = node;
    node.tls_pin = tls_pins(&tls);
    store.heartbeat(node.clone()).await.context("registering this node in the store")?;
    let beating = tokio::spawn(heartbeat(Arc::clone(&store), node.clone(), Arc::clone(&tls)));
    let trusting = (store.is_shared() && !front_end)
        .then(|| tokio::spawn(trust_front_ends(Arc::clone(&store), Arc::clone(&server))));
    println!("agora: ready");
    let _ = std::io::stdout().flush();
    // Under systemd (Type=notify): ready only now, with every listener bound and serving.
    let manager = crate::systemd::Notifier::from_env().map(Arc::new);
    let sockets = listeners.iter().filter(|l| l.built && l.enabled).map(|l| l.addresses.len()).sum::<usize>();
    let status = format!("STATUS=serving {domain} on {sockets} listening socket(s)");
    if let Some(m) = &manager {
        m.notify(&format!("READY=1\nMAINPID={}\n{status}", std::process::id()));
    }
    if let (Some(m), Some(every)) = (&manager, crate::systemd::watchdog_interval()) {
        tokio::spawn(watchdog(Arc::clone(m), Arc::clone(&store), every));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Some(m) = &manager {
                    m.notify("RELOADING=1");
                }
                match tls.reload() {
                    Ok(()) => tracing::info!("reloaded TLS certificate {} and key {}", cert.display(), key.display()),
                    Err(e) => tracing::error!("TLS reload failed, keeping the old certificate: {e}"),
                }
                if let Some(m) = &manager {
                    m.notify(&format!("READY=1\n{status}"));
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some(m) = &manager {
        m.notify("STOPPING=1\nSTATUS=draining sessions");
    }
    tracing::info!("shutting down: no new connections; draining sessions");
    if !server.shutdown().await {
        tracing::warn!("some sessions did not finish within the drain deadline");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), futures_join(tasks)).await;
    beating.abort();
    if let Some(t) = trusting {
        t.abort();
    }
    store.flush().await.context("flushing the store")?;
    store.close();
    tracing::info!("stopped");
    Ok(())
}

/// Tells the service manager the server is alive, four times a watchdog interval, but
/// only while the store still commits: a stuck writer stops the pings and systemd
/// restarts us. A commit may wait half an interval (another process's long write, such
/// as a repair), so a ping is late at most three quarters of one.
async fn watchdog(manager: Arc<crate::systemd::Notifier>, store: Arc<SqlStore>, every: Duration) {
    let mut tick = tokio::time::interval(every / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every / 2, store.flush()).await {
            Ok(Ok(())) => manager.notify("WATCHDOG=1"),
            Ok(Err(e)) => tracing::error!("watchdog: the store does not commit: {e}"),
            Err(_) => tracing::error!("watchdog: the store did not commit within {:?}", every / 2),
        }
    }
}

/// Waits for every background task.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// On an empty store: the mail domain, an administrator with a generated password
/// (printed once), and postmaster@ pointing at it.
/// Creates the domain and its administrator when the store hosts no domain yet; true
/// when it did (the server then prints the next steps).
async fn first_run(store: &Arc<dyn Store>, dir: &Directory, domain: &str) -> Result<bool> {
    if !store.domains().await?.is_empty() {
        if store.domain(domain).await?.is_none() {
            dir.add_domain(domain).await?;
            eprintln!("agora: added mail domain {domain}");
        }
        return Ok(false);
    }
    dir.add_domain(domain).await?;
    let login = format!("admin@{domain}");
    let password = generate_password()?;
    dir.add_user(&login, "Administrator", &password, 0, Role::Admin).await?;
    dir.add_alias(&format!("postmaster@{domain}"), &login).await?;
    println!("First run: created mail domain {domain} and administrator {login}");
    println!("  administrator password (shown only this once): {password}");
    println!("  change it with: agora user passwd {login}");
    Ok(true)
}
