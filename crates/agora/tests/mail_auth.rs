//! DKIM, SPF, DMARC and ARC between two Agora instances, each with its own domain: a
//! test DNS server on loopback publishes both domains' DKIM keys (as `agora domain
//! dkim` prints them), SPF and a p=reject DMARC policy. Mail goes both ways signed and
//! checked (dkim=pass, spf=pass, dmarc=pass); a forged message is refused at DATA; a
//! key rotation waits for DNS before the new keys sign; mail forwarded by an alias
//! arrives ARC-sealed and A finds the chain valid.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Agora, python_ok};

#[test]
fn signed_mail_passes_and_forged_mail_is_refused() {
    if !common::have("python3") {
        return;
    }
    let b = Agora::start_for("b.test", |_| {});
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("bob-pw\n"));
    let b_smtp = b.smtp();
    let mut a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n[transport]\npoll_secs = 1\n\
                 [transport.routes]\n\"b.test\" = \"{b_smtp}\"\n"
            ),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("alice-pw\n"));

    // The zone: example.org's DKIM keys as the CLI prints them, SPF for loopback, DMARC.
    let zone = zone_of(&a.cli_ok(&["domain", "dkim", "example.org"], None), "example.org");
    assert_eq!(zone.len(), 5, "an RSA and an Ed25519 key: {zone:?}");
    let zone_file = b.dir.path().join("zone.json");
    std::fs::write(&zone_file, serde_json::Value::Object(zone).to_string()).unwrap();
    let (_dns, dns_ip) = common::dns_server(&zone_file);

    // B checks incoming mail against that DNS server.
    let mut b = b;
    b.stop();
    std::fs::write(
        b.data().join("agora.toml"),
        format!(
            "[transport]\nnameservers = [\"{dns_ip}:10053\"]\npoll_secs = 1\n[transport.routes]\n\"example.org\" = \"{}\"\n",
            a.smtp()
        ),
    )
    .unwrap();
    b.spawn();

    send_and_check(&a, &b, 1, "agora-rsa");
    // A forged message: From: example.org, not signed, sent by a sender SPF says nothing
    // for. DMARC fails under p=reject: refused at the end of DATA.
    python_ok(&format!(
        r#"
import smtplib, sys
s = smtplib.SMTP("{ip}", 10025, timeout=20)
try:
    s.sendmail("forger@elsewhere.test", ["bob@b.test"], "From: alice@example.org\r\nSubject: forged\r\n\r\nsend money\r\n")
    sys.exit("forged message accepted")
except smtplib.SMTPDataError as e:
    assert e.smtp_code == 550 and b"DMARC" in e.smtp_error, e
print("ok")
"#,
        ip = b.ip
    ));
    assert_eq!(b.inbox_count("bob@b.test"), 1);

    // Key rotation: new keys wait until DNS shows them, then sign; the old ones retire.
    let rotated = a.cli_ok(&["domain", "dkim", "example.org", "--rotate"], None);
    assert_eq!(rotated.matches("pending key").count(), 2, "{rotated}");
    let cfg = a.data().join("agora.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // The harness gave A a quiet DNS server; the CLI now asks the test zone's.
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("nameservers") {
                format!("nameservers = [\"{dns_ip}:10053\"]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&cfg, text).unwrap();
    let early = a.cli(&["domain", "dkim", "example.org", "--activate"], None);
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("DNS does not show"), "{early:?}");
    let zone = zone_of(&rotated, "example.org");
    assert_eq!(zone.len(), 7, "old and new keys: {zone:?}");
    std::fs::write(&zone_file, serde_json::Value::Object(zone).to_string()).unwrap();
    let active = a.cli_ok(&["domain", "dkim", "example.org", "--activate"], None);
    assert_eq!(active.matches("active key").count(), 2, "{active}");
    assert_eq!(active.matches("retired key").count(), 2, "{active}");
    send_and_check(&a, &b, 2, "agora-rsa-2");
    let removed = a.cli_ok(&["domain", "dkim", "example.org", "--remove-retired"], None);
    assert!(!removed.contains("retired key,") && removed.matches("active key").count() == 2, "{removed}");

    // ARC: B forwards list@b.test to carol@example.org on A, sealing its results; A,
    // now checking against the DNS server too, finds the chain valid.
    a.cli_ok(&["user", "add", "carol@example.org", "--password-stdin"], Some("carol-pw\n"));
    b.cli_ok(&["alias", "add", "list@b.test", "carol@example.org"], None);
    let mut zone = zone_of(&a.cli_ok(&["domain", "dkim", "example.org"], None), "example.org");
    zone.extend(zone_of(&b.cli_ok(&["domain", "dkim", "b.test"], None), "b.test"));
    std::fs::write(&zone_file, serde_json::Value::Object(zone).to_string()).unwrap();
    assert!(a.stop().success());
    a.spawn();
    python_ok(&format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("alice@example.org", "alice-pw")
s.sendmail("alice@example.org", ["list@b.test"], "From: Alice <alice@example.org>\r\nTo: list@b.test\r\nSubject: to the list\r\nMessage-ID: <list@example.org>\r\n\r\nhello, list\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.inbox_count("carol@example.org") == 0 {
        assert!(Instant::now() < deadline, "not forwarded back to example.org");
        std::thread::sleep(Duration::from_millis(250));
    }
    python_ok(&format!(
        r#"
import imaplib, ssl, email
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("carol@example.org", "carol-pw"); m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER])")
h = email.message_from_bytes(data[0][1])
flat = lambda v: " ".join(str(v).split())
seal = flat(h["ARC-Seal"]); ams = flat(h["ARC-Message-Signature"]); aar = flat(h["ARC-Authentication-Results"])
assert "i=1" in seal and "cv=none" in seal and "d=b.test" in seal, seal
assert "i=1" in ams and "d=b.test" in ams, ams
assert "i=1" in aar and "dkim=pass" in aar and "dmarc=pass" in aar, aar
ours = flat(h.get_all("Authentication-Results")[0])
assert "arc=pass" in ours and "dkim=pass" in ours, ours
print("ok")
"#,
        ip = a.ip
    ));

    // And the other way: Bob on B writes to Alice on A, signed by b.test, checked by A.
    python_ok(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("{ip}", 10465, timeout=20, context=ctx)
s.login("bob@b.test", "bob-pw")
s.sendmail("bob@b.test", ["alice@example.org"], "From: Bob <bob@b.test>\r\nTo: alice@example.org\r\nSubject: reply\r\nMessage-ID: <reply@b.test>\r\n\r\nhello back\r\n")
s.quit()
print("ok")
"#,
        ip = b.ip
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.inbox_count("alice@example.org") == 0 {
        assert!(Instant::now() < deadline, "not delivered to example.org");
        std::thread::sleep(Duration::from_millis(250));
    }
    python_ok(&format!(
        r#"
import imaplib, ssl, email
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("alice@example.org", "alice-pw"); m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER])")
h = email.message_from_bytes(data[0][1])
assert h["Subject"] == "reply", h["Subject"]
ar = " ".join(" ".join(h.get_all("Authentication-Results")).split())
for want in ("dkim=pass", "header.d=b.test", "spf=pass", "dmarc=pass"):
    assert want in ar, (want, ar)
print("ok")
"#,
        ip = a.ip
    ));
}

