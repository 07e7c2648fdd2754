//! Webmail: the account's mail in a browser, served by the HTTPS service from the same
//! store and directory as every protocol (no IMAP hop). Pages are made on the server
//! as plain HTML with one stylesheet and no script, so a strict Content-Security-Policy
//! holds on every answer. The HTTP engine stays in the HTTP crate: this crate takes a
//! `WebRequest` and gives back a `WebResponse`.

mod actions;
mod compose;
mod pages;
mod session;

use std::net::IpAddr;
use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::Store;
use bytes::Bytes;

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
}

impl WebRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A value of the query string or of a form body (`application/x-www-form-urlencoded`).
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

    pub fn form_field(&self, name: &str) -> Option<String> {
        Self::field(std::str::from_utf8(&self.body).ok()?, name)
    }
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
#[derive(Debug, Clone)]
pub struct WebResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl WebResponse {
    fn html(status: u16, body: String) -> WebResponse {
        WebResponse {
            status,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: Bytes::from(body),
        }
    }

    fn redirect(to: &str) -> WebResponse {
        WebResponse { status: 303, headers: vec![("location".into(), to.into())], body: Bytes::new() }
    }

    fn with(mut self, name: &str, value: String) -> WebResponse {
        self.headers.push((name.into(), value));
        self
    }
}

/// Headers every webmail answer carries (unless the answer set its own): no script at all, nothing from elsewhere, never
/// framed, never cached, no referrer leaving the site.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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
}

impl Webmail {
    /// Whether a path belongs to the webmail (`/` leads to it too).
    pub fn serves(path: &str) -> bool {
        path == "/" || path == BASE || path.starts_with("/mail/")
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
        if path == "/mail/app.css" {
            return WebResponse {
                status: 200,
                headers: vec![
                    ("content-type".into(), "text/css; charset=utf-8".into()),
                    ("cache-control".into(), "max-age=3600".into()),
                ],
                body: Bytes::from_static(pages::CSS.as_bytes()),
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
        match (path, post) {
            ("/mail/", false) => self.mailbox_page(&user, req).await,
            ("/mail/message", false) => self.message_page(&user, req).await,
            ("/mail/sessions", false) => self.sessions_page(&user).await,
            ("/mail/part", false) => self.download(&user, req).await,
            ("/mail/raw", false) => self.raw(&user, req).await,
            ("/mail/html", false) => self.html(&user, req).await,
            ("/mail/action", true) => self.action(&user, req).await,
            ("/mail/compose", false) => self.compose_page(&user, req).await,
            ("/mail/send", true) => self.send(&user, req).await,
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
