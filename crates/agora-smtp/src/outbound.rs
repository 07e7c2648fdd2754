//! The outbound transport: takes due entries from the store's queue, finds where their
//! domain's mail goes (a configured route, the smarthost, MX records, or the domain's own
//! address), speaks SMTP to it (STARTTLS when offered), and records each recipient's
//! fate: delivered, retried later with a growing delay, or returned to the sender in a
//! delivery status notification (RFC 3464) once it fails for good or outlives the queue.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_directory::Directory;
use agora_mail::Mail;
use agora_mail::routing::{self, Hop, Identity};
use agora_store::{Envelope, QueueOutcome, Queued, Store, now};
use mail_auth::hickory_resolver::TokioResolver;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use agora_mail::dsn::{Dsn, Report, send_report};
use agora_mail::mtasts::{self, Mode, MtaSts, Policy};
use agora_mail::tracking::{Event, Tracker, message_id};

/// Queue entries taken per pass.
const BATCH: usize = 500;
/// Transactions under way at once (Postfix's default destination concurrency is 20).
const CONCURRENCY: usize = 20;
/// Longest reply line taken from a server (RFC 5321 allows 512; some say more).
const MAX_REPLY_LINE: usize = 8192;

#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The name given in EHLO and in the DSNs this server writes.
    pub hostname: String,
    /// Domain -> "host:port" overrides (internal relays, tests): used before DNS.
    pub routes: HashMap<String, String>,
    /// Everything not routed goes here instead of to MX hosts ("host:port").
    pub smarthost: Option<String>,
    /// User and password for the smarthost (AUTH PLAIN, only over TLS).
    pub smarthost_auth: Option<(String, String)>,
    /// DNS servers for MX lookups; empty for the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Port of MX hosts (25).
    pub mx_port: u16,
    /// First retry delay; doubled per attempt up to `max_retry`.
    pub retry_base: Duration,
    pub max_retry: Duration,
    /// How long a message may wait before it is returned (RFC 5321 §4.5.4.1: 4-5 days).
    pub max_lifetime: Duration,
    /// After this long in the queue the sender is told of the delay, once.
    pub delay_warning: Duration,
    /// How often the queue is looked at (new mail also wakes it, through `wake`).
    pub poll: Duration,
    /// Apply recipient domains' MTA-STS policies (RFC 8461) to MX delivery.
    pub mta_sts: bool,
    /// Apply MX hosts' authenticated TLSA records (DANE, RFC 7672).
    pub dane: bool,
    /// Where MTA-STS policies are cached across restarts.
    pub mta_sts_cache: Option<std::path::PathBuf>,
    /// Port of MTA-STS policy hosts (443).
    pub mta_sts_port: u16,
    /// Extra trusted CA certificates (PEM) for checking servers, beside the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Count TLS outcomes and send TLS reports (RFC 8460).
    pub tls_reports: bool,
    /// What one report covers (a day).
    pub tls_report_period: Duration,
    /// The domain TLS reports come from (`noreply-tlsrpt@…`, DKIM-signed when it has keys).
    pub report_domain: String,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            hostname: "localhost".into(),
            routes: HashMap::new(),
            smarthost: None,
            smarthost_auth: None,
            nameservers: Vec::new(),
            mx_port: 25,
            retry_base: Duration::from_secs(300),
            max_retry: Duration::from_secs(4 * 3600),
            max_lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
            poll: Duration::from_secs(5),
            mta_sts: true,
            dane: true,
            mta_sts_cache: None,
            mta_sts_port: 443,
            ca_pem: None,
            tls_reports: true,
            tls_report_period: Duration::from_secs(86_400),
            report_domain: "localhost".into(),
        }
    }
}

/// One recipient's result at a server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Accepted by the next server; true if it took over DSN duties (RFC 3461 §4.3).
    Delivered(bool),
    /// 4xx or no connection: try again later.
    Deferred(String),
    /// 5xx: return to the sender.
    Failed(String),
}

pub struct Transport {
    cfg: TransportConfig,
    store: Arc<dyn Store>,
    dir: Directory,
    tracker: Option<Arc<Tracker>>,
    /// Rung by the mail core when it queued mail for remote recipients.
    wake: Arc<tokio::sync::Notify>,
    resolver: Option<TokioResolver>,
    /// Checks certificates where a policy asks for it (MTA-STS).
    verifier: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    sts: Option<MtaSts>,
    /// This server in its routing organisation: mail for other groups goes by the table.
    routing: Option<Identity>,
    /// Gateways to other mail systems, for the domains they claim.
    gateways: Arc<agora_mail::gateway::Gateways>,
}

/// What link-state routing decides for a domain's mail from here.
#[derive(Debug, Clone)]
enum Plan {
    /// Delivered as without routing (MX, routes, smarthost).
    Normal,
    /// To the next server on the route (`host:port`), into `next_group`, leaving from
    /// this server's own address in the table (which the next one knows it by);
    /// `last_group` is where the route ends (delivery or the way out).
    Via {
        /// The servers that can take the hop, in order, each as (node, `host:port`).
        servers: Vec<(String, String)>,
        own_group: String,
        next_group: String,
        last_group: String,
        /// The connector crossed, if the hop leaves the group.
        connector: Option<String>,
        /// The route, described.
        route: String,
        source: Option<std::net::IpAddr>,
    },
    /// No route is up: the mail waits.
    Hold(String),
}

impl Transport {
    /// Err if the configured CA certificates cannot be read.
    pub fn new(cfg: TransportConfig, mail: &Mail) -> Result<Transport, String> {
        let (store, dir) = (Arc::clone(mail.store()), mail.directory().clone());
        let (tracker, wake) = (mail.tracker().cloned(), Arc::clone(mail.wake()));
        let resolver = agora_mail::auth::resolver(&cfg.nameservers);
        let verifier = mtasts::verifier(cfg.ca_pem.as_deref())?;
        let sts = if cfg.mta_sts {
            let tls = mtasts::client_config(verifier.clone())?;
            Some(MtaSts::new(cfg.mta_sts_cache.clone(), tls, cfg.mta_sts_port))
        } else {
            None
        };
        let routing = mail.config().routing.clone();
        let gateways = Arc::clone(mail.gateways());
        Ok(Transport { cfg, store, dir, tracker, wake, resolver, verifier: Some(verifier), sts, routing, gateways })
    }

