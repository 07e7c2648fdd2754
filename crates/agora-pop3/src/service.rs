//! POP3's registration: listeners 110 (STLS) and 995 (TLS), the `[pop3]` section and
//! its timeouts (RFC 1939 §3: at least 10 minutes once logged in).

use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::{Pop3Config, Pop3Service};

pub static SERVICE: Service<Pop3Section> = Service {
    name: "pop3",
    listeners: &[
        ListenerDecl {
            key: "pop3",
            port: 110,
            tls: TlsMode::StartTls,
            role: "POP3",
            datagram: false,
            loopback: false,
            logins: true,
        },
        ListenerDecl {
            key: "pop3s",
            port: 995,
            tls: TlsMode::Implicit,
            role: "POP3 over TLS",
            datagram: false,
            loopback: false,
            logins: true,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Section {
    /// Mark messages retrieved over POP3 as \Seen.
    pub mark_seen: bool,
    /// Delete retrieved messages older than this many days at QUIT; unset: never.
    pub expire_days: Option<u32>,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for Pop3Section {
    fn default() -> Self {
        Pop3Section { mark_seen: true, expire_days: None, timeout_preauth_secs: 60, timeout_secs: 600 }
    }
}

impl Section for Pop3Section {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("mark_seen", "", "retrieved messages get the Seen flag"),
        ("expire_days", "30", "delete retrieved mail older than this at QUIT (default: never)"),
        ("timeout_preauth_secs", "", "before login"),
        ("timeout_secs", "", "logged in, without a command (RFC 1939: at least 600)"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: Pop3Section) -> Result<Built, String> {
    let pop3: Arc<dyn agora_net::Service> = Arc::new(Pop3Service::new(
        Pop3Config {
            allow_plaintext: ctx.limits.plaintext_without_tls,
            mark_seen: s.mark_seen,
            expire_days: s.expire_days,
            ..Pop3Config::default()
        },
        ctx.dir.clone(),
        Arc::clone(&ctx.store),
        Arc::clone(&ctx.throttle),
    ));
    Ok(Built { handlers: vec![("pop3", Arc::clone(&pop3)), ("pop3s", pop3)], ..Built::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::Pop3Section>(<super::Pop3Section as agora_service::Section>::HELP)
                .is_empty()
        );
    }
}
