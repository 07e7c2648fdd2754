//! Sieve at delivery through the real binary: a script uploaded over ManageSieve
//! (STARTTLS, AUTHENTICATE PLAIN, PUTSCRIPT, SETACTIVE) files, flags, edits, redirects,
//! rejects, discards and answers mail that arrives over SMTP; IMAP shows the result.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, SmtpClient, have, python_ok};

const SCRIPT: &str = r#"require ["fileinto", "imap4flags", "variables", "envelope", "vacation", "reject",
         "editheader", "mailbox", "subaddress", "copy", "duplicate"];
if header :contains "subject" "reject me" { reject "No thanks."; stop; }
if envelope :detail "to" "lists" { fileinto :create "Lists"; stop; }
if header :matches "subject" "flag *" { addflag ["\\Flagged", "${1}"]; }
if header :contains "subject" "copy" { redirect :copy "carol@example.org"; }
if header :contains "subject" "discard" { discard; stop; }
if header :contains "subject" "away" { vacation :days 1 :subject "Out" "I am away."; }
if header :contains "subject" "missing" { fileinto "No/Such/Folder"; stop; }
if header :contains "subject" "dup" { if duplicate { discard; stop; } }
if header :contains "subject" "self redirect" { redirect "bob@example.org"; stop; }
addheader "X-Sieved" "yes";
"#;

/// Sends one message over SMTP; the reply to its data.
fn try_send(a: &Agora, from: &str, to: &str, subject: &str) -> String {
    let (mut c, _) = SmtpClient::connect(&a.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    let body = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@t.test>\r\n\r\nhello\r\n",
        subject.replace(' ', ".")
    );
    c.send_message(from, &[to], &body).unwrap()
}

fn send(a: &Agora, from: &str, to: &str, subject: &str) {
    let r = try_send(a, from, to, subject);
    assert!(r.starts_with("250"), "{subject}: {r}");
}

/// Uploads and activates a script for `user` with a small ManageSieve client (RFC 5804)
/// over STARTTLS, checking that a broken script is refused first.
fn upload(a: &Agora, user: &str, script: &str) {
    python_ok(&format!(
        r#"
import socket, ssl, base64
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(("{ip}", 14190), timeout=20)
f = s.makefile("rb")
def response():
    lines = []
    while True:
        l = f.readline().decode()
        assert l, "connection closed"
        lines.append(l)
        if l.startswith(("OK", "NO", "BYE")):
            return lines
greeting = response()
assert any('"STARTTLS"' in l for l in greeting), greeting
s.sendall(b"STARTTLS\r\n"); assert response()[-1].startswith("OK")
s = ctx.wrap_socket(s); f = s.makefile("rb")
caps = response()
assert any('"SIEVE"' in l and "fileinto" in l for l in caps), caps
cred = base64.b64encode(b"\0{user}@{d}\0sieve-secret").decode()
s.sendall(('AUTHENTICATE "PLAIN" "%s"\r\n' % cred).encode()); r = response()
assert r[-1].startswith("OK"), r
bad = b'if true {{'
s.sendall(b'PUTSCRIPT "bad" {{%d+}}\r\n' % len(bad) + bad + b"\r\n"); r = response()
assert r[-1].startswith("NO"), r
script = {script:?}.encode()
s.sendall(b'PUTSCRIPT "main" {{%d+}}\r\n' % len(script) + script + b"\r\n"); r = response()
assert r[-1].startswith("OK"), r
s.sendall(b'SETACTIVE "main"\r\n'); r = response(); assert r[-1].startswith("OK"), r
s.sendall(b"LISTSCRIPTS\r\n"); r = response()
assert any('"main" ACTIVE' in l for l in r), r
s.sendall(b"LOGOUT\r\n"); response()
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN,
    ));
}

#[test]
fn a_script_uploaded_over_managesieve_sorts_mail() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    for u in ["bob", "carol", "dave"] {
        a.cli_ok(&["user", "add", &format!("{u}@{DOMAIN}"), "--password-stdin"], Some("sieve-secret\n"));
    }
    upload(&a, "bob", SCRIPT);
    // A script refusing with ereject: said in the SMTP reply, no bounce.
    upload(
        &a,
        "carol",
        "require \"ereject\"; if header :contains \"subject\" \"refuse\" { ereject \"Not wanted here\"; }",
    );

    let bob = format!("bob@{DOMAIN}");
    let dave = format!("dave@{DOMAIN}");
    send(&a, &dave, &format!("bob+lists@{DOMAIN}"), "list mail");
    send(&a, &dave, &bob, "flag urgent");
    send(&a, &dave, &bob, "please copy");
    send(&a, &dave, &bob, "discard this");
    send(&a, &dave, &bob, "reject me");
    send(&a, &dave, &bob, "away test");
    send(&a, &dave, &bob, "missing folder");
    send(&a, &dave, &bob, "dup one");
    send(&a, &dave, &bob, "dup one");
    let refused = try_send(&a, &dave, &format!("carol@{DOMAIN}"), "please refuse");
    assert!(refused.starts_with("550 5.7.1 Not wanted here"), "{refused}");
    // A redirect to the account itself keeps the copy.
    send(&a, &dave, &bob, "self redirect");

    python_ok(&format!(
        r#"
import imaplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login(u):
    m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
    m.login(u + "@{d}", "sieve-secret")
    return m
def subjects(m, box):
    typ, _ = m.select(box, readonly=True)
    assert typ == "OK", box
    typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT X-SIEVED)])")
    out = {{}}
    for item in data:
        if isinstance(item, tuple):
            head = item[1].decode()
            subj = [l[9:] for l in head.split("\r\n") if l.lower().startswith("subject: ")][0]
            out[subj] = (item[0].decode(), "X-Sieved: yes" in head)
    return out
bob = login("bob")
lists = subjects(bob, "Lists")
assert list(lists) == ["list mail"], lists
inbox = subjects(bob, "INBOX")
assert set(inbox) == {{"flag urgent", "please copy", "away test", "missing folder", "dup one", "self redirect"}}, inbox
flags, sieved = inbox["flag urgent"]
assert "\\Flagged" in flags and "urgent" in flags and sieved, inbox["flag urgent"]
# Filed before the header was added, and into INBOX as its folder does not exist.
assert all(s for (k, (_, s)) in inbox.items() if k not in ("missing folder", "self redirect")), inbox
assert not inbox["missing folder"][1], inbox
# A second copy with the same Message-ID was a duplicate.
typ, data = bob.search(None, 'SUBJECT "dup one"'); assert len(data[0].split()) == 1, data

carol = login("carol")
assert list(subjects(carol, "INBOX")) == ["please copy"]

# dave: the rejection (a delivery report naming the reason) and the vacation reply.
deadline = time.time() + 20
while True:
    dave = login("dave")
    typ, _ = dave.select("INBOX", readonly=True)
    typ, data = dave.fetch("1:*", "(BODY.PEEK[])")
    bodies = [item[1].decode(errors="replace") for item in data if isinstance(item, tuple)]
    if len(bodies) >= 2 or time.time() > deadline:
        break
    time.sleep(0.3)
rejection = [b for b in bodies if "No thanks." in b]
reply = [b for b in bodies if "Subject: Out" in b]
assert rejection and "5.7.1" in rejection[0], bodies
assert reply and "Auto-Submitted: auto-replied" in reply[0] and "I am away." in reply[0], bodies
assert len(bodies) == 2, bodies
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN,
    ));
}
