//! Real IMAP clients against the real binary: Python's imaplib (STARTTLS, IMAPS,
//! SELECT/FETCH/SEARCH/STORE/COPY/MOVE/EXPUNGE/APPEND, IDLE woken by SMTP delivery,
//! a QRESYNC resynchronisation after another session's changes, UTF8=ACCEPT, IMAP4rev2,
//! COMPRESS=DEFLATE), curl, mbsync and mutt (driven in tmux).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, have, python_ok, run};

fn server() -> Agora {
    let a = Agora::start();
    let bodies: Vec<String> = (1..=3)
        .map(|i| format!("From: Sender {i} <s{i}@remote.test>\r\nSubject: message {i}\r\n\r\nbody number {i}\r\n"))
        .collect();
    a.add_user_with_mail("imap@example.org", "imap-secret", &bodies);
    a
}

#[test]
fn qresync_resync_after_changes_elsewhere() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import imaplib, ssl, re
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login():
    m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
    m.login("imap@example.org", "imap-secret")
    return m

# A client syncs and remembers UIDVALIDITY and HIGHESTMODSEQ.
a = login()
caps = a.capability()[1][0]
assert b"QRESYNC" in caps and b"CONDSTORE" in caps and b"ENABLE" in caps, caps
typ, data = a.enable("QRESYNC"); assert typ == "OK", data
assert a.untagged_responses.get("ENABLED") == [b"QRESYNC"], a.untagged_responses
a.select("INBOX")
uv = int(a.response("UIDVALIDITY")[1][0]); hms = int(a.response("HIGHESTMODSEQ")[1][0])
typ, data = a.uid("FETCH", "1:*", "(FLAGS MODSEQ)")
uids = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data]
assert len(uids) == 3, data
a.logout()

# Another session flags one message, expunges another and a new one arrives.
b = login()
b.select("INBOX")
b.uid("STORE", str(uids[0]), "+FLAGS", "(\\Flagged)")
b.uid("STORE", str(uids[1]), "+FLAGS", "(\\Deleted)")
b.expunge()
b.append("INBOX", None, None, b"Subject: later\r\n\r\nnew\r\n")
b.logout()

# The first client comes back and learns exactly what changed.
c = login()
c.enable("QRESYNC")
typ, data = c._simple_command("SELECT", "INBOX (QRESYNC (%d %d %d:%d))" % (uv, hms, uids[0], uids[2]))
assert typ == "OK", data
c.state = "SELECTED"  # imaplib tracks state only through its own select()
vanished = c.untagged_responses.get("VANISHED", [])
assert vanished == [b"(EARLIER) %d" % uids[1]], vanished
fetches = b" ".join(c.untagged_responses.get("FETCH", []))
assert b"UID %d FLAGS (\\Flagged)" % uids[0] in fetches, fetches
assert b"UID %d " % uids[2] not in fetches, "unchanged message reported: %r" % fetches
assert int(c.response("HIGHESTMODSEQ")[1][0]) > hms

# CONDSTORE: a conditional store against an old MODSEQ is refused for that message.
typ, data = c.uid("STORE", str(uids[0]), "(UNCHANGEDSINCE %d)" % hms, "+FLAGS", "(\\Seen)")
assert typ == "OK" and c.untagged_responses.get("MODIFIED") == [b"%d" % uids[0]], (typ, data, c.untagged_responses)
typ, data = c.uid("FETCH", "%d" % uids[0], "(FLAGS)"); assert b"\\Seen" not in data[0], data
# UID FETCH CHANGEDSINCE VANISHED gives the same answer as the SELECT did.
typ, data = c.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
assert typ == "OK" and any(b"UID %d" % uids[0] in d for d in data if d), data
c.logout()
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn utf8_accept_modified_utf7_and_imap4rev2() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login():
    m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
    m.login("imap@example.org", "imap-secret")
    return m
