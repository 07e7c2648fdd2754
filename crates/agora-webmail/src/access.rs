//! The folders a reader sees: their own, other users' mailboxes shared with them, and
//! the public folders they may read, each with the rights its ACL gives (RFC 4314), named
//! the way IMAP names them ("Other Users/…", "Public Folders/…"). Shared folders keep
//! each reader's own \Seen, as they do over IMAP.

use std::collections::HashSet;

use agora_store::{Mailbox, MailboxId};

use crate::Webmail;
use crate::session::User;

/// IMAP's namespaces for other users' mailboxes and the public folders (RFC 2342).
const OTHER_USERS: &str = "Other Users";
const PUBLIC_FOLDERS: &str = "Public Folders";

/// Every right, as the owner of a mailbox has them.
const ALL: &str = "lrswipkxtea";

/// A folder as the reader sees it.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    pub mb: Mailbox,
    /// Its name for the reader.
    pub label: String,
    pub rights: String,
    /// Another account's (or public): \Seen is the reader's own.
    pub shared: bool,
}

impl std::ops::Deref for Folder {
    type Target = Mailbox;
    fn deref(&self) -> &Mailbox {
        &self.mb
    }
}

impl Folder {
    /// Whether the ACL grants `right` (the obsolete `d` and `c` read as RFC 4314 §2.1.1 says).
    pub fn may(&self, right: char) -> bool {
        self.rights.contains(right)
            || (matches!(right, 't' | 'e') && self.rights.contains('d'))
            || (matches!(right, 'k' | 'x') && self.rights.contains('c'))
    }
}

/// INBOX first, then the special-use folders, then the rest by name; shared, then
/// public, after the reader's own.
fn order(f: &Folder) -> (u8, u8, String) {
    let rank = if f.shared || f.mb.name.eq_ignore_ascii_case("INBOX") {
        0
    } else if f.mb.special_use.is_some() {
        1
    } else {
        2
    };
    let place = if !f.shared {
        0
    } else if f.label.starts_with(PUBLIC_FOLDERS) {
        2
    } else {
        1
    };
    (place, rank, f.label.to_lowercase())
}

impl Webmail {
    /// Every folder the reader may look at, in the order the folder list shows them.
    pub(crate) async fn folders(&self, user: &User) -> Option<Vec<Folder>> {
        let own = self.store.mailboxes(user.account.id).await.ok()?;
        let mut all: Vec<Folder> = own
            .into_iter()
            .map(|mb| Folder { label: mb.name.clone(), mb, rights: ALL.into(), shared: false })
            .collect();
        let ids = self.dir.identifiers(&user.account.login).await.unwrap_or_default();
        let admin = user.account.role == agora_store::Role::Admin;
        for s in self.store.shared_with(user.account.id, &ids).await.unwrap_or_default() {
            let label = format!("{OTHER_USERS}/{}/{}", s.owner, s.mailbox.name);
            all.push(Folder { mb: s.mailbox, label, rights: s.rights, shared: true });
        }
        for s in self.store.public_with(&ids).await.unwrap_or_default() {
            let label = format!("{PUBLIC_FOLDERS}/{}", s.mailbox.name);
            // Administrators manage every public folder, as over IMAP.
            let rights = if admin { ALL.to_string() } else { s.rights };
            all.push(Folder { mb: s.mailbox, label, rights, shared: true });
        }
        all.retain(|f| f.may('l') || f.may('r'));
        all.sort_by_key(order);
        Some(all)
    }

    /// The folder with this id among the reader's, with them all; only one they may read.
    pub(crate) async fn folder(&self, user: &User, id: Option<String>) -> Option<(Vec<Folder>, Folder)> {
        let id: MailboxId = id?.parse().ok()?;
        let all = self.folders(user).await?;
        let f = all.iter().find(|f| f.mb.id == id && f.may('r'))?.clone();
        Some((all, f))
    }

    /// The messages of a shared folder the reader has seen (None: their own folder,
    /// whose \Seen flags say it).
    pub(crate) async fn seen_in(&self, user: &User, f: &Folder) -> Option<HashSet<u32>> {
        if !f.shared {
            return None;
        }
        Some(self.store.private_seen(f.mb.id, user.account.id).await.unwrap_or_default().into_iter().collect())
    }
}
