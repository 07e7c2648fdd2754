//! Delivery status notifications (RFC 3464): the report a server writes about one
//! recipient (failed, delayed, relayed, delivered), and its delivery to the sender.

use agora_directory::{Directory, Recipient};
use agora_store::{Delivery, DeliveryTarget, Envelope, Flags, Store, now};

/// Delivers a report to `sender`: into its mailboxes if it is ours, else into the queue,
/// always from the null sender so that nobody answers a report.
pub async fn send_report(
    store: &dyn Store,
    dir: &Directory,
    sender: &str,
    report: Vec<u8>,
) -> Result<(), agora_store::StoreError> {
    let (targets, relay) = match dir.resolve(sender).await {
        Ok(Recipient::Local(res)) => {
            let mut targets: Vec<DeliveryTarget> =
                res.accounts.iter().map(|a| DeliveryTarget { account: a.id, mailbox: "INBOX".into() }).collect();
            // A report to a public folder's address goes into the folder.
            if let Some((owner, folder)) = &res.folder {
                targets.push(DeliveryTarget { account: *owner, mailbox: folder.path.clone() });
            }
            (targets, res.external)
        }
        Ok(Recipient::Remote) => (Vec::new(), vec![sender.to_string()]),
        _ => return Ok(()),
    };
    if targets.is_empty() && relay.is_empty() {
        return Ok(());
    }
    let body = store.stage(report).await?;
    store
        .deliver(Delivery {
            body,
            internal_date: now(),
            envelope: Some(Envelope { mail_from: String::new(), ..Envelope::default() }),
            flags: Flags::default(),
            keywords: Vec::new(),
            targets,
            relay,
            enforce_quota: false,
        })
        .await
        .map(|_| ())
}

/// What a DSN reports about its recipient.
#[derive(Debug, Clone, Copy)]
pub enum Report<'a> {
    /// Status code and the reason.
    Failed(&'a str, &'a str),
    Delayed(&'a str),
    /// Handed to the next server (which may not pass DSNs on).
    Relayed,
    /// Put into the recipient's mailbox here.
    Delivered,
}

pub struct Dsn<'a> {
    pub hostname: &'a str,
    pub sender: &'a str,
    pub recipient: &'a str,
    pub orcpt: Option<&'a str>,
    pub envid: Option<&'a str>,
    /// RET=FULL: the whole message goes back, else its header.
    pub full: bool,
    pub report: Report<'a>,
}

impl Dsn<'_> {
    /// The report: a human part, the machine-readable status (message/delivery-status)
    /// and the original message or its header.
    pub fn message(&self, original: &[u8]) -> Vec<u8> {
        let hostname = self.hostname;
        let boundary = format!("{}/{hostname}", crate::queue_id());
        let date = agora_store::time::rfc5322_date(now());
        let (action, status, why, subject, text) = match self.report {
            Report::Failed(status, why) => (
                "failed",
                status.to_string(),
                why.replace(['\r', '\n'], " "),
                "Undelivered Mail Returned to Sender",
                "could not be delivered to",
            ),
            Report::Delayed(why) => (
                "delayed",
                "4.4.7".to_string(),
                why.replace(['\r', '\n'], " "),
                "Delayed Mail (still being retried)",
                "has not yet been delivered to",
            ),
            Report::Relayed => {
                ("relayed", "2.0.0".to_string(), String::new(), "Successful Mail Delivery Report", "was relayed to")
            }
            Report::Delivered => {
                ("delivered", "2.0.0".to_string(), String::new(), "Successful Mail Delivery Report", "was delivered to")
            }
        };
        let mut per_message = format!("Reporting-MTA: dns; {hostname}\r\n");
        if let Some(id) = self.envid {
            per_message.push_str(&format!("Original-Envelope-Id: {id}\r\n"));
        }
        let mut per_rcpt = String::new();
        if let Some(o) = self.orcpt {
            per_rcpt.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        per_rcpt.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {status}\r\n",
            self.recipient
        ));
        if !why.is_empty() {
            per_rcpt.push_str(&format!("Diagnostic-Code: smtp; {why}\r\n"));
        }
        let (kind, returned) = if self.full {
            ("message/rfc822", original)
        } else {
            let end = original.windows(4).position(|w| w == b"\r\n\r\n").map_or(original.len(), |i| i + 2);
            ("text/rfc822-headers", &original[..end])
        };
        let mut out = format!(
            "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
             To: <{sender}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{boundary}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             This is the mail system at {hostname}.\r\n\
             \r\n\
             Your message {text} <{recipient}>.\r\n\
             {why}\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             {per_message}\
             \r\n\
             {per_rcpt}\
             \r\n\
             --{boundary}\r\n\
             Content-Type: {kind}\r\n\
             \r\n",
            sender = self.sender,
            recipient = self.recipient,
        )
        .into_bytes();
        out.extend_from_slice(returned);
        if !returned.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }
}
