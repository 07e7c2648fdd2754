//! Interop with a real Postfix: a private Postfix instance (its own configuration and
//! queue in a temporary directory, listening on loopback) relays mail to Agora's port 25.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agora_store::sql::SqlStore;
use agora_store::{DeliveryStore, DirectoryStore, MailboxStore};
use common::{Agora, SmtpClient, have};

struct Postfix {
    etc: PathBuf,
}

impl Postfix {
    fn start(dir: &Path, listen_ip: &str, relay: &str) -> Postfix {
        Postfix::start_on(dir, &format!("{listen_ip}:12525"), relay)
    }

    fn start_on(dir: &Path, listen: &str, relay: &str) -> Postfix {
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // Postfix keeps its TLS session cache and such here, as the postfix user.
        let st = Command::new("chown").arg("postfix").arg(dir.join("data")).status().unwrap();
        assert!(st.success());
        let d = dir.display();
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n\
                 myhostname = relay.test\nmydomain = relay.test\nmyorigin = relay.test\nmydestination =\n\
                 relayhost = {relay}\nsmtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\nalias_maps =\nalias_database =\n\
                 local_recipient_maps =\n"
            ),
        )
        .unwrap();
        let services = [
            format!("{listen} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "tlsmgr unix - - n 1000? 1 tlsmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        std::fs::write(etc.join("master.cf"), services.join("\n") + "\n").unwrap();
        let st = Command::new("postfix").arg("-c").arg(&etc).arg("start").status().unwrap();
        assert!(st.success(), "postfix did not start (see {d}/maillog)");
        Postfix { etc }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.etc).arg("stop").status();
    }
}

#[test]
fn postfix_relays_into_agora_over_starttls() {
    if !have("postfix") {
        return;
    }
    if !nix_root() {
        assert!(
            std::env::var_os("AGORA_REQUIRE_PEERS").is_none(),
            "a private Postfix needs root (AGORA_REQUIRE_PEERS is set)"
        );
        eprintln!("skipping: a private Postfix instance needs root");
        return;
    }
    let a = Agora::start();
    let dir = tempfile::tempdir().unwrap();
    // Postfix's daemons drop to the postfix user, which must reach the queue.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _pf = Postfix::start(dir.path(), &a.ip, &format!("[{}]:10025", a.ip));

    let (mut c, greeting) = SmtpClient::connect(&format!("{}:12525", a.ip)).unwrap();
    assert!(greeting.starts_with("220"), "{greeting}");
    c.cmd("EHLO client.test").unwrap();
    let r = c
        .send_message("someone@relay.test", &["admin@example.org"], "Subject: via postfix\r\n\r\nrelayed body\r\n")
        .unwrap();
    assert!(r.starts_with("250"), "{r}");
    let _ = c.cmd("QUIT");

    let deadline = Instant::now() + Duration::from_secs(30);
    while a.inbox_count("admin@example.org") == 0 {
        let log = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not delivered within 30 s; Postfix log:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
    assert!(log.contains("status=sent"), "{log}");
    assert!(log.contains("TLS connection established"), "Postfix used STARTTLS: {log}");

    let store = SqlStore::open(&a.data()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = rt.block_on(async {
        let acc = store.account_by_login("admin@example.org").await.unwrap().unwrap();
        let inbox = store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        let m = store.messages(inbox.id, 1..=u32::MAX).await.unwrap().remove(0);
        String::from_utf8(store.read_blob(&m.blob).await.unwrap()).unwrap()
    });
    store.close();
    // Agora's trace header on top, Postfix's below it, then the original message.
    assert!(body.starts_with("Return-Path: <someone@relay.test>\r\nReceived: from relay.test"), "{body}");
    assert!(body.contains("by relay.test (Postfix)") && body.ends_with("relayed body\r\n"), "{body}");
}

fn nix_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

#[test]
fn agora_delivers_through_postfix_to_smtp_sink() {
    if !have("postfix") || !have("smtp-sink") || !have("python3") {
        return;
    }
    if !nix_root() {
        assert!(
            std::env::var_os("AGORA_REQUIRE_PEERS").is_none(),
            "a private Postfix needs root (AGORA_REQUIRE_PEERS is set)"
        );
        eprintln!("skipping: a private Postfix instance needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ip = common::unique_ip();
    // The far end: smtp-sink writes each transaction it accepts to a file.
    let sink_dir = dir.path().join("sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    std::fs::set_permissions(&sink_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut sink = Command::new("smtp-sink")
        .args(["-u", "nobody", "-d", &format!("{}/%H%M%S.", sink_dir.display()), &format!("{ip}:12526"), "64"])
        .spawn()
        .unwrap();
    // Postfix in the middle relays whatever its network sends on to the sink.
    let _pf = Postfix::start_on(&dir.path().join("postfix"), &format!("{ip}:12527"), &format!("[{ip}]:12526"));
    let route = format!("{ip}:12527");
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            format!("[auth]\nplaintext_without_tls = true\n[transport]\npoll_secs = 1\n[transport.routes]\n\"pf.test\" = \"{route}\"\n"),
        )
        .unwrap();
    });
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("alice-pw\n"));
    common::python_ok(&format!(
        r#"
import smtplib
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("alice@example.org", "alice-pw")
s.sendmail("alice@example.org", ["carol@pf.test"], "From: alice@example.org\r\nSubject: to postfix\r\n\r\nacross two hops\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let hit = std::fs::read_dir(&sink_dir).unwrap().filter_map(|e| e.ok()).find(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.contains("Subject: to postfix") && t.contains("across two hops"))
        });
        if let Some(h) = hit {
            break std::fs::read_to_string(h.path()).unwrap();
        }
        let log = std::fs::read_to_string(dir.path().join("postfix").join("maillog")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not at the sink within 30 s; Postfix log:\n{log}");
        std::thread::sleep(Duration::from_millis(250));
    };
    // The sink saw Postfix's Received line on top of Agora's.
    assert!(found.contains("by mx.example.org (Agora)"), "{found}");
    let log = std::fs::read_to_string(dir.path().join("postfix").join("maillog")).unwrap_or_default();
    assert!(log.contains("from=<alice@example.org>"), "{log}");
    assert!(a.cli_ok(&["track", "--recipient", "carol@pf.test"], None).contains("relayed"));
    let _ = sink.kill();
    let _ = sink.wait();
}
