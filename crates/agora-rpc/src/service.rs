//! DCE/RPC's registration: the endpoint mapper on 135 and the address book (NSPI and
//! its referral interface) on a port of its own, the `[rpc]` section.

use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::assoc::{Accounts, Groups, Interface, Server};
use crate::epm::{Endpoint, Mapper};
use crate::mgmt::Management;
use crate::nspi::AddressBook;
use crate::ntlm::Names;
use crate::rfr::Referral;
use crate::session::{DirectoryAccounts, RpcService};

pub static SERVICE: Service<RpcSection> = Service {
    name: "rpc",
    listeners: &[
        ListenerDecl {
            key: "rpc",
            port: 135,
            tls: TlsMode::None,
            role: "DCE/RPC endpoint mapper",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "nspi",
            port: 6004,
            tls: TlsMode::None,
            role: "RPC address book (NSPI)",
            datagram: false,
            loopback: false,
            logins: true,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSection {
    /// NTLM's NetBIOS domain name (default: the primary domain's first label).
    pub netbios_domain: String,
    /// The organisation in the address book's legacy DNs (`/o=…`).
    pub organization: String,
    /// Largest request after its fragments are put together, in octets.
    pub max_request_size: usize,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for RpcSection {
    fn default() -> Self {
        RpcSection {
            netbios_domain: String::new(),
            organization: "Agora".into(),
            max_request_size: 1 << 20,
            timeout_preauth_secs: 60,
            timeout_secs: 900,
        }
    }
}

impl Section for RpcSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("netbios_domain", "\"EXAMPLE\"", "NTLM's domain name (default: the primary domain's first label, upper-case)"),
        ("organization", "", "the organisation in the address book's legacy DNs (/o=…)"),
        ("max_request_size", "", "largest request taken once its fragments are put together, in octets"),
        ("timeout_preauth_secs", "", "before an association authenticates"),
        ("timeout_secs", "", "authenticated, without a request"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn netbios(name: &str) -> String {
    let first = name.split('.').next().unwrap_or(name);
    first.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(15).collect::<String>().to_ascii_uppercase()
}

fn build(ctx: &Context, s: RpcSection) -> Result<Built, String> {
    if s.organization.is_empty() || s.organization.contains('/') {
        return Err(format!("organization {:?}: say a name without '/'", s.organization));
    }
    let netbios_domain = if s.netbios_domain.is_empty() { netbios(&ctx.domain) } else { s.netbios_domain.clone() };
    if netbios_domain.is_empty() || netbios_domain.len() > 15 {
        return Err(format!("netbios_domain {netbios_domain:?}: 1 to 15 characters"));
    }
    let accounts: Arc<dyn Accounts> = Arc::new(DirectoryAccounts {
        dir: ctx.dir.clone(),
        throttle: Arc::clone(&ctx.throttle),
        names: Names {
            netbios_domain,
            netbios_computer: netbios(&ctx.hostname),
            dns_domain: ctx.domain.clone(),
            dns_computer: ctx.hostname.clone(),
        },
    });
    let mut server_guid = [0u8; 16];
    getrandom::fill(&mut server_guid).map_err(|e| format!("random: {e}"))?;
    let book: Arc<dyn Interface> = Arc::new(AddressBook {
        store: Arc::clone(&ctx.store),
        organization: s.organization.clone(),
        server_guid,
        book: Default::default(),
        mids: Default::default(),
    });
    let referral: Arc<dyn Interface> = Arc::new(Referral { server: ctx.hostname.clone() });
    let port_of = |key: &str| ctx.listening.iter().find(|(k, _)| k == key).map(|(_, p)| *p);
    let mut handlers: Vec<(&'static str, Arc<dyn agora_net::Service>)> = Vec::new();
    let mut endpoints = Vec::new();
    if let Some(port) = port_of("nspi") {
        for i in [&book, &referral] {
            endpoints.push(Endpoint { syntax: i.syntax(), annotation: i.annotation().to_string(), port });
        }
        let mgmt = Arc::new(Management { interfaces: vec![book.syntax(), referral.syntax()] });
        let server = Server {
            interfaces: vec![book, referral, mgmt],
            // Each listener's own groups: an anonymous association on 135 never
            // joins one holding address-book handles.
            groups: Arc::new(Groups::default()),
            accounts: Some(accounts),
            port,
            max_request: s.max_request_size,
        };
        handlers.push(("nspi", Arc::new(RpcService { server: Arc::new(server), throttle: Arc::clone(&ctx.throttle) })));
    }
    let mapper = Server {
        interfaces: vec![
            Arc::new(Mapper { endpoints }),
            Arc::new(Management { interfaces: vec![crate::epm::syntax()] }),
        ],
        groups: Arc::new(Groups::default()),
        accounts: None,
        port: port_of("rpc").unwrap_or(135),
        max_request: s.max_request_size.min(64 * 1024),
    };
    handlers.push(("rpc", Arc::new(RpcService { server: Arc::new(mapper), throttle: Arc::clone(&ctx.throttle) })));
    Ok(Built { handlers, ..Built::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::RpcSection>(<super::RpcSection as agora_service::Section>::HELP)
                .is_empty()
        );
    }

    #[test]
    fn netbios_names() {
        assert_eq!(super::netbios("mail.example.org"), "MAIL");
        assert_eq!(super::netbios("a-very-long-host-name-indeed.example"), "A-VERY-LONG-HOS");
    }
}
