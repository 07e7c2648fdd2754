//! `agora firewall`: the packet filter a role needs, from the configuration in force
//! (which listeners are on, on which ports), the nodes registered in the store and the
//! database's address: internet → front-end, front-end → back-end, back-end →
//! PostgreSQL, back-end ↔ back-end; printed as nftables, iptables-restore or a table.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use agora_store::ClusterStore;
use anyhow::{Result, bail};

use crate::Cli;

/// Who is at the other end of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Anyone,
    FrontEnds,
    BackEnds,
    Database,
}

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::Anyone => "anyone",
            Peer::FrontEnds => "front-ends",
            Peer::BackEnds => "back-ends",
            Peer::Database => "PostgreSQL",
        }
    }

    fn set(self) -> &'static str {
        match self {
            Peer::Anyone => "",
            Peer::FrontEnds => "front_ends",
            Peer::BackEnds => "back_ends",
            Peer::Database => "database",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One allowed flow: new connections in (to us) or out (from us).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    inbound: bool,
    peer: Peer,
    proto: Proto,
    /// First and last port (a listener may take a range).
    port: (u16, u16),
    what: String,
}

/// First and last port.
type Ports = (u16, u16);

/// A port or a range, with `sep` between its ends (nft: '-', iptables: ':').
fn ports((a, b): (u16, u16), sep: char) -> String {
    if a == b { a.to_string() } else { format!("{a}{sep}{b}") }
}

/// The addresses of each kind of peer.
#[derive(Debug, Default)]
struct Peers {
    front_ends: BTreeSet<IpAddr>,
    back_ends: BTreeSet<IpAddr>,
    database: BTreeSet<IpAddr>,
    database_port: u16,
    /// Names that are not addresses (a firewall wants addresses): said, not used.
    unresolved: Vec<String>,
}

impl Peers {
    fn of(&self, p: Peer) -> &BTreeSet<IpAddr> {
        match p {
            Peer::FrontEnds => &self.front_ends,
            Peer::BackEnds => &self.back_ends,
            _ => &self.database,
        }
    }
}

/// `host` and port of a postgres:// URL.
fn url_host(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(5432);
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None if !hostport.is_empty() => Some((hostport.to_string(), 5432)),
        None => None,
    }
}

#[derive(Debug, Clone)]
pub struct FirewallArgs {
    pub role: String,
    pub format: String,
    pub front_ends: Vec<String>,
    pub back_ends: Vec<String>,
    pub database: Option<String>,
}

