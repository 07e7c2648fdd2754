//! Link-state routing between routing groups: the organisation's table (topology and
//! each connector's up/down state), its canonical text and digest, merging tables
//! heard from other servers (every part keeps its newest stamp, so all servers that
//! heard the same parts hold the same table), damping of state changes, and the
//! cheapest route over connectors that are up (Dijkstra over groups).
//! Also what both carriers of tables share (the 691 service and SMTP's X-LINK2STATE):
//! this server's identity, proofs of membership bound to a TLS session, and the table
//! as the store keeps it (every change written over what was read).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_store::Store;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The largest table taken from another server.
pub const MAX_TABLE: usize = 256 * 1024;
const MAX_LINE: usize = 4096;
const MAX_LIST: usize = 64;

/// Who changed a part of the table last: a counter, then the node that moved it
/// (two changes with one counter are told apart by name, the same way everywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub version: u64,
    pub origin: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Host name or address other servers reach it at.
    pub host: String,
    pub smtp_port: u16,
    pub routing_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The member that merges its group's reports and pushes the table to them.
    pub master: String,
    pub members: BTreeMap<String, Member>,
    /// Mail domains whose mailboxes are in this group.
    pub domains: BTreeSet<String>,
}

/// A connector: between two groups, or (`to` empty) from a group to the outside for
/// the address spaces it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connector {
    pub from: String,
    pub to: String,
    pub cost: u32,
    /// Members of `from` (and of `to`) that carry its mail; empty: any member.
    pub bridgeheads_from: Vec<String>,
    pub bridgeheads_to: Vec<String>,
    /// Domains it carries (`*` for all, `*.example` for a domain and its subdomains);
    /// a group connector carries whatever lies beyond it unless this narrows it.
    pub spaces: Vec<String>,
    /// Largest message it carries, in octets (0: any).
    pub max_size: u64,
    /// When it carries mail: None always; otherwise windows in minutes of the week
    /// (UTC, Monday 00:00 is 0), none at all meaning never.
    pub schedule: Option<Vec<(u32, u32)>>,
}

/// Minutes in a week.
pub const WEEK: u32 = 7 * 24 * 60;

/// The minute of the week now (UTC, Monday 00:00 is 0).
pub fn week_minute_now() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    // 1970-01-01 was a Thursday: three days after a Monday.
    (((secs / 60) + 3 * 24 * 60) % u64::from(WEEK)) as u32
}

