//! Webmail: the account's mail in a browser, served by the HTTPS service from the same
//! store and directory as every protocol (no IMAP hop). Pages are made on the server
//! as plain HTML that works alone; one small script of the binary's own (keys, drag
//! and drop, new mail pushed as events) adds to them, and a strict
//! Content-Security-Policy (no inline script, nothing from elsewhere) holds on every answer. The HTTP engine stays in the HTTP crate: this crate takes a
//! `WebRequest` and gives back a `WebResponse`.

mod access;
mod actions;
mod admin;
pub mod charts;
mod compose;
mod events;
mod folders;
mod i18n;
mod pages;
mod reading;
mod session;
mod settings;

use std::net::IpAddr;
use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::Store;
use bytes::Bytes;

pub use events::Streams;
pub use session::{ABSOLUTE_SECS, IDLE_SECS};

/// The path everything of the webmail lives under.
pub const BASE: &str = "/mail";
/// Largest form body accepted (sign-in, actions), bytes.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// A request as the webmail needs it; the HTTP crate fills it in.
#[derive(Debug, Clone, Default)]
pub struct WebRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// Header fields with lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub peer: Option<IpAddr>,
    /// The body read as a form, once (left empty by whoever makes the request).
    pub form: std::sync::OnceLock<Form>,
}

/// A form as posted: its fields in order, and the files of a `multipart/form-data` one.
#[derive(Debug, Clone, Default)]
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<Upload>,
}

/// A file sent with a form.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub content_type: String,
    pub data: Bytes,
}

/// Most fields and files one form may carry.
const MAX_FIELDS: usize = 1000;
pub const MAX_FILES: usize = 20;

impl WebRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A value of the query string.
    fn field(source: &str, name: &str) -> Option<String> {
        source.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        })
    }

    /// A cookie's value from the `Cookie` fields.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers.iter().filter(|(n, _)| n == "cookie").flat_map(|(_, v)| v.split(';')).find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    pub fn query_field(&self, name: &str) -> Option<String> {
        Self::field(&self.query, name)
    }

    /// The body as a form: `application/x-www-form-urlencoded`, or `multipart/form-data`
    /// split by the store's MIME parser (the same one every message goes through).
    pub fn form(&self) -> &Form {
        self.form.get_or_init(|| {
            let kind = self.header("content-type").unwrap_or("");
            if kind.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
                return multipart(kind, &self.body);
            }
            let text = String::from_utf8_lossy(&self.body);
            let fields = text
                .split('&')
                .filter(|p| !p.is_empty())
                .take(MAX_FIELDS)
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (form_decode(k), form_decode(v))
                })
                .collect();
            Form { fields, files: Vec::new() }
        })
    }

    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form().fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// Every value of a repeated form field (ticked boxes).
    pub fn form_fields(&self, name: &str) -> Vec<String> {
        self.form().fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }
}

/// A `multipart/form-data` body (RFC 7578) as a form: each part's `name`, and for files
/// their `filename` and type. Empty file parts (no file chosen) are left out.
fn multipart(content_type: &str, body: &Bytes) -> Form {
    let mut framed = format!("Content-Type: {}\r\n\r\n", content_type.replace(['\r', '\n'], " ")).into_bytes();
    let offset = framed.len();
    framed.extend_from_slice(body);
    let tree = agora_store::MessageSummary::parse(&framed).root;
    let mut form = Form::default();
    if tree.media_type != "multipart" {
        return form;
    }
    for part in tree.children.iter().take(MAX_FIELDS) {
        let Some((kind, params)) = &part.disposition else { continue };
        if kind != "form-data" {
            continue;
        }
        let Some(name) = agora_store::text::param(params, "name") else { continue };
        let (start, end) = (part.body_start as usize, (part.end as usize).min(framed.len()));
        if start < offset || start > end {
            continue;
        }
        let data = body.slice(start - offset..end - offset);
        match agora_store::text::param(params, "filename") {
            Some(file) => {
                if (file.is_empty() && data.is_empty()) || form.files.len() >= MAX_FILES {
                    continue;
                }
                let content_type = format!("{}/{}", part.media_type, part.media_subtype);
                let file = file.rsplit(['/', '\\']).next().unwrap_or("").to_string();
                form.files.push(Upload { name: file, content_type, data });
                let _ = name;
            }
            None => form.fields.push((name, String::from_utf8_lossy(&data).into_owned())),
        }
    }
    form
}

