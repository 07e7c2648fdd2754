//! `agora doctor`: checks a setup the way an administrator would and says what to fix,
//! one line a check: host name and domains, every listener, the certificate, each
//! domain's DNS records against what Agora publishes (the code of `agora dns check`),
//! the PTR of the outbound addresses, relaying, the clock, disk, queue and store.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::{Cli, ListenArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but deserves a look.
    Warn,
    Fail,
    /// Could not be checked here.
    Skip,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, check: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.0.push(Check { check: check.into(), status, detail: detail.into(), fix });
    }
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Status::Ok, detail, None);
    }
    fn fail(&mut self, check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Fail, detail, Some(fix.into()));
    }
    fn warn(&mut self, check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Warn, detail, Some(fix.into()));
    }
    fn skip(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Status::Skip, detail, None);
    }
}

/// Runs every check; prints them (or JSON); true when none failed.
pub async fn doctor(
    cli: &Cli,
    hostname: Option<String>,
    listen: &ListenArgs,
    resolver: Option<&str>,
    json: bool,
) -> Result<bool> {
    let mut c = Checks::default();
    let (loaded, listeners) = crate::serve::effective(cli, listen)?;
    let cfg = &loaded.config;
    let hostname = hostname.or(cfg.server.hostname.clone()).unwrap_or_else(crate::serve::system_hostname);
    host_name(&mut c, &hostname);

    let (store, refused) = match crate::admin::open_store(cli).await {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let domains = match &store {
        Some((s, _)) => {
            use agora_store::DirectoryStore;
            s.domains().await.map(|d| d.into_iter().map(|d| d.name).collect::<Vec<_>>()).unwrap_or_default()
        }
        None => Vec::new(),
    };
    match (&store, domains.is_empty()) {
        (None, _) => c.fail(
            "domains",
            refused.unwrap_or_else(|| format!("no information store in {}", cli.data.display())),
            "run `agora serve` once (or pass --data DIR); on a packaged install, as the agora user",
        ),
        (Some(_), true) => {
            c.fail("domains", "no hosted domain", "agora domain add example.org (or restart agora serve --domain)")
        }
        (Some(_), false) => c.ok("domains", format!("hosting {}", domains.join(", "))),
    }

    for l in listeners.iter().filter(|l| l.built && l.enabled) {
        listener(&mut c, l);
    }
    certificate(&mut c, cli, cfg, &hostname);

    let resolvers = crate::serve::resolvers_for(cli, resolver)?;
    match (&store, resolvers.first()) {
        (Some((s, _)), Some(r)) => {
            for d in &domains {
                match crate::serve::zone_input(cli, s, d, Some(hostname.clone()), listen).await {
                    Ok(input) => dns_records(&mut c, d, &agora_mail::zone::build(&input), *r).await,
                    Err(e) => c.fail(format!("DNS {d}"), format!("cannot build its zone: {e}"), "see agora dns show"),
                }
            }
            // A sender's fetch of each MTA-STS policy: over the https listener, with the
            // trust the outbound transport has; not tried while the certificate fails.
            let https = listeners.iter().find(|l| l.key == "https" && l.built && l.enabled).map(|l| l.port);
            let cert_failed = c.0.iter().any(|x| x.check == "certificate" && x.status == Status::Fail);
            let ca = cfg.transport.ca_file.as_ref().and_then(|f| std::fs::read(cli.data.join(f)).ok());
            let fetcher = https.and_then(|port| {
                let tls =
                    agora_mail::mtasts::verifier(ca.as_deref()).and_then(|v| agora_mail::mtasts::client_config(v));
                Some((agora_mail::mtasts::MtaSts::new(None, tls.ok()?, port), agora_mail::auth::resolver(&[*r])?))
            });
            for d in &domains {
                let what = format!("MTA-STS policy {d}");
                match &fetcher {
                    _ if https.is_none() => c.fail(
                        what,
                        "the https listener is off: senders cannot fetch the policy",
                        "enable [listeners.https]",
                    ),
                    _ if cert_failed => {
                        c.skip(what, "not fetched: senders fetch it over HTTPS with the certificate above")
                    }
                    None => c.skip(what, "no TLS client or resolver here"),
                    Some((f, resolve)) => mta_sts_policy(&mut c, what, f, resolve, d, &hostname).await,
                }
            }
            let dns = crate::serve::dns_section(cli)?;
            ptr(&mut c, &dns.addresses, &hostname, *r).await;
        }
        (_, None) => c.skip("DNS", "no resolver to ask: give --resolver or [transport] nameservers"),
        (None, _) => {}
    }

    relay(&mut c, &listeners);
    clock(&mut c);
    disk(&mut c, &cli.data);
    if let Some((s, _)) = &store {
        queue(&mut c, s).await;
        s.close();
        store_check(&mut c, &cli.data);
    }

    let failed = c.0.iter().filter(|x| x.status == Status::Fail).count();
    if json {
        let out = serde_json::json!({ "ok": failed == 0, "failed": failed, "checks": c.0 });
        crate::to_stdout(format!("{}\n", serde_json::to_string_pretty(&out)?).as_bytes())?;
    } else {
        let mut text = String::new();
        for x in &c.0 {
            let mark = match x.status {
                Status::Ok => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            text.push_str(&format!("{mark} {}: {}", x.check, x.detail));
            if let Some(f) = &x.fix {
                text.push_str(&format!("\n    fix: {f}"));
            }
            text.push('\n');
        }
        let warned = c.0.iter().filter(|x| x.status == Status::Warn).count();
        text.push_str(&format!("{} checks: {failed} to fix, {warned} to look at\n", c.0.len()));
        crate::to_stdout(text.as_bytes())?;
    }
    Ok(failed == 0)
}

fn host_name(c: &mut Checks, host: &str) {
    let valid = agora_directory::normalize_domain(host).is_ok();
    if !host.contains('.') || host == "localhost" || !valid {
        c.fail(
            "host name",
            format!("{host:?} is not a fully qualified name other servers can find"),
            "hostname = \"mail.example.org\" under [server] (a name with an A/AAAA record and a matching PTR)",
        );
    } else {
        c.ok("host name", host);
    }
}

/// Where a listener's address is reached from here: a wildcard through loopback of its family.
fn reachable(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn listener(c: &mut Checks, l: &crate::config::EffectiveListener) {
    let mut closed = Vec::new();
    let mut open = Vec::new();
    for a in &l.addresses {
        let addr = SocketAddr::new(reachable(*a), l.port);
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(_) => open.push(addr.to_string()),
            // A machine without IPv6 serves IPv4 alone (as the server does).
            Err(_) if a.is_ipv6() && a.is_unspecified() => {}
            Err(e) => closed.push(format!("{addr} ({e})")),
        }
    }
    let what = format!("listener {}", l.key);
    if closed.is_empty() {
        c.ok(what, format!("{} answers on {}", l.role, open.join(", ")));
    } else {
        c.fail(
            what,
            format!("{} is closed on {}", l.role, closed.join(", ")),
            "start agora (systemctl start agora); after a change to the listeners, restart it; \
             if another program holds the port: ss -ltnp",
        );
    }
}

fn certificate(c: &mut Checks, cli: &Cli, cfg: &crate::config::Config, host: &str) {
    use rustls_pki_types::pem::PemObject;
    let path =
        cfg.tls.cert.as_deref().map_or_else(|| cli.data.join("tls/cert.pem"), |p| crate::serve::resolve(&cli.data, p));
    let info = std::fs::read(&path).ok().and_then(|pem| {
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
        agora_net::tls::CertInfo::of(&der)
    });
    let Some(info) = info else {
        c.fail("certificate", format!("{} cannot be read", path.display()), "[tls] cert and key, or [tls] acme");
        return;
    };
    let now = agora_store::now();
    let day = |t: i64| agora_store::time::rfc3339(t).chars().take(10).collect::<String>();
    let covers = info.names.iter().any(|n| name_matches(n, host));
    let acme = cfg.tls.acme.is_some();
    let renew = if acme {
        "agora cert status shows the ACME renewals; check the last error there"
    } else {
        "install a new certificate and key, then reload (systemctl reload agora, or SIGHUP); or set [tls] acme"
    };
    if info.not_after < now {
        c.fail("certificate", format!("{} expired on {}", path.display(), day(info.not_after)), renew);
    } else if info.not_before > now {
        c.fail("certificate", format!("{} is valid only from {}", path.display(), day(info.not_before)), renew);
    } else if !covers && !acme {
        c.fail(
            "certificate",
            format!("{} is for {}, not {host}", path.display(), info.names.join(", ")),
            "a certificate whose names include the host name; or set [tls] acme",
        );
    } else if info.not_after - now < 14 * 86_400 {
        c.warn("certificate", format!("expires on {}", day(info.not_after)), renew);
    } else if info.self_signed && !acme {
        c.warn(
            "certificate",
            format!("self-signed for {} (until {}): clients warn", info.names.join(", "), day(info.not_after)),
            "[tls] acme = { directory = \"https://acme-v02.api.letsencrypt.org/directory\" }, or a CA's certificate",
        );
    } else {
        c.ok("certificate", format!("{} until {}, from {}", info.names.join(", "), day(info.not_after), info.issuer));
    }
}

fn name_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(rest) => h.split_once('.').is_some_and(|(_, parent)| parent == rest),
        None => p == h,
    }
}

