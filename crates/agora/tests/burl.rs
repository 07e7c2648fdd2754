//! URLAUTH and BURL through the real binary: a message saved over IMAP is sent on by
//! submission from its URL (RFC 4467, RFC 4468), never uploaded twice; a URL for
//! another user, a reset key or a changed token is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, have, python_ok};

#[test]
fn burl_sends_a_saved_message_by_its_url() {
    if !have("python3") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[server]\nhostname = \"mx.{DOMAIN}\"\ndomain = \"{DOMAIN}\"\n[auth]\nplaintext_without_tls = true\n"
            ),
        )
        .unwrap();
    });
    for u in ["ann", "ben"] {
        a.cli_ok(&["user", "add", &format!("{u}@{DOMAIN}"), "--password-stdin"], Some("burl-secret\n"));
    }
    python_ok(&format!(
        r#"
import imaplib, smtplib, time
for c in ("GENURLAUTH", "RESETKEY", "URLFETCH"):
    imaplib.Commands[c] = ("AUTH", "SELECTED")
d = "{d}"
m = imaplib.IMAP4("{ip}", 10143, timeout=20)
m.login("ann@" + d, "burl-secret")
caps = m.capabilities
assert "URLAUTH" in caps, caps
msg = b"From: ann@" + d.encode() + b"\r\nTo: ben@" + d.encode() + b"\r\nSubject: by reference\r\n\r\nSent from its URL.\r\n"
typ, data = m.append("Drafts", None, None, msg)
assert typ == "OK", data
uid = data[0].decode().split("APPENDUID ")[1].split()[1].rstrip("]")
m.select("Drafts")
def gen(access):
    typ, data = m._simple_command("GENURLAUTH", '"imap://ann@%s/Drafts/;uid=%s;urlauth=%s"' % (d, uid, access), "INTERNAL")
    assert typ == "OK", data
    return m.untagged_responses.pop("GENURLAUTH")[0].decode().strip('"')
url = gen("submit+ann@" + d)
other = gen("submit+ben@" + d)

s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.ehlo(); s.login("ann@" + d, "burl-secret"); s.ehlo()
assert "burl" in s.esmtp_features and "imap" in s.esmtp_features["burl"], s.esmtp_features
# A URL for another submitter, and a tampered token, are refused.
for bad in (other, url[:-4] + ("0000" if not url.endswith("0000") else "1111")):
    s.mail("ann@" + d); s.rcpt("ben@" + d)
    code, text = s.docmd("BURL", bad + " LAST")
    assert code == 554, (code, text)
    s.rset()
s.mail("ann@" + d); s.rcpt("ben@" + d)
code, text = s.docmd("BURL", url + " LAST")
assert code == 250, (code, text)
# After RESETKEY the same URL no longer works.
typ, data = m._simple_command("RESETKEY")
assert typ == "OK", data
s.mail("ann@" + d); s.rcpt("ben@" + d)
code, text = s.docmd("BURL", url + " LAST")
assert code == 554, (code, text)
s.quit()

b = imaplib.IMAP4("{ip}", 10143, timeout=20)
b.login("ben@" + d, "burl-secret")
b.select("INBOX")
typ, data = b.search(None, "ALL")
assert len(data[0].split()) == 1, data
typ, data = b.fetch("1", "(BODY.PEEK[])")
body = data[0][1]
assert body.endswith(msg), body
assert b"DKIM-Signature" in body or b"Received:" in body, body
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN,
    ));
}
