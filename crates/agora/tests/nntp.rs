//! Public folders over NNTP with real clients: Python's nntplib over 563 and STARTTLS
//! on 119, the same folder seen over NNTP, IMAP and SMTP, moderation from the command
//! line, expiry, and an article fetched with `openssl s_client`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Agora, have, python_ok, run};

fn start() -> Agora {
    let a = Agora::start_with(|data| {
        // Submission in the clear for the harness's SMTP client; expiry checked often.
        std::fs::write(
            data.join("agora.toml"),
            "[auth]\nplaintext_without_tls = true\n[nntp]\nexpire_interval_secs = 1\n",
        )
        .unwrap();
    });
    for u in ["alice", "bob", "carol"] {
        a.cli_ok(&["user", "add", &format!("{u}@example.org"), "--password-stdin"], Some("pw\n"));
    }
    a.cli_ok(&["public", "add", "Agora Test", "--newsgroup", "agora.test", "--address", "test@example.org"], None);
    a.cli_ok(&["public", "permission", "Agora Test", "anyone", "reader"], None);
    a.cli_ok(&["public", "permission", "Agora Test", "alice@example.org", "author"], None);
    a.cli_ok(&["public", "add", "Private"], None);
    a.cli_ok(&["public", "permission", "Private", "alice@example.org", "author"], None);
    a
}

const PRELUDE: &str = r#"
import nntplib, imaplib, ssl, io, time, warnings
warnings.simplefilter("ignore")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
"#;

#[test]
fn nntplib_reads_and_posts_and_the_folder_is_one_over_nntp_imap_and_smtp() {
    let a = start();
    python_ok(&format!(
        r#"{PRELUDE}
ip = "{ip}"
# Anonymous reading over implicit TLS: only what anyone may read.
s = nntplib.NNTP_SSL(ip, 10563, ssl_context=ctx, readermode=True)
assert "READER" in s.getcapabilities(), s.getcapabilities()
resp, groups = s.list()
assert [g.group for g in groups] == ["agora.test"], groups
try:
    s.group("private")
    raise SystemExit("a private group was shown")
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("411"), e
s.quit()

# Logged in (STARTTLS on 119): post, then read it back.
s = nntplib.NNTP(ip, 10119, readermode=True)
s.starttls(context=ctx)
s.login("alice@example.org", "pw")
resp, groups = s.list()
assert sorted(g.group for g in groups) == ["agora.test", "private"], groups
article = b"From: Alice <alice@example.org>\r\nNewsgroups: agora.test\r\nSubject: Hello news\r\nMessage-ID: <hello@example.org>\r\n\r\nFirst post.\r\n.leading dot\r\n"
resp = s.post(io.BytesIO(article))
assert resp.startswith("240"), resp
resp, count, first, last, name = s.group("agora.test")
assert (count, first, last, name) == (1, 1, 1, "agora.test"), resp
resp, overviews = s.over((first, last))
num, over = overviews[0]
assert num == 1 and over["subject"] == "Hello news" and over["message-id"] == "<hello@example.org>", over
assert int(over[":lines"]) == 2, over
resp, info = s.article("<hello@example.org>")
text = b"\r\n".join(info.lines)
assert b"\r\n\r\nFirst post.\r\n.leading dot" in text and text.startswith(b"Path: mx.example.org!"), text
assert b"Injection-Info: mx.example.org; posting-account=\"alice@example.org\"" in text, text
s.quit()

# The same folder over IMAP: the article is the message with UID 1.
m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx)
m.login("alice@example.org", "pw")
typ, data = m.select('"Public Folders/Agora Test"')
assert typ == "OK" and data[0] == b"1", (typ, data)
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert b"Hello news" in data[0][1], data
print("ok")
"#,
        ip = a.ip
    ));

    // Mailed to the folder's address: it becomes article 2.
    a.submit("alice@example.org", "pw", &["test@example.org"], "From: alice@example.org\r\nTo: test@example.org\r\nSubject: By mail\r\nMessage-ID: <mailed@example.org>\r\n\r\nmailed in\r\n");
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
resp, count, first, last, name = s.group("agora.test")
assert (count, last) == (2, 2), resp
resp, info = s.article(2)
assert info.message_id == "<mailed@example.org>" and b"mailed in" in info.lines, info
resp, info = s.head("<mailed@example.org>")
assert any(l.startswith(b"Subject: By mail") for l in info.lines), info
# NEWNEWS and NEWGROUPS as readers use them.
import datetime
resp, ids = s.newnews("agora.*", datetime.datetime(2000, 1, 1))
assert sorted(ids) == ["<hello@example.org>", "<mailed@example.org>"], ids
resp, groups = s.newgroups(datetime.datetime(2000, 1, 1))
assert [g.group for g in groups] == ["agora.test"], groups
s.quit()
print("ok")
"#,
        ip = a.ip
    ));

    // Bob may not read Private: its articles are neither news nor mail to him.
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
s.login("alice@example.org", "pw")
s.post(io.BytesIO(b"From: alice@example.org\r\nNewsgroups: private\r\nSubject: secret\r\nMessage-ID: <secret@example.org>\r\n\r\nx\r\n"))
s.quit()
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
s.login("bob@example.org", "pw")
for probe in (lambda: s.group("private"), lambda: s.article("<secret@example.org>")):
    try:
        probe()
        raise SystemExit("bob saw the private group")
    except nntplib.NNTPTemporaryError as e:
        assert str(e)[:3] in ("411", "430"), e
