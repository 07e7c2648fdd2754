//! The server as its surroundings fail or wait: a DNS server that never answers or
//! answers slowly must not hold inbound mail past the checks' time budget; an IMAP
//! client may IDLE past the session timeout and still see new mail; every service
//! answers on IPv6 ([::1]) with the default listening addresses.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Agora, SmtpClient};

/// A server whose checks go to a DNS server behaving as `mode`, with a 2-second budget.
fn with_dns(mode: &str) -> (Agora, common::Dns, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let zone = work.path().join("zone.json");
    std::fs::write(&zone, "{}").unwrap();
    let (dns, ip) = common::dns_server_mode(&zone, mode);
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!("[smtp]\ncheck_budget_secs = 2\n[transport]\nnameservers = [\"{ip}:10053\"]\n"),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("pw\n"));
    (a, dns, work)
}

/// Sends one message from a remote sender; returns how long the 250 took.
fn send(a: &Agora, n: usize) -> Duration {
    let (mut c, _) = SmtpClient::connect(&a.smtp()).unwrap();
    c.cmd("EHLO mail.remote.test").unwrap();
    let t = Instant::now();
    let r = c
        .send_message(
            "someone@remote.test",
            &["bob@example.org"],
            &format!("From: someone@remote.test\r\nSubject: n{n}\r\n\r\nhello\r\n"),
        )
        .unwrap();
    assert!(r.starts_with("250"), "{r}");
    t.elapsed()
}

fn newest_message(a: &Agora) -> String {
    let script = format!(
        r#"
import imaplib, ssl
m = imaplib.IMAP4("{}", 10143)
m.starttls(ssl._create_unverified_context())
m.login("bob@example.org", "pw")
m.select("INBOX")
typ, data = m.search(None, "ALL")
last = data[0].split()[-1]
typ, data = m.fetch(last, "(BODY.PEEK[HEADER])")
print(data[0][1].decode())
"#,
        a.ip
    );
    let (ok, out) = common::run("python3", &["-c", &script], "");
    assert!(ok, "{out}");
    out
}

#[test]
fn a_dns_server_that_never_answers_costs_one_budget_not_a_stall() {
    if !common::have("python3") {
        return;
    }
    let (a, _dns, _work) = with_dns("drop-txt");
    let first = send(&a, 0);
    assert!(first < Duration::from_secs(5), "first message took {first:?} (budget 2 s)");
    let header = newest_message(&a);
    assert!(header.contains("temperror"), "{header}");
    // The domain is known slow now: the next messages are not held at all.
    let t = Instant::now();
    for n in 1..=20 {
        send(&a, n);
    }
    let rest = t.elapsed();
    assert!(rest < Duration::from_secs(5), "20 more messages took {rest:?}");
    assert_eq!(a.inbox_count("bob@example.org"), 21, "nothing lost");
}

#[test]
fn a_slow_dns_server_within_the_budget_gives_real_results() {
    if !common::have("python3") {
        return;
    }
    let (a, _dns, _work) = with_dns("delay=0.3");
    let took = send(&a, 0);
    assert!(took < Duration::from_secs(4), "{took:?}");
    let header = newest_message(&a);
    assert!(header.contains("spf=none") && !header.contains("temperror"), "{header}");
    drop(a);
    // Slower than the budget: temperror, in about the budget.
    let (a, _dns, _work) = with_dns("delay=4");
    let took = send(&a, 1);
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "{took:?}");
    assert!(newest_message(&a).contains("temperror"));
}

/// Reads lines until one starts with `prefix`; the lines read, or the connection's end.
fn until(r: &mut BufReader<TcpStream>, prefix: &str) -> Result<Vec<String>, Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) | Err(_) => return Err(seen),
            Ok(_) => {}
        }
        let done = l.starts_with(prefix);
        seen.push(l);
        if done {
            return Ok(seen);
        }
    }
}

#[test]
fn idle_outlasts_the_session_timeout_and_sees_new_mail() {
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            "[auth]\nplaintext_without_tls = true\n[imap]\ntimeout_secs = 2\nidle_keepalive_secs = 1\n",
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("pw\n"));
    let connect = || {
        let s = TcpStream::connect(format!("{}:10143", a.ip)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        until(&mut r, "* OK").unwrap();
        let mut w = s;
        w.write_all(b"a LOGIN bob@example.org pw\r\nb SELECT INBOX\r\n").unwrap();
        until(&mut r, "b OK").unwrap();
        (r, w)
    };
    // Without IDLE, a session silent past timeout_secs is logged out.
    let (mut r, _w) = connect();
    let t = Instant::now();
    let lines = until(&mut r, "* BYE").expect("a BYE before closing");
    assert!(t.elapsed() >= Duration::from_millis(1500), "{lines:?}");

    // IDLE waits past it: keepalives, then the new message, then DONE.
    let (mut r, mut w) = connect();
    w.write_all(b"c IDLE\r\n").unwrap();
    until(&mut r, "+ ").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    send_plain(&a);
    let lines = until(&mut r, "* 1 EXISTS").expect("the delivery seen while idling");
    assert!(lines.iter().any(|l| l.starts_with("* OK Still here")), "{lines:?}");
    w.write_all(b"DONE\r\n").unwrap();
    until(&mut r, "c OK").expect("IDLE ends normally");
}

fn send_plain(a: &Agora) {
    let (mut c, _) = SmtpClient::connect(&a.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    let r = c.send_message("s@remote.test", &["bob@example.org"], "Subject: x\r\n\r\nx\r\n").unwrap();
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn every_service_answers_on_ipv6_by_default() {
    // The default addresses (no --bind): every IPv4 and IPv6 address, on ports of our own.
    // Ports of our own below 65536 (the highest default port is the admin listener, 9025).
    // A wildcard bind fails when another test's ephemeral socket holds one of the ~20
    // ports (DNS over UDP most of all): then the next offset is tried.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let _dns = common::quiet_dns(dir.path(), &data);
    let mut started = None;
    let mut failures = Vec::new();
    for attempt in 0..5 {
        let offset = 40000 + ((std::process::id() + attempt * 17) % 60) * 100;
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.arg("--data").arg(&data).env("AGORA_LOG", "warn");
        cmd.args([
            "serve",
            "--domain",
            "example.org",
            "--hostname",
            "mx.example.org",
            "--port-offset",
            &offset.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        while !banner.contains("agora: ready") {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                break;
            }
            banner.push_str(&l);
        }
        if banner.contains("agora: ready") {
            started = Some((child, banner, offset));
            break;
        }
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        let _ = child.wait();
        failures.push(format!("offset {offset}: {err}"));
    }
    let Some((mut child, banner, offset)) = started else { panic!("server never started: {failures:?}") };
    assert!(banner.contains("[::]:") && banner.contains("0.0.0.0:"), "both families in the table: {banner}");
    let port = |p: u32| (p + offset) as u16;
    for (p, greeting) in [(25, "220 "), (587, "220 "), (143, "* OK"), (110, "+OK")] {
        for host in ["[::1]", "127.0.0.1"] {
            let s = TcpStream::connect(format!("{host}:{}", port(p))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut l = String::new();
            BufReader::new(s).read_line(&mut l).unwrap();
            assert!(l.starts_with(greeting), "{host}:{}: {l}", port(p));
        }
    }
    for p in [465, 993, 995] {
        let (ok, text) = common::run(
            "openssl",
            &["s_client", "-connect", &format!("[::1]:{}", port(p)), "-servername", "mx.example.org"],
            "",
        );
        assert!(ok && text.contains("BEGIN CERTIFICATE"), "{p}: {text}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
