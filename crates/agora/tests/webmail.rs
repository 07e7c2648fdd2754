//! Webmail over HTTPS on the real binary, driven by Python's http.client as a browser
//! would: sign-in (a wrong password refused and slowed), the session cookie's
//! attributes, security headers on every page, mail delivered over SMTP listed and read
//! with its charsets decoded, marked read once opened, mail text escaped, cross-site
//! and token-less posts refused, the session list, sign-out.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, have, python_ok};

/// The browser every script here drives: `ip` from its first argument, requests with
/// cookies, the cookies an answer sets, the sign-in form's token, and a whole sign-in.
const BROWSER: &str = r#"
import http.client, re, ssl, sys
ip = sys.argv[1]
HOST = "mx.example.org:10443"
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def req(method, path, body=None, cookies=None, origin="https://" + HOST, extra=None):
    c = http.client.HTTPSConnection(ip, 10443, context=ctx, timeout=20)
    h = {"Host": HOST, "User-Agent": "TestBrowser/1.0"}
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if body is not None:
        h["Content-Type"] = "application/x-www-form-urlencoded"
        if origin:
            h["Origin"] = origin
    h.update(extra or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    text = r.read().decode()
    return r, text

def set_cookies(r):
    out = {}
    for v in r.headers.get_all("Set-Cookie") or []:
        name, _, rest = v.partition("=")
        out[name] = (rest.split(";")[0], v)
    return out

def pre_token(text):
    return re.search(r'name="pre" value="([^"]+)"', text).group(1)

def sign_in(login, password, extra=""):
    """Fetches the form, posts it with its own cookie; returns (answer, page, cookies)."""
    r, page = req("GET", "/mail/")
    pre = pre_token(page)
    body = f"pre={pre}&login={login.replace('@', '%40')}&password={password}" + extra
    r, page = req("POST", "/mail/login", body, cookies={"__Host-agora-pre": pre})
    jar = {"__Host-agora": set_cookies(r)["__Host-agora"][0]} if r.status == 303 else None
    return r, page, jar
"#;

const CLIENT: &str = r#"
import imaplib, smtplib

s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("ivan@remote.test", ["web@example.org"],
    b"From: =?koi8-r?B?6dfBzg==?= <ivan@remote.test>\r\nTo: web@example.org\r\n"
    b"Subject: =?koi8-r?Q?=F0=D2=C9=D7=C5=D4?=\r\nMessage-ID: <koi8@remote.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"=F0=D2=C9=D7=C5=D4, =CD=C9=D2\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''%E6%97%A5%E6%9C%AC.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    b"--b\r\nContent-Type: text/html; name=x.html\r\nContent-Disposition: attachment; filename=x.html\r\n\r\n"
    b"<script>alert(3)</script>\r\n--b--\r\n")
s.sendmail("eve@remote.test", ["web@example.org"],
    b"From: eve@remote.test\r\nSubject: <script>alert(1)</script>\r\n\r\n<img src=x onerror=alert(2)>\r\n")
s.quit()

def check_headers(r, what):
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, (what, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (what, csp)
    assert r.headers.get("X-Frame-Options") == "DENY", what
    assert r.headers.get("X-Content-Type-Options") == "nosniff", what

r, _ = req("GET", "/")
assert r.status == 303 and r.headers["Location"] == "/mail/", r.status
r, page = req("GET", "/mail/")
assert r.status == 200 and "Sign in" in page, (r.status, page)
check_headers(r, "sign-in page")
pre = set_cookies(r)["__Host-agora-pre"]
assert "Secure" in pre[1] and "HttpOnly" in pre[1] and "SameSite=Strict" in pre[1], pre
assert pre[0] == pre_token(page)

# A wrong password: refused, said plainly, no session.
r, page = req("POST", "/mail/login", f"pre={pre[0]}&login=web%40example.org&password=wrong",
              cookies={"__Host-agora-pre": pre[0]})
assert r.status == 401 and "Wrong address or password" in page, (r.status, page)
assert "__Host-agora" not in set_cookies(r), "no session for a wrong password"
pre = set_cookies(r)["__Host-agora-pre"][0]
# A sign-in form posted without its own cookie (forged elsewhere) is refused.
r, page = req("POST", "/mail/login", f"pre={pre}&login=web%40example.org&password=web-secret")
assert r.status == 401 and "expired" in page, (r.status, page)
pre = set_cookies(r)["__Host-agora-pre"][0]

r, page = req("POST", "/mail/login", f"pre={pre}&login=web%40example.org&password=web-secret",
              cookies={"__Host-agora-pre": pre})
assert r.status == 303 and r.headers["Location"] == "/mail/", (r.status, page)
sess = set_cookies(r)["__Host-agora"]
assert all(a in sess[1] for a in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/")), sess
jar = {"__Host-agora": sess[0]}

r, page = req("GET", "/mail/", cookies=jar)
assert r.status == 200, r.status
check_headers(r, "mailbox page")
assert "Привет" in page and "Иван" in page, page
assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page, page
assert page.count('class="msg unread"') == 2, page
link = re.search(r'href="(/mail/message\?f=\d+&amp;u=\d+)">Привет', page).group(1).replace("&amp;", "&")
r, page = req("GET", link, cookies=jar)
assert r.status == 200 and "Привет, мир" in page and "日本.pdf" in page and "application/pdf" in page, page
check_headers(r, "message page")
r, page = req("GET", "/mail/", cookies=jar)
assert page.count('class="msg unread"') == 1, "opened means read"
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)

# Attachments download as files under their own names, whatever they claim to be.
r, page = req("GET", link, cookies=jar)
parts = re.findall(r'href="(/mail/part\?[^"]+)" download>([^<]+)<', page)
assert [n for _, n in parts] == ["日本.pdf", "x.html"], parts
for (href, name), content in zip(parts, [b"%PDF-", b"<script>alert(3)</script>"]):
    c = http.client.HTTPSConnection(ip, 10443, context=ctx, timeout=20)
    c.request("GET", href.replace("&amp;", "&"), headers={"Host": HOST, "Cookie": "__Host-agora=" + jar["__Host-agora"]})
    d = c.getresponse(); data = d.read()
    assert d.status == 200 and data == content, (name, d.status, data)
    assert d.headers["Content-Type"] == "application/octet-stream", d.headers["Content-Type"]
    assert d.headers["Content-Disposition"].startswith("attachment;"), d.headers["Content-Disposition"]
    assert d.headers["X-Content-Type-Options"] == "nosniff"
assert "filename*=UTF-8''%E6%97%A5%E6%9C%AC.pdf" in d.headers["Content-Disposition"] or name == "x.html"
src = re.search(r'href="(/mail/raw\?[^"]+)"', page).group(1).replace("&amp;", "&")
r, raw = req("GET", src, cookies=jar)
assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain") and "Subject: =?koi8-r?Q?" in raw, raw[:200]

# Sorting with IMAP's sort code: newest first by default, largest first by size.
r, page = req("GET", "/mail/", cookies=jar)
first = lambda p: re.search(r'<td class="subject"><a [^>]+>([^<]+)<', p).group(1)
assert first(page).startswith("&lt;script"), first(page)
r, page = req("GET", "/mail/?sort=size", cookies=jar)
assert first(page) == "Привет" and "sort=size" in page, first(page)
r, page = req("GET", "/mail/?sort=subject", cookies=jar)
assert first(page).startswith("&lt;script"), first(page)

# Search: the same code as IMAP, in any charset.
r, page = req("GET", "/mail/?q=%D0%BC%D0%B8%D1%80", cookies=jar)
assert "1 found" in page and "Привет" in page and "&lt;script" not in page, page
r, page = req("GET", "/mail/?q=nothing-like-this", cookies=jar)
assert "0 found" in page, page
r, page = req("GET", "/mail/", cookies=jar)

# The other message's body is shown as text, never as markup.
link = re.search(r'href="(/mail/message\?f=\d+&amp;u=\d+)">&lt;script', page).group(1).replace("&amp;", "&")
r, page = req("GET", link, cookies=jar)
assert "<img" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page, page

# Cross-site and token-less posts change nothing.
r, _ = req("POST", "/mail/logout", f"csrf={csrf}", cookies=jar, origin="https://evil.example")
assert r.status == 403, r.status
r, _ = req("POST", "/mail/logout", f"csrf={csrf}", cookies=jar, extra={"Sec-Fetch-Site": "cross-site"})
assert r.status == 403, r.status
r, _ = req("POST", "/mail/logout", "csrf=forged", cookies=jar)
assert r.status == 403, r.status
# Flag, then delete to Trash, then for good.
r, page = req("GET", "/mail/", cookies=jar)
inbox = re.search(r'name="f" value="(\d+)"', page).group(1)
evil = re.search(r'name="u" value="(\d+)" aria-label="Select"></td><td class="from">eve@remote.test', page).group(1)
r, _ = req("POST", "/mail/action", f"csrf={csrf}&f={inbox}&u={evil}&op=flag", cookies=jar)
assert r.status == 303, r.status
r, page = req("GET", "/mail/", cookies=jar)
assert 'aria-label="flagged"' in page and "2 messages" in page, page
r, _ = req("POST", "/mail/action", f"csrf={csrf}&f={inbox}&u={evil}&op=delete", cookies=jar)
r, page = req("GET", "/mail/", cookies=jar)
assert "1 message<" in page and "&lt;script" not in page, page
trash = re.search(r'<a href="/mail/\?f=(\d+)" data-folder="\d+">Trash', page).group(1)
r, page = req("GET", f"/mail/?f={trash}", cookies=jar)
assert "1 message<" in page and "&lt;script&gt;" in page, page
in_trash = re.search(r'name="u" value="(\d+)"', page).group(1)
r, _ = req("POST", "/mail/action", f"csrf={csrf}&f={trash}&u={in_trash}&op=delete", cookies=jar)
assert r.status == 303, r.status
r, page = req("GET", f"/mail/?f={trash}", cookies=jar)
assert "0 messages" in page, page

# Reply: the form is filled in from the message; what is sent arrives at another
# account (read over IMAP) and a copy stays in Sent.
r, page = req("GET", "/mail/", cookies=jar)
link = re.search(r'href="(/mail/message\?f=\d+&amp;u=\d+)">Привет', page).group(1).replace("&amp;", "&")
r, page = req("GET", link, cookies=jar)
reply = re.search(r'href="(/mail/compose\?mode=reply[^"]+)"', page).group(1).replace("&amp;", "&")
r, page = req("GET", reply, cookies=jar)
assert r.status == 200 and 'value="ivan@remote.test"' in page and 'value="Re: Привет"' in page and "&gt; Привет, мир" in page, page
in_reply_to = re.search(r'name="in_reply_to" value="([^"]*)"', page).group(1).replace("&lt;", "<").replace("&gt;", ">")
assert in_reply_to == "<koi8@remote.test>", in_reply_to
import urllib.parse
def form(**f):
    return urllib.parse.urlencode(f)
r, page = req("POST", "/mail/send", form(csrf=csrf, to="nobody@example.org", subject="x", body="x"), cookies=jar)
assert r.status == 400 and "no such address" in page, (r.status, page)
r, page = req("POST", "/mail/send", form(csrf=csrf, to="Other <other@example.org>", cc="", subject="Ответ: привет",
              body="Спасибо, получил.\nA line with = and trailing space ", in_reply_to=in_reply_to, references=in_reply_to), cookies=jar)
assert r.status == 200 and "on its way" in page, (r.status, page)
m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
m.login("other@example.org", "other-secret")
m.select("INBOX")
m.literal = "Ответ".encode()
typ, data = m.search("UTF-8", "SUBJECT")
assert typ == "OK" and data[0].split() == [b"1"], data
typ, data = m.fetch("1", "(BODY.PEEK[])")
import email, email.policy
got = email.message_from_bytes(data[0][1], policy=email.policy.default)
assert got["Subject"] == "Ответ: привет" and got["From"].addresses[0].addr_spec == "web@example.org", got["From"]
assert got["In-Reply-To"] == in_reply_to and "DKIM-Signature" in got, got.keys()
assert got.get_content().replace("\r\n", "\n") == "Спасибо, получил.\nA line with = and trailing space \n", repr(got.get_content())
m.logout()
r, page = req("GET", "/mail/", cookies=jar)
sent = re.search(r'<a href="/mail/\?f=(\d+)" data-folder="\d+">Sent', page).group(1)
r, page = req("GET", f"/mail/?f={sent}", cookies=jar)
assert "1 message<" in page and "Ответ: привет" in page, page

r, page = req("GET", "/mail/sessions", cookies=jar)
assert r.status == 200 and "TestBrowser/1.0 (this one)" in page, page

r, _ = req("POST", "/mail/logout", f"csrf={csrf}", cookies=jar)
assert r.status == 303 and "Max-Age=0" in set_cookies(r)["__Host-agora"][1], r.status
r, page = req("GET", "/mail/", cookies=jar)
assert "Sign in" in page and "Привет" not in page, "the old cookie signs nobody in"
print("ok")
"#;

/// With `agora user totp`, signing in needs the password and a current code, and each
/// code works once; `--off` ends it.
#[test]
fn a_second_factor_guards_sign_in() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "two@example.org", "--password-stdin"], Some("two-secret\n"));
    let out = a.cli_ok(&["user", "totp", "two@example.org"], None);
    let secret = out.lines().find_map(|l| l.strip_prefix("secret: ")).expect("secret printed").trim().to_string();
    assert!(out.contains("otpauth://totp/example.org:two@example.org?secret="), "{out}");
    let script = format!(
        r#"
import base64, hashlib, hmac, struct, time
secret = {secret:?}
def code(t):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    h = hmac.new(key, struct.pack(">Q", int(t) // 30), hashlib.sha1).digest()
    o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7fffffff) % 1000000)
def try_code(extra):
    r, page, _ = sign_in("two@example.org", "two-secret", extra)
    return r.status, page
status, page = try_code("")
assert status == 401 and "Enter the code" in page, (status, page)
status, page = try_code("&code=000000" if code(time.time()) != "000000" else "&code=111111")
assert status == 401 and "Wrong code" in page, (status, page)
now = code(time.time())
status, page = try_code("&code=" + now)
assert status == 303, (status, page)
status, page = try_code("&code=" + now)
assert status == 401 and "used already" in page, (status, page)
print("ok")
"#
    );
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
    a.cli_ok(&["user", "totp", "two@example.org", "--off"], None);
}

