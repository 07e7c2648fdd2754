//! The selected mailbox as one session sees it: its numbered messages, which of them
//! are \Recent here, expunges not yet reported (RFC 9051 §7.4.1 says when they may
//! be), the MODSEQ the view reflects (CONDSTORE/QRESYNC) and the saved search result
//! (SEARCHRES). Pure: the session feeds it the store's changes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use agora_store::{Flags, Mailbox, MailboxChanges, MessageRef};

use crate::command::{STAR, SeqItem, SeqSet};

/// One message as the view knows it: what FETCH can answer without the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub size: u64,
    pub internal_date: i64,
    /// Content address: EMAILID without a store read.
    pub blob: BlobName,
    pub saved: i64,
}

/// A body's content address as the view keeps it: a SHA-256 name as its 32 bytes, not
/// its 64 characters (a view of a large mailbox holds one per message, for as long as
/// the session lasts); any other name as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobName {
    Sha256([u8; 32]),
    Other(Box<str>),
}

impl BlobName {
    pub fn new(name: String) -> BlobName {
        let hex = name.as_bytes();
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 32];
        if hex.len() == 64 {
            let all =
                bytes.iter_mut().zip(hex.chunks_exact(2)).all(|(b, pair)| match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => {
                        *b = h << 4 | l;
                        true
                    }
                    _ => false,
                });
            if all {
                return BlobName::Sha256(bytes);
            }
        }
        BlobName::Other(name.into_boxed_str())
    }

    /// The name as the store knows it.
    pub fn name(&self) -> String {
        match self {
            BlobName::Sha256(bytes) => agora_store::blob::hex(bytes),
            BlobName::Other(name) => name.to_string(),
        }
    }
}

impl From<MessageRef> for Msg {
    fn from(m: MessageRef) -> Msg {
        Msg {
            uid: m.uid,
            modseq: m.modseq,
            flags: m.flags,
            keywords: m.keywords,
            size: m.size,
            internal_date: m.internal_date,
            blob: BlobName::new(m.blob),
            saved: m.saved,
        }
    }
}

pub struct Selected {
    pub mailbox: Mailbox,
    pub read_only: bool,
    pub msgs: Vec<Msg>,
    /// UIDs that are \Recent in this session (RFC 3501 §2.3.2).
    pub recent: HashSet<u32>,
    /// The store's HIGHESTMODSEQ this view has caught up with.
    pub modseq: u64,
    /// Expunged in the store but still numbered here until EXPUNGE may be sent.
    pub gone: BTreeSet<u32>,
    /// The result saved by SEARCH RETURN (SAVE), as UIDs (RFC 5182).
    pub saved: Vec<u32>,
    /// Keywords the client has been told of in FLAGS, by lower-cased name.
    pub keywords: BTreeMap<String, String>,
    /// What this user may do here (all rights in the user's own mailboxes).
    pub rights: crate::acl::Rights,
    /// In another user's mailbox: the UIDs this user has seen (\Seen is per user).
    pub private_seen: Option<HashSet<u32>>,
}

/// What catching up with the store changed in the view.
#[derive(Debug, Default)]
pub struct Caught {
    /// Indexes whose flags (or MODSEQ) changed.
    pub updated: Vec<u32>,
    /// Messages new since the last catch-up.
    pub new: Vec<u32>,
    /// A keyword appeared that FLAGS did not list yet.
    pub new_keywords: bool,
}

pub const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

pub fn flags_text(flags: Flags, keywords: &[String]) -> String {
    let mut v: Vec<&str> = Vec::new();
    for (f, n) in [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ] {
        if flags.contains(f) {
            v.push(n);
        }
    }
    v.extend(keywords.iter().map(String::as_str));
    v.join(" ")
}

/// Formats UIDs (ascending) as a compact set: `1:3,7`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// True if `n` is in `set` where `*` stands for `star`.
pub fn set_contains(set: &[SeqItem], n: u32, star: u32) -> bool {
    let s = |x: u32| if x == STAR { star } else { x };
    set.iter().any(|i| match *i {
        SeqItem::One(x) => s(x) == n,
        SeqItem::Range(a, b) => n >= s(a).min(s(b)) && n <= s(a).max(s(b)),
    })
}