    /// Link state between groups without waiting for mail: every routing interval, a
    /// session with the far bridgehead of each connector this server looks after (EHLO,
    /// STARTTLS, X-LINK2STATE, QUIT), so that tables meet even where no mail flows.
    pub async fn links(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(me) = self.routing.clone() else { return };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(me.interval) => {}
            }
            let Ok((_, t)) = routing::load(&self.store).await else { continue };
            let source = self.own_address(&t, &me.node).await;
            for (connector, far) in t.watched(&me.node) {
                if !t.is_up(&connector) {
                    continue;
                }
                for (host, port) in far.iter().take(1) {
                    let at = format!("{host}:{port}");
                    match self.open(&at, "", None, true, source).await {
                        Ok(mut s) => {
                            let _ = s.client.send("QUIT").await;
                        }
                        Err(e) => tracing::debug!("routing: link session with {at} over {connector}: {e}"),
                    }
                }
            }
        }
    }

    /// Runs until shutdown: every poll, deliver what is due.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let busy = match self.pass().await {
                Ok(n) => n == BATCH,
                Err(e) => {
                    tracing::warn!("outbound: {e}");
                    false
                }
            };
            if busy && !shutdown.is_cancelled() {
                // A full batch: more is probably due right away.
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One pass over the due entries. Per destination domain, its messages are shared
    /// among up to CONCURRENCY connections ("lanes"), each carrying its messages one
    /// transaction after another over the same connection. Returns how many were due.
    pub async fn pass(self: &Arc<Self>) -> Result<usize, agora_store::StoreError> {
        let due = self.store.queue_due(now(), BATCH).await?;
        let n = due.len();
        // domain -> (message, sender) -> recipients
        let mut by_domain: BTreeMap<String, BTreeMap<(String, String), Vec<Queued>>> = BTreeMap::new();
        for e in due {
            let domain = e.recipient.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
            by_domain.entry(domain).or_default().entry((e.blob.clone(), e.mail_from.clone())).or_default().push(e);
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (domain, messages) in by_domain {
            let lanes = messages.len().min(CONCURRENCY);
            let mut lane_items: Vec<Vec<Item>> = (0..lanes).map(|_| Vec::new()).collect();
            for (k, ((blob, from), entries)) in messages.into_iter().enumerate() {
                lane_items[k % lanes].push(Item { blob, from, entries });
            }
            for items in lane_items {
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
                let this = Arc::clone(self);
                let domain = domain.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    this.deliver_lane(&domain, items).await
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!("outbound: {e}");
            }
        }
        Ok(n)
    }

    /// Delivers messages for one domain over one connection, reopening it if it breaks.
    async fn deliver_lane(&self, domain: &str, items: Vec<Item>) -> Result<(), agora_store::StoreError> {
        if let Some(g) = self.gateways.for_domain(domain).await {
            return self.deliver_gateway(g.as_ref(), domain, items).await;
        }
        let (plan, sized) = self.plan_sized(domain).await;
        // Only a lane routing decides is routed message by message (a lane delivered as
        // usual keeps its MTA-STS hosts and refusals).
        let sized = sized && !matches!(plan, Plan::Normal);
        let lane_plan = plan.clone();
        let mut hosts = match &plan {
            Plan::Normal => self.hosts(domain).await,
            Plan::Via { servers, .. } => servers.iter().map(|(_, h)| h.clone()).collect(),
            Plan::Hold(_) => Vec::new(),
        };
        // MTA-STS: only for MX delivery (routes, smarthosts and the organisation's own
        // servers are the admin's choice).
        let routed =
            self.cfg.routes.contains_key(domain) || self.cfg.smarthost.is_some() || !matches!(plan, Plan::Normal);
        let policy = match (&self.sts, &self.resolver) {
            (Some(sts), Some(r)) if !routed && !hosts.is_empty() => {
                sts.policy(r, domain).await.filter(|p| p.mode != Mode::None)
            }
            _ => None,
        };
        let mut refusal = match &plan {
            Plan::Hold(why) => Some(why.clone()),
            _ => None,
        };
        if let Some(p) = &policy {
            let (listed, unlisted): (Vec<String>, Vec<String>) =
                hosts.iter().cloned().partition(|h| p.allows(host_name(h)));
            if p.mode == Mode::Enforce {
                if listed.is_empty() {
                    refusal = Some(format!("451 4.7.5 MTA-STS: no MX host of {domain} is in its policy"));
                }
                hosts = listed;
            } else if !unlisted.is_empty() {
                tracing::warn!("mta-sts (testing) {domain}: MX hosts outside the policy: {}", unlisted.join(", "));
            }
        }
        let mut session: Option<Session> = None;
        for item in items {
            let message = match self.store.read_blob(&item.blob).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("outbound: message of queue entries for {domain} unreadable: {e}");
                    continue;
                }
            };
            // A connector with a size limit may route a large message another way.
            let (plan, hosts, refusal) = if sized {
                let p = self.plan(domain, message.len() as u64).await;
                match &p {
                    Plan::Via { servers, .. } => (p.clone(), servers.iter().map(|(_, h)| h.clone()).collect(), None),
                    Plan::Hold(why) => (p.clone(), Vec::new(), Some(why.clone())),
                    Plan::Normal => (p, self.hosts(domain).await, None),
                }
            } else {
                (lane_plan.clone(), hosts.clone(), refusal.clone())
            };
            if session.as_ref().is_some_and(|s| !hosts.contains(&s.host))
                && let Some(mut s) = session.take()
            {
                let _ = s.client.send("QUIT").await;
            }
            let rcpts: Vec<String> = item.entries.iter().map(|e| e.recipient.clone()).collect();
            let envelope = match item.entries.first().and_then(|e| e.delivery) {
                Some(d) => self.store.delivery_envelope(d).await.ok().flatten(),
                None => None,
            };
            let dsn = DsnParams::of(envelope.as_ref(), &rcpts);
            // Across groups the message carries the groups it has been in; one that
            // would go back into a group it left is held, not looped.
            let (sending, looped) = match &plan {
                Plan::Via { own_group, next_group, last_group, .. } => {
                    let mut trace = routing::trace_of(&message);
                    // Passing through a group it was in is a loop; arriving in the group
                    // where the route ends (a list's copy going back, say) is not.
                    if next_group != own_group && next_group != last_group && routing::would_loop(&trace, next_group) {
                        (
                            message.clone(),
                            Some(format!("451 4.4.6 routing: held, it would loop back into group {next_group}")),
                        )
                    } else {
                        if trace.last() != Some(own_group) {
                            trace.push(own_group.clone());
                        }
                        let mut m = format!("{}: {}\r\n", routing::TRACE_HEADER, trace.join(", ")).into_bytes();
                        m.extend_from_slice(&message);
                        (m, None)
                    }
                }
                _ => (message.clone(), None),
            };
            if let Some(why) = &looped {
                tracing::warn!("outbound: {} for {domain}: {why}", item.blob);
            }
            let fates = if let Some(why) = looped.as_ref().or(refusal.as_ref()) {
                vec![Fate::Deferred(why.clone()); rcpts.len()]
            } else if hosts.is_empty() {
                vec![Fate::Failed(format!("550 5.1.2 no mail server for {domain}")); rcpts.len()]
            } else {
                let mut fates = None;
                let mut last = String::from("451 4.4.1 no answer from any mail server");
                // A reused connection may have gone stale: one fresh try before giving up.
                for _ in 0..2 {
                    if session.is_none() {
                        for host in &hosts {
                            let (org, source) = match &plan {
                                Plan::Via { source, .. } => (true, *source),
                                _ => (false, None),
                            };
                            match self.open(host, domain, policy.as_ref(), org, source).await {
                                Ok(s) => {
                                    session = Some(s);
                                    break;
                                }
                                Err(why) => {
                                    tracing::debug!("outbound: {host}: {why}");
                                    let code = if why.starts_with("MTA-STS") || why.starts_with("DANE") {
                                        "4.7.5"
                                    } else {
                                        "4.4.1"
                                    };
                                    last = format!("451 {code} {host}: {why}");
                                }
                            }
                        }
                    }
                    let Some(s) = session.as_mut() else { break };
                    match self.transaction(s, &item.from, &rcpts, &sending, &dsn).await {
                        Ok(f) => {
                            fates = Some(f);
                            break;
                        }
                        Err(why) => {
                            last = format!("451 4.4.1 {}: {why}", s.host);
                            session = None;
                        }
                    }
                }
                fates.unwrap_or_else(|| vec![Fate::Deferred(last); rcpts.len()])
            };
            // Tracking names the server that took the message (or the first tried).
            let note = match &plan {
                Plan::Via { servers, connector, route, .. } => {
                    let used = session.as_ref().map(|s| s.host.as_str());
                    let node = servers
                        .iter()
                        .find(|(_, h)| Some(h.as_str()) == used)
                        .or(servers.first())
                        .map_or("", |(n, _)| n.as_str());
                    match connector {
                        Some(c) => format!("via {node} over {c}: {route}"),
                        None => format!("via {node}: {route}"),
                    }
                }
                _ => String::new(),
            };
            for (e, fate) in item.entries.iter().zip(fates) {
                self.settle(e, fate, &message, &note).await?;
            }
        }
        if let Some(mut s) = session {
            let _ = s.client.send("QUIT").await;
        }
        Ok(())
    }

    /// Hands a lane to the gateway that claims its domain, message by message.
    async fn deliver_gateway(
        &self,
        g: &dyn agora_mail::gateway::Gateway,
        domain: &str,
        items: Vec<Item>,
    ) -> Result<(), agora_store::StoreError> {
        use agora_mail::gateway::Outcome;
        for item in items {
            let message = match self.store.read_blob(&item.blob).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("outbound: message of queue entries for {domain} unreadable: {e}");
                    continue;
                }
            };
            let rcpts: Vec<String> = item.entries.iter().map(|e| e.recipient.clone()).collect();
            let outcomes = g.deliver(&item.from, &rcpts, &message).await;
            for (i, e) in item.entries.iter().enumerate() {
                let (fate, note) = match outcomes.get(i) {
                    Some(Outcome::Delivered(note)) => (Fate::Delivered(true), note.clone()),
                    Some(Outcome::Deferred(why)) => (Fate::Deferred(why.clone()), String::new()),
                    Some(Outcome::Failed(why)) => (Fate::Failed(why.clone()), String::new()),
                    None => {
                        (Fate::Deferred(format!("451 4.3.0 {}: no answer for this recipient", g.name())), String::new())
                    }
                };
                self.settle(e, fate, &message, &note).await?;
            }
        }
        Ok(())
    }

    /// Records a queue entry's fate in the tracking log.
    async fn track(&self, e: &Queued, event: &str, reply: &str, message: &[u8]) {
        let Some(t) = &self.tracker else { return };
        let id = match e.delivery {
            Some(d) => self.store.delivery_envelope(d).await.ok().flatten().map(|env| env.queue_id).unwrap_or_default(),
            None => String::new(),
        };
        t.log(Event {
            time: now(),
            event: event.into(),
            id,
            sender: e.mail_from.clone(),
            recipients: vec![e.recipient.clone()],
            size: message.len() as u64,
            remote: e.recipient.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
            reply: reply.into(),
            message_id: message_id(message),
        });
    }

    async fn settle(&self, e: &Queued, fate: Fate, message: &[u8], route: &str) -> Result<(), agora_store::StoreError> {
        let age = now() - e.created;
        let (event, reply) = match &fate {
            // Tracking names the next hop and connector of a routed message.
            Fate::Delivered(_) => ("relayed", route.to_string()),
            Fate::Deferred(w) if age < self.cfg.max_lifetime.as_secs() as i64 => ("deferred", w.clone()),
            Fate::Deferred(w) | Fate::Failed(w) => ("bounced", w.clone()),
        };
        self.track(e, event, &reply, message).await;
        match event {
            "relayed" => metrics::counter!("agora_messages_delivered_total", "destination" => "remote").increment(1),
            "deferred" => metrics::counter!("agora_messages_deferred_total").increment(1),
            _ => metrics::counter!("agora_messages_bounced_total").increment(1),
        }
        match fate {
            Fate::Delivered(passed_on) => {
                tracing::info!("outbound: {} delivered to <{}>", e.id, e.recipient);
                if !passed_on {
                    self.report(e, Report::Relayed, message).await;
                }
                self.store.queue_update(e.id, QueueOutcome::Done).await
            }
            Fate::Deferred(why) if age < self.cfg.max_lifetime.as_secs() as i64 => {
                let delay = self.cfg.retry_base.saturating_mul(1 << e.attempts.min(16)).min(self.cfg.max_retry);
                tracing::info!("outbound: {} to <{}> deferred: {why}", e.id, e.recipient);
                if !e.warned && age >= self.cfg.delay_warning.as_secs() as i64 {
                    self.report(e, Report::Delayed(&why), message).await;
                    self.store.queue_update(e.id, QueueOutcome::Warned).await?;
                }
                self.store
                    .queue_update(e.id, QueueOutcome::Retry { at: now() + delay.as_secs() as i64, error: why })
                    .await
            }
            Fate::Deferred(why) => {
                let why = format!("{why} (gave up after {} attempts)", e.attempts + 1);
                tracing::info!("outbound: {} to <{}> expired", e.id, e.recipient);
                self.report(e, Report::Failed("4.4.7", &why), message).await;
                self.store.queue_update(e.id, QueueOutcome::Done).await
            }
            Fate::Failed(why) => {
                tracing::info!("outbound: {} to <{}> failed: {why}", e.id, e.recipient);
                let status =
                    why.split_whitespace().nth(1).filter(|s| s.starts_with('5')).unwrap_or("5.0.0").to_string();
                self.report(e, Report::Failed(&status, &why), message).await;
                self.store.queue_update(e.id, QueueOutcome::Done).await
            }
        }
    }

    /// The socket addresses of "host:port": through the configured DNS servers when
    /// there are some, else the system's resolver (which also reads /etc/hosts).
    async fn addresses(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let (name, port) = host.rsplit_once(':').ok_or_else(|| format!("{host}: no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{host}: bad port"))?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = if let (Some(r), false) = (&self.resolver, self.cfg.nameservers.is_empty()) {
            let ips = r.lookup_ip(format!("{name}.")).await.map_err(|e| format!("{name}: {e}"))?;
            ips.iter().map(|ip| SocketAddr::new(ip, port)).collect()
        } else {
            tokio::net::lookup_host((name, port)).await.map_err(|e| format!("{name}: {e}"))?.collect()
        };
        if found.is_empty() { Err(format!("{name}: no address")) } else { Ok(found) }
    }

    /// The plan for a domain's mail of any size, and whether some connector limits
    /// sizes (then each message is routed by its own size). The table is read once.
    async fn plan_sized(&self, domain: &str) -> (Plan, bool) {
        let Some(t) = self.table().await else { return (Plan::Normal, false) };
        let sized = t.connectors.values().any(|c| c.max_size > 0);
        (self.plan_with(&t, domain, 0).await, sized)
    }

    /// The routing table, when this server is in an organisation and it can be read.
    async fn table(&self) -> Option<routing::Table> {
        self.routing.as_ref()?;
        match routing::load(&self.store).await {
            Ok((_, t)) => Some(t),
            Err(e) => {
                tracing::warn!("outbound: routing table unreadable: {e}");
                None
            }
        }
    }

    /// Where routing sends a domain's mail of `size` octets from this server.
    async fn plan(&self, domain: &str, size: u64) -> Plan {
        match self.table().await {
            Some(t) => self.plan_with(&t, domain, size).await,
            None => Plan::Normal,
        }
    }

    /// Where `t` sends a domain's mail from this server: for a domain of another
    /// routing group, or for the outside when the organisation has connectors out, the
    /// next server on the cheapest route that is up.
    async fn plan_with(&self, t: &routing::Table, domain: &str, size: u64) -> Plan {
        let Some(me) = &self.routing else { return Plan::Normal };
        let Some(here) = t.group_of(&me.node).map(str::to_string) else { return Plan::Normal };
        // Neither the organisation's nor carried by a connector out: ordinary delivery.
        if t.group_of_domain(domain).is_none() && !t.carries_outside(domain) {
            return Plan::Normal;
        }
        let r = t.route(&me.node, domain, size);
        let source = self.own_address(t, &me.node).await;
        let last_group = r.groups.last().cloned().unwrap_or_default();
        let (first, connector, next_group) = match &r.hop {
            Hop::Here | Hop::Out { .. } => return Plan::Normal,
            Hop::Member(n) => (n, None, here.clone()),
            Hop::Across { connector, node } => {
                (node, Some(connector.clone()), r.groups.get(1).cloned().unwrap_or_default())
            }
            Hop::Unreachable => return Plan::Hold(format!("451 4.4.0 routing: no route to {domain} is up")),
        };
        let servers: Vec<(String, String)> = std::iter::once(first)
            .chain(&r.also)
            .filter_map(|n| t.member(n).map(|m| (n.clone(), format!("{}:{}", m.host, m.smtp_port))))
            .collect();
        if servers.is_empty() {
            return Plan::Hold(format!("451 4.4.0 routing: {first} has no address"));
        }
        Plan::Via { servers, own_group: here, next_group, last_group, connector, route: r.describe(), source }
    }

    /// The address this server has in the routing table (by address, or by a name that
    /// resolves to it), when it is one of this machine's: mail to the organisation's
    /// servers leaves from it, since they know this server by it.
    async fn own_address(&self, t: &routing::Table, node: &str) -> Option<std::net::IpAddr> {
        let host = &t.member(node)?.host;
        let candidates: Vec<std::net::IpAddr> = match host.parse() {
            Ok(ip) => vec![ip],
            Err(_) => self.addresses(&format!("{host}:0")).await.ok()?.into_iter().map(|a| a.ip()).collect(),
        };
        // Only an address a socket can be bound to is this machine's.
        candidates.into_iter().find(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok())
    }

    /// Where a domain's mail goes: host:port candidates in order.
    async fn hosts(&self, domain: &str) -> Vec<String> {
        if let Some(r) = self.cfg.routes.get(domain) {
            return vec![r.clone()];
        }
        if let Some(s) = &self.cfg.smarthost {
            return vec![s.clone()];
        }
        let Some(resolver) = &self.resolver else { return Vec::new() };
        match resolver.mx_lookup(domain).await {
            Ok(mx) => {
                let mut records: Vec<(u16, String)> = mx
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        mail_auth::hickory_resolver::proto::rr::RData::MX(m) => {
                            Some((m.preference, m.exchange.to_utf8().trim_end_matches('.').to_string()))
                        }
                        _ => None,
                    })
                    .collect();
                records.sort();
                // A null MX (RFC 7505) means the domain takes no mail.
                if records.len() == 1 && records[0].1.is_empty() {
                    return Vec::new();
                }
                records.into_iter().map(|(_, h)| format!("{h}:{}", self.cfg.mx_port)).collect()
            }
            // No MX: the domain's own address (RFC 5321 §5.1).
            Err(_) => vec![format!("{domain}:{}", self.cfg.mx_port)],
        }
    }

    /// Connects to a server and gets it ready for transactions: EHLO, STARTTLS when
    /// offered, AUTH for the smarthost.
    async fn open(
        &self,
        host: &str,
        domain: &str,
        policy: Option<&Policy>,
        org: bool,
        source: Option<std::net::IpAddr>,
    ) -> Result<Session, String> {
        // DANE (RFC 7672) for MX hosts, before MTA-STS when both apply (RFC 8461 §2):
        // authentic TLSA records make TLS with a matching certificate a condition.
        // The organisation's own servers (`org`) are no MX hosts: no DANE for them.
        let routed = self.cfg.routes.contains_key(domain) || self.cfg.smarthost.is_some() || org;
        let dane = match host.rsplit_once(':') {
            Some((name, port)) if self.cfg.dane && !routed => {
                let name = name.trim_start_matches('[').trim_end_matches(']');
                match agora_mail::dane::tlsa(&self.cfg.nameservers, name, port.parse().unwrap_or(25)).await {
                    agora_mail::dane::Lookup::Secure(records) => Some(records),
                    agora_mail::dane::Lookup::Insecure => None,
                    agora_mail::dane::Lookup::Bogus(why) => {
                        if self.cfg.tls_reports && !routed {
                            TlsReporting::bogus(self, domain, name);
                        }
                        return Err(format!("DANE: {why}"));
                    }
                }
            }
            _ => None,
        };
        let policy = if dane.is_some() { None } else { policy };
        let enforce = policy.is_some_and(|p| p.mode == Mode::Enforce);
        let report = TlsReporting::new(self, routed, domain, host, dane.as_deref(), policy);
        // Every address of the host in turn (IPv6 and IPv4 alike) before giving up on it.
        let mut tcp = Err(format!("{host}: no address"));
        for addr in self.addresses(host).await? {
            let connect = async {
                match source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
                    Some(s) => {
                        let sock = if addr.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()?
                        } else {
                            tokio::net::TcpSocket::new_v6()?
                        };
                        sock.bind(std::net::SocketAddr::new(s, 0))?;
                        sock.connect(addr).await
                    }
                    None => TcpStream::connect(addr).await,
                }
            };
            tcp = match tokio::time::timeout(Duration::from_secs(30), connect).await {
                Ok(Ok(t)) => Ok(t),
                Ok(Err(e)) => Err(format!("{addr}: {e}")),
                Err(_) => Err(format!("{addr}: connect timed out")),
            };
            if tcp.is_ok() {
                break;
            }
        }
        let tcp = tcp?;
        let report = report.at(tcp.peer_addr().ok());
        let mut c = Client::new(Box::new(tcp));
        c.expect(220).await?;
        let mut ext = c.ehlo(&self.cfg.hostname).await?;
        let mut tls = false;
        if ext.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS")) {
            c.send("STARTTLS").await?;
            let (code, text) = c.reply().await?;
            if code == 220 {
                // DANE wants a certificate matching a TLSA record (with only unusable
                // records, TLS of any kind); a policy in force wants a certificate valid
                // for the MX name; a policy in testing has failures logged; else any
                // certificate will do.
                let mut audited: Option<Arc<Opportunistic>> = None;
                let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
                    match (&dane, policy, &self.verifier) {
                        (Some(r), _, _) if r.iter().any(agora_mail::dane::Tlsa::usable) => {
                            agora_mail::dane::Verifier::new(r.clone())
                        }
                        (Some(_), _, _) => Arc::new(Opportunistic::default()),
                        (None, Some(_), Some(v)) if enforce => v.clone(),
                        (None, Some(_), Some(v)) => {
                            let o = Arc::new(Opportunistic {
                                audit: Some((v.clone(), domain.to_string())),
                                ..Opportunistic::default()
                            });
                            audited = Some(Arc::clone(&o));
                            o
                        }
                        _ => Arc::new(Opportunistic::default()),
                    };
                c = c.start_tls(host_name(host), verifier).await.map_err(|e| {
                    report.failed(agora_mail::tlsrpt::result_type(&e, dane.is_some()));
                    if dane.is_some() {
                        format!("DANE: TLS with {host} failed: {e}")
                    } else if enforce {
                        format!("MTA-STS: TLS with {host} failed: {e}")
                    } else {
                        e
                    }
                })?;
                tls = true;
                // A policy in testing: the session goes on, but its report tells the truth.
                match audited.and_then(|o| o.failure.lock().ok().and_then(|f| f.clone())) {
                    Some(why) => report.failed(agora_mail::tlsrpt::result_type(&why, false)),
                    None => report.succeeded(),
                }
                ext = c.ehlo(&self.cfg.hostname).await?;
            } else if dane.is_some() {
                report.failed("starttls-not-supported");
                return Err(format!("DANE: STARTTLS refused: {text}"));
            } else {
                report.failed("starttls-not-supported");
                if enforce {
                    return Err(format!("MTA-STS: STARTTLS refused: {text}"));
                }
            }
        } else {
            report.failed("starttls-not-supported");
            if dane.is_some() {
                return Err("DANE: the server offers no STARTTLS".into());
            } else if enforce {
                return Err("MTA-STS: the server offers no STARTTLS".into());
            } else if policy.is_some() {
                tracing::warn!("mta-sts (testing) {domain}: {host} offers no STARTTLS");
            }
        }
        // Another server of this routing organisation: compare tables, exchange them
        // when they differ (X-LINK2STATE), then carry on with mail in the same session.
        if let Some(me) = &self.routing
            && tls
            && ext.iter().any(|e| e.eq_ignore_ascii_case("X-LINK2STATE"))
        {
            match link2state(&mut c, &self.store, me).await {
                Ok((true, note)) => tracing::info!("routing: X-LINK2STATE with {host}: {note}"),
                Ok((false, note)) => tracing::debug!("routing: X-LINK2STATE with {host}: {note}"),
                Err(e) => tracing::warn!("routing: X-LINK2STATE with {host}: {e}"),
            }
        }
        if self.cfg.smarthost.as_deref() == Some(host)
            && let Some((user, password)) = &self.cfg.smarthost_auth
        {
            // The password never crosses the network in the clear.
            if !tls {
                return Err("the smarthost offers no STARTTLS; not sending the password in the clear".into());
            }
            if !ext
                .iter()
                .any(|e| e.to_ascii_uppercase().starts_with("AUTH") && e.to_ascii_uppercase().contains("PLAIN"))
            {
                return Err("the smarthost offers no AUTH PLAIN".into());
            }
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            c.send(&format!("AUTH PLAIN {token}")).await?;
            let (code, text) = c.reply().await?;
            if code != 235 {
                return Err(format!("smarthost refused our credentials: {text}"));
            }
        }
        let has = |k: &str| ext.iter().any(|e| e.to_ascii_uppercase().split_whitespace().next() == Some(k));
        Ok(Session {
            host: host.to_string(),
            pipelining: has("PIPELINING"),
            size: has("SIZE"),
            dsn: has("DSN"),
            eight_bit: has("8BITMIME"),
            smtputf8: has("SMTPUTF8"),
            client: c,
        })
    }

    /// One transaction on an open session; Err when the connection failed under it.
    /// With PIPELINING, MAIL and every RCPT go out in one write (RFC 2920).
    async fn transaction(
        &self,
        s: &mut Session,
        from: &str,
        rcpts: &[String],
        message: &[u8],
        dsn: &DsnParams,
    ) -> Result<Vec<Fate>, String> {
        // Internationalized mail needs a server that takes it (RFC 6531 §3.2): no
        // downgrade exists, so it goes back to the sender.
        let utf8 = needs_smtputf8(from, rcpts, message);
        if utf8 && !s.smtputf8 {
            let why = format!("550 5.6.7 {} does not accept internationalized mail (SMTPUTF8)", s.host);
            return Ok(vec![Fate::Failed(why); rcpts.len()]);
        }
        // 8-bit content for a server without 8BITMIME is made 7-bit (RFC 6152 §3); what
        // cannot be (an 8-bit header) goes back to the sender.
        let converted;
        let message = if !s.eight_bit && !utf8 && !message.is_ascii() {
            match agora_store::section::seven_bit(message) {
                Some(m) => {
                    converted = m;
                    &converted[..]
                }
                None => {
                    let why = format!("554 5.6.3 {} takes no 8-bit mail and this message cannot be converted", s.host);
                    return Ok(vec![Fate::Failed(why); rcpts.len()]);
                }
            }
        } else {
            message
        };
        let mut size = if s.size { format!(" SIZE={}", message.len()) } else { String::new() };
        if s.eight_bit && message.iter().any(|&b| b >= 0x80) {
            size.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            size.push_str(" SMTPUTF8");
        }
        let passed_on = s.dsn;
        let (mail_params, rcpt_params) = if s.dsn { (dsn.mail.as_str(), dsn.rcpt.as_slice()) } else { ("", &[][..]) };
        let rcpt_param = |i: usize| rcpt_params.get(i).map_or("", String::as_str);
        let fate_of = |code: u16, text: String| match code / 100 {
            2 => Fate::Delivered(passed_on),
            5 => Fate::Failed(text),
            _ => Fate::Deferred(text),
        };
        let mail = format!("MAIL FROM:<{from}>{size}{mail_params}");
        let (mail_reply, rcpt_replies) = if s.pipelining {
            let mut batch = format!("{mail}\r\n");
            for (i, r) in rcpts.iter().enumerate() {
                batch.push_str(&format!("RCPT TO:<{r}>{}\r\n", rcpt_param(i)));
            }
            s.client.send_raw(batch.as_bytes()).await?;
            let m = s.client.reply().await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in rcpts {
                replies.push(s.client.reply().await?);
            }
            (m, replies)
        } else {
            s.client.send(&mail).await?;
            let m = s.client.reply().await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            if m.0 / 100 == 2 {
                for (i, r) in rcpts.iter().enumerate() {
                    s.client.send(&format!("RCPT TO:<{r}>{}", rcpt_param(i))).await?;
                    replies.push(s.client.reply().await?);
                }
            }
            (m, replies)
        };
        if mail_reply.0 / 100 != 2 {
            let fate = fate_of(mail_reply.0, mail_reply.1);
            s.client.send("RSET").await?;
            s.client.reply().await?;
            return Ok(vec![fate; rcpts.len()]);
        }
        let fates: Vec<Fate> = rcpt_replies.into_iter().map(|(c, t)| fate_of(c, t)).collect();
        if !fates.iter().any(|f| matches!(f, Fate::Delivered(_))) {
            s.client.send("RSET").await?;
            s.client.reply().await?;
            return Ok(fates);
        }
        s.client.send("DATA").await?;
        let (code, text) = s.client.reply().await?;
        if code != 354 {
            let fate = fate_of(code, text);
            s.client.send("RSET").await?;
            s.client.reply().await?;
            return Ok(fates
                .into_iter()
                .map(|f| if matches!(f, Fate::Delivered(_)) { fate.clone() } else { f })
                .collect());
        }
        s.client.data(without_return_path(message)).await?;
        let (code, text) = s.client.reply().await?;
        let outcome = fate_of(code, text);
        Ok(fates.into_iter().map(|f| if matches!(f, Fate::Delivered(_)) { outcome.clone() } else { f }).collect())
    }

    /// Tells the sender what became of a recipient, as a delivery status notification
    /// (RFC 3464), when the recipient's NOTIFY asks for it (RFC 3461: without NOTIFY,
    /// failures and delays are reported); never to the null sender (no loops).
    async fn report(&self, e: &Queued, report: Report<'_>, message: &[u8]) {
        if e.mail_from.is_empty() {
            return;
        }
        let envelope = match e.delivery {
            Some(d) => self.store.delivery_envelope(d).await.ok().flatten(),
            None => None,
        };
        let rcpt = envelope.as_ref().and_then(|env| env.recipients.iter().find(|r| r.address == e.recipient));
        let notify = rcpt.and_then(|r| r.notify.clone()).unwrap_or_else(|| "FAILURE,DELAY".into()).to_ascii_uppercase();
        let wanted = match report {
            Report::Failed(..) => "FAILURE",
            Report::Delayed(_) => "DELAY",
            Report::Relayed | Report::Delivered => "SUCCESS",
        };
        if notify.contains("NEVER") || !notify.split(',').any(|n| n.trim() == wanted) {
            return;
        }
        let dsn = Dsn {
            hostname: &self.cfg.hostname,
            sender: &e.mail_from,
            recipient: &e.recipient,
            orcpt: rcpt.and_then(|r| r.orcpt.as_deref()),
            envid: envelope.as_ref().and_then(|env| env.envid.as_deref()),
            full: envelope.as_ref().and_then(|env| env.ret.as_deref()).is_some_and(|r| r.eq_ignore_ascii_case("FULL")),
            report,
        };
        if let Err(err) = send_report(self.store.as_ref(), &self.dir, &e.mail_from, dsn.message(message)).await {
            tracing::error!("outbound: DSN for {}: {err}", e.id);
        }
    }
}

