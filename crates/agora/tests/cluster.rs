//! Several nodes on one PostgreSQL store (started by the test, on loopback): each
//! registers itself; an IMAP client idling on one node sees mail delivered over SMTP
//! on another at once; the outbound queue is shared, so a node killed with SIGKILL
//! under load loses no acknowledged message, its claims on the queue lapse and the
//! other nodes deliver them, each exactly once. And `agora store migrate` moves a
//! running SQLite installation onto PostgreSQL without losing a flag or a UID.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agora_store::pgtest::TestPostgres;
use common::{Agora, DOMAIN, python_ok, run};

/// An SMTP server for `remote.test` that takes every message and writes its Subject to
/// a file, one a line; and, on port 10026, one that accepts connections and never
/// answers (a destination that hangs).
const SINK: &str = r#"
import socket, sys, threading, time
ip, log = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def session(c):
    f = c.makefile("rb")
    c.sendall(b"220 sink ESMTP\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        verb = line[:4].upper()
        if verb == b"DATA":
            c.sendall(b"354 go\r\n")
            subject = b""
            while True:
                l = f.readline()
                if not l or l == b".\r\n":
                    break
                if l.lower().startswith(b"subject:") and not subject:
                    subject = l[8:].strip()
            with lock, open(log, "ab") as out:
                out.write(subject + b"\n")
            c.sendall(b"250 kept\r\n")
        elif verb == b"QUIT":
            c.sendall(b"221 bye\r\n")
            return
        elif verb in (b"EHLO", b"HELO"):
            c.sendall(b"250 sink\r\n")
        else:
            c.sendall(b"250 ok\r\n")
def serve(port, handler):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
held = []
threading.Thread(target=serve, args=(10026, held.append), daemon=True).start()
threading.Thread(target=serve, args=(10025, session), daemon=True).start()
time.sleep(0.3)
print("ready", flush=True)
sys.stdin.read()
"#;

/// Submits messages as alice through `ip`'s submission port, each to alice and to a
/// remote recipient, until the server goes away; prints each subject that got its 250.
const LOAD: &str = r#"
import smtplib, sys
ip, n = sys.argv[1], int(sys.argv[2])
i = 0
try:
    while True:
        s = smtplib.SMTP(ip, 10587, timeout=20)
        s.login("alice@example.org", "alice-pw")
        for _ in range(5):
            subject = "load-%s-%d" % (n, i)
            i += 1
            s.sendmail("alice@example.org", ["alice@example.org", "far@remote.test"],
                       "From: alice@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n" % (subject, subject))
            print(subject, flush=True)
        s.quit()
except Exception:
    pass
"#;

fn node_config(url: &str, node: &str, remote: &str) -> String {
    format!(
        "[store]\nurl = \"{url}\"\n[cluster]\nnode = \"{node}\"\nrole = \"back-end\"\n\
         [auth]\nplaintext_without_tls = true\n\
         [transport]\npoll_secs = 1\nretry_secs = 1\n[transport.routes]\n\"remote.test\" = \"{remote}\"\n"
    )
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The subjects of a user's INBOX, read over IMAP through `ip`.
fn subjects(ip: &str) -> Vec<String> {
    let script = format!(
        r#"
import imaplib
m = imaplib.IMAP4("{ip}", 10143)
m.login("alice@example.org", "alice-pw")
m.select("INBOX", readonly=True)
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for item in data:
    if isinstance(item, tuple):
        print(item[1].decode().split(":", 1)[1].strip())
m.logout()
"#
    );
    let (ok, out) = run("python3", &["-c", &script], "");
    assert!(ok, "{out}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn three_nodes_share_one_postgres() {
    if !common::have("python3") {
        return;
    }
    let pg = TestPostgres::shared().expect("PostgreSQL for the test (Debian package postgresql)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(pg.database()).unwrap();

    let sink_ip = common::unique_ip();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("sink.log");
    let mut sink = Command::new("python3")
        .args(["-c", SINK, &sink_ip, log.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(sink.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");

    // A's deliveries hang (its route leads to a server that never answers); B and C
    // reach the sink.
    let hang = format!("{sink_ip}:10026");
    let take = format!("{sink_ip}:10025");
    let mut a = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), node_config(&url, "a", &hang)).unwrap());
    let b = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), node_config(&url, "b", &take)).unwrap());
    let c = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), node_config(&url, "c", &take)).unwrap());
    a.cli_ok(&["user", "add", &format!("alice@{DOMAIN}"), "--password-stdin"], Some("alice-pw\n"));

    // Every node registered, with the address it was started on.
    let list = c.cli_ok(&["node", "list"], None);
    for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
        let line = list.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{list}"));
        assert!(line.contains(&node.ip) && line.contains("back-end") && line.ends_with("alive"), "{line}");
    }

    // The firewall plans name the registered nodes, and nft takes them.
    for role in ["back-end", "front-end", "single"] {
        let rules = c.cli_ok(&["firewall", "--role", role, "--format", "nftables"], None);
        assert!(rules.contains("policy drop") && rules.contains("@database_v4"), "{rules}");
        if role == "front-end" {
            let set = rules.lines().find(|l| l.contains("set back_ends_v4")).unwrap();
            assert!([&a, &b, &c].iter().all(|n| set.contains(&n.ip)), "{set}");
            assert!(rules.contains("tcp dport 993 accept"), "IMAP over TLS to the back-ends: {rules}");
        }
        if common::have("nft") {
            let file = work.path().join(format!("{role}.nft"));
            std::fs::write(&file, &rules).unwrap();
            let (ok, out) = run("nft", &["-c", "-f", file.to_str().unwrap()], "");
            assert!(ok, "nft -c refused the {role} rules: {out}\n{rules}");
        }
    }

    // IDLE on B sees a message that SMTP took on A, within a second.
    python_ok(&format!(
        r#"
import imaplib, smtplib, time
m = imaplib.IMAP4("{b}", 10143)
m.login("alice@example.org", "alice-pw")
m.select("INBOX")
tag = m._new_tag().decode()
m.send(("%s IDLE\r\n" % tag).encode())
assert m.readline().startswith(b"+"), "idling"
t = time.time()
s = smtplib.SMTP("{a}", 10025, timeout=20)
s.sendmail("bob@elsewhere.test", ["alice@example.org"], "Subject: across nodes\r\n\r\nhi\r\n")
s.quit()
m.sock.settimeout(5)
line = m.readline()
took = time.time() - t
assert b"EXISTS" in line, line
assert took < 1.0, took
m.send(b"DONE\r\n")
print("ok")
"#,
        a = a.ip,
        b = b.ip
    ));

    // Load on A, then SIGKILL.
    let load = Command::new("python3").args(["-c", LOAD, &a.ip, "1"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    a.kill9();
    let out = load.wait_with_output().unwrap();
    let acked: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert!(acked.len() >= 10, "the load got going: {} messages", acked.len());

    // Every acknowledged message is in alice's mailbox, read through another node.
    let inbox = subjects(&b.ip);
    for s in &acked {
        assert!(inbox.contains(s), "{s} was acknowledged by A but is not in the mailbox");
    }
    // A's claims lapse with its heartbeat; B and C deliver what it held, once each.
    let count = |s: &str| std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| *l == s).count();
    wait_until("every acknowledged message at the remote server", Duration::from_secs(90), || {
        acked.iter().all(|s| count(s) >= 1)
    });
    std::thread::sleep(Duration::from_secs(3));
    for s in &acked {
        assert_eq!(count(s), 1, "{s} delivered more than once");
    }
    wait_until("A to be seen as down", Duration::from_secs(60), || {
        let list = b.cli_ok(&["node", "list"], None);
        list.lines().any(|l| l.starts_with("a ") && l.ends_with("down"))
    });
    let _ = sink.kill();
    let _ = sink.wait();
}