try:
    s.post(io.BytesIO(b"From: bob@example.org\r\nNewsgroups: agora.test\r\nSubject: s\r\n\r\nx\r\n"))
    raise SystemExit("bob posted without the right")
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("441"), e
s.quit()
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("bob@example.org", "pw")
names = b" ".join(m.list('""', '"*"')[1])
assert b"Private" not in names and b"Agora Test" in names, names
print("ok")
"#,
        ip = a.ip
    ));
}

#[test]
fn plaintext_logins_wait_for_tls_and_failures_are_slowed() {
    let a = Agora::start();
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("pw\n"));
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP("{ip}", 10119)
caps = s.getcapabilities()
assert caps["AUTHINFO"] == ["SASL"] and "STARTTLS" in caps and "COMPRESS" in caps, caps
try:
    s.login("alice@example.org", "pw", usenetrc=False)
    raise SystemExit("a password went in the clear")
except nntplib.NNTPError as e:
    assert str(e).startswith("483"), e
s.quit()
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
t = time.time()
for _ in range(2):
    try:
        s.login("alice@example.org", "wrong", usenetrc=False)
    except nntplib.NNTPError as e:
        assert str(e).startswith("481"), e
assert time.time() - t > 0.5, "failures are slowed down"
s.login("alice@example.org", "pw", usenetrc=False)
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
}

