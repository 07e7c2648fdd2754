//! Many IMAP sessions appending, flagging, moving and expunging in one mailbox at once:
//! every session's view stays consistent (message count as told by EXISTS/EXPUNGE
//! matches the mailbox, UIDs strictly ascending, MODSEQ never going back) and no
//! message is lost or duplicated.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Agora;

const THREADS: usize = 8;
const ROUNDS: usize = 40;

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
    /// Messages in the selected mailbox as this session has been told.
    exists: i64,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client { r: BufReader::new(s.try_clone().unwrap()), w: s, n: 0, exists: 0 };
        c.line();
        c
    }

    /// One response line with its literals inlined.
    fn line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            assert!(self.r.read_until(b'\n', &mut l).unwrap() > 0, "server closed");
            out.extend_from_slice(&l);
            let t = l.strip_suffix(b"\r\n").unwrap_or(&l);
            let lit = t
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|p| &t[p + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut d = vec![0; n];
                    self.r.read_exact(&mut d).unwrap();
                    out.extend_from_slice(&d);
                }
                None => return String::from_utf8_lossy(&out).into_owned(),
            }
        }
    }

    /// Runs a command; returns its untagged lines and checks the tagged OK. EXISTS and
    /// EXPUNGE keep `exists` current.
    fn run(&mut self, cmd: &str) -> Vec<String> {
        self.n += 1;
        let tag = format!("c{}", self.n);
        if cmd.starts_with("SELECT") || cmd.starts_with("EXAMINE") {
            self.exists = 0;
        }
        self.w.write_all(format!("{tag} {cmd}\r\n").as_bytes()).unwrap();
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "{cmd}: {l}");
                return untagged;
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "*" {
                if words[2] == "EXISTS" {
                    let n: i64 = words[1].parse().unwrap();
                    assert!(n >= self.exists, "EXISTS went from {} down to {n} without EXPUNGE", self.exists);
                    self.exists = n;
                } else if words[2] == "EXPUNGE" {
                    let seq: i64 = words[1].parse().unwrap();
                    assert!(seq >= 1 && seq <= self.exists, "EXPUNGE {seq} of {} messages", self.exists);
                    self.exists -= 1;
                }
            }
            untagged.push(l);
        }
    }

    /// UID FETCH 1:* (UID MODSEQ): (uid, modseq) in sequence order. Unsolicited FETCHes
    /// (flag changes of other sessions) may come first; the answer's own lines win.
    fn uids(&mut self) -> Vec<(u32, u64)> {
        let lines = self.run("UID FETCH 1:* (MODSEQ)");
        let mut by_seq: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.contains(" FETCH ") && l.contains("UID ") && l.contains("MODSEQ (")) {
            let num = |k: &str| {
                let i = l.find(k).unwrap() + k.len();
                l[i..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse::<u64>().unwrap()
            };
            by_seq.insert(num("* "), (num("UID ") as u32, num("MODSEQ (")));
        }
        by_seq.into_values().collect()
    }
}

