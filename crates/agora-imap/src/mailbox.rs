//! Commands on the selected mailbox (RFC 9051 §6.4) with CONDSTORE and QRESYNC
//! (RFC 7162), ESEARCH and SEARCHRES (RFC 4731, 5182): SELECT/EXAMINE, catching the
//! view up with the store, FETCH, STORE, SEARCH, COPY/MOVE and EXPUNGE. Flag-only work
//! is answered from the view; summaries and bodies are read only when an item needs them.

use std::collections::HashSet;

use agora_net::{Conn, Flow};
use agora_store::{Change, FlagOp, Flags, MessageMeta, StoreError};
use tokio::sync::broadcast;

use crate::command::{FetchAtt, Qresync, ReturnOpt, SearchKey, SeqSet, StoreMode};
use crate::selected::{Caught, Msg, Selected, set_contains, uid_set};
use crate::session::{Session, parse_flags};
use crate::{fetch, search};

/// Flush long answers as they grow rather than holding them whole.
const FLUSH_AT: usize = 256 * 1024;

/// Items FETCH answers from the view alone.
fn from_view(att: &FetchAtt) -> bool {
    matches!(
        att,
        FetchAtt::Uid
            | FetchAtt::Flags
            | FetchAtt::ModSeq
            | FetchAtt::InternalDate
            | FetchAtt::Rfc822Size
            | FetchAtt::EmailId
            | FetchAtt::ThreadId
            | FetchAtt::SaveDate
    )
}

/// A metadata record for keys and items that need no summary.
fn meta_of(mailbox: i64, m: &Msg) -> MessageMeta {
    MessageMeta {
        mailbox,
        uid: m.uid,
        modseq: m.modseq,
        flags: m.flags,
        keywords: m.keywords.clone(),
        internal_date: m.internal_date,
        size: m.size,
        blob: m.blob.name(),
        summary: Default::default(),
        saved: m.saved,
    }
}

