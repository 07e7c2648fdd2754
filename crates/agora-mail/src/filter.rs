//! Sieve at delivery: each local recipient's active script decides where its copy goes
//! (folders with flags, redirects, rejections, vacation replies, header edits). A
//! script that fails keeps the message in INBOX and its owner is told (once a day).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use agora_store::{AccountId, Flags, Store};

use crate::Mail;
use crate::automatic::{ReplyBody, addressed_to, from_header, may_answer, reply};
use crate::dsn::{Dsn, Report, send_report};
use crate::intake::Intake;

/// The accounts that have an active script, each compiled, as of a change count and the
/// directory's version (an account removed elsewhere, and its id taken again, is seen).
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    pub(crate) active: HashMap<AccountId, Arc<agora_sieve::Script>>,
    stamp: (u64, u64),
}

/// A message as a script's header edits left it (None: as received).
pub(crate) type Version = Option<Arc<Vec<u8>>>;

/// Where one account's copy goes, as its script decided.
#[derive(Debug, Default)]
pub(crate) struct Filtered {
    /// Mailbox, system flags, keywords, and which version of the message.
    pub(crate) targets: Vec<(String, Flags, Vec<String>, Version)>,
    pub(crate) redirects: Vec<(String, Version)>,
    pub(crate) reject: Option<String>,
    /// The rejection may be given in the SMTP reply itself (ereject).
    pub(crate) ereject: bool,
    /// Duplicate ids to note once delivered.
    pub(crate) duplicates: Vec<(String, u64, bool)>,
    pub(crate) vacation: Option<agora_sieve::Vacation>,
    pub(crate) error: Option<String>,
}

/// What a script may look at in the store while it runs.
struct Env {
    store: Arc<dyn Store>,
    account: AccountId,
    now: i64,
    global_dir: Option<PathBuf>,
}

#[async_trait::async_trait]
impl agora_sieve::Environment for Env {
    async fn mailbox_exists(&self, name: &str) -> bool {
        matches!(self.store.mailbox(self.account, name).await, Ok(Some(_)))
    }
    async fn duplicate(&self, key: &str, seconds: u64) -> bool {
        // The same table that keeps vacation replies' senders: a key noted at a time.
        let since = self.now.saturating_sub(seconds.min(i64::MAX as u64) as i64);
        self.store.noted_since(self.account, &duplicate_key(key), since).await.unwrap_or(false)
    }
    async fn script(&self, name: &str, global: bool) -> Option<String> {
        // Names were checked by the interpreter; checked again before touching a path.
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return None;
        }
        if global {
            let dir = self.global_dir.as_ref()?;
            let text = tokio::fs::read_to_string(dir.join(format!("{name}.sieve"))).await.ok()?;
            return Some(text);
        }
        self.store.sieve_script(self.account, name).await.ok().flatten()
    }
}

fn duplicate_key(key: &str) -> String {
    format!("\u{0}duplicate\u{0}{}", short_hash(key))
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    agora_store::blob::hex(&d[..12])
}

/// Whether `fileinto :create` may make this mailbox: a name IMAP CREATE would take for
/// the account's own (not under the shared or public namespaces, no empty level).
fn creatable(name: &str) -> bool {
    // The namespaces' prefixes as IMAP shows them.
    const FOREIGN: [&str; 2] = ["Other Users", "Public Folders"];
    !name.is_empty()
        && name.len() <= 1024
        && !name.split('/').any(|l| l.is_empty() || l.trim().is_empty())
        && !FOREIGN.iter().any(|f| name.split('/').next().is_some_and(|first| first.eq_ignore_ascii_case(f)))
}

