//! `agora routing`: the organisation's routing groups and connectors (the topology of
//! the link-state table), and what the table says now: versions, digest, each
//! connector's state and the route each group takes to every other.

use std::collections::BTreeMap;

use agora_mail::routing::{Connector, Group, Hop, Member, Table, valid_name};
use agora_store::ClusterStore;
use anyhow::{Result, bail};
use clap::Subcommand;

use crate::Cli;

#[derive(Debug, Subcommand)]
pub enum RoutingCmd {
    /// Name the organisation (every server of it must carry the same name).
    Org { name: String },
    /// Routing groups and their member servers.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Connectors between groups, or from a group to the outside.
    #[command(subcommand)]
    Connector(ConnectorCmd),
    /// Exchange tables now with a server of the organisation over its routing port
    /// (691): how a new server gets the organisation's table.
    Join {
        host: String,
        #[arg(long, default_value_t = 691)]
        port: u16,
    },
    /// Groups, members, masters, connectors with their cost and state, the table's
    /// versions and digest, and the route each group takes to every other now.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Add a routing group.
    Add {
        name: String,
        /// Its routing group master (one of its members).
        #[arg(long)]
        master: Option<String>,
        /// Mail domains whose mailboxes are in this group (repeat for several).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Remove a group (and the connectors that touch it).
    Remove { name: String },
    /// Add (or change) a member server of a group, or remove it with --remove.
    Member {
        group: String,
        node: String,
        /// Where other servers reach it.
        #[arg(long, required_unless_present = "remove")]
        host: Option<String>,
        #[arg(long, default_value_t = 25)]
        smtp_port: u16,
        #[arg(long, default_value_t = 691)]
        routing_port: u16,
        /// Make it the group's routing group master.
        #[arg(long)]
        master: bool,
        #[arg(long)]
        remove: bool,
    },
    /// Say that a domain's mailboxes are in a group (or no longer, with --remove).
    Domain {
        group: String,
        domain: String,
        #[arg(long)]
        remove: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConnectorArgs {
    /// The group it starts from.
    #[arg(long)]
    from: Option<String>,
    /// The group it leads to (none: it leads out of the organisation).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    cost: Option<u32>,
    /// Members of --from that carry its mail (comma-separated; default: any).
    #[arg(long, value_delimiter = ',')]
    bridgeheads_from: Option<Vec<String>>,
    /// Members of --to that receive its mail.
    #[arg(long, value_delimiter = ',')]
    bridgeheads_to: Option<Vec<String>>,
    /// Address spaces it carries: `*`, a domain, or `*.domain` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    spaces: Option<Vec<String>>,
    /// Largest message it carries, in octets (0: any).
    #[arg(long)]
    max_size: Option<u64>,
    /// When it carries mail (UTC): `always`, `never`, or windows such as
    /// `mon-fri 18:00-07:00, sat 00:00-24:00`.
    #[arg(long)]
    schedule: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectorCmd {
    /// Add a connector.
    Add {
        name: String,
        #[command(flatten)]
        args: ConnectorArgs,
    },
    /// Change a connector's settings.
    Set {
        name: String,
        #[command(flatten)]
        args: ConnectorArgs,
    },
    /// Remove a connector.
    Remove { name: String },
}

/// This server in the routing organisation, as the command line sees it: its name in
/// the table (`[routing] node`, else the configured host name) and, when a secret is
/// set, its identity.
pub fn identity(cli: &Cli) -> Result<(String, Option<agora_mail::routing::Identity>)> {
    let cfg = crate::config::load_or_default(&crate::serve::config_path(cli))?.config;
    let hostname = cfg.server.hostname.unwrap_or_else(crate::serve::system_hostname);
    crate::serve::routing_identity(cli, &hostname)
}

fn name(kind: &str, n: &str) -> Result<String> {
    if !valid_name(n) {
        bail!("{kind} {n:?}: letters, digits, '.', '-' and '_' only (at most 64)");
    }
    Ok(n.to_string())
}

fn apply(t: &mut Table, cmd: &RoutingCmd) -> Result<String> {
    let group = |t: &Table, g: &str| -> Result<()> {
        if !t.groups.contains_key(g) {
            bail!("no routing group {g}");
        }
        Ok(())
    };
    Ok(match cmd {
        RoutingCmd::Org { name: n } => {
            t.org = name("organisation", n)?;
            format!("organisation {n}")
        }
        RoutingCmd::Group(GroupCmd::Add { name: n, master, domains }) => {
            let n = name("group", n)?;
            if t.groups.contains_key(&n) {
                bail!("routing group {n} exists");
            }
            let master = match master {
                Some(m) => name("node", m)?,
                None => String::new(),
            };
            let mut g = Group { master, ..Group::default() };
            for d in domains {
                g.domains.insert(agora_directory::normalize_domain(d)?);
            }
            t.groups.insert(n.clone(), g);
            format!("routing group {n} added")
        }
        RoutingCmd::Group(GroupCmd::Remove { name: n }) => {
            if t.groups.remove(n).is_none() {
                bail!("no routing group {n}");
            }
            t.connectors.retain(|_, c| c.from != *n && c.to != *n);
            format!("routing group {n} removed, with its connectors")
        }
        RoutingCmd::Group(GroupCmd::Member { group: g, node, host, smtp_port, routing_port, master, remove }) => {
            group(t, g)?;
            let node = name("node", node)?;
            if *remove {
                let grp = t.groups.get_mut(g).expect("checked");
                if grp.members.remove(&node).is_none() {
                    bail!("{node} is not a member of {g}");
                }
                if grp.master == node {
                    grp.master.clear();
                }
                return Ok(format!("{node} removed from {g}"));
            }
            if let Some(other) = t.group_of(&node).filter(|o| o != g) {
                bail!("{node} is a member of {other}: a server is in one routing group");
            }
            let host = host.clone().unwrap_or_default();
            if host.is_empty() || host.contains(char::is_whitespace) {
                bail!("--host: say where other servers reach {node}");
            }
            let grp = t.groups.get_mut(g).expect("checked");
            grp.members.insert(node.clone(), Member { host, smtp_port: *smtp_port, routing_port: *routing_port });
            if *master || grp.master.is_empty() {
                grp.master = node.clone();
            }
            format!("{node} is a member of {g} (master: {})", grp.master)
        }
        RoutingCmd::Group(GroupCmd::Domain { group: g, domain, remove }) => {
            group(t, g)?;
            let d = agora_directory::normalize_domain(domain)?;
            if !*remove && let Some(other) = t.group_of_domain(&d).filter(|o| o != g) {
                bail!("{d} is in {other} already");
            }
            let grp = t.groups.get_mut(g).expect("checked");
            if *remove {
                grp.domains.remove(&d);
                format!("{d} no longer in {g}")
            } else {
                grp.domains.insert(d.clone());
                format!("{d} is in {g}")
            }
        }
        RoutingCmd::Connector(ConnectorCmd::Add { name: n, args })
        | RoutingCmd::Connector(ConnectorCmd::Set { name: n, args }) => {
            let adding = matches!(cmd, RoutingCmd::Connector(ConnectorCmd::Add { .. }));
            let n = name("connector", n)?;
            let mut c = match (t.connectors.get(&n), adding) {
                (Some(_), true) => bail!("connector {n} exists (change it with `set`)"),
                (None, false) => bail!("no connector {n}"),
                (Some(c), false) => c.clone(),
                (None, true) => Connector { cost: 1, ..Connector::default() },
            };
            if let Some(f) = &args.from {
                c.from = f.clone();
            }
            if let Some(to) = &args.to {
                c.to = if to == "-" { String::new() } else { to.clone() };
            }
            if let Some(v) = args.cost {
                if v == 0 {
                    bail!("--cost: at least 1");
                }
                c.cost = v;
            }
            if let Some(v) = &args.bridgeheads_from {
                c.bridgeheads_from = v.clone();
            }
            if let Some(v) = &args.bridgeheads_to {
                c.bridgeheads_to = v.clone();
            }
            if let Some(v) = &args.spaces {
                c.spaces = v.iter().map(|s| s.to_ascii_lowercase()).collect();
            }
            if let Some(v) = args.max_size {
                c.max_size = v;
            }
            if let Some(v) = &args.schedule {
                c.schedule = agora_mail::routing::parse_schedule(v).map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
            }
            group(t, &c.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
            if !c.to.is_empty() {
                group(t, &c.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
                if c.to == c.from {
                    bail!("a connector joins two different groups");
                }
            } else if c.spaces.is_empty() {
                bail!("a connector out of the organisation needs --spaces (`*` for everything)");
            }
            for (b, g) in
                c.bridgeheads_from.iter().map(|b| (b, &c.from)).chain(c.bridgeheads_to.iter().map(|b| (b, &c.to)))
            {
                if t.group_of(b) != Some(g.as_str()) {
                    bail!("bridgehead {b} is not a member of {g}");
                }
            }
            t.connectors.insert(n.clone(), c);
            format!("connector {n} {}", if adding { "added" } else { "changed" })
        }
        RoutingCmd::Connector(ConnectorCmd::Remove { name: n }) => {
            if t.connectors.remove(n).is_none() {
                bail!("no connector {n}");
            }
            t.states.remove(n);
            format!("connector {n} removed")
        }
        RoutingCmd::Show { .. } | RoutingCmd::Join { .. } => String::new(),
    })
}

/// A connector's schedule as people read it: `always`, `never`, or its windows as
/// day and time ranges (UTC).
fn schedule(c: &Connector) -> String {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let at = |m: u32| format!("{} {:02}:{:02}", DAYS[(m / 1440 % 7) as usize], m % 1440 / 60, m % 60);
    match &c.schedule {
        None => "always".into(),
        Some(w) if w.is_empty() => "never".into(),
        Some(w) => w.iter().map(|(a, b)| format!("{}-{}", at(*a), at(*b))).collect::<Vec<_>>().join(", "),
    }
}

/// Each group's route to every other, from its master (or first member).
fn routes(t: &Table) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (from, g) in &t.groups {
        let Some(node) = std::iter::once(&g.master).chain(g.members.keys()).find(|n| g.members.contains_key(*n)) else {
            continue;
        };
        for to in t.groups.keys().filter(|to| *to != from) {
            let r = t.route_to_group(node, to, 0);
            let text = if r.hop == Hop::Unreachable { "unreachable".to_string() } else { r.describe() };
            out.insert((from.clone(), to.clone()), text);
        }
    }
    out
}

fn show(t: &Table, json: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (major, minor) = t.versions();
    let digest = t.digest();
    let routes = routes(t);
    if json {
        let groups: Vec<_> = t
            .groups
            .iter()
            .map(|(n, g)| {
                serde_json::json!({
                    "name": n, "master": g.master, "domains": g.domains,
                    "members": g.members.iter().map(|(m, x)| serde_json::json!({
                        "node": m, "host": x.host, "smtp_port": x.smtp_port, "routing_port": x.routing_port,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let connectors: Vec<_> = t
            .connectors
            .iter()
            .map(|(n, c)| {
                serde_json::json!({
                    "name": n, "from": c.from, "to": if c.to.is_empty() { None } else { Some(&c.to) },
                    "cost": c.cost, "state": if t.is_up(n) { "up" } else { "down" },
                    "bridgeheads_from": c.bridgeheads_from, "bridgeheads_to": c.bridgeheads_to,
                    "spaces": c.spaces, "max_size": c.max_size, "schedule": schedule(c),
                })
            })
            .collect();
        let routes: Vec<_> =
            routes.iter().map(|((f, to), r)| serde_json::json!({ "from": f, "to": to, "route": r })).collect();
        let v = serde_json::json!({
            "organization": t.org, "version": { "major": major, "minor": minor }, "digest": digest,
            "groups": groups, "connectors": connectors, "routes": routes,
        });
        let _ = writeln!(out, "{v}");
        return out;
    }
    let _ = writeln!(
        out,
        "organisation {}  version {major}.{minor}  digest {digest}",
        if t.org.is_empty() { "-" } else { &t.org }
    );
    for (n, g) in &t.groups {
        let master = if g.master.is_empty() { "none" } else { &g.master };
        let _ = writeln!(out, "group {n}  master {master}");
        for (m, x) in &g.members {
            let _ = writeln!(out, "  member {m}  {}  smtp {}  routing {}", x.host, x.smtp_port, x.routing_port);
        }
        for d in &g.domains {
            let _ = writeln!(out, "  domain {d}");
        }
    }
    for (n, c) in &t.connectors {
        let to = if c.to.is_empty() { "outside" } else { &c.to };
        let state = if t.is_up(n) { "up" } else { "down" };
        let spaces = if c.spaces.is_empty() { "-".to_string() } else { c.spaces.join(",") };
        let mut extra = String::new();
        if c.max_size > 0 {
            extra.push_str(&format!("  max size {}", c.max_size));
        }
        if c.schedule.is_some() {
            extra.push_str(&format!("  schedule {}", schedule(c)));
        }
        let _ = writeln!(out, "connector {n}  {} -> {to}  cost {}  {state}  spaces {spaces}{extra}", c.from, c.cost);
    }
    for ((f, to), r) in &routes {
        let _ = writeln!(out, "route {f} -> {to}: {r}");
    }
    out
}

pub async fn routing(cli: &Cli, cmd: &RoutingCmd) -> Result<()> {
    let (store, _) = crate::admin::open_store(cli).await?;
    let (node, me) = identity(cli)?;
    if let RoutingCmd::Join { host, port } = cmd {
        let Some(me) = me else {
            bail!("[routing] secret_file is not set: this server is in no organisation");
        };
        let dyn_store: std::sync::Arc<dyn agora_store::Store> = std::sync::Arc::new(std::sync::Arc::clone(&store));
        let done = agora_routing::client::sync(&dyn_store, &me, host, *port).await.map_err(anyhow::Error::msg)?;
        let (_, t) = agora_mail::routing::load(&dyn_store).await.map_err(anyhow::Error::msg)?;
        let (major, minor) = t.versions();
        println!(
            "tables {} with {}; routing table version {major}.{minor}, digest {}",
            if done.exchanged { "exchanged" } else { "already the same" },
            done.peer,
            t.digest()
        );
        store.close();
        return Ok(());
    }
    // Read, change, write over what was read: a change made meanwhile is redone on top.
    loop {
        let before = store.routing_table().await?;
        let mut t = match &before {
            Some(text) => Table::decode(text)?,
            None => Table::default(),
        };
        if let RoutingCmd::Show { json } = cmd {
            crate::to_stdout(show(&t, *json).as_bytes())?;
            break;
        }
        let said = apply(&mut t, cmd)?;
        t.touch_topology(&node);
        // Nothing is written that this server (or another) could not read back.
        let text = t.encode();
        if let Err(e) = Table::decode(&text) {
            bail!("that change would make a table that cannot be read ({e}); nothing was changed");
        }
        if store.replace_routing_table(before, text).await? {
            let (major, minor) = t.versions();
            println!("{said}; routing table version {major}.{minor}");
            break;
        }
    }
    store.close();
    Ok(())
}