pub async fn firewall(cli: &Cli, args: &FirewallArgs) -> Result<()> {
    if !crate::config::ROLES.contains(&args.role.as_str()) {
        bail!("unknown role {}: one of {}", args.role, crate::config::ROLES.join(", "));
    }
    if !["nftables", "iptables", "table"].contains(&args.format.as_str()) {
        bail!("unknown format {}: nftables, iptables or table", args.format);
    }
    let listen = crate::ListenArgs { port_offset: None, bind: Vec::new() };
    let (_, listeners) = crate::serve::effective(cli, &listen)?;
    let mut peers = Peers { database_port: 5432, ..Peers::default() };
    let add = |set: &mut BTreeSet<IpAddr>, unresolved: &mut Vec<String>, a: &str| match a.parse::<IpAddr>() {
        Ok(ip) => {
            set.insert(ip);
        }
        Err(_) => unresolved.push(a.to_string()),
    };
    let mut notes = Vec::new();
    let store_url = crate::admin::store_url(cli)?.map(|(u, _)| u);
    let shared = store_url.as_deref().is_some_and(agora_store::sql::is_postgres_url);
    if shared {
        match crate::admin::open_store(cli).await {
            Ok((store, _)) => {
                for n in store.nodes().await? {
                    match n.role.as_str() {
                        "front-end" => add(&mut peers.front_ends, &mut peers.unresolved, &n.address),
                        "back-end" | "single" => add(&mut peers.back_ends, &mut peers.unresolved, &n.address),
                        _ => {}
                    }
                }
                store.close();
            }
            Err(e) => {
                notes.push(format!("the registered nodes could not be read ({e:#}); give --front-end/--back-end"))
            }
        }
        if let Some((host, port)) = store_url.as_deref().and_then(url_host) {
            peers.database_port = port;
            add(&mut peers.database, &mut peers.unresolved, &host);
        }
    }
    for a in &args.front_ends {
        add(&mut peers.front_ends, &mut peers.unresolved, a);
    }
    for a in &args.back_ends {
        add(&mut peers.back_ends, &mut peers.unresolved, a);
    }
    if let Some(d) = &args.database {
        let (host, port) = url_host(&format!("x://{d}")).unwrap_or((d.clone(), 5432));
        peers.database_port = port;
        add(&mut peers.database, &mut peers.unresolved, &host);
    }
    let on = |key: &str| listeners.iter().find(|l| l.key == key && l.built && l.enabled);
    let mut rules = BTreeSet::new();
    let mut rule = |inbound: bool, peer: Peer, proto: Proto, port: (u16, u16), what: &str| {
        rules.insert(Rule { inbound, peer, proto, port, what: what.to_string() });
    };
    let proxied: BTreeSet<&str> = agora_proxy::ROUTES.iter().map(|p| p.0).collect();
    let backend_ports: BTreeSet<&str> = agora_proxy::ROUTES.iter().map(|p| p.1).collect();
    // What every role that keeps or proxies mail sends out: mail to other domains is
    // the back-ends' (and a single server's) work; DNS everyone needs.
    let outside = |rule: &mut dyn FnMut(bool, Peer, Proto, Ports, &str)| {
        rule(false, Peer::Anyone, Proto::Udp, (53, 53), "DNS queries");
        rule(false, Peer::Anyone, Proto::Tcp, (53, 53), "DNS queries");
    };
    match args.role.as_str() {
        "single" => {
            for l in listeners.iter().filter(|l| l.built && l.enabled && !l.addresses.iter().all(IpAddr::is_loopback)) {
                rule(true, Peer::Anyone, Proto::Tcp, (l.port, l.port_last), l.key);
                if l.datagram {
                    rule(true, Peer::Anyone, Proto::Udp, (l.port, l.port_last), l.key);
                }
            }
            outside(&mut rule);
            rule(false, Peer::Anyone, Proto::Tcp, (25, 25), "mail to other domains");
            rule(false, Peer::Anyone, Proto::Tcp, (443, 443), "MTA-STS policies, ACME");
            if shared {
                rule(false, Peer::Database, Proto::Tcp, (peers.database_port, peers.database_port), "the store");
            }
        }
        "front-end" => {
            for key in &proxied {
                if let Some(l) = on(key) {
                    rule(true, Peer::Anyone, Proto::Tcp, (l.port, l.port_last), key);
                }
            }
            for (front, back) in agora_proxy::ROUTES {
                if on(front).is_some()
                    && let Some(l) = on(back)
                {
                    rule(false, Peer::BackEnds, Proto::Tcp, (l.port, l.port_last), back);
                }
            }
            // The directory (logins, each user's home) is read from the shared store.
            rule(
                false,
                Peer::Database,
                Proto::Tcp,
                (peers.database_port, peers.database_port),
                "the store (directory)",
            );
            outside(&mut rule);
        }
        _ => {
            for key in &backend_ports {
                if let Some(l) = on(key) {
                    rule(true, Peer::FrontEnds, Proto::Tcp, (l.port, l.port_last), key);
                }
            }
            // Services no front-end carries are reached directly.
            for l in listeners.iter().filter(|l| {
                l.built
                    && l.enabled
                    && !proxied.contains(l.key)
                    && !backend_ports.contains(l.key)
                    && l.key != "replication"
                    && !l.addresses.iter().all(IpAddr::is_loopback)
            }) {
                rule(true, Peer::Anyone, Proto::Tcp, (l.port, l.port_last), l.key);
                if l.datagram {
                    rule(true, Peer::Anyone, Proto::Udp, (l.port, l.port_last), l.key);
                }
            }
            if let Some(l) = on("replication") {
                rule(true, Peer::BackEnds, Proto::Tcp, (l.port, l.port_last), "replication");
                rule(false, Peer::BackEnds, Proto::Tcp, (l.port, l.port_last), "replication");
            }
            rule(false, Peer::Database, Proto::Tcp, (peers.database_port, peers.database_port), "the store");
            outside(&mut rule);
            rule(false, Peer::Anyone, Proto::Tcp, (25, 25), "mail to other domains");
            rule(false, Peer::Anyone, Proto::Tcp, (443, 443), "MTA-STS policies, ACME");
        }
    }
    for u in &peers.unresolved {
        notes.push(format!("{u} is a name, not an address: give the address (--front-end, --back-end, --database)"));
    }
    for p in [Peer::FrontEnds, Peer::BackEnds, Peer::Database] {
        if rules.iter().any(|r| r.peer == p) && peers.of(p).is_empty() {
            notes.push(format!("no {} known yet: their rules match nobody until you add them", p.label()));
        }
    }
    let rules: Vec<Rule> = rules.into_iter().collect();
    let text = match args.format.as_str() {
        "nftables" => nftables(&args.role, &rules, &peers, &notes),
        "iptables" => iptables(&args.role, &rules, &peers, &notes),
        _ => table(&args.role, &rules, &peers, &notes),
    };
    print!("{text}");
    Ok(())
}