/// HTML mail is shown sanitised in a sandboxed frame: no script, no handlers, remote
/// images blocked until asked for, its text a click away.
#[test]
fn html_mail_is_sanitised_in_a_sandbox() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "html@example.org", "--password-stdin"], Some("html-secret\n"));
    let script = r#"
import smtplib
s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("news@remote.test", ["html@example.org"],
    b"From: News <news@remote.test>\r\nSubject: Newsletter\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
    b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words here\r\n"
    b"--a\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n"
    b"<html><head><script>alert(1)</script></head><body><p onclick=\"steal()\">Gr\xfc\xdfe <b>there</b></p>"
    b"<img src=\"https://tracker.remote.test/pixel.png\" onerror=\"alert(2)\"><a href=\"javascript:alert(3)\">x</a>"
    b"<form action=\"https://evil.test/\"><input name=p></form><iframe src=\"https://evil.test/\"></iframe></body></html>\r\n--a--\r\n")
s.quit()
r, _, jar = sign_in("html@example.org", "html-secret")
r, page = req("GET", "/mail/", cookies=jar)
link = re.search(r'href="(/mail/message\?[^"]+)">Newsletter', page).group(1).replace("&amp;", "&")
r, page = req("GET", link, cookies=jar)
assert "frame-src 'self'" in r.headers["Content-Security-Policy"], r.headers["Content-Security-Policy"]
frame = re.search(r'<iframe class="html" title="Message" sandbox="([^"]*)" src="([^"]+)"', page)
assert frame and "allow-scripts" not in frame.group(1) and "allow-same-origin" not in frame.group(1), page
r, html = req("GET", frame.group(2).replace("&amp;", "&"), cookies=jar)
csp = r.headers["Content-Security-Policy"]
assert r.status == 200 and "sandbox" in csp and "img-src data:;" in csp and "https:" not in csp, csp
assert r.headers["X-Frame-Options"] == "SAMEORIGIN", r.headers["X-Frame-Options"]
assert "Grüße <b>there</b>" in html, html
for bad in ("<script", "onclick", "onerror", "javascript:", "<form", "<iframe", "evil.test"):
    assert bad not in html, (bad, html)
