//! A message as a reader sees it: its parts walked as a mail client shows them (one
//! of each alternative, attached messages opened in place, attachments listed), the
//! HTML of a part made safe with its `cid:` images inlined, and this server's
//! Authentication-Results turned into "verified sender" or a warning.

use std::collections::HashMap;
use std::fmt::Write;

use agora_store::{Part, address, text};
use base64::Engine;

use crate::pages::{escape, part_name};

/// Attached messages opened in place this deep; deeper ones are attachments.
const NESTING: usize = 3;
/// Largest image put inline into HTML, and most of them together, bytes.
const INLINE_IMAGE: usize = 2 << 20;
const INLINE_TOTAL: usize = 8 << 20;

/// Every part of a message in pre-order: the numbers links use (`p=`).
pub(crate) fn nodes(root: &Part) -> Vec<&Part> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(p.children.iter().rev());
    }
    out
}

pub(crate) fn is_attachment(p: &Part) -> bool {
    p.disposition.as_ref().is_some_and(|d| d.0 == "attachment")
}

fn is(p: &Part, ty: &str, sub: &str) -> bool {
    p.media_type == ty && p.media_subtype == sub
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

/// An attachment as listed: its part number, name, type and decoded size.
pub(crate) struct Listed {
    pub node: usize,
    pub name: String,
    pub kind: String,
    pub bytes: u64,
}

/// The message body as HTML (text escaped, HTML parts as sandboxed frames, attached
/// messages in place) and the attachments to list.
pub(crate) struct Shown {
    pub html: String,
    pub attachments: Vec<Listed>,
    /// Whether a part is HTML (the reader may switch to text, or allow images).
    pub has_html: bool,
}

/// How the reader asked to see it, and the link to its parts (`f=…&amp;u=…`).
pub(crate) struct Viewing<'a> {
    pub body: &'a [u8],
    pub lang: crate::i18n::Lang,
    pub as_text: bool,
    pub images: bool,
    pub link: String,
}

pub(crate) fn show(root: &Part, v: &Viewing<'_>) -> Shown {
    let all = nodes(root);
    let index = |p: &Part| all.iter().position(|q| std::ptr::eq(*q, p)).unwrap_or(0);
    let mut out = Shown { html: String::new(), attachments: Vec::new(), has_html: false };
    walk(root, 0, v, &index, &mut out);
    out
}