/// A schedule as an administrator writes it: `always`, `never`, or windows separated by
/// commas, each `[DAYS] HH:MM-HH:MM` (UTC; DAYS `mon`, `mon-fri`, …; a window past
/// midnight goes on into the next day).
pub fn parse_schedule(text: &str) -> Result<Option<Vec<(u32, u32)>>, String> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "always" | "" => return Ok(None),
        "never" => return Ok(Some(Vec::new())),
        _ => {}
    }
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day =
        |d: &str| DAYS.iter().position(|x| *x == d).map(|i| i as u32).ok_or(format!("{d:?} is not a day (mon … sun)"));
    let hm = |v: &str| -> Result<u32, String> {
        let (h, m) = v.split_once(':').ok_or(format!("{v:?} is not HH:MM"))?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| format!("{v:?}"))?, m.parse().map_err(|_| format!("{v:?}"))?);
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(format!("{v:?} is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let mut out = Vec::new();
    for window in t.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (days, times) = match window.split_once(' ') {
            Some((d, t)) => (Some(d), t.trim()),
            None => (None, window),
        };
        let (first, last) = match days {
            None => (0, 6),
            Some(d) => match d.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None => (day(d)?, day(d)?),
            },
        };
        let (from, to) = times.split_once('-').ok_or(format!("{times:?} is not HH:MM-HH:MM"))?;
        let (from, to) = (hm(from)?, hm(to)?);
        if from == 1440 {
            return Err(format!("{times:?}: a window starts before 24:00"));
        }
        let mut d = first;
        loop {
            let start = d * 1440 + from;
            let end = if to > from { d * 1440 + to } else { d * 1440 + 1440 + to };
            if end > WEEK {
                out.push((start, WEEK));
                out.push((0, end - WEEK));
            } else {
                out.push((start, end));
            }
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    if out.is_empty() {
        return Err("no window".into());
    }
    out.sort();
    Ok(Some(out))
}

fn schedule_text(s: &Option<Vec<(u32, u32)>>) -> String {
    match s {
        None => "always".into(),
        Some(w) if w.is_empty() => "never".into(),
        Some(w) => w.iter().map(|(a, b)| format!("{a}-{b}")).collect::<Vec<_>>().join(","),
    }
}

impl Connector {
    /// Whether its schedule lets it carry mail at `minute` of the week.
    pub fn open_at(&self, minute: u32) -> bool {
        match &self.schedule {
            None => true,
            Some(w) => w.iter().any(|(a, b)| (*a..*b).contains(&minute)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub stamp: Stamp,
}

/// The organisation's routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub org: String,
    /// Topology's stamp: its version is the table's major version.
    pub topology: Stamp,
    pub groups: BTreeMap<String, Group>,
    pub connectors: BTreeMap<String, Connector>,
    /// Connector state, by connector name; a connector without one is up.
    pub states: BTreeMap<String, LinkState>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing table, line {line}: {what}")]
pub struct TableError {
    pub line: usize,
    pub what: String,
}

/// Names of groups, nodes and connectors: letters, digits, '.', '-', '_'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_space(s: &str) -> bool {
    s == "*" || {
        let d = s.strip_prefix("*.").unwrap_or(s);
        !d.is_empty() && d.len() <= 253 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

impl Table {
    /// The major (topology) and minor (state) versions.
    pub fn versions(&self) -> (u64, u64) {
        (self.topology.version, self.states.values().map(|s| s.stamp.version).max().unwrap_or(0))
    }

    /// The canonical text: every server writes the same table the same way.
    pub fn encode(&self) -> String {
        let mut s = String::from("agora-routing 1\n");
        let dash = |v: &str| if v.is_empty() { "-".to_string() } else { v.to_string() };
        let _ = writeln!(s, "org {}", dash(&self.org));
        let _ = writeln!(s, "topology {} {}", self.topology.version, dash(&self.topology.origin));
        for (name, g) in &self.groups {
            let _ = writeln!(s, "group {name} {}", if g.master.is_empty() { "-" } else { &g.master });
            for (node, m) in &g.members {
                let _ = writeln!(s, "member {name} {node} {} {} {}", m.host, m.smtp_port, m.routing_port);
            }
            for d in &g.domains {
                let _ = writeln!(s, "domain {name} {d}");
            }
        }
        for (name, c) in &self.connectors {
            let _ = writeln!(
                s,
                "connector {name} {} {} {} {} {} {} {} {}",
                c.from,
                if c.to.is_empty() { "-" } else { &c.to },
                c.cost,
                list(&c.bridgeheads_from),
                list(&c.bridgeheads_to),
                list(&c.spaces),
                c.max_size,
                schedule_text(&c.schedule)
            );
        }
        for (name, st) in &self.states {
            let _ = writeln!(
                s,
                "state {name} {} {} {}",
                if st.up { "up" } else { "down" },
                st.stamp.version,
                st.stamp.origin
            );
        }
        s
    }

    /// SHA-256 of the canonical text, in hex.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.encode().as_bytes()))
    }

    /// Reads a table in its canonical text (from the store or another server).
    pub fn decode(text: &str) -> Result<Table, TableError> {
        if text.len() > MAX_TABLE {
            return Err(TableError { line: 0, what: "larger than the limit".into() });
        }
        let mut t = Table::default();
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, "agora-routing 1")) => {}
            _ => return Err(TableError { line: 1, what: "not an Agora routing table of version 1".into() }),
        }
        for (i, line) in lines {
            let err = |what: &str| TableError { line: i + 1, what: what.to_string() };
            if line.len() > MAX_LINE {
                return Err(err("line too long"));
            }
            let w: Vec<&str> = line.split(' ').collect();
            let name = |k: usize| -> Result<String, TableError> {
                let v = w.get(k).copied().unwrap_or_default();
                if valid_name(v) { Ok(v.to_string()) } else { Err(err("bad name")) }
            };
            let num = |k: usize| -> Result<u64, TableError> {
                w.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| err("bad number"))
            };
            let names = |k: usize| -> Result<Vec<String>, TableError> {
                match w.get(k).copied() {
                    Some("-") => Ok(Vec::new()),
                    Some(v) => {
                        let l: Vec<String> = v.split(',').map(str::to_string).collect();
                        if l.len() > MAX_LIST || !l.iter().all(|n| valid_name(n)) {
                            return Err(err("bad list of names"));
                        }
                        Ok(l)
                    }
                    None => Err(err("missing list")),
                }
            };
            match (w[0], w.len()) {
                ("org", 2) => t.org = if w[1] == "-" { String::new() } else { name(1)? },
                ("topology", 3) => {
                    let origin = if w[2] == "-" { String::new() } else { name(2)? };
                    t.topology = Stamp { version: num(1)?, origin };
                }
                ("group", 3) => {
                    let master = if w[2] == "-" { String::new() } else { name(2)? };
                    t.groups.insert(name(1)?, Group { master, ..Group::default() });
                }
                ("member", 6) => {
                    let g = t.groups.get_mut(&name(1)?).ok_or_else(|| err("member of an unknown group"))?;
                    let host = w[3];
                    if host.is_empty()
                        || host.len() > 253
                        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
                    {
                        return Err(err("bad host"));
                    }
                    let port = |k| u16::try_from(num(k)?).map_err(|_| err("bad port"));
                    g.members.insert(
                        name(2)?,
                        Member { host: host.to_string(), smtp_port: port(4)?, routing_port: port(5)? },
                    );
                }
                ("domain", 3) => {
                    let g = t.groups.get_mut(&name(1)?).ok_or_else(|| err("domain of an unknown group"))?;
                    if !valid_space(w[2]) || w[2].starts_with('*') {
                        return Err(err("bad domain"));
                    }
                    g.domains.insert(w[2].to_string());
                }
                ("connector", 9 | 10) => {
                    let schedule = match w.get(9).copied() {
                        None | Some("always") => None,
                        Some("never") => Some(Vec::new()),
                        Some(v) => {
                            let mut l = Vec::new();
                            for r in v.split(',').take(MAX_LIST * 7) {
                                let (a, b) = r.split_once('-').ok_or_else(|| err("bad schedule"))?;
                                let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
                                    (Ok(a), Ok(b)) if a < b && b <= WEEK => (a, b),
                                    _ => return Err(err("bad schedule")),
                                };
                                l.push((a, b));
                            }
                            Some(l)
                        }
                    };
                    let to = if w[3] == "-" { String::new() } else { name(3)? };
                    let spaces = match w[7] {
                        "-" => Vec::new(),
                        v => {
                            let l: Vec<String> = v.split(',').map(str::to_string).collect();
                            if l.len() > MAX_LIST || !l.iter().all(|s| valid_space(s)) {
                                return Err(err("bad address space"));
                            }
                            l
                        }
                    };
                    let c = Connector {
                        from: name(2)?,
                        to,
                        cost: u32::try_from(num(4)?)
                            .ok()
                            .filter(|c| *c >= 1)
                            .ok_or_else(|| err("bad cost (at least 1)"))?,
                        bridgeheads_from: names(5)?,
                        bridgeheads_to: names(6)?,
                        spaces,
                        max_size: num(8)?,
                        schedule,
                    };
                    t.connectors.insert(name(1)?, c);
                }
                ("state", 5) => {
                    let up = match w[2] {
                        "up" => true,
                        "down" => false,
                        _ => return Err(err("state is up or down")),
                    };
                    t.states.insert(name(1)?, LinkState { up, stamp: Stamp { version: num(3)?, origin: name(4)? } });
                }
                _ => return Err(err("unknown line")),
            }
        }
        Ok(t)
    }

    /// Takes what is newer in `other`: its topology if its stamp is later, each
    /// connector's state if later. True if anything changed here.
    pub fn merge(&mut self, other: &Table) -> bool {
        if other.org != self.org && !self.org.is_empty() {
            return false;
        }
        let before = self.clone();
        // Equal stamps on different content (a store restored from a backup, two
        // servers of one name) are told apart by the content, the same way everywhere.
        let newer_topology = other.topology > self.topology
            || (other.topology == self.topology && other.topology_digest() > self.topology_digest());
        if newer_topology {
            self.org = other.org.clone();
            self.topology = other.topology.clone();
            self.groups = other.groups.clone();
            self.connectors = other.connectors.clone();
        }
        for (name, st) in &other.states {
            match self.states.get(name) {
                Some(mine) if (&mine.stamp, !mine.up) >= (&st.stamp, !st.up) => {}
                _ => {
                    self.states.insert(name.clone(), st.clone());
                }
            }
        }
        // States of connectors no longer in the topology go with them.
        let connectors = &self.connectors;
        self.states.retain(|name, _| connectors.contains_key(name));
        *self != before
    }

    /// SHA-256 of the topology's part of the canonical text.
    fn topology_digest(&self) -> [u8; 32] {
        let text = Table { states: BTreeMap::new(), ..self.clone() }.encode();
        Sha256::digest(text.as_bytes()).into()
    }

    /// Whether some connector out of the organisation carries `domain` (up or not).
    pub fn carries_outside(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.connectors.values().any(|c| c.to.is_empty() && c.spaces.iter().any(|s| space_match(s, &d).is_some()))
    }

    /// A topology change made here: the next topology version, stamped by `node`.
    pub fn touch_topology(&mut self, node: &str) {
        self.topology = Stamp { version: self.topology.version + 1, origin: node.to_string() };
    }

    /// A state observed here: recorded with the next state version, unless it is the
    /// state already known. True if the table changed.
    pub fn set_state(&mut self, connector: &str, up: bool, node: &str) -> bool {
        if !self.connectors.contains_key(connector) || self.is_up(connector) == up {
            return false;
        }
        let version = self.versions().1 + 1;
        self.states.insert(connector.to_string(), LinkState { up, stamp: Stamp { version, origin: node.to_string() } });
        true
    }

    pub fn is_up(&self, connector: &str) -> bool {
        self.states.get(connector).is_none_or(|s| s.up)
    }

    /// The group a node is a member of.
    pub fn group_of(&self, node: &str) -> Option<&str> {
        self.groups.iter().find(|(_, g)| g.members.contains_key(node)).map(|(n, _)| n.as_str())
    }

    /// The member named `node`, wherever it is.
    pub fn member(&self, node: &str) -> Option<&Member> {
        self.groups.values().find_map(|g| g.members.get(node))
    }

    /// Whether an address is a member's (members are named by address here).
    pub fn is_member_ip(&self, ip: std::net::IpAddr) -> bool {
        self.groups.values().any(|g| g.members.values().any(|m| m.host.parse::<std::net::IpAddr>().ok() == Some(ip)))
    }

    /// The members given by a host name rather than an address.
    pub fn member_names(&self) -> impl Iterator<Item = &str> {
        self.groups
            .values()
            .flat_map(|g| g.members.values())
            .map(|m| m.host.as_str())
            .filter(|h| h.parse::<std::net::IpAddr>().is_err())
    }

    /// The group whose mailboxes hold `domain`'s mail, if a group names it.
    pub fn group_of_domain(&self, domain: &str) -> Option<&str> {
        let d = domain.to_ascii_lowercase();
        self.groups.iter().find(|(_, g)| g.domains.contains(&d)).map(|(n, _)| n.as_str())
    }
}

