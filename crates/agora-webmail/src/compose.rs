//! Writing mail: a new message, a reply (to the sender or to all) or a forward (the
//! original quoted), sent through the mail core's intake exactly as submission sends
//! (the account as sender, DKIM signing, local delivery, the queue, tracking), then a
//! copy kept in Sent.

use std::fmt::Write;

use agora_directory::Recipient;
use agora_mail::{Intake, Origin, Policy, Rcpt};
use agora_store::{Delivery, DeliveryTarget, Flags, SpecialUse, address, text};

use crate::pages::{escape, layout};
use crate::reading::readable_part;
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Most recipients of one message written here.
const MAX_RECIPIENTS: usize = 100;
/// Largest text of one message written here, bytes.
pub(crate) const MAX_TEXT: usize = 48 * 1024;

/// What the form starts with.
#[derive(Default)]
struct Draft {
    to: String,
    cc: String,
    subject: String,
    body: String,
    in_reply_to: String,
    references: String,
}

impl Webmail {
    /// GET /mail/compose, optionally `reply`, `all` or `forward` of `f`/`u`.
    pub(crate) async fn compose_page(&self, user: &User, req: &WebRequest) -> WebResponse {
        let mut draft = Draft::default();
        let mode = req.query_field("mode").unwrap_or_default();
        if let Some(crate::actions::Opened { meta, body, .. }) = self.own_message(user, req).await {
            let e = &meta.summary.envelope;
            let subject = e.subject.as_deref().map(text::decode_words).unwrap_or_default();
            let from = e.reply_to.as_deref().or(e.from.as_deref()).unwrap_or("");
            let original = readable_part(&meta.summary.root).map(|p| text::part_text(&body, p)).unwrap_or_default();
            let sender = e.from.as_deref().map(address::first_label).unwrap_or_default();
            match mode.as_str() {
                "reply" | "all" => {
                    draft.to = addresses(from);
                    if mode == "all" {
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
                    draft.body = format!("\n\n{sender} wrote:\n{quoted}");
                }
                "forward" => {
                    draft.subject = prefixed("Fwd: ", &subject);
                    draft.body = format!(
                        "\n\n-------- Forwarded message --------\nFrom: {sender}\nDate: {}\nSubject: {subject}\n\n{original}",
                        e.date.as_deref().unwrap_or("")
                    );
                }
                _ => {}
            }
        }
        if let Some(to) = req.query_field("to") {
            draft.to = to;
        }
        WebResponse::html(200, form(user, &draft, None))
    }

    /// POST /mail/send.
    pub(crate) async fn send(&self, user: &User, req: &WebRequest) -> WebResponse {
        let field = |n: &str| req.form_field(n).unwrap_or_default();
        let draft = Draft {
            to: field("to"),
            cc: field("cc"),
            subject: field("subject").replace(['\r', '\n'], " "),
            body: field("body"),
            in_reply_to: field("in_reply_to"),
            references: field("references"),
        };
        let refuse = |why: &str| WebResponse::html(400, form(user, &draft, Some(why)));
        if draft.body.len() > MAX_TEXT {
            return refuse("The message is too long.");
        }
        let mut recipients: Vec<String> = Vec::new();
        for value in [&draft.to, &draft.cc] {
            for a in address::parse_addresses(value) {
                let address::Address::Mailbox { mailbox: Some(m), host, .. } = a else { continue };
                match host {
                    Some(h) if !m.is_empty() && h.contains('.') => {
                        let addr = format!("{m}@{h}");
                        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&addr)) {
                            recipients.push(addr);
                        }
                    }
                    _ => return refuse(&format!("\"{m}\" is not a complete address.")),
                }
            }
        }
        if recipients.is_empty() {
            return refuse("Say who the message is for.");
        }
        if recipients.len() > MAX_RECIPIENTS {
            return refuse("Too many recipients.");
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
                    return refuse(&format!("{r} is a public folder: post to it by mail client."));
                }
                Ok(Recipient::Unknown) => return refuse(&format!("{r}: there is no such address here.")),
                Ok(Recipient::Remote) => {
                    rcpts.push(Rcpt { address: r.clone(), external: vec![r.clone()], ..Rcpt::default() })
                }
                Err(e) => {
                    tracing::warn!("webmail: resolving {r}: {e}");
                    return refuse("Addresses cannot be checked now; please try again.");
                }
            }
        }
        let now = agora_store::now();
        let message = build(&self.hostname, user, &draft, now);
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
            body: message.clone(),
            policy: Policy {
                dmarc_reject: true,
                dkim_sign: true,
                arc_seal: false,
                check_budget: std::time::Duration::from_secs(5),
            },
        };
        if let Err(e) = self.mail.accept(intake).await {
            tracing::warn!("webmail: sending for {}: {e}", user.account.login);
            return refuse("The message could not be sent; please try again.");
        }
        tracing::info!("webmail: {} sent {id} to {} recipients", user.account.login, recipients.len());
        self.keep_in(user, SpecialUse::Sent, message, now).await;
        WebResponse::html(
            200,
            layout(
                "Sent",
                Some(user),
                r#"<h1>Sent</h1><p role="status">Your message is on its way.</p><p><a href="/mail/">Back to the inbox</a></p>"#,
            ),
        )
    }

    /// A copy in the account's folder of that use (Sent), marked read.
    async fn keep_in(&self, user: &User, use_: SpecialUse, message: Vec<u8>, now: i64) {
        let Ok(boxes) = self.store.mailboxes(user.account.id).await else { return };
        let Some(folder) = boxes.iter().find(|m| m.special_use == Some(use_)) else { return };
        let Ok(body) = self.store.stage(message).await else { return };
        let copy = Delivery {
            body,
            internal_date: now,
            envelope: None,
            flags: Flags::SEEN,
            keywords: Vec::new(),
            targets: vec![DeliveryTarget { account: user.account.id, mailbox: folder.name.clone() }],
            relay: Vec::new(),
            enforce_quota: false,
        };
        if let Err(e) = self.store.deliver(copy).await {
            tracing::warn!("webmail: no copy in {} for {}: {e}", folder.name, user.account.login);
        }
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

fn form(user: &User, d: &Draft, error: Option<&str>) -> String {
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e))).unwrap_or_default();
    let main = format!(
        r#"<form class="compose" method="post" action="/mail/send"><h1>New message</h1>{error}<input type="hidden" name="csrf" value="{}"><input type="hidden" name="in_reply_to" value="{}"><input type="hidden" name="references" value="{}"><label for="to">To</label><input id="to" name="to" value="{}" required autocomplete="email" multiple><label for="cc">Cc</label><input id="cc" name="cc" value="{}" autocomplete="email" multiple><label for="subject">Subject</label><input id="subject" name="subject" value="{}"><label for="body">Message</label><textarea id="body" name="body" rows="16" maxlength="{MAX_TEXT}">{}</textarea><button type="submit">Send</button></form>"#,
        escape(&user.session.csrf),
        escape(&d.in_reply_to),
        escape(&d.references),
        escape(&d.to),
        escape(&d.cc),
        escape(&d.subject),
        escape(&d.body)
    );
    layout("New message", Some(user), &main)
}

