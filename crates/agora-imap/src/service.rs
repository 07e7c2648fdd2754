//! IMAP's registration: listeners 143 (STARTTLS) and 993 (TLS), the `[imap]` section
//! and its timeouts (RFC 9051 §5.4: at least 30 minutes once logged in).

use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::{ImapConfig, ImapService};

pub static SERVICE: Service<ImapSection> = Service {
    name: "imap",
    listeners: &[
        ListenerDecl {
            key: "imap",
            port: 143,
            tls: TlsMode::StartTls,
            role: "IMAP4",
            datagram: false,
            loopback: false,
            logins: true,
        },
        ListenerDecl {
            key: "imaps",
            port: 993,
            tls: TlsMode::Implicit,
            role: "IMAP4 over TLS",
            datagram: false,
            loopback: false,
            logins: true,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapSection {
    pub timeout_preauth_secs: u64,
    /// A logged-in session without a command (RFC 9051 §5.4: at least 30 minutes).
    pub timeout_secs: u64,
    /// The longest an IDLE may wait for DONE (clients re-issue IDLE every 29 minutes).
    pub idle_timeout_secs: u64,
    /// `* OK Still here` to an idling client this often, so NATs keep the connection.
    pub idle_keepalive_secs: u64,
}

impl Default for ImapSection {
    fn default() -> Self {
        ImapSection { timeout_preauth_secs: 60, timeout_secs: 1800, idle_timeout_secs: 7200, idle_keepalive_secs: 120 }
    }
}

impl Section for ImapSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("timeout_preauth_secs", "", "before login"),
        ("timeout_secs", "", "logged in, without a command (RFC 9051: at least 1800)"),
        ("idle_timeout_secs", "", "the longest one IDLE may last"),
        ("idle_keepalive_secs", "", "\"* OK Still here\" to idling clients this often"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: ImapSection) -> Result<Built, String> {
    let imap: Arc<dyn agora_net::Service> = Arc::new(ImapService::new(
        ImapConfig {
            allow_plaintext: ctx.limits.plaintext_without_tls,
            max_literal: ctx.limits.max_message_size,
            max_sessions_per_user: ctx.limits.max_sessions_per_user,
            idle_timeout: secs(s.idle_timeout_secs),
            idle_keepalive: secs(s.idle_keepalive_secs),
            ..ImapConfig::default()
        },
        ctx.dir.clone(),
        Arc::clone(&ctx.store),
        Arc::clone(&ctx.throttle),
    ));
    Ok(Built { handlers: vec![("imap", Arc::clone(&imap)), ("imaps", imap)], ..Built::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::ImapSection>(<super::ImapSection as agora_service::Section>::HELP)
                .is_empty()
        );
    }
}