/// `+` as space and `%XX` escapes undone; bytes that are not UTF-8 replaced.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// What the webmail answers.
#[derive(Debug)]
pub struct WebResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// A body sent as it comes (events), instead of `body`; it ends when the sender drops.
    pub stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl WebResponse {
    fn html(status: u16, body: String) -> WebResponse {
        WebResponse {
            stream: None,
            status,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: Bytes::from(body),
        }
    }

    fn redirect(to: &str) -> WebResponse {
        WebResponse { status: 303, headers: vec![("location".into(), to.into())], body: Bytes::new(), stream: None }
    }

    fn with(mut self, name: &str, value: String) -> WebResponse {
        self.headers.push((name.into(), value));
        self
    }
}

/// Headers every webmail answer carries (unless the answer set its own): script only from this server, nothing from elsewhere, never
/// framed, never cached, no referrer leaving the site.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
];

pub struct Webmail {
    pub store: Arc<dyn Store>,
    pub dir: Directory,
    pub throttle: Arc<Throttle>,
    /// The mail core: what the webmail sends goes through its intake.
    pub mail: Arc<agora_mail::Mail>,
    /// The server's name, shown on the sign-in page.
    pub hostname: String,
    /// Largest message the server takes (the same as SMTP's), bytes.
    pub max_message_size: usize,
    /// Cancelled when the server stops: open event streams end.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Open event streams per account.
    pub streams: Arc<events::Streams>,
    /// What the hosted zones are made from, and a way to ask resolvers (the console's
    /// domain page).
    pub zone: Option<agora_mail::zone::ZoneSettings>,
    pub dns_check: Option<agora_mail::zone::Checker>,
    /// The tracking log the console searches.
    pub tracking_log: Option<std::path::PathBuf>,
    /// The `/metrics` page as text, sampled for the console's charts.
    pub metrics: Option<fn() -> Option<String>>,
    pub history: Arc<charts::History>,
}

impl Webmail {
    /// Largest request body taken for a path: a message with its uploads on `/mail/send`,
    /// a small form elsewhere.
    pub fn body_limit(&self, path: &str) -> usize {
        if path == "/mail/send" { self.max_message_size + MAX_FORM_BYTES } else { MAX_FORM_BYTES }
    }

    /// Whether a path belongs to the webmail (`/` leads to it too).
    pub fn serves(path: &str) -> bool {
        path == "/" || path == BASE || path.starts_with("/mail/") || path == "/admin" || path.starts_with("/admin/")
    }

    pub async fn handle(&self, req: &WebRequest) -> WebResponse {
        let mut r = self.route(req).await;
        for (n, v) in SECURITY_HEADERS {
            // A page that sets one of these itself (a mail's HTML in its frame) keeps it.
            if !r.headers.iter().any(|(h, _)| h == n) {
                r.headers.push(((*n).into(), (*v).into()));
            }
        }
        r
    }