/// One session's TLS outcome, counted for the recipient domain's TLS report (RFC
/// 8460) under the policy that applied: DANE's TLSA records, an MTA-STS policy, or none.
struct TlsReporting {
    store: Option<Arc<dyn Store>>,
    outcome: agora_store::TlsOutcome,
}

impl TlsReporting {
    fn new(
        t: &Transport,
        routed: bool,
        domain: &str,
        host: &str,
        dane: Option<&[agora_mail::dane::Tlsa]>,
        policy: Option<&Policy>,
    ) -> TlsReporting {
        use agora_mail::tlsrpt::{NO_POLICY, STS, TLSA};
        let (policy_type, text) = match (dane, policy) {
            (Some(records), _) => (
                TLSA,
                records
                    .iter()
                    .map(|r| {
                        let hex = agora_store::blob::hex(&r.data);
                        format!("{} {} {} {hex}", r.usage, r.selector, r.matching)
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            (None, Some(p)) => {
                let mode = match p.mode {
                    Mode::Enforce => "enforce",
                    Mode::Testing => "testing",
                    Mode::None => "none",
                };
                let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
                lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
                lines.push(format!("max_age: {}", p.max_age));
                (STS, lines.join("\n"))
            }
            (None, None) => (NO_POLICY, String::new()),
        };
        let period = t.cfg.tls_report_period.as_secs().max(1) as i64;
        TlsReporting {
            store: (t.cfg.tls_reports && !routed).then(|| Arc::clone(&t.store)),
            outcome: agora_store::TlsOutcome {
                day: agora_mail::tlsrpt::period_key(now() / period * period, period),
                domain: domain.to_ascii_lowercase(),
                policy_type: policy_type.to_string(),
                policy: text,
                mx: host_name(host).to_ascii_lowercase(),
                ..Default::default()
            },
        }
    }

    /// DNSSEC validation of the MX host's TLSA records failed: no session was tried.
    fn bogus(t: &Transport, domain: &str, mx: &str) {
        TlsReporting::new(t, false, domain, mx, Some(&[]), None).failed("dnssec-invalid");
    }

    fn at(mut self, addr: Option<SocketAddr>) -> TlsReporting {
        self.outcome.ip = addr.map(|a| a.ip().to_string()).unwrap_or_default();
        self
    }

    fn record(&self, result: &str) {
        let Some(store) = &self.store else { return };
        let (store, mut outcome) = (Arc::clone(store), self.outcome.clone());
        outcome.result = result.to_string();
        // Counting must not hold up delivery.
        tokio::spawn(async move {
            if let Err(e) = store.tls_outcome(outcome).await {
                tracing::warn!("tls-report: outcome not counted: {e}");
            }
        });
    }

    fn succeeded(&self) {
        self.record("");
    }

    fn failed(&self, result: &str) {
        self.record(result);
    }
}

impl Transport {
    /// Sends the TLS reports of each finished period (a day) to the domains that ask
    /// for them, until shutdown.
    pub async fn tls_reports(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.cfg.tls_reports {
            return;
        }
        let period = self.cfg.tls_report_period.as_secs().max(1) as i64;
        loop {
            // Just after the period ends, so that sessions ending at its edge are in.
            let next = (now() / period + 1) * period;
            let wait = Duration::from_secs((next - now()).max(0) as u64) + Duration::from_millis(500);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.send_tls_reports(period).await;
        }
    }

    /// Reports the periods before the current one that still have outcomes (a server
    /// that was down at a period's end catches up), oldest first, then forgets them.
    async fn send_tls_reports(&self, period: i64) {
        let current = now() / period * period;
        for k in (1..=7).rev() {
            let start = current - k * period;
            let key = agora_mail::tlsrpt::period_key(start, period);
            let outcomes = match self.store.tls_outcomes(&key).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("tls-report: {e}");
                    return;
                }
            };
            let mut domains: Vec<&str> = outcomes.iter().map(|(o, _)| o.domain.as_str()).collect();
            domains.dedup();
            for domain in domains {
                let rua = self.rua(domain).await;
                if rua.is_empty() {
                    continue;
                }
                let contact = format!("mailto:postmaster@{}", self.cfg.report_domain);
                let report = agora_mail::tlsrpt::build(
                    &self.cfg.hostname,
                    &contact,
                    start,
                    start + period - 1,
                    domain,
                    &outcomes,
                );
                for uri in rua {
                    if let Err(e) = self.deliver_tls_report(&uri, &report, (start, start + period - 1), domain).await {
                        tracing::warn!("tls-report for {domain} to {uri}: {e}");
                    } else {
                        tracing::info!("tls-report for {domain} sent to {uri}");
                    }
                }
            }
        }
        let last = agora_mail::tlsrpt::period_key(current - period, period);
        if let Err(e) = self.store.forget_tls_outcomes(&last).await {
            tracing::warn!("tls-report: {e}");
        }
    }

    /// Where a domain wants its TLS reports: its `_smtp._tls` record's `rua`.
    async fn rua(&self, domain: &str) -> Vec<String> {
        let Some(resolver) = &self.resolver else { return Vec::new() };
        let Ok(txt) = resolver.txt_lookup(format!("_smtp._tls.{domain}.")).await else { return Vec::new() };
        let records: Vec<String> = txt
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                mail_auth::hickory_resolver::proto::rr::RData::TXT(t) => {
                    Some(t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect())
                }
                _ => None,
            })
            .collect();
        agora_mail::tlsrpt::rua(&records)
    }

    async fn deliver_tls_report(
        &self,
        uri: &str,
        report: &agora_mail::tlsrpt::Report,
        period: (i64, i64),
        domain: &str,
    ) -> Result<(), String> {
        if let Some(to) = uri.strip_prefix("mailto:") {
            // A size limit ("!10m") or query after the address is not part of it.
            let to = to.split(['!', '?']).next().unwrap_or_default();
            if !to.contains('@') {
                return Err("not a mail address".into());
            }
            let from = format!("noreply-tlsrpt@{}", self.cfg.report_domain);
            let body = agora_mail::tlsrpt::message(report, period, &from, to, domain, &self.cfg.hostname);
            let keys = self.store.dkim_keys(&self.cfg.report_domain).await.unwrap_or_default();
            let mut signed = if keys.is_empty() { Vec::new() } else { agora_mail::auth::sign(&body, &keys) };
            signed.extend_from_slice(&body);
            send_report(self.store.as_ref(), &self.dir, to, signed).await.map_err(|e| e.to_string())?;
            self.wake.notify_one();
            return Ok(());
        }
        self.post_tls_report(uri, &agora_mail::tlsrpt::gzip(report)).await
    }

    /// HTTPS POST of a gzip-compressed report (RFC 8460 §5.4): 2xx is done.
    async fn post_tls_report(&self, url: &str, body: &[u8]) -> Result<(), String> {
        let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse::<u16>().map_err(|e| e.to_string())?),
            _ => (authority, 443),
        };
        let verifier = self.verifier.clone().ok_or("no certificate verifier")?;
        let tls = mtasts::client_config(verifier)?;
        let addr = *self.addresses(&format!("{host}:{port}")).await?.first().ok_or("no address")?;
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
            let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/tlsrpt+gzip\r\n\
                 Content-Length: {}\r\nConnection: close\r\nUser-Agent: Agora/{}\r\n\r\n",
                body.len(),
                env!("CARGO_PKG_VERSION")
            );
            s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
            s.write_all(body).await.map_err(|e| e.to_string())?;
            let mut status = String::new();
            BufReader::new(&mut s).take(1024).read_line(&mut status).await.map_err(|e| e.to_string())?;
            match status.split_whitespace().nth(1) {
                Some(code) if code.starts_with('2') => Ok(()),
                _ => Err(format!("the server answered {:?}", status.trim())),
            }
        };
        tokio::time::timeout(Duration::from_secs(30), exchange).await.map_err(|_| "timed out".to_string())?
    }
}

