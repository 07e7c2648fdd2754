//! Harness for end-to-end tests: runs the real `agora` binary on its own loopback
//! address (127.77.x.y) with --port-offset 10000, and small helpers for real clients.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agora");
pub const DOMAIN: &str = "example.org";
static NEXT: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other test in this run uses.
pub fn unique_ip() -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    format!("127.77.{}.{}", (pid % 250) + 1, n % 250 + 1)
}

/// True if `tool` runs; if not, the test is skipped unless AGORA_REQUIRE_PEERS is set,
/// in which case a missing tool is a failure (CI installs every peer first).
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("AGORA_REQUIRE_PEERS").is_some() {
            panic!("{tool} is required (AGORA_REQUIRE_PEERS is set) but not installed");
        }
        eprintln!("skipping: {tool} not installed (run scripts/test to install peers)");
    }
    ok
}

pub struct Agora {
    pub dir: tempfile::TempDir,
    pub ip: String,
    /// The mail domain made on first run; the host name is mx.DOMAIN.
    pub domain: String,
    child: Option<Child>,
    /// Everything the server printed on stdout up to "agora: ready".
    pub banner: String,
    pub admin_password: Option<String>,
    /// The loopback DNS server the harness gave a server whose configuration named
    /// none: no test ever asks the system's resolver.
    _dns: Option<Dns>,
}

impl Agora {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn smtp(&self) -> String {
        format!("{}:10025", self.ip)
    }

    /// First run on a fresh data directory.
    pub fn start() -> Agora {
        Agora::start_with(|_| {})
    }

    /// First run; `prepare` may write files (e.g. a configuration) into the data directory.
    pub fn start_with(prepare: impl FnOnce(&Path)) -> Agora {
        Agora::start_for(DOMAIN, prepare)
    }

    /// First run of a server for another mail domain than example.org.
    pub fn start_for(domain: &str, prepare: impl FnOnce(&Path)) -> Agora {
        Agora::start_on(unique_ip(), domain, prepare)
    }

    /// First run on a loopback address chosen beforehand (for peers that must know it
    /// before the server starts).
    pub fn start_on(ip: String, domain: &str, prepare: impl FnOnce(&Path)) -> Agora {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        prepare(&data);
        let dns = quiet_dns(dir.path(), &data);
        let mut a = Agora {
            dir,
            ip,
            domain: domain.to_string(),
            child: None,
            banner: String::new(),
            admin_password: None,
            _dns: dns,
        };
        a.spawn();
        a.admin_password =
            a.banner.lines().find_map(|l| l.split_once("(shown only this once): ").map(|(_, p)| p.trim().to_string()));
        a
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data").arg(self.data()).env("AGORA_LOG", "warn");
        c
    }

