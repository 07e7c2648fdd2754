//! NOTIFY (RFC 5465): one connection told of changes in many mailboxes between commands
//! (STATUS for new and expunged messages and flag changes, LIST for created and deleted
//! mailboxes), and of the selected mailbox's changes without IDLE.

use std::collections::HashMap;

use agora_net::{Conn, Flow};
use agora_store::{Change, MailboxId};
use tokio::sync::broadcast;

use crate::command::{NotifyEvent, NotifyFilter, NotifySpec, StatusItem};
use crate::session::Session;

/// A NOTIFY SET in force.
pub(crate) struct Watch {
    spec: NotifySpec,
    /// Every change of the store; only this account's own mailboxes are looked at.
    bus: broadcast::Receiver<Change>,
    /// Changes waiting to be told; `lagged` when some were missed.
    pending: Vec<Change>,
    lagged: bool,
    /// The account's own mailboxes by id, and its subscriptions.
    names: HashMap<MailboxId, String>,
    subscribed: Vec<String>,
}

const SUPPORTED: &str = "MessageNew MessageExpunge FlagChange MailboxName";

fn is_selected(f: &NotifyFilter) -> bool {
    matches!(f, NotifyFilter::Selected | NotifyFilter::SelectedDelayed)
}

impl Watch {
    /// The events asked for a mailbox that is not the selected one (the first group
    /// whose filter covers it).
    fn events_of(&self, name: &str) -> &[NotifyEvent] {
        let same = |a: &str, b: &str| a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"));
        for (f, events) in &self.spec.groups {
            let covers = match f {
                NotifyFilter::Selected | NotifyFilter::SelectedDelayed => false,
                NotifyFilter::Inboxes => name.eq_ignore_ascii_case("INBOX"),
                NotifyFilter::Personal => true,
                NotifyFilter::Subscribed => self.subscribed.iter().any(|s| same(s, name)),
                NotifyFilter::Mailboxes(l) => l.iter().any(|m| same(m, name)),
                NotifyFilter::Subtree(l) => {
                    l.iter().any(|m| same(m, name) || name.strip_prefix(m.as_str()).is_some_and(|r| r.starts_with('/')))
                }
            };
            if covers {
                return events;
            }
        }
        &[]
    }

    fn selected_events(&self) -> Option<(&[NotifyEvent], bool)> {
        self.spec
            .groups
            .iter()
            .find(|(f, _)| is_selected(f))
            .map(|(f, e)| (e.as_slice(), *f == NotifyFilter::SelectedDelayed))
    }
}

/// STATUS items that tell of these events (RFC 5465 §5.2, §5.3).
fn status_items(events: &[NotifyEvent]) -> Vec<StatusItem> {
    let mut items = Vec::new();
    if events.contains(&NotifyEvent::MessageNew) || events.contains(&NotifyEvent::MessageExpunge) {
        items.push(StatusItem::Messages);
    }
    if events.contains(&NotifyEvent::MessageNew) {
        items.extend([StatusItem::UidNext, StatusItem::UidValidity]);
    }
    if events.contains(&NotifyEvent::FlagChange) {
        if !items.contains(&StatusItem::UidValidity) {
            items.push(StatusItem::UidValidity);
        }
        items.push(StatusItem::HighestModSeq);
    }
    items
}