u = login()
typ, data = u.enable("UTF8=ACCEPT"); assert typ == "OK", data
typ, data = u.create('"Entwürfe/Größe"'); assert typ == "OK", data
typ, data = u.list('""', '"Entw*"')
assert any("Entwürfe/Größe".encode() in d for d in data), data
# A client without UTF8=ACCEPT sees and uses the same names in modified UTF-7.
m = login()
typ, data = m.list('""', "Entw*")
assert any(b"Entw&APw-rfe/Gr&APYA3w-e" in d for d in data), data
typ, data = m.select("Entw&APw-rfe/Gr&APYA3w-e"); assert typ == "OK", data
typ, data = m.create("Bad&-Name&AGE-"); assert typ == "NO", data
# IMAP4rev2 (RFC 9051): no \\Recent or RECENT, and every SEARCH answers with ESEARCH.
r = login()
typ, data = r.enable("IMAP4rev2"); assert r.untagged_responses.get("ENABLED") == [b"IMAP4rev2"], r.untagged_responses
typ, data = r.select("INBOX"); assert data == [b"3"], data
assert "RECENT" not in r.untagged_responses, r.untagged_responses
typ, data = r._simple_command("SEARCH", "ALL"); assert typ == "OK", data
assert r.untagged_responses.get("ESEARCH", [b""])[0].endswith(b"ALL 1:3"), r.untagged_responses
typ, data = r.fetch("1", "(FLAGS)"); assert b"Recent" not in data[0], data
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn compress_deflate() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import socket, ssl, zlib
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("{ip}", 10993), timeout=20))
f = s.makefile("rb")
f.readline()
s.sendall(b"a LOGIN imap@example.org imap-secret\r\n")
line = f.readline(); assert line.startswith(b"a OK") and b"COMPRESS=DEFLATE" in line, line
s.sendall(b"b COMPRESS DEFLATE\r\n")
assert f.readline().startswith(b"b OK"), "compress refused"
out = zlib.compressobj(6, zlib.DEFLATED, -15); inp = zlib.decompressobj(-15)
def send(cmd):
    s.sendall(out.compress(cmd) + out.flush(zlib.Z_SYNC_FLUSH))
buf = b"\r\n"
def until(tag):
    global buf
    mark = b"\r\n" + tag + b" "
    while mark not in buf or b"\r\n" not in buf.split(mark, 1)[1]:
        data = s.recv(65536)
        assert data, "connection closed"
        buf += inp.decompress(data)
    text, _, buf = buf.partition(mark)
    rest, _, buf = buf.partition(b"\r\n")
    buf = b"\r\n" + buf
    return text, rest