r, page = req("GET", link + "&images=1", cookies=jar)
src = re.search(r'<iframe[^>]* src="([^"]+)"', page).group(1).replace("&amp;", "&")
r, html = req("GET", src, cookies=jar)
assert "img-src data: https:;" in r.headers["Content-Security-Policy"] and "tracker.remote.test" in html, r.headers
r, page = req("GET", link + "&text=1", cookies=jar)
assert "<iframe" not in page and "Plain words here" in page, page
print("ok")
"#;
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
}

#[test]
fn sign_in_read_and_sign_out() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "web@example.org", "--password-stdin"], Some("web-secret\n"));
    a.cli_ok(&["user", "add", "other@example.org", "--password-stdin"], Some("other-secret\n"));
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{CLIENT}", a.ip));
}

/// Writing as people do: files uploaded and received intact over IMAP, a draft saved
/// with its attachment and resumed, a message forwarded as an attachment, addresses
/// completed from the directory, a signature, folders made and renamed, a password
/// changed; and new mail pushed to an open page as an event.
#[test]
fn writing_drafts_folders_settings_and_push() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "pen@example.org", "--password-stdin", "--name", "Pen Writer"], Some("pen-secret-1\n"));
    a.cli_ok(
        &["user", "add", "reader@example.org", "--password-stdin", "--name", "Otto Reader"],
        Some("reader-secret\n"),
    );
    a.cli_ok(
        &["user", "add", "otto.secret@example.org", "--password-stdin", "--name", "Otto Hidden", "--hidden"],
        Some("x-secret-1\n"),
    );
    let script = r#"
