//! What accounts ask to happen to their mail without them: forwarding (to another
//! address, with or without a copy kept) and a vacation reply (RFC 3834: to the
//! return path, at most once per sender per period, never to lists, bulk mail,
//! other automatic mail or the null sender). Both are account settings the webmail
//! writes; the mail core keeps them in memory and is told when they change.

use std::collections::HashMap;
use std::sync::Arc;

use agora_store::AccountId;
use serde::{Deserialize, Serialize};

use crate::Mail;
use crate::intake::{Intake, Origin, Policy, Rcpt};

/// The settings' names in the store.
pub const VACATION: &str = "mail.vacation";
pub const FORWARD: &str = "mail.forward";

/// A vacation reply as the account set it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vacation {
    pub subject: String,
    pub text: String,
    /// One reply per sender in this many days.
    pub days: u32,
    /// Replies start and stop (seconds since the epoch; 0: no bound).
    #[serde(default)]
    pub from: i64,
    #[serde(default)]
    pub until: i64,
}

impl Vacation {
    pub fn active(&self, now: i64) -> bool {
        (self.from == 0 || now >= self.from) && (self.until == 0 || now < self.until)
    }
}

/// Forwarding as the account set it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub to: String,
    /// A copy stays in the account's INBOX too.
    pub keep: bool,
}

/// The accounts with either set.
#[derive(Debug, Default)]
pub(crate) struct Automatic {
    vacation: HashMap<AccountId, Vacation>,
    forward: HashMap<AccountId, Forward>,
}

impl Automatic {
    pub(crate) fn anyone_away(&self) -> bool {
        !self.vacation.is_empty()
    }
}

impl Mail {
    /// The settings as last read (read again after `automatic_changed`).
    pub(crate) async fn automatic(&self) -> Arc<Automatic> {
        if let Some(a) = self.automatic.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return a;
        }
        let mut a = Automatic::default();
        for (account, v) in self.store.settings_named(VACATION).await.unwrap_or_default() {
            if let Ok(v) = serde_json::from_str(&v) {
                a.vacation.insert(account, v);
            }
        }
        for (account, v) in self.store.settings_named(FORWARD).await.unwrap_or_default() {
            if let Ok(f) = serde_json::from_str(&v) {
                a.forward.insert(account, f);
            }
        }
        let a = Arc::new(a);
        *self.automatic.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&a));
        a
    }

    /// Whoever changes a vacation or forwarding setting calls this.
    pub fn automatic_changed(&self) {
        *self.automatic.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forwarding applied to the recipients: a forwarding account's copy goes to its
    /// address too (local ones by the directory, outside ones to the queue), and leaves
    /// its INBOX unless it keeps a copy. Forwards are not followed further (no loops).
    pub(crate) async fn forward(&self, recipients: &mut [Rcpt]) {
        let auto = self.automatic().await;
        if auto.forward.is_empty() {
            return;
        }
        for r in recipients.iter_mut() {
            let mut kept = Vec::with_capacity(r.accounts.len());
            let mut added = Vec::new();
            for &a in &r.accounts {
                let Some(f) = auto.forward.get(&a) else {
                    kept.push(a);
                    continue;
                };
                match self.dir.resolve(&f.to).await {
                    Ok(agora_directory::Recipient::Local(res)) if res.folder.is_none() => {
                        added.extend(res.accounts.iter().map(|x| x.id).filter(|&x| x != a));
                        r.external.extend(res.external);
                    }
                    Ok(agora_directory::Recipient::Remote) => r.external.push(f.to.clone()),
                    // Nowhere to send it: the copy stays.
                    _ => {
                        tracing::warn!("forwarding of account {a} to {}: no such address", f.to);
                        kept.push(a);
                        continue;
                    }
                }
                if f.keep {
                    kept.push(a);
                }
            }
            for a in added {
                if !kept.contains(&a) {
                    kept.push(a);
                }
            }
            r.accounts = kept;
            r.external.dedup();
        }
    }

    /// Vacation replies for a message just delivered to `accounts` (with the addresses
    /// it was sent to).
    pub(crate) async fn vacation(&self, i: &Intake, delivered: &[(AccountId, String)], message: &[u8]) {
        let auto = self.automatic().await;
        if auto.vacation.is_empty() || !may_answer(&i.sender, message) {
            return;
        }
        for (account, address) in delivered {
            let Some(v) = auto.vacation.get(account) else { continue };
            if !v.active(i.received) {
                continue;
            }
            let Ok(Some(acc)) = self.store.account(*account).await else { continue };
            // Only mail that names the account (not a list or Bcc it came by).
            if !addressed_to(message, &[acc.login.as_str(), address.as_str()]) {
                continue;
            }
            let period = i64::from(v.days.clamp(1, 365)) * 86_400;
            match self.store.note_vacation_reply(*account, &i.sender, i.received, period).await {
                Ok(true) => {}
                _ => continue,
            }
            let subject = if v.subject.trim().is_empty() { None } else { Some(v.subject.trim()) };
            let from = from_header(&acc.login, &acc.display_name);
            let text = ReplyBody::Text(&v.text);
            let reply = reply(&self.cfg.hostname, &from, &i.sender, subject, text, message, i.received);
            self.send_reply(&acc.login, &i.sender, i.received, reply, "vacation").await;
        }
    }

    /// Sends an automatic reply from an account: null return path (RFC 3834 §3.3),
    /// signed for the account's domain, into the sender's INBOX when they are local.
    pub(crate) async fn send_reply(&self, login: &str, to: &str, received: i64, reply: Vec<u8>, why: &str) {
        let id = crate::queue_id();
        let mut answer = Intake {
            id: id.clone(),
            received,
            sender: String::new(),
            recipients: vec![Rcpt { address: to.to_string(), external: vec![to.to_string()], ..Rcpt::default() }],
            ret: None,
            envid: None,
            origin: Origin {
                ip: std::net::IpAddr::from([127, 0, 0, 1]),
                helo: self.cfg.hostname.clone(),
                authenticated_as: Some(login.to_string()),
                trusted: true,
                tls: true,
            },
            trace: format!(
                "Received: by {} (Agora) with {why} id {id};\r\n\t{}\r\n",
                self.cfg.hostname,
                agora_store::time::rfc5322_date(received)
            ),
            body: reply,
            policy: Policy {
                dmarc_reject: false,
                dkim_sign: true,
                arc_seal: false,
                check_budget: std::time::Duration::ZERO,
            },
        };
        if let Ok(agora_directory::Recipient::Local(res)) = self.dir.resolve(to).await {
            answer.recipients[0].external = res.external;
            answer.recipients[0].accounts = res.accounts.iter().map(|a| a.id).collect();
        }
        match Box::pin(self.accept(answer)).await {
            Ok(_) => tracing::info!("{why}: {login} answered {to}"),
            Err(e) => tracing::warn!("{why}: {login} to {to}: {e}"),
        }
    }
}