/// How specifically an address space matches a domain (None: not at all).
fn space_match(space: &str, domain: &str) -> Option<usize> {
    if space == "*" {
        return Some(0);
    }
    if let Some(base) = space.strip_prefix("*.") {
        return (domain == base || domain.ends_with(&format!(".{base}"))).then_some(base.len());
    }
    (space.eq_ignore_ascii_case(domain)).then_some(space.len() + 1)
}

/// Where a message goes next, as routing decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Delivered in this group (the recipient's mailbox or this server's own transport).
    Here,
    /// To this server of our group (a bridgehead of the path's first connector, or
    /// the member the recipient lives on).
    Member(String),
    /// Over `connector` to a bridgehead server of the group beyond.
    Across { connector: String, node: String },
    /// Out of the organisation over an outside connector from this group.
    Out { connector: String },
    /// No path is up.
    Unreachable,
}

/// A route: the groups it passes, the connectors it takes, and the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub groups: Vec<String>,
    pub connectors: Vec<String>,
    pub cost: u64,
    pub hop: Hop,
    /// Other servers that can take the hop, in order: tried when the hop's server does
    /// not answer, so one member down does not stop the path.
    pub also: Vec<String>,
}

impl Route {
    /// One line for queue listings and tracking: `A -[ab]-> B (cost 1)`.
    pub fn describe(&self) -> String {
        if self.groups.is_empty() {
            return "unreachable".into();
        }
        let mut s = self.groups[0].clone();
        for (c, g) in self.connectors.iter().zip(self.groups.iter().skip(1)) {
            let _ = write!(s, " -[{c}]-> {g}");
        }
        if let Some(out) = self.connectors.get(self.groups.len().saturating_sub(1)) {
            let _ = write!(s, " -[{out}]-> outside");
        }
        let _ = write!(s, " (cost {})", self.cost);
        s
    }
}

