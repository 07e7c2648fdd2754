//! Agora and INN (Debian inn2, a private instance started here on loopback) feed each
//! other: an article posted on either side reaches the other exactly once, a restart
//! of either side loses nothing, and a looping Path is refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agora, have, python_ok, run, unique_ip};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/inn-instance")
}

struct Inn {
    dir: PathBuf,
    ip: String,
    agora_ip: String,
}

/// Runs the INN script: as root, or through `sudo -n` (INN runs as the news user).
fn inn_script(args: &[&str]) -> (bool, String) {
    let script = script();
    if is_root() {
        run(script.to_str().unwrap(), args, "")
    } else {
        let mut all = vec!["-n", script.to_str().unwrap()];
        all.extend_from_slice(args);
        run("sudo", &all, "")
    }
}

impl Inn {
    fn start(&self) {
        let (ok, out) = inn_script(&[
            "start",
            self.dir.to_str().unwrap(),
            &self.ip,
            "11119",
            "inn.test",
            &self.agora_ip,
            "10119",
            "mx.example.org",
            "agora.test",
        ]);
        assert!(ok, "INN did not start: {out}");
    }

    fn stop(&self) {
        let (ok, out) = inn_script(&["stop", self.dir.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
}

impl Drop for Inn {
    fn drop(&mut self) {
        let _ = inn_script(&["stop", self.dir.to_str().unwrap()]);
    }
}

const PRELUDE: &str = r#"
import nntplib, io, sys, time, warnings
warnings.simplefilter("ignore")
def count(host, port):
    s = nntplib.NNTP(host, port, readermode=True)
    n = s.group("agora.test")[1]
    s.quit()
    return n
def ids(host, port):
    s = nntplib.NNTP(host, port, readermode=True)
    resp, count, first, last, name = s.group("agora.test")
    got = [o["message-id"] for _, o in s.over((first, last))[1]] if count else []
    s.quit()
    return sorted(got)
def wait_for(host, port, want):
    deadline = time.time() + 60
    while True:
        got = ids(host, port)
        if got == sorted(want):
            return
        if time.time() > deadline:
            raise SystemExit("%s:%s has %s, not %s" % (host, port, got, sorted(want)))
        time.sleep(0.3)
def post(host, port, mid, login=None):
    s = nntplib.NNTP(host, port, readermode=True)
    if login:
        s.login(login, "pw")
    art = ("From: Poster <poster@example.org>\r\nNewsgroups: agora.test\r\nSubject: %s\r\nMessage-ID: %s\r\n\r\nbody of %s\r\n" % (mid, mid, mid)).encode()
    resp = s.post(io.BytesIO(art))
    assert resp.startswith("240"), resp
    s.quit()
"#;

#[test]
fn agora_and_inn_exchange_articles_both_ways_once_across_restarts() {
    if !have("setpriv")
        || !Path::new("/usr/lib/news/bin/innd").exists()
        || !(is_root() || run("sudo", &["-n", "true"], "").0)
    {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "INN (inn2) is missing, or neither root nor sudo");
        return;
    }
    let (agora_ip, inn_ip) = (unique_ip(), unique_ip());
    let mut a = Agora::start_on(agora_ip.clone(), "example.org", |data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n[nntp.peers.inn]\nhost = \"{inn_ip}\"\nport = 11119\nnewsgroups = \"agora.*\"\npath_name = \"inn.test\"\n"
            ),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("pw\n"));
    a.cli_ok(&["public", "add", "Agora Test", "--newsgroup", "agora.test"], None);
    a.cli_ok(&["public", "permission", "Agora Test", "anyone", "reader"], None);
    a.cli_ok(&["public", "permission", "Agora Test", "alice@example.org", "author"], None);

    // INN's directory and its parents must be open to its user.
    let work = tempfile::tempdir().unwrap();
    run("chmod", &["755", work.path().to_str().unwrap()], "");
    let inn = Inn { dir: work.path().join("inn"), ip: inn_ip.clone(), agora_ip: agora_ip.clone() };
    inn.start();

    let check = |body: &str| {
        python_ok(&format!("{PRELUDE}\nA = ('{agora_ip}', 10119)\nI = ('{inn_ip}', 11119)\n{body}\nprint('ok')\n"));
    };
    // One post on each side reaches the other, once.
    check(
        r#"
post(*A, "<from-agora@example.org>", login="alice@example.org")
post(*I, "<from-inn@inn.test>")
both = ["<from-agora@example.org>", "<from-inn@inn.test>"]
wait_for(*A, both)
wait_for(*I, both)
time.sleep(2)
assert ids(*A) == sorted(both) and ids(*I) == sorted(both), "no echoes"
"#,
    );
    // A looping Path is refused; a fed duplicate is not wanted.
    python_ok(&format!(
        r#"{PRELUDE}
import socket
s = socket.socket(); s.bind(("{inn_ip}", 0)); s.connect(("{agora_ip}", 10119)); f = s.makefile("rwb")
assert f.readline().startswith(b"200")
def cmd(line):
    f.write(line.encode() + b"\r\n"); f.flush()
    return f.readline().decode()
art = "Path: inn.test!mx.example.org!not-for-mail\r\nFrom: x@inn.test\r\nNewsgroups: agora.test\r\nSubject: loop\r\nDate: Wed, 2 Dec 2026 00:00:00 +0000\r\nMessage-ID: <loop@inn.test>\r\n\r\nx\r\n"
assert cmd("IHAVE <loop@inn.test>").startswith("335")
r = cmd(art + ".")
assert r.startswith("437") and "loop" in r, r
r = cmd("IHAVE <from-inn@inn.test>")
assert r.startswith("435"), r
cmd("QUIT")
print("ok")
"#
    ));

    // INN down: Agora keeps what it must send; Agora restarted meanwhile loses nothing.
    inn.stop();
    check(r#"post(*A, "<while-inn-was-down@example.org>", login="alice@example.org")"#);
    a.stop();
    a.spawn();
    inn.start();
    // Agora down: INN keeps its backlog for it.
    a.stop();
    check(r#"post(*I, "<while-agora-was-down@inn.test>")"#);
    a.spawn();
    let started = Instant::now();
    check(
        r#"
every = ["<from-agora@example.org>", "<from-inn@inn.test>", "<while-inn-was-down@example.org>", "<while-agora-was-down@inn.test>"]
wait_for(*A, every)
wait_for(*I, every)
time.sleep(2)
assert ids(*A) == sorted(every) and ids(*I) == sorted(every), "each article once on each side"
"#,
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}

fn is_root() -> bool {
    run("id", &["-u"], "").1.trim() == "0"
}