/// The message as sent: From the account (its display name encoded where needed), the
/// recipients as typed, a Message-ID of this host, UTF-8 text in quoted-printable.
fn build(hostname: &str, user: &User, d: &Draft, now: i64) -> Vec<u8> {
    let mut m = String::new();
    let name = user.account.display_name.trim();
    let from =
        if name.is_empty() { user.account.login.clone() } else { format!("{} <{}>", phrase(name), user.account.login) };
    let _ = write!(m, "Date: {}\r\nFrom: {from}\r\n", agora_store::time::rfc5322_date(now));
    for (field, value) in [("To", &d.to), ("Cc", &d.cc)] {
        let list = header_addresses(value);
        if !list.is_empty() {
            let _ = write!(m, "{field}: {list}\r\n");
        }
    }
    if !d.subject.trim().is_empty() {
        let _ = write!(m, "Subject: {}\r\n", encode_words(d.subject.trim()));
    }
    let mut rnd = [0u8; 12];
    let _ = getrandom::fill(&mut rnd);
    let token: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let _ = write!(m, "Message-ID: <{token}@{hostname}>\r\n");
    let safe_id = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    if !d.in_reply_to.trim().is_empty() {
        let _ = write!(m, "In-Reply-To: {}\r\n", safe_id(d.in_reply_to.trim()));
    }
    if !d.references.trim().is_empty() {
        let _ = write!(m, "References: {}\r\n", safe_id(d.references.trim()));
    }
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    let text = d.body.replace("\r\n", "\n");
    m.push_str(&quoted_printable(&text));
    m.into_bytes()
}

/// A display name as a phrase: quoted when it has specials, RFC 2047 when not ASCII;
/// control characters (a line break would start a header of its own) are dropped.
fn phrase(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.as_str();
    if !name.is_ascii() {
        return encode_words(name);
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

/// RFC 2047 B words of at most 45 bytes of UTF-8 each (whole characters), folded.
fn encode_words(s: &str) -> String {
    use base64::Engine;
    if s.is_ascii() && !s.contains("=?") {
        return s.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text with `\n` line ends: lines of at most
/// 76 characters, soft breaks, `=` and 8-bit bytes escaped, trailing blanks protected.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let piece = if b == b'=' || b >= 0x80 || (b < 0x20 && b != b'\t') || (last && (b == b' ' || b == b'\t')) {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if col + piece.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            out.push_str(&piece);
            col += piece.len();
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_text_for_the_wire() {
        assert_eq!(encode_words("plain"), "plain");
        let w = encode_words("Привет, мир");
        assert!(w.starts_with("=?UTF-8?B?") && text::decode_words(&w) == "Привет, мир", "{w}");
        let long = "日本語".repeat(20);
        assert_eq!(text::decode_words(&encode_words(&long)), long);
        assert_eq!(phrase("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(phrase("Jane Doe"), "Jane Doe");
        assert_eq!(phrase("Eve\r\nBcc: x@y.z"), "\"EveBcc: x@y.z\"");
        let qp = quoted_printable("a=b é \n\n".repeat(30).as_str());
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        let back = text::qp_decode(qp.as_bytes());
        assert_eq!(String::from_utf8(back).unwrap().replace("\r\n", "\n"), format!("{}\n", "a=b é \n\n".repeat(30)));
        assert_eq!(prefixed("Re: ", "re: x"), "re: x");
        assert_eq!(header_addresses("Ann <ann@x.org>, bob@y.org"), "Ann <ann@x.org>, bob@y.org");
    }
}