#[derive(PartialEq, Eq)]
struct Visit(u64, String);

impl Ord for Visit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Cheapest first; names break ties the same way on every server.
        other.0.cmp(&self.0).then_with(|| other.1.cmp(&self.1))
    }
}

impl PartialOrd for Visit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Table {
    /// Cheapest paths from `from` over group connectors that are up, carry a message
    /// of `size` and (when `domain` is given) an address space it matches: for each
    /// group reached, its cost and the connector and group it was reached through.
    fn paths(&self, from: &str, domain: Option<&str>, size: u64, at: u32) -> HashMap<String, (u64, String, String)> {
        let mut best: HashMap<String, (u64, String, String)> = HashMap::new();
        best.insert(from.to_string(), (0, String::new(), String::new()));
        let mut heap = BinaryHeap::from([Visit(0, from.to_string())]);
        while let Some(Visit(cost, g)) = heap.pop() {
            if best.get(&g).is_some_and(|b| b.0 < cost) {
                continue;
            }
            for (name, c) in &self.connectors {
                if c.to.is_empty() || !self.is_up(name) || !c.open_at(at) || (c.max_size > 0 && size > c.max_size) {
                    continue;
                }
                if let Some(d) = domain
                    && !c.spaces.is_empty()
                    && !c.spaces.iter().any(|s| space_match(s, d).is_some())
                {
                    continue;
                }
                // Group connectors carry mail both ways.
                let next = if c.from == g {
                    &c.to
                } else if c.to == g {
                    &c.from
                } else {
                    continue;
                };
                let total = cost + u64::from(c.cost);
                let better = match best.get(next) {
                    None => true,
                    Some((b, via, _)) => total < *b || (total == *b && name < via),
                };
                if better {
                    best.insert(next.clone(), (total, name.clone(), g.clone()));
                    heap.push(Visit(total, next.clone()));
                }
            }
        }
        best
    }

    fn walk_back(paths: &HashMap<String, (u64, String, String)>, to: &str) -> (Vec<String>, Vec<String>) {
        let (mut groups, mut conns) = (vec![to.to_string()], Vec::new());
        let mut at = to.to_string();
        while let Some((_, via, prev)) = paths.get(&at).filter(|p| !p.1.is_empty()) {
            conns.push(via.clone());
            groups.push(prev.clone());
            at = prev.clone();
            if groups.len() > paths.len() + 1 {
                break;
            }
        }
        groups.reverse();
        conns.reverse();
        (groups, conns)
    }

    /// The route for mail from `node` to `domain` (a message of `size` octets):
    /// to the group holding the domain's mailboxes, or out over the outside
    /// connector with the most specific matching address space, cheapest path first.
    pub fn route(&self, node: &str, domain: &str, size: u64) -> Route {
        self.route_at(node, domain, size, week_minute_now())
    }

