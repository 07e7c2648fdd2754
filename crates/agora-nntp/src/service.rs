//! NNTP's registration: listeners 119 (STARTTLS) and 563 (TLS), the `[nntp]` section
//! with its peers, and the background work: expiry and one outgoing feed per peer.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Task, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::feed::PeerFeed;
use crate::{NntpConfig, NntpService};

pub static SERVICE: Service<NntpSection> = Service {
    name: "nntp",
    listeners: &[
        ListenerDecl {
            key: "nntp",
            port: 119,
            tls: TlsMode::StartTls,
            role: "NNTP public folders",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "nntps",
            port: 563,
            tls: TlsMode::Implicit,
            role: "NNTP over TLS",
            datagram: false,
            loopback: false,
            logins: false,
        },
    ],
    build,
};

/// A news server this one exchanges articles with: it may feed articles in (from its
/// addresses), and gets those of the newsgroups its pattern matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub host: String,
    #[serde(default = "Peer::default_port")]
    pub port: u16,
    /// Wildmat of the newsgroups exchanged with it (RFC 3977 §4): what it may feed us,
    /// and what we send it (of those, only the groups `anyone` may read).
    #[serde(default = "Peer::default_newsgroups")]
    pub newsgroups: String,
    /// Its name in Path headers (default: host).
    #[serde(default)]
    pub path_name: Option<String>,
    /// Send it articles (off: it only feeds this server).
    #[serde(default = "Peer::default_send")]
    pub send: bool,
}

impl Peer {
    fn default_port() -> u16 {
        119
    }
    fn default_newsgroups() -> String {
        "*".into()
    }
    fn default_send() -> bool {
        true
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NntpSection {
    /// Readers may post (with the author role or above on the group).
    pub posting: bool,
    /// Largest article taken, in octets.
    pub max_article_size: usize,
    /// Message-IDs stay in the history this many days after their articles expire.
    pub history_days: u32,
    /// Seconds between expiry runs.
    pub expire_interval_secs: u64,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
    /// `[nntp.peers.NAME]`: news servers to exchange articles with.
    pub peers: BTreeMap<String, Peer>,
}

impl Default for NntpSection {
    fn default() -> Self {
        NntpSection {
            posting: true,
            max_article_size: 1_000_000,
            history_days: 10,
            expire_interval_secs: 3600,
            timeout_preauth_secs: 180,
            timeout_secs: 600,
            peers: BTreeMap::new(),
        }
    }
}

impl Section for NntpSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("posting", "", "readers with the author role or above may post"),
        ("max_article_size", "", "largest article taken (POST, IHAVE, TAKETHIS), in octets"),
        ("history_days", "", "days a Message-ID is remembered after its article expired (peers cannot feed it again)"),
        ("expire_interval_secs", "", "how often folders' expiry settings are applied"),
        ("timeout_preauth_secs", "", "before login (RFC 3977: at least 180)"),
        ("timeout_secs", "", "logged in, without a command"),
        (
            "peers",
            "{ inn = { host = \"news.example.net\", port = 119, newsgroups = \"*\", path_name = \"news.example.net\" } }",
            "news servers that feed this one and get its articles",
        ),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: NntpSection) -> Result<Built, String> {
    for (name, p) in &s.peers {
        if !codec_ok(&p.newsgroups) {
            return Err(format!("peers.{name}.newsgroups: {:?} is not a wildmat", p.newsgroups));
        }
    }
    let cfg = NntpConfig {
        hostname: ctx.hostname.clone(),
        allow_plaintext: ctx.limits.plaintext_without_tls,
        max_article: s.max_article_size,
        posting: s.posting,
        ..NntpConfig::default()
    };
    let peers: Vec<(String, String)> = s.peers.values().map(|p| (p.host.clone(), p.newsgroups.clone())).collect();
    let nntp: Arc<dyn agora_net::Service> = Arc::new(NntpService::new(
        cfg,
        ctx.dir.clone(),
        Arc::clone(&ctx.store),
        Arc::clone(&ctx.throttle),
        peers,
        s.history_days,
    ));
    let mut tasks: Vec<Task> = vec![Box::pin(crate::expire::run(
        Arc::clone(&ctx.store),
        secs(s.expire_interval_secs.max(1)),
        s.history_days,
        ctx.shutdown.clone(),
    ))];
    for (name, p) in s.peers.into_iter().filter(|(_, p)| p.send) {
        let feed = PeerFeed {
            name,
            path_name: p.path_name.unwrap_or_else(|| p.host.clone()),
            host: p.host,
            port: p.port,
            newsgroups: p.newsgroups,
        };
        tasks.push(Box::pin(crate::feed::run(
            Arc::clone(&ctx.store),
            ctx.hostname.clone(),
            feed,
            ctx.shutdown.clone(),
        )));
    }
    Ok(Built { handlers: vec![("nntp", Arc::clone(&nntp)), ("nntps", nntp)], tasks, ..Built::default() })
}

fn codec_ok(w: &str) -> bool {
    crate::codec::is_wildmat(w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::NntpSection>(<super::NntpSection as agora_service::Section>::HELP)
                .is_empty()
        );
    }
}