impl Selected {
    pub fn new(mailbox: Mailbox, read_only: bool, msgs: Vec<Msg>, recent: HashSet<u32>, modseq: u64) -> Selected {
        let mut sel = Selected {
            mailbox,
            read_only,
            msgs,
            recent,
            modseq,
            gone: BTreeSet::new(),
            saved: Vec::new(),
            keywords: BTreeMap::new(),
            rights: crate::acl::Rights::all(),
            private_seen: None,
        };
        let all: Vec<String> = sel.msgs.iter().flat_map(|m| m.keywords.iter().cloned()).collect();
        sel.learn_keywords(&all);
        sel
    }

    /// Makes \Seen the reader's own in a shared mailbox.
    pub fn use_private_seen(&mut self, seen: HashSet<u32>) {
        for m in &mut self.msgs {
            m.flags = m.flags.difference(Flags::SEEN);
            if seen.contains(&m.uid) {
                m.flags = m.flags.union(Flags::SEEN);
            }
        }
        self.private_seen = Some(seen);
    }

    /// Adds keywords to those announced; true if any was new.
    pub fn learn_keywords(&mut self, keywords: &[String]) -> bool {
        let mut new = false;
        for k in keywords {
            if let std::collections::btree_map::Entry::Vacant(e) = self.keywords.entry(k.to_ascii_lowercase()) {
                e.insert(k.clone());
                new = true;
            }
        }
        new
    }

    /// The FLAGS and PERMANENTFLAGS responses: the system flags and every keyword in use
    /// (RFC 9051 §7.3.5: a client learns of keywords there before seeing them in FETCH).
    pub fn flags_responses(&self) -> String {
        let mut flags = SYSTEM_FLAGS.to_string();
        for k in self.keywords.values() {
            flags.push(' ');
            flags.push_str(k);
        }
        let permanent = if self.read_only { String::new() } else { format!("{flags} \\*") };
        format!("* FLAGS ({flags})\r\n* OK [PERMANENTFLAGS ({permanent})] Flags permitted\r\n")
    }