    /// `route` at a given minute of the week (schedules decide which connectors carry).
    pub fn route_at(&self, node: &str, domain: &str, size: u64, at: u32) -> Route {
        let unreachable =
            Route { groups: Vec::new(), connectors: Vec::new(), cost: 0, hop: Hop::Unreachable, also: Vec::new() };
        let Some(here) = self.group_of(node) else { return unreachable };
        let domain = domain.to_ascii_lowercase();
        if let Some(dest) = self.group_of_domain(&domain) {
            return self.route_to_group_at(node, dest, size, at);
        }
        // Outside: connectors out, most specific space first, then cheapest in total.
        let paths = self.paths(here, Some(&domain), size, at);
        let mut choice: Option<(usize, u64, &String, &Connector)> = None;
        for (name, c) in &self.connectors {
            if !c.to.is_empty() || !self.is_up(name) || !c.open_at(at) || (c.max_size > 0 && size > c.max_size) {
                continue;
            }
            let Some(spec) = c.spaces.iter().filter_map(|s| space_match(s, &domain)).max() else { continue };
            let Some(&(reach, _, _)) = paths.get(&c.from) else { continue };
            let total = reach + u64::from(c.cost);
            let better = match &choice {
                None => true,
                Some((s, t, n, _)) => spec > *s || (spec == *s && (total < *t || (total == *t && name < *n))),
            };
            if better {
                choice = Some((spec, total, name, c));
            }
        }
        let Some((_, cost, name, c)) = choice else { return unreachable };
        let (mut groups, mut connectors) = Self::walk_back(&paths, &c.from);
        if groups.is_empty() {
            groups.push(c.from.clone());
        }
        connectors.push(name.clone());
        let (hop, also) = if c.from == here {
            if c.bridgeheads_from.is_empty() || c.bridgeheads_from.iter().any(|b| b == node) {
                (Hop::Out { connector: name.clone() }, Vec::new())
            } else {
                Self::first_of(self.pick_members(&c.bridgeheads_from, here), Hop::Member)
            }
        } else {
            match connectors.first() {
                Some(first) => self.first_hop(node, here, first),
                None => (Hop::Unreachable, Vec::new()),
            }
        };
        Route { groups, connectors, cost, hop, also }
    }

    /// The route for mail from `node` into the group `dest`.
    pub fn route_to_group(&self, node: &str, dest: &str, size: u64) -> Route {
        self.route_to_group_at(node, dest, size, week_minute_now())
    }

    fn route_to_group_at(&self, node: &str, dest: &str, size: u64, at: u32) -> Route {
        let unreachable =
            Route { groups: Vec::new(), connectors: Vec::new(), cost: 0, hop: Hop::Unreachable, also: Vec::new() };
        let Some(here) = self.group_of(node) else { return unreachable };
        let paths = self.paths(here, None, size, at);
        let Some(&(cost, _, _)) = paths.get(dest) else { return unreachable };
        let (groups, connectors) = Self::walk_back(&paths, dest);
        let (hop, also) = match connectors.first() {
            None => (Hop::Here, Vec::new()),
            Some(c) => self.first_hop(node, here, c),
        };
        Route { groups, connectors, cost, hop, also }
    }

    /// The connectors `me` looks after: those leaving its group that it is a bridgehead
    /// of (the group's master looks after those that name no bridgehead on its side),
    /// each with the far side's servers (`host`, SMTP port). Only the side a connector
    /// starts from judges its state, so the two sides never publish opposite states.
    pub fn watched(&self, me: &str) -> Vec<(String, Vec<(String, u16)>)> {
        let Some(here) = self.group_of(me) else { return Vec::new() };
        let master = self.groups.get(here).is_some_and(|g| g.master == me);
        let mut out = Vec::new();
        for (name, c) in &self.connectors {
            if c.to.is_empty() || c.from != here {
                continue;
            }
            let (ours, theirs, there) = (&c.bridgeheads_from, &c.bridgeheads_to, &c.to);
            if (ours.is_empty() && !master) || (!ours.is_empty() && !ours.iter().any(|b| b == me)) {
                continue;
            }
            let Some(g) = self.groups.get(there) else { continue };
            let far: Vec<(String, u16)> = g
                .members
                .iter()
                .filter(|(n, _)| theirs.is_empty() || theirs.contains(n))
                .map(|(_, m)| (m.host.clone(), m.smtp_port))
                .collect();
            out.push((name.clone(), far));
        }
        out
    }

    /// The next server on a path whose first connector is `conn`: across it when
    /// this node is one of its bridgeheads on our side, else to such a bridgehead.
    fn first_hop(&self, node: &str, here: &str, conn: &str) -> (Hop, Vec<String>) {
        let Some(c) = self.connectors.get(conn) else { return (Hop::Unreachable, Vec::new()) };
        let (ours, theirs, there) = if c.from == here {
            (&c.bridgeheads_from, &c.bridgeheads_to, &c.to)
        } else {
            (&c.bridgeheads_to, &c.bridgeheads_from, &c.from)
        };
        if !ours.is_empty() && !ours.iter().any(|b| b == node) {
            return Self::first_of(self.pick_members(ours, here), Hop::Member);
        }
        Self::first_of(self.pick_members(theirs, there), |n| Hop::Across { connector: conn.to_string(), node: n })
    }

