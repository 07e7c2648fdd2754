//! Running it as an administrator does: a backup taken during delivery and its restore,
//! and the store check finding and repairing damage done on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Agora, BIN, SmtpClient, run, spawn_server, unique_ip};

const PASSWORD: &str = "backup-pw-1";

/// Every message of INBOX as UID -> (flags, MODSEQ, subject), read over IMAPS.
fn inbox(ip: &str, login: &str) -> BTreeMap<u32, (String, u64, String)> {
    let script = r#"
import imaplib, ssl, sys, re
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(sys.argv[1], 10993, ssl_context=ctx, timeout=30)
m.login(sys.argv[2], sys.argv[3])
m.select("INBOX", readonly=True)
typ, data = m.uid("FETCH", "1:*", "(FLAGS MODSEQ BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for item in data:
    if isinstance(item, tuple):
        meta = item[0].decode()
        uid = re.search(r"UID (\d+)", meta).group(1)
        flags = " ".join(sorted(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()))
        modseq = re.search(r"MODSEQ \((\d+)\)", meta).group(1)
        subject = item[1].decode().strip().removeprefix("Subject: ")
        print(f"{uid}\t{flags}\t{modseq}\t{subject}")
print("ok")
"#;
    let (ok, out) = run("python3", &["-c", script, ip, login, PASSWORD], "");
    assert!(ok && out.contains("ok"), "{out}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| (f[0].parse().unwrap(), (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string())))
        })
        .collect()
}

/// Sets flags on some messages over IMAP, so MODSEQs and flags differ between them.
fn flag(ip: &str, login: &str) {
    let script = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(sys.argv[1], 10993, ssl_context=ctx, timeout=30)
m.login(sys.argv[2], sys.argv[3])
m.select("INBOX")
m.uid("STORE", "2:6", "+FLAGS", "(\\Seen)")
m.uid("STORE", "4", "+FLAGS", "(\\Flagged $Important)")
m.uid("STORE", "3", "-FLAGS", "(\\Seen)")
print("ok")
"#;
    let (ok, out) = run("python3", &["-c", script, ip, login, PASSWORD], "");
    assert!(ok && out.contains("ok"), "{out}");
}

fn message(n: usize, size: usize) -> String {
    let filler = "All work and no play makes a dull backup.\r\n".repeat(size / 43 + 1);
    format!("From: s@remote.test\r\nSubject: msg {n}\r\nMessage-ID: <m{n}@remote.test>\r\n\r\n{filler}")
}

