//! The outbound transport end to end: two Agora instances on loopback, one routing a
//! domain to the other; a user submits over 587 and the other server's mailbox gets
//! the message; a refused recipient and a destination that never answers come back
//! to the sender as delivery status notifications a real parser reads.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Agora, python_ok};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn two_servers_exchange_mail_and_failures_come_back() {
    if !common::have("python3") {
        return;
    }
    let b_config = "[transport]\npoll_secs = 1\n";
    let mut b = Agora::start_for("b.test", |data| std::fs::write(data.join("agora.toml"), b_config).unwrap());
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("bob-pw\n"));
    // A port on B's address where nothing listens: a destination that is down.
    let down = format!("{}:10999", b.ip);
    let b_smtp = b.smtp();
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[server]\nhostname = \"mx.example.org\"\ndomain = \"example.org\"\n\
                 [auth]\nplaintext_without_tls = true\n\
                 [transport]\npoll_secs = 1\nretry_secs = 1\nmax_lifetime_secs = 4\ndelay_warning_secs = 1\n\
                 [transport.routes]\n\"b.test\" = \"{b_smtp}\"\n\"down.test\" = \"{down}\"\n"
            ),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("alice-pw\n"));
    a.cli_ok(&["user", "add", "carol@example.org", "--password-stdin"], Some("carol-pw\n"));
    // B learns its way back to A, for the report it owes once it takes over DSN duty.
    assert!(b.stop().success());
    std::fs::write(
        b.data().join("agora.toml"),
        format!("{b_config}[transport.routes]\n\"example.org\" = \"{}\"\n", a.smtp()),
    )
    .unwrap();
    b.spawn();
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("alice@example.org", "alice-pw")
s.sendmail("alice@example.org", ["bob@b.test"], "From: alice@example.org\r\nTo: bob@b.test\r\nSubject: across\r\n\r\nhello b\r\n",
           mail_options=["RET=FULL", "ENVID=env-1"], rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@b.test"])
# Local and remote recipients in one transaction, each with its own outcome.
refused = s.sendmail("alice@example.org", ["carol@example.org", "bob@b.test", "nobody@b.test"], "From: alice@example.org\r\nSubject: lost\r\n\r\nx\r\n")
assert refused == {{}}, refused
s.sendmail("alice@example.org", ["someone@down.test"], "From: alice@example.org\r\nSubject: stuck\r\n\r\nx\r\n")
s.sendmail("alice@example.org", ["quiet@down.test"], "From: alice@example.org\r\nSubject: never tell\r\n\r\nx\r\n",
           rcpt_options=["NOTIFY=NEVER"])
s.quit()
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&script);
    // Delivered to the other server within a few polls.
    wait_until("delivery to b.test", || b.inbox_count("bob@b.test") == 2);
    assert_eq!(a.inbox_count("carol@example.org"), 1, "the local recipient of the mixed message");
    // Reports: "delivered" from B, which took the DSN parameters over (NOTIFY=SUCCESS),
    // the refused recipient at once, the unreachable one first delayed then expired;
    // none for NOTIFY=NEVER, and no "relayed" from A since B speaks DSN.
    wait_until("the queue to empty", || a.cli_ok(&["queue", "list"], None).contains("queue is empty"));
    wait_until("B's queue to empty", || b.cli_ok(&["queue", "list"], None).contains("queue is empty"));
    wait_until("four DSNs", || a.inbox_count("alice@example.org") == 4);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.inbox_count("alice@example.org"), 4);
    // Message tracking on both sides, by recipient, sender and queue id.
    let a_track = a.cli_ok(&["track", "--recipient", "bob@b.test"], None);
    for event in ["received", "queued", "relayed"] {
        assert!(a_track.lines().any(|l| l.contains(event)), "{event} missing: {a_track}");
    }
    let b_track = b.cli_ok(&["track", "--recipient", "bob@b.test"], None);
    assert!(b_track.contains("received") && b_track.contains("delivered"), "{b_track}");
    let id = a_track.lines().next().unwrap().split_whitespace().nth(3).unwrap().to_string();
    let by_id = a.cli_ok(&["track", "--id", &id], None);
    assert!(by_id.lines().all(|l| l.contains(&id)) && by_id.contains("relayed"), "{by_id}");
    let bounced = a.cli_ok(&["track", "--sender", "alice@example.org"], None);
    assert!(
        bounced.lines().any(|l| l.contains("bounced") && l.contains("nobody@b.test") && l.contains("5.1.1")),
        "{bounced}"
    );
    assert!(bounced.lines().any(|l| l.contains("deferred") && l.contains("someone@down.test")), "{bounced}");
    let dump = format!(
        r#"
import imaplib, email
m = imaplib.IMAP4("{ip}", 10143)
m.login("alice@example.org", "alice-pw")
m.select("INBOX")
typ, data = m.fetch("1:*", "(BODY.PEEK[])")
reports = [email.message_from_bytes(d[1]) for d in data if isinstance(d, tuple)]
assert len(reports) == 4, data
seen = set()
for r in reports:
    assert r.get_content_type() == "multipart/report" and r.get_param("report-type") == "delivery-status", r
    parts = r.get_payload()
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"][0]
    per_msg, per_rcpt = ds.get_payload()[0], ds.get_payload()[1]
    key = (per_rcpt["Final-Recipient"], per_rcpt["Action"], per_rcpt["Status"])
    seen.add(key)
    if key[0] == "rfc822; bob@b.test":
        # From B: RET=FULL, ENVID and ORCPT were passed on by A and come back as asked.
        assert per_msg["Reporting-MTA"] == "dns; mx.b.test", per_msg.items()
        assert per_msg["Original-Envelope-Id"] == "env-1", per_msg.items()
        assert per_rcpt["Original-Recipient"] == "rfc822;bob@b.test", per_rcpt.items()
        assert parts[2].get_content_type() == "message/rfc822" and "hello b" in parts[2].as_string()
    else:
        assert per_msg["Reporting-MTA"] == "dns; mx.example.org", per_msg.items()
        assert parts[2].get_content_type() == "text/rfc822-headers" and "Subject:" in parts[2].as_string()
assert seen == {{
    ("rfc822; bob@b.test", "delivered", "2.0.0"),
    ("rfc822; nobody@b.test", "failed", "5.1.1"),
    ("rfc822; someone@down.test", "delayed", "4.4.7"),
    ("rfc822; someone@down.test", "failed", "4.4.7"),
}}, seen
print("ok")
"#,
        ip = a.ip
    );
    python_ok(&dump);
}

