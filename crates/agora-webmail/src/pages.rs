//! The pages, made on the server: the sign-in form, a mailbox (folders with unread
//! counts, the newest messages a page at a time), one message (decoded headers, its
//! text, its attachments), the session list. Everything from mail is escaped here;
//! HTML mail is shown as its text.

use std::fmt::Write;

use agora_store::address;
use agora_store::text;
use agora_store::{FlagOp, Flags, Mailbox, MessageMeta, Part, WebSession};

use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Messages on one page of a mailbox.
const PAGE: usize = 50;

pub(crate) const CSS: &str = include_str!("app.css");

/// Text for HTML, in content and in quoted attributes alike.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn layout(title: &str, user: Option<&User>, main: &str) -> String {
    let mut bar = String::new();
    if let Some(u) = user {
        let _ = write!(
            bar,
            r#"<header><a class="home" href="/mail/">Mail</a><a href="/mail/compose">Write</a><span class="who">{}</span><a href="/mail/sessions">Sessions</a><form method="post" action="/mail/logout"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form></header>"#,
            escape(&u.account.login),
            escape(&u.session.csrf)
        );
    }
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><title>{}</title><link rel="stylesheet" href="/mail/app.css"></head><body>{bar}<main>{main}</main></body></html>"#,
        escape(title)
    )
}

/// A page that only says something.
pub(crate) fn notice(title: &str, text: &str) -> String {
    layout(title, None, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)))
}

pub(crate) fn sign_in(hostname: &str, pre: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e))).unwrap_or_default();
    let main = format!(
        r#"<form class="signin" method="post" action="/mail/login"><h1>Sign in to {}</h1>{error}<input type="hidden" name="pre" value="{}"><label for="login">Email address</label><input id="login" name="login" type="email" autocomplete="username" required autofocus><label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required><label for="code">Authenticator code (if you use one)</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6"><button type="submit">Sign in</button></form>"#,
        escape(hostname),
        escape(pre)
    );
    layout("Sign in", None, &main)
}

pub(crate) fn sessions(user: &User, sessions: &[WebSession]) -> String {
    let mut rows = String::new();
    for s in sessions {
        let this = if s.id == user.session.id { " (this one)" } else { "" };
        let _ = write!(
            rows,
            "<tr><td>{}{this}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.agent),
            escape(&s.address),
            when(s.created),
            when(s.seen)
        );
    }
    let main = format!(
        r#"<h1>Signed-in sessions</h1><table><thead><tr><th scope="col">Browser</th><th scope="col">From</th><th scope="col">Signed in</th><th scope="col">Last seen</th></tr></thead><tbody>{rows}</tbody></table><form method="post" action="/mail/logout"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="everywhere" value="1"><button type="submit">Sign out everywhere</button></form>"#,
        escape(&user.session.csrf)
    );
    layout("Sessions", Some(user), &main)
}

