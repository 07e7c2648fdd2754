//! Routing's registration: the listener on 691 (STARTTLS), the `[routing]` section,
//! and the task that keeps this server's table moving: a member sends its table to its
//! group's master whenever it changes here (and every `sync_interval_secs`), a master
//! sends its table to every member of its group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agora_mail::routing::{Damper, Table};

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Task, Timeouts, secs};
use agora_store::Store;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::session::RoutingService;
use crate::table::{self, Identity};

pub static SERVICE: Service<RoutingSection> = Service {
    name: "routing",
    listeners: &[ListenerDecl {
        key: "routing",
        port: 691,
        tls: TlsMode::StartTls,
        role: "link-state routing",
        datagram: false,
        loopback: false,
        logins: false,
    }],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// This server's name in the routing table (default: its host name).
    pub node: String,
    /// The organisation's shared secret, one line (relative to the data directory);
    /// unset: this server is in no organisation and refuses routing sessions.
    pub secret_file: String,
    /// How often the table is compared with the group's master (or members) anyway.
    pub sync_interval_secs: u64,
    /// How often this server checks the far side of the connectors it is a bridgehead of.
    pub probe_interval_secs: u64,
    /// Failed checks in a row before a connector counts as down.
    pub probe_retries: u32,
    /// How long a connector's new state must hold before it is published (damping:
    /// a flapping link does not make the whole organisation reroute back and forth).
    pub damping_secs: u64,
    pub timeout_preauth_secs: u64,
    pub timeout_secs: u64,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            node: String::new(),
            secret_file: String::new(),
            sync_interval_secs: 60,
            probe_interval_secs: 30,
            probe_retries: 3,
            damping_secs: 600,
            timeout_preauth_secs: 30,
            timeout_secs: 300,
        }
    }
}

impl Section for RoutingSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("node", "\"mx1\"", "this server's name in the routing table (default: its host name)"),
        (
            "secret_file",
            "\"routing.secret\"",
            "the organisation's shared secret (one line, the same on every server of it); unset: in no organisation",
        ),
        ("sync_interval_secs", "", "how often the table is compared with the group's master or members anyway"),
        (
            "probe_interval_secs",
            "",
            "how often the far side of each connector this server is a bridgehead of is checked",
        ),
        ("probe_retries", "", "failed checks in a row before a connector counts as down"),
        (
            "damping_secs",
            "",
            "how long a connector's new state must hold before it is published (Exchange: about 10 minutes)",
        ),
        ("timeout_preauth_secs", "", "before the other server proved its membership"),
        ("timeout_secs", "", "after it, without a command"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.timeout_preauth_secs), idle: secs(self.timeout_secs) }
    }
}

fn build(ctx: &Context, s: RoutingSection) -> Result<Built, String> {
    // The identity (node name and secret) is read once, into the mail core's settings.
    let me = ctx.mail.config().routing.clone();
    let changed = Arc::new(tokio::sync::Notify::new());
    let svc = RoutingService { store: Arc::clone(&ctx.store), me: me.clone(), changed: Arc::clone(&changed) };
    let mut tasks: Vec<Task> = Vec::new();
    if let Some(me) = me {
        let every = secs(s.sync_interval_secs.max(1));
        let probing = Probing {
            every: secs(s.probe_interval_secs.max(1)),
            retries: s.probe_retries.max(1),
            damping: secs(s.damping_secs),
        };
        tasks.push(Box::pin(keep(Arc::clone(&ctx.store), me, changed, every, probing, ctx.shutdown.clone())));
    }
    Ok(Built { handlers: vec![("routing", Arc::new(svc))], tasks, ..Built::default() })
}

/// The servers this one sends its table to: its master, or (as master) its members.
fn peers(t: &Table, me: &str) -> Vec<(String, String, u16)> {
    let Some(g) = t.group_of(me).and_then(|g| t.groups.get(g)) else { return Vec::new() };
    let names: Vec<&String> = if g.master == me {
        g.members.keys().filter(|n| *n != me).collect()
    } else {
        g.members.keys().filter(|n| **n == g.master).collect()
    };
    names.into_iter().filter_map(|n| g.members.get(n).map(|m| (n.clone(), m.host.clone(), m.routing_port))).collect()
}

/// How connectors are checked.
#[derive(Debug, Clone, Copy)]
struct Probing {
    every: Duration,
    retries: u32,
    damping: Duration,
}

/// Whether one of the servers answers SMTP's greeting.
async fn reachable(far: &[(String, u16)]) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    for (host, port) in far {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.ok()?;
            let mut r = tokio::io::BufReader::new(tcp);
            let mut greeting = String::new();
            r.read_line(&mut greeting).await.ok()?;
            let _ = r.get_mut().write_all(b"QUIT\r\n").await;
            greeting.starts_with("220").then_some(())
        };
        if tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten().is_some() {
            return true;
        }
    }
    false
}

/// Checks the watched connectors once: failures counted, states damped, what held
/// long enough written into the table. True if the table changed.
async fn probe(
    store: &Arc<dyn Store>,
    me: &Identity,
    p: Probing,
    failures: &mut HashMap<String, u32>,
    damper: &mut Damper,
) -> bool {
    let Ok((_, t)) = table::load(store).await else { return false };
    for (name, far) in t.watched(&me.node) {
        let n = failures.entry(name.clone()).or_insert(0);
        let up = if reachable(&far).await {
            *n = 0;
            true
        } else {
            *n += 1;
            if *n < p.retries {
                continue;
            }
            false
        };
        damper.observe(&name, up, t.is_up(&name), std::time::Instant::now());
    }
    let mut changed = false;
    for (name, up) in damper.due(p.damping, std::time::Instant::now()) {
        match table::set_state(store, &name, up, &me.node).await {
            Ok(true) => {
                tracing::warn!("routing: connector {name} is {}", if up { "up again" } else { "down" });
                changed = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("routing: recording connector {name}: {e}"),
        }
    }
    changed
}

/// Keeps the table moving until shutdown.
async fn keep(
    store: Arc<dyn Store>,
    me: Identity,
    changed: Arc<tokio::sync::Notify>,
    every: Duration,
    probing: Probing,
    shutdown: CancellationToken,
) {
    let mut sent = String::new();
    let mut last_round = tokio::time::Instant::now() - every;
    let mut last_probe = tokio::time::Instant::now();
    let (mut failures, mut damper) = (HashMap::new(), Damper::default());
    loop {
        // A change made here (the command line, a state seen) shows in the digest; one
        // merged from a member rings `changed`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last_probe.elapsed() >= probing.every {
            last_probe = tokio::time::Instant::now();
            probe(&store, &me, probing, &mut failures, &mut damper).await;
        }
        let Ok((_, t)) = table::load(&store).await else { continue };
        let digest = t.digest();
        if digest == sent && last_round.elapsed() < every {
            continue;
        }
        last_round = tokio::time::Instant::now();
        for (name, host, port) in peers(&t, &me.node) {
            match crate::client::sync(&store, &me, &host, port).await {
                Ok(s) if s.changed => {
                    tracing::info!("routing: table merged from {name}");
                    changed.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("routing: exchanging the table with {name} ({host}:{port}): {e}"),
            }
        }
        sent = match table::load(&store).await {
            Ok((_, t)) => t.digest(),
            Err(_) => digest,
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::RoutingSection>(
                <super::RoutingSection as agora_service::Section>::HELP
            )
            .is_empty()
        );
    }
}