    pub fn spawn(&mut self) {
        let (child, banner) = spawn_server_as(self.command(), &self.ip, &self.domain).unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
        self.banner = banner;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(st.success());
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(start.elapsed() < limit, "server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Runs an administration command against this server's data directory.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command();
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(out.status.success(), "agora {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Adds a user with the CLI, then delivers `bodies` to it over SMTP, each acknowledged.
    pub fn add_user_with_mail(&self, login: &str, password: &str, bodies: &[String]) {
        self.cli_ok(&["user", "add", login, "--password-stdin"], Some(&format!("{password}\n")));
        let (mut c, _) = SmtpClient::connect(&self.smtp()).unwrap();
        c.cmd("EHLO t.test").unwrap();
        for body in bodies {
            let r = c.send_message("s@remote.test", &[login], body).unwrap();
            assert!(r.starts_with("250"), "{r}");
        }
    }

    /// Sends one message through this server's submission port as `login` (Python's
    /// smtplib: AUTH, then the envelope from `login` to `to`).
    pub fn submit(&self, login: &str, password: &str, to: &[&str], message: &str) {
        let script = r#"
import smtplib, sys
ip, login, password, message = sys.argv[1:5]
s = smtplib.SMTP(ip, 10587, timeout=20)
s.login(login, password)
s.sendmail(login, sys.argv[5:], message)
s.quit()
print("ok")
"#;
        let mut args = vec!["-c", script, &self.ip, login, password, message];
        args.extend_from_slice(to);
        let (ok, out) = run("python3", &args, "");
        assert!(ok && out.contains("ok"), "submission as {login}: {out}");
    }

    /// Number of messages in a user's INBOX, as `agora user show` reports it.
    pub fn inbox_count(&self, login: &str) -> u32 {
        let out = self.cli_ok(&["user", "show", login], None);
        let line = out.lines().find(|l| l.contains("mailbox:") && l.contains("INBOX")).unwrap();
        let n = line.rsplit_once('(').unwrap().1.split(' ').next().unwrap();
        n.parse().unwrap()
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `agora serve` and waits for "agora: ready". Err carries what it printed.
pub fn spawn_server(cmd: Command, ip: &str) -> Result<(Child, String), String> {
    spawn_server_as(cmd, ip, DOMAIN)
}

/// Like `spawn_server`, for a server whose mail domain is `domain` (host mx.DOMAIN).
pub fn spawn_server_as(mut cmd: Command, ip: &str, domain: &str) -> Result<(Child, String), String> {
    let hostname = format!("mx.{domain}");
    cmd.args(["serve", "--domain", domain, "--hostname", &hostname, "--port-offset", "10000", "--bind", ip]);
    wait_ready(cmd)
}

/// Starts a server command as given and waits for "agora: ready". Err carries what it printed.
pub fn wait_ready(mut cmd: Command) -> Result<(Child, String), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (etx, erx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        let _ = etx.send(s);
    });
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
                if line == "agora: ready" {
                    return Ok((child, banner));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Ok(Some(_)) = child.try_wait() {
                    let err = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                    return Err(format!("agora exited early.\nstdout:\n{banner}\nstderr:\n{err}"));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let err = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                return Err(format!("agora did not become ready.\nstdout:\n{banner}\nstderr:\n{err}"));
            }
        }
    }
}

/// A minimal blocking SMTP client for tests that need exact control of the dialogue.
pub struct SmtpClient {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl SmtpClient {
    pub fn connect(addr: &str) -> std::io::Result<(SmtpClient, String)> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut c = SmtpClient { r: BufReader::new(s.try_clone()?), w: s };
        let greeting = c.reply()?;
        Ok((c, greeting))
    }

    pub fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("closed after {all:?}")));
            }
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.w.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// Sends one message; returns the reply to the end of data.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> std::io::Result<String> {
        expect(&self.cmd(&format!("MAIL FROM:<{from}>"))?, "250")?;
        for t in to {
            expect(&self.cmd(&format!("RCPT TO:<{t}>"))?, "250")?;
        }
        expect(&self.cmd("DATA")?, "354")?;
        // Dot-stuffing, as every SMTP client must do (RFC 5321 §4.5.2).
        let mut data = String::with_capacity(body.len() + 8);
        for line in body.split_inclusive("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        self.w.write_all(data.as_bytes())?;
        self.cmd(".")
    }
}

fn expect(reply: &str, code: &str) -> std::io::Result<()> {
    if reply.starts_with(code) { Ok(()) } else { Err(std::io::Error::other(format!("expected {code}, got {reply}"))) }
}

/// Runs a Python client script, which must exit 0 and print "ok" once it has
/// checked everything.
pub fn python_ok(script: &str) {
    let (ok, out) = run("python3", &["-c", script], "");
    assert!(ok && out.contains("ok"), "{out}");
}

/// Runs a program with `input` on stdin; returns (success, stdout+stderr).
pub fn run(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A tiny authoritative DNS server (UDP and TCP) answering from a JSON zone.
const DNS: &str = r#"
import json, socket, struct, sys, threading
ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# "drop-txt": TXT queries get no answer (a broken resolver); "delay=S": every answer waits S seconds.
mode = sys.argv[4] if len(sys.argv) > 4 else ""
import time
TYPES = {1: "A", 15: "MX", 16: "TXT", 33: "SRV"}
def name_at(b, i):
    labels = []
    while b[i]:
        labels.append(b[i + 1:i + 1 + b[i]].decode()); i += 1 + b[i]
    return ".".join(labels).lower(), i + 1
def wire(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
def answer(q):
    qid, = struct.unpack(">H", q[:2])
    name, i = name_at(q, 12)
    qtype, = struct.unpack(">H", q[i:i + 2])
    zone = json.loads(open(path).read())  # read each time: tests change it as they go
    records = zone.get(name + "/" + TYPES.get(qtype, "?"), [])
    known = any(k.startswith(name + "/") for k in zone)
    rr = b""
    for v in records:
        if qtype == 16:
            data = b"".join(bytes([len(c)]) + c for c in (v.encode()[k:k + 255] for k in range(0, len(v), 255)))
        elif qtype == 1:
            data = socket.inet_aton(v)
        elif qtype == 33:
            prio, weight, port, host = v.split()
            data = struct.pack(">HHH", int(prio), int(weight), int(port)) + wire(host)
        else:
            pref, host = v.split()
            data = struct.pack(">H", int(pref)) + wire(host)
        rr += b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(data)) + data
    rcode = 0 if known else 3
    head = struct.pack(">HHHHHH", qid, 0x8400 | rcode | (0x0100 & struct.unpack(">H", q[2:4])[0]), 1, len(records), 0, 0)
    return head + q[12:i + 4] + rr
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, port))
    while True:
        q, a = s.recvfrom(4096)
        threading.Thread(target=reply_udp, args=(s, q, a), daemon=True).start()