/// What a record set is for, in the words of mail administrators.
fn purpose(domain: &str, name: &str, rtype: &str) -> Option<String> {
    let label = name.strip_suffix(domain).unwrap_or(name).trim_end_matches('.');
    Some(match (rtype, label) {
        ("MX", "") => "MX".into(),
        ("TXT", "") => "SPF".into(),
        ("TXT", "_dmarc") => "DMARC".into(),
        ("TXT", "_mta-sts") => "MTA-STS id".into(),
        ("TXT", "_smtp._tls") => "TLS-RPT".into(),
        ("TXT", l) if l.ends_with("._domainkey") => format!("DKIM key {}", l.trim_end_matches("._domainkey")),
        ("SRV", l) => format!("SRV {l}"),
        _ => return None,
    })
}

async fn dns_records(c: &mut Checks, domain: &str, records: &[agora_mail::zone::Record], resolver: SocketAddr) {
    let mail: Vec<agora_mail::zone::Record> =
        records.iter().filter(|r| purpose(domain, &r.name, r.data.type_name()).is_some()).cloned().collect();
    let mut findings = agora_dns::check::check(&mail, resolver).await;
    // The records mail depends on first, the client locators after.
    let rank = |f: &agora_mail::zone::Finding| {
        let p = purpose(domain, &f.name, &f.rtype).unwrap_or_default();
        ["MX", "SPF", "DKIM", "DMARC", "MTA-STS", "TLS-RPT", "SRV"].iter().position(|k| p.starts_with(k))
    };
    findings.sort_by_key(|f| (rank(f), f.name.clone()));
    for f in findings {
        let what = format!("DNS {domain} {}", purpose(domain, &f.name, &f.rtype).unwrap_or_default());
        let show = |v: &[String]| if v.is_empty() { "nothing".to_string() } else { v.join(" | ") };
        let publish = format!("publish {} {} {}", f.name, f.rtype, show(&f.expected));
        match &f.seen {
            _ if f.matches() => c.ok(what, format!("{} {} as published", f.name, f.rtype)),
            Ok(seen) => c.fail(what, format!("{} {}: {resolver} sees {}", f.name, f.rtype, show(seen)), publish),
            Err(e) => c.fail(what, format!("{} {}: {e}", f.name, f.rtype), publish),
        }
    }
}