fn agora(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).arg("--data").arg(data).args(args).env("AGORA_LOG", "warn").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A backup taken while mail arrives restores into a server that has every message
/// acknowledged before it began, with the same UIDs, flags and MODSEQs.
#[test]
fn backup_during_delivery_restores_what_was_acknowledged() {
    let a = Agora::start();
    let login = format!("kim@{}", a.domain);
    let mut first: Vec<String> = (1..=12).map(|n| message(n, 300)).collect();
    // Two bodies large enough to be files beside the database.
    first.push(message(13, 200_000));
    first.push(message(14, 300_000));
    a.add_user_with_mail(&login, PASSWORD, &first);
    flag(&a.ip, &login);
    let before = inbox(&a.ip, &login);
    assert_eq!(before.len(), 14);

    // Mail keeps arriving while the backup runs.
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop, smtp, to) = (Arc::clone(&acked), Arc::clone(&stop), a.smtp(), login.clone());
        std::thread::spawn(move || {
            let (mut c, _) = SmtpClient::connect(&smtp).unwrap();
            c.cmd("EHLO t.test").unwrap();
            let mut n = 100;
            while !stop.load(Ordering::SeqCst) {
                let size = if n % 5 == 0 { 150_000 } else { 500 };
                let r = c.send_message("s@remote.test", &[to.as_str()], &message(n, size)).unwrap();
                assert!(r.starts_with("250"), "{r}");
                acked.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let backup = a.dir.path().join("backup");
    let (ok, said) = agora(&a.data(), &["backup", backup.to_str().unwrap()]);
    let acked_after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    assert!(ok, "{said}");
    assert!(said.contains("backup in") && said.contains("manifest"), "{said}");
    assert!(backup.join("manifest.json").exists() && backup.join("agora.toml").exists());
    assert!(backup.join("tls/key.pem").exists(), "the keys are in the backup");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["files"]["agora.db"].as_str().is_some_and(|h| h.len() == 64), "{manifest}");
    let in_backup = manifest["counts"]["messages"].as_u64().unwrap() as usize;
    // Every user's default mailboxes, and the messages of this one.
    // At most one more: committed before the snapshot, its 250 still on the way.
    assert!(
        in_backup >= 14 + acked_before && in_backup <= 14 + acked_after + 1,
        "{in_backup} {acked_before} {acked_after}"
    );

    // A backup inside the data directory would copy itself.
    let (ok, said) = agora(&a.data(), &["backup", a.data().join("copy").to_str().unwrap()]);
    assert!(!ok && said.contains("inside the data directory"), "{said}");
    // A restore refuses a directory in use, and a backup that was changed.
    let (ok, said) = agora(&a.data(), &["restore", backup.to_str().unwrap()]);
    assert!(!ok && said.contains("not empty"), "{said}");
    let new = a.dir.path().join("restored");
    let (ok, said) = agora(&new, &["restore", backup.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("every body and file verified"), "{said}");

    // The restored server shows the same messages with the same UIDs, flags and MODSEQs.
    let ip = unique_ip();
    let mut cmd = Command::new(BIN);
    cmd.arg("--data").arg(&new).env("AGORA_LOG", "warn");
    let (mut child, banner) = spawn_server(cmd, &ip).unwrap_or_else(|e| panic!("{e}"));
    assert!(!banner.contains("First run"), "a restored server is no first run: {banner}");
    let after = inbox(&ip, &login);
    let _ = child.kill();
    let _ = child.wait();
    for (uid, m) in &before {
        assert_eq!(after.get(uid), Some(m), "UID {uid} differs after restore");
    }
    let arrived: Vec<&String> = after.values().map(|(_, _, s)| s).collect();
    for n in 100..100 + acked_before {
        assert!(arrived.contains(&&format!("msg {n}")), "msg {n}, acknowledged before the backup, is missing");
    }
    assert_eq!(after.len(), in_backup, "the restore holds what the manifest counts");
    let (ok, said) = agora(&new, &["store", "check"]);
    assert!(ok && said.contains("✓ no problems"), "{said}");

    // A damaged backup is refused before anything is written.
    std::fs::write(backup.join("agora.toml"), "# changed\n").unwrap();
    let (ok, said) = agora(&a.dir.path().join("again"), &["restore", backup.to_str().unwrap()]);
    assert!(!ok && said.contains("agora.toml (changed)"), "{said}");
    assert!(!a.dir.path().join("again").exists());
}

/// Runs SQL on a store file with Python's sqlite3 (the damage a test does on purpose).
fn sql(db: &Path, statement: &str) -> String {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nr = c.execute(sys.argv[2]).fetchall()\nc.commit()\nprint(r)\n";
    let (ok, out) = run("python3", &["-c", script, db.to_str().unwrap(), statement], "");
    assert!(ok, "{out}");
    out
}

/// A store damaged on purpose (a body file removed, a reference count, UIDNEXT and a
/// quota usage changed) is found, repaired, and the lost body put back from a backup.
#[test]
fn store_check_finds_and_repairs_damage() {
    let mut a = Agora::start();
    let login = format!("lee@{}", a.domain);
    let bodies = vec![message(1, 400), message(2, 250_000), message(3, 600), message(4, 260_000)];
    a.add_user_with_mail(&login, PASSWORD, &bodies);
    let (ok, said) = agora(&a.data(), &["store", "check"]);
    assert!(ok && said.contains("✓ no problems (every body read"), "{said}");
    let backup = a.dir.path().join("backup");
    let (ok, said) = agora(&a.data(), &["backup", "--link", backup.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(a.stop().success());

    let data = a.data();
    let db = data.join("agora.db");
    let big: Vec<String> = sql(&db, "SELECT hash FROM blobs WHERE data IS NULL ORDER BY size")
        .split('\'')
        .filter(|s| s.len() == 64)
        .map(str::to_string)
        .collect();
    assert_eq!(big.len(), 2, "two bodies are files");
    // A hard-linked backup shares the file: remove the link, as a lost disk block would.
    std::fs::remove_file(data.join("blobs").join(&big[0][..2]).join(&big[0])).unwrap();
    // The other one damaged in place of its old self (same size, other bytes; renamed
    // over it so the backup's link keeps the good one).
    let other = data.join("blobs").join(&big[1][..2]).join(&big[1]);
    let len = std::fs::metadata(&other).unwrap().len() as usize;
    std::fs::write(data.join("bad"), vec![b'x'; len]).unwrap();
    std::fs::rename(data.join("bad"), &other).unwrap();
    sql(
        &db,
        "UPDATE blobs SET refs = refs + 2 WHERE data IS NOT NULL AND refs = 1 AND rowid = (SELECT min(rowid) FROM blobs WHERE data IS NOT NULL)",
    );
    sql(
        &db,
        &format!(
            "UPDATE mailboxes SET uidnext = 2 WHERE name = 'INBOX' AND account = (SELECT id FROM accounts WHERE login = '{login}')"
        ),
    );
    sql(&db, &format!("UPDATE accounts SET used = 7 WHERE login = '{login}'"));

    let (ok, said) = agora(&data, &["store", "check"]);
    assert!(!ok, "damage is an error: {said}");
    for problem in [
        format!("body {} is missing ({login} INBOX UID 2 \"msg 2\")", &big[0][..16]),
        format!("body {} does not match its hash (damaged) ({login} INBOX UID 4 \"msg 4\")", &big[1][..16]),
        "reference count 3, but 1 reference(s)".to_string(),
        format!("mailbox INBOX of {login}: UIDNEXT 2 is not above its highest UID 4"),
        format!("account {login}: quota usage 7 bytes"),
    ] {
        assert!(said.contains(&problem), "{problem:?} not reported in {said}");
    }
    assert_eq!(said.matches("✗").count(), 5, "exactly the damage done: {said}");

    // --repair fixes the counts; the lost body needs a copy (or consent to drop it).
    let (ok, said) = agora(&data, &["store", "check", "--repair"]);
    assert!(!ok, "{said}");
    assert_eq!(said.matches("✓ repaired").count(), 3, "{said}");
    assert!(said.contains("is missing") && said.contains("--from BACKUP"), "{said}");
    let (ok, said) = agora(&data, &["store", "check", "--repair", "--from", backup.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert_eq!(said.matches("restored from the copy (hash verified)").count(), 2, "{said}");
    let (ok, said) = agora(&data, &["store", "check"]);
    assert!(ok && said.contains("✓ no problems"), "{said}");

    // Without a copy, --drop-lost expunges the message the body belonged to.
    std::fs::remove_file(data.join("blobs").join(&big[1][..2]).join(&big[1])).unwrap();
    std::fs::remove_dir_all(&backup).unwrap();
    let (ok, said) = agora(&data, &["store", "check", "--repair", "--drop-lost"]);
    assert!(ok, "{said}");
    assert!(said.contains("expunged 1 message(s)"), "{said}");
    let (ok, said) = agora(&data, &["store", "check"]);
    assert!(ok && said.contains("✓ no problems"), "{said}");
    a.spawn();
    let left = inbox(&a.ip, &login);
    assert_eq!(left.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3], "{left:?}");
    assert_eq!(left[&2].2, "msg 2", "the restored body is served");
}

/// The records `agora dns show` publishes, as the test DNS server's JSON zone (the
/// types it answers: A, MX, TXT, SRV).
fn zone_json(shown: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut zone = serde_json::Map::new();
    for line in shown.lines().filter(|l| !l.starts_with('$') && !l.starts_with(';')) {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        if f.len() < 5 || !["A", "MX", "TXT", "SRV"].contains(&f[3]) {
            continue;
        }
        let value =
            if f[3] == "TXT" { f[4].split('"').skip(1).step_by(2).collect::<String>() } else { f[4].to_string() };
        let key = format!("{}/{}", f[0].trim_end_matches('.'), f[3]);
        let entry = zone.entry(key).or_insert_with(|| serde_json::json!([]));
        entry.as_array_mut().unwrap().push(value.into());
    }
    zone
}

/// A loopback DNS server answering from a zone file the test fills once the server runs:
/// (work directory, zone file, the server, its address).
fn test_dns() -> (tempfile::TempDir, PathBuf, common::Dns, String) {
    let work = tempfile::tempdir().unwrap();
    let zone = work.path().join("zone.json");
    std::fs::write(&zone, "{}").unwrap();
    let (dns, ip) = common::dns_server(&zone);
    (work, zone, dns, ip)
}

/// Serves in the test DNS what `agora dns show` says the domain publishes, as `edit` changes it.
fn publish(
    a: &Agora,
    listen: &[&str],
    zone: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let mut args = vec!["dns", "show", a.domain.as_str()];
    args.extend_from_slice(listen);
    let mut records = zone_json(&a.cli_ok(&args, None));
    edit(&mut records);
    std::fs::write(zone, serde_json::Value::Object(records).to_string()).unwrap();
}

/// `agora doctor` with the server's own flags: its exit code and its standard output.
fn doctor(a: &Agora, listen: &[&str], extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["doctor"];
    args.extend_from_slice(listen);
    args.extend_from_slice(extra);
    let out = a.cli(&args, None);
    // Shown with a failing test's output.
    eprintln!("agora doctor: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `agora doctor` against a setup with a wrong SPF record, an expired certificate and a
/// closed port names exactly those three, with their fixes; `--json` says the same.
#[test]
fn doctor_names_exactly_what_is_wrong() {
    let (_work, zone, _dns, dns_ip) = test_dns();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mx.example.org".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let nntp_off = "[listeners.nntp]\nenabled = false\n";
    let a = Agora::start_with(|data| {
        std::fs::create_dir_all(data.join("tls")).unwrap();
        std::fs::write(data.join("tls/old.pem"), cert.pem()).unwrap();
        std::fs::write(data.join("tls/old.key"), key.serialize_pem()).unwrap();
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[tls]\ncert = \"tls/old.pem\"\nkey = \"tls/old.key\"\n[transport]\nnameservers = [\"{dns_ip}:10053\"]\n{nntp_off}"
            ),
        )
        .unwrap();
    });
    let host = format!("mx.{}", a.domain);
    let listen = ["--hostname", host.as_str(), "--port-offset", "10000", "--bind", a.ip.as_str()];
    // A listener configured after the start: closed until a restart.
    let config = a.data().join("agora.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(nntp_off, "")).unwrap();

    // DNS as published, but for the SPF record.
    publish(&a, &listen, &zone, |records| {
        let spf = format!("{}/TXT", a.domain);
        assert_eq!(records[&spf], serde_json::json!(["v=spf1 mx -all"]), "{records:?}");
        records.insert(spf, serde_json::json!(["v=spf1 a:old-host.example.net -all"]));
    });
    let (code, said) = doctor(&a, &listen, &[]);
    assert_eq!(code, Some(1), "{said}");
    let failed: Vec<&str> = said.lines().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), 3, "exactly the three faults: {said}");
    assert!(failed.iter().any(|l| l.starts_with("✗ listener nntp:") && l.contains(":10119")), "{said}");
    assert!(failed.iter().any(|l| l.starts_with("✗ certificate:") && l.contains("expired on 2025-01-01")), "{said}");
    assert!(
        failed.iter().any(|l| l.starts_with(&format!("✗ DNS {} SPF:", a.domain)) && l.contains("old-host")),
        "{said}"
    );
    assert!(said.contains("fix: publish example.org TXT v=spf1 mx -all"), "{said}");
    // What works is said to work.
    for good in ["✓ listener smtp:", "✓ DNS example.org MX:", "✓ DNS example.org DKIM key", "✓ open relay:", "✓ store:"]
    {
        assert!(said.contains(good), "{good} missing: {said}");
    }

    let (_, json) = doctor(&a, &listen, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["failed"], 3);
    let fails: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(fails, ["listener nntp", "certificate", "DNS example.org SPF"], "{report}");
}

/// On a sound setup (a certificate from a CA the senders trust, DNS as published)
/// every check passes, the MTA-STS policy fetched as a sender fetches it.
#[test]
fn doctor_is_all_clear_on_a_sound_setup() {
    let (work, zone, _dns, dns_ip) = test_dns();
    common::private_ca(work.path());
    let (cert, key) = common::issue(work.path(), "mx", &["mx.example.org", "mta-sts.example.org"]);
    let ip = unique_ip();
    let a = Agora::start_on(ip.clone(), "example.org", |data| {
        std::fs::create_dir_all(data.join("tls")).unwrap();
        std::fs::copy(work.path().join(&cert), data.join("tls/mx.pem")).unwrap();
        std::fs::copy(work.path().join(&key), data.join("tls/mx.key")).unwrap();
        std::fs::copy(work.path().join("ca.pem"), data.join("ca.pem")).unwrap();
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[tls]\ncert = \"tls/mx.pem\"\nkey = \"tls/mx.key\"\n[transport]\nnameservers = [\"{dns_ip}:10053\"]\nca_file = \"ca.pem\"\n"
            ),
        )
        .unwrap();
    });
    let listen = ["--hostname", "mx.example.org", "--port-offset", "10000", "--bind", ip.as_str()];
    publish(&a, &listen, &zone, |records| {
        for host in ["mx.example.org/A", "mta-sts.example.org/A"] {
            records.insert(host.into(), serde_json::json!([ip]));
        }
    });
    let (code, said) = doctor(&a, &listen, &[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains('✗'), "{said}");
    assert!(said.contains("✓ MTA-STS policy example.org: testing mode, mx mx.example.org"), "{said}");
    assert!(said.contains("✓ DNS example.org SPF:") && said.contains("0 to fix"), "{said}");
}