    async fn route(&self, req: &WebRequest) -> WebResponse {
        let path = req.path.as_str();
        if path == "/" || path == BASE {
            return WebResponse::redirect("/mail/");
        }
        let asset = match path {
            "/mail/app.css" => Some(("text/css; charset=utf-8", pages::CSS)),
            "/mail/app.js" => Some(("text/javascript; charset=utf-8", pages::JS)),
            _ => None,
        };
        if let Some((kind, text)) = asset {
            return WebResponse {
                stream: None,
                status: 200,
                headers: vec![("content-type".into(), kind.into()), ("cache-control".into(), "max-age=3600".into())],
                body: Bytes::from_static(text.as_bytes()),
            };
        }
        let post = req.method == "POST";
        if post && !same_origin(req) {
            // A form posted from another site: refused whatever it carries (CSRF).
            return WebResponse::html(403, pages::notice("Refused", "This request came from another site."));
        }
        if !post && req.method != "GET" && req.method != "HEAD" {
            return WebResponse::html(405, pages::notice("Not allowed", "This method is not served here."))
                .with("allow", "GET, HEAD, POST".into());
        }
        if path == "/mail/login" && post {
            return self.sign_in(req).await;
        }
        let Some(user) = self.session(req).await else {
            if post {
                return WebResponse::redirect("/mail/");
            }
            return self.sign_in_page(req, None);
        };
        if post && !user.csrf_ok(req) {
            return WebResponse::html(403, pages::notice("Refused", "This form has expired; reload the page."));
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return self.admin(&user, req).await;
        }
        match (path, post) {
            ("/mail/", false) => self.mailbox_page(&user, req).await,
            ("/mail/message", false) => self.message_page(&user, req).await,
            ("/mail/sessions", false) => self.sessions_page(&user).await,
            ("/mail/events", false) => self.events(&user).await,
            ("/mail/settings", false) => self.settings_page(&user, None).await,
            ("/mail/settings", true) => self.save_settings(&user, req).await,
            ("/mail/images", true) => self.allow_images(&user, req).await,
            ("/mail/folders", false) => self.folders_page(&user, None).await,
            ("/mail/folders", true) => self.change_folders(&user, req).await,
            ("/mail/part", false) => self.download(&user, req).await,
            ("/mail/raw", false) => self.raw(&user, req).await,
            ("/mail/html", false) => self.html(&user, req).await,
            ("/mail/action", true) => self.action(&user, req).await,
            ("/mail/compose", false) => self.compose_page(&user, req).await,
            ("/mail/send", true) => self.send(&user, req).await,
            ("/mail/people", false) => self.people(req).await,
            ("/mail/logout", true) => self.sign_out(&user, req).await,
            _ => WebResponse::html(404, pages::notice("Not found", "There is nothing here.")),
        }
    }
}

/// A POST is same-origin when the browser says so (`Sec-Fetch-Site`) or its `Origin`
/// names this host; a POST with neither is refused too (every browser sends one).
fn same_origin(req: &WebRequest) -> bool {
    if let Some(site) = req.header("sec-fetch-site") {
        return site == "same-origin";
    }
    match (req.header("origin"), req.header("host")) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://").is_some_and(|o| o.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(kind: &str, body: &[u8]) -> WebRequest {
        WebRequest {
            headers: vec![("content-type".into(), kind.into())],
            body: Bytes::copy_from_slice(body),
            ..WebRequest::default()
        }
    }

    #[test]
    fn forms_of_both_kinds() {
        let r = posted("application/x-www-form-urlencoded", b"u=1&u=2&to=a%40b+c&bad=%zz&empty");
        assert_eq!(r.form_fields("u"), ["1", "2"]);
        assert_eq!(r.form_field("to").as_deref(), Some("a@b c"));
        assert_eq!(r.form_field("bad").as_deref(), Some("%zz"));
        assert_eq!(r.form_field("empty").as_deref(), Some(""));
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nline one\r\nline two\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"C:\\\\dir\\\\\xe6\x97\xa5\xe6\x9c\xac.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n\xff--\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--XyZ--\r\n";
        let r = posted("multipart/form-data; boundary=XyZ", body);
        assert_eq!(r.form_field("csrf").as_deref(), Some("tok"));
        assert_eq!(r.form_field("body").as_deref(), Some("line one\r\nline two"));
        let files = &r.form().files;
        assert_eq!(files.len(), 1, "no file chosen is no file");
        assert_eq!(files[0].name, "日本.bin");
        assert_eq!(files[0].content_type, "application/octet-stream");
        assert_eq!(&files[0].data[..], b"\x00\x01\r\n\xff--");
        assert!(posted("multipart/form-data", b"garbage").form().fields.is_empty());
    }
}