/// The MTA-STS policy as a sender gets it: `mta-sts.DOMAIN` resolved, fetched over
/// HTTPS with a checked certificate, parsed, and its `mx` patterns covering this host.
async fn mta_sts_policy(
    c: &mut Checks,
    what: String,
    fetcher: &agora_mail::mtasts::MtaSts,
    resolver: &agora_mail::auth::TokioResolver,
    domain: &str,
    host: &str,
) {
    let fix = format!(
        "https://mta-sts.{domain}/.well-known/mta-sts.txt must be reachable with a certificate senders trust \
         (mta-sts.{domain} pointing at this server, [tls] acme covers the name)"
    );
    match fetcher.fetch(resolver, domain).await.and_then(|body| agora_mail::mtasts::Policy::parse(&body, "", 0)) {
        Ok(p) if p.allows(host) => c.ok(what, format!("{:?} mode, mx {}", p.mode, p.mx.join(" ")).to_lowercase()),
        Ok(p) => c.fail(what, format!("its mx {} does not cover {host}", p.mx.join(" ")), fix),
        Err(e) => c.fail(what, format!("senders cannot fetch it: {e}"), fix),
    }
}

/// The reverse name of every outbound address must be the host name (receivers check it).
async fn ptr(c: &mut Checks, addresses: &[IpAddr], host: &str, resolver: SocketAddr) {
    if addresses.is_empty() {
        c.skip("PTR", "no public address configured ([dns] addresses): nothing to check");
        return;
    }
    for a in addresses {
        let name = reverse_name(a);
        let rec =
            agora_mail::zone::Record { name: name.clone(), ttl: 0, data: agora_mail::zone::Data::Ptr(host.into()) };
        for f in agora_dns::check::check(&[rec], resolver).await {
            let what = format!("PTR {a}");
            match &f.seen {
                _ if f.matches() => c.ok(what, format!("{name} points at {host}")),
                Ok(seen) => c.fail(
                    what,
                    format!("{name} is {}", if seen.is_empty() { "missing".into() } else { seen.join(", ") }),
                    format!("ask whoever gives you {a} (your provider) to set its PTR to {host}"),
                ),
                Err(e) => c.fail(what, format!("{name}: {e}"), format!("set the PTR of {a} to {host}")),
            }
        }
    }
}

fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::new();
            for b in v.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Tries to relay: a null sender and a recipient outside every hosted domain must be refused.
