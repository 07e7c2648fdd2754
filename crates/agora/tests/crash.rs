//! Acknowledged means durable: clients deliver in a loop, the server is killed with
//! SIGKILL, and after a restart every message that got a 250 is in its mailbox.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_store::sqlite::SqliteStore;
use agora_store::{DeliveryStore, DirectoryStore, MailboxStore};
use common::{Agora, DOMAIN, SmtpClient};

#[test]
fn every_acknowledged_message_survives_sigkill() {
    let mut a = Agora::start();
    let to = format!("admin@{DOMAIN}");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..6 {
        let (addr, to, acked, stop) = (a.smtp(), to.clone(), Arc::clone(&acked), Arc::clone(&stop));
        workers.push(std::thread::spawn(move || {
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
                    let body = format!(
                        "Subject: {subject}\r\nMessage-ID: <{subject}@crash.test>\r\n\r\n{}\r\n",
                        "x".repeat(500)
                    );
                    match c.send_message("load@remote.test", &[&to], &body) {
                        Ok(r) if r.starts_with("250") => acked.lock().unwrap().push(subject),
                        _ => return,
                    }
                }
                let _ = c.cmd("QUIT");
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(2500));
    a.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "too few deliveries before the kill to prove anything: {}", acked.len());

    // The store must open cleanly: the server restarts on it.
    a.spawn();
    assert!(a.stop().success());

    let store = SqliteStore::open(&a.data()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let subjects: HashSet<String> = rt.block_on(async {
        let acc = store.account_by_login(&to).await.unwrap().unwrap();
        let inbox = store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        let msgs = store.messages(inbox.id, 1..=u32::MAX).await.unwrap();
        assert_eq!(msgs.len() as u32, inbox.messages, "mailbox counter matches its messages");
        assert!(msgs.iter().all(|m| m.uid < inbox.uidnext), "UIDNEXT above every UID");
        for m in msgs.iter().take(3) {
            assert!(!store.read_blob(&m.blob).await.unwrap().is_empty());
        }
        msgs.into_iter().filter_map(|m| m.summary.envelope.subject).collect()
    });
    store.close();
    let lost: Vec<&String> = acked.iter().filter(|s| !subjects.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