#[test]
fn sessions_working_on_one_mailbox_stay_consistent() {
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[auth]\nplaintext_without_tls = true\n").unwrap();
    });
    a.cli_ok(&["user", "add", "load@example.org", "--password-stdin"], Some("load-pw\n"));
    let addr = format!("{}:10143", a.ip);
    {
        let mut c = Client::connect(&addr);
        c.run("LOGIN load@example.org load-pw");
        c.run("CREATE Dest");
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.run("LOGIN load@example.org load-pw");
                c.run("SELECT INBOX");
                let mut mine: Vec<(u32, String)> = Vec::new();
                let (mut moved, mut expunged) = (Vec::new(), Vec::new());
                let mut last_modseq: HashMap<u32, u64> = HashMap::new();
                for i in 0..ROUNDS {
                    let subject = format!("t{t}-{i}");
                    let body = format!("Subject: {subject}\r\n\r\nbody {t} {i}\r\n");
                    c.run(&format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()));
                    // The APPENDUID is in the tagged line, which run() consumed: find it by SEARCH.
                    let found = c.run(&format!("UID SEARCH SUBJECT \"{subject}\""));
                    let uid: u32 = found
                        .iter()
                        .find(|l| l.starts_with("* SEARCH"))
                        .and_then(|l| l.split_whitespace().nth(2))
                        .expect("appended message found")
                        .parse()
                        .unwrap();
                    mine.push((uid, subject));
                    match i % 5 {
                        1 => {
                            c.run(&format!("UID STORE {uid} +FLAGS (\\Flagged $t{t})"));
                        }
                        2 => {
                            let (u, s) = mine.remove(0);
                            c.run(&format!("UID MOVE {u} Dest"));
                            moved.push(s);
                        }
                        3 => {
                            let (u, s) = mine.remove(0);
                            c.run(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
                            c.run(&format!("UID EXPUNGE {u}"));
                            expunged.push(s);
                        }
                        _ => {
                            c.run("NOOP");
                        }
                    }
                    // The view: UIDs strictly ascending, MODSEQ of a message never goes back,
                    // and as many messages as this session was told about.
                    let view = c.uids();
                    assert!(view.windows(2).all(|w| w[0].0 < w[1].0), "UIDs not ascending: {view:?}");
                    for (uid, ms) in &view {
                        let prev = last_modseq.insert(*uid, *ms).unwrap_or(0);
                        assert!(*ms >= prev, "MODSEQ of {uid} went back from {prev} to {ms}");
                    }
                    assert_eq!(view.len() as i64, c.exists, "view has {} messages, told {}", view.len(), c.exists);
                }
                c.run("LOGOUT");
                (mine.into_iter().map(|m| m.1).collect::<Vec<_>>(), moved, expunged)
            })
        })
        .collect();
    let mut kept: Vec<String> = Vec::new();
    let mut moved: Vec<String> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    for h in handles {
        let (k, m, e) = h.join().expect("a session failed");
        kept.extend(k);
        moved.extend(m);
        gone.extend(e);
    }
    // Every message is where it should be, exactly once.
    let mut c = Client::connect(&addr);
    c.run("LOGIN load@example.org load-pw");
    let count = |c: &mut Client, mailbox: &str| -> BTreeMap<String, usize> {
        c.run(&format!("EXAMINE {mailbox}"));
        let mut seen = BTreeMap::new();
        for l in c.run("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])") {
            if let Some(i) = l.find("Subject: ") {
                let s = l[i + 9..].split("\r\n").next().unwrap().to_string();
                *seen.entry(s).or_insert(0) += 1;
            }
        }
        seen
    };
    let inbox = count(&mut c, "INBOX");
    let dest = count(&mut c, "Dest");
    assert!(inbox.values().chain(dest.values()).all(|&n| n == 1), "duplicates: {inbox:?} {dest:?}");
    let mut want_inbox = kept.clone();
    want_inbox.sort();
    assert_eq!(inbox.keys().cloned().collect::<Vec<_>>(), want_inbox);
    moved.sort();
    assert_eq!(dest.keys().cloned().collect::<Vec<_>>(), moved);
    assert!(gone.iter().all(|g| !inbox.contains_key(g) && !dest.contains_key(g)));
    assert_eq!(kept.len() + moved.len() + gone.len(), THREADS * ROUNDS);
}

/// NOTIFY (RFC 5465): a session that asked is told of mail arriving in another mailbox
/// (STATUS) and in the selected one (EXISTS) between commands, without IDLE; mailboxes
/// created elsewhere show as LIST.
#[test]
fn notify_tells_of_changes_without_a_command() {
    if !common::have("python3") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[auth]\nplaintext_without_tls = true\n").unwrap();
    });
    a.cli_ok(&["user", "add", "watch@example.org", "--password-stdin"], Some("watch-pw\n"));
    common::python_ok(&format!(
        r#"
import socket, time
def client():
    s = socket.create_connection(("{ip}", 10143), timeout=10)
    f = s.makefile("rb")
    f.readline()
    return s, f
def run(s, f, tag, cmd):
    s.sendall(("%s %s\r\n" % (tag, cmd)).encode())
    lines = []
    while True:
        l = f.readline().decode()
        assert l, "closed"
        lines.append(l)
        if l.startswith(tag + " "):
            assert l.split()[1] == "OK", lines
            return lines
def unasked(f, want, seconds=10):
    f.raw._sock.settimeout(seconds)
    got = []
    while True:
        l = f.readline().decode()
        got.append(l)
        if want in l:
            return got
w, wf = client()
run(w, wf, "a", "LOGIN watch@example.org watch-pw")
run(w, wf, "b", "CREATE Lists")
run(w, wf, "c", "SELECT Lists")
r = run(w, wf, "d", "NOTIFY SET STATUS (selected (MessageNew MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName))")
assert any(l.startswith(('* STATUS "INBOX" (MESSAGES 0 UIDNEXT', '* STATUS INBOX (MESSAGES 0 UIDNEXT')) for l in r), r

o, of = client()
run(o, of, "a", "LOGIN watch@example.org watch-pw")
msg = b"Subject: hi\r\n\r\nhello\r\n"
o.sendall(b"b APPEND INBOX {{%d+}}\r\n" % len(msg) + msg + b"\r\n")
got = unasked(wf, "INBOX")
assert any("MESSAGES 1" in l for l in got), got
o.sendall(b"c APPEND Lists {{%d+}}\r\n" % len(msg) + msg + b"\r\n")
got = unasked(wf, "EXISTS")
assert any(l.strip() == "* 1 EXISTS" for l in got), got
run(o, of, "d", "CREATE Later")
got = unasked(wf, "* LIST")
assert any('"Later"' in l or " Later" in l for l in got), got
run(w, wf, "e", "NOTIFY NONE")
run(w, wf, "f", "LOGOUT")
print("ok")
"#,
        ip = a.ip
    ));
}
