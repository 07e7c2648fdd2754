//! Writing mail: a new message, a reply (to the sender or to all), a forward (the
//! original quoted with its attachments, or the whole message attached), a draft
//! resumed; files uploaded; drafts saved to Drafts (by the button, and by the page
//! every half minute). Sent through the mail core's intake exactly as submission sends
//! (the account as sender, DKIM signing, local delivery, the queue, tracking), then a
//! copy kept in Sent and the draft removed.

use std::fmt::Write;
use std::io::Write as _;

use base64::Engine;

use agora_directory::Recipient;
use agora_mail::{Intake, Origin, Policy, Rcpt};
use agora_store::{Delivery, DeliveryTarget, FlagOp, Flags, SpecialUse, address, text};

use crate::pages::{escape, layout};
use crate::reading::readable_part;
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Most recipients of one message written here.
const MAX_RECIPIENTS: usize = 100;
/// Largest text of one message written here, bytes.
pub(crate) const MAX_TEXT: usize = 48 * 1024;

/// What the form holds.
#[derive(Default)]
struct Draft {
    to: String,
    cc: String,
    bcc: String,
    subject: String,
    body: String,
    in_reply_to: String,
    references: String,
    /// Parts of the account's own messages to send along: `FOLDER.UID.PART`, or
    /// `FOLDER.UID.m` for a whole message attached.
    keep: Vec<String>,
    /// The draft this form continues (its UID in Drafts).
    draft: Option<u32>,
    /// The message replied to or forwarded (`FOLDER.UID`), marked so once sent.
    original: String,
    mode: String,
}

/// A file going out with a message.
struct Attachment {
    name: String,
    content_type: String,
    data: Vec<u8>,
    /// A whole message (message/rfc822), sent as it is.
    message: bool,
}

impl Webmail {
    /// GET /mail/compose, optionally `reply`, `all`, `forward`, `attach` (forward as
    /// an attachment) or `draft` (resume) of `f`/`u`.
    pub(crate) async fn compose_page(&self, user: &User, req: &WebRequest) -> WebResponse {
        let mut draft = Draft { mode: req.query_field("mode").unwrap_or_default(), ..Draft::default() };
        let signature = self.signature(user).await;
        let signed = |text: String| {
            if signature.trim().is_empty() { text } else { format!("\n\n-- \n{signature}{text}") }
        };
        if let Some(crate::actions::Opened { mb, meta, body, .. }) = self.own_message(user, req).await {
            let e = &meta.summary.envelope;
            let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
            let from = e.reply_to.as_deref().or(e.from.as_deref()).unwrap_or("");
            let original = readable_part(&meta.summary.root).map(|p| text::part_text(&body, p)).unwrap_or_default();
            let sender = e.from.as_deref().map(address::first_label).unwrap_or_default();
            let here = format!("{}.{}", mb.id, meta.uid);
            let attachments = |d: &mut Draft| d.keep.extend(attachment_refs(&here, &meta.summary.root, &body));
            match draft.mode.as_str() {
                "reply" | "all" => {
                    draft.to = addresses(from);
                    if draft.mode == "all" {
                        let me = user.account.login.to_lowercase();
                        let others: Vec<String> = [e.to.as_deref(), e.cc.as_deref()]
                            .into_iter()
                            .flatten()
                            .flat_map(address::display)
                            .filter(|a| !a.address.is_empty() && a.address.to_lowercase() != me)
                            .map(|a| a.address)
                            .collect();
                        draft.cc = others.join(", ");
                    }
                    draft.subject = prefixed("Re: ", &subject);
                    draft.in_reply_to = e.message_id.clone().unwrap_or_default();
                    draft.references =
                        format!("{} {}", e.references.as_deref().unwrap_or(""), draft.in_reply_to).trim().to_string();
                    let quoted: String = original.lines().map(|l| format!("> {l}\n")).collect();
                    draft.body = signed(format!("\n\n{sender} wrote:\n{quoted}"));
                    draft.original = here;
                }
                "forward" => {
                    draft.subject = prefixed("Fwd: ", &subject);
                    draft.body = signed(format!(
                        "\n\n-------- Forwarded message --------\nFrom: {sender}\nDate: {}\nSubject: {subject}\n\n{original}",
                        e.date.as_deref().unwrap_or("")
                    ));
                    attachments(&mut draft);
                    draft.original = here;
                }
                "attach" => {
                    draft.subject = prefixed("Fwd: ", &subject);
                    draft.body = signed(String::new());
                    draft.keep.push(format!("{here}.m"));
                    draft.original = here;
                }
                "draft" if mb.special_use == Some(SpecialUse::Drafts) => {
                    draft.to = e.to.as_deref().map(header_addresses).unwrap_or_default();
                    draft.cc = e.cc.as_deref().map(header_addresses).unwrap_or_default();
                    draft.bcc = e.bcc.as_deref().map(header_addresses).unwrap_or_default();
                    draft.subject = subject;
                    draft.in_reply_to = e.in_reply_to.clone().unwrap_or_default();
                    draft.references = e.references.clone().unwrap_or_default();
                    draft.body = original.replace("\r\n", "\n");
                    attachments(&mut draft);
                    draft.draft = Some(meta.uid);
                }
                _ => draft.body = signed(String::new()),
            }
        } else {
            draft.body = signed(String::new());
        }
        if let Some(to) = req.query_field("to") {
            draft.to = to;
        }
        WebResponse::html(200, self.form(user, &draft, None).await)
    }

