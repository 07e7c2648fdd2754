//! Several nodes on one PostgreSQL store (started by the test, on loopback): each
//! registers itself; an IMAP client idling on one node sees mail delivered over SMTP
//! on another at once; the outbound queue is shared, so a node killed with SIGKILL
//! under load loses no acknowledged message, its claims on the queue lapse and the
//! other nodes deliver them, each exactly once.
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
    let pg = TestPostgres::start().expect("PostgreSQL for the test (Debian package postgresql)");
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