/// Mailbox names compare exactly, but INBOX in any case.
pub(crate) fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// "\Seen" and the other system flags to their bits, the rest as keywords (those
/// that are valid IMAP atoms).
fn imap_flags(names: &[String]) -> (Flags, Vec<String>) {
    let mut flags = Flags::default();
    let mut keywords: Vec<String> = Vec::new();
    for n in names {
        let bit = match n.to_ascii_lowercase().as_str() {
            "\\seen" => Flags::SEEN,
            "\\answered" => Flags::ANSWERED,
            "\\flagged" => Flags::FLAGGED,
            "\\deleted" => Flags::DELETED,
            "\\draft" => Flags::DRAFT,
            _ => {
                let atom = !n.is_empty()
                    && n.len() <= 128
                    && n.bytes().all(|b| b > b' ' && b < 0x7f && !b"(){%*\"\\]".contains(&b));
                if atom && !keywords.iter().any(|k| k.eq_ignore_ascii_case(n)) {
                    keywords.push(n.clone());
                }
                continue;
            }
        };
        flags = flags.union(bit);
    }
    (flags, keywords)
}

impl Mail {
    /// Whoever changes an account's Sieve scripts calls this (ManageSieve, the webmail).
    pub fn sieve_changed(&self, account: AccountId) {
        let _ = account;
        self.sieve_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.sieve.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The active scripts as last read (read again after `sieve_changed` or a change
    /// of the directory).
    async fn scripts(&self) -> Arc<Scripts> {
        let stamp = (self.sieve_generation.load(std::sync::atomic::Ordering::SeqCst), self.store.directory_version());
        if let Some(s) = self.sieve.read().unwrap_or_else(|e| e.into_inner()).clone()
            && s.stamp == stamp
        {
            return s;
        }
        let mut s = Scripts { stamp, ..Scripts::default() };
        for account in self.store.accounts_with_active_sieve().await.unwrap_or_default() {
            let Ok(Some((name, text))) = self.store.active_sieve_script(account).await else { continue };
            match agora_sieve::compile(&text) {
                Ok(script) => {
                    s.active.insert(account, Arc::new(script));
                }
                // Stored scripts were checked when uploaded; a newer server may refuse
                // one an older accepted: that account's mail is kept, as with no script.
                Err(e) => tracing::warn!("sieve: account {account}'s script {name} does not compile: {e}"),
            }
        }
        let s = Arc::new(s);
        // Kept only if nothing changed while it was read (else the next delivery reads again).
        if self.sieve_generation.load(std::sync::atomic::Ordering::SeqCst) == stamp.0 {
            *self.sieve.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&s));
        }
        s
    }

    /// Runs each local recipient's script (those that have one) over the message.
    pub(crate) async fn filter(&self, i: &Intake, message: &[u8]) -> HashMap<AccountId, Filtered> {
        let mut out = HashMap::new();
        let scripts = self.scripts().await;
        if scripts.active.is_empty() {
            return out;
        }
        for r in &i.recipients {
            for &account in &r.accounts {
                if out.contains_key(&account) {
                    continue;
                }
                let Some(script) = scripts.active.get(&account) else { continue };
                let input = agora_sieve::Input {
                    message,
                    from: &i.sender,
                    to: &r.address,
                    auth: i.origin.authenticated_as.as_deref(),
                    now: i.received,
                };
                let env = Env {
                    store: Arc::clone(&self.store),
                    account,
                    now: i.received,
                    global_dir: self.cfg.sieve_global.clone(),
                };
                let limits = agora_sieve::Limits::default();
                let outcome = agora_sieve::run(script, &input, &env, &limits).await;
                out.insert(account, self.carry_out(account, outcome).await);
            }
        }
        out
    }