/// The header fields of a message (unfolded, names lower-cased).
fn fields(message: &[u8]) -> Vec<(String, String)> {
    agora_store::text::header_fields(message, usize::MAX)
}

/// Whether a message may get an automatic reply (RFC 3834 §2, and what Sieve's
/// vacation, RFC 5230 §4.5, adds): a real return path that is not a list or a daemon,
/// and nothing that marks the message as automatic, bulk or from a list.
pub(crate) fn may_answer(sender: &str, message: &[u8]) -> bool {
    let local = sender.rsplit_once('@').map_or(sender, |(l, _)| l).to_ascii_lowercase();
    if sender.is_empty()
        || ["mailer-daemon", "postmaster", "listserv", "majordomo", "noreply", "no-reply", "donotreply"]
            .contains(&local.as_str())
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-bounces")
    {
        return false;
    }
    !fields(message).iter().any(|(n, v)| {
        let v = v.to_ascii_lowercase();
        match n.as_str() {
            "auto-submitted" => v.split(';').next().is_some_and(|x| x.trim() != "no"),
            "precedence" => ["bulk", "list", "junk"].contains(&v.trim()),
            "x-auto-response-suppress" => v.contains("all") || v.contains("oof"),
            "list-id" | "list-unsubscribe" | "list-post" | "feedback-id" => true,
            _ => false,
        }
    })
}

/// Whether To or Cc names one of the addresses.
pub(crate) fn addressed_to(message: &[u8], addresses: &[&str]) -> bool {
    fields(message).iter().filter(|(n, _)| n == "to" || n == "cc" || n == "resent-to").any(|(_, v)| {
        agora_store::address::display(v)
            .iter()
            .any(|a| addresses.iter().any(|x| !x.is_empty() && a.address.eq_ignore_ascii_case(x)))
    })
}