    /// The hop to the first server, the others kept as alternatives.
    fn first_of(mut servers: Vec<String>, hop: impl FnOnce(String) -> Hop) -> (Hop, Vec<String>) {
        if servers.is_empty() {
            return (Hop::Unreachable, servers);
        }
        let first = servers.remove(0);
        (hop(first), servers)
    }

    /// Those of `candidates` (or, if none are named, the group's members, its master
    /// first) that are members of `group`, in order.
    fn pick_members(&self, candidates: &[String], group: &str) -> Vec<String> {
        let Some(g) = self.groups.get(group) else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        let named: Vec<&String> = if candidates.is_empty() {
            std::iter::once(&g.master).chain(g.members.keys()).collect()
        } else {
            candidates.iter().collect()
        };
        for n in named {
            if g.members.contains_key(n) && !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }
}

/// The trace a message carries across groups (`X-Agora-Routing: A, B`): the groups
/// it has been in, in order.
pub const TRACE_HEADER: &str = "X-Agora-Routing";

/// The groups a message's trace names (from the header's value).
pub fn parse_trace(value: &str) -> Vec<String> {
    value.split(',').map(|g| g.trim().to_string()).filter(|g| valid_name(g)).take(MAX_LIST).collect()
}

/// Whether sending into `next` would bring the message back to a group it was in.
pub fn would_loop(trace: &[String], next: &str) -> bool {
    trace.iter().any(|g| g == next)
}

/// Holds state changes until they last: a connector that flaps is reported only once
/// it has stayed down (or up) for the damping time.
#[derive(Debug, Default)]
pub struct Damper {
    pending: HashMap<String, (bool, Instant)>,
}

impl Damper {
    /// A state observed now; a change back to the published state cancels a pending one.
    pub fn observe(&mut self, connector: &str, up: bool, published: bool, now: Instant) {
        if up == published {
            self.pending.remove(connector);
            return;
        }
        self.pending
            .entry(connector.to_string())
            .and_modify(|p| {
                if p.0 != up {
                    *p = (up, now);
                }
            })
            .or_insert((up, now));
    }

    /// Changes that have held for `hold`, to publish now (and forget here).
    pub fn due(&mut self, hold: Duration, now: Instant) -> Vec<(String, bool)> {
        let due: Vec<(String, bool)> = self
            .pending
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= hold)
            .map(|(c, (up, _))| (c.clone(), *up))
            .collect();
        for (c, _) in &due {
            self.pending.remove(c);
        }
        due
    }
}

/// This server in the organisation: its name in the table and the shared secret.
#[derive(Clone)]
pub struct Identity {
    pub node: String,
    pub secret: Arc<Vec<u8>>,
    /// How often tables are compared with neighbours even when nothing changed here.
    pub interval: Duration,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("Identity").field("node", &self.node).finish()
    }
}

/// Who speaks a proof: the server's and the client's differ, so one cannot be
/// replayed as the other.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Server,
    Client,
}

/// HMAC-SHA256 of the organisation's secret over the session's channel binding, both
/// nonces and both names: a proof of membership good for that one TLS session.
pub fn proof(
    secret: &[u8],
    side: Side,
    binding: &[u8; 32],
    client: (&str, &[u8; 16]),
    server: (&str, &[u8; 16]),
) -> [u8; 32] {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(match side {
        Side::Server => b"agora-routing server\0",
        Side::Client => b"agora-routing client\0",
    });
    m.update(binding);
    for (name, nonce) in [client, server] {
        m.update(&(name.len() as u32).to_be_bytes());
        m.update(name.as_bytes());
        m.update(nonce);
    }
    m.finalize().into_bytes().into()
}

pub use agora_directory::sasl::constant_time_eq;

pub fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    let _ = getrandom::fill(&mut n);
    n
}

pub use agora_store::blob::{hex, unhex};

/// The table in the store now (empty when none was made), with the text it was read from.
pub async fn load(store: &Arc<dyn Store>) -> Result<(Option<String>, Table), String> {
    let text = store.routing_table().await.map_err(|e| e.to_string())?;
    let table = match &text {
        Some(t) => Table::decode(t).map_err(|e| e.to_string())?,
        None => Table::default(),
    };
    Ok((text, table))
}

/// Merges `other` into the stored table; the table after, and whether it changed.
pub async fn merge_stored(store: &Arc<dyn Store>, other: &Table) -> Result<(Table, bool), String> {
    loop {
        let (before, mut t) = load(store).await?;
        if !t.merge(other) {
            return Ok((t, false));
        }
        if store.replace_routing_table(before, t.encode()).await.map_err(|e| e.to_string())? {
            return Ok((t, true));
        }
    }
}

/// Records a connector's state as seen here; true if the table changed.
pub async fn set_stored_state(store: &Arc<dyn Store>, connector: &str, up: bool, node: &str) -> Result<bool, String> {
    loop {
        let (before, mut t) = load(store).await?;
        if !t.set_state(connector, up, node) {
            return Ok(false);
        }
        if store.replace_routing_table(before, t.encode()).await.map_err(|e| e.to_string())? {
            return Ok(true);
        }
    }
}