    async fn carry_out(&self, account: AccountId, o: agora_sieve::Outcome) -> Filtered {
        let mut f = Filtered { error: o.error, duplicates: o.duplicates, ..Filtered::default() };
        for (a, version) in o.actions.into_iter().zip(o.messages) {
            match a {
                agora_sieve::Action::Keep { flags } => {
                    let (fl, kw) = imap_flags(&flags);
                    f.targets.push(("INBOX".into(), fl, kw, version));
                }
                agora_sieve::Action::FileInto { mailbox, flags, create } => {
                    let (fl, kw) = imap_flags(&flags);
                    // A folder that does not exist (and is not to be made) gets the
                    // copy in INBOX instead (RFC 5228 §4.1 leaves no message behind).
                    let mailbox = mailbox.trim_end_matches('/').to_string();
                    let exists = if create {
                        creatable(&mailbox)
                    } else {
                        matches!(self.store.mailbox(account, &mailbox).await, Ok(Some(_)))
                    };
                    let target = if exists { mailbox } else { "INBOX".to_string() };
                    if let Some(t) = f.targets.iter_mut().find(|t| same_mailbox(&t.0, &target)) {
                        *t = (target, fl, kw, version);
                    } else {
                        f.targets.push((target, fl, kw, version));
                    }
                }
                agora_sieve::Action::Redirect { address } => f.redirects.push((address, version)),
                agora_sieve::Action::Reject { reason, extended } => {
                    f.reject = Some(reason);
                    f.ereject = extended;
                }
                agora_sieve::Action::Vacation(v) => f.vacation = Some(v),
            }
        }
        f
    }

    /// What follows delivery: rejections to the sender, vacation replies, and a note to
    /// owners whose script failed.
    pub(crate) async fn after_filter(&self, i: &Intake, message: &[u8], filtered: &HashMap<AccountId, Filtered>) {
        for (&account, f) in filtered {
            for (key, seconds, last) in &f.duplicates {
                let period = if *last { 0 } else { (*seconds).min(i64::MAX as u64) as i64 };
                if let Err(e) = self.store.note_vacation_reply(account, &duplicate_key(key), i.received, period).await {
                    tracing::warn!("sieve: noting a duplicate id: {e}");
                }
            }
            if let Some(reason) = &f.reject {
                self.sieve_reject(i, account, reason, message).await;
            }
            if let Some(v) = &f.vacation {
                self.sieve_vacation(i, account, v, message).await;
            }
            if let Some(e) = &f.error {
                self.sieve_failed(i, account, e).await;
            }
        }
    }

    async fn sieve_reject(&self, i: &Intake, account: AccountId, reason: &str, message: &[u8]) {
        let Ok(Some(acc)) = self.store.account(account).await else { return };
        let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let dsn = Dsn {
            hostname: &self.cfg.hostname,
            sender: &i.sender,
            recipient: &acc.login,
            orcpt: None,
            envid: i.envid.as_deref(),
            full: false,
            report: Report::Failed("5.7.1", &reason),
        };
        match send_report(self.store.as_ref(), &self.dir, &i.sender, dsn.message(message)).await {
            Ok(()) => tracing::info!("sieve: {} rejected {} from {}", acc.login, i.id, i.sender),
            Err(e) => tracing::warn!("sieve: rejection of {} to {}: {e}", i.id, i.sender),
        }
    }

    async fn sieve_vacation(&self, i: &Intake, account: AccountId, v: &agora_sieve::Vacation, message: &[u8]) {
        if !may_answer(&i.sender, message) {
            return;
        }
        let Ok(Some(acc)) = self.store.account(account).await else { return };
        let mut mine: Vec<&str> = vec![acc.login.as_str()];
        mine.extend(v.addresses.iter().map(String::as_str));
        let recipients: Vec<String> =
            i.recipients.iter().filter(|r| r.accounts.contains(&account)).map(|r| r.address.clone()).collect();
        mine.extend(recipients.iter().map(String::as_str));
        // Never to oneself, and only for mail that names one of the account's addresses.
        if mine.iter().any(|a| a.eq_ignore_ascii_case(&i.sender)) || !addressed_to(message, &mine) {
            return;
        }
        let key = format!("{}\u{0}{}", i.sender, short_hash(&v.handle));
        let period = v.seconds.min(i64::MAX as u64) as i64;
        if !matches!(self.store.note_vacation_reply(account, &key, i.received, period).await, Ok(true)) {
            return;
        }
        // :from only as one of the account's own addresses, so a script cannot forge.
        let from = match v.from.as_deref().and_then(one_mailbox) {
            Some((name, addr)) if self.owns(account, &addr).await => from_header(&addr, &name),
            _ => from_header(&acc.login, &acc.display_name),
        };
        let entity = if v.mime { content_only(&v.reason) } else { String::new() };
        let body = if v.mime { ReplyBody::Mime(&entity) } else { ReplyBody::Text(&v.reason) };
        let r = reply(&self.cfg.hostname, &from, &i.sender, v.subject.as_deref(), body, message, i.received);
        self.send_reply(&acc.login, &i.sender, i.received, r, "sieve vacation").await;
    }