/// The message as relayed: the Return-Path line that local copies carry is the final
/// delivery's business (RFC 5321 §4.4), not a relay's.
fn without_return_path(message: &[u8]) -> &[u8] {
    if message.len() > 12 && message[..12].eq_ignore_ascii_case(b"return-path:") {
        let end = message.iter().position(|&b| b == b'\n').map_or(message.len(), |i| i + 1);
        return &message[end..];
    }
    message
}

/// One message of a lane: its body, sender and the entries (recipients) it goes to.
struct Item {
    blob: String,
    from: String,
    entries: Vec<Queued>,
}

/// DSN parameters to pass on to a next hop that speaks DSN (RFC 3461 §4): the
/// message's RET and ENVID, each recipient's NOTIFY and ORCPT.
#[derive(Default)]
struct DsnParams {
    mail: String,
    rcpt: Vec<String>,
}

impl DsnParams {
    fn of(envelope: Option<&Envelope>, rcpts: &[String]) -> DsnParams {
        let Some(env) = envelope else {
            return DsnParams { mail: String::new(), rcpt: vec![String::new(); rcpts.len()] };
        };
        let mut mail = String::new();
        if let Some(r) = &env.ret {
            mail.push_str(&format!(" RET={r}"));
        }
        if let Some(id) = &env.envid {
            mail.push_str(&format!(" ENVID={id}"));
        }
        let rcpt = rcpts
            .iter()
            .map(|r| {
                let mut p = String::new();
                if let Some(er) = env.recipients.iter().find(|x| x.address.eq_ignore_ascii_case(r)) {
                    if let Some(n) = &er.notify {
                        p.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = &er.orcpt {
                        p.push_str(&format!(" ORCPT={o}"));
                    }
                }
                p
            })
            .collect();
        DsnParams { mail, rcpt }
    }
}

/// An open connection ready for transactions.
struct Session {
    host: String,
    pipelining: bool,
    size: bool,
    /// The server takes DSN parameters: success reports become its business.
    dsn: bool,
    eight_bit: bool,
    smtputf8: bool,
    client: Client,
}

/// A minimal SMTP client for the transport.
struct Client {
    r: BufReader<Box<dyn agora_net::conn::Io>>,
    /// The TLS session's channel binding (TLS 1.3), for X-LINK2STATE's proofs.
    binding: Option<[u8; 32]>,
}

impl Client {
    fn new(io: Box<dyn agora_net::conn::Io>) -> Client {
        Client { r: BufReader::new(io), binding: None }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.r.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }

    async fn send_raw(&mut self, data: &[u8]) -> Result<(), String> {
        let w = self.r.get_mut();
        w.write_all(data).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }

    /// A whole reply: its code and its text (all lines, joined).
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let (code, lines) = self.reply_lines().await?;
        Ok((code, format!("{code} {}", lines.join(" "))))
    }

    /// A whole reply: its code and the text of each line.
    async fn reply_lines(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let mut line = Vec::new();
            // Bounded: a server that never ends its line cannot make us buffer forever.
            let mut limited = (&mut self.r).take(MAX_REPLY_LINE as u64);
            let n = tokio::time::timeout(Duration::from_secs(300), limited.read_until(b'\n', &mut line))
                .await
                .map_err(|_| "server timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if !line.ends_with(b"\n") && line.len() >= MAX_REPLY_LINE {
                return Err("reply line too long".into());
            }
            let (code, more, text) = crate::codec::parse_reply_line(&line)?;
            lines.push(text);
            if !more {
                return Ok((code, lines));
            }
            if lines.len() > 1000 {
                return Err("reply too long".into());
            }
        }
    }

    async fn expect(&mut self, code: u16) -> Result<String, String> {
        let (c, text) = self.reply().await?;
        if c != code { Err(text) } else { Ok(text) }
    }

    /// EHLO (HELO if refused); returns the extension keywords.
    async fn ehlo(&mut self, name: &str) -> Result<Vec<String>, String> {
        self.send(&format!("EHLO {name}")).await?;
        let (code, lines) = self.reply_lines().await?;
        if code == 250 {
            return Ok(lines.into_iter().skip(1).collect());
        }
        self.send(&format!("HELO {name}")).await?;
        self.expect(250).await.map(|_| Vec::new())
    }

    async fn data(&mut self, message: &[u8]) -> Result<(), String> {
        let mut out = Vec::new();
        agora_net::dot::stuff(message, None, &mut out);
        let w = self.r.get_mut();
        w.write_all(&out).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }

    /// TLS on the connection (RFC 3207), the certificate judged by `verifier`.
    async fn start_tls(
        self,
        name: &str,
        verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    ) -> Result<Client, String> {
        let io = self.r.into_inner();
        let cfg = mtasts::client_config(verifier)?;
        let server = rustls_pki_types::ServerName::try_from(name.to_string())
            .or_else(|_| rustls_pki_types::ServerName::try_from("localhost"))
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(cfg).connect(server, io).await.map_err(|e| e.to_string())?;
        let binding = agora_net::tls::channel_binding(tls.get_ref().1);
        Ok(Client { binding, ..Client::new(Box::new(tls)) })
    }
}