send(b"c SELECT INBOX\r\n")
text, status = until(b"c"); assert status.startswith(b"OK") and b"* 3 EXISTS" in text, (text, status)
send(b"d FETCH 1:3 (BODY.PEEK[])\r\n")
text, status = until(b"d"); assert status.startswith(b"OK") and text.count(b"body number") == 3, (text, status)
send(b"e COMPRESS DEFLATE\r\n")
text, status = until(b"e"); assert status.startswith(b"NO [COMPRESSIONACTIVE]"), status
send(b"f LOGOUT\r\n")
text, status = until(b"f"); assert status.startswith(b"OK"), status
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn mutt_lists_and_reads() {
    if !have("mutt") || !have("tmux") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[auth]\nplaintext_without_tls = true\n").unwrap();
    });
    let bodies: Vec<String> = (1..=3)
        .map(|i| format!("From: Sender {i} <s{i}@remote.test>\r\nSubject: message {i}\r\n\r\nbody number {i}\r\n"))
        .collect();
    a.add_user_with_mail("imap@example.org", "imap-secret", &bodies);
    let rc = a.dir.path().join("muttrc");
    let folder = format!("imap://imap%40example.org@{}:10143/", a.ip);
    std::fs::write(
        &rc,
        format!(
            "set imap_user=imap@example.org\nset imap_pass=imap-secret\nset imap_authenticators=\"login\"\n\
             set ssl_starttls=no\nset ssl_force_tls=no\nset header_cache=\nset message_cachedir=\n\
             set folder=\"{folder}\"\nset spoolfile=\"+INBOX\"\nset record=\"\"\nset postponed=\"\"\n\
             set sort=date-sent\nset quit=yes\nset pager_stop=yes\nset wait_key=no\nset mail_check=1\n"
        ),
    )
    .unwrap();
    let session = format!("agora-mutt-{}", std::process::id());
    let url = format!("{folder}INBOX");
    let cmd = format!("TERM=xterm mutt -n -F {} -f {url}", rc.display());
    let tmux = |args: &[&str]| std::process::Command::new("tmux").args(args).output().unwrap();
    tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &cmd]);
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let s = screen();
            if s.contains(what) {
                return s;
            }
            if std::time::Instant::now() > deadline {
                tmux(&["kill-session", "-t", &session]);
                panic!("mutt never showed {what:?}; screen:\n{s}");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // The index lists all three messages.
    let index = wait_for("message 3");
    assert!(index.contains("message 1") && index.contains("message 2"), "{index}");
    // Enter opens the selected message in the pager.
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let pager = wait_for("body number");
    assert!(pager.contains("Subject: message"), "{pager}");
    tmux(&["send-keys", "-t", &session, "q"]);
    tmux(&["send-keys", "-t", &session, "q"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    tmux(&["kill-session", "-t", &session]);
}

#[test]
fn shared_mailboxes_through_acl() {
    if !have("python3") {
        return;
    }
    let a = server();
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("bob-secret\n"));
    a.cli_ok(&["user", "add", "carol@example.org", "--password-stdin"], Some("carol-secret\n"));
    a.cli_ok(&["group", "add", "team@example.org"], None);
    a.cli_ok(&["group", "member", "add", "team@example.org", "carol@example.org"], None);
    let script = format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login(u, p):
    m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
    m.login(u, p)
    return m
alice = login("imap@example.org", "imap-secret")
caps = alice.capability()[1][0]
assert b"ACL" in caps and b"RIGHTS=texk" in caps, caps
typ, data = alice._simple_command("NAMESPACE"); assert typ == "OK"
ns = alice.untagged_responses["NAMESPACE"][0]
assert b'(("Other Users/" "/"))' in ns and b'(("Public Folders/" "/"))' in ns, ns
alice.create("Projects")
alice.append("Projects", None, None, b"Subject: plan\r\n\r\nthe plan\r\n")
# Bob may look and read (and keep his own \\Seen); the team may also write flags.
typ, data = alice.setacl("Projects", "bob@example.org", "lrs"); assert typ == "OK", data
typ, data = alice.setacl("Projects", "team@example.org", "lrsw"); assert typ == "OK", data
typ, data = alice.setacl("Projects", "nobody@example.org", "lr"); assert typ == "NO", data
typ, data = alice.getacl("Projects"); assert typ == "OK", data
acl = b" ".join(data)
assert b'"imap@example.org" lrswipkxtea' in acl and b'"bob@example.org" lrs' in acl and b'"team@example.org" lrsw' in acl, acl

bob = login("bob@example.org", "bob-secret")
typ, data = bob.list('""', '"Other Users/*"')
assert any(b'"Other Users/imap@example.org/Projects"' in d for d in data), data
box = '"Other Users/imap@example.org/Projects"'
typ, data = bob.myrights(box); assert typ == "OK" and b" lrs" in data[0], data
typ, data = bob.getacl(box); assert typ == "NO", data
typ, data = bob.select(box); assert typ == "OK" and data == [b"1"], data
typ, data = bob.fetch("1", "(BODY[TEXT])"); assert data[0][1] == b"the plan\r\n", data
typ, data = bob.fetch("1", "(FLAGS)"); assert b"\\Seen" in data[0], data
typ, data = bob.store("1", "+FLAGS", "\\Deleted"); assert typ == "NO", data
typ, data = bob.store("1", "+FLAGS", "$Important"); assert typ == "NO", data
typ, data = bob.append(box, None, None, b"Subject: x\r\n\r\nx\r\n"); assert typ == "NO", data
# Bob's \\Seen is his own: for Alice the message is still unread.
typ, data = alice.select("Projects"); typ, data = alice.fetch("1", "(FLAGS)")
assert b"\\Seen" not in data[0], data

# Carol gets her rights through the team group and may set keywords.
carol = login("carol@example.org", "carol-secret")
typ, data = carol.select(box); assert typ == "OK", data
typ, data = carol.store("1", "+FLAGS", "$Important"); assert typ == "OK" and b"$Important" in data[0], data
typ, data = carol.fetch("1", "(FLAGS)"); assert b"\\Seen" not in data[0], data
typ, data = alice.fetch("1", "(FLAGS)"); assert b"$Important" in data[0], data
# Removing Bob's entry hides the mailbox from him.
typ, data = alice.deleteacl("Projects", "bob@example.org"); assert typ == "OK", data
typ, data = bob.list('""', '"Other Users/*"'); assert data == [None], data
typ, data = bob.status(box, "(MESSAGES)"); assert typ == "NO", data
typ, data = bob.create('"Other Users/imap@example.org/Mine"'); assert typ == "NO", data
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn quota_set_by_the_administrator() {
    if !have("python3") {
        return;
    }
    let a = server();
    let out = a.cli_ok(&["user", "quota", "imap@example.org", "4096"], None);
    assert!(out.contains("4096"), "{out}");
    let script = format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
m.login("imap@example.org", "imap-secret")
typ, data = m.getquotaroot("INBOX"); assert typ == "OK", data
assert data[0] == [b'"INBOX" ""'] and b'STORAGE' in data[1][0] and data[1][0].endswith(b' 4)'), data
body = b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n"
typ, data = m.append("INBOX", None, None, body); assert typ == "OK", data
typ, data = m.append("INBOX", None, None, body); assert typ == "NO" and b"OVERQUOTA" in data[0], data
typ, data = m._simple_command("SETQUOTA", '""', "(STORAGE 100000)"); assert typ == "NO", data
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

/// imaplib sends a literal and its closing CRLF in two writes, the second held by
/// Nagle until the first is acknowledged: the server acknowledges literals at once, so
/// twenty APPENDs take milliseconds, not twenty delayed-ACK timeouts (40 ms each).
#[test]
fn literals_are_acknowledged_at_once() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import imaplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
m.login("imap@example.org", "imap-secret")
t = time.perf_counter()
for i in range(20):
    typ, data = m.append("INBOX", None, None, b"Subject: quick %d\r\n\r\nbody\r\n" % i)
    assert typ == "OK", data
took = time.perf_counter() - t
assert took < 0.6, f"20 APPENDs took {{took:.3f}} s"
m.logout()
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn imaplib_session() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import imaplib, ssl, smtplib, socket, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

m = imaplib.IMAP4("{ip}", 10143, timeout=20)
assert b"STARTTLS" in m.welcome and b"LOGINDISABLED" in m.welcome, m.welcome
assert b"LOGINDISABLED" in m.capability()[1][0]
try:
    m.login("imap@example.org", "imap-secret"); raise SystemExit("plaintext login accepted")
except imaplib.IMAP4.error as e:
    assert "PRIVACYREQUIRED" in str(e), e
m.starttls(ctx)
typ, _ = m.login("imap@example.org", "imap-secret"); assert typ == "OK"
typ, boxes = m.list()
names = b" ".join(boxes)
for n in (b"INBOX", b"Sent", b"\\Sent", b"Trash", b"\\Trash", b"Drafts", b"Junk", b"Archive"):
    assert n in names, (n, boxes)
typ, data = m.select("INBOX"); assert data == [b"3"], data
assert m.response("RECENT") == ("RECENT", [b"3"]), "first SELECT sees three recent messages"
typ, data = m.search(None, "NEW"); assert data == [b"1 2 3"], data
typ, data = m.fetch("2", "(EMAILID THREADID SAVEDATE PREVIEW)")
assert b"EMAILID (M" in data[0] and b"THREADID NIL" in data[0] and b'PREVIEW "body number 2"' in data[0], data
typ, data = m.search(None, "YOUNGER", "3600"); assert data == [b"1 2 3"], data
typ, data = m.search(None, "OLDER", "3600"); assert data == [b""], data
typ, data = m.fetch("1:3", "(UID FLAGS RFC822.SIZE ENVELOPE)")
assert len([d for d in data if d]) == 3, data
assert b'"message 2"' in data[1], data[1]
typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert data[0][1] == b"Subject: message 2\r\n\r\n", data
typ, data = m.fetch("2", "(BODY[TEXT])")
assert data[0][1] == b"body number 2\r\n", data
typ, data = m.fetch("2", "(FLAGS)"); assert b"\\Seen" in data[0], data
typ, data = m.search(None, "SUBJECT", "message 3"); assert data == [b"3"], data
typ, data = m.search(None, "UNSEEN"); assert data == [b"1 3"], data
typ, data = m.uid("SEARCH", None, "ALL"); uids = data[0].split(); assert len(uids) == 3
typ, data = m.store("1", "+FLAGS", "(\\Flagged $Important)")
assert b"\\Flagged" in data[0] and b"$Important" in data[0], data
typ, data = m.copy("1", "Archive"); assert typ == "OK" and data[0].startswith(b"[COPYUID "), data
typ, data = m.uid("MOVE", uids[2].decode(), "Trash"); assert typ == "OK", data
typ, data = m.select("INBOX"); assert data == [b"2"], data
m.store("1", "+FLAGS", "\\Deleted")
typ, data = m.expunge(); assert data == [b"1"], data
typ, data = m.append("Drafts", "(\\Draft)", None, b"Subject: draft\r\n\r\nunfinished\r\n")
assert typ == "OK" and b"APPENDUID" in data[0], data
typ, data = m.status("Drafts", "(MESSAGES UNSEEN UIDNEXT)"); assert b"MESSAGES 1" in data[0], data
typ, data = m.status("Archive", "(MESSAGES)"); assert b"MESSAGES 1" in data[0], data
typ, data = m.create("Projects/2026"); assert typ == "OK"
typ, data = m.list('""', "Projects/%"); assert b"Projects/2026" in data[0], data
typ, data = m.rename("Projects/2026", "Projects/2027"); assert typ == "OK"
typ, data = m.delete("Projects/2027"); assert typ == "OK"

# IDLE: a message delivered over SMTP shows up as EXISTS.
m.select("INBOX")
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
assert m.readline().startswith(b"+")
s = smtplib.SMTP("{ip}", 10025); s.sendmail("x@remote.test", ["imap@example.org"], "Subject: new\r\n\r\nhi\r\n"); s.quit()
m.sock.settimeout(10)
line = m.readline()
assert line.strip() == b"* 2 EXISTS", line
m.send(b"DONE\r\n")
rest = []
while True:
    l = m.readline()
    if l.startswith(tag):
        break
    rest.append(l.strip())
assert l.startswith(tag + b" OK"), l
assert rest == [b"* 1 RECENT"], rest
m.logout()

m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
m.login("imap@example.org", "imap-secret")
typ, data = m.select("INBOX", readonly=True); assert data == [b"2"], data
assert m.response("RECENT") == ("RECENT", [b"0"]), "claimed by the first session"
typ, data = m.store("1", "+FLAGS", "\\Deleted"); assert typ == "NO", (typ, data)
m.logout()
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
}

#[test]
fn curl_imaps_fetch() {
    if !have("curl") {
        return;
    }
    let a = server();
    let (ok, out) = run(
        "curl",
        &["-sS", "-k", "--user", "imap@example.org:imap-secret", &format!("imaps://{}:10993/INBOX;UID=2", a.ip)],
        "",
    );
    assert!(ok && out.contains("Subject: message 2") && out.contains("body number 2"), "{out}");
    let (ok, out) = run(
        "curl",
        &["-sS", "-k", "--ssl-reqd", "--user", "imap@example.org:imap-secret", &format!("imap://{}:10143/", a.ip)],
        "",
    );
    assert!(ok && out.contains("INBOX") && out.contains("Sent"), "{out}");
}

#[test]
fn mbsync_two_way_then_nothing_to_do() {
    if !have("mbsync") {
        return;
    }
    let a = server();
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let rc = dir.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount agora\nHost {ip}\nPort 10993\nUser imap@example.org\nPass imap-secret\nSSLType IMAPS\n\
             CertificateFile {cert}\n\nIMAPStore remote\nAccount agora\n\nMaildirStore local\nPath {m}/\nInbox {m}/INBOX\n\
             SubFolders Verbatim\n\nChannel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nSyncState *\n",
            ip = a.ip,
            cert = a.data().join("tls/cert.pem").display(),
            m = mail.display()
        ),
    )
    .unwrap();
    let sync = || {
        let (ok, out) = run("mbsync", &["-c", rc.to_str().unwrap(), "-a", "-V"], "");
        assert!(ok, "{out}");
        out
    };
    sync();
    let inbox_files = |sub: &str| std::fs::read_dir(mail.join("INBOX").join(sub)).unwrap().count();
    assert_eq!(inbox_files("new") + inbox_files("cur"), 3, "three messages pulled");

    // Local changes go up: a new message in Sent, a flag on an INBOX message.
    std::fs::write(mail.join("Sent/new/1.local"), "From: me@example.org\nSubject: sent locally\n\nuploaded\n").unwrap();
    let first = std::fs::read_dir(mail.join("INBOX/new")).unwrap().next().unwrap().unwrap().path();
    let flagged = mail.join("INBOX/cur").join(format!("{}:2,F", first.file_name().unwrap().to_string_lossy()));
    std::fs::rename(&first, &flagged).unwrap();
    sync();
    let show = a.cli_ok(&["user", "show", "imap@example.org"], None);
    assert!(show.contains("mailbox:      Sent \\Sent (1 messages)"), "{show}");
    // The flag set locally reached the server.
    common::python_ok(&format!(
        r#"
import imaplib, ssl
m = imaplib.IMAP4_SSL("{}", 10993, ssl_context=ssl._create_unverified_context())
m.login("imap@example.org", "imap-secret")
m.select("INBOX", readonly=True)
typ, data = m.search(None, "FLAGGED"); assert len(data[0].split()) == 1, data
print("ok")
"#,
        a.ip
    ));

    // A third run has nothing to do: the same files here, the same mail there.
    let files = || {
        let mut v: Vec<String> = Vec::new();
        for sub in ["INBOX/new", "INBOX/cur", "Sent/new", "Sent/cur"] {
            for e in std::fs::read_dir(mail.join(sub)).unwrap() {
                v.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        v.sort();
        v
    };
    let (before, server_before) = (files(), a.cli_ok(&["user", "show", "imap@example.org"], None));
    sync();
    assert_eq!(files(), before);
    assert_eq!(a.cli_ok(&["user", "show", "imap@example.org"], None), server_before);
}
