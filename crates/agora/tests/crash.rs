//! Acknowledged means durable: clients deliver in a loop, the server is killed with
//! SIGKILL, and after a restart every message that got a 250 is in its mailbox — small
//! bodies (stored in the database) and bodies of several MiB (their own files), the
//! latter compared byte for byte.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_store::sql::SqlStore;
use agora_store::{DeliveryStore, DirectoryStore, MailboxStore};
use common::{Agora, DOMAIN, SmtpClient};

/// Clients (`workers` threads, five messages per connection) deliver `body(subject)`
/// until the server is killed with SIGKILL; returns the subjects that got their 250.
fn deliver_until_killed(a: &mut Agora, workers: usize, run: Duration, body: fn(&str) -> String) -> Vec<String> {
    let to = format!("admin@{DOMAIN}");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..workers {
        let (addr, to, acked, stop) = (a.smtp(), to.clone(), Arc::clone(&acked), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = SmtpClient::connect(&addr) else { return };
                if c.cmd("EHLO crash.test").is_err() {
                    return;
                }
                // Several messages per connection, like a real MTA's connection cache.
                for _ in 0..5 {
                    let subject = format!("crash-{t}-{i}");
                    i += 1;
                    match c.send_message("load@remote.test", &[&to], &body(&subject)) {
                        Ok(r) if r.starts_with("250") => acked.lock().unwrap().push(subject),
                        _ => return,
                    }
                }
                let _ = c.cmd("QUIT");
            }
        }));
    }
    std::thread::sleep(run);
    a.kill9();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // The store must open cleanly: the server restarts on it.
    a.spawn();
    assert!(a.stop().success());
    acked
}

/// Every stored message of the administrator's INBOX by subject, as stored.
fn stored_by_subject(a: &Agora) -> std::collections::HashMap<String, Vec<u8>> {
    let store = SqlStore::open(&a.data()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(async {
        let acc = store.account_by_login(&format!("admin@{DOMAIN}")).await.unwrap().unwrap();
        let inbox = store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        let msgs = store.messages(inbox.id, 1..=u32::MAX).await.unwrap();
        assert_eq!(msgs.len() as u32, inbox.messages, "mailbox counter matches its messages");
        assert!(msgs.iter().all(|m| m.uid < inbox.uidnext), "UIDNEXT above every UID");
        let mut out = std::collections::HashMap::new();
        for m in msgs {
            let body = store.read_blob(&m.blob).await.unwrap();
            if let Some(subject) = m.summary.envelope.subject.clone() {
                out.insert(subject, body);
            }
        }
        out
    });
    store.close();
    out
}

#[test]
fn every_acknowledged_message_survives_sigkill() {
    let mut a = Agora::start();
    let body = |subject: &str| {
        format!("Subject: {subject}\r\nMessage-ID: <{subject}@crash.test>\r\n\r\n{}\r\n", "x".repeat(500))
    };
    let acked = deliver_until_killed(&mut a, 6, Duration::from_millis(2500), body);
    assert!(acked.len() > 20, "too few deliveries before the kill to prove anything: {}", acked.len());
    let stored = stored_by_subject(&a);
    let lost: Vec<&String> = acked.iter().filter(|s| !stored.contains_key(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Bodies of several MiB take the other path (their own fsync'd blob files, not rows):
/// each acknowledged one must come back byte for byte after SIGKILL.
#[test]
fn large_bodies_survive_sigkill_byte_for_byte() {
    let mut a = Agora::start();
    // 2 to 4 MiB, different per message, lines of 78 characters.
    let body = |subject: &str| {
        let n: usize = subject.bytes().map(usize::from).sum();
        let lines = 30_000 + (n % 3) * 15_000;
        let mut s = format!("Subject: {subject}\r\nMessage-ID: <{subject}@crash.test>\r\n\r\n");
        for i in 0..lines {
            s.push_str(&format!("{subject} line {i:06} {}\r\n", "abcdefghij".repeat(5)));
        }
        s
    };
    let acked = deliver_until_killed(&mut a, 3, Duration::from_millis(4000), body);
    assert!(acked.len() >= 3, "too few large deliveries before the kill: {}", acked.len());
    let stored = stored_by_subject(&a);
    for subject in &acked {
        let sent = body(subject);
        let got = stored.get(subject).unwrap_or_else(|| panic!("{subject} acknowledged but lost"));
        assert!(got.len() > 2 << 20, "{subject}: {} bytes", got.len());
        // Trace fields come first; the message itself follows unchanged.
        assert!(got.ends_with(sent.as_bytes()), "{subject}: stored body differs from what was sent");
    }
}
