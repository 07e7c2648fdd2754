//! `/metrics` on the administration listener: the counters move with what clients do,
//! `promtool check metrics` accepts the page, and a Prometheus server scrapes it.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agora, have, python_ok, run};

fn page(a: &Agora) -> String {
    let (ok, out) = run("curl", &["-s", "--max-time", "10", &format!("http://{}:19025/metrics", a.ip)], "");
    assert!(ok, "{out}");
    out
}

/// The value of the sample whose name and labels are `series`.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_follow_the_traffic_and_prometheus_reads_them() {
    if !have("curl") {
        return;
    }
    let a = Agora::start();
    let before = page(&a);
    assert_eq!(value(&before, "agora_messages_received_total"), Some(0.0), "{before}");
    a.add_user_with_mail(
        "alice@example.org",
        "correct horse battery",
        &["Subject: one\r\n\r\nhi\r\n".into(), "Subject: two\r\n\r\nhi\r\n".into()],
    );
    python_ok(&format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
try:
    m.login("alice@example.org", "wrong")
except imaplib.IMAP4.error:
    pass
m.login("alice@example.org", "correct horse battery")
m.select("INBOX")
try:
    m.fetch("99", "(FLAGS)")
except imaplib.IMAP4.error:
    pass
m.logout()
print("ok")
"#,
        ip = a.ip
    ));
    // The page is made at most once a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let p = page(&a);
    assert_eq!(value(&p, "agora_messages_received_total"), Some(2.0), "{p}");
    assert_eq!(value(&p, r#"agora_messages_delivered_total{destination="local"}"#), Some(2.0), "{p}");
    assert_eq!(value(&p, r#"agora_login_failures_total{protocol="imap"}"#), Some(1.0), "{p}");
    assert_eq!(value(&p, r#"agora_logins_total{protocol="imap"}"#), Some(1.0), "{p}");
    assert_eq!(value(&p, r#"agora_tls_handshakes_total{listener="imaps",result="ok"}"#), Some(1.0), "{p}");
    assert_eq!(value(&p, r#"agora_connections_total{listener="imaps"}"#), Some(1.0), "{p}");
    // CAPABILITY, LOGIN (failed), LOGIN, SELECT, FETCH (BAD: no such message), LOGOUT.
    assert_eq!(value(&p, r#"agora_commands_total{protocol="imap"}"#), Some(6.0), "{p}");
    assert_eq!(value(&p, r#"agora_command_errors_total{protocol="imap"}"#), Some(2.0), "{p}");
    // EHLO and two MAIL, RCPT, DATA: nothing failed.
    assert!(value(&p, r#"agora_commands_total{protocol="smtp"}"#).unwrap() >= 7.0, "{p}");
    assert_eq!(value(&p, r#"agora_command_errors_total{protocol="smtp"}"#), Some(0.0), "{p}");
    assert_eq!(value(&p, "agora_queue_messages"), Some(0.0), "{p}");
    // DNS: a query answered, and one refused (a zone not served here).
    if have("dig") {
        for name in ["example.org", "elsewhere.test"] {
            run("dig", &[&format!("@{}", a.ip), "-p", "10053", "+short", name, "SOA"], "");
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let p = page(&a);
        assert_eq!(value(&p, r#"agora_commands_total{protocol="dns"}"#), Some(2.0), "{p}");
        assert_eq!(value(&p, r#"agora_command_errors_total{protocol="dns"}"#), Some(1.0), "{p}");
    }
    assert!(value(&p, "agora_store_commit_duration_seconds_count").unwrap() >= 2.0, "{p}");
    assert!(value(&p, "agora_store_fsyncs_total").unwrap() >= 2.0, "{p}");
    let expiry = value(&p, r#"agora_tls_certificate_expiry_timestamp_seconds{name="mx.example.org"}"#).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(expiry > now, "{p}");
    assert!(p.contains("# TYPE agora_store_commit_duration_seconds histogram"), "{p}");

    // promtool lints names, types, help and suffixes; it exits non-zero on any problem.
    if have("promtool") {
        let (ok, out) = run("promtool", &["check", "metrics"], &p);
        assert!(ok, "promtool: {out}");
    }
    if !have("prometheus") {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "prometheus is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agora\n    static_configs:\n      - targets: ['{}:19025']\n",
            a.ip
        ),
    )
    .unwrap();
    let listen = format!("{}:19090", a.ip);
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("tsdb").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}/api/v1/query?query=agora_messages_received_total");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out) = run("curl", &["-s", "--max-time", "5", &url], "");
        if ok && out.contains("\"status\":\"success\"") && out.contains("\"2\"]") {
            last.clear();
            break;
        }
        last = out;
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(last.is_empty(), "Prometheus never scraped agora_messages_received_total = 2: {last}");
}
