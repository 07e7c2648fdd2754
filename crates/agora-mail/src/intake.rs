//! The intake pipeline: one path for every way mail enters Agora (SMTP today; webmail,
//! NNTP gateways, public-folder posting and X.400 next). Checks mail from outside,
//! signs our users' mail, stores one body for all local mailboxes, queues remote
//! recipients, wakes the transport, sends "delivered" reports and writes tracking.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_store::{Delivery, DeliveryTarget, DkimState, Envelope, EnvelopeRecipient, Flags, StoreError};

use crate::Mail;
use crate::dsn::{Dsn, Report, send_report};
use crate::tracking::{Event, message_id};

/// Where a message came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub ip: IpAddr,
    /// The client's HELO name (or the protocol's equivalent), already made safe to print.
    pub helo: String,
    /// The account that sent it, when the client logged in.
    pub authenticated_as: Option<String>,
    /// The client is in a trusted network (relays without login).
    pub trusted: bool,
    pub tls: bool,
}

/// One accepted recipient, as the directory resolved it.
#[derive(Debug, Clone, Default)]
pub struct Rcpt {
    pub address: String,
    /// Accounts whose INBOX gets a copy.
    pub accounts: Vec<i64>,
    /// Outside addresses (group members, forwarding aliases) to queue.
    pub external: Vec<String>,
    /// A public folder (owning account, path) that gets a copy.
    pub folder: Option<(i64, String)>,
    /// DSN parameters (RFC 3461).
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// What the caller's configuration asks of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Refuse mail failing DMARC when its domain publishes p=reject.
    pub dmarc_reject: bool,
    /// DKIM-sign mail from logged-in users and trusted networks.
    pub dkim_sign: bool,
    /// ARC-seal checked mail that aliases or groups forward to outside addresses.
    pub arc_seal: bool,
    /// The most one message's checks (SPF, DKIM, ARC, DMARC lookups) may take.
    pub check_budget: Duration,
}

/// A message to take in.
#[derive(Debug)]
pub struct Intake {
    pub id: String,
    pub received: i64,
    pub sender: String,
    pub recipients: Vec<Rcpt>,
    /// DSN RET and ENVID.
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub origin: Origin,
    /// Trace fields the protocol writes first (Return-Path, Received), CRLF-terminated.
    pub trace: String,
    pub body: Vec<u8>,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// DMARC failed under the sender domain's p=reject policy.
    #[error("rejected by the sender domain's DMARC policy")]
    Dmarc,
    /// Every recipient's Sieve script refused it with `ereject` (RFC 5429 §2.1): the
    /// reason goes back in the protocol's reply instead of a bounce.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of an accepted message.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// Local copies stored.
    pub copies: usize,
    /// Remote recipients queued.
    pub queued: usize,
}

