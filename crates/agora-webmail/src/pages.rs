//! The pages, made on the server: the sign-in form, a mailbox (folders with unread
//! counts, the newest messages a page at a time), one message (decoded headers, its
//! text, its attachments), the session list. Everything from mail is escaped here;
//! HTML mail is shown as its text.

use std::fmt::Write;

use agora_store::address;
use agora_store::text;
use agora_store::{FlagOp, Flags, Mailbox, MessageMeta, Part, SpecialUse, WebSession};

use crate::access::Folder;
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Messages on one page of a mailbox.
const PAGE: usize = 50;

pub(crate) const CSS: &str = include_str!("app.css");
pub(crate) const JS: &str = include_str!("app.js");

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
    let mut head = String::new();
    let lang = user.map(|u| u.lang).unwrap_or_default();
    if let Some(u) = user {
        let t = |en| lang.t(en);
        let admin = if u.account.role == agora_store::Role::Admin {
            format!(r#"<a href="/admin">{}</a>"#, t("Admin"))
        } else {
            String::new()
        };
        let _ = write!(
            bar,
            r#"<header><a class="home" href="/mail/">{}</a><a id="write" href="/mail/compose">{}</a><span class="who">{}</span><a href="/mail/settings">{}</a><a href="/mail/sessions">{}</a>{admin}<form method="post" action="/mail/logout"><input type="hidden" name="csrf" value="{}"><button type="submit">{}</button></form></header>"#,
            t("Mail"),
            t("Write"),
            escape(&u.account.login),
            t("Settings"),
            t("Sessions"),
            escape(&u.session.csrf),
            t("Sign out")
        );
        let _ = write!(
            head,
            r#"<meta name="csrf" content="{}"><script src="/mail/app.js" defer></script>"#,
            escape(&u.session.csrf)
        );
        bar.push_str(&keys(lang));
    }
    format!(
        r#"<!DOCTYPE html><html lang="{}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><title>{}</title><link rel="stylesheet" href="/mail/app.css">{head}</head><body>{bar}<main>{main}</main></body></html>"#,
        lang.tag(),
        escape(title)
    )
}

/// The keyboard's help, shown by `?`.
fn keys(lang: crate::i18n::Lang) -> String {
    let mut dl = String::new();
    for (k, what) in [
        ("j / k", "next / previous message"),
        ("o, Enter", "open"),
        ("x", "select"),
        ("r / a / f", "reply / reply all / forward"),
        ("c", "write"),
        ("#", "delete"),
        ("!", "junk"),
        ("/", "search"),
        ("u", "back to the list"),
        ("?", "this help"),
    ] {
        let _ = write!(dl, "<dt>{k}</dt><dd>{}</dd>", lang.t(what));
    }
    let title = lang.t("Keyboard shortcuts");
    format!(r#"<aside id="keys" hidden aria-label="{title}"><h2>{title}</h2><dl>{dl}</dl></aside>"#)
}

/// A page that only says something.
pub(crate) fn notice(title: &str, text: &str) -> String {
    layout(title, None, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)))
}

pub(crate) fn sign_in(lang: crate::i18n::Lang, hostname: &str, pre: &str, error: Option<&str>) -> String {
    let t = |en| lang.t(en);
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(t(e)))).unwrap_or_default();
    let main = format!(
        r#"<form class="signin" method="post" action="/mail/login"><h1>{}</h1>{error}<input type="hidden" name="pre" value="{}"><label for="login">{}</label><input id="login" name="login" type="email" autocomplete="username" required autofocus><label for="password">{}</label><input id="password" name="password" type="password" autocomplete="current-password" required><label for="code">{}</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6"><button type="submit">{}</button></form>"#,
        escape(&lang.f("Sign in to {}", hostname)),
        escape(pre),
        t("Email address"),
        t("Password"),
        t("Authenticator code (if you use one)"),
        t("Sign in")
    );
    layout(t("Sign in"), None, &main).replacen(r#"<html lang="en">"#, &format!(r#"<html lang="{}">"#, lang.tag()), 1)
}