import email, email.policy, imaplib, smtplib, socket, threading, time, urllib.parse
r, _, jar = sign_in("pen@example.org", "pen-secret-1")
assert r.status == 303, r.status
r, page = req("GET", "/mail/", cookies=jar)
csrf = re.search(r'name="csrf" content="([^"]+)"', page).group(1)
assert '<script src="/mail/app.js" defer></script>' in page, page
r, js = req("GET", "/mail/app.js")
assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript") and "EventSource" in js, r.status

# New mail reaches an open page as an event, with no reload.
c = http.client.HTTPSConnection(ip, 10443, context=ctx, timeout=20)
c.request("GET", "/mail/events", headers={"Host": HOST, "Cookie": "__Host-agora=" + jar["__Host-agora"]})
ev = c.getresponse()
assert ev.status == 200 and ev.headers["Content-Type"].startswith("text/event-stream"), ev.status
s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("far@remote.test", ["pen@example.org"], b"From: far@remote.test\r\nSubject: pushed\r\n\r\nhello\r\n")
s.quit()
got = ""
deadline = time.time() + 20
while '"kind":"new"' not in got and time.time() < deadline:
    got += ev.fp.readline().decode()
assert "event: mail" in got and '"kind":"new"' in got, got
c.close()

# Completion from the directory.
r, found = req("GET", "/mail/people?q=otto", cookies=jar)
assert r.status == 200 and "Otto Reader <reader@example.org>" in found and "Hidden" not in found, found
r, found = req("GET", "/mail/people?q=o", cookies=jar)
assert found == "[]", "one letter asks nothing"

# A signature goes into new messages.
r, page = req("POST", "/mail/settings", urllib.parse.urlencode({"csrf": csrf, "what": "profile", "name": "Pen Writer", "signature": "Pen\nexample.org"}), cookies=jar)
assert r.status == 200 and "Saved." in page, page
r, page = req("GET", "/mail/compose", cookies=jar)
assert "\n\n-- \nPen\nexample.org</textarea>" in page, page