#[test]
fn moderation_from_the_command_line_and_expiry() {
    let a = start();
    a.cli_ok(&["public", "set", "Agora Test", "--moderated", "yes"], None);
    a.cli_ok(&["public", "permission", "Agora Test", "carol@example.org", "moderator"], None);
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
s.login("alice@example.org", "pw")
for i in range(3):
    resp = s.post(io.BytesIO(("From: alice@example.org\r\nNewsgroups: agora.test\r\nSubject: wait %d\r\n\r\nx\r\n" % i).encode()))
    assert resp.startswith("240") and "moderator" in resp, resp
resp, count, first, last, name = s.group("agora.test")
assert count == 0, resp
s.quit()
# The moderator sees the queue over IMAP; others do not.
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("carol@example.org", "pw")
typ, data = m.select('"Public Folders/Agora Test/Moderation Queue"')
assert typ == "OK" and data[0] == b"3", (typ, data)
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("alice@example.org", "pw")
typ, data = m.select('"Public Folders/Agora Test/Moderation Queue"')
assert typ == "NO", (typ, data)
print("ok")
"#,
        ip = a.ip
    ));
    let pending = a.cli_ok(&["public", "pending", "Agora Test"], None);
    assert_eq!(pending.lines().count(), 3, "{pending}");
    assert!(pending.contains("wait 0") && pending.contains("alice@example.org"), "{pending}");
    let out = a.cli_ok(&["public", "approve", "Agora Test", "1", "2"], None);
    assert!(out.contains("1 approved: article 1") && out.contains("2 approved: article 2"), "{out}");
    a.cli_ok(&["public", "reject", "Agora Test", "3"], None);
    assert!(a.cli_ok(&["public", "pending", "Agora Test"], None).contains("nothing waits"));
    // A moderator approves over IMAP by moving.
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
s.login("alice@example.org", "pw")
s.post(io.BytesIO(b"From: alice@example.org\r\nNewsgroups: agora.test\r\nSubject: moved in\r\n\r\nx\r\n"))
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("carol@example.org", "pw")
m.select('"Public Folders/Agora Test/Moderation Queue"')
typ, data = m.uid("MOVE", "1:*", '"Public Folders/Agora Test"')
assert typ == "OK", (typ, data)
resp, count, first, last, name = s.group("agora.test")
assert count == 3, resp
resp, over = s.over((last, last))
assert over[0][1]["subject"] == "moved in", over
print("ok")
"#,
        ip = a.ip
    ));
    // Expiry keeps the newest two.
    a.cli_ok(&["public", "set", "Agora Test", "--expire-count", "2"], None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = run(
            "python3",
            &[
                "-c",
                &format!(
                    "{PRELUDE}\ns = nntplib.NNTP_SSL('{}', 10563, ssl_context=ctx)\nprint(s.group('agora.test')[0])",
                    a.ip
                ),
            ],
            "",
        );
        assert!(ok, "{out}");
        if out.starts_with("211 2 2 3 agora.test") {
            break;
        }
        assert!(Instant::now() < deadline, "not expired: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_article_over_nntps_with_openssl() {
    if !have("openssl") {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "openssl is missing");
        return;
    }
    let a = start();
    a.submit(
        "alice@example.org",
        "pw",
        &["test@example.org"],
        "From: alice@example.org\r\nSubject: fetched\r\nMessage-ID: <f@example.org>\r\n\r\nover TLS\r\n",
    );
    let (ok, out) = run(
        "openssl",
        &["s_client", "-quiet", "-connect", &format!("{}:10563", a.ip)],
        "GROUP agora.test\r\nARTICLE 1\r\nQUIT\r\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("211 1 1 1 agora.test") && out.contains("220 1 <f@example.org> article"), "{out}");
    assert!(out.contains("\r\nover TLS\r\n.\r\n205"), "{out}");
}

/// tin, a full-screen newsreader, driven in tmux: it lists the groups, reads a thread
/// and posts (AUTHINFO from its .newsauth).
#[test]
fn tin_lists_reads_and_posts() {
    if !have("tin") || !have("tmux") {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "tin or tmux is missing");
        return;
    }
    let a = start();
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
s.login("alice@example.org", "pw")
s.post(io.BytesIO(b"From: Alice <alice@example.org>\r\nNewsgroups: agora.test\r\nSubject: Hello tin\r\n\r\nThe body of the first post.\r\n"))
print("ok")
"#,
        ip = a.ip
    ));
    let home = a.dir.path().join("tin-home");
    std::fs::create_dir_all(home.join(".tin")).unwrap();
    std::fs::write(home.join(".newsrc"), "agora.test:\n").unwrap();
    std::fs::write(home.join(".newsauth"), format!("{} pw alice@example.org\n", a.ip)).unwrap();
    run("chmod", &["600", &home.join(".newsauth").display().to_string()], "");
    std::fs::write(home.join(".tin/tinrc"), "mail_address=Alice <alice@example.org>\n").unwrap();
    // The "editor" appends the body to the article tin prepared.
    let editor = home.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nfor f; do :; done\necho 'Posted from tin.' >> \"$f\"\n").unwrap();
    run("chmod", &["755", &editor.display().to_string()], "");
    let session = format!("agora-tin-{}", std::process::id());
    let cmd = format!(
        "HOME={home} TERM=xterm EDITOR={ed} VISUAL={ed} tin -A -r -q -g {ip} -p 10119",
        home = home.display(),
        ed = editor.display(),
        ip = a.ip
    );
    let tmux = |args: &[&str]| std::process::Command::new("tmux").args(args).output().unwrap();
    tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &cmd]);
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    let wait_for = |what: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = screen();
            if what.iter().any(|w| s.contains(w)) {
                return s;
            }
            if Instant::now() > deadline {
                tmux(&["kill-session", "-t", &session]);
                panic!("tin never showed {what:?}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let keys = |k: &[&str]| {
        let mut args = vec!["send-keys", "-t", session.as_str()];
        args.extend_from_slice(k);
        tmux(&args);
    };
    if wait_for(&["Group Selection", "Press <RETURN>"]).contains("Press <RETURN>") {
        keys(&["Enter"]);
    }
    let groups = wait_for(&["agora.test"]);
    assert!(groups.contains("Group Selection") && groups.contains("Agora Test"), "{groups}");
    keys(&["Enter"]);
    wait_for(&["Hello tin"]);
    keys(&["Enter"]);
    let article = wait_for(&["The body of the first post."]);
    assert!(article.contains("Alice <alice@example.org>"), "{article}");
    keys(&["q"]);
    keys(&["q"]);
    wait_for(&["Group Selection"]);
    keys(&["w"]);
    wait_for(&["Post subject"]);
    keys(&["From tin", "Enter"]);
    wait_for(&["p=post"]);
    keys(&["p"]);
    wait_for(&["Article posted"]);
    keys(&["q"]);
    tmux(&["kill-session", "-t", &session]);
    python_ok(&format!(
        r#"{PRELUDE}
s = nntplib.NNTP_SSL("{ip}", 10563, ssl_context=ctx)
resp, count, first, last, name = s.group("agora.test")
assert count == 2, resp
resp, over = s.over((last, last))
assert over[0][1]["subject"] == "From tin" and "alice@example.org" in over[0][1]["from"], over
resp, info = s.body(last)
assert b"Posted from tin." in info.lines, info
print("ok")
"#,
        ip = a.ip
    ));
}

