//! Changes pushed to open pages: `GET /mail/events` is a Server-Sent Events stream
//! fed by the store's change bus, one event per change to the account's mail, so a
//! page updates its list and counts without a reload. The stream ends when the
//! session does, when the server stops, or when the page goes away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_store::{AccountId, Change, MailboxId};
use bytes::Bytes;

use crate::session::User;
use crate::{WebResponse, Webmail};

/// Open streams an account may have at once (one per open tab).
const PER_ACCOUNT: u32 = 16;
/// A comment line this often keeps proxies from closing the stream and notices a page
/// that went away, or a session that ended.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// How many streams each account has open.
#[derive(Default)]
pub struct Streams(std::sync::Mutex<HashMap<AccountId, u32>>);

/// One open stream, counted until dropped.
struct Held {
    streams: Arc<Streams>,
    account: AccountId,
}

impl Streams {
    fn hold(self: &Arc<Self>, account: AccountId) -> Option<Held> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(account).or_default();
        if *n >= PER_ACCOUNT {
            return None;
        }
        *n += 1;
        Some(Held { streams: Arc::clone(self), account })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.account);
            }
        }
    }
}

/// The event a page gets for a change, if the change is to this account's mail or to a
/// folder shared with it: `mail` with the mailbox (0: something changed, read
/// everything again).
fn event(change: &Change, account: AccountId, shared: &HashSet<MailboxId>) -> Option<String> {
    let ours = |a: AccountId, m: MailboxId| a == account || shared.contains(&m);
    let (kind, mailbox) = match *change {
        Change::Appended { account: a, mailbox, .. } if ours(a, mailbox) => ("new", mailbox),
        Change::FlagsChanged { account: a, mailbox, .. } if ours(a, mailbox) => ("flags", mailbox),
        Change::Expunged { account: a, mailbox, .. } if ours(a, mailbox) => ("gone", mailbox),
        Change::MailboxCreated { account: a, .. } | Change::MailboxDeleted { account: a, .. } if a == account => {
            ("folders", 0)
        }
        _ => return None,
    };
    Some(format!("event: mail\ndata: {{\"kind\":\"{kind}\",\"mailbox\":{mailbox}}}\n\n"))
}

impl Webmail {
    /// GET /mail/events.
    pub(crate) async fn events(&self, user: &User) -> WebResponse {
        let Some(held) = self.streams.hold(user.account.id) else {
            return WebResponse::html(429, crate::pages::notice("Too many", "Too many pages are open."));
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let (store, shutdown) = (Arc::clone(&self.store), self.shutdown.clone());
        let (account, session) = (user.account.id, user.session.id.clone());
        let mut bus = self.store.subscribe();
        let shared: HashSet<MailboxId> =
            self.folders(user).await.unwrap_or_default().iter().filter(|f| f.shared).map(|f| f.mb.id).collect();
        tokio::spawn(async move {
            let _held = held;
            if tx.send(Bytes::from_static(b"retry: 5000\n: open\n\n")).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(KEEPALIVE);
            tick.tick().await;
            loop {
                let out = tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        match store.web_session(&session).await {
                            Ok(Some(_)) => ": keepalive\n\n".to_string(),
                            _ => return,
                        }
                    }
                    change = bus.recv() => match change {
                        Ok(c) => match event(&c, account, &shared) {
                            Some(e) => e,
                            None => continue,
                        },
                        // Changes were missed: the page reads everything again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            "event: mail\ndata: {\"kind\":\"lagged\",\"mailbox\":0}\n\n".to_string()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                if tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
        });
        WebResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream; charset=utf-8".into()),
                ("x-accel-buffering".into(), "no".into()),
            ],
            body: Bytes::new(),
            stream: Some(rx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_accounts_changes() {
        let mine = Change::Appended { account: 7, mailbox: 3, uid: 1, modseq: 2 };
        let none = HashSet::new();
        assert_eq!(event(&mine, 7, &none).as_deref(), Some("event: mail\ndata: {\"kind\":\"new\",\"mailbox\":3}\n\n"));
        assert_eq!(event(&mine, 8, &none), None);
        assert!(event(&mine, 8, &HashSet::from([3])).is_some(), "a folder shared with the reader");
        assert_eq!(event(&Change::DirectoryChanged, 7, &none), None);
        let streams = Arc::new(Streams::default());
        let held: Vec<_> = (0..PER_ACCOUNT).map(|_| streams.hold(1).expect("under the limit")).collect();
        assert!(streams.hold(1).is_none(), "the account's limit");
        assert!(streams.hold(2).is_some(), "another account is not held back");
        drop(held);
        assert!(streams.hold(1).is_some(), "places come back");
    }
}