/// What IMAP shows of every folder of alice's: UIDVALIDITY, UIDNEXT, and each
/// message's UID, flags, size and a hash of its body.
fn imap_state(ip: &str) -> String {
    let script = format!(
        r#"
import imaplib, hashlib, re
m = imaplib.IMAP4("{ip}", 10143)
m.login("alice@example.org", "alice-pw")
typ, boxes = m.list()
names = sorted(re.search(rb'"[^"]*" "?([^"]*)"?$', b).group(1).decode() for b in boxes)
for name in names:
    typ, st = m.status('"%s"' % name, "(UIDVALIDITY UIDNEXT MESSAGES)")
    print(name, st[0].decode().split("(", 1)[1])
    m.select('"%s"' % name, readonly=True)
    typ, data = m.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple):
            head = item[0].decode()
            uid = re.search(r"UID (\d+)", head).group(1)
            # \\Recent belongs to a session, not to the store.
            flags = " ".join(sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split() if f != "\\Recent"))
            size = re.search(r"RFC822.SIZE (\d+)", head).group(1)
            print(" ", uid, flags, size, hashlib.sha256(item[1]).hexdigest())
typ, subs = m.lsub()
print("subscribed", sorted(s.decode() for s in subs))
m.logout()
"#
    );
    let (ok, out) = run("python3", &["-c", &script], "");
    assert!(ok, "{out}");
    out
}

