//! What a reader does to messages: mark read or unread, flag, move to another folder,
//! delete (to Trash, or for good from Trash), one message or a selection; attachments
//! downloaded (always as a file: never rendered, never sniffed) and the raw source.

use agora_store::{FlagOp, Flags, MessageMeta, SpecialUse};

use crate::access::Folder;
use bytes::Bytes;

use crate::pages::{self, notice};
use crate::reading;
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// A message opened by the reader: the reader's folders, its folder, it, its body.
pub(crate) struct Opened {
    pub boxes: Vec<Folder>,
    pub mb: Folder,
    pub meta: MessageMeta,
    pub body: Vec<u8>,
}

impl Webmail {
    /// The message `u` of the reader's folder `f` in the query, with its body.
    pub(crate) async fn own_message(&self, user: &User, req: &WebRequest) -> Option<Opened> {
        let (boxes, mb) = self.folder(user, req.query_field("f")).await?;
        let uid = req.query_field("u")?.parse::<u32>().ok()?;
        let meta = self.store.messages(mb.id, uid..=uid).await.ok()?.into_iter().next()?;
        let body = self.store.read_blob(&meta.blob).await.ok()?;
        Some(Opened { boxes, mb, meta, body })
    }

    /// POST /mail/action: `op` on the messages `u` of folder `f`; back to the folder.
    /// In a shared folder each change needs its right (RFC 4314), and read or unread is
    /// the reader's own.
    pub(crate) async fn action(&self, user: &User, req: &WebRequest) -> WebResponse {
        let Some((boxes, mb)) = self.folder(user, req.form_field("f")).await else {
            return WebResponse::html(404, notice("Not found", "There is no such folder."));
        };
        let mut uids: Vec<u32> = req.form_fields("u").iter().filter_map(|u| u.parse().ok()).take(10_000).collect();
        uids.sort_unstable();
        uids.dedup();
        let back = format!("/mail/?f={}", mb.id);
        if uids.is_empty() {
            return WebResponse::redirect(&back);
        }
        let op = req.form_field("op").unwrap_or_default();
        let needs: &[char] = match op.as_str() {
            "read" | "unread" => &['s'],
            "flag" | "unflag" => &['w'],
            "delete" | "move" | "junk" | "notjunk" => &['t', 'e'],
            _ => &[],
        };
        if !needs.iter().all(|&r| mb.may(r)) {
            return WebResponse::html(403, notice("Not allowed", "You have no right to change this folder."));
        }
        // The reader's own folder of a use (never another account's).
        let own = |u: SpecialUse| boxes.iter().find(|m| !m.shared && m.special_use == Some(u)).map(|m| m.id);
        let flag = |op, flags| self.store.store_flags(mb.id, &uids, op, flags, &[], None);
        let done = match op.as_str() {
            "read" | "unread" if mb.shared => {
                self.store.set_private_seen(mb.id, user.account.id, &uids, op == "read").await
            }
            "read" => flag(FlagOp::Add, Flags::SEEN).await.map(|_| ()),
            "unread" => flag(FlagOp::Remove, Flags::SEEN).await.map(|_| ()),
            "flag" => flag(FlagOp::Add, Flags::FLAGGED).await.map(|_| ()),
            "unflag" => flag(FlagOp::Remove, Flags::FLAGGED).await.map(|_| ()),
            "delete" => match own(SpecialUse::Trash) {
                Some(t) if t != mb.id && !mb.shared => self.move_to(mb.id, &uids, t).await,
                // In Trash itself, with no Trash, or in a shared folder: gone for good.
                _ => self.store.expunge(mb.id, &uids).await.map(|_| ()),
            },
            "junk" | "notjunk" if !mb.shared => {
                // Junk goes to the Junk folder (made when missing); "not junk" back to INBOX.
                let target = if op == "junk" {
                    match own(SpecialUse::Junk) {
                        Some(j) => Some(j),
                        None => self
                            .store
                            .create_mailbox(user.account.id, "Junk", Some(SpecialUse::Junk))
                            .await
                            .ok()
                            .map(|m| m.id),
                    }
                } else {
                    boxes.iter().find(|m| !m.shared && m.name.eq_ignore_ascii_case("INBOX")).map(|m| m.id)
                };
                let flag = if op == "junk" { "$Junk" } else { "$NotJunk" };
                let _ = self
                    .store
                    .store_flags(mb.id, &uids, FlagOp::Add, Flags::default(), &[flag.to_string()], None)
                    .await;
                match target {
                    Some(t) if t != mb.id => self.move_to(mb.id, &uids, t).await,
                    _ => Ok(()),
                }
            }
            "move" => match req.form_field("to").and_then(|t| t.parse::<i64>().ok()) {
                Some(to) if to != mb.id && boxes.iter().any(|m| m.id == to && m.may('i')) => {
                    self.move_to(mb.id, &uids, to).await
                }
                _ => return WebResponse::redirect(&back),
            },
            _ => return WebResponse::html(400, notice("Not understood", "That action is not known.")),
        };
        match done {
            Ok(()) => WebResponse::redirect(&back),
            Err(e) => {
                tracing::warn!("webmail: {op} for {}: {e}", user.account.login);
                WebResponse::html(503, notice("Not done", "The store refused the change; please try again."))
            }
        }
    }