fn nftables(role: &str, rules: &[Rule], peers: &Peers, notes: &[String]) -> String {
    let mut s =
        format!("#!/usr/sbin/nft -f\n# agora firewall --role {role}: the flows this node needs; nothing else.\n");
    for n in notes {
        let _ = writeln!(s, "# note: {n}");
    }
    s.push_str("table inet agora\ndelete table inet agora\ntable inet agora {\n");
    for p in [Peer::FrontEnds, Peer::BackEnds, Peer::Database] {
        for (v6, ty) in [(false, "ipv4_addr"), (true, "ipv6_addr")] {
            let elems: Vec<String> = peers.of(p).iter().filter(|a| a.is_ipv6() == v6).map(IpAddr::to_string).collect();
            let suffix = if v6 { "v6" } else { "v4" };
            if elems.is_empty() {
                let _ = writeln!(s, "    set {}_{suffix} {{ type {ty}; }}", p.set());
            } else {
                let _ =
                    writeln!(s, "    set {}_{suffix} {{ type {ty}; elements = {{ {} }} }}", p.set(), elems.join(", "));
            }
        }
    }
    for (chain, hook, inbound) in [("input", "input", true), ("output", "output", false)] {
        let _ = writeln!(s, "    chain {chain} {{\n        type filter hook {hook} priority filter; policy drop;");
        s.push_str("        ct state established,related accept\n        ct state invalid drop\n");
        let _ = writeln!(s, "        {} \"lo\" accept", if inbound { "iif" } else { "oif" });
        s.push_str("        meta l4proto { icmp, ipv6-icmp } accept\n");
        // One rule a service, each saying what it is for.
        for r in rules.iter().filter(|r| r.inbound == inbound) {
            let (dir, label) = if inbound { ("saddr", "from") } else { ("daddr", "to") };
            let comment = format!("comment \"{} {label} {}\"", r.what, r.peer.label());
            let (proto, port) = (r.proto.name(), ports(r.port, '-'));
            if r.peer == Peer::Anyone {
                let _ = writeln!(s, "        {proto} dport {port} accept {comment}");
            } else {
                for (fam, suffix) in [("ip", "v4"), ("ip6", "v6")] {
                    let _ = writeln!(
                        s,
                        "        {fam} {dir} @{}_{suffix} {proto} dport {port} accept {comment}",
                        r.peer.set()
                    );
                }
            }
        }
        s.push_str("    }\n");
    }
    s.push_str("}\n");
    s
}

fn iptables(role: &str, rules: &[Rule], peers: &Peers, notes: &[String]) -> String {
    let mut s = String::new();
    for (v6, tool) in [(false, "iptables-restore"), (true, "ip6tables-restore")] {
        let _ = writeln!(s, "# agora firewall --role {role}: load with {tool}");
        for n in notes {
            let _ = writeln!(s, "# note: {n}");
        }
        s.push_str("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n");
        let icmp = if v6 { "ipv6-icmp" } else { "icmp" };
        for chain in ["INPUT", "OUTPUT"] {
            let lo = if chain == "INPUT" { "-i lo" } else { "-o lo" };
            let _ = writeln!(s, "-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT");
            let _ = writeln!(s, "-A {chain} {lo} -j ACCEPT");
            let _ = writeln!(s, "-A {chain} -p {icmp} -j ACCEPT");
        }
        for r in rules {
            let chain = if r.inbound { "INPUT" } else { "OUTPUT" };
            let flag = if r.inbound { "-s" } else { "-d" };
            let comment = format!(
                "-m comment --comment \"{} {} {}\"",
                r.what,
                if r.inbound { "from" } else { "to" },
                r.peer.label()
            );
            let line = |who: &str| {
                format!(
                    "-A {chain} {who}-p {} -m {} --dport {} -m conntrack --ctstate NEW {comment} -j ACCEPT\n",
                    r.proto.name(),
                    r.proto.name(),
                    ports(r.port, ':')
                )
            };
            if r.peer == Peer::Anyone {
                s.push_str(&line(""));
            } else {
                for a in peers.of(r.peer).iter().filter(|a| a.is_ipv6() == v6) {
                    s.push_str(&line(&format!("{flag} {a} ")));
                }
            }
        }
        s.push_str("COMMIT\n");
    }
    s
}

fn table(role: &str, rules: &[Rule], peers: &Peers, notes: &[String]) -> String {
    let mut s = format!("Firewall for a {role} node (everything else is dropped):\n");
    let _ = writeln!(s, "{:<4} {:<12} {:<40} {:<10} service", "dir", "peer", "addresses", "port");
    for r in rules {
        let addrs = match r.peer {
            Peer::Anyone => "any".to_string(),
            p => {
                let list: Vec<String> = peers.of(p).iter().map(IpAddr::to_string).collect();
                if list.is_empty() { "(none known)".to_string() } else { list.join(", ") }
            }
        };
        let dir = if r.inbound { "in" } else { "out" };
        let port = format!("{}/{}", ports(r.port, '-'), r.proto.name());
        let _ = writeln!(s, "{dir:<4} {:<12} {addrs:<40} {port:<10} {}", r.peer.label(), r.what);
    }
    for n in notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_host_and_port_from_the_url() {
        assert_eq!(url_host("postgres://agora:pw@10.0.0.9:6432/mail"), Some(("10.0.0.9".into(), 6432)));
        assert_eq!(url_host("postgres://agora@db.example/mail"), Some(("db.example".into(), 5432)));
        assert_eq!(url_host("postgresql://u@[2001:db8::5]:5433/m"), Some(("2001:db8::5".into(), 5433)));
    }
}
