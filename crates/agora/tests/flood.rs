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