#[test]
fn smarthost_with_auth_over_starttls() {
    if !common::have("python3") {
        return;
    }
    // The smarthost: another Agora, whose submission port wants AUTH after STARTTLS.
    let b = Agora::start();
    b.cli_ok(&["domain", "add", "b.test"], None);
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("bob-pw\n"));
    b.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("relay-pw\n"));
    let smarthost = format!("{}:10587", b.ip);
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n[transport]\npoll_secs = 1\nsmarthost = \"{smarthost}\"\n\
                 smarthost_user = \"alice@example.org\"\nsmarthost_password = \"relay-pw\"\n"
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
s.sendmail("alice@example.org", ["bob@b.test"], "From: alice@example.org\r\nSubject: via smarthost\r\n\r\nhi\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    wait_until("delivery through the smarthost", || b.inbox_count("bob@b.test") == 1);
    let track = b.cli_ok(&["track", "--recipient", "bob@b.test"], None);
    assert!(track.contains("received"), "{track}");
}

#[test]
fn queued_mail_outlives_a_crash_and_goes_out_when_the_destination_returns() {
    if !common::have("python3") {
        return;
    }
    // B exists at a known address, then goes down.
    let mut b = Agora::start_for("b.test", |_| {});
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("bob-pw\n"));
    let b_smtp = b.smtp();
    assert!(b.stop().success());
    let mut a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[auth]\nplaintext_without_tls = true\n\
                 [transport]\npoll_secs = 1\nretry_secs = 1\n\
                 [transport.routes]\n\"b.test\" = \"{b_smtp}\"\n"
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
s.sendmail("alice@example.org", ["bob@b.test"], "From: alice@example.org\r\nSubject: patience\r\n\r\nwhenever you are back\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    // Retries on schedule: each wait at least as long as the one before (1 s, 2 s, ...).
    let deferrals = || -> Vec<i64> {
        let log = std::fs::read_to_string(a.data().join("tracking.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "deferred")
            .map(|e| e["time"].as_i64().unwrap())
            .collect()
    };
    wait_until("three deferrals", || deferrals().len() >= 3);
    let times = deferrals();
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]) && gaps[gaps.len() - 1] >= 2, "{times:?}");
    // A crash with the message in the queue: nothing is lost.
    a.kill9();
    a.spawn();
    let queue = a.cli_ok(&["queue", "list"], None);
    assert!(queue.contains("to <bob@b.test>"), "{queue}");
    // The destination returns; the next retry delivers.
    b.spawn();
    wait_until("delivery once b.test is back", || b.inbox_count("bob@b.test") == 1);
    wait_until("the queue to empty", || a.cli_ok(&["queue", "list"], None).contains("queue is empty"));
    assert_eq!(b.inbox_count("bob@b.test"), 1);
    // No failure report: the message made it.
    assert_eq!(a.inbox_count("alice@example.org"), 0);
}