impl Session {
    pub(crate) async fn select(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        name: &str,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    ) -> Flow {
        if qresync.is_some() && !self.qresync {
            return self.bad(conn, tag, "QRESYNC is not enabled");
        }
        if condstore {
            self.condstore = true;
        }
        // RFC 7162 §3.2.11 / RFC 9051 §7.1: the previous mailbox is closed first.
        if self.deselect().is_some() {
            conn.queue(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        let opened = match self.open_mailbox(name).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: select {name}: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if !opened.rights.has('r') {
            conn.queue(format!("{tag} NO [NOPERM] No right to read this mailbox\r\n").as_bytes());
            return Flow::Continue;
        }
        // Read-write only with a right to change something (RFC 4314 §4).
        let read_only = read_only || !"swte".chars().any(|c| opened.rights.has(c));
        let (mb, rights, shared) = (opened.mailbox, opened.rights, opened.shared);
        let private_seen: Option<HashSet<u32>> = if shared {
            match self.store.private_seen(mb.id, self.account_id()).await {
                Ok(v) => Some(v.into_iter().collect()),
                Err(e) => {
                    tracing::error!("imap: select {name}: {e}");
                    conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
                    return Flow::Continue;
                }
            }
        } else {
            None
        };
        // Watch this mailbox from now on: the listing below is taken after subscribing
        // (and after reading HIGHESTMODSEQ), so nothing later can be missed.
        self.bus = Some(self.store.subscribe_mailbox(mb.id));
        self.dirty = false;
        let msgs: Vec<Msg> = match self.store.message_list(mb.id).await {
            Ok(v) => v.into_iter().map(Msg::from).collect(),
            Err(e) => {
                tracing::error!("imap: select {name}: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        // A read-write SELECT claims the messages nobody has seen as \Recent yet.
        let watermark = if read_only || self.rev2 { Ok(mb.recent_uid) } else { self.store.claim_recent(mb.id).await };
        let Ok(watermark) = watermark else {
            conn.queue(format!("{tag} NO [SERVERBUG] Cannot open mailbox\r\n").as_bytes());
            return Flow::Continue;
        };
        // IMAP4rev2 has no \Recent: such a session claims nothing and shows nothing.
        let recent: HashSet<u32> =
            if self.rev2 { HashSet::new() } else { msgs.iter().map(|m| m.uid).filter(|&u| u > watermark).collect() };
        let highest = mb.highestmodseq;
        let mut sel = Selected::new(mb, read_only, msgs, recent, highest);
        sel.rights = rights;
        if let Some(seen) = private_seen {
            sel.use_private_seen(seen);
        }
        let mut out = sel.flags_responses();
        out.push_str(&format!("* {} EXISTS\r\n", sel.msgs.len()));
        let (msgs, recent, mb) = (&sel.msgs, &sel.recent, &sel.mailbox);
        if !self.rev2 {
            out.push_str(&format!("* {} RECENT\r\n", recent.len()));
            if let Some(i) = msgs.iter().position(|m| !m.flags.contains(Flags::SEEN)) {
                out.push_str(&format!("* OK [UNSEEN {}] First unseen\r\n", i + 1));
            }
        }
        out.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n* OK [HIGHESTMODSEQ {}] Highest\r\n* OK [MAILBOXID ({})] Ok\r\n",
            mb.uidvalidity,
            mb.uidnext,
            mb.highestmodseq,
            crate::session::mailbox_id(mb)
        ));
        if let Some(q) = qresync
            && q.uidvalidity == sel.mailbox.uidvalidity
        {
            // What the client missed since its MODSEQ: expunges, then changed messages.
            match self.store.changes_since(sel.mailbox.id, q.modseq).await {
                Ok(ch) => {
                    let max = sel.max_uid().max(sel.mailbox.uidnext.saturating_sub(1));
                    let vanished: Vec<u32> = ch
                        .expunged
                        .iter()
                        .copied()
                        .filter(|&u| match &q.known_uids {
                            Some(SeqSet::Items(items)) => set_contains(items, u, max),
                            _ => true,
                        })
                        .collect();
                    if !vanished.is_empty() {
                        out.push_str(&format!("* VANISHED (EARLIER) {}\r\n", uid_set(&vanished)));
                    }
                    for m in &ch.changed {
                        if let Some(i) = sel.index_of(m.uid) {
                            let v = &sel.msgs[i];
                            out.push_str(&format!(
                                "* {} FETCH (UID {} FLAGS ({}) MODSEQ ({}))\r\n",
                                i + 1,
                                v.uid,
                                sel.flags_of(v),
                                v.modseq
                            ));
                        }
                    }
                }
                Err(e) => tracing::error!("imap: qresync {name}: {e}"),
            }
        }
        out.push_str(&format!(
            "{tag} OK [{}] {} completed\r\n",
            if read_only { "READ-ONLY" } else { "READ-WRITE" },
            if read_only { "EXAMINE" } else { "SELECT" }
        ));
        conn.queue(out.as_bytes());
        self.selected = Some(sel);
        Flow::Continue
    }

    /// Turns CONDSTORE on because a command used it; with a mailbox selected the client
    /// learns its HIGHESTMODSEQ (RFC 7162 §3.1).
    pub(crate) fn enable_condstore(&mut self, conn: &mut Conn) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(sel) = &self.selected {
            conn.queue(format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", sel.modseq).as_bytes());
        }
    }

    /// Notes one change from the bus: does it touch the selected mailbox? `None` stands
    /// for missed changes (the receiver lagged).
    pub(crate) fn notice(&mut self, change: Option<&Change>) {
        let Some(sel) = self.selected.as_mut() else { return };
        let id = sel.mailbox.id;
        match change {
            Some(Change::Appended { mailbox, .. })
            | Some(Change::FlagsChanged { mailbox, .. })
            | Some(Change::Expunged { mailbox, .. })
                if *mailbox == id =>
            {
                self.dirty = true
            }
            Some(Change::MailboxDeleted { mailbox, .. }) if *mailbox == id => {
                // Every message is gone with the mailbox.
                sel.gone.extend(sel.msgs.iter().map(|m| m.uid));
            }
            Some(_) => {}
            None => self.dirty = true,
        }
    }

    /// Leaves the selected mailbox, and stops listening to its changes.
    pub(crate) fn deselect(&mut self) -> Option<Selected> {
        self.bus = None;
        self.updates.clear();
        self.selected.take()
    }

    /// Reads what the change bus announced for the selected mailbox into the view.
    pub(crate) async fn catch_up(&mut self) -> Caught {
        let (mut heard, mut lagged) = (Vec::new(), false);
        if let Some(bus) = self.bus.as_mut() {
            loop {
                match bus.try_recv() {
                    Ok(c) => heard.push(c),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                    Err(_) => break,
                }
            }
        }
        for c in &heard {
            self.notice(Some(c));
        }
        if lagged {
            self.notice(None);
        }
        let Some(sel) = self.selected.as_ref() else { return Caught::default() };
        if !std::mem::take(&mut self.dirty) {
            return Caught::default();
        }
        let (id, since, shared) = (sel.mailbox.id, sel.modseq, sel.private_seen.is_some());
        match self.store.changes_since(id, since).await {
            Ok(ch) => {
                // In another user's mailbox \Seen is this reader's own: read it again
                // when messages changed (another session of the reader may have set it).
                if shared
                    && !ch.changed.is_empty()
                    && let Ok(seen) = self.store.private_seen(id, self.account_id()).await
                    && let Some(sel) = self.selected.as_mut()
                {
                    sel.private_seen = Some(seen.into_iter().collect());
                }
                self.selected.as_mut().map(|s| s.catch_up(ch)).unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!("imap: catching up: {e}");
                Caught::default()
            }
        }
    }

    /// The untagged FETCH that reports new flags of a message.
    fn flag_update(&self, sel: &Selected, i: usize, with_uid: bool) -> String {
        let m = &sel.msgs[i];
        let uid = if with_uid || self.qresync { format!("UID {} ", m.uid) } else { String::new() };
        let modseq = if self.condstore { format!(" MODSEQ ({})", m.modseq) } else { String::new() };
        format!("* {} FETCH ({uid}FLAGS ({}){modseq})\r\n", i + 1, sel.flags_of(m))
    }

    /// Reports what changed: expunges (only when `allow_expunge`), flag changes of
    /// messages not in `skip`, and new messages (EXISTS, RECENT).
    pub(crate) async fn report(&mut self, conn: &mut Conn, caught: Caught, allow_expunge: bool, skip: &[u32]) {
        let qresync = self.qresync;
        let expunging = allow_expunge && self.selected.as_ref().is_some_and(|s| !s.gone.is_empty());
        let changed = expunging || !caught.updated.is_empty() || !caught.new.is_empty();
        let (removed, added) =
            if changed && !self.updates.is_empty() { self.rerun_updates(expunging).await } else { Default::default() };
        let Some(sel) = self.selected.as_mut() else { return };
        let mut out = removed;
        if caught.new_keywords {
            out.push_str(&sel.flags_responses());
        }
        if allow_expunge {
            out.push_str(&sel.report_expunges(qresync));
        }
        let Some(sel) = self.selected.as_ref() else { return };
        for uid in &caught.updated {
            if skip.contains(uid) || caught.new.contains(uid) {
                continue;
            }
            if let Some(i) = sel.index_of(*uid) {
                out.push_str(&self.flag_update(sel, i, false));
            }
        }
        if !caught.new.is_empty() {
            out.push_str(&format!("* {} EXISTS\r\n", sel.msgs.len()));
            if !sel.read_only && !self.rev2 {
                let mailbox = sel.mailbox.id;
                if let Ok(prev) = self.store.claim_recent(mailbox).await
                    && let Some(sel) = self.selected.as_mut()
                {
                    sel.recent.extend(caught.new.iter().copied().filter(|&u| u > prev));
                    out.push_str(&format!("* {} RECENT\r\n", sel.recent.len()));
                }
            }
        }
        if let Some(sel) = self.selected.as_ref() {
            for (i, pos, uids) in added {
                let Some(u) = self.updates.get(i) else { continue };
                let ids: Vec<u32> = if u.uid {
                    uids
                } else {
                    uids.iter().filter_map(|x| sel.index_of(*x).map(|i| i as u32 + 1)).collect()
                };
                let set = if u.sort.is_some() { ordered_set(&ids) } else { sorted_set(&ids) };
                out.push_str(&format!(
                    "* ESEARCH (TAG \"{}\"){} ADDTO ({pos} {set})\r\n",
                    u.tag,
                    if u.uid { " UID" } else { "" }
                ));
            }
        }
        conn.queue(out.as_bytes());
    }

    /// Brings the view up to date and tells the client (RFC 9051 §7.4.1: EXPUNGE only
    /// where `allow_expunge`).
    pub(crate) async fn sync(&mut self, conn: &mut Conn, allow_expunge: bool) {
        let caught = self.catch_up().await;
        self.report(conn, caught, allow_expunge, &[]).await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        mut atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> Flow {
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            return self.bad(conn, tag, "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE");
        }
        if changed_since.is_some() || atts.contains(&FetchAtt::ModSeq) {
            self.enable_condstore(conn);
            if !atts.contains(&FetchAtt::ModSeq) {
                atts.push(FetchAtt::ModSeq);
            }
        }
        self.sync(conn, uid).await;
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        let Some(sel) = &self.selected else { return Flow::Continue };
        let mut idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => return self.bad(conn, tag, why),
        };
        let (mailbox, read_only) = (sel.mailbox.id, sel.read_only);
        if let Some(since) = changed_since {
            if vanished && let SeqSet::Items(items) = set {
                let max = sel.max_uid();
                match self.store.changes_since(mailbox, since).await {
                    Ok(ch) => {
                        let gone: Vec<u32> = ch.expunged.into_iter().filter(|&u| set_contains(items, u, max)).collect();
                        if !gone.is_empty() {
                            conn.queue(format!("* VANISHED (EARLIER) {}\r\n", uid_set(&gone)).as_bytes());
                        }
                    }
                    Err(e) => tracing::error!("imap: fetch vanished: {e}"),
                }
            }
            let Some(sel) = &self.selected else { return Flow::Continue };
            idx.retain(|&i| sel.msgs[i].modseq > since);
        }
        let Some(sel) = &self.selected else { return Flow::Continue };
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let needs_meta = atts.iter().any(|a| !from_view(a));
        let needs_body = atts.iter().any(fetch::needs_body);
        let metas = if needs_meta {
            match fetch_metas(self, mailbox, &uids).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!("imap: fetch: {e}");
                    conn.queue(format!("{tag} NO [SERVERBUG] Fetch failed\r\n").as_bytes());
                    return Flow::Continue;
                }
            }
        } else {
            None
        };
        // Reading a body marks it \Seen (RFC 9051 §6.4.5), one store write for all; in
        // another user's mailbox that \Seen is the reader's own, and needs the s right.
        let mut seen_now: HashSet<u32> = HashSet::new();
        let Some(sel) = &self.selected else { return Flow::Continue };
        let (shared, may_see) = (sel.private_seen.is_some(), sel.rights.has('s'));
        if !read_only && may_see && atts.iter().any(fetch::sets_seen) {
            let unseen: Vec<u32> =
                idx.iter().map(|&i| &sel.msgs[i]).filter(|m| !m.flags.contains(Flags::SEEN)).map(|m| m.uid).collect();
            if !unseen.is_empty() && shared {
                let me = self.account_id();
                match self.store.set_private_seen(mailbox, me, &unseen, true).await {
                    Ok(()) => {
                        let Some(sel) = self.selected.as_mut() else { return Flow::Continue };
                        for u in unseen {
                            if let Some(i) = sel.index_of(u) {
                                sel.msgs[i].flags = sel.msgs[i].flags.union(Flags::SEEN);
                                seen_now.insert(u);
                            }
                            if let Some(s) = sel.private_seen.as_mut() {
                                s.insert(u);
                            }
                        }
                    }
                    Err(e) => tracing::error!("imap: fetch \\Seen: {e}"),
                }
            } else if !unseen.is_empty() {
                match self.store.store_flags(mailbox, &unseen, FlagOp::Add, Flags::SEEN, &[], None).await {
                    Ok(r) => {
                        let Some(sel) = self.selected.as_mut() else { return Flow::Continue };
                        for (u, modseq) in r.changed {
                            if let Some(i) = sel.index_of(u) {
                                sel.msgs[i].flags = sel.msgs[i].flags.union(Flags::SEEN);
                                sel.msgs[i].modseq = modseq;
                                seen_now.insert(u);
                            }
                        }
                    }
                    Err(e) => tracing::error!("imap: fetch \\Seen: {e}"),
                }
            }
        }
        for (k, &i) in idx.iter().enumerate() {
            let Some(sel) = &self.selected else { break };
            let m = &sel.msgs[i];
            let meta_owned;
            let meta = match &metas {
                Some(ms) => match ms.get(k) {
                    Some(x) if x.uid == m.uid => x,
                    // Gone from the store between listing and reading: nothing to show.
                    _ => continue,
                },
                None => {
                    meta_owned = meta_of(mailbox, m);
                    &meta_owned
                }
            };
            let body = if needs_body {
                match self.store.read_blob(&meta.blob).await {
                    Ok(b) => Some(b),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let Some(sel) = &self.selected else { break };
            let m = &sel.msgs[i];
            let flags = sel.flags_of(m);
            let mut out = format!("* {} FETCH (", i + 1).into_bytes();
            for (n, att) in atts.iter().enumerate() {
                if n > 0 {
                    out.push(b' ');
                }
                match att {
                    FetchAtt::Flags => out.extend_from_slice(format!("FLAGS ({flags})").as_bytes()),
                    FetchAtt::ModSeq => out.extend_from_slice(format!("MODSEQ ({})", m.modseq).as_bytes()),
                    _ => {
                        if !fetch::item(&mut out, att, meta, body.as_deref(), &flags) {
                            conn.queue(
                                format!("{tag} NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n").as_bytes(),
                            );
                            return Flow::Continue;
                        }
                    }
                }
            }
            if seen_now.contains(&m.uid) {
                if !atts.contains(&FetchAtt::Flags) {
                    out.extend_from_slice(format!(" FLAGS ({flags})").as_bytes());
                }
                if self.condstore && !atts.contains(&FetchAtt::ModSeq) {
                    out.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
                }
            }
            out.extend_from_slice(b")\r\n");
            conn.queue(&out);
            if conn.queued() > FLUSH_AT && conn.flush().await.is_err() {
                return Flow::Close;
            }
        }
        conn.queue(format!("{tag} OK Fetch completed\r\n").as_bytes());
        Flow::Continue
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_cmd(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        mode: StoreMode,
        silent: bool,
        names: &[String],
        unchanged_since: Option<u64>,
    ) -> Flow {
        if unchanged_since.is_some() {
            self.enable_condstore(conn);
        }
        let Some(sel) = &self.selected else { return Flow::Continue };
        let idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => return self.bad(conn, tag, why),
        };
        if sel.read_only {
            conn.queue(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n").as_bytes());
            return Flow::Continue;
        }
        let (flags, keywords) = parse_flags(names);
        // Rights per flag (RFC 4314 §4): \Seen needs s, \Deleted t, the others w.
        let replace = mode == StoreMode::Replace;
        let others = flags.difference(Flags::SEEN).difference(Flags::DELETED);
        let needs = [
            ('s', replace || flags.contains(Flags::SEEN)),
            ('t', replace || flags.contains(Flags::DELETED)),
            ('w', replace || others != Flags::default() || !keywords.is_empty()),
        ];
        if needs.iter().any(|&(r, needed)| needed && !sel.rights.has(r)) {
            conn.queue(format!("{tag} NO [NOPERM] No right to change these flags\r\n").as_bytes());
            return Flow::Continue;
        }
        let mailbox = sel.mailbox.id;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        // In another user's mailbox \Seen is this user's own: kept apart, never the owner's.
        let shared = sel.private_seen.is_some();
        if shared && (replace || flags.contains(Flags::SEEN)) {
            let seen = match mode {
                StoreMode::Remove => false,
                _ => flags.contains(Flags::SEEN),
            };
            let me = self.account_id();
            if let Err(e) = self.store.set_private_seen(mailbox, me, &uids, seen).await {
                tracing::error!("imap: store: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Store failed\r\n").as_bytes());
                return Flow::Continue;
            }
            let Some(sel) = self.selected.as_mut() else { return Flow::Continue };
            for &u in &uids {
                if let Some(i) = sel.index_of(u) {
                    let f = sel.msgs[i].flags.difference(Flags::SEEN);
                    sel.msgs[i].flags = if seen { f.union(Flags::SEEN) } else { f };
                }
                if let Some(s) = sel.private_seen.as_mut() {
                    if seen {
                        s.insert(u)
                    } else {
                        s.remove(&u)
                    };
                }
            }
        }
        let (op, flags) = match mode {
            StoreMode::Replace if shared => (FlagOp::SetExcept(Flags::SEEN), flags.difference(Flags::SEEN)),
            StoreMode::Replace => (FlagOp::Set, flags),
            StoreMode::Add if shared => (FlagOp::Add, flags.difference(Flags::SEEN)),
            StoreMode::Add => (FlagOp::Add, flags),
            StoreMode::Remove if shared => (FlagOp::Remove, flags.difference(Flags::SEEN)),
            StoreMode::Remove => (FlagOp::Remove, flags),
        };
        let stored = match self.store.store_flags(mailbox, &uids, op, flags, &keywords, unchanged_since).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("imap: store: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Store failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        // Our own change comes back through the bus with the flags as stored.
        let mut caught = self.catch_up().await;
        let Some(sel) = &self.selected else { return Flow::Continue };
        let mut out = String::new();
        if std::mem::take(&mut caught.new_keywords) {
            out.push_str(&sel.flags_responses());
        }
        let changed: HashSet<u32> = stored.changed.iter().map(|c| c.0).collect();
        for &u in &uids {
            if stored.modified.contains(&u) {
                continue;
            }
            let Some(i) = sel.index_of(u) else { continue };
            if !silent {
                out.push_str(&self.flag_update(sel, i, uid));
            } else if self.condstore && changed.contains(&u) {
                // .SILENT still tells a CONDSTORE client the new MODSEQ (RFC 7162 §3.1.3).
                let m = &sel.msgs[i];
                let uid_part = if uid || self.qresync { format!("UID {} ", m.uid) } else { String::new() };
                out.push_str(&format!("* {} FETCH ({uid_part}MODSEQ ({}))\r\n", i + 1, m.modseq));
            }
        }
        conn.queue(out.as_bytes());
        self.report(conn, caught, uid, &uids).await;
        let code = if stored.modified.is_empty() {
            String::new()
        } else {
            let Some(sel) = &self.selected else { return Flow::Continue };
            let mut ids: Vec<u32> = if uid {
                stored.modified.clone()
            } else {
                stored.modified.iter().filter_map(|&u| sel.index_of(u).map(|i| i as u32 + 1)).collect()
            };
            ids.sort_unstable();
            format!("[MODIFIED {}] ", uid_set(&ids))
        };
        conn.queue(format!("{tag} OK {code}Store completed\r\n").as_bytes());
        Flow::Continue
    }

    pub(crate) async fn expunge(&mut self, conn: &mut Conn, tag: &str, uids: Option<SeqSet>) -> Flow {
        let Some(sel) = &self.selected else { return Flow::Continue };
        if sel.read_only {
            conn.queue(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n").as_bytes());
            return Flow::Continue;
        }
        if !sel.rights.has('e') {
            conn.queue(format!("{tag} NO [NOPERM] No right to expunge here\r\n").as_bytes());
            return Flow::Continue;
        }
        let within: Option<Vec<usize>> = match uids.as_ref().map(|s| sel.resolve(s, true)) {
            Some(Ok(v)) => Some(v),
            Some(Err(why)) => return self.bad(conn, tag, why),
            None => None,
        };
        let doomed: Vec<u32> = sel
            .msgs
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                m.flags.contains(Flags::DELETED) && within.as_ref().is_none_or(|w| w.binary_search(i).is_ok())
            })
            .map(|(_, m)| m.uid)
            .collect();
        if let Err(e) = self.store.expunge(sel.mailbox.id, &doomed).await {
            tracing::error!("imap: expunge: {e}");
            conn.queue(format!("{tag} NO [SERVERBUG] Expunge failed\r\n").as_bytes());
            return Flow::Continue;
        }
        self.sync(conn, true).await;
        let code = match &self.selected {
            Some(sel) if self.condstore => format!("[HIGHESTMODSEQ {}] ", sel.modseq),
            _ => String::new(),
        };
        conn.queue(format!("{tag} OK {code}Expunge completed\r\n").as_bytes());
        Flow::Continue
    }

    /// The messages a search program matches, as (sequence number, UID, MODSEQ), and
    /// their metadata with summaries when the keys needed it or `want_meta` asks.
    async fn matching(
        &self,
        key: &SearchKey,
        want_meta: bool,
    ) -> Result<(Vec<(u32, u32, u64)>, Option<Vec<MessageMeta>>), StoreError> {
        let Some(sel) = &self.selected else { return Ok((Vec::new(), None)) };
        let mailbox = sel.mailbox.id;
        let uids: Vec<u32> = sel.msgs.iter().map(|m| m.uid).collect();
        let metas =
            if want_meta || search::needs_meta(key) { Some(fetch_metas(self, mailbox, &uids).await?) } else { None };
        let count = sel.msgs.len() as u32;
        let max_uid = sel.max_uid();
        let mut hits = Vec::new();
        for (i, m) in sel.msgs.iter().enumerate() {
            let owned;
            let meta = match &metas {
                Some(ms) => match ms.binary_search_by_key(&m.uid, |x| x.uid) {
                    Ok(j) => &ms[j],
                    Err(_) => continue,
                },
                None => {
                    owned = meta_of(mailbox, m);
                    &owned
                }
            };
            let (body, kept) = search::read_for(&*self.store, key, meta).await;
            let ctx = search::Ctx {
                seq: i as u32 + 1,
                count,
                max_uid,
                meta,
                body: body.as_deref(),
                recent: sel.recent.contains(&m.uid),
                saved: &sel.saved,
                kept,
                text: std::cell::OnceCell::new(),
            };
            if search::matches(key, &ctx) {
                hits.push((i as u32 + 1, m.uid, m.modseq));
            }
        }
        Ok((hits, metas))
    }

    /// The messages matching `key`, in sort order when `criteria` is given (else by
    /// sequence): (sequence, UID, MODSEQ).
    async fn result_of(
        &self,
        key: &SearchKey,
        criteria: Option<&[crate::sort::Criterion]>,
    ) -> Result<Vec<(u32, u32, u64)>, StoreError> {
        use crate::sort::SortKey;
        let want_meta = criteria.is_some_and(|c| c.iter().any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size)));
        let (hits, metas) = self.matching(key, want_meta).await?;
        let Some(criteria) = criteria else { return Ok(hits) };
        let Some(sel) = &self.selected else { return Ok(Vec::new()) };
        let empty = agora_store::EnvelopeFields::default();
        let items: Vec<crate::sort::SortItem<'_>> = hits
            .iter()
            .map(|&(seq, u, _)| {
                let m = &sel.msgs[seq as usize - 1];
                let envelope = envelope_in(metas.as_deref(), u).unwrap_or(&empty);
                crate::sort::SortItem { seq, size: m.size, internal_date: m.internal_date, envelope }
            })
            .collect();
        let order = crate::sort::sort(criteria, &items);
        // `hits` is in sequence order.
        Ok(order.into_iter().filter_map(|seq| hits.binary_search_by_key(&seq, |h| h.0).ok().map(|i| hits[i])).collect())
    }