fn walk(p: &Part, depth: usize, v: &Viewing<'_>, index: &dyn Fn(&Part) -> usize, out: &mut Shown) {
    let rfc822 = is(p, "message", "rfc822") || is(p, "message", "global");
    if rfc822 && depth < NESTING && !p.children.is_empty() {
        let inner = &p.children[0];
        let _ = write!(
            out.html,
            r#"<section class="attached" aria-label="{t}"><h2>{t}</h2>"#,
            t = v.lang.t("Attached message")
        );
        if let Some(e) = &p.inner_envelope {
            out.html.push_str(r#"<dl class="headers">"#);
            for (label, value) in [("From", &e.from), ("To", &e.to)] {
                if let Some(value) = value {
                    let _ = write!(out.html, "<dt>{}</dt><dd>{}</dd>", v.lang.t(label), escape(&people(value)));
                }
            }
            if let Some(s) = &e.subject {
                let _ = write!(out.html, "<dt>{}</dt><dd>{}</dd>", v.lang.t("Subject"), escape(&text::decode_words(s)));
            }
            if let Some(d) = &e.date {
                let _ = write!(out.html, "<dt>{}</dt><dd>{}</dd>", v.lang.t("Date"), escape(d));
            }
            out.html.push_str("</dl>");
        }
        walk(inner, depth + 1, v, index, out);
        let _ = write!(
            out.html,
            r#"<p><a href="/mail/part?{}&amp;p={}" download>{}</a></p></section>"#,
            v.link,
            index(p),
            v.lang.t("Save this message")
        );
        return;
    }
    if p.media_type == "multipart" && !p.children.is_empty() {
        match p.media_subtype.as_str() {
            "alternative" => {
                // The richest the reader wants: HTML unless asked for text; else the
                // last part, as RFC 2046 orders them.
                let html = |c: &&Part| is(c, "text", "html") || is(c, "multipart", "related");
                let plain = |c: &&Part| is(c, "text", "plain");
                let pick = if v.as_text {
                    p.children.iter().find(plain).or_else(|| p.children.iter().rev().find(html))
                } else {
                    p.children.iter().rev().find(html).or_else(|| p.children.iter().find(plain))
                };
                if p.children.iter().any(|c| html(&c)) {
                    out.has_html = true;
                }
                walk(pick.unwrap_or(&p.children[p.children.len() - 1]), depth, v, index, out);
            }
            // The root shows; the rest are its images and styles.
            "related" => walk(&p.children[0], depth, v, index, out),
            _ => {
                for c in &p.children {
                    walk(c, depth, v, index, out);
                }
            }
        }
        return;
    }
    let inline_text = p.media_type == "text" && !is_attachment(p);
    if inline_text && p.media_subtype == "html" {
        out.has_html = true;
        if v.as_text {
            let _ = write!(out.html, r#"<div class="body">{}</div>"#, escape(&text::part_text(v.body, p)));
        } else {
            let _ = write!(
                out.html,
                r#"<iframe class="html" title="Message" sandbox="allow-popups allow-popups-to-escape-sandbox" src="/mail/html?{}&amp;p={}{}"></iframe>"#,
                v.link,
                index(p),
                if v.images { "&amp;images=1" } else { "" }
            );
        }
        return;
    }
    if inline_text && (p.media_subtype == "plain" || p.media_subtype == "enriched" || p.children.is_empty()) {
        let t = text::part_text(v.body, p);
        if !t.trim().is_empty() || out.html.is_empty() {
            let _ = write!(out.html, r#"<div class="body">{}</div>"#, escape(&t));
        }
        return;
    }
    let raw = u64::from(p.end.saturating_sub(p.body_start));
    let base64 = p.encoding.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    let name = if rfc822 && part_name(p) == "(unnamed)" {
        p.inner_envelope
            .as_ref()
            .and_then(|e| e.subject.as_deref())
            .map(|s| format!("{}.eml", text::decode_words(s)))
            .unwrap_or_else(|| "message.eml".into())
    } else {
        part_name(p)
    };
    out.attachments.push(Listed {
        node: index(p),
        name,
        kind: format!("{}/{}", p.media_type, p.media_subtype),
        bytes: if base64 { raw * 3 / 4 } else { raw },
    });
}

/// Addresses as people read them.
fn people(value: &str) -> String {
    address::display(value)
        .iter()
        .filter(|a| !a.address.is_empty())
        .map(|a| match a.name.as_deref() {
            Some(n) => format!("{n} <{}>", a.address),
            None => a.address.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Raster images a browser shows without running anything (never SVG).
fn safe_image(p: &Part) -> bool {
    p.media_type == "image" && ["png", "jpeg", "jpg", "gif", "webp"].contains(&p.media_subtype.as_str())
}

/// The HTML of part `p`, sanitised: no script, handlers, forms, frames or styles that
/// reach out; links open outside; `cid:` images of the message put inline as `data:`
/// (the frame's CSP allows nothing else unless the reader allowed remote images).
pub(crate) fn safe_html(root: &Part, body: &[u8], p: &Part) -> String {
    let html = text::part_decoded(body, p);
    let mut images: HashMap<String, String> = HashMap::new();
    let mut total = 0;
    for n in nodes(root) {
        let Some(id) = n.id.as_deref() else { continue };
        if !safe_image(n) {
            continue;
        }
        let raw = body.get(n.body_start as usize..(n.end as usize).min(body.len())).unwrap_or(&[]);
        let Some(bytes) = text::transfer_decode(n.encoding.as_deref(), raw) else { continue };
        if bytes.len() > INLINE_IMAGE || total + bytes.len() > INLINE_TOTAL {
            continue;
        }
        total += bytes.len();
        let id = id.trim().trim_start_matches('<').trim_end_matches('>').to_string();
        let data = format!(
            "data:{}/{};base64,{}",
            n.media_type,
            n.media_subtype,
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        images.insert(id, data);
    }
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .add_url_schemes(&["cid"])
        .attribute_filter(move |element, attribute, value| {
            let Some(cid) = value.get(..4).filter(|s| s.eq_ignore_ascii_case("cid:")).map(|_| &value[4..]) else {
                return Some(value.into());
            };
            if element != "img" || attribute != "src" {
                return None;
            }
            let cid = percent_decode(cid);
            images.get(cid.trim_start_matches('<').trim_end_matches('>')).map(|d| d.clone().into())
        })
        .clean(&html)
        .to_string()
}

/// `%XX` undone (cid: URLs are URL-encoded Content-IDs, RFC 2392).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = ((b[i + 1] as char).to_digit(16), (b[i + 2] as char).to_digit(16))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What this server's checks said of the sender, when it checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The From domain authenticated (DMARC pass, or an aligned DKIM signature).
    Verified(String),
    /// DMARC failed, or neither SPF nor DKIM passed.
    Suspect(String),
}

/// The Authentication-Results this server wrote at delivery: the field right under its
/// own Received line (after any ARC set), with its own authserv-id. Fields further down
/// came with the message and are never believed.
pub(crate) fn verdict(body: &[u8], hostname: &str) -> Option<Verdict> {
    let fields = text::header_fields(body, 16);
    let mut it = fields.iter();
    let (name, value) = it.next()?;
    if !name.eq_ignore_ascii_case("received") || !value.contains(&format!("by {hostname} ")) {
        return None;
    }
    let (name, value) = it.find(|(n, _)| !n.to_ascii_lowercase().starts_with("arc-"))?;
    if !name.eq_ignore_ascii_case("authentication-results") {
        return None;
    }
    let (id, results) = value.split_once(';')?;
    if !id.split_whitespace().next()?.eq_ignore_ascii_case(hostname) {
        return None;
    }
    let result = |method: &str| {
        results.split(';').map(str::trim).find_map(|r| {
            let rest = r.strip_prefix(method)?.strip_prefix('=')?;
            Some(rest.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("").to_ascii_lowercase())
        })
    };
    let prop = |method: &str, name: &str| {
        results.split(';').map(str::trim).filter(|r| r.starts_with(method)).find_map(|r| {
            r.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_matches('"').to_ascii_lowercase())
        })
    };
    let from_domain = prop("dmarc", "header.from=");
    match result("dmarc").as_deref() {
        Some("pass") => return Some(Verdict::Verified(from_domain.unwrap_or_default())),
        Some("fail") => return Some(Verdict::Suspect(from_domain.unwrap_or_default())),
        _ => {}
    }
    let (dkim, spf) = (result("dkim"), result("spf"));
    if dkim.as_deref() == Some("pass")
        && let (Some(d), Some(from)) = (prop("dkim", "header.d="), from_domain.clone())
        && d == from
    {
        return Some(Verdict::Verified(from));
    }
    let failed = |r: &Option<String>| matches!(r.as_deref(), Some("fail" | "softfail" | "permerror"));
    if failed(&spf) && (failed(&dkim) || dkim.as_deref() == Some("none")) {
        return Some(Verdict::Suspect(from_domain.unwrap_or_default()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "mx.example.org";

    fn with(ar: &str) -> Vec<u8> {
        format!(
            "Received: from a (b [1.2.3.4])\r\n\tby mx.example.org (Agora) with ESMTPS id X;\r\n\tMon, 1 Dec 2026\r\n{ar}From: x@y.test\r\n\r\nbody"
        )
        .into_bytes()
    }

    #[test]
    fn only_our_own_results_count() {
        let pass = with(
            "Authentication-Results: mx.example.org;\r\n dkim=pass header.d=y.test;\r\n spf=pass smtp.mailfrom=y.test;\r\n dmarc=pass header.from=y.test\r\n",
        );
        assert_eq!(verdict(&pass, HOST), Some(Verdict::Verified("y.test".into())));
        let fail =
            with("Authentication-Results: mx.example.org; dkim=none; spf=fail; dmarc=fail header.from=bank.test\r\n");
        assert_eq!(verdict(&fail, HOST), Some(Verdict::Suspect("bank.test".into())));
        let aligned = with(
            "Authentication-Results: mx.example.org; dkim=pass header.d=y.test; spf=none; dmarc=none header.from=y.test\r\n",
        );
        assert_eq!(verdict(&aligned, HOST), Some(Verdict::Verified("y.test".into())));
        let neutral =
            with("Authentication-Results: mx.example.org; dkim=none; spf=none; dmarc=none header.from=y.test\r\n");
        assert_eq!(verdict(&neutral, HOST), None);
        // Someone else's id, or a field that came with the message: not believed.
        let other = with("Authentication-Results: mx.evil.test; dmarc=pass header.from=bank.test\r\n");
        assert_eq!(verdict(&other, HOST), None);
        let forged = b"Received: from evil by evil.test; x\r\nAuthentication-Results: mx.example.org; dmarc=pass header.from=bank.test\r\n\r\n";
        assert_eq!(verdict(forged, HOST), None);
        let below = with("X-Other: 1\r\nAuthentication-Results: mx.example.org; dmarc=pass header.from=bank.test\r\n");
        assert_eq!(verdict(&below, HOST), None);
    }

    #[test]
    fn cid_images_inline_and_nothing_else() {
        let msg = b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<p><img src=\"cid:logo@x\"><img src=\"cid:svg@x\"><a href=\"cid:logo@x\">l</a><img src=\"https://t.test/p.png\"></p>\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--r\r\nContent-Type: image/svg+xml\r\nContent-ID: <svg@x>\r\n\r\n<svg onload=alert(1)/>\r\n--r--\r\n";
        let summary = agora_store::MessageSummary::parse(msg);
        let html = nodes(&summary.root).into_iter().find(|p| is(p, "text", "html")).expect("html");
        let clean = safe_html(&summary.root, msg, html);
        assert!(clean.contains("src=\"data:image/png;base64,iVBORw0K\""), "{clean}");
        assert!(!clean.contains("svg") && !clean.contains("cid:"), "{clean}");
        assert!(clean.contains("https://t.test/p.png"), "remote images stay for the frame's CSP to block: {clean}");
        assert_eq!(percent_decode("a%40b%zz"), "a@b%zz");
    }
}
