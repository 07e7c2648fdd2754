//! `agora serve` and `agora ports`: first-run setup, binding every listener before any
//! starts, the service table, signals (SIGHUP reloads TLS; SIGTERM/SIGINT drain and exit).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_directory::throttle::Throttle;
use agora_directory::{Directory, generate_password, normalize_domain};
use agora_net::{Limits, ListenerSpec, Server, Timeouts, TlsSettings};
use agora_pop3::{Pop3Config, Pop3Service};
use agora_smtp::{SmtpConfig, SmtpService};
use agora_store::sqlite::SqliteStore;
use agora_store::{Role, Store};
use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, Config, EffectiveListener};
use crate::{Cli, ListenArgs};

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(|| cli.data.join("agora.toml"))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn print_table(listeners: &[EffectiveListener], status: impl Fn(&EffectiveListener) -> &'static str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<12} {:<22} {:<9} {:<28} STATUS", "SERVICE", "ADDRESS", "TLS", "ROLE");
    for l in listeners {
        let tls = match l.tls {
            config::TlsModeSetting::None => "none",
            config::TlsModeSetting::Starttls => "starttls",
            config::TlsModeSetting::Implicit => "implicit",
        };
        let addr = std::net::SocketAddr::new(l.address, l.port).to_string();
        let _ = writeln!(out, "{:<12} {:<22} {:<9} {:<28} {}", l.def.key, addr, tls, l.def.what, status(l));
    }
    let _ = out.flush();
}

fn effective(cli: &Cli, listen: &ListenArgs) -> Result<(Config, Vec<EffectiveListener>)> {
    let path = config_path(cli);
    let cfg = config::load_or_default(&path)?;
    let offset = listen.port_offset.or(cfg.server.port_offset).unwrap_or(0);
    let listeners = cfg.listeners(offset, listen.bind)?;
    Ok((cfg, listeners))
}

pub fn ports(cli: &Cli, listen: &ListenArgs) -> Result<()> {
    let (_, listeners) = effective(cli, listen)?;
    print_table(&listeners, |l| match (l.def.built, l.enabled) {
        (false, _) => "not available yet",
        (true, true) => "enabled",
        (true, false) => "disabled",
    });
    Ok(())
}