/// "2026-12-01 10:00" (UTC).
fn when(secs: i64) -> String {
    let (y, mo, d, h, mi, _) = agora_store::time::split(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{} KB", b.div_ceil(1024)),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// INBOX first, then the special-use folders, then the rest by name.
fn folder_order(m: &Mailbox) -> (u8, String) {
    let rank = if m.name.eq_ignore_ascii_case("INBOX") {
        0
    } else if m.special_use.is_some() {
        1
    } else {
        2
    };
    (rank, m.name.to_lowercase())
}

impl Webmail {
    /// The account's mailbox named by `f` (an id), else its INBOX.
    async fn chosen(&self, user: &User, req: &WebRequest) -> Option<(Vec<Mailbox>, Mailbox)> {
        let mut boxes = self.store.mailboxes(user.account.id).await.ok()?;
        boxes.sort_by_key(folder_order);
        let wanted = req.query_field("f").and_then(|f| f.parse::<i64>().ok());
        let chosen = wanted
            .and_then(|id| boxes.iter().find(|m| m.id == id))
            .or_else(|| boxes.iter().find(|m| m.name.eq_ignore_ascii_case("INBOX")))
            .or(boxes.first())?
            .clone();
        Some((boxes, chosen))
    }

    pub(crate) async fn mailbox_page(&self, user: &User, req: &WebRequest) -> WebResponse {
        let Some((boxes, mb)) = self.chosen(user, req).await else {
            return WebResponse::html(503, notice("Unavailable", "The mailboxes cannot be read now."));
        };
        let mut nav = String::from(r#"<nav aria-label="Folders"><ul>"#);
        let unseen = self.store.unseen_counts(user.account.id).await.unwrap_or_default();
        let listing = self.store.message_list(mb.id).await.unwrap_or_default();
        for b in &boxes {
            let unread = unseen.iter().find(|(id, _)| *id == b.id).map_or(0, |(_, n)| *n);
            let current = if b.id == mb.id { r#" aria-current="page""# } else { "" };
            let badge = if unread > 0 { format!(r#" <span class="unread">{unread}</span>"#) } else { String::new() };
            let icon = b.special_use.map_or("folder", |s| s.as_str().trim_start_matches('\\')).to_ascii_lowercase();
            let _ = write!(
                nav,
                r#"<li class="{}"><a href="/mail/?f={}"{current}>{}{badge}</a></li>"#,
                escape(&icon),
                b.id,
                escape(&b.name)
            );
        }
        nav.push_str("</ul></nav>");
        // Newest first, a page at a time; a search narrows the folder to its hits.
        let page: usize = req.query_field("p").and_then(|p| p.parse().ok()).unwrap_or(0);
        let q = req.query_field("q").unwrap_or_default().trim().to_string();
        let all: Vec<u32> =
            if q.is_empty() { listing.iter().map(|m| m.uid).collect() } else { self.search(&mb, &q).await };
        let order = Order::from(req.query_field("sort").as_deref());
        // Shown last first: arrival order is ascending UIDs, a sort key orders the same way.
        let all = match order.key() {
            Some((key, reverse)) => self.sorted(&mb, &all, key, reverse).await,
            None => all,
        };
        let total = all.len();
        let uids: Vec<u32> = all.iter().rev().skip(page * PAGE).take(PAGE).copied().collect();
        let mut metas: Vec<MessageMeta> = match (uids.iter().min(), uids.iter().max()) {
            (Some(&lo), Some(&hi)) => self
                .store
                .messages(mb.id, lo..=hi)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|m| uids.contains(&m.uid))
                .collect(),
            _ => Vec::new(),
        };
        metas.sort_by_key(|m| uids.iter().position(|&u| u == m.uid));
        let mut rows = String::new();
        for meta in &metas {
            let e = &meta.summary.envelope;
            let from = e.from.as_deref().map(address::first_label).unwrap_or_default();
            let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
            let subject = if subject.trim().is_empty() { "(no subject)".to_string() } else { subject };
            let unread = if meta.flags.contains(Flags::SEEN) { "" } else { " unread" };
            let flagged = if meta.flags.contains(Flags::FLAGGED) {
                r#"<span class="flag" aria-label="flagged">★</span>"#
            } else {
                ""
            };
            let _ = write!(
                rows,
                r#"<tr class="msg{unread}"><td class="pick"><input type="checkbox" name="u" value="{}" aria-label="Select"></td><td class="from">{flagged}{}</td><td class="subject"><a href="/mail/message?f={}&amp;u={}">{}</a></td><td class="date">{}</td><td class="size">{}</td></tr>"#,
                meta.uid,
                escape(&from),
                mb.id,
                meta.uid,
                escape(&subject),
                when(meta.internal_date),
                size(meta.size)
            );
        }
        let mut pager = String::new();
        let mut query = if q.is_empty() { String::new() } else { format!("&amp;q={}", escape(&url_encode(&q))) };
        let search_only = query.clone();
        if let Some(name) = order.name() {
            query.push_str(&format!("&amp;sort={name}"));
        }
        if page > 0 {
            let _ = write!(pager, r#"<a rel="prev" href="/mail/?f={}{query}&amp;p={}">Newer</a>"#, mb.id, page - 1);
        }
        if (page + 1) * PAGE < total {
            let _ = write!(pager, r#"<a rel="next" href="/mail/?f={}{query}&amp;p={}">Older</a>"#, mb.id, page + 1);
        }
        let list = if rows.is_empty() {
            r#"<p class="empty">No messages.</p>"#.to_string()
        } else {
            let tools = action_form(user, &boxes, &mb, None, Flags::default());
            format!(
                r#"{}<table class="list"><thead><tr><th scope="col"><span class="hidden">Select</span></th>{}</tr></thead><tbody>{rows}</tbody></table></form>"#,
                tools.trim_end_matches("</form>"),
                [("From", Order::From), ("Subject", Order::Subject), ("Date", Order::Date), ("Size", Order::Size)]
                    .iter()
                    .map(|(label, o)| {
                        let current = if *o == order { r#" aria-sort="other""# } else { "" };
                        format!(
                            r#"<th scope="col"{current}><a href="/mail/?f={}{search_only}&amp;sort={}">{label}</a></th>"#,
                            mb.id,
                            o.name().unwrap_or("date")
                        )
                    })
                    .collect::<String>()
            )
        };
        let search = format!(
            r#"<form class="search" method="get" action="/mail/" role="search"><input type="hidden" name="f" value="{}"><label for="q" class="hidden">Search</label><input id="q" name="q" type="search" value="{}" placeholder="Search this folder"><button type="submit">Search</button></form>"#,
            mb.id,
            escape(&q)
        );
        let count = match (q.is_empty(), total) {
            (true, 1) => "1 message".to_string(),
            (true, n) => format!("{n} messages"),
            (false, n) => format!("{n} found"),
        };
        let main = format!(
            r#"<div class="mailbox">{nav}<section aria-label="Messages"><h1>{} <small>{count}</small></h1>{search}{list}<div class="pager">{pager}</div></section></div>"#,
            escape(&mb.name)
        );
        WebResponse::html(200, layout(&mb.name, Some(user), &main))
    }

    /// `uids` in the order of a sort key (RFC 5256's, as IMAP SORT uses).
    async fn sorted(&self, mb: &Mailbox, uids: &[u32], key: agora_store::sort::SortKey, reverse: bool) -> Vec<u32> {
        use agora_store::sort::{Criterion, SortItem, sort};
        let metas: Vec<MessageMeta> = self
            .store
            .messages(mb.id, 1..=u32::MAX)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|m| uids.binary_search(&m.uid).is_ok())
            .collect();
        let items: Vec<SortItem<'_>> = metas
            .iter()
            .enumerate()
            .map(|(i, m)| SortItem {
                seq: i as u32,
                size: m.size,
                internal_date: m.internal_date,
                envelope: &m.summary.envelope,
            })
            .collect();
        sort(&[Criterion { key, reverse }], &items)
            .into_iter()
            .filter_map(|i| metas.get(i as usize))
            .map(|m| m.uid)
            .collect()
    }

    /// The UIDs of the folder's messages whose text (decoded headers and body) has `q`:
    /// the same search as IMAP's `SEARCH TEXT`.
    async fn search(&self, mb: &Mailbox, q: &str) -> Vec<u32> {
        use agora_store::search::{Ctx, SearchKey, matches, read_for};
        let key = SearchKey::Text(q.to_string());
        let metas = self.store.messages(mb.id, 1..=u32::MAX).await.unwrap_or_default();
        let (count, max_uid) = (metas.len() as u32, metas.last().map_or(0, |m| m.uid));
        let mut hits = Vec::new();
        for (i, meta) in metas.iter().enumerate() {
            let (body, kept) = read_for(&*self.store, &key, meta).await;
            let ctx = Ctx {
                seq: i as u32 + 1,
                count,
                max_uid,
                meta,
                body: body.as_deref(),
                recent: false,
                saved: &[],
                kept,
                text: std::cell::OnceCell::new(),
            };
            if matches(&key, &ctx) {
                hits.push(meta.uid);
            }
        }
        hits
    }

    pub(crate) async fn message_page(&self, user: &User, req: &WebRequest) -> WebResponse {
        let not_found = || WebResponse::html(404, notice("Not found", "There is no such message."));
        let Some(crate::actions::Opened { boxes, mb, meta, body }) = self.own_message(user, req).await else {
            return not_found();
        };
        let uid = meta.uid;
        if !meta.flags.contains(Flags::SEEN) {
            let _ = self.store.store_flags(mb.id, &[uid], FlagOp::Add, Flags::SEEN, &[], None).await;
        }
        let e = &meta.summary.envelope;
        let mut head = String::from("<dl class=\"headers\">");
        for (label, value) in [("From", &e.from), ("To", &e.to), ("Cc", &e.cc)] {
            if let Some(v) = value {
                let shown: Vec<String> = address::display(v)
                    .iter()
                    .filter(|a| !a.address.is_empty())
                    .map(|a| match a.name.as_deref() {
                        Some(n) => format!("{n} <{}>", a.address),
                        None => a.address.clone(),
                    })
                    .collect();
                let _ = write!(head, "<dt>{label}</dt><dd>{}</dd>", escape(&shown.join(", ")));
            }
        }
        let _ = write!(head, "<dt>Date</dt><dd>{}</dd></dl>", escape(e.date.as_deref().unwrap_or("")));
        let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
        let shown = readable_part(&meta.summary.root);
        let content = shown.map(|p| text::part_text(&body, p)).unwrap_or_default();
        // HTML mail is shown as HTML, sanitised, in a sandboxed frame (its own text a
        // click away); remote images only when the reader asks.
        let as_text = req.query_field("text").as_deref() == Some("1");
        let images = req.query_field("images").as_deref() == Some("1");
        let view = match html_part(&meta.summary.root) {
            Some(_) if !as_text => {
                let here = format!("/mail/message?f={}&amp;u={uid}", mb.id);
                let more = if images {
                    String::new()
                } else {
                    format!(r#" · <a href="{here}&amp;images=1">Show remote images</a>"#)
                };
                format!(
                    r#"<p class="view"><a href="{here}&amp;text=1">Show as text</a>{more}</p><iframe class="html" title="Message" sandbox="allow-popups allow-popups-to-escape-sandbox" src="/mail/html?f={}&amp;u={uid}{}"></iframe>"#,
                    mb.id,
                    if images { "&amp;images=1" } else { "" }
                )
            }
            _ => format!(r#"<div class="body">{}</div>"#, escape(&content)),
        };
        let mut attachments = String::new();
        let mut leaves = Vec::new();
        collect_leaves(&meta.summary.root, &mut leaves);
        for (index, p) in leaves.into_iter().enumerate() {
            if shown.is_some_and(|s| std::ptr::eq(s, p)) || (p.media_type == "text" && !is_attachment(p)) {
                continue;
            }
            let bytes = u64::from(p.end.saturating_sub(p.body_start));
            let base64 = p.encoding.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("base64"));
            let bytes = if base64 { bytes * 3 / 4 } else { bytes };
            let _ = write!(
                attachments,
                r#"<li><a href="/mail/part?f={}&amp;u={uid}&amp;p={index}" download>{}</a> <span class="type">{}/{}</span> <span class="size">{}</span></li>"#,
                mb.id,
                escape(&part_name(p)),
                escape(&p.media_type),
                escape(&p.media_subtype),
                size(bytes)
            );
        }
        if !attachments.is_empty() {
            attachments = format!(
                r#"<section aria-label="Attachments"><h2>Attachments</h2><ul class="attachments">{attachments}</ul></section>"#
            );
        }
        let tools = action_form(user, &boxes, &mb, Some(uid), meta.flags);
        let main = format!(
            r#"<article><p><a href="/mail/?f={id}">Back to {}</a> · <a href="/mail/compose?mode=reply&amp;f={id}&amp;u={uid}">Reply</a> · <a href="/mail/compose?mode=all&amp;f={id}&amp;u={uid}">Reply all</a> · <a href="/mail/compose?mode=forward&amp;f={id}&amp;u={uid}">Forward</a> · <a href="/mail/raw?f={id}&amp;u={uid}">View source</a></p>{tools}<h1>{}</h1>{head}{view}{attachments}</article>"#,
            escape(&mb.name),
            escape(if subject.trim().is_empty() { "(no subject)" } else { &subject }),
            id = mb.id,
        );
        WebResponse::html(200, layout(&subject, Some(user), &main))
    }
}

/// How a folder's list is ordered (shown from the end: newest, A first, largest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Arrival,
    Date,
    From,
    Subject,
    Size,
}

impl Order {
    fn from(name: Option<&str>) -> Order {
        match name {
            Some("date") => Order::Date,
            Some("from") => Order::From,
            Some("subject") => Order::Subject,
            Some("size") => Order::Size,
            _ => Order::Arrival,
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            Order::Arrival => None,
            Order::Date => Some("date"),
            Order::From => Some("from"),
            Order::Subject => Some("subject"),
            Order::Size => Some("size"),
        }
    }

    /// The sort key and whether it runs backwards (the list is read from its end).
    fn key(self) -> Option<(agora_store::sort::SortKey, bool)> {
        use agora_store::sort::SortKey;
        match self {
            Order::Arrival => None,
            Order::Date => Some((SortKey::Date, false)),
            Order::From => Some((SortKey::DisplayFrom, true)),
            Order::Subject => Some((SortKey::Subject, true)),
            Order::Size => Some((SortKey::Size, false)),
        }
    }
}

/// The form that acts on messages: on one (`uid`, the message page) or on those ticked
/// in the list that follows it (the caller closes the form after the list).
fn action_form(user: &User, boxes: &[Mailbox], mb: &Mailbox, uid: Option<u32>, flags: Flags) -> String {
    let mut f = format!(
        r#"<form class="tools" method="post" action="/mail/action"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="f" value="{}">"#,
        escape(&user.session.csrf),
        mb.id
    );
    if let Some(u) = uid {
        let _ = write!(f, r#"<input type="hidden" name="u" value="{u}">"#);
    }
    let single = uid.is_some();
    let flagged = flags.contains(Flags::FLAGGED);
    for (op, label, shown) in [
        ("read", "Mark read", !single),
        ("unread", "Mark unread", true),
        ("flag", "Flag", !single || !flagged),
        ("unflag", "Unflag", !single || flagged),
        ("delete", "Delete", true),
    ] {
        if shown {
            let _ = write!(f, r#"<button type="submit" name="op" value="{op}">{label}</button>"#);
        }
    }
    let targets: String = boxes
        .iter()
        .filter(|b| b.id != mb.id)
        .map(|b| format!(r#"<option value="{}">{}</option>"#, b.id, escape(&b.name)))
        .collect();
    if !targets.is_empty() {
        let _ = write!(
            f,
            r#"<label for="to" class="hidden">Move to</label><select id="to" name="to">{targets}</select><button type="submit" name="op" value="move">Move</button>"#
        );
    }
    f.push_str("</form>");
    f
}

/// A query-string value, percent-encoded.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name an attachment goes by: its file name, else its type's name parameter.
pub(crate) fn part_name(p: &Part) -> String {
    p.disposition
        .as_ref()
        .and_then(|d| text::param(&d.1, "filename"))
        .or_else(|| text::param(&p.params, "name"))
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "(unnamed)".into())
}

fn is_attachment(p: &Part) -> bool {
    p.disposition.as_ref().is_some_and(|d| d.0 == "attachment")
}

pub(crate) fn collect_leaves<'a>(p: &'a Part, out: &mut Vec<&'a Part>) {
    let mut stack = vec![p];
    while let Some(p) = stack.pop() {
        if p.children.is_empty() {
            out.push(p);
        } else {
            stack.extend(p.children.iter().rev());
        }
    }
}

/// The HTML a message has to show: its first text/html part that is not an attachment.
pub(crate) fn html_part(root: &Part) -> Option<&Part> {
    let mut leaves = Vec::new();
    collect_leaves(root, &mut leaves);
    leaves.into_iter().find(|p| p.media_type == "text" && p.media_subtype == "html" && !is_attachment(p))
}

/// The part a reader sees: the first text/plain that is not an attachment, else the
/// first such text/html (shown as its text).
pub(crate) fn readable_part(root: &Part) -> Option<&Part> {
    let mut leaves = Vec::new();
    collect_leaves(root, &mut leaves);
    let pick = |sub: &str| {
        leaves.iter().copied().find(|p| p.media_type == "text" && p.media_subtype == sub && !is_attachment(p))
    };
    pick("plain").or_else(|| pick("html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("line\nnext\u{1}"), "line\nnext\u{fffd}");
        assert_eq!(size(10), "10 B");
        assert_eq!(size(2048), "2 KB");
        assert_eq!(when(0), "1970-01-01 00:00");
    }
}
