//! METADATA (RFC 5464): per-mailbox and server annotations, /private/ ones each user's
//! own and /shared/ ones of the mailbox's owner; server /shared/ entries are the
//! server's and read-only.

use agora_net::{Conn, Flow};
use agora_store::StoreError;

use crate::session::Session;

/// The largest value one entry may hold, and how many entries a mailbox may have.
const MAX_VALUE: usize = 64 * 1024;
const MAX_ENTRIES: usize = 256;

/// An entry name as RFC 5464 §3.2 allows it: /private/ or /shared/, then non-empty
/// levels without wildcards; lower-cased (names are case-insensitive).
fn entry_name(e: &str) -> Option<String> {
    let lower = e.to_ascii_lowercase();
    let rest = lower.strip_prefix("/private").or_else(|| lower.strip_prefix("/shared"))?;
    let ok = e.len() <= 1024
        && (rest.is_empty() || rest.starts_with('/'))
        && !rest.ends_with('/')
        && !rest.contains("//")
        && !e.contains(['*', '%'])
        && !e.chars().any(char::is_control);
    ok.then_some(lower)
}

impl Session {
    /// The mailbox id entries belong to: 0 for the server (""), else one of the user's
    /// own mailboxes.
    async fn metadata_target(&self, conn: &mut Conn, tag: &str, mailbox: &str) -> Option<i64> {
        if mailbox.is_empty() {
            return Some(0);
        }
        match self.store.mailbox(self.account_id(), mailbox).await {
            Ok(Some(mb)) => Some(mb.id),
            _ => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                None
            }
        }
    }

    pub(crate) async fn set_metadata(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        mailbox: &str,
        entries: Vec<(String, Option<Vec<u8>>)>,
    ) -> Flow {
        let Some(id) = self.metadata_target(conn, tag, mailbox).await else { return Flow::Continue };
        let mut changes = Vec::with_capacity(entries.len());
        for (e, v) in entries {
            let Some(name) = entry_name(&e) else { return self.bad(conn, tag, "Invalid entry name") };
            if id == 0 && name.starts_with("/shared") {
                conn.queue(format!("{tag} NO [NOPERM] The server's shared entries are read-only\r\n").as_bytes());
                return Flow::Continue;
            }
            if v.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
                conn.queue(format!("{tag} NO [METADATA MAXSIZE {MAX_VALUE}] Value too long\r\n").as_bytes());
                return Flow::Continue;
            }
            changes.push((name, v));
        }
        match self.store.set_metadata(self.account_id(), id, changes, MAX_ENTRIES).await {
            Ok(()) => conn.queue(format!("{tag} OK Setmetadata completed\r\n").as_bytes()),
            Err(StoreError::OverQuota(_)) => {
                conn.queue(format!("{tag} NO [METADATA TOOMANY] Too many entries\r\n").as_bytes())
            }
            Err(e) => {
                tracing::error!("imap: setmetadata: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Setmetadata failed\r\n").as_bytes());
            }
        }
        Flow::Continue
    }

    pub(crate) async fn get_metadata(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        mailbox: &str,
        max_size: Option<u64>,
        depth: u32,
        wanted: &[String],
    ) -> Flow {
        let Some(id) = self.metadata_target(conn, tag, mailbox).await else { return Flow::Continue };
        let mut names = Vec::new();
        for w in wanted {
            match entry_name(w) {
                Some(n) => names.push(n),
                None => return self.bad(conn, tag, "Invalid entry name"),
            }
        }
        let mut all = match self.store.metadata(self.account_id(), id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("imap: getmetadata: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Getmetadata failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if id == 0
            && let Some((_, domain)) = self.account.as_ref().and_then(|a| a.login.rsplit_once('@'))
        {
            // The server's own: who to write to about it (RFC 5464 §3.2.1.1).
            all.push(("/shared/admin".into(), format!("mailto:postmaster@{domain}").into_bytes()));
        }
        let mut out = Vec::new();
        let mut longest = 0u64;
        for (entry, value) in &all {
            let hit = names.iter().any(|n| {
                entry == n
                    || entry
                        .strip_prefix(n.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| depth == u32::MAX || (depth == 1 && !r.contains('/')))
            });
            if !hit {
                continue;
            }
            if max_size.is_some_and(|m| value.len() as u64 > m) {
                longest = longest.max(value.len() as u64);
                continue;
            }
            if !out.is_empty() {
                out.push(b' ');
            }
            crate::response::string(&mut out, entry.as_bytes());
            out.push(b' ');
            crate::response::literal(&mut out, value);
        }
        let mut line = Vec::new();
        if !out.is_empty() {
            line.extend_from_slice(b"* METADATA ");
            self.name_out(&mut line, mailbox);
            line.extend_from_slice(b" (");
            line.extend_from_slice(&out);
            line.extend_from_slice(b")\r\n");
        }
        let code = if longest > 0 { format!(" [METADATA LONGENTRIES {longest}]") } else { String::new() };
        line.extend_from_slice(format!("{tag} OK{code} Getmetadata completed\r\n").as_bytes());
        conn.queue(&line);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::entry_name;

    #[test]
    fn entry_names() {
        assert_eq!(entry_name("/private/Comment").as_deref(), Some("/private/comment"));
        assert_eq!(entry_name("/shared/vendor/x/y").as_deref(), Some("/shared/vendor/x/y"));
        for bad in ["/other/x", "/private//x", "/private/x/", "/shared/*", "private/x", "/privatex"] {
            assert_eq!(entry_name(bad), None, "{bad}");
        }
    }
}