/// X-LINK2STATE as the client: both proofs of membership (bound to this TLS session),
/// digests compared, and when they differ our table sent and theirs read and merged.
async fn link2state(c: &mut Client, store: &Arc<dyn Store>, me: &Identity) -> Result<(bool, String), String> {
    let cb = c.binding.ok_or("no TLS 1.3 channel binding")?;
    let nonce = routing::nonce();
    c.send(&format!("X-LINK2STATE HELLO {} {}", me.node, routing::hex(&nonce))).await?;
    let (code, lines) = c.reply_lines().await?;
    let text = lines.join(" ");
    let w: Vec<&str> = text.split(' ').collect();
    let (peer, sn, proof) = match (code, w.as_slice()) {
        (250, [peer, n, p, ..]) => {
            (peer.to_string(), routing::unhex::<16>(n).ok_or("bad nonce")?, routing::unhex::<32>(p).ok_or("bad proof")?)
        }
        _ => return Err(format!("HELLO answered {code} {text}")),
    };
    let want = routing::proof(&me.secret, routing::Side::Server, &cb, (&me.node, &nonce), (&peer, &sn));
    if !routing::constant_time_eq(&want, &proof) {
        let _ = c.send("RSET").await;
        let _ = c.reply().await;
        return Err(format!("{peer} is not of this organisation"));
    }
    let mine = routing::proof(&me.secret, routing::Side::Client, &cb, (&me.node, &nonce), (&peer, &sn));
    c.send(&format!("X-LINK2STATE PROVE {}", routing::hex(&mine))).await?;
    c.expect(250).await?;
    let (_, ours) = routing::load(store).await?;
    c.send("X-LINK2STATE DIGEST").await?;
    let theirs = c.expect(250).await?;
    // `expect` gives the reply with its code: "250 DIGEST MAJOR MINOR".
    if theirs.split(' ').nth(1) == Some(ours.digest().as_str()) {
        return Ok((false, format!("{peer} has the same table")));
    }
    let text = ours.encode();
    c.send(&format!("X-LINK2STATE TABLE {}", text.len())).await?;
    c.expect(354).await?;
    let w = c.r.get_mut();
    w.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())?;
    c.expect(250).await?;
    c.send("X-LINK2STATE GET").await?;
    let got = c.expect(250).await?;
    let len: usize = got
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= routing::MAX_TABLE)
        .ok_or(format!("GET answered {got:?}"))?;
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(60), c.r.read_exact(&mut body))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let table = String::from_utf8(body).map_err(|e| e.to_string())?;
    let theirs = routing::Table::decode(&table).map_err(|e| e.to_string())?;
    let (_, changed) = routing::merge_stored(store, &theirs).await?;
    Ok((true, format!("tables exchanged with {peer}{}", if changed { ", ours changed" } else { "" })))
}