pub(crate) fn sessions(user: &User, sessions: &[WebSession]) -> String {
    let mut rows = String::new();
    for s in sessions {
        let this = if s.id == user.session.id { format!(" {}", user.lang.t("(this one)")) } else { String::new() };
        let _ = write!(
            rows,
            "<tr><td>{}{this}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.agent),
            escape(&s.address),
            user.lang.when(s.created),
            user.lang.when(s.seen)
        );
    }
    let t = |en| user.lang.t(en);
    let main = format!(
        r#"<h1>{}</h1><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>{rows}</tbody></table><form method="post" action="/mail/logout"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="everywhere" value="1"><button type="submit">{}</button></form>"#,
        t("Signed-in sessions"),
        t("Browser"),
        t("From"),
        t("Signed in"),
        t("Last seen"),
        escape(&user.session.csrf),
        t("Sign out everywhere")
    );
    layout(t("Sessions"), Some(user), &main)
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{} KB", b.div_ceil(1024)),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

impl Webmail {
    /// The reader's folder named by `f` (an id), else their INBOX.
    async fn chosen(&self, user: &User, req: &WebRequest) -> Option<(Vec<Folder>, Folder)> {
        let boxes = self.folders(user).await?;
        let wanted = req.query_field("f").and_then(|f| f.parse::<i64>().ok());
        let chosen = wanted
            .and_then(|id| boxes.iter().find(|m| m.id == id && m.may('r')))
            .or_else(|| boxes.iter().find(|m| !m.shared && m.name.eq_ignore_ascii_case("INBOX")))
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
        for b in &boxes {
            let unread = unseen.iter().find(|(id, _)| *id == b.id && !b.shared).map_or(0, |(_, n)| *n);
            let current = if b.id == mb.id { r#" aria-current="page""# } else { "" };
            let badge = if unread > 0 { format!(r#" <span class="count">{unread}</span>"#) } else { String::new() };
            let icon = match (b.special_use, b.shared) {
                (_, true) => "shared".to_string(),
                (Some(s), false) => s.as_str().trim_start_matches('\\').to_ascii_lowercase(),
                (None, false) if b.name.eq_ignore_ascii_case("INBOX") => "inbox".to_string(),
                (None, false) => "folder".to_string(),
            };
            // A folder only listed (no right to read) shows without a link.
            let _ = if b.may('r') {
                write!(
                    nav,
                    r#"<li class="{}"><a href="/mail/?f={}" data-folder="{}"{current}>{}{badge}</a></li>"#,
                    escape(&icon),
                    b.id,
                    b.id,
                    escape(&b.label)
                )
            } else {
                write!(nav, r#"<li class="{}"><span>{}</span></li>"#, escape(&icon), escape(&b.label))
            };
        }
        let _ = write!(nav, r#"</ul><p><a href="/mail/folders">{}</a></p></nav>"#, user.lang.t("Manage folders"));
        // Newest first, a page at a time; a search narrows the folder to its hits.
        let page: usize = req.query_field("p").and_then(|p| p.parse().ok()).unwrap_or(0);
        let q = Filter::from(req);
        let order = Order::from(req.query_field("sort").as_deref());
        // In threads, how deep each message sits (replies are indented).
        let mut all_depths: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        let (metas, total) = match (q.is_empty(), order.page_order()) {
            // The usual view: one page straight from the index, whatever the folder's size.
            (true, Some(by)) => {
                let offset = u32::try_from(page * PAGE).unwrap_or(u32::MAX);
                let metas = self.store.message_page(mb.id, by, offset, PAGE as u32).await.unwrap_or_default();
                (metas, mb.messages as usize)
            }
            _ => {
                let all: Vec<u32> = if q.is_empty() {
                    self.store.message_list(mb.id).await.unwrap_or_default().iter().map(|m| m.uid).collect()
                } else {
                    self.search(&mb, &q).await
                };
                // Shown last first: arrival order is ascending UIDs, a sort key orders the
                // same way, and threads come out newest last.
                let all = match order.key() {
                    Some((key, reverse)) => self.sorted(&mb, &all, key, reverse).await,
                    None if order == Order::Threads => {
                        let threaded = self.threaded(&mb, &all).await;
                        all_depths = threaded.iter().map(|&(u, d)| (u, d)).collect();
                        threaded.into_iter().rev().map(|(u, _)| u).collect()
                    }
                    None => all,
                };
                let uids: Vec<u32> = all.iter().rev().skip(page * PAGE).take(PAGE).copied().collect();
                let mut metas = self.store.messages_with(mb.id, &uids).await.unwrap_or_default();
                metas.sort_by_key(|m| uids.iter().position(|&u| u == m.uid));
                (metas, all.len())
            }
        };
        let seen = self.seen_in(user, &mb).await;
        let lang = user.lang;
        let t = |en| lang.t(en);
        let mut rows = String::new();
        for meta in &metas {
            let e = &meta.summary.envelope;
            let from = e.from.as_deref().map(address::first_label).unwrap_or_default();
            let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
            let subject = if subject.trim().is_empty() { t("(no subject)").to_string() } else { subject };
            let read = seen.as_ref().map_or(meta.flags.contains(Flags::SEEN), |s| s.contains(&meta.uid));
            let unread = if read { "" } else { " unread" };
            let flagged = if meta.flags.contains(Flags::FLAGGED) {
                r#"<span class="flag" aria-label="flagged">★</span>"#
            } else {
                ""
            };
            let depth = all_depths.get(&meta.uid).map_or(String::new(), |d| format!(" depth{}", d.min(&8)));
            let _ = write!(
                rows,
                r#"<tr class="msg{unread}{depth}" data-uid="{}"><td class="pick"><input type="checkbox" name="u" value="{}" aria-label="{}"></td><td class="from">{flagged}{}</td><td class="subject"><a href="/mail/message?f={}&amp;u={}">{}</a></td><td class="date">{}</td><td class="size">{}</td></tr>"#,
                meta.uid,
                meta.uid,
                t("Select"),
                escape(&from),
                mb.id,
                meta.uid,
                escape(&subject),
                lang.when(meta.internal_date),
                size(meta.size)
            );
        }
        let mut pager = String::new();
        let mut query = q.query();
        let search_only = query.clone();
        if let Some(name) = order.name() {
            query.push_str(&format!("&amp;sort={name}"));
        }
        if page > 0 {
            let _ = write!(
                pager,
                r#"<a rel="prev" href="/mail/?f={}{query}&amp;p={}">{}</a>"#,
                mb.id,
                page - 1,
                t("Newer")
            );
        }
        if (page + 1) * PAGE < total {
            let _ = write!(
                pager,
                r#"<a rel="next" href="/mail/?f={}{query}&amp;p={}">{}</a>"#,
                mb.id,
                page + 1,
                t("Older")
            );
        }
        let list = if rows.is_empty() {
            format!(r#"<p class="empty">{}</p>"#, t("No messages."))
        } else {
            let tools = action_form(user, &boxes, &mb, None, Flags::default());
            format!(
                r#"{}<table class="list"><thead><tr><th scope="col"><span class="hidden">{}</span></th>{}</tr></thead><tbody>{rows}</tbody></table></form>"#,
                tools.trim_end_matches("</form>"),
                t("Select"),
                [("From", Order::From), ("Subject", Order::Subject), ("Date", Order::Date), ("Size", Order::Size)]
                    .iter()
                    .map(|(label, o)| {
                        let current = if *o == order { r#" aria-sort="other""# } else { "" };
                        format!(
                            r#"<th scope="col"{current}><a href="/mail/?f={}{search_only}&amp;sort={}">{}</a></th>"#,
                            mb.id,
                            o.name().unwrap_or("date"),
                            t(label)
                        )
                    })
                    .collect::<String>()
            )
        };
        let mut search = q.form(mb.id, lang);
        let _ = write!(
            search,
            r#"<p class="view">{}</p>"#,
            if order == Order::Threads {
                format!(r#"<a href="/mail/?f={}">{}</a>"#, mb.id, t("Show as a list"))
            } else {
                format!(r#"<a href="/mail/?f={}{}&amp;sort=threads">{}</a>"#, mb.id, q.query(), t("Show threads"))
            }
        );
        if matches!(mb.special_use, Some(SpecialUse::Trash | SpecialUse::Junk)) && total > 0 && q.is_empty() {
            let _ = write!(
                search,
                r#"<form class="tools" method="post" action="/mail/folders"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="what" value="empty"><input type="hidden" name="f" value="{}"><button type="submit">{}</button></form>"#,
                escape(&user.session.csrf),
                mb.id,
                escape(&lang.f("Empty {}", &mb.label))
            );
        }
        let count = match (q.is_empty(), total) {
            (true, 1) => t("1 message").to_string(),
            (true, n) => lang.f("{} messages", n),
            (false, 1) => t("1 found").to_string(),
            (false, n) => lang.f("{} found", n),
        };
        let unread = unseen.iter().find(|(id, _)| *id == mb.id).map_or(0, |(_, n)| *n);
        let title = if unread > 0 { format!("({unread}) {}", mb.label) } else { mb.label.clone() };
        let main = format!(
            r#"<div class="mailbox" data-title="{}">{nav}<section aria-label="{}"><h1>{} <small>{count}</small></h1>{search}{list}<div class="pager">{pager}</div></section></div>"#,
            escape(&title),
            t("Messages"),
            escape(&mb.label)
        );
        WebResponse::html(200, layout(&title, Some(user), &main))
    }

    /// The messages of a folder among `uids` (sorted), with their summaries.
    async fn metas_of(&self, mb: &Mailbox, uids: &[u32]) -> Vec<MessageMeta> {
        let all = self.store.messages(mb.id, 1..=u32::MAX).await.unwrap_or_default();
        all.into_iter().filter(|m| uids.binary_search(&m.uid).is_ok()).collect()
    }

    /// `uids` as conversations (IMAP's THREAD=REFERENCES), each flattened parent before
    /// replies, with its depth; conversations ordered by their newest message, newest first.
    async fn threaded(&self, mb: &Mailbox, uids: &[u32]) -> Vec<(u32, usize)> {
        use agora_store::thread::{Algorithm, ThreadItem, thread};
        let metas = self.metas_of(mb, uids).await;
        let items: Vec<ThreadItem<'_>> = metas
            .iter()
            .enumerate()
            .map(|(i, m)| ThreadItem {
                id: m.uid,
                seq: i as u32 + 1,
                internal_date: m.internal_date,
                envelope: &m.summary.envelope,
            })
            .collect();
        let threads = thread(Algorithm::References, &items);
        let mut conversations: Vec<Vec<(u32, usize)>> = Vec::new();
        for &root in &threads.roots {
            let mut flat = Vec::new();
            let mut stack = vec![(root, 0usize)];
            while let Some((n, depth)) = stack.pop() {
                let node = &threads.nodes[n];
                // A dummy (a parent known only by reference) takes no row.
                let (shown, next) = match node.id {
                    Some(uid) => (Some((uid, depth)), depth + 1),
                    None => (None, depth),
                };
                flat.extend(shown);
                stack.extend(node.children.iter().rev().map(|&c| (c, next)));
            }
            conversations.push(flat);
        }
        // Newest activity first: the UIDs grow with arrival.
        conversations.sort_by_key(|c| std::cmp::Reverse(c.iter().map(|&(u, _)| u).max().unwrap_or(0)));
        conversations.into_iter().flatten().collect()
    }

    /// `uids` in the order of a sort key (RFC 5256's, as IMAP SORT uses).
    async fn sorted(&self, mb: &Mailbox, uids: &[u32], key: agora_store::sort::SortKey, reverse: bool) -> Vec<u32> {
        use agora_store::sort::{Criterion, SortItem, sort};
        let metas = self.metas_of(mb, uids).await;
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

    /// The UIDs of the folder's messages that match the filter: the same search as
    /// IMAP's (`SEARCH TEXT`, `FROM`, `SINCE`, ...), reading a body only when a key needs it.
    async fn search(&self, mb: &Mailbox, q: &Filter) -> Vec<u32> {
        use agora_store::search::{Ctx, matches, read_for};
        let key = q.key();
        let metas = self.store.messages(mb.id, 1..=u32::MAX).await.unwrap_or_default();
        let (count, max_uid) = (metas.len() as u32, metas.last().map_or(0, |m| m.uid));
        let mut hits = Vec::new();
        for (i, meta) in metas.iter().enumerate() {
            if q.attachments && !has_attachment(&meta.summary.root) {
                continue;
            }
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
        // Opened means read: the reader's own \Seen in a shared folder.
        match self.seen_in(user, &mb).await {
            Some(seen) if !seen.contains(&uid) => {
                let _ = self.store.set_private_seen(mb.id, user.account.id, &[uid], true).await;
            }
            None if !meta.flags.contains(Flags::SEEN) && mb.may('s') => {
                let _ = self.store.store_flags(mb.id, &[uid], FlagOp::Add, Flags::SEEN, &[], None).await;
            }
            _ => {}
        }
        let e = &meta.summary.envelope;
        let lang = user.lang;
        let t = |en| lang.t(en);
        let mut head = String::from("<dl class=\"headers\">");
        for (label, value) in [("From", &e.from), ("To", &e.to), ("Cc", &e.cc)] {
            let label = t(label);
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
        // No Date field: when it arrived.
        let date = e.date.clone().unwrap_or_else(|| lang.when(meta.internal_date));
        let _ = write!(head, "<dt>{}</dt><dd>{}</dd></dl>", t("Date"), escape(&date));
        let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
        // Remote images only when the reader asks, for this message or for its sender.
        let sender = e.from.as_deref().and_then(|f| address::display(f).into_iter().next()).map(|a| a.address);
        let sender = sender.unwrap_or_default().to_lowercase();
        let trusted = !sender.is_empty() && self.image_senders(user).await.contains(&sender);
        let images = trusted || req.query_field("images").as_deref() == Some("1");
        let here = format!("f={}&amp;u={uid}", mb.id);
        let viewing = crate::reading::Viewing {
            body: &body,
            lang: user.lang,
            as_text: req.query_field("text").as_deref() == Some("1"),
            images,
            link: here.clone(),
        };
        let shown = crate::reading::show(&meta.summary.root, &viewing);
        let mut choices = String::new();
        if shown.has_html {
            if viewing.as_text {
                let _ = write!(choices, r#"<a href="/mail/message?{here}">{}</a>"#, t("Show as HTML"));
            } else {
                let _ = write!(choices, r#"<a href="/mail/message?{here}&amp;text=1">{}</a>"#, t("Show as text"));
                if !images {
                    let _ = write!(
                        choices,
                        r#" · <a href="/mail/message?{here}&amp;images=1">{}</a> · <form class="inline" method="post" action="/mail/images"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="f" value="{}"><input type="hidden" name="u" value="{uid}"><button type="submit">{}</button></form>"#,
                        t("Show remote images"),
                        escape(&user.session.csrf),
                        mb.id,
                        escape(&lang.f("Always show images from {}", &sender))
                    );
                }
            }
        }
        let choices = if choices.is_empty() { choices } else { format!(r#"<p class="view">{choices}</p>"#) };
        let mut attachments = String::new();
        for a in &shown.attachments {
            let _ = write!(
                attachments,
                r#"<li><a href="/mail/part?{here}&amp;p={}" download>{}</a> <span class="type">{}</span> <span class="size">{}</span></li>"#,
                a.node,
                escape(&a.name),
                escape(&a.kind),
                size(a.bytes)
            );
        }
        if !attachments.is_empty() {
            attachments = format!(
                r#"<section aria-label="{a}"><h2>{a}</h2><ul class="attachments">{attachments}</ul></section>"#,
                a = t("Attachments")
            );
        }
        let verdict = match crate::reading::verdict(&body, &self.hostname) {
            Some(crate::reading::Verdict::Verified(d)) => {
                format!(r#"<p class="verified" role="note">{}</p>"#, escape(&lang.f("✓ Verified sender: {}", &d)))
            }
            Some(crate::reading::Verdict::Suspect(d)) => format!(
                r#"<p class="suspect" role="alert">{}</p>"#,
                escape(&lang.f(
                    "⚠ This message failed the checks of its sender's domain{}: it may not be from who it says.",
                    if d.is_empty() { String::new() } else { format!(" ({d})") }
                ))
            ),
            None => String::new(),
        };
        let tools = action_form(user, &boxes, &mb, Some(uid), meta.flags);
        // Older and newer in the folder, for j and k.
        let (older, newer) = self.store.neighbours(mb.id, uid).await.unwrap_or_default();
        let step = |rel: &str, label: &str, to: Option<u32>| {
            to.map(|u| format!(r#" · <a rel="{rel}" href="/mail/message?f={}&amp;u={u}">{}</a>"#, mb.id, lang.t(label)))
                .unwrap_or_default()
        };
        let steps = format!("{}{}", step("prev", "Newer", newer), step("next", "Older", older));
        let resume = if mb.special_use == Some(SpecialUse::Drafts) {
            format!(r#" · <a href="/mail/compose?mode=draft&amp;{here}">{}</a>"#, t("Continue writing"))
        } else {
            String::new()
        };
        let main = format!(
            r#"<article><p><a id="back" href="/mail/?f={id}">{}</a> · <a id="reply" href="/mail/compose?mode=reply&amp;{here}">{}</a> · <a id="all" href="/mail/compose?mode=all&amp;{here}">{}</a> · <a id="forward" href="/mail/compose?mode=forward&amp;{here}">{}</a> · <a href="/mail/compose?mode=attach&amp;{here}">{}</a> · <a href="/mail/raw?{here}">{}</a>{resume}{steps}</p>{tools}<h1>{}</h1>{verdict}{head}{choices}{}{attachments}</article>"#,
            escape(&lang.f("Back to {}", &mb.label)),
            t("Reply"),
            t("Reply all"),
            t("Forward"),
            t("Forward as attachment"),
            t("View source"),
            escape(if subject.trim().is_empty() { t("(no subject)") } else { &subject }),
            shown.html,
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
    /// Conversations (RFC 5256 REFERENCES), the newest active first.
    Threads,
}

impl Order {
    fn from(name: Option<&str>) -> Order {
        match name {
            Some("date") => Order::Date,
            Some("from") => Order::From,
            Some("subject") => Order::Subject,
            Some("size") => Order::Size,
            Some("threads") => Order::Threads,
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
            Order::Threads => Some("threads"),
        }
    }

    /// The orders the index serves a page in directly.
    fn page_order(self) -> Option<agora_store::PageOrder> {
        use agora_store::PageOrder;
        match self {
            Order::Arrival => Some(PageOrder::Arrival),
            Order::Date => Some(PageOrder::Received),
            Order::Size => Some(PageOrder::Size),
            Order::From | Order::Subject | Order::Threads => None,
        }
    }

    /// The sort key and whether it runs backwards (the list is read from its end).
    fn key(self) -> Option<(agora_store::sort::SortKey, bool)> {
        use agora_store::sort::SortKey;
        match self {
            Order::Arrival | Order::Threads => None,
            Order::Date => Some((SortKey::Arrival, false)),
            Order::From => Some((SortKey::DisplayFrom, true)),
            Order::Subject => Some((SortKey::Subject, true)),
            Order::Size => Some((SortKey::Size, false)),
        }
    }
}

/// What a search asks for: words in a field (or anywhere), a date range, attachments.
#[derive(Debug, Default)]
struct Filter {
    words: String,
    /// `text` (anywhere), `from`, `to`, `subject` or `body`.
    within: String,
    since: Option<agora_store::search::Date>,
    before: Option<agora_store::search::Date>,
    attachments: bool,
}

impl Filter {
    fn from(req: &WebRequest) -> Filter {
        let within = req.query_field("in").unwrap_or_default();
        let date = |n: &str| req.query_field(n).as_deref().and_then(parse_date);
        Filter {
            words: req.query_field("q").unwrap_or_default().trim().chars().take(200).collect(),
            within: if ["from", "to", "subject", "body"].contains(&within.as_str()) { within } else { "text".into() },
            since: date("since"),
            before: date("before"),
            attachments: req.query_field("att").as_deref() == Some("1"),
        }
    }

    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.since.is_none() && self.before.is_none() && !self.attachments
    }

    /// The search key, as IMAP would have it.
    fn key(&self) -> agora_store::search::SearchKey {
        use agora_store::search::SearchKey;
        let mut keys = Vec::new();
        if !self.words.is_empty() {
            let w = self.words.clone();
            keys.push(match self.within.as_str() {
                "from" => SearchKey::From(w),
                "to" => SearchKey::Or(Box::new(SearchKey::To(w.clone())), Box::new(SearchKey::Cc(w))),
                "subject" => SearchKey::Subject(w),
                "body" => SearchKey::Body(w),
                _ => SearchKey::Text(w),
            });
        }
        if let Some(d) = self.since {
            keys.push(SearchKey::Since(d));
        }
        if let Some(d) = self.before {
            keys.push(SearchKey::Before(d));
        }
        if keys.is_empty() { SearchKey::All } else { SearchKey::And(keys) }
    }

    /// The filter as query parameters to carry to other pages (`&amp;`-joined).
    fn query(&self) -> String {
        let mut out = String::new();
        if !self.words.is_empty() {
            let _ = write!(out, "&amp;q={}&amp;in={}", url_encode(&self.words), self.within);
        }
        for (name, d) in [("since", self.since), ("before", self.before)] {
            if let Some(d) = d {
                let _ = write!(out, "&amp;{name}={}", show_date(d));
            }
        }
        if self.attachments {
            out.push_str("&amp;att=1");
        }
        out
    }

    fn form(&self, folder: i64, lang: crate::i18n::Lang) -> String {
        let t = |en| lang.t(en);
        let options: String =
            [("text", "Anywhere"), ("from", "From"), ("to", "To or Cc"), ("subject", "Subject"), ("body", "Body")]
                .iter()
                .map(|(v, label)| {
                    let chosen = if *v == self.within { " selected" } else { "" };
                    format!(r#"<option value="{v}"{chosen}>{}</option>"#, t(label))
                })
                .collect();
        let date = |d: Option<agora_store::search::Date>| d.map(show_date).unwrap_or_default();
        format!(
            r#"<form class="search" method="get" action="/mail/" role="search"><input type="hidden" name="f" value="{folder}"><label for="q" class="hidden">{search}</label><input id="q" name="q" type="search" value="{}" placeholder="{}"><label for="in" class="hidden">{}</label><select id="in" name="in">{options}</select><label for="since">{}</label><input id="since" name="since" type="date" value="{}"><label for="before">{}</label><input id="before" name="before" type="date" value="{}"><label><input type="checkbox" name="att" value="1"{}> {}</label><button type="submit">{search}</button></form>"#,
            escape(&self.words),
            t("Search this folder"),
            t("Where"),
            t("From"),
            date(self.since),
            t("before"),
            date(self.before),
            if self.attachments { " checked" } else { "" },
            t("Has attachments"),
            search = t("Search"),
        )
    }
}

/// A day (`2026-12-01`, as a date field sends it) as its first second, UTC.
pub(crate) fn parse_day(s: &str) -> Option<i64> {
    let d = parse_date(s)?;
    Some(agora_store::time::days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day)) * 86_400)
}

/// `2026-12-01`, as a date field sends it.
fn parse_date(s: &str) -> Option<agora_store::search::Date> {
    let mut it = s.trim().splitn(3, '-');
    let year: u16 = it.next()?.parse().ok()?;
    let month: u8 = it.next()?.parse().ok()?;
    let day: u8 = it.next()?.parse().ok()?;
    ((1..=12).contains(&month) && (1..=31).contains(&day) && year >= 1900).then_some(agora_store::search::Date {
        year,
        month,
        day,
    })
}

fn show_date(d: agora_store::search::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// Whether any leaf is an attachment (or a non-text part that is not inline text).
fn has_attachment(root: &Part) -> bool {
    let mut leaves = Vec::new();
    crate::reading::collect_leaves(root, &mut leaves);
    leaves.iter().any(|p| crate::reading::is_attachment(p) || (p.media_type != "text" && p.media_type != "multipart"))
}

/// The form that acts on messages: on one (`uid`, the message page) or on those ticked
/// in the list that follows it (the caller closes the form after the list).
fn action_form(user: &User, boxes: &[Folder], mb: &Folder, uid: Option<u32>, flags: Flags) -> String {
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
        ("junk", "Junk", !mb.shared && mb.special_use != Some(SpecialUse::Junk)),
        ("notjunk", "Not junk", !mb.shared && mb.special_use == Some(SpecialUse::Junk)),
    ] {
        let right = match op {
            "read" | "unread" => mb.may('s'),
            "flag" | "unflag" => mb.may('w'),
            _ => mb.may('t') && mb.may('e'),
        };
        if shown && right {
            let _ = write!(f, r#"<button type="submit" name="op" value="{op}">{}</button>"#, user.lang.t(label));
        }
    }
    let targets: String = boxes
        .iter()
        .filter(|b| b.id != mb.id && b.may('i'))
        .map(|b| format!(r#"<option value="{}">{}</option>"#, b.id, escape(&b.label)))
        .collect();
    if !targets.is_empty() && mb.may('t') && mb.may('e') {
        let _ = write!(
            f,
            r#"<label for="to" class="hidden">{}</label><select id="to" name="to">{targets}</select><button type="submit" name="op" value="move">{}</button>"#,
            user.lang.t("Move to"),
            user.lang.t("Move")
        );
    }
    f.push_str("</form>");
    f
}

/// Percent-encoded but for RFC 3986's unreserved characters: query-string values, and
/// RFC 5987/2231 parameter values (file names).
pub(crate) fn url_encode(s: &str) -> String {
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
        assert_eq!(crate::i18n::Lang::En.when(0), "1970-01-01 00:00");
    }
}