def multipart(fields, files):
    b = "----agoraTestBoundary7"
    out = b""
    for k, v in fields:
        out += f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v.encode() + b"\r\n"
    for name, ctype, data in files:
        out += f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + data + b"\r\n"
    return out + f"--{b}--\r\n".encode(), {"Content-Type": "multipart/form-data; boundary=" + b}

blob = bytes(range(256)) * 300 + b"\r\n--not-a-boundary\r\n"
body, head = multipart([("csrf", csrf), ("op", "send"), ("to", "Otto <reader@example.org>"), ("subject", "Файлы"), ("body", "See attached.")],
                       [("данные.bin", "application/octet-stream", blob), ("notes.txt", "text/plain", "Zeilen\nüber".encode())])
r, page = req("POST", "/mail/send", body, cookies=jar, extra=head)
assert r.status == 200 and "on its way" in page, (r.status, page)

def inbox_of(login, password):
    m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
    m.login(login, password)
    m.select("INBOX")
    return m

def last_message(m):
    typ, data = m.search(None, "ALL")
    n = data[0].split()[-1]
    typ, data = m.fetch(n, "(BODY.PEEK[])")
    return email.message_from_bytes(data[0][1], policy=email.policy.default)

m = inbox_of("reader@example.org", "reader-secret")
got = last_message(m)
assert got["Subject"] == "Файлы", got["Subject"]
files = {p.get_filename(): p.get_payload(decode=True) for p in got.iter_attachments()}
assert files == {"данные.bin": blob, "notes.txt": "Zeilen\nüber".encode()}, list(files)

# A draft with a file, saved, then resumed and sent: the file goes along, Drafts empties.
body, head = multipart([("csrf", csrf), ("op", "draft"), ("to", "reader@example.org"), ("subject", "Later"), ("body", "Half written")],
                       [("plan.pdf", "application/pdf", b"%PDF-1.4 plan")])
r, page = req("POST", "/mail/send", body, cookies=jar, extra=head)
assert r.status == 200 and "Draft saved at" in page, (r.status, page)
draft_uid = re.search(r'name="draft" value="(\d+)"', page).group(1)
kept = re.findall(r'name="keep" value="([^"]+)" checked> plan.pdf', page)
assert len(kept) == 1, page
r, page = req("GET", "/mail/", cookies=jar)
drafts = re.search(r'<a href="/mail/\?f=(\d+)" data-folder="\d+">Drafts', page).group(1)
r, page = req("GET", f"/mail/?f={drafts}", cookies=jar)
assert "1 message<" in page and "Later" in page, page
r, page = req("GET", f"/mail/compose?mode=draft&f={drafts}&u={draft_uid}", cookies=jar)
assert 'value="reader@example.org"' in page and "Half written" in page and "plan.pdf" in page, page
keep = re.search(r'name="keep" value="([^"]+)"', page).group(1)
body, head = multipart([("csrf", csrf), ("op", "send"), ("to", "reader@example.org"), ("subject", "Later"), ("body", "Now whole"), ("draft", draft_uid), ("keep", keep)], [])
r, page = req("POST", "/mail/send", body, cookies=jar, extra=head)
assert r.status == 200 and "on its way" in page, (r.status, page)
r, page = req("GET", f"/mail/?f={drafts}", cookies=jar)
assert "0 messages" in page, "the draft sent is gone"
got = last_message(m)
assert got["Subject"] == "Later" and [p.get_filename() for p in got.iter_attachments()] == ["plan.pdf"], got
assert list(got.iter_attachments())[0].get_payload(decode=True) == b"%PDF-1.4 plan"

# Forward as attachment: the whole message goes as message/rfc822.
r, page = req("GET", "/mail/", cookies=jar)
link = re.search(r'href="/mail/message\?(f=\d+&amp;u=\d+)">pushed', page).group(1).replace("&amp;", "&")
r, page = req("GET", "/mail/compose?mode=attach&" + link, cookies=jar)
assert 'value="Fwd: pushed"' in page and "pushed.eml" in page, page
keep = re.search(r'name="keep" value="([^"]+)"', page).group(1)
assert keep.endswith(".m"), keep
r, page = req("POST", "/mail/send", urllib.parse.urlencode({"csrf": csrf, "to": "reader@example.org", "subject": "Fwd: pushed", "body": "fyi", "keep": keep, "mode": "attach", "original": re.sub(r"f=(\d+)&u=(\d+)", r"\1.\2", link)}), cookies=jar)
assert r.status == 200 and "on its way" in page, (r.status, page)
got = last_message(m)
inner = [p for p in got.walk() if p.get_content_type() == "message/rfc822"]
assert inner and inner[0].get_payload()[0]["Subject"] == "pushed", got
m.logout()
r, page = req("GET", "/mail/message?" + link, cookies=jar)
assert r.status == 200