#[test]
fn migrate_moves_a_running_sqlite_store_to_postgres() {
    if !common::have("python3") {
        return;
    }
    let pg = TestPostgres::shared().expect("PostgreSQL for the test (Debian package postgresql)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(pg.database()).unwrap();
    let plain = "[auth]\nplaintext_without_tls = true\n";
    let src = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), plain).unwrap());
    let mut bodies: Vec<String> =
        (0..12).map(|i| format!("From: s@remote.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n")).collect();
    // One body past the size SQLite keeps inline: a file, which PostgreSQL takes in.
    bodies.push(format!("Subject: big\r\n\r\n{}", format!("{}\r\n", "0123456789abcdef".repeat(4)).repeat(5_000)));
    src.add_user_with_mail(&format!("alice@{DOMAIN}"), "alice-pw", &bodies);
    python_ok(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("{ip}", 10143)
m.login("alice@example.org", "alice-pw")
m.create("Archive/2026")
m.subscribe("Archive/2026")
m.select("INBOX")
m.uid("STORE", "2:4", "+FLAGS", "(\\Flagged $Label1)")
m.uid("STORE", "5", "+FLAGS", "(\\Seen)")
m.uid("COPY", "3:6", "Archive/2026")
m.uid("STORE", "7", "+FLAGS", "(\\Deleted)")
m.expunge()
m.logout()
print("ok")
"#,
        ip = src.ip
    ));
    let before = imap_state(&src.ip);
    assert!(before.contains("Archive/2026") && before.contains("$Label1 \\Flagged"), "{before}");

    // The source keeps running: the copy is one snapshot of it.
    let from = format!("sqlite:{}", src.data().display());
    let out = src.cli_ok(&["store", "migrate", "--from", &from, "--to", &url], None);
    assert!(out.contains("copied and verified") && out.contains("16 message(s)"), "{out}");
    // A second run finds the database taken.
    let again = src.cli(&["store", "migrate", "--from", &from, "--to", &url], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a store"));

    let config = format!("[store]\nurl = \"{url}\"\n{plain}");
    let node = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), config).unwrap());
    assert_eq!(imap_state(&node.ip), before, "the same folders, UIDs, flags and bodies on PostgreSQL");
    // And it goes on from there: the next message takes the next UID.
    let (mut c, _) = common::SmtpClient::connect(&node.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    assert!(
        c.send_message("s@remote.test", &["alice@example.org"], "Subject: after\r\n\r\nx\r\n")
            .unwrap()
            .starts_with("250")
    );
    let after = imap_state(&node.ip);
    assert!(after.contains(" 14 ") || after.lines().any(|l| l.trim_start().starts_with("14 ")), "{after}");
}

