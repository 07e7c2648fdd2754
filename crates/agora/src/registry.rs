//! The services this binary runs: one registration per service. Adding a service is a
//! crate and one line here; the port map, the configuration file and `agora ports`
//! follow from these declarations.

use agora_net::TlsMode;
use agora_service::Registration;

pub static SERVICES: &[&dyn Registration] = &[
    &agora_smtp::service::SERVICE,
    &agora_imap::service::SERVICE,
    &agora_pop3::service::SERVICE,
    &agora_managesieve::service::SERVICE,
    &agora_ldap::service::SERVICE,
    &agora_ldap::service::REPLICATION,
    &agora_dns::service::SERVICE,
    &agora_http::service::SERVICE,
    &agora_nntp::service::SERVICE,
    &agora_rpc::service::SERVICE,
    &agora_routing::service::SERVICE,
    &agora_x400::service::SERVICE,
];

/// The rest of the port map (DESIGN §1): services not built yet, shown as such.
pub const PLANNED: &[(&str, u16, TlsMode, &str)] = &[];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_sections_are_unique() {
        let mut keys: Vec<&str> = SERVICES.iter().flat_map(|s| s.listeners().iter().map(|l| l.key)).collect();
        keys.extend(PLANNED.iter().map(|p| p.0));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a listener key is declared twice");
        let mut names: Vec<&str> = SERVICES.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SERVICES.len());
    }

    #[test]
    fn protocol_crates_never_import_each_other() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let protocols = [
            "agora-smtp",
            "agora-imap",
            "agora-pop3",
            "agora-managesieve",
            "agora-ldap",
            "agora-dns",
            "agora-http",
            "agora-nntp",
            "agora-rpc",
            "agora-routing",
            "agora-proxy",
        ];
        for p in protocols {
            let manifest = std::fs::read_to_string(crates.join(p).join("Cargo.toml")).unwrap_or_default();
            assert!(!manifest.is_empty(), "{p}/Cargo.toml not found");
            for other in protocols.iter().filter(|&&o| o != p) {
                let dep = format!("\n{other}");
                assert!(!manifest.contains(&dep), "{p} depends on {other}");
            }
        }
    }
}
