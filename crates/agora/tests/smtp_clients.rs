//! Real SMTP clients against the real binary: Python's smtplib, swaks, curl, and
//! openssl s_client for STARTTLS.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, have, python_ok, run};

#[test]
fn python_smtplib_delivers_and_sees_refusals() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    let script = format!(
        r#"
import smtplib, sys
s = smtplib.SMTP("{ip}", 10025, timeout=20)
code, ext = s.ehlo("client.test")
assert code == 250, code
for e in ("pipelining", "size", "8bitmime", "smtputf8", "chunking", "dsn", "starttls", "enhancedstatuscodes"):
    assert s.has_extn(e), e
refused = s.sendmail("sender@remote.test", ["admin@{d}"], "Subject: from smtplib\r\n\r\nhello\r\n")
assert refused == {{}}, refused
try:
    s.sendmail("sender@remote.test", ["nobody@{d}"], "Subject: x\r\n\r\nx\r\n")
    sys.exit("unknown user accepted")
except smtplib.SMTPRecipientsRefused as e:
    code, msg = e.recipients["nobody@{d}"]
    assert code == 550 and b"5.1.1" in msg, (code, msg)
try:
    s.sendmail("sender@remote.test", ["victim@elsewhere.test"], "Subject: x\r\n\r\nx\r\n")
    sys.exit("open relay!")
except smtplib.SMTPRecipientsRefused as e:
    code, msg = e.recipients["victim@elsewhere.test"]
    assert code == 554 and b"5.7.1" in msg, (code, msg)
s.starttls()
s.ehlo("client.test")
assert not s.has_extn("starttls")
refused = s.sendmail("sender@remote.test", ["postmaster@{d}"], "Subject: over tls\r\n\r\nsecret\r\n")
assert refused == {{}}, refused
s.quit()
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN
    );
    python_ok(&script);
    // postmaster@ is an alias of the administrator: both messages landed there.
    assert_eq!(a.inbox_count(&format!("admin@{DOMAIN}")), 2);
}

#[test]
fn swaks_plain_starttls_and_bdat() {
    if !have("swaks") {
        return;
    }
    let a = Agora::start();
    let to = format!("admin@{DOMAIN}");
    let (ok, out) =
        run("swaks", &["--server", &a.smtp(), "--to", &to, "--from", "s@remote.test", "--helo", "swaks.test"], "");
    assert!(ok && out.contains("250 2.0.0 Ok: queued"), "{out}");
    let (ok, out) = run("swaks", &["--server", &a.smtp(), "--to", &to, "--from", "s@remote.test", "--tls"], "");
    assert!(ok && out.contains("250 2.0.0 Ok: queued") && out.contains("TLS started"), "{out}");
    let (ok, out) = run("swaks", &["--server", &a.smtp(), "--to", "ghost@example.org", "--from", "s@remote.test"], "");
    assert!(!ok && out.contains("550 5.1.1"), "{out}");
    assert_eq!(a.inbox_count(&to), 2);
}

#[test]
fn curl_smtp_upload() {
    if !have("curl") {
        return;
    }
    let a = Agora::start();
    let url = format!("smtp://{}/curl.test", a.smtp());
    let rcpt = format!("<admin@{DOMAIN}>");
    let (ok, out) = run(
        "curl",
        &["-sS", "--url", &url, "--mail-from", "<c@remote.test>", "--mail-rcpt", &rcpt, "-T", "-"],
        "From: c@remote.test\r\nSubject: from curl\r\n\r\nbody\r\n",
    );
    assert!(ok, "{out}");
    assert_eq!(a.inbox_count(&format!("admin@{DOMAIN}")), 1);
}

#[test]
fn openssl_starttls_handshake() {
    if !have("openssl") {
        return;
    }
    let a = Agora::start();
    let (_, out) = run(
        "openssl",
        &[
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &a.smtp(),
            "-servername",
            "mx.example.org",
            "-brief",
            "-ign_eof",
            "-nocommands",
        ],
        "EHLO tls.test\r\nQUIT\r\n",
    );
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    assert!(out.contains("250-mx.example.org") && out.contains("250 DSN"), "{out}");
    assert!(out.contains("221 2.0.0"), "{out}");
}