/// AUTHINFO SASL (PLAIN with an initial response, SCRAM-SHA-256 in steps) and COMPRESS
/// DEFLATE, spoken by hand over TLS: nntplib has neither.
#[test]
fn sasl_and_compression() {
    let a = start();
    python_ok(&format!(
        r#"{PRELUDE}
import socket, base64, zlib, hashlib, hmac, os
raw = socket.create_connection(("{ip}", 10563))
s = ctx.wrap_socket(raw)
buf = b""
def line():
    global buf
    while b"\r\n" not in buf:
        buf += s.recv(65536)
    l, _, buf = buf.partition(b"\r\n")
    return l.decode()
def cmd(text):
    s.sendall(text.encode() + b"\r\n")
    return line()
assert line().startswith("200")
r = cmd("AUTHINFO SASL PLAIN " + base64.b64encode(b"\0alice@example.org\0wrong").decode())
assert r.startswith("481"), r
# SCRAM-SHA-256 (RFC 5802) in 383 steps.
nonce = base64.b64encode(os.urandom(18)).decode()
first = "n,,n=alice@example.org,r=" + nonce
r = cmd("AUTHINFO SASL SCRAM-SHA-256 " + base64.b64encode(first.encode()).decode())
assert r.startswith("383 "), r
server_first = base64.b64decode(r[4:]).decode()
attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
salted = hashlib.pbkdf2_hmac("sha256", b"pw", base64.b64decode(attrs["s"]), int(attrs["i"]))
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
stored = hashlib.sha256(client_key).digest()
final_bare = "c=biws,r=" + attrs["r"]
auth = ("n=alice@example.org,r=" + nonce + "," + server_first + "," + final_bare).encode()
proof = bytes(x ^ y for x, y in zip(client_key, hmac.new(stored, auth, "sha256").digest()))
r = cmd(base64.b64encode((final_bare + ",p=" + base64.b64encode(proof).decode()).encode()).decode())
assert r.startswith("383 "), r
server_key = hmac.new(salted, b"Server Key", "sha256").digest()
want = "v=" + base64.b64encode(hmac.new(server_key, auth, "sha256").digest()).decode()
assert base64.b64decode(r[4:]).decode() == want, r
r = cmd("=")
assert r.startswith("281"), r
assert cmd("COMPRESS DEFLATE").startswith("206")
comp = zlib.compressobj(wbits=-15); dec = zlib.decompressobj(wbits=-15)
def zcmd(text):
    s.sendall(comp.compress(text.encode() + b"\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
    out = b""
    while not out.endswith(b"\r\n.\r\n") and not (out.endswith(b"\r\n") and not text.startswith("LIST")):
        out += dec.decompress(s.recv(65536))
    return out.decode()
r = zcmd("LIST ACTIVE")
assert r.startswith("215") and "agora.test" in r and "private" in r, r
r = zcmd("GROUP private")
assert r.startswith("211 0"), r
print("ok")
"#,
        ip = a.ip
    ));
}