    async fn owns(&self, account: AccountId, address: &str) -> bool {
        matches!(self.dir.resolve(address).await, Ok(agora_directory::Recipient::Local(r))
            if r.accounts.iter().any(|a| a.id == account))
    }

    /// Tells an account its script failed (at most once a day), in its INBOX.
    async fn sieve_failed(&self, i: &Intake, account: AccountId, error: &str) {
        tracing::warn!("sieve: account {account}'s script failed on {}: {error}", i.id);
        if !matches!(self.store.note_vacation_reply(account, "\u{0}sieve-error", i.received, 86_400).await, Ok(true)) {
            return;
        }
        let Ok(Some(acc)) = self.store.account(account).await else { return };
        let text = format!(
            "Your Sieve filter could not finish on a message that arrived just now\r\n\
             (queue id {}), so the message was kept in your INBOX.\r\n\r\n\
             The error: {error}\r\n\r\n\
             Further failures today are not reported again.\r\n",
            i.id
        );
        let note = format!(
            "Date: {}\r\nFrom: Mail Delivery System <MAILER-DAEMON@{host}>\r\nTo: {}\r\n\
             Subject: Your mail filter failed\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}",
            agora_store::time::rfc5322_date(i.received),
            acc.login,
            host = self.cfg.hostname,
        );
        if let Err(e) = send_report(self.store.as_ref(), &self.dir, &acc.login, note.into_bytes()).await {
            tracing::warn!("sieve: could not tell {} of the failure: {e}", acc.login);
        }
    }
}

/// Exactly one mailbox (display name, address), as vacation's :from must be.
fn one_mailbox(s: &str) -> Option<(String, String)> {
    let shown = agora_store::address::display(s);
    match shown.as_slice() {
        [one] if one.group.is_none() && one.address.contains('@') => {
            Some((one.name.clone().unwrap_or_default(), one.address.clone()))
        }
        _ => None,
    }
}

/// A :mime reason cut to its Content-* fields and body, so it cannot add From, Sender
/// or other top-level fields to the reply (RFC 5230 §5.8 describes a MIME part).
fn content_only(entity: &str) -> String {
    let entity = entity.replace("\r\n", "\n");
    let (head, body) = entity.split_once("\n\n").unwrap_or(("", entity.as_str()));
    let mut kept = String::new();
    let mut keep = false;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if keep {
                kept.push_str(line);
                kept.push('\n');
            }
            continue;
        }
        keep = line.split_once(':').is_some_and(|(n, _)| n.trim().to_ascii_lowercase().starts_with("content-"));
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept.is_empty() {
        kept.push_str("Content-Type: text/plain; charset=utf-8\n");
    }
    format!("{kept}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_entities() {
        assert!(creatable("Lists/rust") && !creatable("Public Folders/Sales") && !creatable("other users/x"));
        assert!(!creatable("a//b") && !creatable(""));
        assert!(same_mailbox("inbox", "INBOX") && !same_mailbox("Work", "work"));
        assert_eq!(one_mailbox("Me <me@x.test>"), Some(("Me".into(), "me@x.test".into())));
        assert_eq!(one_mailbox("me@x.test, ceo@bank.test"), None);
        let e = content_only("From: ceo@bank.test\r\nContent-Type: text/html\r\n\r\n<p>hi</p>");
        assert_eq!(e, "Content-Type: text/html\n\n<p>hi</p>");
    }
}