#[test]
fn commands_injected_before_tls_are_discarded() {
    if !have("openssl") {
        return;
    }
    // The plaintext "NOOP" sent in the same packet as STARTTLS must not run inside TLS.
    let a = Agora::start();
    let script = format!(
        r#"
import socket, ssl
s = socket.create_connection(("{ip}", 10025), timeout=10)
f = s.makefile("rb")
f.readline()
s.sendall(b"EHLO x\r\n")
while True:
    l = f.readline()
    if l[3:4] == b" ": break
s.sendall(b"STARTTLS\r\nRSET\r\n")
assert f.readline().startswith(b"220")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="mx.example.org")
t.sendall(b"NOOP\r\n")
r = t.recv(1000)
assert r.startswith(b"250 2.0.0 Ok"), r
t.settimeout(1)
try:
    extra = t.recv(1000)
except socket.timeout:
    extra = b""
assert extra == b"", ("injected command was answered", extra)
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn large_message_and_many_recipients_with_smtplib() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("pw-bob\n"));
    // 3 MiB body: stored as a blob file rather than inline, once for both recipients.
    let script = format!(
        r#"
import smtplib
body = "Subject: big\r\n\r\n" + ("0123456789abcdef" * 60 + "\r\n") * 3200
s = smtplib.SMTP("{ip}", 10025, timeout=60)
s.ehlo("big.test")
refused = s.sendmail("s@remote.test", ["admin@{d}", "bob@{d}", "nobody@{d}"], body)
assert list(refused) == ["nobody@{d}"], refused
s.quit()
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN
    );
    python_ok(&script);
    assert_eq!(a.inbox_count(&format!("admin@{DOMAIN}")), 1);
    assert_eq!(a.inbox_count("bob@example.org"), 1);
    let blobs = a.data().join("blobs");
    let staging = blobs.join("tmp").display().to_string();
    let blob_files: Vec<_> = walk(&blobs).into_iter().filter(|p| !p.starts_with(&staging)).collect();
    assert_eq!(blob_files.len(), 1, "one body file for two recipients: {blob_files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn submission_with_auth_on_587_and_465() {
    if !have("python3") || !have("swaks") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "sender@example.org", "--password-stdin"], Some("send-pw\n"));
    let script = format!(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.ehlo("client.test")
assert s.has_extn("starttls") and "PLAIN" not in s.esmtp_features.get("auth", ""), s.esmtp_features
try:
    s.sendmail("sender@{d}", ["friend@remote.test"], "Subject: x\r\n\r\nx\r\n")
    sys.exit("mail without AUTH accepted on submission")
except smtplib.SMTPSenderRefused as e:
    assert e.smtp_code == 530, e
s.starttls(context=ctx); s.ehlo("client.test")
assert "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
try:
    s.login("sender@{d}", "wrong"); sys.exit("bad password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login("sender@{d}", "send-pw")
try:
    s.sendmail("admin@{d}", ["friend@remote.test"], "Subject: x\r\n\r\nx\r\n"); sys.exit("spoofed sender accepted")
except smtplib.SMTPSenderRefused as e:
    assert e.smtp_code == 550, e
refused = s.sendmail("sender@{d}", ["friend@remote.test", "admin@{d}"], "From: sender@{d}\r\nSubject: out\r\n\r\nhello\r\n")
assert refused == {{}}, refused
s.quit()
# Implicit TLS on 465 (RFC 8314).
s = smtplib.SMTP_SSL("{ip}", 10465, context=ctx, timeout=20)
s.login("sender@{d}", "send-pw")
refused = s.sendmail("sender@{d}", ["other@remote.test"], "From: sender@{d}\r\nSubject: out2\r\n\r\nhello\r\n")
assert refused == {{}}, refused
s.quit()
print("ok")
"#,
        ip = a.ip,
        d = DOMAIN
    );
    python_ok(&script);
    let sub = format!("{}:10587", a.ip);
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            &sub,
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "sender@example.org",
            "--auth-password",
            "send-pw",
            "--from",
            "sender@example.org",
            "--to",
            "third@remote.test",
        ],
        "",
    );
    assert!(ok && out.contains("235 2.7.0") && out.contains("250 2.0.0 Ok: queued"), "{out}");
    assert_eq!(a.inbox_count(&format!("admin@{DOMAIN}")), 1, "the local recipient got its copy");
    let queue = a.cli_ok(&["queue", "list"], None);
    for rcpt in ["friend@remote.test", "other@remote.test", "third@remote.test"] {
        assert!(queue.contains(rcpt), "{rcpt} not queued: {queue}");
    }
    // The administrator's view of the queue.
    let id = queue.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    assert!(a.cli_ok(&["queue", "show", &id], None).contains("to:           <friend@remote.test>"));
    a.cli_ok(&["queue", "hold", &id], None);
    assert!(a.cli_ok(&["queue", "list"], None).contains("(held)"));
    a.cli_ok(&["queue", "release", &id], None);
    assert!(!a.cli_ok(&["queue", "list"], None).contains("(held)"));
    a.cli_ok(&["queue", "delete", &id], None);
    assert!(!a.cli_ok(&["queue", "list"], None).contains("friend@remote.test"));
    assert!(!a.cli(&["queue", "show", &id], None).status.success());
}
