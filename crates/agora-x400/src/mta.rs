//! The MTA: partners and their binds, what arrives on 102 taken in through the mail
//! core (durably, before the transfer is confirmed), and what the transport's queue
//! hands over for a partner's domains sent in an association of our own.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_directory::{Recipient, throttle::Throttle};
use agora_mail::gateway::{Gateway, Outcome};
use agora_mail::{Intake, Mail, Origin, Policy, Rcpt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::assoc::{self, Event, Failure, Initiator, Limits, Mode, Selectors};
use crate::gateway::{self, Local};
use crate::oraddr::{Mapper, Mapping, OrAddress};
use crate::{p1, tpkt};

/// A partner MTA as configured.
#[derive(Clone)]
pub struct Partner {
    pub key: String,
    pub mta_name: String,
    /// What it presents in its bind.
    pub their_password: String,
    /// What this MTA presents to it.
    pub our_password: String,
    pub host: String,
    pub port: u16,
    pub selectors: Selectors,
    pub mode: Mode,
    /// RFC 822 domains routed to it, with the O/R subtree each is.
    pub domains: Vec<(String, OrAddress)>,
}

impl std::fmt::Debug for Partner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passwords.
        f.debug_struct("Partner").field("key", &self.key).field("mta_name", &self.mta_name).finish()
    }
}

pub struct Mta {
    pub name: String,
    pub ours: Selectors,
    pub local: Local,
    pub partners: Vec<Partner>,
    pub mail: Arc<Mail>,
    pub throttle: Arc<Throttle>,
    pub limits: Limits,
    pub timeout: Duration,
    /// When the received-notes were last swept (seconds).
    pub swept: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Mta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mta").field("name", &self.name).finish()
    }
}

const SEEN_PREFIX: &str = "x400.received.";

impl Mta {
    /// The mapping tables now: the hosted domains' O/R spaces and the partners' domains.
    pub async fn mapper(&self) -> Mapper {
        let mut entries = Vec::new();
        for d in self.mail.store().domains().await.unwrap_or_default() {
            if let Ok(or) = OrAddress::parse(&d.x400) {
                entries.push(Mapping { or, domain: d.name });
            }
        }
        for p in &self.partners {
            for (domain, or) in &p.domains {
                entries.push(Mapping { or: or.clone(), domain: domain.clone() });
            }
        }
        Mapper { entries, gateway: self.local.domain.clone() }
    }

