//! Real POP3 clients against the real binary: Python's poplib (STLS, POP3S, SASL PLAIN,
//! SCRAM-SHA-256 without TLS), fetchmail and curl.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, have, python_ok, run};

const BODY: &str = "From: s@remote.test\r\nSubject: pop test\r\n\r\nfirst line\r\n.leading dot\r\nlast line\r\n";

/// A server with user pop@example.org (password "pop-secret") and two messages.
fn server() -> Agora {
    let a = Agora::start();
    a.add_user_with_mail("pop@example.org", "pop-secret", &[BODY.to_string(), BODY.to_string()]);
    a
}

#[test]
fn poplib_stls_pop3s_and_sasl() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import poplib, ssl, base64, hashlib, hmac, os
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
body = {body:?}.encode()

# Port 110: no plaintext password before STLS.
p = poplib.POP3("{ip}", 10110, timeout=20)
caps = p.capa()
assert "STLS" in caps and "USER" not in caps and caps["SASL"] == ["SCRAM-SHA-256"], caps
try:
    p.user("pop@{d}"); raise SystemExit("USER accepted in the clear")
except poplib.error_proto as e:
    assert b"[AUTH]" in e.args[0], e
p.stls(context=ctx)
assert "USER" in p.capa()
p.user("pop@{d}"); p.pass_("pop-secret")
count, size = p.stat()
assert count == 2, count
resp, lines, octets = p.retr(1)
got = b"\r\n".join(lines) + b"\r\n"
assert got.endswith(body), got
assert got.startswith(b"Return-Path: <s@remote.test>"), got
assert octets >= len(got), (octets, len(got))
uidl1 = p.uidl()
p.quit()

# Port 995: implicit TLS, SASL PLAIN; UIDLs stable; DELE then QUIT removes.
p = poplib.POP3_SSL("{ip}", 10995, context=ctx, timeout=20)
p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0pop@{d}\0pop-secret").decode())
assert p.uidl() == uidl1
p.dele(1)
p.quit()

# SCRAM-SHA-256 needs no TLS: the password never crosses the wire.
p = poplib.POP3("{ip}", 10110, timeout=20)
cnonce = base64.b64encode(os.urandom(12)).decode()
first_bare = "n=pop@{d},r=" + cnonce
r = p._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(("n,," + first_bare).encode()).decode())
server_first = base64.b64decode(r[2:]).decode()
attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
assert attrs["r"].startswith(cnonce)
salted = hashlib.pbkdf2_hmac("sha256", b"pop-secret", base64.b64decode(attrs["s"]), int(attrs["i"]))
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
stored = hashlib.sha256(client_key).digest()
without_proof = "c=biws,r=" + attrs["r"]
auth = ",".join([first_bare, server_first, without_proof]).encode()
proof = bytes(a ^ b for a, b in zip(client_key, hmac.new(stored, auth, "sha256").digest()))
r = p._shortcmd(base64.b64encode((without_proof + ",p=" + base64.b64encode(proof).decode()).encode()).decode())
server_sig = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth, "sha256").digest()
assert base64.b64decode(r[2:]) == b"v=" + base64.b64encode(server_sig), r
r = p._shortcmd("")
assert r.startswith(b"+OK"), r
assert p.stat()[0] == 1
p.quit()
print("ok")
"#,
        body = BODY,
        ip = a.ip,
        d = DOMAIN
    );
    python_ok(&script);
    assert_eq!(a.inbox_count("pop@example.org"), 1);
}

#[test]
fn wrong_password_is_refused_and_slowed() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import poplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL("{ip}", 10995, context=ctx, timeout=30)
times = []
for i in range(3):
    p.user("pop@{d}")
    t = time.time()
    try:
        p.pass_("wrong"); raise SystemExit("accepted")
    except poplib.error_proto as e:
        assert b"[AUTH]" in e.args[0], e
    times.append(time.time() - t)
assert times[2] > times[0] and times[2] >= 0.9, times
print("ok", times)
"#,
        ip = a.ip,
        d = DOMAIN
    );
    python_ok(&script);
}

#[test]
fn curl_pop3s_and_pop3_with_stls() {
    if !have("curl") {
        return;
    }
    let a = server();
    let (ok, out) =
        run("curl", &["-sS", "-k", "--user", "pop@example.org:pop-secret", &format!("pop3s://{}:10995/1", a.ip)], "");
    assert!(ok && out.contains("Subject: pop test") && out.contains(".leading dot"), "{out}");
    let (ok, out) = run(
        "curl",
        &["-sS", "-k", "--ssl-reqd", "--user", "pop@example.org:pop-secret", &format!("pop3://{}:10110/", a.ip)],
        "",
    );
    assert!(ok && out.lines().count() == 2 && out.starts_with("1 "), "{out}");
}

#[test]
fn fetchmail_downloads_into_an_mda() {
    if !have("fetchmail") {
        return;
    }
    let a = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mbox");
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll {ip} with proto POP3 service 10110 and options no dns\n  \
             user \"pop@example.org\" there with password \"pop-secret\" is \"root\" here\n  \
             sslproto 'tls1.2+' no sslcertck\n  fetchall\n  mda \"/bin/sh -c 'cat >> {out}'\"\n",
            ip = a.ip,
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let home = dir.path().display().to_string();
    let (ok, log) = run("env", &[&format!("HOME={home}"), "fetchmail", "-f", rc.to_str().unwrap(), "-v"], "");
    assert!(ok, "{log}");
    let mbox = std::fs::read_to_string(&out).unwrap();
    assert_eq!(mbox.matches("Subject: pop test").count(), 2, "{mbox}");
    assert!(mbox.contains(".leading dot"), "dot-unstuffed: {mbox}");
    // fetchmail deletes what it fetched (no "keep").
    assert_eq!(a.inbox_count("pop@example.org"), 0);
}

#[test]
fn pop3_and_imap_on_the_same_inbox() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import imaplib, poplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
im = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
im.login("pop@example.org", "pop-secret")
typ, data = im.select("INBOX"); assert data == [b"2"], data

# POP3 deletes message 1: the IMAP session sees an EXPUNGE at its next NOOP.
p = poplib.POP3_SSL("{ip}", 10995, context=ctx, timeout=20)
p.user("pop@example.org"); p.pass_("pop-secret")
p.dele(1); p.quit()
im.noop()
assert im.untagged_responses.get("EXPUNGE") == [b"1"], im.untagged_responses

# IMAP expunges the other message while POP3 holds the maildrop: RETR fails, the
# session goes on, QUIT succeeds.
p = poplib.POP3_SSL("{ip}", 10995, context=ctx, timeout=20)
p.user("pop@example.org"); p.pass_("pop-secret")
assert p.stat()[0] == 1
im.store("1", "+FLAGS", "\\Deleted"); im.expunge()
try:
    p.retr(1); raise SystemExit("retrieved an expunged message")
except poplib.error_proto as e:
    assert b"-ERR" in e.args[0]
assert p.noop().startswith(b"+OK")
assert p.quit().startswith(b"+OK")
typ, data = im.select("INBOX"); assert data == [b"0"], data
im.logout()
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}