    /// POST /mail/send: `op=draft` saves the form to Drafts; anything else sends it.
    pub(crate) async fn send(&self, user: &User, req: &WebRequest) -> WebResponse {
        let field = |n: &str| req.form_field(n).unwrap_or_default();
        let draft = Draft {
            to: field("to"),
            cc: field("cc"),
            bcc: field("bcc"),
            subject: field("subject").replace(['\r', '\n'], " "),
            body: field("body"),
            in_reply_to: field("in_reply_to"),
            references: field("references"),
            keep: req.form_fields("keep").into_iter().take(crate::MAX_FILES).collect(),
            draft: req.form_field("draft").and_then(|d| d.parse().ok()),
            original: field("original"),
            mode: field("mode"),
        };
        let saving = req.form_field("op").as_deref() == Some("draft");
        if draft.body.len() > MAX_TEXT {
            return self.refuse(user, &draft, "The message is too long.").await;
        }
        // Attachments: what was uploaded, and what the form carried over.
        let mut files: Vec<Attachment> = req
            .form()
            .files
            .iter()
            .map(|f| Attachment {
                name: if f.name.trim().is_empty() { "attachment".into() } else { f.name.clone() },
                content_type: media_type(&f.content_type),
                data: f.data.to_vec(),
                message: false,
            })
            .collect();
        for r in &draft.keep {
            match self.carried(user, r).await {
                Some(a) => files.push(a),
                None => return self.refuse(user, &draft, "An attachment is no longer there.").await,
            }
        }
        let total: usize = files.iter().map(|f| f.data.len()).sum();
        if total > self.attachment_limit() {
            return self.refuse(user, &draft, "The attachments are too large together.").await;
        }
        if saving {
            return self.save_draft(user, req, draft, &files).await;
        }
        let mut recipients: Vec<String> = Vec::new();
        for value in [&draft.to, &draft.cc, &draft.bcc] {
            for a in address::parse_addresses(value) {
                let address::Address::Mailbox { mailbox: Some(m), host, .. } = a else { continue };
                match host {
                    Some(h) if !m.is_empty() && h.contains('.') => {
                        let addr = format!("{m}@{h}");
                        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&addr)) {
                            recipients.push(addr);
                        }
                    }
                    _ => return self.refuse(user, &draft, &format!("\"{m}\" is not a complete address.")).await,
                }
            }
        }
        if recipients.is_empty() {
            return self.refuse(user, &draft, "Say who the message is for.").await;
        }
        if recipients.len() > MAX_RECIPIENTS {
            return self.refuse(user, &draft, "Too many recipients.").await;
        }
        let mut rcpts = Vec::new();
        for r in &recipients {
            match self.dir.resolve(r).await {
                Ok(Recipient::Local(res)) if res.folder.is_none() => rcpts.push(Rcpt {
                    address: r.clone(),
                    accounts: res.accounts.iter().map(|a| a.id).collect(),
                    external: res.external,
                    ..Rcpt::default()
                }),
                Ok(Recipient::Local(_)) => {
                    return self
                        .refuse(user, &draft, &format!("{r} is a public folder: post to it by mail client."))
                        .await;
                }
                Ok(Recipient::Unknown) => {
                    return self.refuse(user, &draft, &format!("{r}: there is no such address here.")).await;
                }
                Ok(Recipient::Remote) => {
                    rcpts.push(Rcpt { address: r.clone(), external: vec![r.clone()], ..Rcpt::default() })
                }
                Err(e) => {
                    tracing::warn!("webmail: resolving {r}: {e}");
                    return self.refuse(user, &draft, "Addresses cannot be checked now; please try again.").await;
                }
            }
        }
        let now = agora_store::now();
        // Bcc is never written into what recipients get; the copy in Sent keeps it.
        let id = message_id(&self.hostname);
        let message = build(user, &draft, &files, now, &id, false);
        if message.len() > self.max_message_size {
            return self.refuse(user, &draft, "The message is too large to send.").await;
        }
        let copy = build(user, &draft, &files, now, &id, true);
        let id = agora_mail::queue_id();
        let peer = req.peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let intake = Intake {
            id: id.clone(),
            received: now,
            sender: user.account.login.clone(),
            recipients: rcpts,
            ret: None,
            envid: None,
            origin: Origin {
                ip: peer,
                helo: "webmail".into(),
                authenticated_as: Some(user.account.login.clone()),
                trusted: false,
                tls: true,
            },
            trace: format!(
                "Received: from webmail ([{peer}])\r\n\tby {} (Agora) with HTTPS id {id};\r\n\t{}\r\n",
                self.hostname,
                agora_store::time::rfc5322_date(now)
            ),
            body: message,
            policy: Policy {
                dmarc_reject: true,
                dkim_sign: true,
                arc_seal: false,
                check_budget: std::time::Duration::from_secs(5),
            },
        };
        if let Err(e) = self.mail.accept(intake).await {
            tracing::warn!("webmail: sending for {}: {e}", user.account.login);
            return self.refuse(user, &draft, "The message could not be sent; please try again.").await;
        }
        tracing::info!("webmail: {} sent {id} to {} recipients", user.account.login, recipients.len());
        self.keep_in(user, SpecialUse::Sent, copy, Flags::SEEN, now).await;
        self.after_sending(user, &draft).await;
        WebResponse::html(
            200,
            layout(
                user.lang.t("Sent"),
                Some(user),
                &format!(
                    r#"<h1>{}</h1><p role="status">{}</p><p><a href="/mail/">{}</a></p>"#,
                    user.lang.t("Sent"),
                    user.lang.t("Your message is on its way."),
                    user.lang.t("Back to the inbox")
                ),
            ),
        )
    }

    /// The draft sent is removed; the original is marked answered or forwarded.
    async fn after_sending(&self, user: &User, draft: &Draft) {
        if let Some(uid) = draft.draft
            && let Some(drafts) = self.special(user, SpecialUse::Drafts).await
        {
            let _ = self.store.expunge(drafts.id, &[uid]).await;
        }
        let mut it = draft.original.splitn(2, '.');
        if let (Some(f), Some(u)) = (it.next(), it.next())
            && let (Some((_, mb)), Ok(uid)) = (self.folder(user, Some(f.to_string())).await, u.parse::<u32>())
            && mb.may('w')
        {
            let (flags, keywords) = match draft.mode.as_str() {
                "reply" | "all" => (Flags::ANSWERED, Vec::new()),
                _ => (Flags::default(), vec!["$Forwarded".to_string()]),
            };
            let _ = self.store.store_flags(mb.id, &[uid], FlagOp::Add, flags, &keywords, None).await;
        }
    }

    /// Saves the form to Drafts (replacing the draft it continues) and shows it again,
    /// now carrying the saved draft's attachments. The page's autosave reads the same
    /// answer.
    async fn save_draft(&self, user: &User, req: &WebRequest, mut draft: Draft, files: &[Attachment]) -> WebResponse {
        let now = agora_store::now();
        let message = build(user, &draft, files, now, &message_id(&self.hostname), true);
        let Some(drafts) = self.special(user, SpecialUse::Drafts).await else {
            return self.refuse(user, &draft, "There is no Drafts folder.").await;
        };
        let Some(uid) = self.keep_in(user, SpecialUse::Drafts, message, Flags::SEEN.union(Flags::DRAFT), now).await
        else {
            return self.refuse(user, &draft, "The draft could not be saved; please try again.").await;
        };
        if let Some(old) = draft.draft.replace(uid) {
            let _ = self.store.expunge(drafts.id, &[old]).await;
        }
        // What the form carried now lives in the new draft.
        draft.keep.clear();
        if let Ok(Some(meta)) = self.store.messages(drafts.id, uid..=uid).await.map(|m| m.into_iter().next())
            && let Ok(body) = self.store.read_blob(&meta.blob).await
        {
            draft.keep = attachment_refs(&format!("{}.{uid}", drafts.id), &meta.summary.root, &body);
        }
        let _ = req;
        let said = user.lang.f("Draft saved at {}.", &agora_store::time::rfc5322_date(now)[17..22]);
        WebResponse::html(200, self.form_with(user, &draft, None, Some(&said)).await)
    }

    /// The account's folder of a special use.
    async fn special(&self, user: &User, use_: SpecialUse) -> Option<agora_store::Mailbox> {
        let boxes = self.store.mailboxes(user.account.id).await.ok()?;
        boxes.into_iter().find(|m| m.special_use == Some(use_))
    }

    /// A part (or a whole message) of the account's own mail, named `FOLDER.UID.PART`.
    async fn carried(&self, user: &User, r: &str) -> Option<Attachment> {
        let mut it = r.splitn(3, '.');
        let (f, u, p) = (it.next()?, it.next()?, it.next()?);
        let query = format!("f={f}&u={u}");
        let opened = self.own_message(user, &WebRequest { query, ..WebRequest::default() }).await?;
        if p == "m" {
            let subject = opened.meta.summary.envelope.subject.as_deref().map(text::decode_words).unwrap_or_default();
            let name = if subject.trim().is_empty() { "message".to_string() } else { subject };
            return Some(Attachment {
                name: format!("{name}.eml"),
                content_type: "message/rfc822".into(),
                data: opened.body,
                message: true,
            });
        }
        let nodes = crate::reading::nodes(&opened.meta.summary.root);
        let part = nodes.get(p.parse::<usize>().ok()?)?;
        let raw = opened.body.get(part.body_start as usize..(part.end as usize).min(opened.body.len()))?;
        let rfc822 = part.media_type == "message" && part.media_subtype == "rfc822";
        let data = if rfc822 { raw.to_vec() } else { text::transfer_decode(part.encoding.as_deref(), raw)? };
        Some(Attachment {
            name: crate::pages::part_name(part),
            content_type: format!("{}/{}", part.media_type, part.media_subtype),
            data,
            message: rfc822,
        })
    }

    /// Most bytes of attachments one message may carry: what fits the server's message
    /// size once base64 has grown them by a third.
    pub(crate) fn attachment_limit(&self) -> usize {
        (self.max_message_size / 4 * 3).saturating_sub(MAX_TEXT * 2)
    }

    async fn refuse(&self, user: &User, draft: &Draft, why: &str) -> WebResponse {
        WebResponse::html(400, self.form(user, draft, Some(why)).await)
    }

    /// A copy in the account's folder of that use (Sent, Drafts); its UID.
    async fn keep_in(&self, user: &User, use_: SpecialUse, message: Vec<u8>, flags: Flags, now: i64) -> Option<u32> {
        let folder = self.special(user, use_).await?;
        let body = self.store.stage(message).await.ok()?;
        let copy = Delivery {
            body,
            internal_date: now,
            envelope: None,
            flags,
            keywords: Vec::new(),
            targets: vec![DeliveryTarget { account: user.account.id, mailbox: folder.name.clone() }],
            relay: Vec::new(),
            enforce_quota: false,
        };
        match self.store.deliver(copy).await {
            Ok(done) => done.first().map(|d| d.uid),
            Err(e) => {
                tracing::warn!("webmail: no copy in {} for {}: {e}", folder.name, user.account.login);
                None
            }
        }
    }

    async fn form(&self, user: &User, d: &Draft, error: Option<&str>) -> String {
        self.form_with(user, d, error, None).await
    }

    async fn form_with(&self, user: &User, d: &Draft, error: Option<&str>, said: Option<&str>) -> String {
        let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e))).unwrap_or_default();
        let said = said.map(escape).unwrap_or_default();
        let mut kept = String::new();
        for r in &d.keep {
            let name = match self.carried(user, r).await {
                Some(a) => format!("{} ({})", a.name, crate::pages::size(a.data.len() as u64)),
                None => continue,
            };
            let _ = write!(
                kept,
                r#"<li><label><input type="checkbox" name="keep" value="{}" checked> {}</label></li>"#,
                escape(r),
                escape(&name)
            );
        }
        let limit = crate::pages::size(self.attachment_limit() as u64);
        let t = |en| user.lang.t(en);
        let main = format!(
            r#"<form class="compose" method="post" action="/mail/send" enctype="multipart/form-data"><h1>{}</h1>{error}<p class="saved" role="status" aria-live="polite">{said}</p><input type="hidden" name="csrf" value="{}"><input type="hidden" name="in_reply_to" value="{}"><input type="hidden" name="references" value="{}"><input type="hidden" name="draft" value="{}"><input type="hidden" name="original" value="{}"><input type="hidden" name="mode" value="{}"><label for="to">{}</label><input id="to" name="to" value="{}" required autocomplete="off" list="people"><label for="cc">Cc</label><input id="cc" name="cc" value="{}" autocomplete="off" list="people"><label for="bcc">Bcc</label><input id="bcc" name="bcc" value="{}" autocomplete="off" list="people"><datalist id="people"></datalist><label for="subject">{}</label><input id="subject" name="subject" value="{}"><label for="body">{}</label><textarea id="body" name="body" rows="16" maxlength="{MAX_TEXT}">{}</textarea><ul id="kept" class="attachments">{kept}</ul><label for="file">{}</label><input id="file" name="file" type="file" multiple data-limit="{}"><div class="buttons"><button type="submit" name="op" value="send">{}</button><button type="submit" name="op" value="draft" formnovalidate>{}</button></div></form>"#,
            t("New message"),
            escape(&user.session.csrf),
            escape(&d.in_reply_to),
            escape(&d.references),
            d.draft.map(|u| u.to_string()).unwrap_or_default(),
            escape(&d.original),
            escape(&d.mode),
            t("To"),
            escape(&d.to),
            escape(&d.cc),
            escape(&d.bcc),
            t("Subject"),
            escape(&d.subject),
            t("Message"),
            escape(&d.body),
            user.lang.f("Attach files (up to {} in total)", &limit),
            self.attachment_limit(),
            t("Send"),
            t("Save draft"),
        );
        layout(t("New message"), Some(user), &main)
    }

    /// GET /mail/people?q=: up to ten addresses from the directory (the same accounts,
    /// groups and contacts LDAP serves) whose address or name starts a word with `q`,
    /// as JSON for the address fields' completion.
    pub(crate) async fn people(&self, req: &WebRequest) -> WebResponse {
        let q = req.query_field("q").unwrap_or_default().trim().to_lowercase();
        let mut found: Vec<String> = Vec::new();
        if q.chars().count() >= 2 {
            let hit = |name: &str, addr: &str| {
                addr.to_lowercase().starts_with(&q) || name.to_lowercase().split_whitespace().any(|w| w.starts_with(&q))
            };
            let mut add = |name: &str, addr: &str| {
                if found.len() < 10 && !addr.is_empty() && hit(name, addr) {
                    found.push(if name.trim().is_empty() {
                        addr.to_string()
                    } else {
                        format!("{} <{addr}>", phrase(name.trim()))
                    });
                }
            };
            // Entries hidden from address lists stay hidden here, as over LDAP.
            for a in self.store.accounts(None).await.unwrap_or_default().iter().filter(|a| !a.profile.hidden) {
                add(&a.display_name, &a.login);
            }
            for g in self.store.groups().await.unwrap_or_default().iter().filter(|g| !g.profile.hidden) {
                add(&g.display_name, &g.address);
            }
            for c in self.store.contacts(None).await.unwrap_or_default().iter().filter(|c| !c.profile.hidden) {
                add(&c.display_name, &c.address);
            }
        }
        WebResponse {
            stream: None,
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes::Bytes::from(serde_json::to_vec(&found).unwrap_or_default()),
        }
    }
}