impl Mail {
    /// Takes a message in durably: it returns only after the store committed it, so the
    /// caller may acknowledge it then.
    pub async fn accept(&self, mut i: Intake) -> Result<Accepted, IntakeError> {
        // Forwarding first: an outside copy is then sealed like any forwarded mail.
        self.forward(&mut i.recipients).await;
        let mut extra: Vec<u8> = Vec::new();
        let ours = i.origin.authenticated_as.is_some() || i.origin.trusted;
        if !ours && let Some(v) = &self.verifier {
            // Mail passed on to other servers is sealed with ARC by the forwarding
            // domain, so that its results travel along.
            let forwarder =
                i.recipients.iter().find(|r| !r.external.is_empty()).and_then(|r| r.address.rsplit_once('@'));
            let seal = match forwarder {
                Some((_, domain)) if i.policy.arc_seal => {
                    self.store.dkim_keys(domain).await.ok().and_then(|keys| {
                        keys.into_iter().find(|k| k.algorithm == "rsa" && k.state == DkimState::Active)
                    })
                }
                _ => None,
            };
            let verdict =
                v.check(&i.body, i.origin.ip, &i.origin.helo, &i.sender, seal.as_ref(), i.policy.check_budget).await;
            if verdict.reject_under_policy && i.policy.dmarc_reject {
                return Err(IntakeError::Dmarc);
            }
            extra.extend_from_slice(verdict.header.as_bytes());
        }
        // Our 8-bit mail going outside is made 7-bit before it is signed, so the
        // signature holds whatever the next hop takes (RFC 6152 §3, RFC 6376 §5.3).
        if ours
            && i.policy.dkim_sign
            && i.recipients.iter().any(|r| !r.external.is_empty())
            && let Some(seven) = agora_store::section::seven_bit(&i.body)
        {
            i.body = seven;
        }
        // Automatic replies (null return path) are signed for their author's domain.
        let signer = if i.sender.is_empty() { i.origin.authenticated_as.as_deref().unwrap_or("") } else { &i.sender };
        if i.policy.dkim_sign
            && ours
            && let Some((_, domain)) = signer.rsplit_once('@')
            && let Ok(keys) = self.store.dkim_keys(domain).await
            && !keys.is_empty()
        {
            extra.extend_from_slice(&crate::auth::sign(&i.body, &keys));
        }
        let mut message = Vec::with_capacity(i.trace.len() + extra.len() + i.body.len());
        message.extend_from_slice(i.trace.as_bytes());
        message.extend_from_slice(&extra);
        message.extend_from_slice(&i.body);

        // Each recipient's Sieve script, where it has one, decides where its copy goes.
        let filtered = self.filter(&i, &message).await;
        // Refused by every recipient with ereject, and going nowhere else: said in the
        // reply, so no bounce goes to a sender that may be forged.
        let all_refused = !filtered.is_empty()
            && i.recipients.iter().all(|r| {
                r.folder.is_none()
                    && r.external.is_empty()
                    && !r.accounts.is_empty()
                    && r.accounts.iter().all(|a| {
                        filtered.get(a).is_some_and(|f| f.ereject && f.targets.is_empty() && f.redirects.is_empty())
                    })
            });
        if all_refused {
            let reason = filtered.values().find_map(|f| f.reject.clone()).unwrap_or_default();
            return Err(IntakeError::Rejected(reason));
        }
        // Bodies to store: the message, then any that a script's header edits made.
        let mut plans: Vec<Plan> = vec![Plan::default()];
        let mut seen = HashSet::new();
        let mut delivered: Vec<(i64, String)> = Vec::new();
        for r in &i.recipients {
            for &a in &r.accounts {
                if !seen.insert(a) {
                    continue;
                }
                let Some(f) = filtered.get(&a) else {
                    plans[0].add(a, "INBOX", Flags::default(), &[]);
                    delivered.push((a, r.address.clone()));
                    continue;
                };
                // One plan per version of the message (header edits make new ones).
                let plan_of = |v: &crate::filter::Version, plans: &mut Vec<Plan>| match v {
                    None => 0,
                    Some(m) => match plans.iter().position(|p| p.body.as_ref().is_some_and(|b| Arc::ptr_eq(b, m))) {
                        Some(i) => i,
                        None => {
                            plans.push(Plan { body: Some(Arc::clone(m)), ..Plan::default() });
                            plans.len() - 1
                        }
                    },
                };
                for (mailbox, flags, keywords, v) in &f.targets {
                    let p = plan_of(v, &mut plans);
                    plans[p].add(a, mailbox, *flags, keywords);
                }
                if !f.targets.is_empty() {
                    delivered.push((a, r.address.clone()));
                }
                for (to, v) in &f.redirects {
                    let p = plan_of(v, &mut plans);
                    match self.dir.resolve(to).await {
                        // Local: straight into the INBOX (their own scripts do not run
                        // again, so redirects cannot loop here).
                        Ok(agora_directory::Recipient::Local(res)) => {
                            let others: Vec<i64> = res.accounts.iter().map(|x| x.id).filter(|&x| x != a).collect();
                            for &acc in &others {
                                plans[p].add(acc, "INBOX", Flags::default(), &[]);
                            }
                            if let Some((owner, folder)) = &res.folder {
                                plans[p].add(*owner, &folder.path, Flags::default(), &[]);
                            }
                            // To itself only: the copy stays (a redirect never loses it).
                            if others.is_empty() && res.folder.is_none() && res.external.is_empty() {
                                plans[p].add(a, "INBOX", Flags::default(), &[]);
                            }
                            plans[p].relay.extend(res.external);
                        }
                        Ok(agora_directory::Recipient::Remote) => plans[p].relay.push(to.clone()),
                        // Nowhere to send it: the copy stays with the account.
                        Ok(agora_directory::Recipient::Unknown) | Err(_) => {
                            tracing::warn!("sieve: account {a} redirects to {to}: no such address");
                            plans[p].add(a, "INBOX", Flags::default(), &[]);
                        }
                    }
                }
            }
            if let Some((owner, path)) = &r.folder {
                plans[0].add(*owner, path, Flags::default(), &[]);
            }
            plans[0].relay.extend(r.external.iter().cloned());
        }
        for p in &mut plans {
            let mut once = HashSet::new();
            p.relay.retain(|x| once.insert(x.to_ascii_lowercase()));
        }
        let relay: Vec<String> = plans.iter().flat_map(|p| p.relay.iter().cloned()).collect();
        let envelope = Envelope {
            mail_from: i.sender.clone(),
            helo: i.origin.helo.clone(),
            client_ip: i.origin.ip.to_string(),
            ret: i.ret.clone(),
            envid: i.envid.clone(),
            recipients: i
                .recipients
                .iter()
                .map(|r| EnvelopeRecipient {
                    address: r.address.clone(),
                    notify: r.notify.clone(),
                    orcpt: r.orcpt.clone(),
                })
                .collect(),
            authenticated_as: i.origin.authenticated_as.clone(),
            tls: i.origin.tls,
            queue_id: i.id.clone(),
        };
        let size = message.len() as u64;
        let mid = message_id(&message);
        // Delivered here: a public folder, or an account that kept a copy.
        let kept_by = |r: &Rcpt| r.accounts.iter().any(|a| delivered.iter().any(|d| d.0 == *a));
        let local: Vec<String> =
            i.recipients.iter().filter(|r| kept_by(r) || r.folder.is_some()).map(|r| r.address.clone()).collect();
        let remote = relay.clone();
        // NOTIFY=SUCCESS on a recipient delivered here: a "delivered" report (RFC 3461 §6.2).
        let wants_success = i.recipients.iter().any(|r| kept_by(r) && notify_has(&r.notify, "SUCCESS"));
        let kept = if wants_success { message.clone() } else { Vec::new() };
        // Vacation replies read the message after it is stored (only when someone is away).
        let away = !delivered.is_empty() && self.automatic().await.anyone_away();
        let for_vacation = if away { message.clone() } else { Vec::new() };
        let message_for_filter = if filtered.is_empty() { Vec::new() } else { message.clone() };
        // A TLS report (RFC 8460) for a hosted domain is kept for `agora tls-report list`
        // as well as delivered.
        let report = (!local.is_empty() && crate::tlsrpt::looks_like_report(&message))
            .then(|| crate::tlsrpt::parse_message(&message))
            .flatten();
        let mut deliveries = Vec::new();
        for p in plans {
            if p.groups.is_empty() && p.relay.is_empty() {
                continue;
            }
            let body = match p.body {
                Some(edited) => Arc::unwrap_or_clone(edited),
                None => message.clone(),
            };
            let body = self.store.stage(body).await?;
            let mut relay = p.relay;
            let mut groups: Vec<_> = p.groups.into_iter().collect();
            if groups.is_empty() {
                groups.push(((0, Vec::new()), Vec::new()));
            }
            for ((flags, keywords), targets) in groups {
                deliveries.push(Delivery {
                    body: body.clone(),
                    internal_date: i.received,
                    envelope: Some(envelope.clone()),
                    flags: Flags(flags),
                    keywords,
                    targets,
                    // The remote copies go with the first group.
                    relay: std::mem::take(&mut relay),
                    // Checked when the recipient was accepted; accepted mail is never dropped for quota.
                    enforce_quota: false,
                });
            }
        }
        // Every copy in one transaction: all of them are durable, or none.
        let copies = if deliveries.is_empty() {
            0
        } else {
            self.store.deliver_all(deliveries).await?.iter().map(Vec::len).sum()
        };
        if !remote.is_empty() {
            self.wake.notify_one();
        }
        if wants_success {
            self.success_reports(&i, &kept, &delivered).await;
        }
        if let Some(r) = report {
            self.keep_tls_report(r, i.received).await;
        }
        if away {
            self.vacation(&i, &delivered, &for_vacation).await;
        }
        if !filtered.is_empty() {
            self.after_filter(&i, &message_for_filter, &filtered).await;
        }
        metrics::counter!("agora_messages_received_total").increment(1);
        metrics::counter!("agora_messages_delivered_total", "destination" => "local").increment(local.len() as u64);
        metrics::counter!("agora_messages_queued_total").increment(remote.len() as u64);
        if let Some(t) = &self.tracker {
            let base = Event {
                time: i.received,
                id: i.id.clone(),
                sender: i.sender.clone(),
                size,
                message_id: mid,
                ..Default::default()
            };
            t.log(Event {
                event: "received".into(),
                recipients: i.recipients.iter().map(|r| r.address.clone()).collect(),
                remote: i.origin.ip.to_string(),
                ..base.clone()
            });
            if !local.is_empty() {
                t.log(Event {
                    event: "delivered".into(),
                    recipients: local,
                    remote: "local mailbox".into(),
                    ..base.clone()
                });
            }
            if !remote.is_empty() {
                t.log(Event { event: "queued".into(), recipients: remote.clone(), ..base });
            }
        }
        Ok(Accepted { copies, queued: remote.len() })
    }

