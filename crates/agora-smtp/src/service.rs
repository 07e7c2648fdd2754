//! SMTP's registration: inbound 25, submission 587 (STARTTLS) and 465 (TLS), the
//! `[smtp]` section, timeouts after RFC 5321 §4.5.3.2 (five minutes for a command,
//! ten for the end of the data), and the outbound transport as a background task.

use std::sync::Arc;
use std::time::Duration;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::outbound::{Transport, TransportConfig};
use crate::{MessageMemory, SmtpConfig, SmtpService};

pub static SERVICE: Service<SmtpSection> = Service {
    name: "smtp",
    listeners: &[
        ListenerDecl {
            key: "smtp",
            port: 25,
            tls: TlsMode::StartTls,
            role: "SMTP inbound",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "submission",
            port: 587,
            tls: TlsMode::StartTls,
            role: "SMTP submission",
            datagram: false,
            loopback: false,
            logins: true,
        },
        ListenerDecl {
            key: "submissions",
            port: 465,
            tls: TlsMode::Implicit,
            role: "SMTP submission over TLS",
            datagram: false,
            loopback: false,
            logins: true,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The most one message's SPF/DKIM/ARC/DMARC lookups may take; then `temperror`.
    pub check_budget_secs: u64,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection {
            trusted_networks: Vec::new(),
            dmarc_reject: true,
            dkim_sign: true,
            arc_seal: true,
            check_budget_secs: 5,
            timeout_preauth_secs: 300,
            timeout_secs: 300,
        }
    }
}

impl Section for SmtpSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("trusted_networks", "[\"10.0.0.0/8\"]", "may relay through port 25 without AUTH (default: none)"),
        ("dmarc_reject", "", "refuse mail failing DMARC under p=reject"),
        ("dkim_sign", "", "sign mail from users and trusted networks (DKIM)"),
        ("arc_seal", "", "ARC-seal mail forwarded to outside addresses"),
        ("check_budget_secs", "", "the most one message's SPF/DKIM/DMARC lookups may take"),
        ("timeout_preauth_secs", "", "waiting for a command (RFC 5321: at least 300)"),
        ("timeout_secs", "", "the same once logged in (submission)"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
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

fn build(ctx: &Context, s: SmtpSection) -> Result<Built, String> {
    let cfg = SmtpConfig {
        trusted_networks: s.networks()?,
        dmarc_reject: s.dmarc_reject,
        check_budget: secs(s.check_budget_secs),
        dkim_sign: s.dkim_sign,
        arc_seal: s.arc_seal,
        hostname: ctx.hostname.clone(),
        primary_domain: ctx.domain.clone(),
        max_message_size: ctx.limits.max_message_size,
        max_recipients: ctx.limits.max_recipients.max(1),
        allow_plaintext: ctx.limits.plaintext_without_tls,
        spool: Some(ctx.data_dir.join("spool")),
        ..SmtpConfig::default()
    };
    // Spool files left by a server that stopped mid-transfer belong to no session now.
    if let Ok(entries) = std::fs::read_dir(ctx.data_dir.join("spool")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    // Inbound and submission share the memory budget for message data in flight.
    let memory = MessageMemory::new(ctx.limits.max_message_memory);
    let inbound: Arc<dyn agora_net::Service> =
        Arc::new(SmtpService::new(cfg.clone(), Arc::clone(&ctx.mail), memory.clone(), Arc::clone(&ctx.throttle)));
    let submission: Arc<dyn agora_net::Service> = Arc::new(SmtpService::new(
        SmtpConfig { submission: true, ..cfg },
        Arc::clone(&ctx.mail),
        memory,
        Arc::clone(&ctx.throttle),
    ));
    // The outbound transport delivers what the mail core queued for remote recipients.
    let t = &ctx.mail.config().transport;
    let ca_pem = match &t.ca_file {
        Some(f) => {
            let path = ctx.data_dir.join(f);
            Some(std::fs::read(&path).map_err(|e| format!("[transport] ca_file {}: {e}", path.display()))?)
        }
        None => None,
    };
    let transport = Transport::new(
        TransportConfig {
            hostname: ctx.hostname.clone(),
            routes: t.routes.iter().map(|(d, r)| (d.to_ascii_lowercase(), r.clone())).collect(),
            smarthost: t.smarthost.clone(),
            smarthost_auth: t.smarthost_user.clone().zip(t.smarthost_password.clone()),
            nameservers: t.nameservers.clone(),
            mx_port: t.mx_port,
            retry_base: secs(t.retry_secs),
            max_lifetime: Duration::from_secs(t.max_lifetime_secs),
            delay_warning: Duration::from_secs(t.delay_warning_secs),
            poll: secs(t.poll_secs),
            mta_sts: t.mta_sts,
            dane: t.dane,
            mta_sts_cache: Some(ctx.data_dir.join("mta-sts.json")),
            mta_sts_port: t.mta_sts_port,
            ca_pem,
            tls_reports: t.tls_reports,
            tls_report_period: secs(t.tls_report_period_secs),
            report_domain: ctx.domain.clone(),
            ..TransportConfig::default()
        },
        &ctx.mail,
    )
    .map_err(|e| format!("[transport] ca_file: {e}"))?;
    let transport = Arc::new(transport);
    let reports = Arc::clone(&transport).tls_reports(ctx.shutdown.clone());
    let links = Arc::clone(&transport).links(ctx.shutdown.clone());
    let run = transport.run(ctx.shutdown.clone());
    Ok(Built {
        handlers: vec![("smtp", inbound), ("submission", Arc::clone(&submission)), ("submissions", submission)],
        tasks: vec![Box::pin(run), Box::pin(reports), Box::pin(links)],
        ..Built::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(agora_service::undocumented::<SmtpSection>(SmtpSection::HELP).is_empty());
    }

    #[test]
    fn trusted_networks_parse() {
        let s = |n: &[&str]| SmtpSection {
            trusted_networks: n.iter().map(|x| x.to_string()).collect(),
            ..Default::default()
        };
        let n = s(&["10.0.0.0/8", "::1", "192.0.2.0/24"]).networks().unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!(n[1].1, 128, "a single address is a full-length prefix");
        for bad in ["banana", "10.0.0.0/33", "10.0.0.0/x"] {
            assert!(s(&[bad]).networks().is_err(), "{bad}");
        }
    }
}