fn relay(c: &mut Checks, listeners: &[crate::config::EffectiveListener]) {
    use std::io::{BufRead, BufReader, Write};
    let Some(l) = listeners.iter().find(|l| l.key == "smtp" && l.built && l.enabled) else {
        c.skip("open relay", "no SMTP listener");
        return;
    };
    let Some(&first) = l.addresses.first() else { return };
    let addr = SocketAddr::new(reachable(first), l.port);
    let attempt = || -> std::io::Result<String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut w = s.try_clone()?;
        // Whatever answers on that port, the dialogue reads at most 64 KiB.
        let mut r = BufReader::new(std::io::Read::take(s, 64 * 1024));
        let mut reply = || -> std::io::Result<String> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(all);
                }
                all.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return Ok(all);
                }
            }
        };
        reply()?;
        for cmd in ["EHLO doctor.invalid", "MAIL FROM:<>"] {
            w.write_all(format!("{cmd}\r\n").as_bytes())?;
            reply()?;
        }
        w.write_all(b"RCPT TO:<relay-test@agora-doctor.invalid>\r\n")?;
        let answer = reply()?;
        w.write_all(b"RSET\r\nQUIT\r\n")?;
        Ok(answer.lines().last().unwrap_or("").to_string())
    };
    match attempt() {
        Ok(a) if a.starts_with('5') => c.ok("open relay", format!("refused, as it must be ({a})")),
        Ok(a) if a.starts_with('2') => c.fail(
            "open relay",
            format!("{addr} accepted mail for a domain it does not host ({a})"),
            "never relay for unauthenticated clients: remove trusted networks from the configuration",
        ),
        Ok(a) => c.warn("open relay", format!("{addr} answered {a:?}"), "look at why it did not refuse outright"),
        Err(e) => c.skip("open relay", format!("{addr}: {e}")),
    }
}

/// Whether the clock is kept by NTP, as systemd's timedated says.
fn clock(c: &mut Checks) {
    let out = std::process::Command::new("timedatectl").args(["show", "-p", "NTPSynchronized", "--value"]).output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "yes" => {
            c.ok("clock", "synchronised by NTP")
        }
        Ok(o) if o.status.success() => c.warn(
            "clock",
            "not synchronised by NTP: a clock off by minutes breaks DKIM, TOTP and certificate checks",
            "timedatectl set-ntp true (or run chrony)",
        ),
        _ => c.skip("clock", "timedatectl cannot tell here"),
    }
}

fn disk(c: &mut Checks, data: &Path) {
    match rustix::fs::statvfs(data) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let total = s.f_blocks.saturating_mul(s.f_frsize).max(1);
            let pct = free as f64 * 100.0 / total as f64;
            let detail =
                format!("{:.1} GiB free ({pct:.0}%) for {}", free as f64 / f64::from(1u32 << 30), data.display());
            // Absolute space is what mail needs: 3% of a large disk is still gigabytes.
            if free < 1 << 30 {
                c.fail("disk", detail, "free space: mail is refused with 452 when the disk is full");
            } else if free < 5 << 30 || pct < 10.0 {
                c.warn("disk", detail, "free space before it runs out");
            } else {
                c.ok("disk", detail);
            }
        }
        Err(e) => c.skip("disk", format!("{}: {e}", data.display())),
    }
}

async fn queue(c: &mut Checks, store: &std::sync::Arc<agora_store::sql::SqlStore>) {
    use agora_store::DeliveryStore;
    let queued = match store.queued().await {
        Ok(q) => q,
        Err(e) => return c.skip("queue", e.to_string()),
    };
    let Some(oldest) = queued.iter().min_by_key(|q| q.created) else {
        return c.ok("queue", "empty");
    };
    let age = (agora_store::now() - oldest.created).max(0);
    let detail = format!(
        "{} waiting; the oldest, to {}, for {} h{}",
        queued.len(),
        oldest.recipient,
        age / 3600,
        if oldest.last_error.is_empty() { String::new() } else { format!(" ({})", oldest.last_error) }
    );
    if age > 86_400 {
        c.fail("queue", detail, "agora queue list; fix what the errors say, or agora queue remove");
    } else if age > 3600 {
        c.warn("queue", detail, "agora queue list");
    } else {
        c.ok("queue", detail);
    }
}

fn store_check(c: &mut Checks, data: &Path) {
    let opts = agora_store::check::Options::default();
    match agora_store::check::check(data, &opts, &|_, _| {}) {
        Ok(r) if r.findings.is_empty() => c.ok(
            "store",
            format!("{} messages, {} bodies: counts and sizes consistent", r.counts.messages, r.counts.bodies),
        ),
        Ok(r) => c.fail(
            "store",
            format!("{} problem(s): {}", r.findings.len(), r.findings[0].problem),
            "agora store check (then --repair)",
        ),
        Err(e) => c.fail("store", e.to_string(), "agora store check"),
    }
}