impl Session {
    /// NOTIFY SET / NOTIFY NONE.
    pub(crate) async fn notify(&mut self, conn: &mut Conn, tag: &str, spec: Option<NotifySpec>) -> Flow {
        let Some(spec) = spec else {
            self.watch = None;
            conn.queue(format!("{tag} OK Notify completed\r\n").as_bytes());
            return Flow::Continue;
        };
        let unsupported = spec.groups.iter().flat_map(|(_, e)| e).any(|e| {
            matches!(
                e,
                NotifyEvent::AnnotationChange
                    | NotifyEvent::MailboxMetadataChange
                    | NotifyEvent::ServerMetadataChange
                    | NotifyEvent::SubscriptionChange
            )
        });
        if unsupported {
            conn.queue(format!("{tag} NO [BADEVENT ({SUPPORTED})] Event not supported\r\n").as_bytes());
            return Flow::Continue;
        }
        let me = self.account_id();
        let (mailboxes, subscribed) = match (self.store.mailboxes(me).await, self.store.subscriptions(me).await) {
            (Ok(m), Ok(s)) => (m, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("imap: notify: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Notify failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let watch = Watch {
            bus: self.store.subscribe(),
            spec,
            pending: Vec::new(),
            lagged: false,
            names: mailboxes.iter().map(|m| (m.id, m.name.clone())).collect(),
            subscribed,
        };
        // STATUS at once for every mailbox watched for messages or flags (§3).
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let mut out = Vec::new();
        if watch.spec.status {
            for mb in &mailboxes {
                if Some(mb.id) == selected {
                    continue;
                }
                let items = status_items(watch.events_of(&mb.name));
                if !items.is_empty()
                    && let Ok(line) = self.status_line(&mb.name, mb, &items, false).await
                {
                    out.extend_from_slice(&line);
                }
            }
        }
        self.watch = Some(Box::new(watch));
        out.extend_from_slice(format!("{tag} OK Notify completed\r\n").as_bytes());
        conn.queue(&out);
        Flow::Continue
    }

    /// Waits for a change worth telling (cancellation-safe: receivers keep their place).
    pub(crate) async fn next_notice(&mut self) {
        let Some(w) = self.watch.as_mut() else { return std::future::pending().await };
        let me = self.account.as_ref().map_or(0, |a| a.id);
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let watch_selected = w.selected_events().is_some_and(|(e, _)| !e.is_empty());
        loop {
            tokio::select! {
                c = w.bus.recv() => match c {
                    Ok(c) => {
                        let mine = c.account() == Some(me) && c.mailbox() != selected;
                        if mine {
                            w.pending.push(c);
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        w.lagged = true;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                c = crate::session::wait_change(self.bus.as_mut()), if watch_selected => {
                    self.notice(c.as_ref());
                    return;
                }
            }
        }
    }

    /// Tells what `next_notice` found (and whatever else arrived meanwhile).
    pub(crate) async fn tell_notices(&mut self, conn: &mut Conn) -> Flow {
        let Some(w) = self.watch.as_mut() else { return Flow::Continue };
        while let Ok(c) = w.bus.try_recv() {
            w.pending.push(c);
        }
        let pending = std::mem::take(&mut w.pending);
        let lagged = std::mem::take(&mut w.lagged);
        let delayed = w.selected_events().is_some_and(|(_, d)| d);
        if self.dirty {
            self.sync(conn, !delayed).await;
        }
        let me = self.account_id();
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let mut touched: Vec<MailboxId> = Vec::new();
        let mut out = Vec::new();
        for c in &pending {
            if c.account() != Some(me) {
                continue;
            }
            match c {
                Change::MailboxCreated { mailbox, .. } | Change::MailboxDeleted { mailbox, .. } => {
                    let created = matches!(c, Change::MailboxCreated { .. });
                    // Names are read again: a rename shows as a deletion and a creation.
                    let old = self.watch.as_ref().and_then(|w| w.names.get(mailbox).cloned());
                    if let Ok(all) = self.store.mailboxes(me).await
                        && let Some(w) = self.watch.as_mut()
                    {
                        w.names = all.iter().map(|m| (m.id, m.name.clone())).collect();
                    }
                    let Some(w) = self.watch.as_ref() else { break };
                    let name = if created { w.names.get(mailbox).cloned() } else { old };
                    if let Some(name) = name
                        && w.events_of(&name).contains(&NotifyEvent::MailboxName)
                    {
                        out.extend_from_slice(if created {
                            b"* LIST () \"/\" "
                        } else {
                            b"* LIST (\\NonExistent) \"/\" "
                        });
                        self.name_out(&mut out, &name);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                _ => {
                    if let Some(m) = c.mailbox()
                        && Some(m) != selected
                        && !touched.contains(&m)
                    {
                        touched.push(m);
                    }
                }
            }
        }
        if lagged && let Some(w) = self.watch.as_ref() {
            // Missed changes: every watched mailbox is told again.
            touched = w.names.keys().copied().filter(|m| Some(*m) != selected).collect();
        }
        for m in touched {
            let Some(name) = self.watch.as_ref().and_then(|w| w.names.get(&m).cloned()) else { continue };
            let Some(events) = self.watch.as_ref().map(|w| w.events_of(&name).to_vec()) else { continue };
            let items = status_items(&events);
            if items.is_empty() {
                continue;
            }
            if let Ok(Some(mb)) = self.store.mailbox(me, &name).await
                && let Ok(line) = self.status_line(&name, &mb, &items, false).await
            {
                out.extend_from_slice(&line);
            }
        }
        conn.queue(&out);
        Flow::Continue
    }
}