/// The attachments of a message (`FOLDER.UID`) as the form carries them along.
fn attachment_refs(message: &str, root: &agora_store::Part, body: &[u8]) -> Vec<String> {
    let viewing = crate::reading::Viewing {
        body,
        lang: crate::i18n::Lang::En,
        as_text: true,
        images: false,
        link: String::new(),
    };
    crate::reading::show(root, &viewing).attachments.iter().map(|a| format!("{message}.{}", a.node)).collect()
}

/// A media type as a file's upload gave it, when it is one; else octet-stream.
fn media_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match t.split_once('/') {
        Some((a, b)) if token(a) && token(b) && a != "multipart" && a != "message" => t,
        _ => "application/octet-stream".into(),
    }
}

/// The addresses of a header value, as a person writes them.
fn addresses(value: &str) -> String {
    address::display(value)
        .into_iter()
        .filter(|a| !a.address.is_empty())
        .map(|a| a.address)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Re: ` or `Fwd: ` unless the subject has it already.
fn prefixed(prefix: &str, subject: &str) -> String {
    if subject.to_lowercase().starts_with(&prefix.to_lowercase()) {
        subject.to_string()
    } else {
        format!("{prefix}{subject}")
    }
}

/// A Message-ID of this host.
fn message_id(hostname: &str) -> String {
    let mut rnd = [0u8; 12];
    let _ = getrandom::fill(&mut rnd);
    let token = agora_store::blob::hex(&rnd);
    format!("<{token}@{hostname}>")
}

/// The message: From the account (its display name encoded where needed), the
/// recipients as typed (Bcc only in the sender's own copies), the Message-ID given, UTF-8
/// text in quoted-printable; with attachments, multipart/mixed with each in base64
/// (attached messages as they are).
fn build(user: &User, d: &Draft, files: &[Attachment], now: i64, id: &str, own_copy: bool) -> Vec<u8> {
    let mut m = String::new();
    let name = user.account.display_name.trim();
    let from =
        if name.is_empty() { user.account.login.clone() } else { format!("{} <{}>", phrase(name), user.account.login) };
    let _ = write!(m, "Date: {}\r\nFrom: {from}\r\n", agora_store::time::rfc5322_date(now));
    for (field, value, shown) in [("To", &d.to, true), ("Cc", &d.cc, true), ("Bcc", &d.bcc, own_copy)] {
        let list = header_addresses(value);
        if shown && !list.is_empty() {
            let _ = write!(m, "{field}: {list}\r\n");
        }
    }
    if !d.subject.trim().is_empty() {
        let _ = write!(m, "Subject: {}\r\n", text::encode_words(d.subject.trim()));
    }
    let _ = write!(m, "Message-ID: {id}\r\n");
    let safe_id = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    if !d.in_reply_to.trim().is_empty() {
        let _ = write!(m, "In-Reply-To: {}\r\n", safe_id(d.in_reply_to.trim()));
    }
    if !d.references.trim().is_empty() {
        let _ = write!(m, "References: {}\r\n", safe_id(d.references.trim()));
    }
    m.push_str("MIME-Version: 1.0\r\n");
    let text_head = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
    let body_qp = text::quoted_printable(&d.body.replace("\r\n", "\n"));
    if files.is_empty() {
        m.push_str(text_head);
        m.push_str(&body_qp);
        return m.into_bytes();
    }
    let boundary = format!("=_agora_{}", &id[1..id.find('@').unwrap_or(13).min(25)]);
    let _ = write!(
        m,
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a message in MIME format.\r\n"
    );
    let _ = write!(m, "--{boundary}\r\n{text_head}{body_qp}");
    let mut out = m.into_bytes();
    for f in files {
        let (type_name, name) = file_name_params(&f.name);
        if f.message {
            let eight_bit = f.data.iter().any(|&b| b >= 0x80);
            let _ = write!(
                out,
                "--{boundary}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; {name}\r\n{}\r\n",
                if eight_bit { "Content-Transfer-Encoding: 8bit\r\n" } else { "" }
            );
            out.extend_from_slice(&f.data);
            if !f.data.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let _ = write!(
            out,
            "--{boundary}\r\nContent-Type: {}; {type_name}\r\nContent-Disposition: attachment; {name}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            f.content_type
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(&f.data);
        for line in encoded.as_bytes().chunks(76) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    let _ = write!(out, "--{boundary}--\r\n");
    out
}

/// A file's name as MIME parameters: `name` for the type (RFC 2047 words where it is
/// not ASCII, which Outlook reads) and `filename` for the disposition (RFC 2231, which
/// the standards and every other client read).
fn file_name_params(name: &str) -> (String, String) {
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    if name.is_ascii() {
        return (format!("name={}", quoted(&name)), format!("filename={}", quoted(&name)));
    }
    let pct = crate::pages::url_encode(&name);
    (format!("name={}", quoted(&text::encode_words(&name).replace("\r\n ", " "))), format!("filename*=utf-8''{pct}"))
}

/// A display name as a phrase: quoted when it has specials, RFC 2047 when not ASCII;
/// control characters (a line break would start a header of its own) are dropped.
fn phrase(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.as_str();
    if !name.is_ascii() {
        return text::encode_words(name);
    }
    if name.chars().all(|c| c.is_ascii_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c)) {
        return name.to_string();
    }
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The addresses typed in a field, written back with their names made safe.
fn header_addresses(value: &str) -> String {
    address::display(value)
        .into_iter()
        .filter(|a| !a.address.is_empty())
        .map(|a| match a.name {
            Some(n) => format!("{} <{}>", phrase(&n), a.address),
            None => a.address,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_text_for_the_wire() {
        assert_eq!(text::encode_words("plain"), "plain");
        let w = text::encode_words("Привет, мир");
        assert!(w.starts_with("=?UTF-8?B?") && text::decode_words(&w) == "Привет, мир", "{w}");
        let long = "日本語".repeat(20);
        assert_eq!(text::decode_words(&text::encode_words(&long)), long);
        assert_eq!(phrase("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(phrase("Jane Doe"), "Jane Doe");
        assert_eq!(phrase("Eve\r\nBcc: x@y.z"), "\"EveBcc: x@y.z\"");
        let qp = text::quoted_printable("a=b é \n\n".repeat(30).as_str());
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        let back = text::qp_decode(qp.as_bytes());
        assert_eq!(String::from_utf8(back).unwrap().replace("\r\n", "\n"), format!("{}\n", "a=b é \n\n".repeat(30)));
        assert_eq!(prefixed("Re: ", "re: x"), "re: x");
        assert_eq!(header_addresses("Ann <ann@x.org>, bob@y.org"), "Ann <ann@x.org>, bob@y.org");
    }
}