/// A zone with the DKIM records `agora domain dkim` printed, SPF for loopback and DMARC.
fn zone_of(printed: &str, domain: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut zone = serde_json::Map::new();
    for line in printed.lines().filter(|l| l.contains("._domainkey.")) {
        let owner = line.split_whitespace().next().unwrap().trim_end_matches('.').to_string();
        let text: String = line.split('"').skip(1).step_by(2).collect();
        assert!(text.starts_with("v=DKIM1; k="), "{line}");
        zone.insert(format!("{owner}/TXT"), serde_json::json!([text]));
    }
    zone.insert(format!("{domain}/TXT"), serde_json::json!(["v=spf1 ip4:127.0.0.0/8 -all"]));
    zone.insert(format!("mx.{domain}/TXT"), serde_json::json!(["v=spf1 ip4:127.0.0.0/8 -all"]));
    zone.insert(format!("_dmarc.{domain}/TXT"), serde_json::json!(["v=DMARC1; p=reject"]));
    zone
}

/// Alice (on A) writes to Bob (on B); B's copy number `n` passes DKIM, SPF and DMARC,
/// signed with an RSA key whose selector starts with `rsa_selector` and an Ed25519 key.
fn send_and_check(a: &Agora, b: &Agora, n: u32, rsa_selector: &str) {
    python_ok(&format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("alice@example.org", "alice-pw")
s.sendmail("alice@example.org", ["bob@b.test"], "From: Alice <alice@example.org>\r\nTo: bob@b.test\r\nSubject: signed\r\nMessage-ID: <{n}@example.org>\r\n\r\nhello, signed\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.inbox_count("bob@b.test") < n {
        assert!(Instant::now() < deadline, "not delivered to b.test");
        std::thread::sleep(Duration::from_millis(250));
    }
    python_ok(&format!(
        r#"
import imaplib, ssl, email
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("bob@b.test", "bob-pw"); m.select("INBOX")
typ, data = m.fetch("{n}", "(BODY.PEEK[HEADER])")
h = email.message_from_bytes(data[0][1])
ar = " ".join(h.get_all("Authentication-Results"))
for want in ("dkim=pass", "spf=pass", "dmarc=pass"):
    assert want in ar, (want, ar)
sigs = [" ".join(s.split()) for s in h.get_all("DKIM-Signature")]
assert len(sigs) == 2 and any("a=ed25519-sha256" in s for s in sigs), sigs
assert any("a=rsa-sha256" in s and "s={rsa_selector}" in s for s in sigs), sigs
print("ok")
"#,
        ip = b.ip
    ));
}
