//! ManageSieve's registration: listener 4190 (STARTTLS, RFC 5804 §1.8), the
//! `[managesieve]` section (script size and count per account, timeouts), and the mail
//! core told of every change to an account's scripts.

use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::{ManageSieveService, OnChange, SieveConfig};

pub static SERVICE: Service<ManageSieveSection> = Service {
    name: "managesieve",
    listeners: &[ListenerDecl {
        key: "managesieve",
        port: 4190,
        tls: TlsMode::StartTls,
        role: "ManageSieve (Sieve scripts)",
        datagram: false,
        loopback: false,
        logins: true,
    }],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManageSieveSection {
    /// Largest script accepted, in bytes.
    pub max_script_size: u64,
    /// Most scripts an account may keep.
    pub max_scripts: u32,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for ManageSieveSection {
    fn default() -> Self {
        ManageSieveSection {
            max_script_size: 1024 * 1024,
            max_scripts: 32,
            timeout_preauth_secs: 60,
            timeout_secs: 600,
        }
    }
}

impl Section for ManageSieveSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("max_script_size", "", "largest Sieve script accepted, in bytes"),
        ("max_scripts", "", "most scripts one account may keep"),
        ("timeout_preauth_secs", "", "before login"),
        ("timeout_secs", "", "logged in, without a command"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: ManageSieveSection) -> Result<Built, String> {
    if s.max_script_size == 0 || s.max_scripts == 0 {
        return Err("[managesieve] max_script_size and max_scripts must be at least 1".into());
    }
    let mail = Arc::clone(&ctx.mail);
    let changed: OnChange = Arc::new(move |account| mail.sieve_changed(account));
    let service: Arc<dyn agora_net::Service> = Arc::new(ManageSieveService::new(
        SieveConfig {
            allow_plaintext: ctx.limits.plaintext_without_tls,
            max_script_size: s.max_script_size,
            max_scripts: s.max_scripts as usize,
            ..SieveConfig::default()
        },
        ctx.dir.clone(),
        Arc::clone(&ctx.store),
        Arc::clone(&ctx.throttle),
        changed,
    ));
    Ok(Built { handlers: vec![("managesieve", service)], ..Built::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::ManageSieveSection>(
                <super::ManageSieveSection as agora_service::Section>::HELP
            )
            .is_empty()
        );
    }
}
