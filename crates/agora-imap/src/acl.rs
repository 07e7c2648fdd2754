//! Access control (RFC 4314) and the namespaces it opens: rights as letters, and how
//! another user's mailbox is named ("Other Users/<login>/<mailbox>", RFC 2342).

/// Every right, in the order RFC 4314 lists them.
pub const ALL: &str = "lrswipkxtea";
/// Prefix of other users' mailboxes shared with this user.
pub const OTHER_USERS: &str = "Other Users";
/// Prefix of the public folders (shared with NNTP).
pub const PUBLIC_FOLDERS: &str = "Public Folders";

/// A set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u16);

impl Rights {
    pub fn all() -> Rights {
        Rights((1 << ALL.len()) - 1)
    }

    fn bit(c: char) -> Option<u16> {
        ALL.find(c).map(|i| 1 << i)
    }

    /// Letters as SETACL takes them; the obsolete `c` and `d` of RFC 2086 stand for
    /// `k` and `xte` (RFC 4314 §2.1.1). None for an unknown letter.
    pub fn parse(s: &str) -> Option<Rights> {
        let mut r = 0;
        for c in s.chars() {
            match c {
                'c' => r |= Self::bit('k')?,
                'd' => r |= Self::bit('x')? | Self::bit('t')? | Self::bit('e')?,
                c => r |= Self::bit(c)?,
            }
        }
        Some(Rights(r))
    }

    /// Rights stored as text; unknown letters are ignored.
    pub fn lenient(s: &str) -> Rights {
        Rights(s.chars().filter_map(Self::bit).fold(0, |a, b| a | b))
    }

    pub fn has(self, c: char) -> bool {
        Self::bit(c).is_some_and(|b| self.0 & b != 0)
    }

    pub fn union(self, o: Rights) -> Rights {
        Rights(self.0 | o.0)
    }

    pub fn minus(self, o: Rights) -> Rights {
        Rights(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn text(self) -> String {
        ALL.chars().filter(|&c| self.has(c)).collect()
    }
}

/// `Other Users/alice@example.org/Projects` -> ("alice@example.org", "Projects").
pub fn split_shared(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(OTHER_USERS)?.strip_prefix('/')?;
    let (owner, mailbox) = rest.split_once('/')?;
    (!owner.is_empty() && !mailbox.is_empty()).then_some((owner, mailbox))
}

/// `Public Folders/Sales/EMEA` -> `Sales/EMEA`.
pub fn split_public(name: &str) -> Option<&str> {
    name.strip_prefix(PUBLIC_FOLDERS)?.strip_prefix('/').filter(|p| !p.is_empty())
}

pub fn public_name(path: &str) -> String {
    format!("{PUBLIC_FOLDERS}/{path}")
}

pub fn shared_name(owner: &str, mailbox: &str) -> String {
    format!("{OTHER_USERS}/{owner}/{mailbox}")
}

/// True for names inside a namespace this user cannot create mailboxes in.
pub fn foreign(name: &str) -> bool {
    let top = name.split('/').next().unwrap_or("");
    top == OTHER_USERS || top == PUBLIC_FOLDERS
}

pub use agora_directory::identifiers;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights() {
        let r = Rights::parse("lrs").unwrap();
        assert!(r.has('l') && r.has('s') && !r.has('w'));
        assert_eq!(Rights::parse("rdl").unwrap().text(), "lrxte");
        assert_eq!(Rights::parse("c").unwrap().text(), "k");
        assert!(Rights::parse("lrz").is_none());
        assert_eq!(Rights::all().text(), ALL);
        assert_eq!(Rights::all().minus(Rights::parse("a").unwrap()).text(), "lrswipkxte");
    }

    #[test]
    fn names_and_identifiers() {
        assert_eq!(split_shared("Other Users/a@x.org/Projects/2026"), Some(("a@x.org", "Projects/2026")));
        assert_eq!(split_shared("Other Users/a@x.org"), None);
        assert!(foreign("Public Folders/news") && !foreign("Otherwise"));
        assert_eq!(split_public("Public Folders/Sales/EMEA"), Some("Sales/EMEA"));
        assert_eq!(split_public("Public Folders/"), None);
        assert_eq!(split_public("Public FoldersX/a"), None);
        let groups = vec![
            agora_store::Group {
                address: "team@x.org".into(),
                display_name: String::new(),
                members: vec!["bob@x.org".into()],
                ..Default::default()
            },
            agora_store::Group {
                address: "all@x.org".into(),
                display_name: String::new(),
                members: vec!["team@x.org".into()],
                ..Default::default()
            },
        ];
        assert_eq!(
            identifiers("Bob@x.org", &groups),
            ["bob@x.org", "team@x.org", "all@x.org", "authenticated", "anyone"]
        );
    }
}