def reply_udp(s, q, a):
    try:
        name, i = name_at(q, 12)
        if mode == "drop-txt" and struct.unpack(">H", q[i:i + 2])[0] == 16: return
        if mode.startswith("delay="): time.sleep(float(mode[6:]))
        s.sendto(answer(q), a)
    except Exception: pass
def tcp_client(c):
    try:
        while True:
            n = c.recv(2)
            if len(n) < 2: return
            q = b""
            while len(q) < struct.unpack(">H", n)[0]: q += c.recv(4096)
            name, i = name_at(q, 12)
            if mode == "drop-txt" and struct.unpack(">H", q[i:i + 2])[0] == 16: continue
            if mode.startswith("delay="): time.sleep(float(mode[6:]))
            r = answer(q); c.sendall(struct.pack(">H", len(r)) + r)
    except Exception: pass
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip, port)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=tcp_client, args=(c,), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"#;

/// Unless the configuration in `data` names DNS servers, starts an empty loopback DNS
/// server (every name unknown) and names it under `[transport] nameservers`.
pub fn quiet_dns(work: &Path, data: &Path) -> Option<Dns> {
    let cfg = data.join("agora.toml");
    let text = std::fs::read_to_string(&cfg).unwrap_or_default();
    if text.contains("nameservers") {
        return None;
    }
    let zone = work.join("quiet-zone.json");
    std::fs::write(&zone, "{}").unwrap();
    let (dns, ip) = dns_server(&zone);
    let line = format!("nameservers = [\"{ip}:10053\"]\n");
    const HEADER: &str = "[transport]\n";
    let text = match text.find(HEADER) {
        Some(i) => format!("{}{line}{}", &text[..i + HEADER.len()], &text[i + HEADER.len()..]),
        None => format!("{text}\n[transport]\n{line}"),
    };
    std::fs::write(&cfg, text).unwrap();
    Some(dns)
}

/// The DNS server's process, stopped when dropped.
pub struct Dns(Child);

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the DNS server on a fresh loopback address, port 10053, answering from the
/// JSON zone in `zone_file` ("name/TYPE": [values], read at each query); returns it
/// and its address.
pub fn dns_server(zone_file: &Path) -> (Dns, String) {
    dns_server_mode(zone_file, "")
}

/// `dns_server` that misbehaves: "drop-txt" never answers TXT queries, "delay=S" answers
/// everything S seconds late.
pub fn dns_server_mode(zone_file: &Path, mode: &str) -> (Dns, String) {
    let ip = unique_ip();
    let mut child = Command::new("python3")
        .args(["-c", DNS, &ip, "10053", zone_file.to_str().unwrap(), mode])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    (Dns(child), ip)
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private CA in `dir`: ca.pem and ca.key.
pub fn private_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Agora test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate from the private CA for `names` (host names or IP addresses), as
/// (cert, key) file names.
pub fn issue(dir: &Path, stem: &str, names: &[&str]) -> (String, String) {
    let (cert, key, csr, ext) =
        (format!("{stem}.pem"), format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.ext"));
    let san: Vec<String> = names
        .iter()
        .map(|n| if n.parse::<std::net::IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
        .collect();
    std::fs::write(dir.join(&ext), format!("subjectAltName={}\n", san.join(","))).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={}", names[0]),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
    (cert, key)
}

/// Starts tshark capturing loopback traffic that `filter` (a capture filter) selects
/// into `file`; returns once it listens. Stop it with `kill` and wait for it.
pub fn start_capture(filter: &str, file: &Path) -> Child {
    let mut child = Command::new("tshark")
        .args(["-i", "lo", "-f", filter, "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tshark says "Capturing on" once it listens.
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Capturing on") {
        let n = err.read(&mut b).unwrap();
        assert!(n > 0, "tshark: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    child
}