    /// SORT (RFC 5256, with SORT=DISPLAY from RFC 5957; RETURN options from RFC 5267).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn sort(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
        criteria: &[crate::sort::Criterion],
        charset: &str,
        key: SearchKey,
    ) -> Flow {
        if !agora_store::text::known_charset(charset) {
            conn.queue(crate::response::bad_charset(tag).as_bytes());
            return Flow::Continue;
        }
        if ret.as_deref().is_some_and(|r| r.contains(&ReturnOpt::Save)) {
            return self.bad(conn, tag, "SAVE is for SEARCH");
        }
        self.sync(conn, uid).await;
        let hits = match self.result_of(&key, Some(criteria)).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("imap: sort: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Sort failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let Some(sel) = &self.selected else { return Flow::Continue };
        let id = |h: &(u32, u32, u64)| if uid { h.1 } else { h.0 };
        let Some(ret) = ret else {
            let mut out = String::from("* SORT");
            for h in &hits {
                out.push_str(&format!(" {}", id(h)));
            }
            out.push_str(&format!("\r\n{tag} OK Sort completed\r\n"));
            conn.queue(out.as_bytes());
            return Flow::Continue;
        };
        let _ = sel;
        let ids: Vec<(u32, u64)> = hits.iter().map(|h| (id(h), h.2)).collect();
        conn.queue(esearch(tag, uid, &ret, &ids, true, false).as_bytes());
        let code = self.keep_updating(tag, uid, &ret, &key, Some(criteria.to_vec()), &hits);
        conn.queue(format!("{tag} OK{code} Sort completed\r\n").as_bytes());
        Flow::Continue
    }

    /// Keeps a search for RETURN (UPDATE) (RFC 5267 §4.4); the response code to add to
    /// the tagged OK (NOUPDATE when it is not kept).
    fn keep_updating(
        &mut self,
        tag: &str,
        uid: bool,
        ret: &[ReturnOpt],
        key: &SearchKey,
        sort: Option<Vec<crate::sort::Criterion>>,
        hits: &[(u32, u32, u64)],
    ) -> String {
        if !ret.contains(&ReturnOpt::Update) {
            return String::new();
        }
        // Updates of a partial window are not offered; nor more than a few at once.
        if ret.iter().any(|r| matches!(r, ReturnOpt::Partial(..))) || self.updates.len() >= MAX_UPDATES {
            return format!(" [NOUPDATE \"{}\"]", tag.replace(['"', '\\'], ""));
        }
        self.updates.retain(|u| u.tag != tag);
        self.updates.push(Update {
            tag: tag.to_string(),
            uid,
            key: key.clone(),
            sort,
            result: hits.iter().map(|h| h.1).collect(),
        });
        String::new()
    }

    /// Re-runs the kept searches after the view changed: the removed messages (told
    /// before EXPUNGE, numbered as before it) and the added UIDs of each, by position.
    async fn rerun_updates(&mut self, expunging: bool) -> (String, Vec<(usize, usize, Vec<u32>)>) {
        let mut before = String::new();
        let mut added_all = Vec::new();
        let gone: HashSet<u32> = match (&self.selected, expunging) {
            (Some(sel), true) => sel.gone.iter().copied().collect(),
            _ => HashSet::new(),
        };
        for i in 0..self.updates.len() {
            let (key, sort) = (self.updates[i].key.clone(), self.updates[i].sort.clone());
            let hits = match self.result_of(&key, sort.as_deref()).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("imap: search update: {e}");
                    continue;
                }
            };
            let Some(sel) = &self.selected else { break };
            let now: Vec<u32> = hits.iter().map(|h| h.1).filter(|u| !gone.contains(u)).collect();
            let u = &self.updates[i];
            let (in_now, before_set): (HashSet<u32>, HashSet<u32>) =
                (now.iter().copied().collect(), u.result.iter().copied().collect());
            let removed: Vec<u32> = u.result.iter().copied().filter(|x| !in_now.contains(x)).collect();
            let added: Vec<u32> = now.iter().copied().filter(|x| !before_set.contains(x)).collect();
            if !removed.is_empty() {
                let pos = u.result.iter().position(|x| *x == removed[0]).map_or(1, |p| p + 1);
                let ids: Vec<u32> = if u.uid {
                    removed.clone()
                } else {
                    removed.iter().filter_map(|x| sel.index_of(*x).map(|i| i as u32 + 1)).collect()
                };
                let set = if u.sort.is_some() { ordered_set(&ids) } else { sorted_set(&ids) };
                before.push_str(&format!(
                    "* ESEARCH (TAG \"{}\"){} REMOVEFROM ({pos} {set})\r\n",
                    u.tag,
                    if u.uid { " UID" } else { "" }
                ));
            }
            if !added.is_empty() {
                if u.sort.is_some() {
                    // Each run of added messages at its own place in the sort order.
                    let mut run: Vec<u32> = Vec::new();
                    let mut start = 0;
                    for (p, x) in now.iter().enumerate() {
                        if before_set.contains(x) {
                            if !run.is_empty() {
                                added_all.push((i, start + 1, std::mem::take(&mut run)));
                            }
                        } else {
                            if run.is_empty() {
                                start = p;
                            }
                            run.push(*x);
                        }
                    }
                    if !run.is_empty() {
                        added_all.push((i, start + 1, run));
                    }
                } else {
                    let pos = now.iter().position(|x| *x == added[0]).map_or(1, |p| p + 1);
                    added_all.push((i, pos, added));
                }
            }
            self.updates[i].result = now;
        }
        (before, added_all)
    }

    /// THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES.
    pub(crate) async fn thread(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        algorithm: crate::thread::Algorithm,
        charset: &str,
        key: SearchKey,
    ) -> Flow {
        if !agora_store::text::known_charset(charset) {
            conn.queue(crate::response::bad_charset(tag).as_bytes());
            return Flow::Continue;
        }
        self.sync(conn, uid).await;
        let (hits, metas) = match self.matching(&key, true).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("imap: thread: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Thread failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let Some(sel) = &self.selected else { return Flow::Continue };
        let empty = agora_store::EnvelopeFields::default();
        let items: Vec<crate::thread::ThreadItem<'_>> = hits
            .iter()
            .map(|&(seq, u, _)| {
                let m = &sel.msgs[seq as usize - 1];
                let envelope = envelope_in(metas.as_deref(), u).unwrap_or(&empty);
                crate::thread::ThreadItem {
                    id: if uid { u } else { seq },
                    seq,
                    internal_date: m.internal_date,
                    envelope,
                }
            })
            .collect();
        let threads = crate::thread::thread(algorithm, &items).nested();
        conn.queue(format!("* THREAD {threads}\r\n{tag} OK Thread completed\r\n").as_bytes());
        Flow::Continue
    }

    pub(crate) async fn search(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
        key: SearchKey,
    ) -> Flow {
        let uses_modseq = search::uses_modseq(&key);
        if uses_modseq {
            self.enable_condstore(conn);
        }
        // RETURN options (RFC 4731, 5182, 5267, 9394); an empty list means ALL. IMAP4rev2
        // always answers with ESEARCH (RFC 9051 §6.4.4).
        let ret = if self.rev2 { Some(ret.unwrap_or_default()) } else { ret };
        self.sync(conn, uid).await;
        let hits = match self.matching(&key, false).await {
            Ok((h, _)) => h,
            Err(e) => {
                tracing::error!("imap: search: {e}");
                if let Some(sel) = self.selected.as_mut() {
                    sel.saved.clear();
                }
                conn.queue(format!("{tag} NO [SERVERBUG] Search failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let id = |h: &(u32, u32, u64)| if uid { h.1 } else { h.0 };
        let Some(ret) = ret else {
            let mut out = String::from("* SEARCH");
            for h in &hits {
                out.push_str(&format!(" {}", id(h)));
            }
            if uses_modseq && let Some(top) = hits.iter().map(|h| h.2).max() {
                out.push_str(&format!(" (MODSEQ {top})"));
            }
            out.push_str(&format!("\r\n{tag} OK Search completed\r\n"));
            conn.queue(out.as_bytes());
            return Flow::Continue;
        };
        let has = |o: ReturnOpt| ret.contains(&o);
        if has(ReturnOpt::Save) {
            let all = has(ReturnOpt::All) || ret.len() == 1;
            // With only MIN and/or MAX, SAVE keeps just those (RFC 5182 §2.4).
            let saved: Vec<u32> = if all || has(ReturnOpt::Count) || (!has(ReturnOpt::Min) && !has(ReturnOpt::Max)) {
                hits.iter().map(|h| h.1).collect()
            } else {
                let mut v: Vec<u32> = Vec::new();
                if has(ReturnOpt::Min) {
                    v.extend(hits.first().map(|h| h.1));
                }
                if has(ReturnOpt::Max) {
                    v.extend(hits.last().map(|h| h.1));
                }
                v.dedup();
                v
            };
            if let Some(sel) = self.selected.as_mut() {
                sel.saved = saved;
            }
        }
        if !(ret.len() == 1 && has(ReturnOpt::Save)) {
            let ids: Vec<(u32, u64)> = hits.iter().map(|h| (id(h), h.2)).collect();
            conn.queue(esearch(tag, uid, &ret, &ids, false, uses_modseq).as_bytes());
        }
        let code = self.keep_updating(tag, uid, &ret, &key, None, &hits);
        conn.queue(format!("{tag} OK{code} Search completed\r\n").as_bytes());
        Flow::Continue
    }

    /// CANCELUPDATE (RFC 5267 §4.5).
    pub(crate) fn cancel_update(&mut self, conn: &mut Conn, tag: &str, tags: &[String]) -> Flow {
        self.updates.retain(|u| !tags.contains(&u.tag));
        conn.queue(format!("{tag} OK Updates cancelled\r\n").as_bytes());
        Flow::Continue
    }

    pub(crate) async fn copy(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        target: &str,
        is_move: bool,
    ) -> Flow {
        let Some(sel) = &self.selected else { return Flow::Continue };
        let idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => return self.bad(conn, tag, why),
        };
        if is_move && (sel.read_only || !sel.rights.has('t') || !sel.rights.has('e')) {
            conn.queue(format!("{tag} NO [NOPERM] No right to move messages out of this mailbox\r\n").as_bytes());
            return Flow::Continue;
        }
        let src = sel.mailbox.id;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let dest = match self.open_mailbox(target).await {
            Ok(Some(o)) if o.rights.has('i') => o.mailbox,
            Ok(Some(_)) => {
                conn.queue(format!("{tag} NO [NOPERM] No right to insert into the target mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
            Ok(None) => {
                conn.queue(format!("{tag} NO [TRYCREATE] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: copy: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Copy failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let (uv, pairs) = match self.store.copy_messages(src, &uids, dest.id).await {
            Ok(x) => x,
            Err(StoreError::OverQuota(_)) => {
                conn.queue(format!("{tag} NO [OVERQUOTA] Quota exceeded\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: copy: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Copy failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let from: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let to: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            format!("[COPYUID {uv} {} {}] ", uid_set(&from), uid_list(&to))
        };
        if is_move {
            if !code.is_empty() {
                conn.queue(format!("* OK {code}Moved\r\n").as_bytes());
            }
            let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            if let Err(e) = self.store.expunge(src, &moved).await {
                tracing::error!("imap: move: {e}");
            }
            self.sync(conn, true).await;
            conn.queue(format!("{tag} OK Move completed\r\n").as_bytes());
        } else {
            self.sync(conn, uid).await;
            conn.queue(format!("{tag} OK {code}Copy completed\r\n").as_bytes());
        }
        Flow::Continue
    }

    /// CLOSE (expunging \Deleted messages silently) and UNSELECT.
    pub(crate) async fn close(&mut self, conn: &mut Conn, tag: &str, expunge: bool) -> Flow {
        if let Some(sel) = self.deselect()
            && expunge
            && !sel.read_only
            && sel.rights.has('e')
        {
            let deleted: Vec<u32> =
                sel.msgs.iter().filter(|m| m.flags.contains(Flags::DELETED)).map(|m| m.uid).collect();
            if let Err(e) = self.store.expunge(sel.mailbox.id, &deleted).await {
                tracing::error!("imap: expunge on close: {e}");
            }
        }
        conn.queue(format!("{tag} OK {} completed\r\n", if expunge { "CLOSE" } else { "UNSELECT" }).as_bytes());
        Flow::Continue
    }
}

/// Destination UIDs keep the order of their sources, so they are listed one by one
/// unless they happen to be ascending.
fn uid_list(uids: &[u32]) -> String {
    if uids.windows(2).all(|w| w[0] < w[1]) {
        return uid_set(uids);
    }
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

async fn fetch_metas(s: &Session, mailbox: i64, uids: &[u32]) -> Result<Vec<MessageMeta>, StoreError> {
    let (Some(&lo), Some(&hi)) = (uids.first(), uids.last()) else { return Ok(Vec::new()) };
    let all = s.store.messages(mailbox, lo..=hi).await?;
    Ok(uids.iter().filter_map(|u| all.binary_search_by_key(u, |m| m.uid).ok().map(|i| all[i].clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copyuid_lists() {
        assert_eq!(uid_list(&[4, 5, 6, 9]), "4:6,9");
        assert_eq!(uid_list(&[7, 5]), "7,5");
    }
}

/// A message's envelope among metadata sorted by UID (SORT and THREAD keys).
fn envelope_in(metas: Option<&[MessageMeta]>, uid: u32) -> Option<&agora_store::EnvelopeFields> {
    let ms = metas?;
    ms.binary_search_by_key(&uid, |x| x.uid).ok().map(|j| &ms[j].summary.envelope)
}

/// Searches kept up to date at most at once per session (RFC 5267 lets a server refuse more).
const MAX_UPDATES: usize = 8;

/// A search kept up to date (RETURN (UPDATE)): its result as UIDs, in result order.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    pub(crate) tag: String,
    uid: bool,
    key: SearchKey,
    sort: Option<Vec<crate::sort::Criterion>>,
    result: Vec<u32>,
}

/// Numbers in ascending order as a sequence set.
fn sorted_set(ids: &[u32]) -> String {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    uid_set(&v)
}

/// Numbers in the order given (a sort order) as a sequence set: only runs that rise by
/// one become ranges, so the order survives.
fn ordered_set(ids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{}:{}", ids[i], ids[j]));
        } else {
            out.push_str(&ids[i].to_string());
        }
        i = j + 1;
    }
    out
}

/// The ESEARCH answer to RETURN options (RFC 4731, 5267, 9394) over a result in its
/// order, (id, MODSEQ) each; `sorted` for SORT (MIN/MAX are the ends of the order, sets
/// keep the order).
fn esearch(tag: &str, uid: bool, ret: &[ReturnOpt], hits: &[(u32, u64)], sorted: bool, modseq: bool) -> String {
    let has = |o: ReturnOpt| ret.contains(&o);
    let all = has(ReturnOpt::All) || ret.iter().all(|o| matches!(o, ReturnOpt::Update | ReturnOpt::Context));
    let set = |ids: &[u32]| if sorted { ordered_set(ids) } else { sorted_set(ids) };
    let mut out = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        out.push_str(" UID");
    }
    let mut modseq_of: Vec<u64> = Vec::new();
    let (min, max) = if sorted {
        (hits.first(), hits.last())
    } else {
        (hits.iter().min_by_key(|h| h.0), hits.iter().max_by_key(|h| h.0))
    };
    if has(ReturnOpt::Min)
        && let Some(h) = min
    {
        out.push_str(&format!(" MIN {}", h.0));
        modseq_of.push(h.1);
    }
    if has(ReturnOpt::Max)
        && let Some(h) = max
    {
        out.push_str(&format!(" MAX {}", h.0));
        modseq_of.push(h.1);
    }
    if all && !hits.is_empty() {
        let ids: Vec<u32> = hits.iter().map(|h| h.0).collect();
        out.push_str(&format!(" ALL {}", set(&ids)));
    }
    if has(ReturnOpt::Count) {
        out.push_str(&format!(" COUNT {}", hits.len()));
    }
    if all || has(ReturnOpt::Count) {
        modseq_of = hits.iter().map(|h| h.1).collect();
    }
    for o in ret {
        if let ReturnOpt::Partial(a, b) = *o {
            // Positions from 1, or from the end when negative (RFC 9394 §3.1).
            let n = hits.len() as i64;
            let (lo, hi) = if a > 0 { (a - 1, b.min(n)) } else { ((n + a).max(0), n + b + 1) };
            let window: Vec<u32> = if lo < hi && lo < n {
                hits[lo as usize..hi as usize].iter().map(|h| h.0).collect()
            } else {
                Vec::new()
            };
            let shown = if window.is_empty() { "NIL".to_string() } else { set(&window) };
            out.push_str(&format!(" PARTIAL ({a}:{b} {shown})"));
            if lo < hi && lo < n {
                modseq_of.extend(hits[lo as usize..hi as usize].iter().map(|h| h.1));
            }
        }
    }
    if modseq && let Some(top) = modseq_of.iter().max() {
        out.push_str(&format!(" MODSEQ {top}"));
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod return_tests {
    use super::*;

    #[test]
    fn partial_windows_and_ordered_sets() {
        let hits: Vec<(u32, u64)> = (1..=10).map(|i| (i, u64::from(i))).collect();
        let last3 = esearch("t", false, &[ReturnOpt::Partial(-3, -1)], &hits, false, false);
        assert_eq!(last3, "* ESEARCH (TAG \"t\") PARTIAL (-3:-1 8:10)\r\n");
        let beyond = esearch("t", true, &[ReturnOpt::Partial(11, 20)], &hits, false, false);
        assert_eq!(beyond, "* ESEARCH (TAG \"t\") UID PARTIAL (11:20 NIL)\r\n");
        let too_far_back = esearch("t", false, &[ReturnOpt::Partial(-30, -9)], &hits, false, false);
        assert_eq!(too_far_back, "* ESEARCH (TAG \"t\") PARTIAL (-30:-9 1:2)\r\n");
        assert_eq!(ordered_set(&[5, 3, 4, 2, 1]), "5,3:4,2,1");
        let sorted = esearch(
            "t",
            false,
            &[ReturnOpt::Min, ReturnOpt::Max, ReturnOpt::All],
            &[(5, 1), (3, 1), (4, 1)],
            true,
            false,
        );
        assert_eq!(sorted, "* ESEARCH (TAG \"t\") MIN 5 MAX 4 ALL 5,3:4\r\n");
    }
}