    /// Copies, then removes the originals (what IMAP MOVE does).
    async fn move_to(&self, from: i64, uids: &[u32], to: i64) -> agora_store::Result<()> {
        let (_, pairs) = self.store.copy_messages(from, uids, to).await?;
        let copied: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        self.store.expunge(from, &copied).await.map(|_| ())
    }

    /// GET /mail/part?f=&u=&p=: one part's content (`p` counts parts in pre-order),
    /// transfer encoding undone,
    /// offered as a download under its own name.
    pub(crate) async fn download(&self, user: &User, req: &WebRequest) -> WebResponse {
        let not_found = || WebResponse::html(404, notice("Not found", "There is no such attachment."));
        let Some(index) = req.query_field("p").and_then(|p| p.parse::<usize>().ok()) else { return not_found() };
        let Some(Opened { meta, body, .. }) = self.own_message(user, req).await else { return not_found() };
        let nodes = reading::nodes(&meta.summary.root);
        let Some(part) = nodes.get(index) else { return not_found() };
        let raw = body.get(part.body_start as usize..(part.end as usize).min(body.len())).unwrap_or(&[]);
        let content = agora_store::text::transfer_decode(part.encoding.as_deref(), raw).unwrap_or_else(|| raw.to_vec());
        let name = match pages::part_name(part) {
            n if n == "(unnamed)" && part.media_type == "message" => "message.eml".to_string(),
            n => n,
        };
        WebResponse {
            stream: None,
            status: 200,
            headers: vec![
                // Never the declared type: whatever it says, the browser saves it.
                ("content-type".into(), "application/octet-stream".into()),
                ("content-disposition".into(), disposition(&name)),
            ],
            body: Bytes::from(content),
        }
    }

    /// GET /mail/raw?f=&u=: the message as it was stored, as plain text.
    pub(crate) async fn raw(&self, user: &User, req: &WebRequest) -> WebResponse {
        let not_found = || WebResponse::html(404, notice("Not found", "There is no such message."));
        let Some(Opened { body, .. }) = self.own_message(user, req).await else { return not_found() };
        WebResponse {
            stream: None,
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(String::from_utf8_lossy(&body).into_owned()),
        }
    }
}

impl Webmail {
    /// GET /mail/html?f=&u=&p=[&images=1]: a message's HTML part, sanitised (no script,
    /// no handlers, no forms, no frames), for the sandboxed frame of the message page. Its
    /// own CSP adds `sandbox` and lets images load only from the message itself
    /// (`data:`) unless the reader asked for remote ones.
    pub(crate) async fn html(&self, user: &User, req: &WebRequest) -> WebResponse {
        let not_found = || WebResponse::html(404, notice("Not found", "There is no such message."));
        let Some(Opened { meta, body, .. }) = self.own_message(user, req).await else { return not_found() };
        let nodes = reading::nodes(&meta.summary.root);
        let chosen = match req.query_field("p").and_then(|p| p.parse::<usize>().ok()) {
            Some(i) => nodes.get(i).copied(),
            None => reading::html_part(&meta.summary.root),
        };
        let Some(part) = chosen.filter(|p| p.media_type == "text" && p.media_subtype == "html") else {
            return not_found();
        };
        let clean = reading::safe_html(&meta.summary.root, &body, part);
        let images = if req.query_field("images").as_deref() == Some("1") { " https:" } else { "" };
        WebResponse {
            stream: None,
            status: 200,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                (
                    "content-security-policy".into(),
                    format!(
                        "default-src 'none'; img-src data:{images}; sandbox allow-popups allow-popups-to-escape-sandbox; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
                    ),
                ),
                ("x-frame-options".into(), "SAMEORIGIN".into()),
            ],
            body: Bytes::from(format!(
                "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{clean}</body></html>"
            )),
        }
    }
}

/// `attachment` with an ASCII stand-in name and the real one in RFC 6266/5987 form.
pub(crate) fn disposition(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._- ()".contains(c) { c } else { '_' }).collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", pages::url_encode(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_names() {
        assert_eq!(
            super::disposition("日本 \"x\".html"),
            "attachment; filename=\"__ _x_.html\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%20%22x%22.html"
        );
    }
}