pub async fn run(cli: &Cli, domain: Option<String>, hostname: Option<String>, listen: ListenArgs) -> Result<()> {
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
        let dom = domain.clone().unwrap_or_else(|| host.clone());
        std::fs::write(&path, config::default_file(&host, &dom))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("agora: wrote default configuration to {}", path.display());
    }
    let (cfg, listeners) = effective(cli, &listen)?;
    let hostname = hostname.or(cfg.server.hostname.clone()).unwrap_or_else(system_hostname);
    let domain = normalize_domain(&domain.or(cfg.server.domain.clone()).unwrap_or_else(|| hostname.clone()))?;

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
    let tls = Arc::new(TlsSettings::load(&cert, &key)?);
    // CAs trusted beside the system's when the transport checks other servers.
    let ca_pem = match &cfg.transport.ca_file {
        Some(f) => {
            let f = resolve(data, f);
            Some(std::fs::read(&f).with_context(|| format!("[transport] ca_file {}", f.display()))?)
        }
        None => None,
    };

    // Bind everything first: a port that cannot be had stops the start, nothing half-up.
    let mut bound = Vec::new();
    for l in listeners.iter().filter(|l| l.def.built && l.enabled) {
        let spec = ListenerSpec {
            service: l.def.key.to_string(),
            addr: std::net::SocketAddr::new(l.address, l.port),
            tls: l.tls.net(),
            proxy_protocol: l.proxy_protocol,
        };
        let listener = agora_net::bind(&spec)?;
        bound.push((spec, listener));
    }

    let store = SqliteStore::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    let dyn_store: Arc<dyn Store> = Arc::new(Arc::clone(&store));
    let dir = Directory::new(Arc::clone(&dyn_store));
    first_run(&dyn_store, &dir, &domain).await?;
    // Every hosted domain signs its mail: keys for any that has none yet.
    for d in dyn_store.domains().await? {
        crate::admin::ensure_dkim_keys(&store, &d.name).await?;
    }

    let limits = Limits {
        max_connections: cfg.limits.max_connections.max(1),
        max_per_ip: cfg.limits.max_connections_per_ip.max(1),
        timeouts: Timeouts {
            preauth: Duration::from_secs(cfg.limits.timeout_preauth_secs.max(1)),
            idle: Duration::from_secs(cfg.limits.timeout_idle_secs.max(1)),
        },
        drain: Duration::from_secs(cfg.limits.shutdown_drain_secs),
    };
    let server = Server::new(limits, Some(Arc::clone(&tls)));
    let throttle = Arc::new(Throttle::new());
    // Inbound and submission share the memory budget for message data in flight.
    let memory = agora_smtp::MessageMemory::new(cfg.limits.max_message_memory);
    let tracker = Arc::new(agora_smtp::tracking::Tracker::new(&data.join("tracking.log")));
    let trusted_networks = cfg.smtp.networks().map_err(|e| anyhow::anyhow!("{}: {e}", config_path(cli).display()))?;
    let outbound_wake = Arc::new(tokio::sync::Notify::new());
    let verifier = agora_smtp::auth::Verifier::new(&hostname, &cfg.transport.nameservers, cfg.smtp.dmarc_reject);
    if verifier.is_none() {
        tracing::warn!("no DNS resolver: incoming mail is not checked for SPF, DKIM and DMARC");
    }
    let smtp_cfg = SmtpConfig {
        verifier: verifier.map(Arc::new),
        tracker: Some(Arc::clone(&tracker)),
        outbound_wake: Some(Arc::clone(&outbound_wake)),
        trusted_networks,
        dkim_sign: cfg.smtp.dkim_sign,
        arc_seal: cfg.smtp.arc_seal,
        hostname: hostname.clone(),
        primary_domain: domain.clone(),
        max_message_size: cfg.limits.max_message_size,
        max_recipients: cfg.limits.max_recipients.max(1),
        allow_plaintext: cfg.auth.plaintext_without_tls,
        ..SmtpConfig::default()
    };
    let smtp = Arc::new(SmtpService::new(
        smtp_cfg.clone(),
        dir.clone(),
        Arc::clone(&dyn_store),
        memory.clone(),
        Arc::clone(&throttle),
    ));
    let submission = Arc::new(SmtpService::new(
        SmtpConfig { submission: true, ..smtp_cfg },
        dir.clone(),
        Arc::clone(&dyn_store),
        memory,
        Arc::clone(&throttle),
    ));
    let pop3 = Arc::new(Pop3Service::new(
        Pop3Config {
            allow_plaintext: cfg.auth.plaintext_without_tls,
            mark_seen: cfg.pop3.mark_seen,
            expire_days: cfg.pop3.expire_days,
            ..Pop3Config::default()
        },
        dir.clone(),
        Arc::clone(&dyn_store),
        Arc::clone(&throttle),
    ));
    let imap = Arc::new(agora_imap::ImapService::new(
        agora_imap::ImapConfig {
            allow_plaintext: cfg.auth.plaintext_without_tls,
            max_literal: cfg.limits.max_message_size,
            max_sessions_per_user: cfg.limits.max_sessions_per_user,
            ..agora_imap::ImapConfig::default()
        },
        dir.clone(),
        Arc::clone(&dyn_store),
        Arc::clone(&throttle),
    ));
    for (spec, listener) in bound {
        match spec.service.as_str() {
            "smtp" => server.spawn_listener(listener, spec, smtp.clone()),
            "submission" | "submissions" => server.spawn_listener(listener, spec, submission.clone()),
            "pop3" | "pop3s" => server.spawn_listener(listener, spec, pop3.clone()),
            "imap" | "imaps" => server.spawn_listener(listener, spec, imap.clone()),
            other => bail!("internal: no service wired for listener {other}"),
        }
    }

    println!("Agora {} on {hostname}; data in {}; mail domain {domain}", env!("CARGO_PKG_VERSION"), data.display());
    print_table(&listeners, |l| match (l.def.built, l.enabled) {
        (false, _) => "not available yet",
        (true, true) => "listening",
        (true, false) => "disabled",
    });
    // The outbound transport: delivers what submission and groups queued for remote
    // recipients, until shutdown.
    let t = &cfg.transport;
    let transport = Arc::new(
        agora_smtp::outbound::Transport::new(
            agora_smtp::outbound::TransportConfig {
                hostname: hostname.clone(),
                routes: t.routes.iter().map(|(d, r)| (d.to_ascii_lowercase(), r.clone())).collect(),
                smarthost: t.smarthost.clone(),
                smarthost_auth: t.smarthost_user.clone().zip(t.smarthost_password.clone()),
                nameservers: t.nameservers.clone(),
                mx_port: t.mx_port,
                retry_base: Duration::from_secs(t.retry_secs.max(1)),
                max_lifetime: Duration::from_secs(t.max_lifetime_secs),
                delay_warning: Duration::from_secs(t.delay_warning_secs),
                tracker: Some(Arc::clone(&tracker)),
                poll: Duration::from_secs(t.poll_secs.max(1)),
                wake: outbound_wake,
                mta_sts: t.mta_sts,
                mta_sts_cache: Some(data.join("mta-sts.json")),
                mta_sts_port: t.mta_sts_port,
                ca_pem,
                ..agora_smtp::outbound::TransportConfig::default()
            },
            Arc::clone(&dyn_store),
            dir.clone(),
        )
        .map_err(|e| anyhow::anyhow!("[transport] ca_file: {e}"))?,
    );
    let transport_task = tokio::spawn(Arc::clone(&transport).run(server.shutdown_token()));

    println!("agora: ready");
    let _ = std::io::stdout().flush();

    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => match tls.reload() {
                Ok(()) => tracing::info!("reloaded TLS certificate {} and key {}", cert.display(), key.display()),
                Err(e) => tracing::error!("TLS reload failed, keeping the old certificate: {e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: no new connections; draining sessions");
    if !server.shutdown().await {
        tracing::warn!("some sessions did not finish within the drain deadline");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), transport_task).await;
    store.flush().await.context("flushing the store")?;
    store.close();
    tracing::info!("stopped");
    Ok(())
}

/// On an empty store: the mail domain, an administrator with a generated password
/// (printed once), and postmaster@ pointing at it.
async fn first_run(store: &Arc<dyn Store>, dir: &Directory, domain: &str) -> Result<()> {
    if !store.domains().await?.is_empty() {
        if store.domain(domain).await?.is_none() {
            dir.add_domain(domain).await?;
            eprintln!("agora: added mail domain {domain}");
        }
        return Ok(());
    }
    dir.add_domain(domain).await?;
    let login = format!("admin@{domain}");
    let password = generate_password()?;
    dir.add_user(&login, "Administrator", &password, 0, Role::Admin).await?;
    dir.add_alias(&format!("postmaster@{domain}"), &login).await?;
    println!("First run: created mail domain {domain} and administrator {login}");
    println!("  administrator password (shown only this once): {password}");
    println!("  change it with: agora user passwd {login}");
    Ok(())
}