/// The groups a message's trace header names (the first `X-Agora-Routing` field of
/// its header section).
pub fn trace_of(message: &[u8]) -> Vec<String> {
    let head = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message, |i| &message[..i]);
    let name = TRACE_HEADER.as_bytes();
    for line in head.split(|&b| b == b'\n') {
        if line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name) && line[name.len()] == b':' {
            return parse_trace(&String::from_utf8_lossy(&line[name.len() + 1..]));
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16) -> Member {
        Member { host: "127.0.0.1".into(), smtp_port: port, routing_port: port + 1 }
    }

    /// A with members a1 and a2 (a1 the bridgehead), B with b1, C with c1; A–B 1,
    /// B–C 1, A–C 5; C holds c.example; A has a connector out for everything.
    fn org() -> Table {
        let mut t = Table { org: "acme".into(), ..Table::default() };
        let group = |master: &str, members: &[(&str, u16)], domains: &[&str]| Group {
            master: master.into(),
            members: members.iter().map(|(n, p)| (n.to_string(), member(*p))).collect(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
        };
        t.groups.insert("A".into(), group("a1", &[("a1", 1000), ("a2", 1010)], &["a.example"]));
        t.groups.insert("B".into(), group("b1", &[("b1", 2000)], &[]));
        t.groups.insert("C".into(), group("c1", &[("c1", 3000)], &["c.example"]));
        let conn = |from: &str, to: &str, cost, bf: &[&str], bt: &[&str], spaces: &[&str]| Connector {
            from: from.into(),
            to: to.into(),
            cost,
            bridgeheads_from: bf.iter().map(|s| s.to_string()).collect(),
            bridgeheads_to: bt.iter().map(|s| s.to_string()).collect(),
            spaces: spaces.iter().map(|s| s.to_string()).collect(),
            max_size: 0,
            schedule: None,
        };
        t.connectors.insert("ab".into(), conn("A", "B", 1, &["a1"], &["b1"], &[]));
        t.connectors.insert("bc".into(), conn("B", "C", 1, &[], &[], &[]));
        t.connectors.insert("ac".into(), conn("A", "C", 5, &["a1"], &["c1"], &[]));
        t.connectors.insert("out".into(), conn("A", "", 1, &["a2"], &[], &["*"]));
        t.connectors.insert("partner".into(), conn("C", "", 1, &[], &[], &["partner.example"]));
        t.touch_topology("a1");
        t
    }

    #[test]
    fn text_round_trips_and_digests_agree() {
        let empty = Table::default();
        assert_eq!(Table::decode(&empty.encode()), Ok(empty));
        let mut t = org();
        t.set_state("ac", false, "a1");
        let text = t.encode();
        let back = Table::decode(&text).expect("decodes");
        assert_eq!(back, t);
        assert_eq!(back.digest(), t.digest());
        assert_eq!(t.versions(), (1, 1));
        for bad in [
            "",
            "agora-routing 2\n",
            "agora-routing 1\nmember X a1 h 1 2\n",
            "agora-routing 1\nstate ab sideways 1 a\n",
        ] {
            assert!(Table::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cheapest_path_that_is_up() {
        let mut t = org();
        let r = t.route("a1", "c.example", 100);
        assert_eq!(r.groups, ["A", "B", "C"]);
        assert_eq!(r.cost, 2);
        assert_eq!(r.hop, Hop::Across { connector: "ab".into(), node: "b1".into() });
        // a2 is not the bridgehead of ab: it hands the mail to a1.
        assert_eq!(t.route("a2", "c.example", 100).hop, Hop::Member("a1".into()));
        assert!(t.set_state("ab", false, "a1"));
        let r = t.route("a1", "c.example", 100);
        assert_eq!((r.groups.clone(), r.cost), (vec!["A".to_string(), "C".to_string()], 5));
        assert_eq!(r.hop, Hop::Across { connector: "ac".into(), node: "c1".into() });
        assert_eq!(r.describe(), "A -[ac]-> C (cost 5)");
        t.set_state("ac", false, "a1");
        assert_eq!(t.route("a1", "c.example", 100).hop, Hop::Unreachable);
        assert_eq!(t.route("c1", "c.example", 100).hop, Hop::Here);
    }

    #[test]
    fn the_far_groups_other_servers_are_alternatives() {
        let mut t = org();
        t.groups.get_mut("B").unwrap().members.insert("b2".into(), member(2010));
        // ab names b1 alone on B's side; bc names nobody, so every member of C may take it.
        assert!(t.route("a1", "c.example", 1).also.is_empty());
        t.connectors.get_mut("ab").unwrap().bridgeheads_to.clear();
        let r = t.route("a1", "c.example", 1);
        assert_eq!(r.hop, Hop::Across { connector: "ab".into(), node: "b1".into() }, "the master first");
        assert_eq!(r.also, ["b2"]);
        t.connectors.get_mut("ab").unwrap().bridgeheads_to = vec!["b2".into(), "b1".into(), "zz".into()];
        let r = t.route("a1", "c.example", 1);
        assert_eq!((r.hop, r.also), (Hop::Across { connector: "ab".into(), node: "b2".into() }, vec!["b1".into()]));
    }

    #[test]
    fn outside_by_the_most_specific_space() {
        let t = org();
        // partner.example leaves from C, though everything else leaves from A.
        let r = t.route("a1", "partner.example", 10);
        assert_eq!(r.groups, ["A", "B", "C"]);
        assert_eq!(r.connectors, ["ab", "bc", "partner"]);
        let r = t.route("a1", "elsewhere.test", 10);
        assert_eq!(r.hop, Hop::Member("a2".into()), "a2 is the connector's bridgehead");
        assert!(r.also.is_empty());
        assert_eq!(t.route("a2", "elsewhere.test", 10).hop, Hop::Out { connector: "out".into() });
        assert_eq!(t.route("a2", "elsewhere.test", 10).describe(), "A -[out]-> outside (cost 1)");
    }

    #[test]
    fn merging_converges_whatever_the_order() {
        let base = org();
        let (mut x, mut y, mut z) = (base.clone(), base.clone(), base.clone());
        x.set_state("ab", false, "a1");
        y.set_state("bc", false, "b1");
        z.groups.get_mut("B").unwrap().domains.insert("b.example".into());
        z.touch_topology("c1");
        let mut one = x.clone();
        one.merge(&y);
        one.merge(&z);
        let mut two = z.clone();
        two.merge(&y);
        two.merge(&x);
        assert_eq!(one.digest(), two.digest());
        assert!(!one.is_up("ab") && !one.is_up("bc"));
        assert_eq!(one.group_of_domain("b.example"), Some("B"));
        assert!(!one.clone().merge(&two), "nothing new the second time");
        let mut other_org = base.clone();
        other_org.org = "evil".into();
        other_org.touch_topology("x");
        other_org.touch_topology("x");
        assert!(!one.merge(&other_org), "another organisation's table is not taken");
    }

    #[test]
    fn damping_holds_flaps() {
        let mut d = Damper::default();
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        d.observe("ab", false, true, t0);
        assert!(d.due(hold, t0 + Duration::from_secs(5)).is_empty());
        d.observe("ab", true, true, t0 + Duration::from_secs(6));
        assert!(d.due(hold, t0 + Duration::from_secs(20)).is_empty(), "it came back before the hold");
        d.observe("ab", false, true, t0 + Duration::from_secs(21));
        assert_eq!(d.due(hold, t0 + Duration::from_secs(31)), [("ab".to_string(), false)]);
    }

    #[test]
    fn proofs_bind_everything() {
        let (cn, sn) = ([1; 16], [2; 16]);
        let p = proof(b"s", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn));
        assert!(constant_time_eq(&p, &proof(b"s", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn))));
        for other in [
            proof(b"t", Side::Client, &[9; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Server, &[9; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[8; 32], ("a1", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[9; 32], ("a2", &cn), ("b1", &sn)),
            proof(b"s", Side::Client, &[9; 32], ("a1", &sn), ("b1", &cn)),
        ] {
            assert!(!constant_time_eq(&p, &other));
        }
        let me = Identity { node: "a1".into(), secret: Arc::new(b"s3cret".to_vec()), interval: Duration::from_secs(1) };
        assert!(
            format!("{me:?}").contains("a1") && !format!("{me:?}").contains("s3cret"),
            "the secret is never printed"
        );
    }

    #[test]
    fn traces_are_read_from_the_header() {
        let m = b"Received: x\r\nX-Agora-Routing: A, B\r\nSubject: s\r\n\r\nX-Agora-Routing: C\r\n";
        assert_eq!(trace_of(m), ["A", "B"]);
        assert!(trace_of(b"Subject: s\r\n\r\nX-Agora-Routing: C\r\n").is_empty(), "the body is not the header");
    }

    #[test]
    fn schedules_open_and_close_connectors() {
        let week = parse_schedule("mon-fri 08:00-18:00").unwrap().unwrap();
        assert_eq!(week.len(), 5);
        assert_eq!(week[0], (480, 1080));
        let night = parse_schedule("sun 22:00-02:00").unwrap().unwrap();
        assert_eq!(night, vec![(0, 120), (6 * 1440 + 1320, WEEK)], "past Sunday midnight into Monday");
        assert_eq!(parse_schedule("always"), Ok(None));
        assert_eq!(parse_schedule("never"), Ok(Some(Vec::new())));
        assert!(parse_schedule("mon 25:00-26:00").is_err() && parse_schedule("someday 08:00-09:00").is_err());
        let mut t = org();
        t.connectors.get_mut("ab").unwrap().schedule = Some(week);
        let text = t.encode();
        assert_eq!(Table::decode(&text).unwrap(), t);
        let monday_noon = 12 * 60;
        let saturday = 5 * 1440 + 12 * 60;
        assert_eq!(t.route_at("a1", "c.example", 0, monday_noon).groups, ["A", "B", "C"]);
        assert_eq!(t.route_at("a1", "c.example", 0, saturday).groups, ["A", "C"], "ab is closed at weekends");
    }

    #[test]
    fn loops_are_seen() {
        let trace = parse_trace("A, B ,bad name");
        assert_eq!(trace, ["A", "B"]);
        assert!(would_loop(&trace, "A") && !would_loop(&trace, "C"));
    }
}