    pub fn partner_by_name(&self, mta: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.mta_name.eq_ignore_ascii_case(mta))
    }

    pub fn partner_for_domain(&self, domain: &str) -> Option<&Partner> {
        let domain = domain.to_ascii_lowercase();
        self.partners.iter().find(|p| p.domains.iter().any(|(d, _)| domain == *d || domain.ends_with(&format!(".{d}"))))
    }

    /// Checks a bind: the partner it names and the password it must present.
    pub fn check_bind(&self, bind: &p1::Bind) -> Result<&Partner, i64> {
        let Some((name, password)) = bind.name_and_password() else {
            return Err(p1::BIND_AUTHENTICATION_ERROR);
        };
        let Some(p) = self.partner_by_name(&name) else {
            return Err(p1::BIND_AUTHENTICATION_ERROR);
        };
        if !agora_directory::sasl::constant_time_eq(password.as_slice(), p.their_password.as_bytes()) {
            return Err(p1::BIND_AUTHENTICATION_ERROR);
        }
        Ok(p)
    }

    /// Our bind for a partner.
    pub fn our_bind(&self, p: &Partner) -> p1::Bind {
        p1::Bind::new(&self.name, &p.our_password).unwrap_or(p1::Bind::Unauthenticated(()))
    }

    /// Takes in one transferred MTS APDU from `partner`; Ok once it is durable (or was
    /// taken before), so the transfer may be confirmed. A probe's answer comes back as
    /// the report to send the partner.
    pub async fn inbound(
        &self,
        partner: &Partner,
        mode: Mode,
        apdu: &[u8],
        ip: IpAddr,
    ) -> Result<Option<Vec<u8>>, String> {
        let apdu: p1::MtsApdu = p1::decode(apdu)?;
        let store = self.mail.store();
        let id = match &apdu {
            p1::MtsApdu::Message(m) => gateway::mts_id_text(&m.envelope.identifier),
            p1::MtsApdu::Report(r) => gateway::mts_id_text(&r.envelope.identifier),
            p1::MtsApdu::Probe(p) => gateway::mts_id_text(&p.identifier),
        };
        let key = format!("{SEEN_PREFIX}{}.{id}", partner.key);
        // Sent again after a confirmation that did not arrive: taken already.
        if store.sync_values(&key).await.map_err(|e| e.to_string())?.iter().any(|(k, _)| *k == key) {
            tracing::info!("x400: {id} from {} was taken before; confirmed again", partner.mta_name);
            return Ok(None);
        }
        let mapper = self.mapper().await;
        let mut answer = None;
        match apdu {
            p1::MtsApdu::Message(m) => answer = self.take_message(partner, mode, &m, &mapper, ip, &key).await?,
            p1::MtsApdu::Report(r) => match gateway::report_to_dsn(&r, &mapper, &self.local.hostname) {
                Ok((dest, dsn)) => {
                    agora_mail::dsn::send_report(store.as_ref(), self.mail.directory(), &dest, dsn)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!("x400: report {id} from {} for {dest}", partner.mta_name);
                }
                // Nobody here to tell: a report is never reported on.
                Err(e) => tracing::warn!("x400: report {id} from {} dropped: {e}", partner.mta_name),
            },
            p1::MtsApdu::Probe(p) => {
                // Would mail be delivered? Each recipient as a message's would be.
                let mut outcomes = Vec::new();
                for r in &p.recipients {
                    let outcome = match mapper.to_822(&OrAddress::from_p1(&r.recipient)) {
                        Some(addr) => match self.mail.directory().resolve(&addr).await {
                            Ok(Recipient::Local(res)) if res.folder.is_none() => Ok(()),
                            Ok(_) => Err(Some(p1::nd::UNRECOGNISED_OR_NAME)),
                            Err(e) => return Err(format!("resolving {addr}: {e}")),
                        },
                        None => Err(Some(p1::nd::UNRECOGNISED_OR_NAME)),
                    };
                    outcomes.push((r.recipient.clone(), r.originally_specified_number, outcome));
                }
                let report =
                    gateway::report_on(&p.identifier, &p.originator, &outcomes, &self.local, &agora_mail::queue_id())?;
                answer = Some(p1::encode(&p1::MtsApdu::Report(report)));
                tracing::info!(
                    "x400: probe {id} from {} for {} recipient(s) answered",
                    partner.mta_name,
                    outcomes.len()
                );
            }
        }
        self.mark(&key).await?;
        Ok(answer)
    }

    /// Notes an APDU as taken, so that it is not taken twice; once an hour, forgets
    /// the notes older than a partner could still be retrying (30 days).
    async fn mark(&self, key: &str) -> Result<(), String> {
        let store = self.mail.store();
        let now = agora_store::now();
        store.set_sync_value(key, Some(now.to_string())).await.map_err(|e| e.to_string())?;
        let last = self.swept.load(std::sync::atomic::Ordering::Relaxed);
        if now - last > 3600
            && self
                .swept
                .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                .is_ok()
        {
            for (k, v) in store.sync_values(SEEN_PREFIX).await.unwrap_or_default() {
                if v.parse::<i64>().is_ok_and(|t| now - t > 30 * 86_400) {
                    let _ = store.set_sync_value(&k, None).await;
                }
            }
        }
        Ok(())
    }

    /// Delivers a message; a report to send back when it cannot be converted at all.
    async fn take_message(
        &self,
        partner: &Partner,
        mode: Mode,
        m: &p1::Message,
        mapper: &Mapper,
        ip: IpAddr,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let inbound = match gateway::to_internet(m, mapper, &self.local.hostname) {
            Ok(i) => i,
            // Not convertible (content type, syntax, size): a non-delivery report for
            // every recipient, so the partner stops sending it.
            Err(e) => {
                tracing::info!("x400: message from {} not convertible: {e}", partner.mta_name);
                let outcomes: Vec<gateway::Outcome> = m
                    .envelope
                    .recipients
                    .iter()
                    .take(p1::MAX_RECIPIENTS)
                    .map(|r| {
                        (r.recipient.clone(), r.originally_specified_number, Err(Some(p1::nd::CONTENT_SYNTAX_ERROR)))
                    })
                    .collect();
                let report = gateway::report_on(
                    &m.envelope.identifier,
                    &m.envelope.originator,
                    &outcomes,
                    &self.local,
                    &agora_mail::queue_id(),
                )?;
                return Ok(Some(p1::encode(&p1::MtsApdu::Report(report))));
            }
        };
        let dir = self.mail.directory();
        let mut rcpts = Vec::new();
        let mut refused = Vec::new();
        // Trace naming this domain already: the message went round; it is reported, not
        // delivered again.
        let looped = gateway::looped(&m.envelope, &self.local.domain);
        let mut reported = Vec::new();
        for r in &inbound.recipients {
            let or = &r.or;
            if looped {
                refused.push((r.address.clone().unwrap_or_else(|| or.text()), "5.4.6"));
                continue;
            }
            let Some(addr) = &r.address else {
                refused.push((or.text(), "5.1.1"));
                continue;
            };
            match dir.resolve(addr).await {
                Ok(Recipient::Local(res)) if res.folder.is_none() => {
                    if r.report {
                        reported.push(addr.clone());
                    }
                    rcpts.push(Rcpt {
                        address: addr.clone(),
                        accounts: res.accounts.iter().map(|a| a.id).collect(),
                        external: res.external,
                        ..Rcpt::default()
                    })
                }
                Ok(Recipient::Local(_)) | Ok(Recipient::Unknown) => refused.push((addr.clone(), "5.1.1")),
                // Not ours: this MTA relays for no one.
                Ok(Recipient::Remote) => refused.push((addr.clone(), "5.7.1")),
                Err(e) => return Err(format!("resolving {addr}: {e}")),
            }
        }
        let id = agora_mail::queue_id();
        let now = agora_store::now();
        // An originator that maps into a hosted domain claims to be one of ours: its
        // mail is checked like any other, never trusted.
        let sender_domain = inbound.sender.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let ours = !sender_domain.is_empty() && dir.is_local_domain(&sender_domain).await.unwrap_or(true);
        if !rcpts.is_empty() {
            let intake = Intake {
                id: id.clone(),
                received: now,
                sender: inbound.sender.clone(),
                recipients: rcpts,
                ret: None,
                envid: None,
                origin: Origin {
                    ip,
                    helo: partner.mta_name.chars().filter(|c| c.is_ascii_graphic()).collect(),
                    authenticated_as: None,
                    // The partner proved itself in its bind; SPF, DKIM and DMARC say
                    // nothing of mail that crossed X.400.
                    trusted: !ours,
                    tls: false,
                },
                trace: format!(
                    "Received: from {} ([{ip}])\r\n\tby {} (Agora) with X.400 P1 ({}) id {id};\r\n\t{}\r\n",
                    partner.mta_name.chars().filter(|c| c.is_ascii_graphic()).collect::<String>(),
                    self.local.hostname,
                    mode.name(),
                    agora_store::time::rfc5322_date(now)
                ),
                body: inbound.message.clone(),
                policy: Policy {
                    dmarc_reject: false,
                    dkim_sign: false,
                    arc_seal: false,
                    check_budget: Duration::from_secs(5),
                },
            };
            self.mail.accept(intake).await.map_err(|e| e.to_string())?;
        }
        // Taken: from here on a second copy of it is confirmed, not delivered again.
        self.mark(key).await?;
        // Delivery reports asked for: through the queue as DSNs, which the gateway turns
        // into P1 delivery reports.
        if !inbound.sender.is_empty() {
            for addr in &reported {
                let dsn = agora_mail::dsn::Dsn {
                    hostname: &self.local.hostname,
                    sender: &inbound.sender,
                    recipient: addr,
                    orcpt: None,
                    envid: None,
                    full: false,
                    report: agora_mail::dsn::Report::Delivered,
                };
                let report = dsn.message(&inbound.message);
                agora_mail::dsn::send_report(self.mail.store().as_ref(), dir, &inbound.sender, report)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // Recipients refused here: a report back to the originator, through the queue
        // (to its RFC 822 form, which the partner's domains map), as a DSN the gateway
        // turns into a P1 report.
        if !refused.is_empty() && !inbound.sender.is_empty() {
            for (addr, status) in &refused {
                let why = match *status {
                    "5.7.1" => "this MTA relays for no one",
                    "5.4.6" => "the message looped: its trace names this domain already",
                    _ => "no such recipient here",
                };
                let dsn = agora_mail::dsn::Dsn {
                    hostname: &self.local.hostname,
                    sender: &inbound.sender,
                    recipient: addr,
                    orcpt: None,
                    envid: None,
                    full: false,
                    report: agora_mail::dsn::Report::Failed(status, why),
                };
                let report = dsn.message(&inbound.message);
                agora_mail::dsn::send_report(self.mail.store().as_ref(), dir, &inbound.sender, report)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        tracing::info!(
            "x400: message {} from {}: {} recipient(s) taken, {} refused",
            gateway::mts_id_text(&m.envelope.identifier),
            partner.mta_name,
            inbound.recipients.len() - refused.len(),
            refused.len()
        );
        Ok(None)
    }

    /// Opens an association with `p`, transfers each APDU, releases. The result is
    /// per APDU: confirmed or not; an Err when the association could not be made.
    pub async fn send(&self, p: &Partner, apdus: &[Vec<u8>]) -> Result<usize, Failure> {
        let mut link = self.connect(p).await?;
        let (mut a, _) = self.bind(p, &mut link, |_| {}).await?;
        self.transfer_all(&mut a, &mut link, apdus).await
    }

    /// A TCP connection to the partner.
    async fn connect(&self, p: &Partner) -> Result<Link, Failure> {
        let connect = tokio::net::TcpStream::connect((p.host.as_str(), p.port));
        let tcp = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(Failure { layer: "TCP", what: format!("{}:{}: {e}", p.host, p.port) }),
            Err(_) => return Err(Failure { layer: "TCP", what: format!("{}:{}: connect timed out", p.host, p.port) }),
        };
        let _ = tcp.set_nodelay(true);
        Ok(Link { tcp, buf: Vec::new(), timeout: self.timeout })
    }

    /// Opens the association and binds; each event on the way is shown to `seen`. The
    /// partner proves itself too (its name and the password it presents): if it does
    /// not, the association is aborted. The bound initiator and the partner's name.
    async fn bind(
        &self,
        p: &Partner,
        link: &mut Link,
        mut seen: impl FnMut(&Event),
    ) -> Result<(Initiator, String), Failure> {
        let (mut a, out) =
            Initiator::new(p.mode, self.ours.clone(), p.selectors.clone(), self.our_bind(p), self.limits);
        link.write(&out).await?;
        loop {
            let tpdu = link.read().await?;
            let (out, events) = a.receive(&tpdu);
            link.write(&out).await?;
            for e in events {
                seen(&e);
                match e {
                    Event::Bound { bind } => {
                        let theirs = bind.name_and_password();
                        let name = theirs.as_ref().map(|(n, _)| n.clone()).unwrap_or_else(|| "(unnamed)".into());
                        let proven = theirs.is_some_and(|(n, pw)| {
                            n.eq_ignore_ascii_case(&p.mta_name)
                                && agora_directory::sasl::constant_time_eq(&pw, p.their_password.as_bytes())
                        });
                        if !proven {
                            let _ = link.write(&a.abort()).await;
                            return Err(Failure {
                                layer: "P1 bind",
                                what: format!("{name} answered without {}'s name and password", p.mta_name),
                            });
                        }
                        return Ok((a, name));
                    }
                    Event::Refused(f) | Event::Aborted(f) => return Err(f),
                    _ => {}
                }
            }
        }
    }

    async fn transfer_all(&self, a: &mut Initiator, link: &mut Link, apdus: &[Vec<u8>]) -> Result<usize, Failure> {
        let mut confirmed = 0;
        for apdu in apdus {
            link.write(&a.transfer(apdu)).await?;
            if !a.confirms() {
                continue;
            }
            'wait: loop {
                let tpdu = link.read().await?;
                let (out, events) = a.receive(&tpdu);
                link.write(&out).await?;
                for e in events {
                    match e {
                        Event::Confirmed => {
                            confirmed += 1;
                            break 'wait;
                        }
                        Event::Aborted(f) | Event::Refused(f) => return Err(f),
                        _ => {}
                    }
                }
            }
        }
        link.write(&a.release()).await?;
        // With activities the release is a courtesy (what was confirmed stays so);
        // without them only an orderly release says the partner has it all.
        let released = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(tpdu) = link.read().await {
                let (_, events) = a.receive(&tpdu);
                if events.contains(&Event::Released) {
                    return true;
                }
                if events.iter().any(|e| matches!(e, Event::Aborted(_) | Event::Refused(_))) {
                    return false;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !a.confirms() && released {
            confirmed = apdus.len();
        }
        Ok(confirmed)
    }

    /// `agora x400 test`: each layer's outcome with a partner, for the administrator.
    pub async fn test(&self, p: &Partner) -> Vec<(String, Result<String, String>)> {
        let mut steps: Vec<(String, Result<String, String>)> = Vec::new();
        let mut link = match self.connect(p).await {
            Ok(l) => l,
            Err(f) => {
                steps.push((f.layer.into(), Err(f.what)));
                return steps;
            }
        };
        steps.push(("TCP".into(), Ok(format!("connected to {}:{}", p.host, p.port))));
        let bound = self
            .bind(p, &mut link, |e| match e {
                Event::TransportConnected => {
                    steps.push(("transport (RFC 1006, X.224 class 0)".into(), Ok("connected".into())))
                }
                // Bound, or refused in the P1 bind only after the layers below took it.
                Event::Bound { .. } => {
                    for layer in ["session (X.225)", "presentation (X.226)"] {
                        steps.push((layer.into(), Ok("accepted".into())));
                    }
                    if p.mode == Mode::Normal {
                        steps.push(("ACSE (id-ac-mts-transfer)".into(), Ok("accepted".into())));
                    }
                    steps.push(("RTSE".into(), Ok("opened, monologue, no checkpointing".into())));
                }
                _ => {}
            })
            .await;
        match bound {
            Ok((mut a, name)) => {
                steps.push(("P1 bind".into(), Ok(format!("bound to MTA {name} in {} mode", p.mode.name()))));
                let _ = link.write(&a.release()).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), link.read()).await;
                steps.push(("release".into(), Ok("released".into())));
            }
            Err(f) => steps.push((f.layer.into(), Err(f.what))),
        }
        steps
    }
}

/// An association's TCP connection: TPKT packets in and out.
struct Link {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Link {
    async fn write(&mut self, tpdus: &[Vec<u8>]) -> Result<(), Failure> {
        let mut out = Vec::new();
        for t in tpdus {
            out.extend(tpkt::encode(t).map_err(|e| Failure { layer: "TPKT", what: e.to_string() })?);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.tcp.write_all(&out).await.map_err(|e| Failure { layer: "TCP", what: e.to_string() })
    }

    async fn read(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            match tpkt::decode(&self.buf) {
                Ok(Some((tpdu, used))) => {
                    let tpdu = tpdu.to_vec();
                    self.buf.drain(..used);
                    return Ok(tpdu);
                }
                Ok(None) => {}
                Err(e) => return Err(Failure { layer: "TPKT", what: e.to_string() }),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match tokio::time::timeout(self.timeout, self.tcp.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(Failure { layer: "TCP", what: "the partner closed the connection".into() }),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Failure { layer: "TCP", what: e.to_string() }),
                Err(_) => return Err(Failure { layer: "TCP", what: "no answer in time".into() }),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The gateway the transport hands a partner's mail to.
pub struct MtaGateway(pub Arc<Mta>);

#[async_trait::async_trait]
impl Gateway for MtaGateway {
    fn name(&self) -> &str {
        "X.400"
    }

    async fn claims(&self, domain: &str) -> bool {
        self.0.partner_for_domain(domain).is_some()
    }

    async fn deliver(&self, from: &str, recipients: &[String], message: &[u8]) -> Vec<Outcome> {
        let mta = &self.0;
        let all = |o: Outcome| vec![o; recipients.len()];
        let Some(domain) = recipients.first().and_then(|r| r.rsplit_once('@')).map(|(_, d)| d.to_string()) else {
            return Vec::new();
        };
        let Some(p) = mta.partner_for_domain(&domain).cloned() else {
            return all(Outcome::Failed(format!("550 5.1.2 no X.400 partner for {domain}")));
        };
        let mapper = mta.mapper().await;
        // The same message to the same recipients gets the same MTS identifier on every
        // attempt, so a partner that took it before knows it again.
        let local_id = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(from.as_bytes());
            for r in recipients {
                h.update([0]);
                h.update(r.as_bytes());
            }
            h.update([0]);
            h.update(message);
            h.finalize().iter().take(12).map(|b| format!("{b:02X}")).collect::<String>()
        };
        // A read receipt (MDN) to an X.400 originator becomes a receipt notification.
        let apdu = if let Some(mdn) = gateway::read_mdn(message) {
            let Ok(dest) = mapper.to_or(&recipients[0]).and_then(|o| o.to_p1()) else {
                return all(Outcome::Failed(format!("550 5.1.3 {}: no O/R address", recipients[0])));
            };
            match gateway::mdn_to_ipn(&mdn, &dest, &mapper, &mta.local, &local_id) {
                Ok(m) => p1::encode(&p1::MtsApdu::Message(m)),
                Err(e) => return all(Outcome::Failed(format!("554 5.6.0 X.400 notification: {e}"))),
            }
        // A report from the null sender to an X.400 originator becomes a P1 report.
        } else if from.is_empty()
            && let Some(summary) = gateway::read_dsn(message)
        {
            let Ok(dest) = mapper.to_or(&recipients[0]).and_then(|o| o.to_p1()) else {
                return all(Outcome::Failed(format!("550 5.1.3 {}: no O/R address", recipients[0])));
            };
            match gateway::dsn_to_report(&summary, &dest, &mapper, &mta.local, &local_id) {
                Ok(r) => p1::encode(&p1::MtsApdu::Report(r)),
                Err(e) => return all(Outcome::Failed(format!("554 5.6.0 X.400 report: {e}"))),
            }
        } else {
            match gateway::to_x400(from, recipients, message, &mapper, &mta.local, &local_id) {
                Ok((m, notes)) => {
                    for n in &notes {
                        tracing::info!("x400: converting a message for {}: {n}", p.mta_name);
                    }
                    p1::encode(&p1::MtsApdu::Message(m))
                }
                Err(e) => return all(Outcome::Failed(format!("554 5.6.0 X.400 conversion: {e}"))),
            }
        };
        if apdu.len() > mta.limits.max_apdu {
            return all(Outcome::Failed("552 5.3.4 too large for the X.400 partner".into()));
        }
        match mta.send(&p, &[apdu]).await {
            Ok(1) => all(Outcome::Delivered(format!(
                "via X.400 MTA {} ({}:{}, {} mode) as {local_id}",
                p.mta_name,
                p.host,
                p.port,
                p.mode.name()
            ))),
            Ok(_) => all(Outcome::Deferred("451 4.4.0 X.400: the transfer was not confirmed".into())),
            Err(f) if f.layer == "P1 bind" => {
                all(Outcome::Deferred(format!("451 4.7.0 X.400 {}: {}", f.layer, f.what)))
            }
            Err(f) => all(Outcome::Deferred(format!("451 4.4.1 X.400 {}: {}", f.layer, f.what))),
        }
    }
}

/// The responder side of one TCP connection on 102.
pub async fn serve(mta: &Arc<Mta>, conn: &mut agora_net::Conn) {
    let ip = conn.peer.ip();
    let mut r = assoc::Responder::new(mta.ours.clone(), mta.limits);
    let mut partner: Option<Partner> = None;
    loop {
        let header = match conn.read_exact(tpkt::HEADER).await {
            agora_net::Read::Bytes(b) => b,
            agora_net::Read::Shutdown => {
                let out = r.abort();
                write(conn, &out).await;
                return;
            }
            _ => return,
        };
        let len = match tpkt::decode(&header) {
            Err(e) => {
                // Not a TPKT: nothing at this layer to answer with; the connection ends.
                tracing::info!("x400: {ip}: {e}");
                return;
            }
            Ok(_) => u16::from_be_bytes([header[2], header[3]]) as usize,
        };
        let body = match conn.read_exact(len - tpkt::HEADER).await {
            agora_net::Read::Bytes(b) => b,
            _ => return,
        };
        let (out, events) = r.receive(&body);
        write(conn, &out).await;
        for e in events {
            match e {
                Event::Bind { bind, mode } => match mta.check_bind(&bind) {
                    Ok(p) => {
                        tracing::info!("x400: {ip}: MTA {} bound ({} mode)", p.mta_name, mode.name());
                        conn.set_authenticated();
                        mta.throttle.success(&format!("x400:{}", p.mta_name));
                        let out = r.accept(&mta.our_bind(p));
                        partner = Some(p.clone());
                        write(conn, &out).await;
                    }
                    Err(code) => {
                        let name = bind.name_and_password().map(|(n, _)| n).unwrap_or_default();
                        tracing::warn!("x400: {ip}: bind as {name:?} refused");
                        let delay = mta.throttle.failure(ip, Some(&format!("x400:{name}")));
                        tokio::time::sleep(delay).await;
                        let (out, _) = r.refuse(code, "bind refused");
                        write(conn, &out).await;
                        return;
                    }
                },
                Event::Transfer(apdu) => {
                    let Some(p) = &partner else { return };
                    match mta.inbound(p, r.mode(), &apdu, ip).await {
                        Ok(answer) => {
                            let out = r.confirm();
                            write(conn, &out).await;
                            // A probe's report goes back in an association of our own.
                            if let Some(report) = answer {
                                let (mta, p) = (Arc::clone(mta), p.clone());
                                tokio::spawn(async move {
                                    for attempt in 0..3u32 {
                                        match mta.send(&p, std::slice::from_ref(&report)).await {
                                            Ok(_) => return,
                                            Err(f) => tracing::info!("x400: probe report to {}: {f}", p.mta_name),
                                        }
                                        tokio::time::sleep(Duration::from_secs(5 << attempt)).await;
                                    }
                                });
                            }
                        }
                        Err(e) => {
                            // Not taken: the transfer is aborted, so the partner keeps it
                            // and tries again.
                            tracing::warn!("x400: {ip}: a transfer from {} was not taken: {e}", p.mta_name);
                            let out = r.abort();
                            write(conn, &out).await;
                            return;
                        }
                    }
                }
                Event::Aborted(f) => {
                    tracing::info!("x400: {ip}: {f}");
                    return;
                }
                Event::Released => return,
                _ => {}
            }
        }
        if r.is_closed() {
            return;
        }
    }
}

async fn write(conn: &mut agora_net::Conn, tpdus: &[Vec<u8>]) {
    for t in tpdus {
        if let Ok(p) = tpkt::encode(t) {
            conn.queue(&p);
        }
    }
    let _ = conn.flush().await;
}