    pub fn max_uid(&self) -> u32 {
        self.msgs.last().map_or(0, |m| m.uid)
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// FLAGS as this session shows them (with \Recent).
    pub fn flags_of(&self, m: &Msg) -> String {
        let f = flags_text(m.flags, &m.keywords);
        match (self.recent.contains(&m.uid), f.is_empty()) {
            (false, _) => f,
            (true, true) => "\\Recent".into(),
            (true, false) => format!("{f} \\Recent"),
        }
    }

    /// The view indexes a set names, ascending. Sequence numbers past the end are an
    /// error (BAD); UIDs that do not exist are skipped (RFC 9051 §6.4.9).
    pub fn resolve(&self, set: &SeqSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let items = match set {
            SeqSet::Saved => {
                return Ok(self.saved.iter().filter_map(|&u| self.index_of(u)).collect());
            }
            SeqSet::Items(items) => items,
        };
        let n = self.msgs.len() as u32;
        let mut idx: Vec<usize> = Vec::new();
        for item in items {
            let (a, b) = match *item {
                SeqItem::One(x) => (x, x),
                SeqItem::Range(a, b) => (a, b),
            };
            if uid {
                let star = |x: u32| if x == STAR { self.max_uid() } else { x };
                let (lo, hi) = (star(a).min(star(b)), star(a).max(star(b)));
                let from = self.msgs.partition_point(|m| m.uid < lo);
                let to = self.msgs.partition_point(|m| m.uid <= hi);
                idx.extend(from..to);
                // "n:*" with n above every UID still names the last message (RFC 9051 §6.4.9).
                if from == to && (a == STAR || b == STAR) && n > 0 {
                    idx.push(n as usize - 1);
                }
            } else {
                let star = |x: u32| if x == STAR { n } else { x };
                let (lo, hi) = (star(a).min(star(b)), star(a).max(star(b)));
                if lo == 0 || hi > n {
                    return Err("Invalid sequence number");
                }
                idx.extend(lo as usize - 1..hi as usize);
            }
        }
        idx.sort_unstable();
        idx.dedup();
        Ok(idx)
    }

    /// Applies what changed in the store since `self.modseq`.
    pub fn catch_up(&mut self, ch: MailboxChanges) -> Caught {
        let mut caught = Caught::default();
        let last = self.max_uid();
        for mut m in ch.changed {
            if self.learn_keywords(&m.keywords) {
                caught.new_keywords = true;
            }
            if let Some(seen) = &self.private_seen {
                m.flags = m.flags.difference(Flags::SEEN);
                if seen.contains(&m.uid) {
                    m.flags = m.flags.union(Flags::SEEN);
                }
            }
            match self.index_of(m.uid) {
                Some(i) => {
                    let v = &mut self.msgs[i];
                    if v.flags != m.flags || v.keywords != m.keywords || v.modseq != m.modseq {
                        v.flags = m.flags;
                        v.keywords = m.keywords;
                        v.modseq = m.modseq;
                        caught.updated.push(m.uid);
                    }
                }
                None if m.uid > last => {
                    caught.new.push(m.uid);
                    self.msgs.push(m.into());
                }
                None => {}
            }
        }
        for uid in ch.expunged {
            if self.index_of(uid).is_some() {
                self.gone.insert(uid);
            }
        }
        self.modseq = self.modseq.max(ch.highest_modseq);
        caught
    }

    /// Removes the messages expunged elsewhere and returns the responses announcing it:
    /// one VANISHED with QRESYNC, else EXPUNGEs from the highest number down.
    pub fn report_expunges(&mut self, qresync: bool) -> String {
        if self.gone.is_empty() {
            return String::new();
        }
        let gone: Vec<u32> = std::mem::take(&mut self.gone).into_iter().collect();
        let mut out = String::new();
        if qresync {
            out.push_str(&format!("* VANISHED {}\r\n", uid_set(&gone)));
        }
        for &uid in gone.iter().rev() {
            if let Some(i) = self.index_of(uid) {
                self.msgs.remove(i);
                self.recent.remove(&uid);
                if !qresync {
                    out.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
                }
            }
        }
        self.saved.retain(|u| !gone.contains(u));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(uid: u32) -> Msg {
        Msg {
            uid,
            modseq: uid as u64,
            flags: Flags::default(),
            keywords: Vec::new(),
            size: 10,
            internal_date: 0,
            blob: BlobName::new(String::new()),
            saved: 0,
        }
    }

    #[test]
    fn blob_names_are_kept_as_bytes_and_given_back_whole() {
        let sha = "0123456789abcdef".repeat(4);
        let kept = BlobName::new(sha.clone());
        assert!(matches!(kept, BlobName::Sha256(_)));
        assert_eq!(kept.name(), sha);
        for other in ["", "not-a-hash", &"0123456789ABCDEF".repeat(4), &"g".repeat(64)] {
            let kept = BlobName::new(other.to_string());
            assert!(matches!(kept, BlobName::Other(_)), "{other}");
            assert_eq!(kept.name(), other);
        }
    }

    fn view(uids: &[u32]) -> Selected {
        let mb = Mailbox {
            id: 1,
            account: 1,
            name: "INBOX".into(),
            special_use: None,
            uidvalidity: 1,
            uidnext: 100,
            highestmodseq: 10,
            subscribed: true,
            messages: uids.len() as u32,
            recent_uid: 0,
        };
        Selected::new(mb, false, uids.iter().map(|&u| msg(u)).collect(), HashSet::new(), 10)
    }

    #[test]
    fn sets() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        let v = view(&[3, 5, 9]);
        let items = |i: Vec<SeqItem>| SeqSet::Items(i);
        assert_eq!(v.resolve(&items(vec![SeqItem::Range(2, STAR)]), false), Ok(vec![1, 2]));
        assert!(v.resolve(&items(vec![SeqItem::One(4)]), false).is_err());
        assert_eq!(v.resolve(&items(vec![SeqItem::Range(4, 9)]), true), Ok(vec![1, 2]));
        assert_eq!(v.resolve(&items(vec![SeqItem::Range(50, STAR)]), true), Ok(vec![2]));
        assert_eq!(v.resolve(&items(vec![SeqItem::One(4)]), true), Ok(vec![]));
    }

    #[test]
    fn expunges_wait_and_renumber() {
        let mut v = view(&[3, 5, 9]);
        let c = v.catch_up(MailboxChanges {
            highest_modseq: 12,
            changed: vec![MessageRef {
                uid: 11,
                modseq: 12,
                flags: Flags::SEEN,
                keywords: Vec::new(),
                internal_date: 0,
                size: 1,
                blob: String::new(),
                saved: 0,
            }],
            expunged: vec![3, 9],
        });
        assert_eq!((c.new, v.msgs.len(), v.modseq), (vec![11], 4, 12));
        // Still numbered until reported, then EXPUNGE from the top down.
        assert_eq!(v.report_expunges(false), "* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n");
        assert_eq!(v.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), [5, 11]);
        v.gone.insert(5);
        assert_eq!(v.report_expunges(true), "* VANISHED 5\r\n");
    }
}
