//! Under a connection flood each service keeps serving its users: 1,100 idle
//! connections to SMTP from 38 loopback addresses take only SMTP's own places, the
//! listener's stress mode cuts their wait and closes the oldest for newcomers, and
//! IMAPS, POP3S and submission users log in and work throughout.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agora, SmtpClient, run};

/// Holds N idle connections from several source addresses until told to look, then
/// says how many the server has closed (each read to its end without waiting).
const FLOOD: &str = r#"
import resource, socket, sys
ip, port, n, sources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 200)), hard))
socks = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.78.{i % sources}.1", 0))
    s.settimeout(10)
    s.connect((ip, port))
    socks.append(s)
print("ready", flush=True)
while sys.stdin.readline().strip() == "look":
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                if s.recv(4096) == b"":
                    closed += 1
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed += 1
    print(f"closed {closed}", flush=True)
"#;

const PASSWORD: &str = "flood-pw-1";

fn imaps_works(ip: &str, login: &str) {
    let script = format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=15)
m.login("{login}", "{PASSWORD}")
typ, data = m.select("INBOX")
assert typ == "OK", data
m.logout()
print("ok")
"#
    );
    common::python_ok(&script);
}

fn pop3s_works(ip: &str, login: &str) {
    let script = format!(
        r#"
import poplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL("{ip}", 10995, context=ctx, timeout=15)
p.user("{login}"); p.pass_("{PASSWORD}")
p.stat()
p.quit()
print("ok")
"#
    );
    common::python_ok(&script);
}

fn stress_gauge(ip: &str) -> String {
    let (ok, out) = run("curl", &["-s", &format!("http://{ip}:19025/metrics")], "");
    assert!(ok, "{out}");
    out.lines().find(|l| l.starts_with("agora_listener_stress{listener=\"smtp\"}")).unwrap_or("").to_string()
}

fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_flood_on_smtp_keeps_nobody_else_out() {
    if !common::have("curl") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[auth]\nplaintext_without_tls = true\n").unwrap();
    });
    let login = format!("fay@{}", a.domain);
    a.cli_ok(&["user", "add", &login, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    let before = peak_memory_kib(a.pid());

    let mut flood = Command::new("python3")
        .args(["-c", FLOOD, &a.ip, "10025", "1100", "38"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tell = flood.stdin.take().unwrap();
    let mut hear = BufReader::new(flood.stdout.take().unwrap());
    let mut said = String::new();
    hear.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "ready", "the flood's 1,100 connections are open");
    // The kernel completed the connections; the server takes them in as fast as it can.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stress_gauge(&a.ip).ends_with(" 1") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stress_gauge(&a.ip).ends_with(" 1"), "SMTP is under stress: {:?}", stress_gauge(&a.ip));

    // Every other service serves its users as if nothing happened.
    let t = Instant::now();
    imaps_works(&a.ip, &login);
    pop3s_works(&a.ip, &login);
    a.submit(&login, PASSWORD, &[&login], "Subject: during the flood\r\n\r\nstill here\r\n");
    assert!(t.elapsed() < Duration::from_secs(20), "logins took {:?}", t.elapsed());
    // A new SMTP client that talks promptly gets through.
    let t = Instant::now();
    let (mut c, greeting) = SmtpClient::connect(&a.smtp()).unwrap();
    assert!(greeting.starts_with("220"), "{greeting}");
    c.cmd("EHLO prompt.test").unwrap();
    let r = c.send_message("s@remote.test", &[&login], "Subject: prompt\r\n\r\nhello\r\n").unwrap();
    assert!(r.starts_with("250"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(8), "the prompt client waited {:?}", t.elapsed());

    // The flood is gone by itself within the stress timeout, and the stress with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tell.write_all(b"look\n").unwrap();
        said.clear();
        hear.read_line(&mut said).unwrap();
        if said.trim() == "closed 1100" || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(said.trim(), "closed 1100", "the server closed every idle flood connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stress_gauge(&a.ip).ends_with(" 0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stress_gauge(&a.ip).ends_with(" 0"), "stress mode ended: {}", stress_gauge(&a.ip));
    drop(tell);
    let _ = flood.wait();
    let peak = peak_memory_kib(a.pid());
    eprintln!("peak memory: {before} KiB before the flood, {peak} KiB after it");
    assert!(peak < 512 * 1024, "memory stays bounded: {peak} KiB");
    assert_eq!(a.inbox_count(&login), 2, "both messages delivered");
}

/// Half-open connections to IMAPS (TCP up, no TLS handshake ever) take only places
/// before login: a user still gets in, and one already logged in keeps working.
#[test]
fn half_open_tls_handshakes_keep_no_imap_user_out() {
    let a = Agora::start();
    let login = format!("gil@{}", a.domain);
    a.cli_ok(&["user", "add", &login, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    // Logged in before the flood, and kept open through it.
    let script = format!(
        r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx, timeout=15)
m.login("{login}", "{PASSWORD}")
print("in", flush=True)
sys.stdin.readline()
typ, data = m.select("INBOX")
assert typ == "OK", data
m.logout()
print("ok", flush=True)
"#,
        ip = a.ip
    );
    let mut early =
        Command::new("python3").args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut early_out = BufReader::new(early.stdout.take().unwrap());
    let mut said = String::new();
    early_out.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "in");

    // 600 half-open handshakes: more than IMAPS keeps for sessions before login (500).
    let mut flood = Command::new("python3")
        .args(["-c", FLOOD, &a.ip, "10993", "600", "38"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hear = BufReader::new(flood.stdout.take().unwrap());
    said.clear();
    hear.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "ready");
    let t = Instant::now();
    imaps_works(&a.ip, &login);
    assert!(t.elapsed() < Duration::from_secs(10), "a new IMAPS user waited {:?}", t.elapsed());
    let mut tell = early.stdin.take().unwrap();
    tell.write_all(b"go\n").unwrap();
    said.clear();
    early_out.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "ok", "the session logged in before the flood still works");
    let _ = early.wait();
    drop(flood.stdin.take());
    let _ = flood.wait();
    let peak = peak_memory_kib(a.pid());
    eprintln!("peak memory through 600 half-open TLS connections: {peak} KiB");
    assert!(peak < 512 * 1024, "memory stays bounded: {peak} KiB");
}

/// One user holding as many IMAP sessions as a user may keeps nobody else out.
#[test]
fn one_user_at_the_session_limit_keeps_no_other_user_out() {
    let a = Agora::start();
    let (heavy, light) = (format!("hal@{}", a.domain), format!("ivy@{}", a.domain));
    for who in [&heavy, &light] {
        a.cli_ok(&["user", "add", who, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    }
    let script = format!(
        r#"
import imaplib, socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
# From several addresses, as a user's devices would: one address may hold only 50.
class From(imaplib.IMAP4_SSL):
    def __init__(self, src, *args, **kw):
        self.src = src
        super().__init__(*args, **kw)
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self.src, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
held = []
for i in range(100):
    m = From(f"127.79.{{i % 4}}.1", "{ip}", 10993, ssl_context=ctx, timeout=15)
    m.login("{heavy}", "{PASSWORD}")
    held.append(m)
try:
    m = From("127.79.9.1", "{ip}", 10993, ssl_context=ctx, timeout=15)
    m.login("{heavy}", "{PASSWORD}")
    print("101st allowed")
except imaplib.IMAP4.error as e:
    print("101st refused:", e)
print("held", len(held), flush=True)
sys.stdin.readline()
"#,
        ip = a.ip
    );
    let mut heavy_client =
        Command::new("python3").args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(heavy_client.stdout.take().unwrap());
    let mut said = String::new();
    out.read_line(&mut said).unwrap();
    assert!(said.starts_with("101st refused"), "the per-user limit holds: {said}");
    said.clear();
    out.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "held 100");
    imaps_works(&a.ip, &light);
    pop3s_works(&a.ip, &light);
    let peak = peak_memory_kib(a.pid());
    eprintln!("peak memory with 100 logged-in IMAP sessions of one user: {peak} KiB");
    assert!(peak < 512 * 1024, "memory stays bounded: {peak} KiB");
    drop(heavy_client.stdin.take());
    let _ = heavy_client.wait();
}
