//! MTA-STS (RFC 8461) end to end: a test DNS server publishes MX records and
//! `_mta-sts` TXT records, an HTTPS server serves the policies under a private CA,
//! and the receiving Agora presents a certificate from that CA for mx.b.test only.
//! Mail to a domain whose policy the MX satisfies is delivered; a policy in force
//! that the certificate or the MX name fails keeps the mail queued (4.7.5); a policy
//! in testing mode delivers anyway.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agora, issue, private_ca, python_ok, unique_ip};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Serves each domain's policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
const POLICY_SERVER: &str = r#"
import http.server, json, ssl, sys
ip, port, cert, key, policies = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        body = policies.get(host.removeprefix("mta-sts."))
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_response(404); self.end_headers(); return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer((ip, port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn policies_decide_where_mail_may_go() {
    if !common::have("python3") || !common::have("openssl") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    private_ca(p);
    let (mx_cert, mx_key) = issue(p, "mx", &["mx.b.test"]);
    let (web_cert, web_key) =
        issue(p, "web", &["mta-sts.b.test", "mta-sts.c.test", "mta-sts.d.test", "mta-sts.e.test"]);

    // B receives for all four domains with the mx.b.test certificate.
    let (bc, bk) = (p.join(&mx_cert), p.join(&mx_key));
    let b = Agora::start_for("b.test", |data| {
        std::fs::write(
            data.join("agora.toml"),
            format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", bc.display(), bk.display()),
        )
        .unwrap();
    });
    for (d, u) in [("c.test", "carol"), ("d.test", "dave"), ("e.test", "erin")] {
        b.cli_ok(&["domain", "add", d], None);
        b.cli_ok(&["user", "add", &format!("{u}@{d}"), "--password-stdin"], Some("pw\n"));
    }
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("pw\n"));
    b.cli_ok(&["user", "add", "tls@b.test", "--password-stdin"], Some("pw\n"));

    // The policy host.
    let web_ip = unique_ip();
    let policies = serde_json::json!({
        "b.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.b.test\r\nmax_age: 86400\r\n",
        // The MX is listed, but B's certificate does not name it.
        "c.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.c.test\r\nmax_age: 86400\r\n",
        // Same failure, but only testing.
        "d.test": "version: STSv1\r\nmode: testing\r\nmx: mx.d.test\r\nmax_age: 86400\r\n",
        // The MX is not one the policy lists.
        "e.test": "version: STSv1\r\nmode: enforce\r\nmx: mail.e.test\r\nmax_age: 86400\r\n",
    });
    let mut child = Command::new("python3")
        .args([
            "-c",
            POLICY_SERVER,
            &web_ip,
            "10443",
            p.join(&web_cert).to_str().unwrap(),
            p.join(&web_key).to_str().unwrap(),
            &policies.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let _web = Process(child);

    // DNS: MX records to B, policies announced.
    let mut zone = serde_json::Map::new();
    for d in ["b", "c", "d", "e"] {
        zone.insert(format!("{d}.test/MX"), serde_json::json!([format!("10 mx.{d}.test")]));
        zone.insert(format!("mx.{d}.test/A"), serde_json::json!([b.ip]));
        zone.insert(format!("_mta-sts.{d}.test/TXT"), serde_json::json!(["v=STSv1; id=20261128T1"]));
        zone.insert(format!("mta-sts.{d}.test/A"), serde_json::json!([web_ip]));
    }
    // b.test, c.test and d.test ask for TLS reports, to a mailbox at B.
    for d in ["b", "c", "d"] {
        zone.insert(format!("_smtp._tls.{d}.test/TXT"), serde_json::json!(["v=TLSRPTv1; rua=mailto:tls@b.test"]));
    }
    let zone_file = p.join("zone.json");
    std::fs::write(&zone_file, serde_json::Value::Object(zone).to_string()).unwrap();
    let (_dns, dns_ip) = common::dns_server(&zone_file);

    // A delivers by MX through that DNS, trusting the private CA.
    let ca = p.join("ca.pem");
    let mut a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n\
                 [transport]\npoll_secs = 1\nretry_secs = 1\nmx_port = 10025\nmta_sts_port = 10443\n\
                 nameservers = [\"{dns_ip}:10053\"]\nca_file = \"{}\"\ntls_report_period_secs = 6\n",
                ca.display()
            ),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("alice-pw\n"));
    python_ok(&format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("alice@example.org", "alice-pw")
for to in ["bob@b.test", "carol@c.test", "dave@d.test", "erin@e.test"]:
    s.sendmail("alice@example.org", [to], "From: alice@example.org\r\nTo: " + to + "\r\nSubject: sts\r\n\r\nhi\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    wait_until("delivery to b.test", || b.inbox_count("bob@b.test") == 1);
    wait_until("delivery to d.test (testing mode)", || b.inbox_count("dave@d.test") == 1);
    for who in ["carol@c.test", "erin@e.test"] {
        wait_until("a deferral under the policy", || {
            let t = a.cli_ok(&["track", "--recipient", who], None);
            t.lines().any(|l| l.contains("deferred") && l.contains("4.7.5") && l.contains("MTA-STS"))
        });
    }
    assert_eq!(b.inbox_count("carol@c.test"), 0);
    assert_eq!(b.inbox_count("erin@e.test"), 0);
    let queue = a.cli_ok(&["queue", "list"], None);
    assert!(queue.contains("carol@c.test") && queue.contains("erin@e.test"), "{queue}");
    assert!(!queue.contains("bob@b.test") && !queue.contains("dave@d.test"), "{queue}");

    // TLS reports (RFC 8460): after the period, A reports to the domains that asked
    // (b.test: the session succeeded; c.test: the certificate did not name the MX),
    // and B keeps what it received for its hosted domains.
    wait_until("TLS reports at B", || {
        let list = b.cli_ok(&["tls-report", "list"], None);
        list.contains("for b.test") && list.contains("for c.test") && list.contains("for d.test")
    });
    let list = b.cli_ok(&["tls-report", "list"], None);
    let line = |d: &str| list.lines().find(|l| l.contains(&format!("for {d} "))).unwrap().to_string();
    assert!(line("b.test").contains("from mx.example.org") && line("b.test").contains("failed 0"), "{list}");
    assert!(!line("b.test").contains("successful 0"), "{list}");
    assert!(!line("c.test").contains("failed 0"), "{list}");
    assert!(list.contains("sts certificate-host-mismatch mx=mx.c.test"), "{list}");
    // d.test's policy is in testing: delivered anyway, but reported as the failure it was.
    assert!(!line("d.test").contains("failed 0") && line("d.test").contains("successful 0"), "{list}");
    assert!(list.contains("sts certificate-host-mismatch mx=mx.d.test"), "{list}");
    assert!(!list.contains("for e.test"), "only domains that ask: {list}");
    assert!(b.inbox_count("tls@b.test") >= 2, "the reports are delivered too");

    // Policies are remembered across a restart.
    assert!(a.stop().success());
    let cache = std::fs::read_to_string(a.data().join("mta-sts.json")).unwrap();
    let cache: serde_json::Value = serde_json::from_str(&cache).unwrap();
    for d in ["b.test", "c.test", "d.test", "e.test"] {
        assert_eq!(cache[d]["id"], "20261128T1", "{cache}");
    }
    assert_eq!(cache["c.test"]["mode"], "enforce");
    assert_eq!(cache["d.test"]["mode"], "testing");
}

#[test]
fn another_agora_enforces_the_policy_agora_serves() {
    if !common::have("openssl") {
        return;
    }
    // A: example.org's MX, policy host and DNS, with a certificate from a private CA
    // for its host name and the policy host.
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    private_ca(p);
    let (cert, key) = issue(p, "a", &["mx.example.org", "mta-sts.example.org"]);
    let tls = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", p.join(&cert).display(), p.join(&key).display());
    let mut a = Agora::start_with(|data| std::fs::write(data.join("agora.toml"), &tls).unwrap());
    a.stop();
    std::fs::write(a.data().join("agora.toml"), format!("{tls}[dns]\naddresses = [\"{}\"]\n", a.ip)).unwrap();
    a.spawn();
    a.cli_ok(&["user", "add", "ann@example.org", "--password-stdin"], Some("pw\n"));
    a.cli_ok(&["domain", "mta-sts", "example.org", "enforce"], None);
    // B finds MX, policy id and policy host through A's DNS, trusts the private CA.
    let b = Agora::start_for("b.test", |data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n[transport]\npoll_secs = 1\nretry_secs = 1\nmx_port = 10025\n\
                 mta_sts_port = 10443\nnameservers = [\"{}:10053\"]\nca_file = \"{}\"\n",
                a.ip,
                p.join("ca.pem").display()
            ),
        )
        .unwrap();
    });
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("pw\n"));
    b.submit(
        "bob@b.test",
        "pw",
        &["ann@example.org"],
        "From: bob@b.test\r\nTo: ann@example.org\r\nSubject: sts\r\n\r\nhello\r\n",
    );
    wait_until("delivery under A's policy", || a.inbox_count("ann@example.org") == 1);
    let cache = std::fs::read_to_string(b.data().join("mta-sts.json")).unwrap();
    assert!(cache.contains("example.org") && cache.contains("nforce") && cache.contains("mx.example.org"), "{cache}");
}