# Folders: made (IMAP sees it), renamed, deleted.
r, page = req("POST", "/mail/folders", urllib.parse.urlencode({"csrf": csrf, "what": "create", "name": "Projects/2027"}), cookies=jar)
assert r.status == 200 and "Folder created." in page, page
i = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
i.login("pen@example.org", "pen-secret-1")
typ, data = i.lsub('""', "*")
assert any(b"Projects/2027" in l for l in data), data
folder = re.search(r'<a href="/mail/\?f=(\d+)">Projects/2027', page).group(1)
r, page = req("POST", "/mail/folders", urllib.parse.urlencode({"csrf": csrf, "what": "rename", "f": folder, "name": "Projects/2028"}), cookies=jar)
assert "Folder renamed." in page and "Projects/2028" in page, page
r, page = req("POST", "/mail/folders", urllib.parse.urlencode({"csrf": csrf, "what": "create", "name": "in*box"}), cookies=jar)
assert r.status == 400, r.status
r, page = req("POST", "/mail/folders", urllib.parse.urlencode({"csrf": csrf, "what": "delete", "f": folder}), cookies=jar)
assert "Folder deleted." in page and "Projects/2028" not in page, page
inbox = re.search(r'<a href="/mail/\?f=(\d+)">INBOX', page).group(1)
r, page = req("POST", "/mail/folders", urllib.parse.urlencode({"csrf": csrf, "what": "delete", "f": inbox}), cookies=jar)
assert r.status == 400, "INBOX stays"
i.logout()

# Search by field.
r, page = req("GET", "/mail/?q=far&in=from", cookies=jar)
assert "1 found" in page and "pushed" in page, page
r, page = req("GET", "/mail/?q=far&in=subject", cookies=jar)
assert "0 found" in page, page

# A password change needs the current one; then IMAP takes only the new one.
r, page = req("POST", "/mail/settings", urllib.parse.urlencode({"csrf": csrf, "what": "password", "current": "wrong", "new": "pen-secret-2", "again": "pen-secret-2"}), cookies=jar)
assert r.status == 400 and "current password is wrong" in page, page
r, page = req("POST", "/mail/settings", urllib.parse.urlencode({"csrf": csrf, "what": "password", "current": "pen-secret-1", "new": "pen-secret-2", "again": "pen-secret-2"}), cookies=jar)
assert r.status == 200 and "Password changed" in page, page
i = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
i.login("pen@example.org", "pen-secret-2")
i.logout()

# Language: the browser's by default, the account's choice once made.
r, page = req("GET", "/mail/", cookies=jar, extra={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
assert '<html lang="de">' in page and ">Schreiben<" in page and "Nachrichten" in page, page[:600]
r, page = req("GET", "/mail/", extra={"Accept-Language": "fr"})
assert "Se connecter" in page, "the sign-in page speaks the browser's language"
r, page = req("POST", "/mail/settings", urllib.parse.urlencode({"csrf": csrf, "what": "profile", "name": "Pen Writer", "signature": "", "language": "fr"}), cookies=jar, extra={"Accept-Language": "de"})
assert r.status == 200 and "Enregistré." in page and '<option value="fr" lang="fr" selected>' in page, page[-3000:]
r, page = req("GET", "/mail/", cookies=jar, extra={"Accept-Language": "de"})
assert '<html lang="fr">' in page and ">Écrire<" in page, page[:600]
print("ok")
"#;
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
}

/// Folders shared over IMAP ACLs and public folders appear with IMAP's names and act
/// by their rights (a reader may read and mark read for themselves, not delete); a
/// reply chain is shown as a thread.
#[test]
fn shared_and_public_folders_and_threads() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "boss@example.org", "--password-stdin"], Some("boss-secret\n"));
    a.cli_ok(&["user", "add", "aide@example.org", "--password-stdin"], Some("aide-secret\n"));
    a.cli_ok(&["public", "add", "Notices", "--address", "notices@example.org", "--anonymous-mail"], None);
    a.cli_ok(&["public", "permission", "Notices", "anyone", "reader"], None);
    let script = r#"
import imaplib, smtplib, urllib.parse
s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("x@remote.test", ["boss@example.org"], b"From: x@remote.test\r\nSubject: Plan\r\nMessage-ID: <p1@remote.test>\r\n\r\nfirst\r\n")
s.sendmail("y@remote.test", ["boss@example.org"], b"From: y@remote.test\r\nSubject: Re: Plan\r\nMessage-ID: <p2@remote.test>\r\nIn-Reply-To: <p1@remote.test>\r\nReferences: <p1@remote.test>\r\n\r\nsecond\r\n")
s.sendmail("z@remote.test", ["boss@example.org"], b"From: z@remote.test\r\nSubject: Other\r\nMessage-ID: <o1@remote.test>\r\n\r\nthird\r\n")
s.sendmail("hr@remote.test", ["notices@example.org"], b"From: hr@remote.test\r\nSubject: Holiday\r\n\r\nclosed friday\r\n")
s.quit()
m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
m.login("boss@example.org", "boss-secret")
typ, data = m._simple_command("SETACL", "INBOX", "aide@example.org", "lrs")
assert typ == "OK", data
m.logout()