/// True if the envelope or the header section is not ASCII (RFC 6531).
fn needs_smtputf8(from: &str, rcpts: &[String], message: &[u8]) -> bool {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    !from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()) || !message[..end].is_ascii()
}

/// The host part of "host:port".
fn host_name(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Accepts any certificate: opportunistic STARTTLS protects against passive reading,
/// and the signature checks still bind the handshake to the presented key. With
/// `audit` (an MTA-STS policy in testing mode) a certificate that would fail the
/// policy is logged.
#[derive(Debug, Default)]
struct Opportunistic {
    audit: Option<(Arc<rustls::client::WebPkiServerVerifier>, String)>,
    /// Why the audited certificate failed, for the TLS report.
    failure: std::sync::Mutex<Option<String>>,
}

impl rustls::client::danger::ServerCertVerifier for Opportunistic {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some((v, domain)) = &self.audit
            && let Err(e) = v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            tracing::warn!("mta-sts (testing) {domain}: certificate of {}: {e}", server_name.to_str());
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(e.to_string());
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        agora_mail::dane::handshake_signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        agora_mail::dane::handshake_signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        agora_mail::dane::signature_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalized_mail_is_recognised() {
        let ascii = b"Subject: hi\r\n\r\nbody \xc3\xa9t\xc3\xa9\r\n";
        assert!(!needs_smtputf8("a@example.org", &["b@example.net".into()], ascii));
        assert!(needs_smtputf8("\u{e9}l\u{e8}ve@example.org", &["b@example.net".into()], ascii));
        assert!(needs_smtputf8("a@example.org", &["b@\u{e9}cole.example".into()], ascii));
        assert!(needs_smtputf8("a@example.org", &[], "Subject: \u{e9}t\u{e9}\r\n\r\nx".as_bytes()));
    }

    /// A server that says 250 to everything (354 to DATA) and records what it heard.
    async fn recording_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&heard);
        tokio::spawn(async move {
            let (sock, _) = l.accept().await.unwrap();
            let mut r = BufReader::new(sock);
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let reply = if in_data {
                    if line != ".\r\n" {
                        log.lock().unwrap().push(format!("DATA {}", line.trim_end()));
                        continue;
                    }
                    in_data = false;
                    "250 ok\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    "354 go on\r\n"
                } else {
                    "250 ok\r\n"
                };
                log.lock().unwrap().push(line.trim_end().to_string());
                r.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (addr, heard)
    }

    async fn transport() -> (Transport, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(agora_store::sql::SqlStore::open(dir.path()).unwrap());
        let mail = Mail::new(agora_mail::MailConfig::default(), Arc::clone(&store), Directory::new(Arc::clone(&store)));
        (Transport::new(TransportConfig::default(), &mail).unwrap(), dir)
    }

    /// A session with a recording server that offers 8BITMIME and SMTPUTF8 or neither.
    async fn recorded_session(capable: bool) -> (Session, Arc<std::sync::Mutex<Vec<String>>>) {
        let (addr, heard) = recording_server().await;
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let s = Session {
            host: addr.clone(),
            pipelining: false,
            size: true,
            dsn: false,
            eight_bit: capable,
            smtputf8: capable,
            client: Client::new(Box::new(tcp)),
        };
        (s, heard)
    }

    #[tokio::test]
    async fn internationalized_and_8bit_mail_get_their_parameters_or_go_back() {
        let (t, _dir) = transport().await;
        let utf8 = "From: \u{e9}l\u{e8}ve@example.org\r\nSubject: caf\u{e9}\r\n\r\ncaf\u{e9}\r\n".as_bytes();
        let sender = "\u{e9}l\u{e8}ve@example.org";
        for capable in [false, true] {
            let (mut s, heard) = recorded_session(capable).await;
            let fates = t
                .transaction(&mut s, sender, &["b@example.net".to_string()], utf8, &DsnParams::default())
                .await
                .unwrap();
            let heard = heard.lock().unwrap().clone();
            if capable {
                assert_eq!(fates, vec![Fate::Delivered(false)]);
                assert_eq!(heard[0], format!("MAIL FROM:<{sender}> SIZE={} BODY=8BITMIME SMTPUTF8", utf8.len()));
            } else {
                assert!(matches!(&fates[0], Fate::Failed(w) if w.starts_with("550 5.6.7")), "{fates:?}");
                assert!(heard.is_empty(), "nothing may be sent: {heard:?}");
            }
        }
    }

    #[tokio::test]
    async fn eight_bit_mail_is_made_seven_bit_for_a_server_without_8bitmime() {
        let (t, _dir) = transport().await;
        let m = b"From: a@example.org\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9\r\n";
        let (mut s, heard) = recorded_session(false).await;
        let fates = t
            .transaction(&mut s, "a@example.org", &["b@example.net".to_string()], m, &DsnParams::default())
            .await
            .unwrap();
        assert_eq!(fates, vec![Fate::Delivered(false)]);
        let heard = heard.lock().unwrap().clone();
        assert!(!heard[0].contains("8BITMIME"), "{heard:?}");
        assert!(heard.contains(&"DATA Content-Transfer-Encoding: quoted-printable".to_string()), "{heard:?}");
        assert!(heard.contains(&"DATA caf=C3=A9".to_string()), "{heard:?}");
    }

    #[test]
    fn relayed_messages_lose_the_return_path() {
        assert_eq!(without_return_path(b"Return-Path: <a@b>\r\nReceived: x\r\n\r\nbody"), b"Received: x\r\n\r\nbody");
        assert_eq!(without_return_path(b"Subject: s\r\n\r\nbody"), b"Subject: s\r\n\r\nbody");
    }

    #[test]
    fn dsn_parts() {
        let dsn = Dsn {
            hostname: "mx.example.org",
            sender: "a@example.org",
            recipient: "b@remote.test",
            orcpt: Some("rfc822;b@remote.test"),
            envid: Some("E1"),
            full: false,
            report: Report::Failed("5.1.1", "550 5.1.1 no such user"),
        }
        .message(b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nsecret body\r\n");
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(
            text.contains("Original-Envelope-Id: E1\r\n") && text.contains("Original-Recipient: rfc822;b@remote.test")
        );
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Subject: hi") && !text.contains("secret body"), "RET=HDRS returns the header only");
    }
}