    async fn keep_tls_report(&self, r: crate::tlsrpt::Report, received: i64) {
        let mut hosted = Vec::new();
        for p in &r.policies {
            let d = p.policy.policy_domain.to_ascii_lowercase();
            if !hosted.contains(&d) && matches!(self.store.domain(&d).await, Ok(Some(_))) {
                hosted.push(d);
            }
        }
        if hosted.is_empty() {
            return;
        }
        let summary = crate::tlsrpt::summary(&r, &hosted, received);
        match self.store.add_tls_report(summary).await {
            Ok(_) => tracing::info!("tls-report: from {} for {}", r.organization_name, hosted.join(", ")),
            Err(e) => tracing::warn!("tls-report: not kept: {e}"),
        }
    }

    /// "delivered" reports for the local recipients that asked for them with NOTIFY.
    async fn success_reports(&self, i: &Intake, message: &[u8], delivered: &[(i64, String)]) {
        if i.sender.is_empty() {
            return;
        }
        let kept = |r: &&Rcpt| r.accounts.iter().any(|a| delivered.iter().any(|d| d.0 == *a));
        for r in i.recipients.iter().filter(kept).filter(|r| notify_has(&r.notify, "SUCCESS")) {
            let dsn = Dsn {
                hostname: &self.cfg.hostname,
                sender: &i.sender,
                recipient: &r.address,
                orcpt: r.orcpt.as_deref(),
                envid: i.envid.as_deref(),
                full: i.ret.as_deref().is_some_and(|x| x.eq_ignore_ascii_case("FULL")),
                report: Report::Delivered,
            };
            if let Err(e) = send_report(self.store.as_ref(), &self.dir, &i.sender, dsn.message(message)).await {
                tracing::warn!("mail: success report for {}: {e}", i.id);
            }
        }
    }
}

/// True if a NOTIFY parameter names `what`.
pub fn notify_has(notify: &Option<String>, what: &str) -> bool {
    notify.as_deref().is_some_and(|n| n.split(',').any(|x| x.trim().eq_ignore_ascii_case(what)))
}

/// One body's copies: targets grouped by the flags they are stored with, and the
/// remote recipients it is queued for.
#[derive(Default)]
struct Plan {
    /// None: the message as received.
    body: Option<Arc<Vec<u8>>>,
    groups: std::collections::BTreeMap<(u8, Vec<String>), Vec<DeliveryTarget>>,
    relay: Vec<String>,
}

impl Plan {
    fn add(&mut self, account: i64, mailbox: &str, flags: Flags, keywords: &[String]) {
        let dup =
            self.groups.values().flatten().any(|t| t.account == account && t.mailbox.eq_ignore_ascii_case(mailbox));
        if !dup {
            let t = DeliveryTarget { account, mailbox: mailbox.to_string() };
            self.groups.entry((flags.0, keywords.to_vec())).or_default().push(t);
        }
    }
}