r, _, jar = sign_in("aide@example.org", "aide-secret")
r, page = req("GET", "/mail/", cookies=jar)
csrf = re.search(r'name="csrf" content="([^"]+)"', page).group(1)
shared = re.search(r'<a href="/mail/\?f=(\d+)" data-folder="\d+">Other Users/boss@example.org/INBOX', page)
public = re.search(r'<a href="/mail/\?f=(\d+)" data-folder="\d+">Public Folders/Notices', page)
assert shared and public, page
r, page = req("GET", f"/mail/?f={public.group(1)}", cookies=jar)
assert "Holiday" in page and 'value="delete"' not in page, page
r, page = req("GET", f"/mail/?f={shared.group(1)}", cookies=jar)
assert page.count('class="msg unread') == 3 and 'value="delete"' not in page and 'value="read"' in page, page
uid = re.search(r'data-uid="(\d+)"><td class="pick"><input type="checkbox" name="u" value="\d+" aria-label="Select"></td><td class="from">z@remote.test', page).group(1)
r, _ = req("POST", "/mail/action", urllib.parse.urlencode({"csrf": csrf, "f": shared.group(1), "u": uid, "op": "delete"}), cookies=jar)
assert r.status == 403, r.status
r, _ = req("POST", "/mail/action", urllib.parse.urlencode({"csrf": csrf, "f": shared.group(1), "u": uid, "op": "read"}), cookies=jar)
assert r.status == 303, r.status
r, page = req("GET", f"/mail/?f={shared.group(1)}", cookies=jar)
assert page.count('class="msg unread') == 2, "read for the aide"
# Threads: the reply under its parent, the other conversation apart.
r, page = req("GET", f"/mail/?f={shared.group(1)}&sort=threads", cookies=jar)
rows = re.findall(r'<tr class="msg[^"]*?( depth\d)?" data-uid="\d+">.*?<td class="subject"><a [^>]+>([^<]+)<', page)
assert rows == [(" depth0", "Other"), (" depth0", "Plan"), (" depth1", "Re: Plan")], rows
# The boss's own \Seen did not change.
m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
m.login("boss@example.org", "boss-secret")
m.select("INBOX", readonly=True)
typ, data = m.search(None, "UNSEEN")
assert len(data[0].split()) == 3, data
m.logout()
print("ok")
"#;
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
}

/// A vacation reply set in the webmail answers a colleague once (not twice, not a
/// list), with `Auto-Submitted`; forwarding sends an account's mail on (to a colleague
/// without a copy kept, or to the queue for an outside address).
#[test]
fn vacation_replies_and_forwarding() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "away@example.org", "--password-stdin", "--name", "Ada Away"], Some("away-secret\n"));
    a.cli_ok(&["user", "add", "mate@example.org", "--password-stdin"], Some("mate-secret\n"));
    a.cli_ok(&["user", "add", "fwd@example.org", "--password-stdin"], Some("fwd-secret\n"));
    let script = r#"
import email, email.policy, imaplib, smtplib, time, urllib.parse
def settings(login, password, fields):
    r, _, jar = sign_in(login, password)
    r, page = req("GET", "/mail/settings", cookies=jar)
    csrf = re.search(r'name="csrf" content="([^"]+)"', page).group(1)
    r, page = req("POST", "/mail/settings", urllib.parse.urlencode(dict(csrf=csrf, **fields)), cookies=jar)
    return r, page
r, page = settings("away@example.org", "away-secret", {"what": "vacation", "on": "1", "text": "Back on Monday.", "days": "7"})
assert r.status == 200 and "Saved." in page and "Back on Monday." in page, page
r, page = settings("fwd@example.org", "fwd-secret", {"what": "forward", "to": "nobody@example.org"})
assert r.status == 400 and "no such address" in page, page
r, page = settings("fwd@example.org", "fwd-secret", {"what": "forward", "to": "mate@example.org"})
assert r.status == 200 and "Saved." in page, page

def submit(login, password, to, msg):
    s = smtplib.SMTP(ip, 10587, timeout=20)
    s.starttls(context=ctx)
    s.login(login, password)
    s.sendmail(login, to, msg)
    s.quit()
submit("mate@example.org", "mate-secret", ["away@example.org"], b"From: mate@example.org\r\nTo: away@example.org\r\nSubject: Lunch?\r\nMessage-ID: <l1@example.org>\r\n\r\nnoon?\r\n")
submit("mate@example.org", "mate-secret", ["away@example.org"], b"From: mate@example.org\r\nTo: away@example.org\r\nSubject: Lunch again\r\n\r\nor one?\r\n")
submit("mate@example.org", "mate-secret", ["away@example.org"], b"From: mate@example.org\r\nTo: away@example.org\r\nList-Id: <team.example.org>\r\nSubject: List mail\r\n\r\nall\r\n")
s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("far@remote.test", ["fwd@example.org"], b"From: far@remote.test\r\nTo: fwd@example.org\r\nSubject: Passed on\r\n\r\nfor fwd\r\n")
s.quit()

def messages(login, password):
    m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
    m.login(login, password)
    m.select("INBOX", readonly=True)
    typ, data = m.search(None, "ALL")
    out = []
    for n in data[0].split():
        typ, d = m.fetch(n, "(BODY.PEEK[])")
        out.append(email.message_from_bytes(d[0][1], policy=email.policy.default))
    m.logout()
    return out