/// Logins counted on a node's `/metrics` for `protocol` (the page may be a second old).
fn logins(node: &Agora, protocol: &str) -> u64 {
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out) = run("curl", &["-s", "--max-time", "10", &format!("http://{}:19025/metrics", node.ip)], "");
    assert!(ok, "{out}");
    let key = format!("agora_logins_total{{protocol=\"{protocol}\"}} ");
    out.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[test]
fn a_front_end_serves_users_homed_on_two_back_ends() {
    if !common::have("python3") || !common::have("curl") {
        return;
    }
    let pg = TestPostgres::shared().expect("PostgreSQL for the test (Debian package postgresql)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(pg.database()).unwrap();
    let config =
        |node: &str, role: &str| format!("[store]\nurl = \"{url}\"\n[cluster]\nnode = \"{node}\"\nrole = \"{role}\"\n");
    let a = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), config("a", "back-end")).unwrap());
    let b = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), config("b", "back-end")).unwrap());
    let f = Agora::start_with(|d| std::fs::write(d.join("agora.toml"), config("f", "front-end")).unwrap());
    assert!(f.banner.contains("ldap") && f.banner.lines().any(|l| l.starts_with("ldap ") && l.ends_with("disabled")));
    // Its health page answers for supervisors.
    let (ok, health) = run("curl", &["-s", "--max-time", "10", &format!("http://{}:19025/metrics", f.ip)], "");
    assert!(ok && health.contains("agora_connections_total"), "{health}");
    a.cli_ok(&["user", "add", "ann@example.org", "--home", "a", "--password-stdin"], Some("ann-pw\n"));
    a.cli_ok(&["user", "add", "ben@example.org", "--home", "b", "--password-stdin"], Some("ben-pw\n"));
    let refused = a.cli(&["user", "move", "ben@example.org", "--home", "f"], None);
    assert!(!refused.status.success(), "a front-end keeps no mailboxes");
    // The back-ends trust the new front-end's PROXY headers within two seconds.
    std::thread::sleep(Duration::from_secs(3));

    let client = common::unique_ip();
    let (a0, b0) = (logins(&a, "imap"), logins(&b, "imap"));
    python_ok(&format!(
        r#"
import imaplib, poplib, smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
f, client = "{f}", "{client}"
s = smtplib.SMTP(f, 10025, source_address=(client, 0), timeout=20)
s.sendmail("x@remote.test", ["ann@example.org", "ben@example.org"], "Subject: in through the front\r\n\r\nhi\r\n")
s.quit()
# IMAP with STARTTLS, as ann (home a): the back-end saw the real client.
m = imaplib.IMAP4(f, 10143, timeout=20)
m.starttls(ssl_context=ctx)
typ, caps = m.login("ann@example.org", "ann-pw")
assert typ == "OK" and b"IDLE" in caps[0], caps
m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
assert ("[" + client + "]").encode() in data[0][1], data
m.logout()
# A wrong password is refused at the front-end.
m = imaplib.IMAP4_SSL(f, 10993, ssl_context=ctx, timeout=20)
try:
    m.login("ann@example.org", "wrong")
    raise SystemExit("a wrong password was taken")
except imaplib.IMAP4.error as e:
    assert "AUTHENTICATIONFAILED" in str(e), e
# IMAP over TLS as ben (home b), with a literal for the password.
m = imaplib.IMAP4_SSL(f, 10993, ssl_context=ctx, timeout=20)
m.literal = b"ben-pw"
typ, _ = m._simple_command("LOGIN", "ben@example.org")
assert typ == "OK", typ
m.state = "AUTH"
m.select("INBOX")
m.store("1", "+FLAGS", "(\\Flagged)")
m.logout()
# POP3 over TLS as ann.
p = poplib.POP3_SSL(f, 10995, context=ctx, timeout=20)
p.user("ann@example.org")
p.pass_("ann-pw")
assert p.stat()[0] == 1, p.stat()
assert b"in through the front" in b"\n".join(p.retr(1)[1])
p.quit()
# Submission with STARTTLS as ann, to ben; the back-end's Received line names the client.
s = smtplib.SMTP(f, 10587, source_address=(client, 0), timeout=20)
s.starttls(context=ctx)
s.login("ann@example.org", "ann-pw")
s.sendmail("ann@example.org", ["ben@example.org"], "From: ann@example.org\r\nTo: ben@example.org\r\nSubject: submitted at the front\r\n\r\nyo\r\n")
s.quit()
print("ok")
"#,
        f = f.ip
    ));
    assert_eq!((logins(&a, "imap") - a0, logins(&b, "imap") - b0), (1, 1), "each user's session at its home");

    // mbsync through the front-end.
    if common::have("mbsync") {
        let dir = tempfile::tempdir().unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let rc = dir.path().join("mbsyncrc");
        std::fs::write(
            &rc,
            format!(
                "IMAPAccount fe\nHost {ip}\nPort 10993\nUser ben@example.org\nPass ben-pw\nSSLType IMAPS\n\
                 CertificateFile {cert}\n\nIMAPStore remote\nAccount fe\n\nMaildirStore local\nPath {m}/\nInbox {m}/INBOX\n\
                 SubFolders Verbatim\n\nChannel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSyncState *\n",
                ip = f.ip,
                cert = f.data().join("tls/cert.pem").display(),
                m = mail.display()
            ),
        )
        .unwrap();
        let (ok, out) = run("mbsync", &["-c", rc.to_str().unwrap(), "-a"], "");
        assert!(ok, "{out}");
        let count = |sub: &str| std::fs::read_dir(mail.join("INBOX").join(sub)).map_or(0, |d| d.count());
        assert_eq!(count("new") + count("cur"), 2, "ben's two messages pulled through the front-end");
    }

    // The webmail through the front-end: sign in as ben, read the list.
    python_ok(&format!(
        r#"
import http.client, re, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
HOST = "mx.example.org:10443"
def req(method, path, body=None, cookies=None):
    c = http.client.HTTPSConnection("{f}", 10443, context=ctx, timeout=20)
    h = {{"Host": HOST, "User-Agent": "TestBrowser/1.0"}}
    if cookies:
        h["Cookie"] = "; ".join(f"{{k}}={{v}}" for k, v in cookies.items())
    if body is not None:
        h["Content-Type"] = "application/x-www-form-urlencoded"
        h["Origin"] = "https://" + HOST
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    return r, r.read().decode()
r, page = req("GET", "/mail/")
pre = re.search(r'name="pre" value="([^"]+)"', page).group(1)
r, page = req("POST", "/mail/login", f"pre={{pre}}&login=ben%40example.org&password=ben-pw", cookies={{"__Host-agora-pre": pre}})
assert r.status == 303, (r.status, page[:300])
token = [v for v in r.headers.get_all("Set-Cookie") if v.startswith("__Host-agora=")][0].split(";")[0].split("=", 1)[1]
r, page = req("GET", "/mail/", cookies={{"__Host-agora": token}})
assert r.status == 200 and "submitted at the front" in page, (r.status, page[:500])
print("ok")
"#,
        f = f.ip
    ));

    // Ben moves to a: his mail, flags and UIDs are as they were, served there now.
    let state = |node: &Agora| -> String {
        let (ok, out) = run(
            "python3",
            &[
                "-c",
                &format!(
                    r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=20)
m.login("ben@example.org", "ben-pw")
print(m.status("INBOX", "(UIDVALIDITY UIDNEXT MESSAGES)")[1][0].decode())
m.select("INBOX", readonly=True)
print(m.uid("FETCH", "1:*", "(FLAGS)")[1])
"#,
                    ip = node.ip
                ),
            ],
            "",
        );
        assert!(ok, "{out}");
        out
    };
    let before = state(&f);
    let b1 = logins(&b, "imap");
    let moved = a.cli_ok(&["user", "move", "ben@example.org", "--home", "a"], None);
    assert!(moved.contains("moved from b to a"), "{moved}");
    let a1 = logins(&a, "imap");
    assert_eq!(state(&f), before, "every message, flag and UID kept");
    assert_eq!((logins(&a, "imap") - a1, logins(&b, "imap") - b1), (1, 0), "served by the new home");
    assert!(before.contains("\\Flagged"), "{before}");
}