/// An automatic reply's content: text, or a whole MIME entity (Sieve's `:mime`).
pub(crate) enum ReplyBody<'a> {
    Text(&'a str),
    Mime(&'a str),
}

/// The From field for an account: its name (encoded when not ASCII) and login.
pub(crate) fn from_header(login: &str, name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect();
    if name.trim().is_empty() {
        login.to_string()
    } else if name.is_ascii() {
        format!("\"{}\" <{login}>", name.trim())
    } else {
        format!("{} <{login}>", agora_store::text::encode_words(name.trim()))
    }
}

/// The reply: From the account, to the sender, `Auto-Submitted: auto-replied`, in reply
/// to the message; text in quoted-printable UTF-8. No subject: "Auto: " and the original's.
pub(crate) fn reply(
    hostname: &str,
    from: &str,
    to: &str,
    subject: Option<&str>,
    body: ReplyBody,
    message: &[u8],
    now: i64,
) -> Vec<u8> {
    let f = fields(message);
    let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let original = get("subject").map(|s| agora_store::text::decode_words(&s)).unwrap_or_default();
    let subject = match subject {
        Some(s) => s.to_string(),
        None => format!("Auto: {original}"),
    };
    let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
    let from: String = from.chars().filter(|c| !c.is_control()).collect();
    let mut rnd = [0u8; 12];
    let _ = getrandom::fill(&mut rnd);
    let token = agora_store::blob::hex(&rnd);
    let mut m = format!(
        "Date: {}\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {}\r\nMessage-ID: <{token}@{hostname}>\r\nAuto-Submitted: auto-replied\r\n",
        agora_store::time::rfc5322_date(now),
        if subject.is_ascii() { subject.clone() } else { agora_store::text::encode_words(&subject) }
    );
    if let Some(id) = get("message-id") {
        let id: String = id.chars().filter(|c| !c.is_control()).collect();
        let refs = get("references").map(|r| format!("{r} {id}")).unwrap_or_else(|| id.clone());
        m.push_str(&format!(
            "In-Reply-To: {id}\r\nReferences: {}\r\n",
            refs.chars().filter(|c| !c.is_control()).collect::<String>()
        ));
    }
    m.push_str("MIME-Version: 1.0\r\n");
    match body {
        ReplyBody::Text(text) => {
            m.push_str(
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            );
            m.push_str(&agora_store::text::quoted_printable(&text.replace("\r\n", "\n")));
        }
        // The script wrote the entity's own header and body (RFC 5230 §5.8).
        ReplyBody::Mime(entity) => {
            let entity = entity.replace("\r\n", "\n").replace('\n', "\r\n");
            m.push_str(entity.trim_start_matches("\r\n"));
        }
    }
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_gets_a_reply() {
        let plain = b"From: a@x.test\r\nTo: me@ours.test\r\nSubject: hi\r\n\r\nbody";
        assert!(may_answer("a@x.test", plain));
        assert!(!may_answer("", plain), "the null sender");
        for daemon in ["MAILER-DAEMON@x.test", "owner-list@x.test", "list-request@x.test", "noreply@x.test"] {
            assert!(!may_answer(daemon, plain), "{daemon}");
        }
        for marked in [
            "Auto-Submitted: auto-replied\r\n",
            "Precedence: bulk\r\n",
            "List-Id: <l.x.test>\r\n",
            "List-Unsubscribe:\r\n <mailto:u@x.test>\r\n",
            "X-Auto-Response-Suppress: OOF, AutoReply\r\n",
        ] {
            let m = format!("{marked}From: a@x.test\r\nTo: me@ours.test\r\n\r\nbody");
            assert!(!may_answer("a@x.test", m.as_bytes()), "{marked}");
        }
        let m = b"Auto-Submitted: no\r\nTo: me@ours.test\r\n\r\n";
        assert!(may_answer("a@x.test", m));
        assert!(addressed_to(plain, &["ME@ours.test"]));
        assert!(!addressed_to(b"To: list@x.test\r\nCc: other@y.test\r\n\r\n", &["me@ours.test"]));
    }

    #[test]
    fn the_reply() {
        let v = Vacation {
            subject: String::new(),
            text: "Away until Monday.\nBack soon".into(),
            days: 7,
            from: 0,
            until: 0,
        };
        let r = reply(
            "mx.ours.test",
            &from_header("me@ours.test", "Mé"),
            "a@x.test",
            None,
            ReplyBody::Text(&v.text),
            b"Subject: Plan\r\nMessage-ID: <1@x.test>\r\n\r\n",
            0,
        );
        let parsed = agora_store::MessageSummary::parse(&r);
        assert_eq!(parsed.envelope.subject.as_deref(), Some("Auto: Plan"));
        assert_eq!(parsed.envelope.in_reply_to.as_deref(), Some("<1@x.test>"));
        let text = String::from_utf8_lossy(&r);
        assert!(text.contains("Auto-Submitted: auto-replied\r\n") && text.contains("To: a@x.test\r\n"), "{text}");
        assert_eq!(agora_store::text::body_text(&r, &parsed.root).trim(), "Away until Monday.\r\nBack soon");
        assert!(v.active(5) && !Vacation { until: 5, ..v.clone() }.active(6) && !Vacation { from: 9, ..v }.active(6));
    }
}