got = messages("mate@example.org", "mate-secret")
subjects = [g["Subject"] for g in got]
assert subjects.count("Auto: Lunch?") == 1 and len([s for s in subjects if s.startswith("Auto:")]) == 1, subjects
auto = [g for g in got if g["Subject"] == "Auto: Lunch?"][0]
assert auto["Auto-Submitted"] == "auto-replied" and auto["In-Reply-To"] == "<l1@example.org>", auto
assert auto["From"].addresses[0].addr_spec == "away@example.org" and "Back on Monday." in auto.get_content(), auto
assert "Passed on" in subjects, subjects
assert messages("fwd@example.org", "fwd-secret") == [], "no copy kept"
assert len(messages("away@example.org", "away-secret")) == 3
print("ok")
"#;
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
}

/// The admin console: only for admins; a user made there signs in to the webmail; a
/// password reset there works; domains show the records to publish; aliases, groups,
/// contacts and public folders are made; the queue and tracking are shown; the
/// overview draws its charts.
#[test]
fn the_admin_console() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "root@example.org", "--password-stdin", "--admin"], Some("root-secret\n"));
    a.cli_ok(&["user", "add", "plain@example.org", "--password-stdin"], Some("plain-secret\n"));
    let script = r#"
import smtplib, urllib.parse
r, _, plain = sign_in("plain@example.org", "plain-secret")
r, page = req("GET", "/admin", cookies=plain)
assert r.status == 403, r.status
r, page = req("GET", "/mail/", cookies=plain)
assert 'href="/admin"' not in page

r, _, jar = sign_in("root@example.org", "root-secret")
r, page = req("GET", "/admin", cookies=jar)
assert r.status == 200 and "users</li>" in page and ("<svg" in page or "fill in" in page), page
csrf = re.search(r'name="csrf" content="([^"]+)"', page).group(1)
def post(to, **fields):
    return req("POST", to, urllib.parse.urlencode(dict(csrf=csrf, **fields)), cookies=jar)

r, page = post("/admin/users", what="add", login="new@example.org", name="New Person", password="new-secret-1", quota_mb="5")
assert r.status == 200 and "User new@example.org added." in page and "<meter" in page, page
r, _, newjar = sign_in("new@example.org", "new-secret-1")
assert r.status == 303, "the new user signs in"
r, page = post("/admin/users", what="add", login="short@example.org", password="x")
assert r.status == 400, r.status
r, page = post("/admin/users", what="password", login="new@example.org")
pw = re.search(r"New password of new@example.org: (\S+) \(shown once\)", page).group(1)
r, page = req("GET", "/mail/", cookies=newjar)
assert "Sign in" in page, "a reset signs the user out"
r, _, _ = sign_in("new@example.org", pw)
assert r.status == 303, "the new password works"
r, page = post("/admin/users", what="remove", login="root@example.org")
assert r.status == 400, "not oneself"

r, page = post("/admin/domains", what="add", name="second.test")
assert "Domain second.test added" in page and "second.test." in page and "MX" in page and "_domainkey" in page, page

r, page = post("/admin/directory", what="alias-add", address="sales@example.org", target="new@example.org")
assert "Alias sales@example.org added." in page and "sales@example.org → new@example.org" in page, page
r, page = post("/admin/directory", what="group-add", address="team@example.org", name="Team")
r, page = post("/admin/directory", what="member-add", address="team@example.org", member="plain@example.org")
assert "plain@example.org is now in team@example.org." in page, page
r, page = post("/admin/directory", what="contact-add", address="partner@remote.test", name="Partner Co", domain="example.org")
assert "Partner Co &lt;partner@remote.test&gt;" in page, page
r, page = post("/admin/public", what="add", path="Announcements", address="news@example.org")
assert "Public folder Announcements added." in page, page
r, page = post("/admin/public", what="permission", path="Announcements", who="anyone", role="reader")
assert "anyone (reader)" in page, page

# Mail to the alias is tracked; the queue shows what waits for a remote server.
s = smtplib.SMTP(ip, 10025, timeout=20)
s.sendmail("buyer@remote.test", ["sales@example.org"], b"From: buyer@remote.test\r\nSubject: order\r\n\r\none\r\n")
s.quit()
r, page = req("GET", "/admin/track?sender=buyer%40remote.test", cookies=jar)
assert "received" in page and "&lt;sales@example.org&gt;" in page, page
r, page = req("GET", "/admin/queue", cookies=jar)
assert r.status == 200 and ("The queue is empty." in page or "<table>" in page), page
r, page = post("/admin/users", what="name", login="new@example.org", name="Renamed Person")
assert "Name of new@example.org changed." in page and 'value="Renamed Person"' in page, page
r, page = req("GET", "/admin/users", cookies=jar)
assert "new@example.org" in page and "5.0 MB" in page, page
print("ok")
"#;
    python_ok(&format!("import sys; sys.argv = ['', {:?}]\n{BROWSER}{script}", a.ip));
}
